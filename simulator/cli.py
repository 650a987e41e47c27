"""``paroma-sim``: run a whole federation on one machine and read the report.

paroma-sim run                      the default scenario, into runs/<time>/
paroma-sim run quick --out DIR      a shipped scenario by name
paroma-sim run my.toml              a scenario file
paroma-sim scenarios                list the shipped scenarios
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.cli import EXIT_OK, add_common_options, run_command
from simulator.errors import ScenarioInvalid
from simulator.report import write_report
from simulator.runner import Simulation
from simulator.scenario import load_scenario, shipped_scenarios

DEFAULT_SCENARIO = "default"


class ProgressBars:
    """One tqdm bar per stage on stderr (phantoms, governance, rounds, evaluation)."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int, note: str) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            for other in self.bars.values():
                other.close()
            bar = self.bars[stage] = tqdm(
                total=total, desc=f"{stage:<10}", unit="", dynamic_ncols=True
            )
        bar.total = total
        bar.n = done
        if note:
            bar.set_postfix_str(note, refresh=False)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    if args.verbose < 2:
        # Dozens of peers in one process: libp2p's per-peer warnings (stream
        # timeouts while a peer is busy, gossip rate limits) would bury the
        # progress bars; the report counts failed exchanges instead.
        logging.getLogger("libp2p").setLevel(logging.ERROR)
    if args.verbose < 1:
        # Refused exchanges (a revoked credential) are expected in fault
        # scenarios; they are counted in the report, shown here only with -v.
        logging.getLogger("node").setLevel(logging.ERROR)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"{stamp}-{scenario.name}"
    if out.exists() and any(out.iterdir()):
        raise ScenarioInvalid(f"--out {out}: folder exists and is not empty")
    bars = ProgressBars()
    try:
        metrics = Simulation(scenario, out, progress=bars, cores=args.cores).run()
    finally:
        bars.close()
    write_report(metrics, out / "report.html")
    dice = metrics["dice_mean"]
    shown = ", ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} n/a" for k, v in dice.items()
    )
    print(f"report: {out / 'report.html'}")
    print(f"metrics: {out / 'metrics.json'}")
    print(f"mean Dice: {shown}; wall {metrics['wall_seconds']} s")
    return EXIT_OK


def cmd_scenarios(args: argparse.Namespace) -> int:
    for name, description in shipped_scenarios().items():
        print(f"{name:<12} {description}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paroma-sim",
        description="Simulate a PAROMA-MED federation of hospitals on one machine: "
        "real libp2p sites, credentials, ledger, faults; ends in a report.",
    )
    add_common_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and write its report")
    run.add_argument(
        "scenario",
        nargs="?",
        default=DEFAULT_SCENARIO,
        help="a shipped scenario's name or a .toml file (default: %(default)s)",
    )
    run.add_argument(
        "--out", help="output folder (default: runs/<UTC time>-<scenario>/)"
    )
    run.add_argument(
        "--cores",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worker threads computing at once (default: %(default)s)",
    )
    run.set_defaults(func=cmd_run)
    scen = sub.add_parser("scenarios", help="list the shipped scenarios")
    scen.set_defaults(func=cmd_scenarios)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, lambda args: int(args.func(args)))
