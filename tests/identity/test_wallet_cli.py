"""``paroma-wallet`` end to end through main(argv), with temp folders and env."""

import json
from pathlib import Path
from typing import Any

import pytest

from identity import keystore
from identity.wallet_cli import main, run_demo

SUBCOMMANDS = [
    ["init"],
    ["did"],
    ["credentials", "import"],
    ["credentials", "list"],
    ["credentials", "show"],
    ["credentials", "delete"],
    ["status-list", "create"],
    ["issue"],
    ["present"],
    ["verify"],
    ["revoke"],
    ["demo"],
]


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch):
    monkeypatch.setattr(keystore, "SCRYPT_N", 2**10)
    monkeypatch.setenv("PAROMA_PASSPHRASE", "staff passphrase")
    monkeypatch.delenv("PAROMA_WALLET", raising=False)


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    assert "usage: paroma-wallet" in capsys.readouterr().out


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def setup(tmp_path, capsys, monkeypatch):
    """An issuer wallet with a status list and a staff wallet (via env)."""
    issuer, staff = tmp_path / "issuer", tmp_path / "staff"
    assert run(capsys, "--wallet", str(issuer), "init")[0] == 0
    monkeypatch.setenv("PAROMA_WALLET", str(staff))
    code, out, _ = run(capsys, "init")
    staff_did = out.split()[-1]
    assert code == 0 and staff_did.startswith("did:key:z6Mk")
    assert run(capsys, "did")[1].strip() == staff_did
    status = tmp_path / "status.json"
    code, _, _ = run(
        capsys,
        "status-list",
        "create",
        "--wallet",
        str(issuer),
        "--id",
        "https://issuer.example/status/1",
        "--out",
        str(status),
    )
    assert code == 0
    claims = tmp_path / "claims.json"
    claims.write_text(json.dumps({"role": "data steward"}))
    return {
        "issuer": issuer,
        "staff": staff,
        "did": staff_did,
        "status": status,
        "claims": claims,
        "tmp": tmp_path,
    }


def issue(
    capsys: Any,
    s: dict[str, Any],
    suite: str = "eddsa-rdfc-2022",
    name: str = "vc.json",
) -> Path:
    out_file: Path = s["tmp"] / name
    code, _, err = run(
        capsys,
        "issue",
        "--wallet",
        str(s["issuer"]),
        "--type",
        "StewardCredential",
        "--subject",
        s["did"],
        "--claims",
        str(s["claims"]),
        "--cryptosuite",
        suite,
        "--valid-until",
        "+30d",
        "--status-list",
        str(s["status"]),
        "--out",
        str(out_file),
    )
    assert code == 0, err
    return out_file


@pytest.mark.parametrize("suite", ["eddsa-rdfc-2022", "eddsa-jcs-2022"])
def test_issue_import_present_verify_revoke(setup, capsys, suite):
    s = setup
    vc_file = issue(capsys, s, suite)
    assert (
        run(capsys, "verify", str(vc_file), "--status-list", str(s["status"]))[0] == 0
    )
    code, out, _ = run(capsys, "credentials", "import", str(vc_file))
    cid = out.strip()
    code, out, _ = run(capsys, "credentials", "list", "--json")
    assert json.loads(out)[0]["types"] == ["StewardCredential"]
    assert json.loads(run(capsys, "credentials", "show", cid)[1]) == json.loads(
        vc_file.read_text()
    )
    vp_file = s["tmp"] / "vp.json"
    code, _, err = run(
        capsys,
        "present",
        "--challenge",
        "n1",
        "--domain",
        "d.example",
        "--cryptosuite",
        suite,
        "--out",
        str(vp_file),
        cid,
    )
    assert code == 0, err
    verify = [
        "verify",
        str(vp_file),
        "--challenge",
        "n1",
        "--domain",
        "d.example",
        "--status-list",
        str(s["status"]),
        "--json",
    ]
    code, out, _ = run(capsys, *verify)
    assert (code, json.loads(out)) == (0, {"verified": True, "errors": []})
    index = json.loads(vc_file.read_text())["credentialStatus"]["statusListIndex"]
    assert (
        run(
            capsys,
            "revoke",
            index,
            "--wallet",
            str(s["issuer"]),
            "--status-list",
            str(s["status"]),
        )[0]
        == 0
    )
    code, out, _ = run(capsys, *verify)
    assert code == 1
    assert json.loads(out)["errors"] == [
        f"revoked: https://issuer.example/status/1 index {index} (credential[0])"
    ]
    assert run(capsys, "credentials", "delete", cid)[0] == 0
    assert run(capsys, "credentials", "list")[1].strip() == "no credentials"


