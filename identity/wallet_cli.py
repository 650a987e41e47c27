"""``paroma-wallet``: the staff wallet: keys, credentials, presentations.

Clinical staff, data stewards and the DPO keep their key and credentials in an
encrypted keystore folder (``--wallet DIR`` or ``$PAROMA_WALLET``), present
credentials to a verifier's challenge, and issuers sign, verify and revoke.
The passphrase comes from ``$PAROMA_PASSPHRASE`` or a prompt.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common.cli import (
    EXIT_FAILED,
    EXIT_OK,
    add_common_options,
    fail,
    print_json,
    run_command,
)
from common.errors import BadInput
from identity.credentials import (
    VERIFIABLE_PRESENTATION,
    VerificationResult,
    create_presentation,
    issue_credential,
    make_credential,
    verify_credential,
    verify_presentation,
)
from identity.keystore import Keystore, atomic_write
from identity.proofs import Cryptosuite
from identity.status_list import StatusList, StatusPurpose

WALLET_ENV = "PAROMA_WALLET"
PASSPHRASE_ENV = "PAROMA_PASSPHRASE"  # noqa: S105 -- a variable name
SUITES = [s.value for s in Cryptosuite]


# -- inputs ------------------------------------------------------------------


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{path}: {what} is not valid JSON at line {exc.lineno} column "
            f"{exc.colno}: {exc.msg}"
        ) from None


def read_object(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold one object."""
    value = read_json(path, what)
    if not isinstance(value, dict):
        raise BadInput(f"{path}: expected a JSON object ({what})")
    return value


def write_json(path: str | Path, value: Any) -> None:
    """Write JSON atomically (temp file, fsync, rename)."""
    atomic_write(path, (json.dumps(value, indent=2) + "\n").encode("utf-8"))


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC if no zone), or ``+Nd`` days from now."""
    if text.startswith("+") and text.endswith("d") and text[1:-1].isdigit():
        return datetime.now(UTC) + timedelta(days=int(text[1:-1]))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"time {text!r}: expected ISO 8601 (2027-01-31T00:00:00Z) or +DAYSd"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def wallet_dir(args: argparse.Namespace) -> Path:
    """The keystore folder from ``--wallet`` or ``$PAROMA_WALLET``."""
    folder = getattr(args, "wallet", None) or os.environ.get(WALLET_ENV)
    if not folder:
        raise BadInput(f"no wallet folder: pass --wallet DIR or set ${WALLET_ENV}")
    return Path(folder)


def passphrase(*, confirm: bool = False) -> str:
    """The passphrase from ``$PAROMA_PASSPHRASE`` or a prompt (never echoed)."""
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return from_env
    first = getpass.getpass("wallet passphrase: ")
    if confirm and getpass.getpass("repeat passphrase: ") != first:
        raise BadInput("the two passphrases differ")
    if not first:
        raise BadInput("the passphrase must not be empty")
    return first


def open_wallet(args: argparse.Namespace) -> Keystore:
    return Keystore.open(wallet_dir(args), passphrase())


# -- status list files --------------------------------------------------------
# An issuer's status list file holds {"state": <StatusList.to_state()>,
# "credential": <signed BitstringStatusListCredential>}; the credential part is
# what the issuer publishes and verifiers pass to ``verify --status-list``.


def load_status_file(path: str) -> tuple[StatusList, dict[str, Any]]:
    document = read_object(path, "status list file")
    if "state" not in document or "credential" not in document:
        raise BadInput(f"{path}: expected a status list file with state and credential")
    return StatusList.from_state(document["state"]), document["credential"]


def save_status_file(path: str, status: StatusList, key: Keystore) -> dict[str, Any]:
    credential = status.to_credential(key.signing_key)
    write_json(path, {"state": status.to_state(), "credential": credential})
    return credential


def load_status_credentials(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Status list credentials from files: an issuer's status file or a bare VC."""
    found = []
    for path in paths:
        document = read_object(path, "status list")
        found.append(document.get("credential", document))
    return found


# -- subcommands ---------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    store = Keystore.create(wallet_dir(args), passphrase(confirm=True))
    print(f"created wallet {store.path}")
    print(store.did)
    return EXIT_OK


def cmd_did(args: argparse.Namespace) -> int:
    print(open_wallet(args).did)
    return EXIT_OK


def cmd_credentials_import(args: argparse.Namespace) -> int:
    store = open_wallet(args)
    credential = read_object(args.file, "credential")
    cid = store.add_credential(credential)
    print(cid)
    return EXIT_OK


