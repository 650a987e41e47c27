"""``paroma-node start`` as a process: governance serves staff commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from identity.keystore import Keystore
from ledger import EventKind, open_ledger
from node.cli import main
from node.config import load_config

from .conftest import staff_credential
from .test_extension import PASSPHRASE, make_site

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_start_serves_the_admin_interface(tmp_path, monkeypatch, phantoms, capsys):
    site = make_site(tmp_path, monkeypatch)
    capsys.readouterr()  # init's output
    keystore = Keystore.open(site / "keystore", PASSPHRASE)
    wallet = tmp_path / "wallet"
    steward = Keystore.create(wallet, "pw", scrypt_n=2**10)
    steward.add_credential(
        staff_credential(keystore.signing_key, steward.signing_key, "data_steward")
    )
    admin_file = site / "store" / "governance" / "admin.json"
    env = {**os.environ, "PAROMA_PASSPHRASE": PASSPHRASE}
    code = "import sys; from node.cli import main; sys.exit(main())"
    daemon = subprocess.Popen(
        [sys.executable, "-c", code, "start", "--dir", str(site)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not admin_file.exists():
            assert daemon.poll() is None, daemon.communicate()
            assert time.monotonic() < deadline, "the admin interface did not come up"
            time.sleep(0.3)
        assert json.loads(admin_file.read_text())["url"].startswith("http://127.0.0.1:")
        monkeypatch.setenv("PAROMA_PASSPHRASE", "pw")
        scan, labels = phantoms[0]
        argv = ["consent", "add", "--wallet", str(wallet), "--site", str(site)]
        argv += ["--patient", "PSN-START", "--scan", str(scan), "--labels", str(labels)]
        assert main(argv) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["ok"] and answer["role"] == "data_steward"
        assert main(["catalogue", "--site", str(site)]) == 0
        [offer] = json.loads(capsys.readouterr().out)
        assert offer["site"] == keystore.did and offer["verified"]
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err.decode()[-2000:]
    assert b"PSN-START" not in out + err  # the pseudonym is never logged
    with open_ledger(load_config(site).ledger_spec) as ledger:
        assert ledger.count_events(EventKind.ATTESTATION) == 1
        assert ledger.count_events(EventKind.CONSENT_REGISTERED) == 1
