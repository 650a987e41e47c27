"""Explorer speed at the server with 100,000 events in the index.

Usage: .venv/bin/python benchmarks/explorer_bench.py [--events N] [--repeat R]

Deploys a real federation on a temporary embedded ledger, then fills its
event index with N synthetic events (default 100,000) written through
:class:`ledger.index.EventIndex` itself, so the rows are exactly in the
schema the ledger client writes and queries (the fast path: mining 100,000
transactions on py-evm would take about half an hour). The events follow a
federation's mix (consents, withdrawals, erasures, model records,
attestations, offers) from four members, one block a second. The index's
height is set past the chain's head, so the explorer's sync has nothing to add.

Then it starts ``paroma-explorer serve`` as its own process on 127.0.0.1,
signs in with an auditor credential like a browser would, and times HTTP
requests over loopback (median of R, after one warm-up):

    first_page_ms        GET /api/events?order=desc&limit=50
    filtered_query_ms    kind + member + time range, limit 50
    deep_page_ms         the page after 90,000 events (keyset cursor)
    commitment_ms        GET /api/commitment for one consent's lifecycle

Goal: first_page_ms and filtered_query_ms under 300 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from identity.credentials import (
    create_presentation,
    issue_credential,
    make_credential,
)
from identity.keys import SigningKey
from ledger import (
    EventKind,
    account_address,
    deploy_federation,
    new_account_key,
)
from ledger.api import Event
from ledger.index import EventIndex

JCS = "eddsa-jcs-2022"

# (kind, share of events): a federation's history is mostly consent traffic.
MIX = [
    (EventKind.CONSENT_REGISTERED, 50),
    (EventKind.MODEL_RECORDED, 20),
    (EventKind.ATTESTATION, 8),
    (EventKind.CONSENT_WITHDRAWN, 8),
    (EventKind.ERASURE_REQUESTED, 6),
    (EventKind.ERASURE_COMPLETED, 6),
    (EventKind.OFFER_PUBLISHED, 2),
]


def _hex(i: int, tag: str) -> str:
    return "0x" + hashlib.sha256(f"{tag}-{i}".encode()).hexdigest()


def _event(i: int, block: int, ts: int, dids: list[str]) -> Event:
    """The i-th synthetic event, shaped like the client's decoded logs."""
    wheel = [k for k, share in MIX for _ in range(share)]
    kind = wheel[(i * 37) % len(wheel)]
    member = dids[i % len(dids)]
    data: dict[str, object]
    if kind == EventKind.MODEL_RECORDED:
        subject = _hex(i, "model")
        data = {
            "round": i // 100,
            "modelDigest": subject,
            "parents": [_hex(i - 1, "model"), _hex(i - 2, "model")],
            "contributors": dids[:2],
        }
    elif kind == EventKind.ATTESTATION:
        subject = _hex(i % 50, "measurement")
        data = {
            "subjectDid": dids[(i + 1) % len(dids)],
            "measurementDigest": subject,
            "evidenceDigest": _hex(i, "evidence"),
            "verdict": i % 13 != 0,
        }
    elif kind == EventKind.OFFER_PUBLISHED:
        subject = _hex(i, "offer")
        data = {
            "offerId": subject,
            "kind": i % 2,
            "metadataDigest": _hex(i, "meta"),
            "uri": f"https://site-{i % 4}.example/offers/{i}",
        }
    else:
        # Consent traffic: withdrawals and erasures refer to earlier consents.
        subject = _hex(i // 4, "consent")
        data = {"commitment": subject}
        if kind == EventKind.CONSENT_REGISTERED:
            subject = _hex(i, "consent")
            data = {"commitment": subject, "purpose": 1 + i % 3, "expiry": 0}
        elif kind == EventKind.ERASURE_COMPLETED:
            data["proofDigest"] = _hex(i, "proof")
    return Event(
        kind=kind,
        block=block,
        tx_hash=_hex(block, "tx"),
        log_index=0,
        timestamp=ts,
        member=member,
        commitment=subject,
        data=data,
    )


def fill(folder: Path, n: int) -> tuple[list[str], int, int]:
    """Deploy a federation in ``folder`` and add ``n`` events to its index.

    Returns the member DIDs and the first and last event timestamps.
    """
    keys = [new_account_key() for _ in range(4)]
    dids = [SigningKey.generate().did for _ in range(4)]
    ledger = deploy_federation(
        folder,
        deployer_key=keys[0],
        founders=[
            (d, account_address(k), ["site"]) for d, k in zip(dids, keys, strict=True)
        ],
        threshold=2,
    )
    head = ledger.sync()
    ledger.close()
    path = folder / "index.sqlite"
    with sqlite3.connect(path) as db:
        owner = db.execute("SELECT value FROM meta WHERE key = 'owner'").fetchone()[0]
    chain_id, contract = str(owner).split(":", 1)
    index = EventIndex(path, chain_id=int(chain_id), contract=contract)
    t0 = int(time.time()) - n
    chunk = 10_000
    for start in range(0, n, chunk):
        events = [
            _event(i, head + 1 + i, t0 + i, dids)
            for i in range(start, min(n, start + chunk))
        ]
        index.add(events, height=head + min(n, start + chunk))
    index.close()
    return dids, t0, t0 + n - 1


def _timed(repeat: int, call: Callable[[], httpx.Response]) -> float:
    call().raise_for_status()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        reply = call()
        times.append((time.perf_counter() - started) * 1000)
        reply.raise_for_status()
    return statistics.median(times)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description="explorer speed benchmark")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="explorer-bench-") as tmp:
        folder = Path(tmp) / "ledger"
        started = time.perf_counter()
        dids, first_ts, last_ts = fill(folder, args.events)
        print(f"fill_s: {time.perf_counter() - started:.1f}")

        regulator, auditor = SigningKey.generate(), SigningKey.generate()
        port = _free_port()
        exe = Path(sys.executable).with_name("paroma-explorer")
        server = subprocess.Popen(
            [
                str(exe),
                "serve",
                "--ledger",
                str(folder),
                "--port",
                str(port),
                "--trusted-issuer",
                regulator.did,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            if "http://127.0.0.1" not in server.stdout.readline():
                print("error: the explorer did not start", file=sys.stderr)
                return 1
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                challenge = c.get("/api/challenge").json()
                now = datetime.now(UTC)
                vc = issue_credential(
                    make_credential(
                        regulator.did, auditor.did, ["AuditorCredential"], {}, now, None
                    ),
                    regulator,
                    cryptosuite=JCS,
                )
                vp = create_presentation(
                    [vc],
                    auditor,
                    challenge=challenge["challenge"],
                    domain=challenge["domain"],
                    cryptosuite=JCS,
                )
                c.post("/api/signin", json=vp).raise_for_status()
                total = c.get("/api/overview").json()["events"]
                print(f"events_in_index: {total}")

                first = _timed(
                    args.repeat,
                    lambda: c.get("/api/events", params={"order": "desc", "limit": 50}),
                )
                mid = (first_ts + last_ts) // 2
                filtered_params: dict[str, str | int] = {
                    "kind": "consent_registered",
                    "member": dids[1],
                    "since": str(mid),
                    "until": str(last_ts),
                    "limit": 50,
                }
                filtered = _timed(
                    args.repeat, lambda: c.get("/api/events", params=filtered_params)
                )
                page = c.get("/api/events", params=filtered_params).json()
                assert page["events"] and page["total"] > 0
                # A cursor 90 % of the way in: keyset paging costs the same there.
                deep_ts = first_ts + (last_ts - first_ts) * 9 // 10
                mark = c.get("/api/events", params={"since": deep_ts, "limit": 1})
                e = mark.json()["events"][0]
                cursor = f"{e['timestamp']}.{e['block']}.{e['log_index']}"
                deep = _timed(
                    args.repeat,
                    lambda: c.get(
                        "/api/events", params={"cursor": cursor, "limit": 50}
                    ),
                )
                commitment = _hex(args.events // 8, "consent")
                lifecycle = _timed(
                    args.repeat,
                    lambda: c.get("/api/commitment", params={"value": commitment}),
                )
        finally:
            os.kill(server.pid, signal.SIGINT)
            server.communicate(timeout=30)

    print(f"first_page_ms: {first:.1f}")
    print(f"filtered_query_ms: {filtered:.1f}")
    print(f"deep_page_ms: {deep:.1f}")
    print(f"commitment_ms: {lifecycle:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
