"""Segmentation quality per class: Dice and the 95th-percentile Hausdorff distance.

Both through ``monai.metrics`` on one-hot maps; HD95 in mm using the voxel
spacing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics.hausdorff_distance import compute_hausdorff_distance
from monai.metrics.meandice import compute_dice
from numpy.typing import NDArray

from ml.model import NUM_CLASSES


def _one_hot(labels: NDArray[np.integer]) -> torch.Tensor:
    """(1, C, *spatial) float one-hot of a class map."""
    t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return torch.nn.functional.one_hot(t, NUM_CLASSES).movedim(-1, 0)[None].float()


def dice_per_class(
    pred: NDArray[np.integer],
    truth: NDArray[np.integer],
    classes: Sequence[int] = (1, 2, 3),
) -> dict[int, float]:
    """Dice coefficient per class (1.0 when both maps lack the class)."""
    scores = compute_dice(
        _one_hot(pred), _one_hot(truth), include_background=True, ignore_empty=False
    )
    return {c: float(scores[0, c]) for c in classes}


def hd95_per_class(
    pred: NDArray[np.integer],
    truth: NDArray[np.integer],
    spacing: Sequence[float],
    classes: Sequence[int] = (1, 2, 3),
) -> dict[int, float]:
    """95th-percentile symmetric surface distance per class, mm.

    NaN when both maps lack the class, inf when only one does.
    """
    out: dict[int, float] = {}
    for cls in classes:
        p, t = np.asarray(pred) == cls, np.asarray(truth) == cls
        if not p.any() or not t.any():
            out[cls] = math.nan if not p.any() and not t.any() else math.inf
            continue
        # (1, 2, *spatial): background channel, then the class.
        pt = torch.from_numpy(np.stack([~p, p]))[None].float()
        tt = torch.from_numpy(np.stack([~t, t]))[None].float()
        with warnings.catch_warnings():
            # MONAI 1.6 passes its own deprecated ``always_return_as_numpy``
            # argument internally; the warning is MONAI's, not ours to act on.
            warnings.filterwarnings("ignore", ".*always_return_as_numpy", FutureWarning)
            dist = compute_hausdorff_distance(
                pt,
                tt,
                include_background=False,
                percentile=95,
                spacing=[float(s) for s in spacing],
            )
        out[cls] = float(dist[0, 0])
    return out
