"""The segmentation model: a small MONAI 3D UNet with four classes.

Four classes (background, myocardium, LV blood pool, RV blood pool) because the
AHA orientation needs the RV (DESIGN.md pitfalls). InstanceNorm rather than
BatchNorm so opacus DP-SGD accepts the model and so small per-site batches
normalize the same way everywhere.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

import torch
from monai.networks.nets.unet import UNet

from ml.errors import WeightsInvalid
from ml.weights import load_weights

NUM_CLASSES = 4
BACKGROUND, MYOCARDIUM, LV_BLOOD, RV_BLOOD = 0, 1, 2, 3

# The patch used for random training crops and for sliding-window inference:
# the two must match (a model trained on 96^3 fell to Dice 0.46 with 64^3
# windows, DESIGN.md pitfalls).
PATCH_SIZE = (64, 64, 64)

SHIPPED_WEIGHTS = "myocardium_unet.safetensors"


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the MONAI UNet (``monai.networks.nets.UNet``).

    Attributes:
        channels: feature channels per level (the default gives 275,302
            parameters).
        strides: down-sampling stride between levels (one fewer than channels).
        num_res_units: residual units per block; none by default: with one
            unit per block a training step at 64^3 on 2 threads took 0.33 s
            against 0.09 s without, and the 240-second training of
            ``benchmarks/ml_bench.py`` reached myocardium Dice 0.853 with
            units against 0.948 without (740 against 2,680 steps).
        dropout: dropout probability.
    """

    channels: tuple[int, ...] = (12, 24, 48, 96)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 0
    dropout: float = 0.0
    in_channels: int = 1
    out_channels: int = NUM_CLASSES

    @classmethod
    def tiny(cls) -> ModelConfig:
        """A few thousand parameters, for scale tests of many sites."""
        return cls(channels=(4, 8, 16), strides=(2, 2), num_res_units=0)


def build_model(config: ModelConfig | None = None) -> torch.nn.Module:
    """Build the UNet of ``config`` (default :class:`ModelConfig`), untrained."""
    config = config or ModelConfig()
    return UNet(
        spatial_dims=3,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm="INSTANCE",
        dropout=config.dropout,
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_shipped_model() -> torch.nn.Module:
    """The default-config UNet with the weights shipped in ``ml/weights/``.

    Trained by ``scripts/train_shipped_model.py`` on the project's own phantoms.

    Raises:
        WeightsInvalid: the shipped file is missing or does not fit the model.
    """
    model = build_model(ModelConfig())
    resource = importlib.resources.files("ml").joinpath("weights", SHIPPED_WEIGHTS)
    if not resource.is_file():
        raise WeightsInvalid(
            f"shipped weights ml/weights/{SHIPPED_WEIGHTS} are missing; "
            "run scripts/train_shipped_model.py"
        )
    with importlib.resources.as_file(resource) as path:
        state = load_weights(path, reference=model.state_dict())
    model.load_state_dict(state)
    model.eval()
    return model


def load_model(
    path: str | None = None, config: ModelConfig | None = None
) -> torch.nn.Module:
    """Load a model from a weights file, or the shipped one when ``path`` is None."""
    if path is None:
        return load_shipped_model()
    model = build_model(config)
    model.load_state_dict(load_weights(path, reference=model.state_dict()))
    model.eval()
    return model
