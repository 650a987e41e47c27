"""``paroma-node init | start | status``: set up, run and watch a site daemon."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import tomli_w
import torch
import trio

from common.cli import EXIT_FAILED, EXIT_OK, print_json
from identity.keystore import Keystore
from node.config import (
    CONFIG_FILE,
    LEDGER_ACCOUNT_SECRET,
    default_config,
    load_config,
    parse_config,
)
from node.errors import ConfigInvalid, NodeError, StoreCorrupt
from node.peer_identity import peer_id_from_did
from node.site import load_extensions, open_site

logger = logging.getLogger(__name__)

PASSPHRASE_VARIABLE = "PAROMA_PASSPHRASE"  # noqa: S105 (a variable name)
STALE_AFTER_S = 10.0  # a status file older than this means the daemon is gone


def register(subparsers: Any) -> None:
    """Add ``init``, ``start`` and ``status`` to ``paroma-node``."""
    init = subparsers.add_parser("init", help="create the site's key and config")
    init.add_argument("--dir", required=True, type=Path, help="site folder")
    init.add_argument(
        "--listen", default="/ip4/0.0.0.0/tcp/4001", help="multiaddr to listen on"
    )
    init.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        help="peer multiaddr with /p2p/ (repeatable)",
    )
    init.add_argument("--ledger", default="", help="ledger folder or JSON-RPC URL")
    init.add_argument(
        "--issuer", action="append", default=[], help="federation issuer DID"
    )
    init.add_argument("--name", default="site", help="display name of the site")
    init.set_defaults(func=cmd_init)

    start = subparsers.add_parser("start", help="run the site daemon until stopped")
    start.add_argument("--dir", required=True, type=Path, help="site folder")
    start.set_defaults(func=cmd_start)

    status = subparsers.add_parser("status", help="show the running daemon's state")
    status.add_argument("--dir", required=True, type=Path, help="site folder")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)


def _passphrase(confirm: bool) -> str:
    """From ``PAROMA_PASSPHRASE`` or the terminal (never echoed or logged)."""
    value = os.environ.get(PASSPHRASE_VARIABLE)
    if value:
        return value
    first = getpass.getpass("keystore passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise ConfigInvalid("the two passphrases differ")
    return first


def cmd_init(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    config_path = folder / CONFIG_FILE
    if config_path.exists():
        raise ConfigInvalid(f"{config_path} already exists; not overwriting it")
    document = default_config(
        listen=args.listen,
        bootstrap=tuple(args.bootstrap),
        ledger=args.ledger,
        issuers=tuple(args.issuer),
        name=args.name,
    )
    config = parse_config(document, folder)  # checks the arguments
    passphrase = _passphrase(confirm=True)
    folder.mkdir(parents=True, exist_ok=True)
    keystore = Keystore.create(config.keystore, passphrase)
    from ledger import account_address, new_account_key

    # The ledger account key signs the site's ledger writes. Like the DID key
    # it is sealed in the keystore under the passphrase, never written in clear.
    account_key = new_account_key()
    keystore.put_secret(LEDGER_ACCOUNT_SECRET, account_key)
    config.status_lists.mkdir(exist_ok=True)
    config_path.write_text(tomli_w.dumps(document), encoding="utf-8")
    did = keystore.did
    print(f"site DID: {did}")
    print(f"peer ID:  {peer_id_from_did(did)}")
    print(f"ledger account: {account_address(account_key)}")
    print(f"config:   {config_path}")
    return EXIT_OK


async def _serve(node: Any, extensions: Any = ()) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        for extension in extensions:
            # An extension may serve beside the node (governance: the staff
            # admin interface on 127.0.0.1), in the same nursery.
            run = getattr(extension, "run", None)
            if run is not None:
                await nursery.start(run)
        print(f"listening on {', '.join(node.addresses)}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                logger.info("signal %s: shutting down", signum)
                break
        nursery.cancel_scope.cancel()


def cmd_start(args: argparse.Namespace) -> int:
    config = load_config(args.dir)
    # DESIGN.md: one torch thread per site, or training starves the network.
    torch.set_num_threads(1)
    extensions = load_extensions(config.extensions, config)
    site = open_site(config, _passphrase(confirm=False), extensions=extensions)
    try:
        trio.run(_serve, site.node, extensions)
    finally:
        site.ledger.close()
    print(f"stopped at round {site.node.round}; checkpoint saved")
    return EXIT_OK


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.dir)
    path = config.status_file
    if not path.exists():
        raise NodeError(f"no status at {path}: the daemon has not run yet")
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise StoreCorrupt(f"{path} is not JSON") from exc
    fresh = time.time() - float(status.get("updated", 0)) < STALE_AFTER_S
    status["running"] = (
        bool(status.get("running")) and fresh and _alive(status.get("pid"))
    )
    if args.json:
        print_json(status)
    else:
        state = "running" if status["running"] else "stopped"
        print(f"{status['did']} ({state})")
        print(f"  round {status['round']}, model {status['model_digest'][:16]}")
        print(f"  connected peers: {len(status['connected_peers'])}")
        print(f"  admitted peers:  {len(status['admitted_peers'])}")
        for did in status["admitted_peers"]:
            print(f"    {did}")
        print(f"  ledger height:   {status.get('ledger_height')}")
    return EXIT_OK if status["running"] else EXIT_FAILED
