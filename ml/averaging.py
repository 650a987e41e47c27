"""Averaging rules for decentralized learning: pure tensor arithmetic, no network.

Two sites ``a`` and ``b`` hold models ``w_a``, ``w_b`` trained on ``n_a``, ``n_b``
samples. The federation's target is the weighted mean ``sum_i n_i w_i / sum_i n_i``.
Every rule here that both ends of an exchange apply keeps ``sum_i n_i w_i``
unchanged, so gossip converges to that mean (Boyd et al., "Randomized gossip
algorithms", IEEE Trans. Inf. Theory 2006):

- :func:`weighted_pair_average`: both ends take ``(n_a w_a + n_b w_b)/(n_a + n_b)``;
  then ``n_a w + n_b w = n_a w_a + n_b w_b``.
- :func:`clipped_pair_update`: each end moves towards the other by its weight
  share of the difference clipped to radius ``tau`` (clipped gossip, He,
  Karimireddy and Jaggi, "Byzantine-robust decentralized learning via
  ClippedGossip", 2022). The clipped differences are opposite vectors, so the
  weighted sum is still preserved, while a peer far away moves us at most
  ``tau * n_b / (n_a + n_b)``.
- :func:`trimmed_mean`: coordinate-wise trimmed mean over several models (Yin et
  al., ICML 2018). It is applied by one site alone and does not preserve the
  weighted sum: the price of ignoring outliers.

Every state from elsewhere must pass :func:`check_state` before it is merged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ml.errors import WeightsInvalid
from ml.weights import check_compatible, check_finite

StateDict = dict[str, torch.Tensor]


def check_state(
    state: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    what: str = "peer weights",
) -> None:
    """Refuse a state that cannot be merged into ``reference``'s model.

    Args:
        state: tensors received from a peer (already decoded).
        reference: the local model's state: names, shapes and dtypes to match.
        what: how the state is named in the error.

    Raises:
        WeightsInvalid: names differ, a shape or dtype differs, or a floating
            tensor holds NaN or infinity.
    """
    check_compatible(state, reference, what)
    for name, ref in reference.items():
        if state[name].dtype != ref.dtype:
            raise WeightsInvalid(
                f"{what}: tensor {name!r} has dtype {state[name].dtype}, "
                f"expected {ref.dtype}"
            )
    check_finite(state, what)


def _check_weight(n: float, what: str) -> None:
    if not (math.isfinite(n) and n > 0):
        raise WeightsInvalid(f"{what}: sample count must be > 0, got {n}")


def weighted_pair_average(
    state_a: Mapping[str, torch.Tensor],
    n_a: float,
    state_b: Mapping[str, torch.Tensor],
    n_b: float,
) -> StateDict:
    """``(n_a w_a + n_b w_b) / (n_a + n_b)`` per tensor.

    Both ends of an exchange call this with the same argument order (initiator
    first), so they compute bit-identical results. Non-floating tensors (step
    counters) are taken from ``state_a``.

    Args:
        state_a: the initiator's weights.
        n_a: the initiator's sample count (> 0).
        state_b: the responder's weights, same names and shapes.
        n_b: the responder's sample count (> 0).
    """
    _check_weight(n_a, "n_a")
    _check_weight(n_b, "n_b")
    share_b = n_b / (n_a + n_b)
    out: StateDict = {}
    for name in sorted(state_a):
        a, b = state_a[name], state_b[name]
        if not a.is_floating_point():
            out[name] = a.clone()
            continue
        # Computed in float64 and cast back so both ends agree bit for bit and
        # the rounding error stays far below fp32's resolution.
        mixed = a.double() + share_b * (b.double() - a.double())
        out[name] = mixed.to(a.dtype)
    return out


def _global_norm(diff: Mapping[str, torch.Tensor]) -> float:
    total = 0.0
    for tensor in diff.values():
        total += float(tensor.double().pow(2).sum())
    return math.sqrt(total)


def clip_difference(
    own: Mapping[str, torch.Tensor],
    other: Mapping[str, torch.Tensor],
    tau: float,
) -> StateDict:
    """``other - own`` scaled down so its global L2 norm is at most ``tau``.

    Only floating tensors take part; the clipping is antisymmetric
    (``clip(b - a) = -clip(a - b)``), which is what keeps the weighted sum.
    """
    if not (math.isfinite(tau) and tau > 0):
        raise WeightsInvalid(f"clipping radius tau must be > 0, got {tau}")
    diff = {
        n: other[n].double() - own[n].double()
        for n in sorted(own)
        if own[n].is_floating_point()
    }
    norm = _global_norm(diff)
    scale = 1.0 if norm <= tau else tau / norm
    return {n: d * scale for n, d in diff.items()}


def clipped_pair_update(
    own: Mapping[str, torch.Tensor],
    n_own: float,
    other: Mapping[str, torch.Tensor],
    n_other: float,
    tau: float,
) -> StateDict:
    """Move ``own`` towards ``other`` by its share of the clipped difference.

    ``w_own + n_other / (n_own + n_other) * clip(w_other - w_own, tau)``. With no
    clipping (``tau`` large) this equals :func:`weighted_pair_average`.

    Args:
        own: this site's weights.
        n_own: this site's sample count.
        other: the neighbour's weights (already checked).
        n_other: the neighbour's sample count.
        tau: clipping radius, in the L2 norm of all floating parameters.
    """
    _check_weight(n_own, "n_own")
    _check_weight(n_other, "n_other")
    share = n_other / (n_own + n_other)
    clipped = clip_difference(own, other, tau)
    out: StateDict = {}
    for name in sorted(own):
        tensor = own[name]
        if name in clipped:
            out[name] = (tensor.double() + share * clipped[name]).to(tensor.dtype)
        else:
            out[name] = tensor.clone()
    return out


def trimmed_mean(states: Sequence[Mapping[str, torch.Tensor]], trim: int) -> StateDict:
    """Coordinate-wise mean after dropping the ``trim`` largest and smallest values.

    Args:
        states: at least ``2 * trim + 1`` states with the same names and shapes.
        trim: how many values to drop at each end, per coordinate (>= 0).

    Raises:
        WeightsInvalid: too few states for ``trim``.
    """
    if trim < 0 or len(states) < 2 * trim + 1:
        raise WeightsInvalid(
            f"trimmed mean needs at least {2 * trim + 1} states for trim={trim}, "
            f"got {len(states)}"
        )
    first = states[0]
    out: StateDict = {}
    for name in sorted(first):
        if not first[name].is_floating_point():
            out[name] = first[name].clone()
            continue
        # K, *shape: sort along the stack axis and keep the middle values.
        stacked = torch.stack([s[name].double() for s in states])
        ordered = stacked.sort(dim=0).values
        kept = ordered[trim : len(states) - trim]
        out[name] = kept.mean(dim=0).to(first[name].dtype)
    return out


def to_fp16(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Floating tensors as float16 (half the bytes on the wire); others unchanged.

    Raises:
        WeightsInvalid: a value overflows float16 (|x| > 65504).
    """
    out: StateDict = {}
    for name, tensor in state.items():
        if tensor.is_floating_point():
            half = tensor.detach().to(torch.float16)
            if not bool(torch.isfinite(half).all()) and bool(
                torch.isfinite(tensor).all()
            ):
                raise WeightsInvalid(f"tensor {name!r} overflows float16")
            out[name] = half
        else:
            out[name] = tensor.detach()
    return out


