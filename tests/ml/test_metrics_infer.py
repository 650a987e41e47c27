from typing import Any

import numpy as np
import pytest
import torch

from ml.infer import keep_largest_component, predict_probabilities
from ml.metrics import dice_per_class, hd95_per_class
from ml.model import ModelConfig, build_model


def _cube(shape: Any, lo: Any, hi: Any, cls: int = 1) -> Any:
    a = np.zeros(shape, np.uint8)
    a[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = cls
    return a


@pytest.mark.parametrize(
    ("shift", "dice"),
    [(0, 1.0), (2, 0.8), (5, 0.5)],  # 10-voxel cubes shifted along one axis
)
def test_dice_golden_values(shift, dice):
    a = _cube((20, 20, 20), (2, 2, 2), (12, 12, 12))
    b = _cube((20, 20, 20), (2 + shift, 2, 2), (12 + shift, 12, 12))
    assert dice_per_class(b, a)[1] == pytest.approx(dice, abs=1e-6)


def test_hd95_is_in_mm():
    a = _cube((24, 24, 24), (4, 4, 4), (14, 14, 14))
    b = _cube((24, 24, 24), (7, 4, 4), (17, 14, 14))
    assert hd95_per_class(b, a, (2.0, 1.0, 1.0))[1] == pytest.approx(6.0, abs=0.01)


def test_largest_component_per_class():
    labels = _cube((20, 20, 20), (2, 2, 2), (8, 8, 8), 1)
    labels[15:17, 15:17, 15:17] = 1
    labels[10:12, 10:12, 10:12] = 2
    out = keep_largest_component(labels)
    assert (out[15:17, 15:17, 15:17] == 0).all()
    assert (out == 1).sum() == 216 and (out == 2).sum() == 8


def test_probabilities_come_back_on_the_scan_grid():
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny())
    image = np.zeros((30, 26, 20), np.float32)
    probs = predict_probabilities(model, image, (2.0, 2.0, 3.0), patch=(32, 32, 32))
    assert probs.shape == (4, 30, 26, 20)
    assert np.allclose(probs.sum(axis=0), 1.0, atol=1e-4)


class _Recorder(torch.nn.Module):
    """Records every window the sliding-window inference feeds it."""

    def __init__(self) -> None:
        super().__init__()
        self.windows: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows.append(x.clone())
        return torch.zeros((x.shape[0], 4, *x.shape[2:]))


def test_short_axes_are_padded_like_training_crops():
    # A scan shorter than the window on one axis: the padding must look like
    # air (the HU window's minimum, -1 after normalization), as CaseDataset
    # pads its crops, not MONAI's default 0 (mid-window HU, like tissue).
    image = np.full((20, 32, 32), 650.0, np.float32)  # 1.0 once normalized
    recorder = _Recorder()
    predict_probabilities(recorder, image, (1.5, 1.5, 1.5), patch=(32, 32, 32))
    values = torch.unique(torch.cat([w.flatten() for w in recorder.windows]))
    assert values.tolist() == [-1.0, 1.0]
