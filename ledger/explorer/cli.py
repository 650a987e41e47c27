"""The ``paroma-explorer`` command: serve the auditors' page, or list events.

    paroma-explorer serve  --ledger (DIR | URL) [--port N] --trusted-issuer DID ...
    paroma-explorer events --ledger (DIR | URL) [--kind K] [--member DID]
                           [--since T] [--until T] [--commitment C] [--json|--csv]

Exit status: 0 success, 2 bad input or an unreachable ledger (one line on
stderr). See docs/explorer.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from common.cli import EXIT_OK, add_common_options, print_json, run_command
from ledger.api import Event
from ledger.explorer.errors import BadQuery
from ledger.explorer.query import MAX_PAGE, EventFilter, event_json, iso_time
from ledger.explorer.server import Explorer
from ledger.explorer.source import Source

log = logging.getLogger(__name__)

DEFAULT_PORT = 8787
"""``serve``'s port on 127.0.0.1 when ``--port`` is not given."""

CSV_COLUMNS = (
    "time",
    "timestamp",
    "block",
    "log_index",
    "kind",
    "member",
    "commitment",
    "tx_hash",
    "data",
)
"""The columns of ``events --csv`` (``data`` is the event's other fields as JSON)."""


def _open_source(args: argparse.Namespace) -> Source:
    return Source.open(
        args.ledger,
        contract=args.contract,
        index_path=None if args.index is None else Path(args.index),
        deploy_block=args.deploy_block,
        retries=args.retries,
    )