def from_fp16(
    state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> StateDict:
    """Cast tensors back to ``reference``'s dtypes (after :func:`to_fp16`)."""
    return {
        name: state[name].to(reference[name].dtype) if name in reference else t
        for name, t in state.items()
    }


def weighted_mean(
    states: Sequence[Mapping[str, torch.Tensor]], counts: Sequence[float]
) -> StateDict:
    """``sum_i n_i w_i / sum_i n_i``: the value gossip averaging converges to."""
    if not states or len(states) != len(counts):
        raise WeightsInvalid("weighted mean needs one sample count per state")
    for n in counts:
        _check_weight(n, "sample count")
    total = float(sum(counts))
    out: StateDict = {}
    for name in sorted(states[0]):
        ref = states[0][name]
        if not ref.is_floating_point():
            out[name] = ref.clone()
            continue
        acc = torch.zeros_like(ref, dtype=torch.float64)
        for state, n in zip(states, counts, strict=True):
            acc += state[name].double() * (n / total)
        out[name] = acc.to(ref.dtype)
    return out


def max_deviation(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> float:
    """Largest absolute coordinate difference between two states."""
    worst = 0.0
    for name, tensor in target.items():
        if tensor.is_floating_point():
            diff = (state[name].double() - tensor.double()).abs()
            worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
    return worst
