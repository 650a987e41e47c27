"""Gossip averaging: wire throughput, rounds to consensus, bytes per round.

Run from the repository root: ``.venv/bin/python -m benchmarks.averaging_bench``
(``--model-mb 16`` sets the payload size; it reuses ``tests/node/federation.py``).
Prints one ``name value`` line per figure:

- ``exchange_mb_per_s``: weights bytes per second through the framed
  protocol (chunks, SHA-256) on an authorized Noise + yamux stream between
  two real sites on 127.0.0.1: a payload of the model's size sent and echoed.
- ``raw_tcp_mb_per_s``: the same bytes over a plain trio TCP socket pair.
- ``exchange_over_raw``: their ratio.
- ``full_exchange_mb_per_s``: weights bytes (both directions) per second of a
  whole averaging exchange (presentations, decoding and checks, averaging,
  digests, durable checkpoints on both sides): the wire is not the bottleneck.
- ``rounds_ring_N``, ``rounds_rr_N``: gossip rounds until the consensus error
  ``||x - mean||_n / ||x0 - mean||_n`` falls to 1e-3 (mean of 20 trials), on a
  ring and on a random 3-regular graph (rr), N = 4, 8, 16, simulated with
  :func:`ml.averaging.weighted_pair_average` itself. A round: each site, in
  random order, averages with a uniformly chosen neighbour.
- ``predicted_rounds_ring_N``, ``predicted_rounds_rr_N``: the same from the
  spectral gap of the expected gossip matrix (Boyd et al. 2006): each
  exchange is the projection ``I - u u^T`` in the sample-weighted metric, so
  the mean square error shrinks by ``lambda = 1 - gap(E[sum p_e u_e u_e^T])``
  per exchange and needs ``ln(1e-6) / (N ln lambda)`` rounds.
- ``bytes_per_round_over_model_x_degree``: bytes a site sends per round in a
  real 4-site ring, over (model bytes x degree), the cost of averaging with
  every neighbour each round (D-PSGD); pairwise gossip sends about 2/degree.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trio
from libp2p.abc import INetStream

from ml.averaging import weighted_pair_average
from node.daemon import PROTOCOL_VERSION, SiteNode
from node.wire import FramedStream

TARGET_ERROR = 1e-3
TRIALS = 20


# ----- wire throughput -------------------------------------------------------------


class _Counter:
    def __init__(self, stream: INetStream, totals: dict[str, int]) -> None:
        self.stream = stream
        self.totals = totals

    async def read(self, n: int | None = None) -> bytes:
        data = await self.stream.read(n)
        self.totals["received"] += len(data)
        return data

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)
        self.totals["sent"] += len(data)


class CountingNode(SiteNode):
    """A site that counts the bytes of its protocol streams."""

    totals: dict[str, int]

    def _framed(self, stream: INetStream) -> FramedStream:
        if not hasattr(self, "totals"):
            self.totals = {"sent": 0, "received": 0}
        return FramedStream(
            _Counter(stream, self.totals), PROTOCOL_VERSION, self.limits
        )


def _big_state(megabytes: float, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    count = int(megabytes * 2**20 / 4)
    return {"w": torch.randn(count, generator=gen)}


@contextlib.contextmanager
def _federation(sites: int) -> Iterator[tuple[Any, Path]]:
    """The test federation (real credentials, status list and embedded ledger)
    and a scratch folder, both removed on exit."""
    from tests.node.federation import deploy_template, make_federation_on

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        template = deploy_template(folder / "template")
        fed = make_federation_on(template, folder / "ledger", sites)
        try:
            yield fed, folder
        finally:
            fed.close()


def _make_node(
    fed: Any, site: int, folder: Path, state: dict[str, torch.Tensor]
) -> CountingNode:
    base = fed.node(site, folder, state, 1.0)
    node = CountingNode(
        base.key, base.settings, base.authorizer, state, 1.0, ledger=None
    )
    base.store.close()
    return node


BENCH_PROTOCOL = "/paroma/bench-echo/1.0.0"


async def _rpc_echo(framed: FramedStream, peer: Any) -> None:
    _, payload = await framed.receive("blob")
    await framed.send({"type": "blob"}, payload)


async def _wire_rate(megabytes: float) -> float:
    payload = torch.randn(int(megabytes * 2**20 / 4)).numpy().tobytes()
    with _federation(2) as (fed, tmp):
        a = _make_node(fed, 0, tmp, _big_state(0.01, 1))
        b = _make_node(fed, 1, tmp, _big_state(0.01, 2))
        b.register_protocol(BENCH_PROTOCOL, _rpc_echo, ["bench"])
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            await a.connect(b.addresses[0])
            rates = []
            for _ in range(3):
                framed, _, stream = await a.open_protocol(
                    b.did, BENCH_PROTOCOL, "bench"
                )
                start = time.perf_counter()
                await framed.send({"type": "blob"}, payload)
                _, echoed = await framed.receive("blob")
                elapsed = time.perf_counter() - start
                await stream.close()
                assert echoed == payload
                rates.append(2 * len(payload) / 2**20 / elapsed)
            nursery.cancel_scope.cancel()
    return max(rates)


async def _exchange_rate(megabytes: float) -> float:
    with _federation(2) as (fed, tmp):
        a = _make_node(fed, 0, tmp, _big_state(megabytes, 1))
        b = _make_node(fed, 1, tmp, _big_state(megabytes, 2))
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            await a.connect(b.addresses[0])
            rates = []
            for _ in range(3):
                a.totals = {"sent": 0, "received": 0}
                start = time.perf_counter()
                await a.call_average(b.did)
                elapsed = time.perf_counter() - start
                moved = a.totals["sent"] + a.totals["received"]
                rates.append(moved / 2**20 / elapsed)
            nursery.cancel_scope.cancel()
    return max(rates)


async def _raw_tcp_rate(megabytes: float) -> float:
    payload = b"\x00" * int(megabytes * 2**20)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    done = trio.Event()

    async def serve(stream: trio.SocketStream) -> None:
        received = 0
        while received < 2 * len(payload):
            data = await stream.receive_some(1 << 20)
            if not data:
                break
            received += len(data)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        client = await trio.open_tcp_stream("127.0.0.1", port)
        start = time.perf_counter()
        await client.send_all(payload)
        await client.send_all(payload)
        await done.wait()
        elapsed = time.perf_counter() - start
        await client.aclose()
        nursery.cancel_scope.cancel()
    return 2 * megabytes / elapsed


# ----- rounds to consensus ---------------------------------------------------------


def ring(n: int) -> list[tuple[int, int]]:
    return [(i, (i + 1) % n) for i in range(n)]


def random_regular(n: int, degree: int, rng: random.Random) -> list[tuple[int, int]]:
    """A connected simple random ``degree``-regular graph (pairing model)."""
    while True:
        stubs = [v for v in range(n) for _ in range(degree)]
        rng.shuffle(stubs)
        edges = {
            (min(a, b), max(a, b)) for a, b in zip(stubs[::2], stubs[1::2], strict=True)
        }
        simple = all(a != b for a, b in edges) and len(edges) == n * degree // 2
        if simple and _connected(n, edges):
            return sorted(edges)


def _connected(n: int, edges: set[tuple[int, int]]) -> bool:
    seen, frontier = {0}, [0]
    while frontier:
        v = frontier.pop()
        for a, b in edges:
            for x, y in ((a, b), (b, a)):
                if x == v and y not in seen:
                    seen.add(y)
                    frontier.append(y)
    return len(seen) == n


def _neighbours(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        out[a].append(b)
        out[b].append(a)
    return out


def _error(values: list[float], counts: list[float], mean: float) -> float:
    return math.sqrt(
        sum(n * (v - mean) ** 2 for v, n in zip(values, counts, strict=True))
    )


def simulate_rounds(
    edges: list[tuple[int, int]], counts: list[float], rng: random.Random
) -> int:
    """Rounds of real pairwise averaging until the relative error is <= 1e-3."""
    n = len(counts)
    neighbours = _neighbours(n, edges)
    states = [{"x": torch.tensor([rng.gauss(0.0, 1.0)])} for _ in range(n)]
    values = [float(s["x"]) for s in states]
    mean = sum(v * c for v, c in zip(values, counts, strict=True)) / sum(counts)
    start = _error(values, counts, mean)
    for round_ in range(1, 10_000):
        order = list(range(n))
        rng.shuffle(order)
        for i in order:
            j = rng.choice(neighbours[i])
            mixed = weighted_pair_average(states[i], counts[i], states[j], counts[j])
            states[i] = states[j] = mixed
        values = [float(s["x"]) for s in states]
        if _error(values, counts, mean) <= TARGET_ERROR * start:
            return round_
    raise RuntimeError("no consensus after 10,000 rounds")


def predicted_rounds(edges: list[tuple[int, int]], counts: list[float]) -> float:
    """Rounds from the spectral gap of the expected exchange (see module doc)."""
    n = len(counts)
    neighbours = _neighbours(n, edges)
    expected = np.zeros((n, n))
    for i, j in edges:
        # P(edge chosen in one exchange): i picks j or j picks i.
        p = (1.0 / len(neighbours[i]) + 1.0 / len(neighbours[j])) / n
        u = np.zeros(n)
        u[i] = 1.0 / math.sqrt(counts[i])
        u[j] = -1.0 / math.sqrt(counts[j])
        u /= np.linalg.norm(u)
        expected += p * np.outer(u, u)
    eigen = np.sort(np.linalg.eigvalsh(expected))
    # The smallest eigenvalue (0) belongs to sqrt(n), the consensus direction.
    lam = 1.0 - eigen[1]
    return math.log(TARGET_ERROR**2) / (n * math.log(lam))


def rounds_table(rng: random.Random) -> dict[str, float]:
    table: dict[str, float] = {}
    for n in (4, 8, 16):
        counts = [float(rng.randint(5, 50)) for _ in range(n)]
        graphs = {"ring": ring(n), "rr": random_regular(n, 3, rng)}
        for name, edges in graphs.items():
            trials = [simulate_rounds(edges, counts, rng) for _ in range(TRIALS)]
            table[f"rounds_{name}_{n}"] = sum(trials) / TRIALS
            table[f"predicted_rounds_{name}_{n}"] = predicted_rounds(edges, counts)
    return table


# ----- bytes per round -------------------------------------------------------------


async def _bytes_per_round(megabytes: float) -> float:
    """One gossip round on a real 4-site ring; bytes sent per site per round."""
    n = 4
    model_bytes = int(megabytes * 2**20)
    with _federation(n) as (fed, tmp):
        nodes = [_make_node(fed, i, tmp, _big_state(megabytes, i)) for i in range(n)]
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run)
            for i, j in ring(n):
                await nodes[i].connect(nodes[j].addresses[0])
            for node in nodes:
                node.totals = {"sent": 0, "received": 0}
            rng = random.Random(3)
            rounds = 3
            for _ in range(rounds):
                order = list(range(n))
                rng.shuffle(order)
                for i in order:
                    j = rng.choice([(i + 1) % n, (i - 1) % n])
                    await nodes[i].call_average(nodes[j].did)
            sent = sum(node.totals["sent"] for node in nodes) / (n * rounds)
            nursery.cancel_scope.cancel()
    return sent / (model_bytes * 2)


async def main_async(megabytes: float) -> dict[str, float]:
    results: dict[str, float] = {}
    results["exchange_mb_per_s"] = await _wire_rate(megabytes)
    results["raw_tcp_mb_per_s"] = await _raw_tcp_rate(megabytes)
    results["exchange_over_raw"] = (
        results["exchange_mb_per_s"] / results["raw_tcp_mb_per_s"]
    )
    results["full_exchange_mb_per_s"] = await _exchange_rate(min(megabytes, 8.0))
    results.update(rounds_table(random.Random(11)))
    results["bytes_per_round_over_model_x_degree"] = await _bytes_per_round(1.0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-mb", type=float, default=16.0, help="model size, MiB")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = trio.run(main_async, args.model_mb)
    for name, value in results.items():
        print(f"{name}: {value:.4g}")


if __name__ == "__main__":
    main()
