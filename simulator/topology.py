"""Mesh topologies, random matchings of exchanges, and the consensus prediction.

Each gossip step pairs sites along the topology's edges with a random maximal
matching (no site is in two exchanges at once: the daemon refuses a second one
as "busy"), the gossip steps of one round preferring edges not yet used in
that round, and each pair averages weighted by sample counts. With weights
``n_i``, one exchange is the orthogonal projection ``W_e`` onto models equal at
``i`` and ``j`` in the inner product ``<x, y> = sum_i n_i x_i y_i``, and the
exchanges of one matching commute, so ``W = I + sum_e (W_e - I)``. For
projections ``E[W^T D W] = D E[W]``, hence the squared consensus distance
contracts in expectation by at most ``lambda_2(E[W])`` per matching (Boyd,
Ghosh, Prabhakar and Shah, "Randomized gossip algorithms", IEEE Trans. Inf.
Theory 2006, section II). A round's matchings are not independent, so the
prediction takes the round as its unit (:func:`round_gap`, the same argument
with ``E[W^T D W]`` of the round's product):

    d_t <= (1 - gamma) ** (t / 2) * d_0

with ``gamma`` the round's spectral gap. Both expectations are estimated from
the very matching procedure the simulator uses, by sampling it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from simulator.errors import ScenarioInvalid
from simulator.scenario import Topology

Edge = tuple[int, int]


def ring(n: int) -> list[Edge]:
    """Each site linked to the next, the last to the first."""
    if n == 2:
        return [(0, 1)]
    return sorted((min(i, (i + 1) % n), max(i, (i + 1) % n)) for i in range(n))


def full(n: int) -> list[Edge]:
    """Every pair of sites linked."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def is_connected(n: int, edges: Sequence[Edge]) -> bool:
    """True if every site can reach every other along ``edges``."""
    seen = {0}
    frontier = [0]
    links: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in edges:
        links[a].append(b)
        links[b].append(a)
    while frontier:
        node = frontier.pop()
        for other in links[node]:
            if other not in seen:
                seen.add(other)
                frontier.append(other)
    return len(seen) == n


def random_regular(
    n: int, degree: int, rng: np.random.Generator, attempts: int = 2000
) -> list[Edge]:
    """A connected random ``degree``-regular graph (pairing model, rejection).

    Raises:
        ScenarioInvalid: no such graph (``n * degree`` odd, degree >= n) or none
            found in ``attempts`` tries.
    """
    if degree >= n or (n * degree) % 2 or degree < 1:
        raise ScenarioInvalid(
            f"network.degree: no {degree}-regular graph on {n} sites exists"
        )
    if degree == n - 1:
        return full(n)
    for _ in range(attempts):
        stubs = rng.permutation(np.repeat(np.arange(n), degree))
        pairs = stubs.reshape(-1, 2)
        edges = {(int(min(a, b)), int(max(a, b))) for a, b in pairs}
        simple = len(edges) == len(pairs) and all(a != b for a, b in edges)
        if simple and is_connected(n, list(edges)):
            return sorted(edges)
    raise ScenarioInvalid(
        f"network.degree: found no connected {degree}-regular graph on {n} sites"
    )


def build_topology(
    kind: Topology, n: int, degree: int, rng: np.random.Generator
) -> list[Edge]:
    """The edges (i < j) of a topology over sites ``0..n-1``."""
    if n < 2:
        raise ScenarioInvalid("sites: expected at least two sites")
    if kind is Topology.RING:
        return ring(n)
    if kind is Topology.FULL:
        return full(n)
    return random_regular(n, degree, rng)


def random_matching(
    edges: Sequence[Edge],
    rng: np.random.Generator,
    usable: Callable[[int, int], bool] | None = None,
    used: set[Edge] | None = None,
) -> list[Edge]:
    """A random maximal matching among the usable edges.

    Edges are visited in random order and taken when both ends are still free;
    the first end of a returned pair is the side that initiates (random too).
    With ``used`` (the edges already averaged over this round), edges not in it
    are visited first, so the gossip steps of one round spread over different
    edges: on a ring of four, two steps of one random matching each left the
    two pairs apart for the whole round half of the time, and the pairs'
    models drifted apart for as long (the consensus distance jumped six-fold).
    The chosen edges are added to ``used``.

    Args:
        edges: the topology.
        rng: randomness (the simulator's seeded generator).
        usable: ``usable(i, j)`` is False for an edge that cannot be used now
            (a site down, a partition between them).
        used: edges (as ``(min, max)``) to visit last; updated in place.
    """
    busy: set[int] = set()
    out: list[Edge] = []
    order = [int(k) for k in rng.permutation(len(edges))]
    if used is not None:
        # A stable sort keeps the random order within the fresh and used edges.
        order.sort(key=lambda k: _key(edges[k]) in used)
    for k in order:
        a, b = edges[k]
        if a in busy or b in busy or (usable is not None and not usable(a, b)):
            continue
        busy.update((a, b))
        out.append((a, b) if rng.random() < 0.5 else (b, a))
        if used is not None:
            used.add(_key((a, b)))
    return out


def round_matchings(
    edges: Sequence[Edge],
    rng: np.random.Generator,
    per_round: int,
    usable: Callable[[int, int], bool] | None = None,
) -> list[list[Edge]]:
    """The ``per_round`` matchings of one round, fresh edges first (see above)."""
    used: set[Edge] = set()
    return [random_matching(edges, rng, usable, used) for _ in range(per_round)]


def _key(edge: Edge) -> Edge:
    return (min(edge), max(edge))


def _pair_average(
    x: NDArray[np.float64], w: NDArray[np.float64], a: int, b: int
) -> None:
    """Rows ``a`` and ``b`` of ``x`` become their ``w``-weighted average."""
    x[a] = x[b] = (w[a] * x[a] + w[b] * x[b]) / (w[a] + w[b])


