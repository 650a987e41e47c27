"""The end of a run: every site segments and measures its held-out scans.

For each held-out phantom: whole-scan segmentation (``ml.infer.segment``:
resampling, 64^3 sliding windows, largest components) with each regime's
final model, myocardium Dice against the exact labels; and, with the
decentralized model, Laplace wall thickness (``ml.thickness``) averaged per
AHA segment in the LV frame estimated from the predicted labels
(``ml.aha``), compared with the phantom's true segment thickness: absolute
error per segment and agreement on thinning (<= 5.5 mm).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from common.errors import ParomaError
from ml.aha import SEGMENTS, THINNING_MM, estimate_geometry, segment_means, voxel_world
from ml.infer import segment
from ml.metrics import dice_per_class
from ml.model import MYOCARDIUM, ModelConfig, build_model
from ml.phantom import Phantom

logger = logging.getLogger(__name__)


@dataclass
class ScanResult:
    """One held-out scan's figures.

    Attributes:
        dice: regime -> myocardium Dice.
        thickness_mm: AHA segment -> measured mean thickness (decentralized
            model), NaN where the segment was not found.
        truth_mm: AHA segment -> true mean thickness.
        error: why thickness could not be measured ("" if it was).
    """

    dice: dict[str, float] = field(default_factory=dict)
    thickness_mm: dict[int, float] = field(default_factory=dict)
    truth_mm: dict[int, float] = field(default_factory=dict)
    error: str = ""


def load(state: Mapping[str, torch.Tensor], config: ModelConfig) -> torch.nn.Module:
    model = build_model(config)
    model.load_state_dict(dict(state))
    model.eval()
    return model


def segment_thickness(labels: np.ndarray, phantom: Phantom) -> dict[int, float]:
    """Mean Laplace thickness per AHA segment of a predicted label map, mm.

    Raises:
        ml.errors.MLError: no LV, myocardium or RV found in ``labels``.
    """
    from ml.thickness import laplace_thickness

    geometry = estimate_geometry(labels, phantom.affine)
    thickness = laplace_thickness(labels, phantom.spacing)
    idx = np.argwhere((labels == MYOCARDIUM) & np.isfinite(thickness))
    values = thickness[tuple(idx.T)]
    segments = geometry.segments(voxel_world(idx, phantom.affine))
    return segment_means(values, segments)


def evaluate_scan(
    phantom: Phantom,
    models: Mapping[str, torch.nn.Module],
    thickness_regime: str | None,
) -> ScanResult:
    """Segment one scan with every regime's model; measure thickness with one.

    Blocking (run it in a worker thread).
    """
    torch.set_num_threads(1)
    result = ScanResult(truth_mm=dict(phantom.true_segment_thickness_mm))
    for regime, model in models.items():
        labels = segment(model, phantom.image, phantom.spacing)
        dice = dice_per_class(labels, phantom.labels, classes=(MYOCARDIUM,))
        result.dice[regime] = dice[MYOCARDIUM]
        if regime == thickness_regime:
            try:
                result.thickness_mm = segment_thickness(labels, phantom)
            except ParomaError as exc:
                result.error = str(exc)
                logger.info("thickness not measured: %s", exc)
    return result


def thickness_summary(
    results: list[ScanResult],
) -> tuple[float, float, dict[int, float], dict[int, float]]:
    """Aggregate thickness figures over scans.

    Returns:
        (mean absolute error mm, thinning agreement in [0, 1], per-segment mean
        absolute error mm, per-segment thinning agreement); NaN where nothing
        was measured.
    """
    errors: dict[int, list[float]] = {s: [] for s in SEGMENTS}
    agree: dict[int, list[float]] = {s: [] for s in SEGMENTS}
    for r in results:
        for seg in SEGMENTS:
            got, truth = (
                r.thickness_mm.get(seg, math.nan),
                r.truth_mm.get(seg, math.nan),
            )
            if math.isfinite(got) and math.isfinite(truth):
                errors[seg].append(abs(got - truth))
                agree[seg].append(float((got <= THINNING_MM) == (truth <= THINNING_MM)))

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else math.nan

    all_err = [e for v in errors.values() for e in v]
    all_agree = [a for v in agree.values() for a in v]
    return (
        mean(all_err),
        mean(all_agree),
        {s: mean(v) for s, v in errors.items()},
        {s: mean(v) for s, v in agree.items()},
    )