def _read_status_list(path: str) -> dict[str, Any]:
    """A status list credential from a file: bare, or an issuer's status file."""
    try:
        document = json.loads(Path(path).read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadQuery(f"{path}: expected a JSON status list credential") from None
    if isinstance(document, dict) and isinstance(document.get("credential"), dict):
        document = document["credential"]
    if not isinstance(document, dict):
        raise BadQuery(f"{path}: expected a JSON object (a status list credential)")
    return document


def _check_status_lists(source: Source, paths: Sequence[str]) -> list[dict[str, Any]]:
    """Load ``--status-list`` files; refuse one the ledger says is outdated."""
    lists = []
    for path in paths:
        vc = _read_status_list(path)
        result = source.check_status_list(vc)
        if result["current_digest"] is not None and not result["is_current"]:
            raise BadQuery(
                f"{path}: not the current status list of {result['issuer']} "
                f"(ledger anchors {result['current_digest']}, file digests to "
                f"{result['digest']}); fetch the issuer's latest list"
            )
        if result["current_digest"] is None:
            log.warning("%s: the ledger anchors no status list of its issuer", path)
        lists.append(vc)
    return lists


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.trusted_issuer and not args.trust_members:
        raise BadQuery(
            "--trusted-issuer: give at least one issuer DID whose auditor "
            "credentials are accepted (or --trust-members); else nobody could "
            "sign in"
        )
    source = _open_source(args)
    try:
        explorer = Explorer(
            source,
            port=args.port,
            domain=args.domain,
            trusted_issuers=list(args.trusted_issuer),
            trust_members=args.trust_members,
            credential_type=args.credential_type,
            status_lists=_check_status_lists(source, args.status_list),
        )
        print(f"paroma-explorer: {explorer.url} (domain {explorer.auth.domain})")
        sys.stdout.flush()
        try:
            explorer.serve_forever()
        except KeyboardInterrupt:
            # Ctrl-C (SIGINT) is how a server is stopped: not an error.
            print("paroma-explorer: stopped")
        finally:
            explorer.stop()
    finally:
        source.close()
    return EXIT_OK


def _matching(source: Source, flt: EventFilter, limit: int | None) -> Iterator[Event]:
    """Every matching event, oldest first, a keyset page at a time."""
    cursor: str | None = None
    given = 0
    while True:
        size = MAX_PAGE if limit is None else min(MAX_PAGE, limit - given)
        if size <= 0:
            return
        page = source.events(flt, cursor=cursor, limit=size)
        yield from page.events
        given += len(page.events)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def cmd_events(args: argparse.Namespace) -> int:
    flt = EventFilter.from_params(
        {
            "kind": args.kind or "",
            "member": args.member or "",
            "since": args.since or "",
            "until": args.until or "",
            "commitment": args.commitment or "",
        }
    )
    source = _open_source(args)
    try:
        events = _matching(source, flt, args.limit)
        if args.json:
            print_json([event_json(e) for e in events])
        elif args.csv:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for e in events:
                row = event_json(e)
                row["data"] = json.dumps(e.data, sort_keys=True)
                writer.writerow([row[c] for c in CSV_COLUMNS])
        else:
            for e in events:
                print(
                    f"{iso_time(e.timestamp)}  {e.kind:<21}  {e.member}  "
                    f"{e.commitment or '-'}"
                )
    finally:
        source.close()
    return EXIT_OK


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {text!r}")
    return int(text)


def _ledger_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ledger",
        required=True,
        metavar="DIR|URL",
        help="an embedded ledger's folder or an http(s):// JSON-RPC URL",
    )
    p.add_argument("--contract", help="URL only: the federation contract's address")
    p.add_argument(
        "--deploy-block",
        type=int,
        default=0,
        metavar="N",
        help="URL only: the deployment's block (indexing starts there)",
    )
    p.add_argument(
        "--index",
        metavar="FILE",
        help="URL only: keep the event index in this SQLite file (default: a "
        "temporary one, rebuilt from the chain)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        metavar="N",
        help="URL only: retries when the endpoint does not answer (default 2)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paroma-explorer",
        description="Browse and verify a PAROMA-MED federation's ledger "
        "(read-only): a web page for auditors, or events on the command line.",
    )
    add_common_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "serve",
        help="serve the auditors' web page on 127.0.0.1",
        description="Serve the explorer's page and JSON API on 127.0.0.1. Auditors "
        "sign in with an auditor credential from paroma-wallet.",
    )
    _ledger_options(p)
    p.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}"
    )
    p.add_argument(
        "--domain",
        help="the domain presentations must be made for (default 127.0.0.1:PORT)",
    )
    p.add_argument(
        "--trusted-issuer",
        action="append",
        default=[],
        metavar="DID",
        help="accept auditor credentials issued by this DID (repeatable)",
    )
    p.add_argument(
        "--trust-members",
        action="store_true",
        help="also accept auditor credentials issued by current federation members",
    )
    p.add_argument(
        "--credential-type",
        metavar="TYPE",
        help="the credential type auditors present (default AuditorCredential)",
    )
    p.add_argument(
        "--status-list",
        action="append",
        default=[],
        metavar="FILE",
        help="a status list credential of an auditor credential issuer (repeatable); "
        "it must be the one the ledger anchors",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "events",
        help="print ledger events, oldest first",
        description="Print the ledger's events, oldest first; filters combine "
        "with AND. Times are seconds since the epoch or ISO 8601 "
        "(2026-01-31, 2026-01-31T12:00:00Z).",
    )
    _ledger_options(p)
    p.add_argument("--kind", metavar="K", help="only this kind, e.g. consent_withdrawn")
    p.add_argument("--member", metavar="DID", help="only events written by this member")
    p.add_argument("--since", metavar="T", help="only events at or after T")
    p.add_argument("--until", metavar="T", help="only events before T")
    p.add_argument(
        "--commitment", metavar="HEX", help="only events about this commitment/digest"
    )
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N events")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print a JSON array")
    form.add_argument("--csv", action="store_true", help="print CSV with a header")
    p.set_defaults(func=cmd_events)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    code: int = args.func(args)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``paroma-explorer``; returns the exit status."""
    return run_command(build_parser(), argv, _dispatch)


if __name__ == "__main__":
    sys.exit(main())
