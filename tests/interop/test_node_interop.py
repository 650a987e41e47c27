"""Interoperability with digitalbazaar's JavaScript VC stack (@digitalbazaar/vc
7.3.0 + eddsa-rdfc-2022-cryptosuite): each side verifies what the other signs."""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from identity.contexts import CONTEXT_FILES
from identity.credentials import (
    create_presentation,
    issue_credential,
    make_credential,
    verify_credential,
    verify_presentation,
)
from identity.keys import SigningKey
from identity.status_list import StatusList

pytestmark = [
    pytest.mark.node_js,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
CONTEXTS_DIR = ROOT / "identity" / "contexts"
ISSUER = SigningKey.from_seed(bytes(range(40, 72)))
HOLDER = SigningKey.from_seed(bytes(range(80, 112)))
LIST_ID = "https://issuer.example/status/7"


@pytest.fixture(scope="module")
def contexts_map(tmp_path_factory) -> Path:
    path: Path = tmp_path_factory.mktemp("ctx") / "contexts.json"
    mapping = {url: str(CONTEXTS_DIR / name) for url, name in CONTEXT_FILES.items()}
    path.write_text(json.dumps(mapping))
    return path


def node(script: str, *args: str) -> tuple[int, str]:
    if not (ROOT / "node_modules" / "@digitalbazaar" / "vc").exists():
        pytest.fail("node_modules lacks @digitalbazaar/vc: run npm ci")
    done = subprocess.run(
        ["node", str(HERE / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not done.stderr.strip() or done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def node_verify(path: Path, contexts: Path, *extra: str) -> dict[str, Any]:
    code, out = node("verify.mjs", str(path), "--contexts", str(contexts), *extra)
    result: dict[str, Any] = json.loads(out)
    assert (code == 0) == result["verified"]
    return result


def _credential(status: dict[str, Any] | None = None) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    unsigned = make_credential(
        ISSUER.did,
        HOLDER.did,
        ["ClinicianCredential"],
        {"role": "cardiologist", "site": "hospital-a"},
        now - timedelta(hours=1),
        now + timedelta(days=30),
        status=status,
    )
    signed: dict[str, Any] = issue_credential(unsigned, ISSUER)
    return signed


def test_node_verifies_python_credential_and_presentation(tmp_path, contexts_map):
    status = StatusList.create(ISSUER, LIST_ID)
    index = status.allocate()
    vc = _credential(status.entry(index))
    vp = create_presentation([vc], HOLDER, challenge="js-nonce", domain="js.example")
    vc_file, vp_file, list_file = (
        tmp_path / n for n in ("vc.json", "vp.json", "sl.json")
    )
    vc_file.write_text(json.dumps(vc))
    vp_file.write_text(json.dumps(vp))
    list_file.write_text(json.dumps(status.to_credential(ISSUER)))
    lists = ("--status-list", str(list_file))

    assert node_verify(vc_file, contexts_map, *lists)["verified"]
    result = node_verify(
        vp_file,
        contexts_map,
        "--challenge",
        "js-nonce",
        "--domain",
        "js.example",
        *lists,
    )
    assert result == {"verified": True, "errors": []}

    # The JS side must reject what we reject: wrong challenge, tampering, revocation.
    wrong = node_verify(
        vp_file, contexts_map, "--challenge", "other", "--domain", "js.example", *lists
    )
    assert not wrong["verified"]
    vc["credentialSubject"]["role"] = "surgeon"
    vc_file.write_text(json.dumps(vc))
    assert not node_verify(vc_file, contexts_map, *lists)["verified"]
    status.revoke(index)
    list_file.write_text(json.dumps(status.to_credential(ISSUER)))
    revoked = node_verify(
        vp_file,
        contexts_map,
        "--challenge",
        "js-nonce",
        "--domain",
        "js.example",
        *lists,
    )
    assert not revoked["verified"]


def test_python_verifies_node_credential(tmp_path, contexts_map):
    js_issuer = SigningKey.from_seed(bytes(range(120, 152)))
    code, out = node(
        "issue.mjs", js_issuer.seed.hex(), HOLDER.did, "--contexts", str(contexts_map)
    )
    assert code == 0
    vc = json.loads(out)
    assert vc["issuer"] == js_issuer.did
    assert vc["proof"]["cryptosuite"] == "eddsa-rdfc-2022"
    result = verify_credential(vc)
    assert result.errors == []
    assert result.credential_types == ["ClinicianCredential"]
    # And we can present it: the holder wraps the JS-issued credential.
    vp = create_presentation([vc], HOLDER, challenge="c", domain="d")
    assert verify_presentation(vp, challenge="c", domain="d").verified
    vc["credentialSubject"]["site"] = "elsewhere"
    errors = verify_credential(vc).errors
    assert [e.split(":")[0] for e in errors] == ["signature"]