def _summary(cid: str, credential: dict[str, Any]) -> dict[str, Any]:
    types = credential.get("type", [])
    issuer = credential.get("issuer")
    return {
        "id": cid,
        "types": [t for t in types if t != "VerifiableCredential"]
        if isinstance(types, list)
        else [types],
        "issuer": issuer.get("id") if isinstance(issuer, dict) else issuer,
        "validUntil": credential.get("validUntil"),
    }


def cmd_credentials_list(args: argparse.Namespace) -> int:
    rows = [_summary(cid, vc) for cid, vc in open_wallet(args).list_credentials()]
    if args.json:
        print_json(rows)
        return EXIT_OK
    for row in rows:
        until = row["validUntil"] or "no end"
        print(
            f"{row['id']}  {','.join(row['types'])}  from {row['issuer']}  "
            f"until {until}"
        )
    if not rows:
        print("no credentials")
    return EXIT_OK


def cmd_credentials_show(args: argparse.Namespace) -> int:
    print_json(open_wallet(args).get_credential(args.id))
    return EXIT_OK


def cmd_credentials_delete(args: argparse.Namespace) -> int:
    open_wallet(args).delete_credential(args.id)
    print(f"deleted {args.id}")
    return EXIT_OK


def cmd_status_list_create(args: argparse.Namespace) -> int:
    if Path(args.out).exists():
        raise BadInput(f"{args.out} exists: a status list file is never overwritten")
    store = open_wallet(args)
    status = StatusList.create(store.signing_key, args.id, args.purpose, args.size)
    save_status_file(args.out, status, store)
    print(
        f"created {args.purpose} list {args.id} ({status.size} entries) in {args.out}"
    )
    return EXIT_OK


def cmd_issue(args: argparse.Namespace) -> int:
    store = open_wallet(args)
    claims = read_object(args.claims, "claims")
    status = None
    if args.status_list:
        status_list, _ = load_status_file(args.status_list)
        if status_list.issuer_did != store.did:
            raise BadInput(f"{args.status_list} belongs to {status_list.issuer_did}")
        index = status_list.allocate()
        status = status_list.entry(index)
    valid_from = parse_time(args.valid_from) if args.valid_from else datetime.now(UTC)
    valid_until = parse_time(args.valid_until) if args.valid_until else None
    unsigned = make_credential(
        store.did, args.subject, args.type, claims, valid_from, valid_until, status
    )
    credential = issue_credential(
        unsigned, store.signing_key, cryptosuite=args.cryptosuite
    )
    if args.status_list:
        # Save the allocation before handing out the credential, so an index
        # is never given twice even if writing the credential fails.
        save_status_file(args.status_list, status_list, store)
    write_json(args.out, credential)
    where = f", status index {status['statusListIndex']}" if status else ""
    print(f"issued {credential['id']} to {args.subject} in {args.out}{where}")
    return EXIT_OK


def cmd_present(args: argparse.Namespace) -> int:
    store = open_wallet(args)
    credentials = [store.get_credential(cid) for cid in args.credential_ids]
    presentation = create_presentation(
        credentials,
        store.signing_key,
        challenge=args.challenge,
        domain=args.domain,
        cryptosuite=args.cryptosuite,
    )
    write_json(args.out, presentation)
    print(f"presentation of {len(credentials)} credential(s) in {args.out}")
    return EXIT_OK


def verify_file(
    path: str,
    challenge: str | None,
    domain: str | None,
    status_paths: Sequence[str],
) -> VerificationResult:
    """Verify a credential or presentation file (chosen by its type)."""
    document = read_object(path, "credential or presentation")
    status_lists = load_status_credentials(status_paths)
    types = document.get("type")
    if VERIFIABLE_PRESENTATION in (types if isinstance(types, list) else [types]):
        if challenge is None or domain is None:
            raise BadInput(f"{path} is a presentation: pass --challenge and --domain")
        return verify_presentation(
            document, challenge=challenge, domain=domain, status_lists=status_lists
        )
    return verify_credential(document, status_lists=status_lists)


def cmd_verify(args: argparse.Namespace) -> int:
    result = verify_file(args.file, args.challenge, args.domain, args.status_list)
    if args.json:
        print_json({"verified": result.verified, "errors": result.errors})
    elif result.verified:
        kinds = ", ".join(result.credential_types) or "credential"
        who = f" held by {result.holder}" if result.holder else ""
        print(f"verified: {kinds}{who}")
    else:
        print(f"NOT verified: {args.file}")
        for error in result.errors:
            print(f"  failed {error}")
    return EXIT_OK if result.verified else EXIT_FAILED


