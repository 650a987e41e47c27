"""Ledger throughput and index speed, on the embedded chain and on anvil.

Usage: .venv/bin/python benchmarks/ledger_bench.py [--quick]

Prints one ``name: value`` a line:

    embedded_events_per_s          one write at a time, each waited for
    embedded_batched_events_per_s  writes sent in batches, waited for once
    embedded_reopen_s              reopening the folder (state snapshot)
    embedded_replay_tx_per_s       reopening from the journal alone (after a crash)
    anvil_events_per_s             as above, over JSON-RPC to anvil
    anvil_batched_events_per_s
    anvil_batched_client_cpu_events_per_s  the same per second of client CPU
                                   (what a machine not shared with anvil and
                                   other jobs would approach)
    index_query_10k_ms             10,000 events out of a 50,000-event index

Starts and stops its own anvil (node_modules/@foundry-rs/anvil-linux-amd64).
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import (
    EventKind,
    account_address,
    deploy_federation,
    new_account_key,
    open_ledger,
)
from ledger.api import Event, Ledger
from ledger.index import EventIndex
from tests.ledger.conftest import ANVIL, ANVIL_KEY, Anvil


def _digest(i: int, tag: str) -> bytes:
    return hashlib.sha256(f"{tag}-{i}".encode()).digest()


def _single(ledger: Ledger, n: int, tag: str) -> float:
    started = time.perf_counter()
    for i in range(n):
        ledger.register_consent(_digest(i, tag), 1, 0)
    return n / (time.perf_counter() - started)


def _batched(ledger: Ledger, n: int, size: int, tag: str) -> tuple[float, float]:
    """Events per second of wall time, and per second of this process's CPU."""
    started, cpu = time.perf_counter(), time.process_time()
    for first in range(0, n, size):
        with ledger.batch():
            for i in range(first, min(first + size, n)):
                ledger.register_consent(_digest(i, tag), 1, 0)
    wall = time.perf_counter() - started
    return n / wall, n / (time.process_time() - cpu)


def _federation(
    spec: str | Path,
    faucet_key: bytes | None = None,
    index_path: Path | None = None,
) -> tuple[Ledger, bytes]:
    key = new_account_key()
    founders = [("did:key:z6MkBench", account_address(key), ["site"])]
    led = deploy_federation(
        spec,
        deployer_key=key,
        founders=founders,
        threshold=1,
        faucet_key=faucet_key,
        index_path=index_path,
    )
    return led, key


def bench_embedded(n: int, folder: Path) -> dict[str, float]:
    led, key = _federation(folder / "ledger")
    out = {"embedded_events_per_s": _single(led, n, "e1")}
    out["embedded_batched_events_per_s"] = _batched(led, 2 * n, 50, "e2")[0]
    expected = led.count_events(EventKind.CONSENT_REGISTERED)
    led.close()

    # reopening with the snapshot saved on close
    started = time.perf_counter()
    again = open_ledger(folder / "ledger", account_key=key)
    blocks = again.sync()
    out["embedded_reopen_s"] = time.perf_counter() - started
    assert again.count_events(EventKind.CONSENT_REGISTERED) == expected
    again.close()

    # reopening from the journal alone, as after a crash before close
    with sqlite3.connect(folder / "ledger" / "chain.sqlite") as db:
        db.execute("DELETE FROM snapshot_head")
    started = time.perf_counter()
    again = open_ledger(folder / "ledger", account_key=key)
    out["embedded_replay_tx_per_s"] = blocks / (time.perf_counter() - started)
    assert again.count_events(EventKind.CONSENT_REGISTERED) == expected
    again.close()
    return out


def bench_anvil(n: int, folder: Path) -> dict[str, float]:
    node = Anvil()
    try:
        led, _ = _federation(
            node.url, faucet_key=ANVIL_KEY, index_path=folder / "anvil.sqlite"
        )
        out = {"anvil_events_per_s": _single(led, n, "a1")}
        wall, cpu = _batched(led, 4 * n, 200, "a2")
        out["anvil_batched_events_per_s"] = wall
        out["anvil_batched_client_cpu_events_per_s"] = cpu
        assert led.count_events(EventKind.CONSENT_REGISTERED) == 5 * n
        led.close()
        return out
    finally:
        node.stop()


def bench_index(folder: Path) -> dict[str, float]:
    index = EventIndex(folder / "bench.sqlite", chain_id=1, contract="0x" + "00" * 20)
    kinds = list(EventKind)
    index.add(
        Event(
            kind=kinds[i % len(kinds)],
            block=i,
            tx_hash="0x" + _digest(i, "tx").hex(),
            log_index=0,
            timestamp=1_767_225_600 + i,
            member=f"did:key:z6MkSite{i % 8}",
            commitment="0x" + _digest(i, "c").hex(),
            data={"purpose": i % 7, "expiry": 0},
        )
        for i in range(50_000)
    )
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        got = index.query(since=1_767_225_600 + 20_000, limit=10_000)
        best = min(best, time.perf_counter() - started)
    assert len(got) == 10_000
    index.close()
    return {"index_query_10k_ms": best * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description="ledger throughput benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer transactions")
    args = parser.parse_args()
    n = 30 if args.quick else 100
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results.update(bench_embedded(n, folder))
        if ANVIL.is_file():
            results.update(bench_anvil(n * 3, folder))
        else:
            print("anvil missing: run `npm ci`", file=sys.stderr)
        results.update(bench_index(folder))
    for name, value in results.items():
        print(f"{name}: {value:.2f}" if value < 10 else f"{name}: {value:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
