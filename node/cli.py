"""``paroma-node``: the command hospital IT and staff use at a site.

Each group of subcommands lives in its own module, which exposes
``register(subparsers)``; each subcommand sets ``func`` to a callable taking the
parsed arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from common.cli import add_common_options, run_command

# Modules that add subcommands, in the order their help is listed.
SUBCOMMAND_MODULES: list[str] = [
    "node.cmd_site",
    "node.cmd_staff",
    "node.cmd_analyse",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paroma-node",
        description="Run and operate a PAROMA-MED site: keys, mesh, training, "
        "consent, erasure and scan analysis.",
    )
    add_common_options(parser)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return run_command(parser, argv, lambda args: int(args.func(args)))
