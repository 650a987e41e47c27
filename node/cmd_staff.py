"""Staff subcommands of ``paroma-node``: consent, erasure, policy, analysis, catalogue.

Each action fetches a fresh challenge from the site's admin interface, builds a
presentation of the staff member's credentials with their wallet (the same
``--wallet DIR`` / ``$PAROMA_WALLET`` and ``$PAROMA_PASSPHRASE`` as
``paroma-wallet``) and sends it with the action; the node checks the role the
policy names for the action. The admin interface is found with ``--admin URL``
or from the file the running node wrote in its store (``--site DIR`` or
``$PAROMA_SITE``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from common.cli import EXIT_OK, print_json
from common.errors import BadInput
from identity.credentials import create_presentation
from identity.proofs import Cryptosuite
from identity.wallet_cli import open_wallet
from ml.model import ModelConfig
from node.config import CONFIG_FILE, load_config
from node.governance.admin import AdminClient, admin_url
from node.governance.attestation import measure_software
from node.governance.extension import GOVERNANCE_FOLDER
from node.governance.policy import example_policy_text, load_policy

SITE_ENV = "PAROMA_SITE"
STAFF_CREDENTIAL = "StaffRoleCredential"


def register(subparsers: Any) -> None:
    """Add the staff subcommands to ``paroma-node``."""
    consent = subparsers.add_parser("consent", help="register or withdraw consent")
    consent_sub = consent.add_subparsers(dest="consent_command", required=True)
    add = _staff_parser(consent_sub, "add", "register a patient's consent and scan")
    add.add_argument("--patient", required=True, help="the site's pseudonym")
    add.add_argument(
        "--scan", required=True, type=Path, help="NIfTI file or DICOM folder"
    )
    add.add_argument("--labels", type=Path, help="MM-WHS label map (for training)")
    add.set_defaults(func=cmd_consent_add)
    withdraw = _staff_parser(consent_sub, "withdraw", "withdraw a patient's consent")
    withdraw.add_argument("--patient", required=True)
    withdraw.set_defaults(func=cmd_consent_withdraw)

    erase = _staff_parser(
        subparsers, "erase", "erase a patient (right to be forgotten)"
    )
    erase.add_argument("--patient", required=True)
    erase.add_argument(
        "--retrain",
        action="store_true",
        help="also rebuild the site's model without the patient's data",
    )
    erase.set_defaults(func=cmd_erase)

    analysis = _staff_parser(
        subparsers, "request-analysis", "analyse a consented patient's scan at the node"
    )
    analysis.add_argument("--patient", required=True)
    analysis.add_argument(
        "--use-labels",
        action="store_true",
        help="measure on the stored label map instead of segmenting the scan",
    )
    analysis.set_defaults(func=cmd_request_analysis)

    policy = subparsers.add_parser("policy", help="check, show or change the policy")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    set_ = _staff_parser(policy_sub, "set", "put a new policy in force at the node")
    set_.add_argument("file", type=Path)
    set_.set_defaults(func=cmd_policy_set)
    check = policy_sub.add_parser("check", help="check a policy file (no node needed)")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_policy_check)
    example = policy_sub.add_parser("example", help="print the example policy")
    example.set_defaults(func=cmd_policy_example)

    attest = subparsers.add_parser(
        "attest", help="print this installation's software measurement"
    )
    attest.add_argument("--policy", type=Path, required=True, help="policy file")
    attest.add_argument(
        "--tiny", action="store_true", help="measure the tiny model architecture"
    )
    attest.set_defaults(func=cmd_attest)

    catalogue = subparsers.add_parser(
        "catalogue", help="list what the federation offers"
    )
    _where(catalogue)
    catalogue.set_defaults(func=cmd_catalogue)


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", help="admin interface URL (http://127.0.0.1:PORT)")
    parser.add_argument(
        "--site",
        type=Path,
        help=f"the site folder, or its store folder (default ${SITE_ENV})",
    )


def _staff_parser(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    parser.add_argument("--wallet", help="wallet folder (default $PAROMA_WALLET)")
    parser.add_argument(
        "--credential",
        action="append",
        default=[],
        help=f"wallet credential id to present (default: every {STAFF_CREDENTIAL})",
    )
    _where(parser)
    return parser


def _client(args: argparse.Namespace) -> AdminClient:
    if args.admin:
        return AdminClient(args.admin)
    site = args.site or os.environ.get(SITE_ENV)
    if not site:
        raise BadInput(
            f"no admin interface: pass --admin URL, --site DIR or set ${SITE_ENV}"
        )
    folder = Path(site)
    if (folder / CONFIG_FILE).exists():  # the site folder of paroma-node init
        folder = load_config(folder).store
    return AdminClient(admin_url(folder / GOVERNANCE_FOLDER))


def _act(args: argparse.Namespace, action: str, params: dict[str, Any]) -> int:
    """Challenge, present, act; print the node's answer as JSON."""
    wallet = open_wallet(args)
    stored = wallet.list_credentials()
    if args.credential:
        chosen = [wallet.get_credential(cid) for cid in args.credential]
    else:
        chosen = [vc for _, vc in stored if STAFF_CREDENTIAL in vc.get("type", [])]
    if not chosen:
        raise BadInput(
            f"the wallet holds no {STAFF_CREDENTIAL}; "
            "import one or pass --credential ID"
        )
    client = _client(args)
    challenge, domain = client.challenge()
    presentation = create_presentation(
        chosen,
        wallet.signing_key,
        challenge=challenge,
        domain=domain,
        cryptosuite=Cryptosuite.EDDSA_JCS_2022,
    )
    print_json(client.action(action, presentation, params))
    return EXIT_OK


def _existing(path: Path, what: str) -> str:
    if not path.exists():
        # The path is not repeated: a scan's file name may carry an identifier.
        raise BadInput(f"--{what}: the file or folder given does not exist")
    return str(path.resolve())


def cmd_consent_add(args: argparse.Namespace) -> int:
    params = {"patient": args.patient, "scan": _existing(args.scan, "scan")}
    if args.labels is not None:
        params["labels"] = _existing(args.labels, "labels")
    return _act(args, "register_consent", params)


def cmd_consent_withdraw(args: argparse.Namespace) -> int:
    return _act(args, "withdraw_consent", {"patient": args.patient})


def cmd_erase(args: argparse.Namespace) -> int:
    return _act(args, "erase", {"patient": args.patient, "retrain": args.retrain})


def cmd_request_analysis(args: argparse.Namespace) -> int:
    params = {"patient": args.patient, "use_labels": args.use_labels}
    return _act(args, "analyse", params)


def cmd_policy_set(args: argparse.Namespace) -> int:
    load_policy(args.file)  # refuse a bad file before asking for the passphrase
    text = args.file.read_text(encoding="utf-8")
    return _act(args, "change_policy", {"policy": text})


def cmd_policy_check(args: argparse.Namespace) -> int:
    policy = load_policy(args.file)
    print_json({"valid": True, "application": policy.name, "purpose": policy.purpose})
    return EXIT_OK


def cmd_policy_example(args: argparse.Namespace) -> int:
    print(example_policy_text(), end="")
    return EXIT_OK


def cmd_attest(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    config = ModelConfig.tiny() if args.tiny else ModelConfig()
    measurement = measure_software(policy, config)
    print_json(
        {
            "measurement": measurement.digest.hex(),
            "file_count": len(measurement.files),
            "parts": measurement.summary(),
        }
    )
    return EXIT_OK


def cmd_catalogue(args: argparse.Namespace) -> int:
    print_json(_client(args).get("/catalogue"))
    return EXIT_OK
