"""Local training of the segmentation model on one site's cases.

A :class:`Trainer` owns the model's optimizer (Adam) and a NumPy random
generator for crop sampling; it touches no global state, so each site can run
one in its own worker thread. The caller decides the torch thread count
(``torch.set_num_threads(1)`` per site when several train on one machine).

Checkpoints are one safetensors file: model tensors under ``model.``, Adam
moments under ``optim.``, and the step, hyper-parameters and RNG state as JSON in
the file's metadata; written atomically (write, fsync, rename), so a crash
leaves the previous checkpoint, and loading never unpickles anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses.dice import DiceCELoss
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ml.data import CaseDataset
from ml.errors import CheckpointInvalid, WeightsInvalid
from ml.model import PATCH_SIZE
from ml.weights import atomic_write_bytes, check_compatible, check_finite

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "paroma-ml-checkpoint-1"


class Trainer:
    """Train a model on random crops of a :class:`CaseDataset` with DiceCE loss.

    Args:
        model: the network (trained in place).
        dataset: where crops come from.
        lr: Adam learning rate.
        batch_size: crops per step.
        patch: crop size in voxels; must equal the inference window.
        seed: seeds the crop sampler (the model's init is the caller's).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        dataset: CaseDataset,
        *,
        lr: float = 2e-3,
        batch_size: int = 2,
        patch: Sequence[int] = PATCH_SIZE,
        seed: int = 0,
    ) -> None:
        if tuple(patch) != dataset.patch:
            raise CheckpointInvalid(
                f"trainer patch {tuple(patch)} differs from the dataset's "
                f"{dataset.patch}; train and infer with one patch size"
            )
        self.model = model
        self.dataset = dataset
        self.batch_size = batch_size
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.rng = np.random.default_rng(seed)
        self.step = 0  # optimizer steps taken since the model was created

    def train_steps(self, n: int) -> list[float]:
        """Run ``n`` optimizer steps; return each step's loss."""
        self.model.train()
        losses = []
        for _ in range(n):
            x, y = self.dataset.sample_batch(self.rng, self.batch_size)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            losses.append(float(loss.detach()))
        logger.debug("step %s loss %.4f", self.step, losses[-1] if losses else 0.0)
        return losses

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's weights (detached CPU copies)."""
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the model's weights (after averaging with peers), checked first.

        The optimizer's moments are kept: they still describe the local loss
        surface near the averaged point.
        """
        check_finite(state)
        check_compatible(state, self.model.state_dict())
        self.model.load_state_dict(dict(state))

    def checkpoint_bytes(self) -> bytes:
        """The whole training state as safetensors bytes (see the module doc)."""
        tensors: dict[str, torch.Tensor] = {
            f"model.{k}": v for k, v in self.state_dict().items()
        }
        optim = self.optimizer.state_dict()
        for pid, slots in optim["state"].items():
            for key, value in slots.items():
                tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).detach().clone()
        meta: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "batch_size": self.batch_size,
            "param_groups": optim["param_groups"],
            "rng": self.rng.bit_generator.state,
        }
        return bytes(st_save(tensors, metadata={"meta": json.dumps(meta)}))

    def save_checkpoint(self, path: Path | str) -> None:
        """Write the training state to ``path`` atomically."""
        atomic_write_bytes(path, self.checkpoint_bytes())
        logger.info("checkpoint at step %s written", self.step)

    def load_checkpoint(self, path: Path | str) -> None:
        """Resume from a checkpoint written by :meth:`save_checkpoint`.

        Raises:
            CheckpointInvalid: not a checkpoint, or one of another model.
        """
        data = Path(path).read_bytes()
        try:
            tensors = dict(st_load(data))
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_len])
            meta = json.loads(header["__metadata__"]["meta"])
        except (SafetensorError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointInvalid(f"{path}: not a training checkpoint") from exc
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointInvalid(f"{path}: unknown checkpoint format")
        model_state = {
            k.removeprefix("model."): v
            for k, v in tensors.items()
            if k.startswith("model.")
        }
        try:
            self.load_state_dict(model_state)
        except WeightsInvalid as exc:
            raise CheckpointInvalid(f"{path}: {exc}") from exc
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("optim."):
                _, pid, key = name.split(".", 2)
                state.setdefault(int(pid), {})[key] = value
        self.optimizer.load_state_dict(
            {"state": state, "param_groups": meta["param_groups"]}
        )
        self.rng.bit_generator.state = meta["rng"]
        self.step = int(meta["step"])
        self.batch_size = int(meta["batch_size"])
