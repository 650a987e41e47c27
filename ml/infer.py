"""Segmentation of a whole scan: resample, sliding 64^3 windows, postprocess.

The window equals the training crop (DESIGN.md pitfalls: a model trained on
whole volumes fell from Dice 0.93 to 0.46 when run on windows). Class
probabilities are resampled back to the scan's own grid before the argmax, and
only the largest connected component of each class is kept, which removes the
stray islands a Laplace thickness cannot handle.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers.utils import sliding_window_inference
from numpy.typing import NDArray
from scipy import ndimage

from ml.data import PAD_VALUE, TRAIN_SPACING_MM, Volume, normalize_hu, resample
from ml.model import NUM_CLASSES, PATCH_SIZE

logger = logging.getLogger(__name__)


def keep_largest_component(labels: NDArray[np.integer]) -> NDArray[np.uint8]:
    """Keep only the largest 26-connected component of each class 1-3."""
    out = np.zeros(labels.shape, dtype=np.uint8)
    structure = np.ones((3, 3, 3), dtype=bool)
    for cls in range(1, NUM_CLASSES):
        comps, count = ndimage.label(labels == cls, structure=structure)
        if count == 0:
            continue
        sizes = np.bincount(comps.ravel())
        sizes[0] = 0
        out[comps == int(sizes.argmax())] = cls
    return out


def predict_probabilities(
    model: torch.nn.Module,
    image: NDArray[np.generic],
    spacing: Sequence[float],
    *,
    net_spacing: Sequence[float] = TRAIN_SPACING_MM,
    patch: Sequence[int] = PATCH_SIZE,
    overlap: float = 0.25,
) -> NDArray[np.float32]:
    """Class probabilities (C, *image.shape) of a HU scan on its own grid.

    Args:
        model: trained network (put in eval mode here).
        image: HU volume.
        spacing: its voxel size per axis, mm.
        net_spacing: network voxel size, mm (the training spacing).
        patch: sliding-window size, voxels (the training crop).
        overlap: window overlap fraction.
    """
    scan = Volume(np.asarray(image, dtype=np.float32), np.diag([*spacing, 1.0]))
    net = resample(scan, net_spacing, order=1)

    # Network grid: (1, 1, X, Y, Z) in, (1, C, X, Y, Z) probabilities out.
    x = torch.from_numpy(normalize_hu(net.array))[None, None]
    model.eval()
    with torch.no_grad():
        # Pad short axes as training crops are: MONAI's default 0 is mid-window
        # HU, tissue the model never saw there.
        logits = sliding_window_inference(
            x, tuple(patch), 1, model, overlap=overlap, mode="gaussian", cval=PAD_VALUE
        )
        assert isinstance(logits, torch.Tensor)
        probs = torch.softmax(logits, dim=1)[0].numpy()

    # Back to the scan's grid, channel by channel (linear interpolation).
    if probs.shape[1:] == scan.array.shape:
        return probs.astype(np.float32)
    factor = np.asarray(scan.spacing) / np.asarray(net.spacing)
    offset = (factor - 1.0) / 2.0
    return np.stack(
        [
            ndimage.affine_transform(
                p,
                factor,
                offset=offset,
                output_shape=scan.array.shape,
                order=1,
                mode="nearest",
            )
            for p in probs
        ]
    ).astype(np.float32)


def segment(
    model: torch.nn.Module,
    image: NDArray[np.generic],
    spacing: Sequence[float],
) -> NDArray[np.uint8]:
    """Class map (0-3) of a HU scan on its own grid, largest components only.

    Args:
        model: trained network.
        image: HU volume.
        spacing: its voxel size per axis, mm.
    """
    probs = predict_probabilities(model, image, spacing)
    return keep_largest_component(probs.argmax(axis=0))
