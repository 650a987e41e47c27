"""Topologies, matchings, consensus distance and the spectral-gap prediction."""

import itertools
import math

import numpy as np
import pytest
import torch

from simulator.errors import ScenarioInvalid
from simulator.scenario import Topology
from simulator.topology import (
    build_topology,
    consensus_distance,
    expected_gossip_matrix,
    full,
    is_connected,
    predicted_distances,
    random_matching,
    random_regular,
    ring,
    round_gap,
    round_matchings,
    simulated_distances,
    spectral_gap,
)


def degrees(n: int, edges: list[tuple[int, int]]) -> list[int]:
    out = [0] * n
    for a, b in edges:
        out[a] += 1
        out[b] += 1
    return out


@pytest.mark.parametrize(
    ("kind", "n", "degree", "edges"),
    [
        (Topology.RING, 2, 1, 1),
        (Topology.RING, 5, 2, 5),
        (Topology.FULL, 4, 3, 6),
        (Topology.RANDOM_REGULAR, 8, 3, 12),
        (Topology.RANDOM_REGULAR, 32, 4, 64),
    ],
)
def test_topologies(kind, n, degree, edges):
    got = build_topology(kind, n, degree, np.random.default_rng(1))
    assert len(got) == edges == len(set(got))
    assert all(a < b for a, b in got)
    assert is_connected(n, got)
    if kind is not Topology.RING or n > 2:
        assert set(degrees(n, got)) == {degree}


def test_random_regular_refuses_impossible():
    with pytest.raises(ScenarioInvalid, match=r"network\.degree"):
        random_regular(5, 3, np.random.default_rng(0))
    with pytest.raises(ScenarioInvalid, match=r"network\.degree"):
        random_regular(4, 4, np.random.default_rng(0))


def test_matching_is_a_matching_and_respects_usable():
    rng = np.random.default_rng(2)
    edges = full(6)
    for _ in range(50):
        pairs = random_matching(edges, rng, usable=lambda a, b: 5 not in (a, b))
        ends = [x for p in pairs for x in p]
        assert len(ends) == len(set(ends))
        assert 5 not in ends
        assert len(pairs) == 2  # maximal on 5 usable sites


def test_consensus_distance_golden():
    a, b = {"w": torch.tensor([0.0])}, {"w": torch.tensor([2.0])}
    assert consensus_distance([a, b], [1, 1]) == pytest.approx(1.0)
    assert consensus_distance([a, b], [1, 3]) == pytest.approx(math.sqrt(0.75))
    steps = {"w": torch.tensor([0.0]), "n": torch.tensor(3)}
    assert consensus_distance([steps, steps], [1, 1]) == 0.0


def test_gap_of_complete_graph_matches_closed_form():
    # K_4: a random maximal matching is perfect, each edge has probability
    # 1/3, so E[W] = I - L/6 and lambda_2 = 1 - 4/6.
    n = 4
    matrix = expected_gossip_matrix(n, full(n), [1.0] * n, np.random.default_rng(0))
    assert spectral_gap(matrix, [1.0] * n) == pytest.approx(2 / 3, abs=0.02)
    assert np.allclose(matrix.sum(axis=1), 1.0)


def test_weighted_matrix_preserves_weighted_mean():
    weights = [1.0, 2.0, 5.0, 3.0]
    matrix = expected_gossip_matrix(4, ring(4), weights, np.random.default_rng(0))
    w = np.asarray(weights)
    assert np.allclose(w @ matrix, w)  # sum_i n_i x_i is invariant
    gap = spectral_gap(matrix, weights)
    assert 0 < gap < 1


def test_prediction_bounds_simulated_gossip():
    # Scalar gossip on a ring of 8 with the simulator's own matchings: the mean
    # squared distance decays no slower than lambda_2 per matching (Boyd et
    # al. 2006) and not absurdly faster.
    n, steps, trials = 8, 12, 300
    edges = ring(n)
    rng = np.random.default_rng(5)
    gap = spectral_gap(expected_gossip_matrix(n, edges, [1.0] * n, rng), [1.0] * n)
    finals = []
    for _ in range(trials):
        x = rng.normal(size=n)
        x -= x.mean()
        d0 = float(np.sum(x**2))
        for _ in range(steps):
            for a, b in random_matching(edges, rng):
                x[a] = x[b] = (x[a] + x[b]) / 2
        finals.append(float(np.sum(x**2)) / d0)
    measured = float(np.mean(finals))
    bound = (1 - gap) ** steps
    assert measured <= bound * 1.15
    assert measured >= bound * 0.05
    predicted = predicted_distances(1.0, gap, 3)
    assert predicted[0] == 1.0
    assert predicted[3] == pytest.approx(math.sqrt(1 - gap) ** 3)


def test_simulated_distances():
    rng = np.random.default_rng(3)
    assert simulated_distances(2, [(0, 1)], [1.0, 3.0], rng, 2, 1, trials=20) == [
        1.0,
        0.0,
        0.0,
    ]
    curve = simulated_distances(8, ring(8), [1.0] * 8, rng, 10, 1)
    assert curve[0] == 1.0
    assert all(b < a for a, b in itertools.pairwise(curve))
    gap = spectral_gap(expected_gossip_matrix(8, ring(8), [1.0] * 8, rng), [1.0] * 8)
    bound = predicted_distances(1.0, gap, 10)
    assert all(c <= b * 1.05 for c, b in zip(curve, bound, strict=True))


def test_round_prefers_fresh_edges():
    # A ring of four has two perfect matchings; the two steps of a round must
    # use both (with independent matchings half the rounds repeated one).
    rng = np.random.default_rng(0)
    for _ in range(50):
        first, second = round_matchings(ring(4), rng, 2)
        keys = {tuple(sorted(e)) for e in first} | {tuple(sorted(e)) for e in second}
        assert keys == set(ring(4))
    # Once every edge was used, the matching is still maximal.
    used = set(ring(4))
    assert len(random_matching(ring(4), rng, used=used)) == 2


def test_round_gap_of_one_matching_is_the_matching_gap():
    weights = [1.0, 2.0, 5.0, 3.0]
    rng = np.random.default_rng(0)
    single = spectral_gap(expected_gossip_matrix(4, ring(4), weights, rng), weights)
    assert round_gap(4, ring(4), weights, rng, 1) == pytest.approx(single, abs=0.03)
    # Two steps of a round on a ring of four with equal weights reach the exact
    # average: the gap of the round is 1.
    assert round_gap(4, ring(4), [1.0] * 4, rng, 2, samples=200) == pytest.approx(1.0)


def test_round_prediction_bounds_simulated_rounds():
    n, rounds = 8, 6
    weights = [float(1 + i % 3) for i in range(n)]
    edges = ring(n)
    rng = np.random.default_rng(9)
    gap = round_gap(n, edges, weights, rng, 3)
    curve = simulated_distances(n, edges, weights, rng, rounds, 3)
    bound = predicted_distances(1.0, gap, rounds)
    assert all(c <= b * 1.05 for c, b in zip(curve, bound, strict=True))
    assert curve[-1] >= bound[-1] * 0.01
