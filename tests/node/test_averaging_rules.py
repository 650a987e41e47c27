"""Averaging rules: weighted-sum preservation, robustness, input checks."""

import math

import pytest
import torch

from ml.averaging import (
    check_state,
    clipped_pair_update,
    from_fp16,
    max_deviation,
    to_fp16,
    trimmed_mean,
    weighted_mean,
    weighted_pair_average,
)
from ml.errors import WeightsInvalid


def _state(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(4, 3, generator=gen) * scale,
        "conv.bias": torch.randn(4, generator=gen) * scale,
        "steps": torch.tensor(7, dtype=torch.int64),
    }


def _weighted_sum(
    states: list[dict[str, torch.Tensor]], counts: list[float]
) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("conv.weight", "conv.bias"):
        total = torch.zeros_like(states[0][name], dtype=torch.float64)
        for state, n in zip(states, counts, strict=True):
            total += state[name].double() * n
        out[name] = total
    return out


def test_pair_average_preserves_weighted_sum_and_matches_formula():
    a, b = _state(1), _state(2)
    avg = weighted_pair_average(a, 3.0, b, 5.0)
    expected = (3 * a["conv.weight"] + 5 * b["conv.weight"]) / 8
    assert torch.allclose(avg["conv.weight"], expected, atol=1e-6)
    before = _weighted_sum([a, b], [3, 5])
    after = _weighted_sum([avg, avg], [3, 5])
    for name in before:
        assert torch.allclose(before[name], after[name], atol=1e-5)
    assert avg["steps"].item() == 7


def test_pair_average_is_bit_identical_for_both_ends():
    a, b = _state(1), _state(2)
    first = weighted_pair_average(a, 2.0, b, 9.0)
    second = weighted_pair_average(a, 2.0, b, 9.0)
    for name in first:
        assert torch.equal(first[name], second[name])


@pytest.mark.parametrize("tau", [0.01, 0.5, 1e6])
def test_clipped_updates_preserve_weighted_sum(tau):
    a, b = _state(1), _state(2, scale=10.0)
    new_a = clipped_pair_update(a, 3.0, b, 1.0, tau)
    new_b = clipped_pair_update(b, 1.0, a, 3.0, tau)
    before = _weighted_sum([a, b], [3, 1])
    after = _weighted_sum([new_a, new_b], [3, 1])
    for name in before:
        assert torch.allclose(before[name], after[name], atol=1e-4)
    moved = math.sqrt(
        sum(
            float((new_a[n].double() - a[n].double()).pow(2).sum())
            for n in ("conv.weight", "conv.bias")
        )
    )
    assert moved <= tau * 1.0 / 4.0 + 1e-6


def test_clipping_with_large_radius_equals_plain_average():
    a, b = _state(3), _state(4)
    plain = weighted_pair_average(a, 2.0, b, 6.0)
    clipped = clipped_pair_update(a, 2.0, b, 6.0, tau=1e9)
    assert max_deviation(clipped, plain) < 1e-6


def test_trimmed_mean_ignores_one_outlier():
    honest = [_state(s) for s in range(4)]
    attacker = _state(99, scale=1e4)
    robust = trimmed_mean([*honest, attacker], trim=1)
    assert float(robust["conv.weight"].abs().max()) < 10.0


def test_trimmed_mean_needs_enough_states():
    with pytest.raises(WeightsInvalid, match="at least 3 states"):
        trimmed_mean([_state(1), _state(2)], trim=1)


def test_weighted_mean_golden_value():
    a = {"x": torch.tensor([1.0, 2.0])}
    b = {"x": torch.tensor([4.0, 8.0])}
    assert torch.allclose(weighted_mean([a, b], [1, 2])["x"], torch.tensor([3.0, 6.0]))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.__setitem__("conv.bias", torch.full((4,), math.nan)), "NaN"),
        (lambda s: s.__setitem__("conv.bias", torch.full((4,), math.inf)), "NaN"),
        (lambda s: s.__setitem__("conv.bias", torch.zeros(5)), "shape"),
        (lambda s: s.__setitem__("conv.bias", torch.zeros(4).double()), "dtype"),
        (lambda s: s.pop("conv.bias"), "names differ"),
        (lambda s: s.__setitem__("extra", torch.zeros(1)), "names differ"),
    ],
)
def test_check_state_refuses_bad_tensors(mutate, message):
    reference = _state(1)
    bad = _state(2)
    mutate(bad)
    with pytest.raises(WeightsInvalid, match=message):
        check_state(bad, reference)


def test_check_state_accepts_matching_state():
    check_state(_state(2), _state(1))


def test_fp16_round_trip_and_overflow():
    state = _state(5)
    back = from_fp16(to_fp16(state), state)
    assert back["conv.weight"].dtype == torch.float32
    assert max_deviation(back, state) < 1e-2
    with pytest.raises(WeightsInvalid, match="overflows"):
        to_fp16({"x": torch.tensor([1e6])})


def test_bad_sample_counts_are_refused():
    with pytest.raises(WeightsInvalid, match="sample count"):
        weighted_pair_average(_state(1), 0.0, _state(2), 1.0)