def test_tampered_credential_names_the_check(setup, capsys):
    s = setup
    vc_file = issue(capsys, s)
    document = json.loads(vc_file.read_text())
    document["credentialSubject"]["role"] = "DPO"
    vc_file.write_text(json.dumps(document))
    code, out, err = run(
        capsys, "verify", str(vc_file), "--status-list", str(s["status"])
    )
    assert code == 1 and err == ""
    assert "failed signature: the proof does not match the document" in out


def test_allocations_are_persisted(setup, capsys):
    s = setup
    first = json.loads(issue(capsys, s, name="a.json").read_text())
    second = json.loads(issue(capsys, s, name="b.json").read_text())
    indexes = {
        first["credentialStatus"]["statusListIndex"],
        second["credentialStatus"]["statusListIndex"],
    }
    assert len(indexes) == 2
    state = json.loads(s["status"].read_text())["state"]
    assert {str(i) for i in state["allocated"]} == indexes


def test_wrong_passphrase_is_refused_untouched(setup, capsys, monkeypatch):
    before = {p: p.read_bytes() for p in setup["staff"].rglob("*") if p.is_file()}
    monkeypatch.setenv("PAROMA_PASSPHRASE", "not it")
    code, out, err = run(capsys, "did")
    assert code == 2 and out == ""
    assert err.startswith("error: wrong passphrase") and err.count("\n") == 1
    assert "not it" not in err
    assert {
        p: p.read_bytes() for p in setup["staff"].rglob("*") if p.is_file()
    } == before


def test_corrupt_keystore_is_reported_not_overwritten(setup, capsys):
    key_file = setup["staff"] / "key.json"
    key_file.write_text('{"version": 1')
    code, _, err = run(capsys, "did")
    assert code == 2 and "damaged" in err and "Traceback" not in err
    assert run(capsys, "init")[0] == 2
    assert key_file.read_text() == '{"version": 1'


BAD_INPUTS = [
    ("malformed json", ["verify", "{bad}"], "line 2 column 3"),
    ("missing file", ["verify", "{missing}"], "cannot use"),
    ("presentation without challenge", ["verify", "{vp}"], "--challenge"),
    ("no wallet", ["did"], "--wallet"),
    (
        "unknown credential",
        ["credentials", "show", "0123456789abcdef"],
        "no credential",
    ),
    (
        "bad time",
        [
            "issue",
            "--type",
            "T",
            "--subject",
            "did:key:z",
            "--claims",
            "{claims}",
            "--valid-until",
            "soon",
            "--out",
            "{tmp}/x.json",
        ],
        "ISO 8601",
    ),
    (
        "bad claims",
        [
            "issue",
            "--type",
            "T",
            "--subject",
            "did:key:z",
            "--claims",
            "{bad}",
            "--out",
            "{tmp}/x.json",
        ],
        "line 2",
    ),
]


@pytest.mark.parametrize(
    ("name", "argv", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_is_one_line_exit_2(
    tmp_path, capsys, monkeypatch, name, argv, message
):
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  x: 1}")
    vp = tmp_path / "vp.json"
    vp.write_text(json.dumps({"type": ["VerifiablePresentation"]}))
    claims = tmp_path / "claims.json"
    claims.write_text("{}")
    if name != "no wallet":
        monkeypatch.setenv("PAROMA_WALLET", str(tmp_path / "w"))
        assert main(["init"]) == 0
        capsys.readouterr()
    values = {
        "bad": bad,
        "missing": tmp_path / "nope.json",
        "vp": vp,
        "claims": claims,
        "tmp": tmp_path,
    }
    code, _, err = run(capsys, *[a.format(**values) for a in argv])
    assert code == 2
    assert err.count("\n") == 1 and message in err, err


def test_demo_runs_every_step(capsys):
    assert run_demo() == 0
    out = capsys.readouterr().out
    assert "hospital B now refuses the presentation" in out
    assert "failed revoked:" in out
    assert out.rstrip().endswith("every step behaved as expected")