def expected_gossip_matrix(
    n: int,
    edges: Sequence[Edge],
    weights: Sequence[float],
    rng: np.random.Generator,
    samples: int = 4000,
) -> NDArray[np.float64]:
    """``E[W]`` of one random matching with weighted pairwise averaging.

    Edge probabilities are estimated by sampling :func:`random_matching`.
    """
    counts: dict[Edge, int] = {}
    for _ in range(samples):
        for a, b in random_matching(edges, rng):
            key = (min(a, b), max(a, b))
            counts[key] = counts.get(key, 0) + 1
    w = np.asarray(weights, dtype=np.float64)
    mean = np.eye(n)
    for (i, j), count in counts.items():
        p = count / samples
        share_i, share_j = w[i] / (w[i] + w[j]), w[j] / (w[i] + w[j])
        # W_e - I: rows i and j become the weighted average of x_i and x_j.
        delta = np.zeros((n, n))
        delta[i, i] = delta[j, i] = share_i
        delta[i, j] = delta[j, j] = share_j
        delta[i, i] -= 1.0
        delta[j, j] -= 1.0
        mean += p * delta
    return mean


def spectral_gap(matrix: NDArray[np.float64], weights: Sequence[float]) -> float:
    """``1 - lambda_2`` of a gossip matrix self-adjoint in the weighted product.

    ``D^(1/2) M D^(-1/2)`` is symmetric for such a matrix (D = diag(weights));
    its eigenvalues are ``M``'s, the largest being 1 (consensus).
    """
    d = np.sqrt(np.asarray(weights, dtype=np.float64))
    sym = d[:, None] * matrix / d[None, :]
    sym = (sym + sym.T) / 2.0
    values = np.sort(np.linalg.eigvalsh(sym))[::-1]
    return float(1.0 - values[1]) if len(values) > 1 else 1.0


def round_gap(
    n: int,
    edges: Sequence[Edge],
    weights: Sequence[float],
    rng: np.random.Generator,
    per_round: int,
    samples: int = 2000,
) -> float:
    """Spectral gap of one whole round of ``per_round`` matchings.

    A round's operator ``W`` (the product of its matchings' pair averages)
    preserves the weighted mean, so for ``y = x - x_bar``
    ``E[||W y||_D^2] = y^T E[W^T D W] y <= lambda_2 ||y||_D^2`` with
    ``lambda_2`` the second eigenvalue of ``D^(-1/2) E[W^T D W] D^(-1/2)``
    (``D = diag(weights)``); the gap is ``1 - lambda_2``. The matchings of a
    round are not independent (fresh edges first), which is why the round is
    the unit here. For one matching ``E[W^T D W] = D E[W]`` and this is
    :func:`spectral_gap` of :func:`expected_gossip_matrix`. ``E`` is estimated
    by sampling :func:`round_matchings`.
    """
    w = np.asarray(weights, dtype=np.float64)
    acc = np.zeros((n, n))
    for _ in range(samples):
        op = np.eye(n)
        for matching in round_matchings(edges, rng, per_round):
            for a, b in matching:
                _pair_average(op, w, a, b)
        acc += op.T @ (w[:, None] * op)
    d = 1.0 / np.sqrt(w)
    sym = d[:, None] * (acc / samples) * d[None, :]
    values = np.sort(np.linalg.eigvalsh((sym + sym.T) / 2.0))[::-1]
    return float(1.0 - values[1]) if n > 1 else 1.0


def predicted_distances(d0: float, gap: float, rounds: int) -> list[float]:
    """Predicted consensus distance after each round, ``gap`` per round."""
    rate = math.sqrt(max(0.0, 1.0 - gap))
    return [d0 * rate**r for r in range(rounds + 1)]


def simulated_distances(
    n: int,
    edges: Sequence[Edge],
    weights: Sequence[float],
    rng: np.random.Generator,
    rounds: int,
    per_round: int,
    trials: int = 400,
) -> list[float]:
    """Expected consensus distance per round, relative to round 0, by Monte Carlo.

    The same random matchings and weighted pair averages as the simulator,
    applied to scalar models drawn independently per site (as independent
    random inits are): ``sqrt(E[d_r^2] / E[d_0^2])``. The spectral-gap bound
    holds for the worst initial direction; this is what an isotropic start
    should show, so a measured run that departs from it points at lost or
    failed exchanges.
    """
    w = np.asarray(weights, dtype=np.float64)
    total = np.zeros(rounds + 1)
    for _ in range(trials):
        x = rng.normal(size=n)
        for r in range(rounds + 1):
            if r > 0:
                for matching in round_matchings(edges, rng, per_round):
                    for a, b in matching:
                        _pair_average(x, w, a, b)
            mean = float(w @ x / w.sum())
            total[r] += float(w @ (x - mean) ** 2 / w.sum())
    return [math.sqrt(t / total[0]) for t in total]


def consensus_distance(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> float:
    """Weighted RMS distance of the models to their weighted mean.

    ``sqrt(sum_i n_i ||w_i - w_bar||^2 / sum_i n_i)`` over every floating
    parameter, with ``w_bar = sum_i n_i w_i / sum_i n_i``.
    """
    if not states:
        return 0.0
    total = float(sum(weights))
    acc = 0.0
    for name, ref in states[0].items():
        if not ref.is_floating_point():
            continue
        stacked = torch.stack([s[name].double() for s in states])
        w = torch.tensor(list(weights), dtype=torch.float64) / total
        mean = torch.tensordot(w, stacked, dims=1)
        sq = (stacked - mean).pow(2).reshape(len(states), -1).sum(dim=1)
        acc += float((w * sq).sum())
    return math.sqrt(acc)