def cmd_revoke(args: argparse.Namespace) -> int:
    store = open_wallet(args)
    status, _ = load_status_file(args.status_list)
    if status.issuer_did != store.did:
        raise BadInput(f"{args.status_list} belongs to {status.issuer_did}")
    if status.purpose is StatusPurpose.SUSPENSION:
        status.suspend(args.index)
    else:
        status.revoke(args.index)
    save_status_file(args.status_list, status, store)
    print(f"{status.purpose.value}: index {args.index} set in {status.list_id}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run issue -> present -> verify -> revoke -> verify in a temp folder."""
    return run_demo()


def run_demo(folder: Path | None = None) -> int:
    """The wallet walk-through the README's main command runs.

    Returns 0 if every step behaved as expected (including the revoked
    presentation being refused), 1 otherwise.
    """
    with tempfile.TemporaryDirectory(prefix="paroma-demo-") as temp:
        root = folder or Path(temp)
        env = {PASSPHRASE_ENV: "demo passphrase (not secret)"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return _demo_steps(root)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _demo_steps(root: Path) -> int:
    hospital, staff = str(root / "hospital-wallet"), str(root / "staff-wallet")
    status_file = str(root / "status-list.json")
    claims = root / "claims.json"
    claims.write_text(json.dumps({"role": "cardiologist", "site": "hospital-a"}))
    steps: list[tuple[str, list[str], int]] = [
        ("hospital issuer creates its wallet", ["--wallet", hospital, "init"], 0),
        ("staff member creates a wallet", ["--wallet", staff, "init"], 0),
        (
            "hospital creates a revocation list",
            [
                "--wallet",
                hospital,
                "status-list",
                "create",
                "--id",
                "https://hospital-a.example/status/1",
                "--out",
                status_file,
            ],
            0,
        ),
    ]
    if not _run_steps(steps):
        return EXIT_FAILED
    staff_did = Keystore.open(staff, os.environ[PASSPHRASE_ENV]).did
    vc_file, vp_file = str(root / "credential.json"), str(root / "presentation.json")
    steps = [
        (
            "hospital issues a ClinicianCredential",
            [
                "--wallet",
                hospital,
                "issue",
                "--type",
                "ClinicianCredential",
                "--subject",
                staff_did,
                "--claims",
                str(claims),
                "--valid-until",
                "+365d",
                "--status-list",
                status_file,
                "--out",
                vc_file,
            ],
            0,
        ),
        ("staff imports it", ["--wallet", staff, "credentials", "import", vc_file], 0),
    ]
    if not _run_steps(steps):
        return EXIT_FAILED
    cid = Keystore.open(staff, os.environ[PASSPHRASE_ENV]).list_credentials()[0][0]
    index = read_object(vc_file, "credential")["credentialStatus"]["statusListIndex"]
    verify = [
        "verify",
        vp_file,
        "--challenge",
        "nonce-42",
        "--domain",
        "node.hospital-b.example",
        "--status-list",
        status_file,
    ]
    steps = [
        (
            "staff presents it to hospital B",
            [
                "--wallet",
                staff,
                "present",
                "--challenge",
                "nonce-42",
                "--domain",
                "node.hospital-b.example",
                "--out",
                vp_file,
                cid,
            ],
            0,
        ),
        ("hospital B verifies the presentation", verify, 0),
        (
            "a replay to another domain is refused",
            [*verify[:5], "other.example", *verify[6:]],
            1,
        ),
        (
            "hospital revokes the credential",
            ["--wallet", hospital, "revoke", index, "--status-list", status_file],
            0,
        ),
        ("hospital B now refuses the presentation", verify, 1),
    ]
    if not _run_steps(steps):
        return EXIT_FAILED
    print("demo: every step behaved as expected")
    return EXIT_OK


def _run_steps(steps: list[tuple[str, list[str], int]]) -> bool:
    for title, argv, expected in steps:
        print(f"== {title}: paroma-wallet {' '.join(argv)}", flush=True)
        code = main(argv)
        sys.stdout.flush()
        if code != expected:
            print(f"demo: step failed (exit {code}, expected {expected})")
            return False
    return True


# -- parser ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--wallet",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"keystore folder (default: ${WALLET_ENV})",
    )
    parser = argparse.ArgumentParser(
        prog="paroma-wallet",
        description="Hold, issue, present and verify PAROMA-MED credentials. The "
        f"passphrase comes from ${PASSPHRASE_ENV} or a prompt.",
    )
    parser.add_argument(
        "--wallet", metavar="DIR", help=f"keystore folder (default: ${WALLET_ENV})"
    )
    add_common_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, func: Any, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help_text, description=help_text, parents=[common], **kw
        )
        p.set_defaults(func=func)
        return p

    add("init", "create a new wallet with a fresh key", cmd_init)
    add("did", "print the wallet's DID", cmd_did)

    creds = sub.add_parser(
        "credentials",
        help="import, list, show, delete credentials",
        description="manage the credentials held in the wallet",
    )
    creds_sub = creds.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = creds_sub.add_parser("import", help="store a credential file", parents=[common])
    p.add_argument("file")
    p.set_defaults(func=cmd_credentials_import)
    p = creds_sub.add_parser("list", help="list stored credentials", parents=[common])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_credentials_list)
    p = creds_sub.add_parser("show", help="print a stored credential", parents=[common])
    p.add_argument("id")
    p.set_defaults(func=cmd_credentials_show)
    p = creds_sub.add_parser(
        "delete", help="delete a stored credential", parents=[common]
    )
    p.add_argument("id")
    p.set_defaults(func=cmd_credentials_delete)

    lists = sub.add_parser(
        "status-list",
        help="create an issuer's status list file",
        description="manage the issuer's Bitstring Status Lists",
    )
    lists_sub = lists.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = lists_sub.add_parser(
        "create", help="create a status list file", parents=[common]
    )
    p.add_argument("--id", required=True, help="URL where the list will be published")
    p.add_argument(
        "--purpose",
        choices=[s.value for s in StatusPurpose],
        default=StatusPurpose.REVOCATION.value,
    )
    p.add_argument("--size", type=int, default=131_072, help="entries (>= 131072)")
    p.add_argument("--out", required=True, help="the status list file to create")
    p.set_defaults(func=cmd_status_list_create)

    p = add("issue", "issue a credential signed by this wallet's key", cmd_issue)
    p.add_argument(
        "--type",
        action="append",
        required=True,
        help="credential type, e.g. ClinicianCredential (repeatable)",
    )
    p.add_argument("--subject", required=True, help="the subject's DID")
    p.add_argument("--claims", required=True, help="JSON file of subject claims")
    p.add_argument(
        "--cryptosuite", choices=SUITES, default=Cryptosuite.EDDSA_RDFC_2022.value
    )
    p.add_argument("--valid-from", help="ISO 8601 time (default: now)")
    p.add_argument("--valid-until", help="ISO 8601 time or +DAYSd")
    p.add_argument("--status-list", help="issuer's status list file: allocate an entry")
    p.add_argument("--out", required=True, help="where to write the credential")

    p = add("present", "present stored credentials to a verifier", cmd_present)
    p.add_argument("--challenge", required=True, help="the verifier's nonce")
    p.add_argument("--domain", required=True, help="the verifier's domain")
    p.add_argument(
        "--cryptosuite", choices=SUITES, default=Cryptosuite.EDDSA_RDFC_2022.value
    )
    p.add_argument("--out", required=True, help="where to write the presentation")
    p.add_argument("credential_ids", nargs="+", metavar="CREDENTIAL_ID")

    p = add(
        "verify",
        "verify a credential or presentation file (exit 0 ok, 1 failed)",
        cmd_verify,
    )
    p.add_argument("file")
    p.add_argument("--challenge", help="expected challenge (presentations)")
    p.add_argument("--domain", help="expected domain (presentations)")
    p.add_argument(
        "--status-list",
        action="append",
        default=[],
        metavar="FILE",
        help="status list credential or issuer status file (repeatable)",
    )
    p.add_argument("--json", action="store_true", help='print {"verified", "errors"}')

    p = add("revoke", "revoke (or suspend) an index in a status list file", cmd_revoke)
    p.add_argument("index", type=int)
    p.add_argument("--status-list", required=True, help="the issuer's status list file")

    add(
        "demo",
        "create wallets, issue, present, verify, revoke in a temp folder",
        cmd_demo,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``paroma-wallet``; returns the exit status."""
    parser = build_parser()
    return run_command(parser, argv, lambda args: int(args.func(args)))


__all__ = ["build_parser", "fail", "main", "run_demo", "verify_file"]
