"""``paroma-node init | start | status`` end to end, on an embedded ledger."""

import base64
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from identity.credentials import issue_credential, make_credential
from identity.keys import SigningKey
from identity.keystore import Keystore
from identity.proofs import Cryptosuite
from identity.status_list import StatusList, status_list_digest
from ledger import account_address, deploy_federation, new_account_key
from node.auth import MEMBERSHIP_CREDENTIAL
from node.cli import main
from node.config import LEDGER_ACCOUNT_SECRET

pytestmark = pytest.mark.slow

PASSPHRASE = "correct horse battery staple"
ROOT = Path(__file__).resolve().parents[2]


def _federate(site: Path, ledger_dir: Path) -> str:
    """Deploy a ledger with the site as founder; give it a credential."""
    issuer = SigningKey.generate()
    issuer_account = new_account_key()
    keystore = Keystore.open(site / "keystore", PASSPHRASE)
    site_account = keystore.get_secret(LEDGER_ACCOUNT_SECRET)
    founders = [
        (issuer.did, account_address(issuer_account), ("issuer",)),
        (keystore.did, account_address(site_account), ("site",)),
    ]
    ledger = deploy_federation(
        ledger_dir, deployer_key=issuer_account, founders=founders, threshold=1
    )
    status = StatusList.create(issuer, "urn:paroma:status:cli")
    credential = make_credential(
        issuer.did,
        keystore.did,
        [MEMBERSHIP_CREDENTIAL],
        {"role": "site"},
        datetime.now(UTC) - timedelta(minutes=1),
        None,
        status=status.entry(status.allocate()),
    )
    keystore.add_credential(
        issue_credential(credential, issuer, cryptosuite=Cryptosuite.EDDSA_JCS_2022)
    )
    status_vc = status.to_credential(issuer)
    (site / "status-lists" / "issuer.json").write_text(json.dumps(status_vc))
    ledger.publish_status_list(issuer.did, status_list_digest(status_vc))
    ledger.close()
    return issuer.did


def _assert_not_in_clear(folder: Path, secret: bytes) -> None:
    """No file under ``folder`` holds ``secret`` raw, in hex or in base64."""
    spellings = [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for spelling in spellings:
            assert spelling not in data, f"{path} holds a secret in clear"


def _status(site: Path, capsys: Any) -> tuple[int, dict[str, Any]]:
    code = main(["status", "--dir", str(site), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_init_start_status_stop(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PAROMA_PASSPHRASE", PASSPHRASE)
    site, ledger_dir = tmp_path / "site", tmp_path / "ledger"
    issuer_placeholder = SigningKey.generate().did
    args = ["init", "--dir", str(site), "--listen", "/ip4/127.0.0.1/tcp/0"]
    assert (
        main([*args, "--issuer", issuer_placeholder, "--ledger", str(ledger_dir)]) == 0
    )
    out = capsys.readouterr().out
    assert "site DID: did:key:z6Mk" in out
    # The ledger account key is sealed in the keystore: its address is
    # printed (the federation votes it in), the key is nowhere in clear.
    keystore = Keystore.open(site / "keystore", PASSPHRASE)
    account_key = keystore.get_secret(LEDGER_ACCOUNT_SECRET)
    assert len(account_key) == 32
    assert f"ledger account: {account_address(account_key)}" in out
    _assert_not_in_clear(site, account_key)
    _assert_not_in_clear(site, keystore.signing_key.seed)
    # A second init refuses to overwrite the site.
    assert main([*args]) == 2
    assert "already exists" in capsys.readouterr().err

    issuer = _federate(site, ledger_dir)
    config = (site / "node.toml").read_text()
    (site / "node.toml").write_text(
        config.replace(issuer_placeholder, issuer).replace(
            "period_s = 30.0", "period_s = 0.0"
        )
    )

    # A bad field: one line naming it, exit status 2.
    good = (site / "node.toml").read_text()
    (site / "node.toml").write_text(good.replace('robust = "none"', 'robust = "x"'))
    assert main(["start", "--dir", str(site)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "averaging.robust" in err
    (site / "node.toml").write_text(good)

    env = {**os.environ, "PAROMA_PASSPHRASE": PASSPHRASE}
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from node.cli import main; sys.exit(main())",
            "start",
            "--dir",
            str(site),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 40
        while True:
            assert daemon.poll() is None, daemon.communicate()
            if (site / "store" / "status.json").exists():
                code, status = _status(site, capsys)
                if code == 0 and status.get("ledger_height"):
                    break
            assert time.monotonic() < deadline, "daemon did not come up"
            time.sleep(0.3)
        assert status["running"] and status["round"] == 0
        assert status["admitted_peers"] == []
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err.decode()[-2000:]
    assert b"checkpoint saved" in out
    # Running the site wrote its store, status and index: still nothing in clear.
    _assert_not_in_clear(site, account_key)
    assert account_key.hex().encode() not in out + err
    code, status = _status(site, capsys)
    assert code == 1 and status["running"] is False
    assert (site / "store" / "checkpoints" / "round-000000.safetensors").exists()
