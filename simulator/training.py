"""Local training for the three regimes, and the per-round Dice monitor.

- a site's local training is its governance's own trainer
  (``SiteGovernance.trainer``, a ``node.governance.training.GovernedTrainer``):
  it reads the site registry's consented cases only, re-checks consent before
  every step and on every read, and notes which models saw which case. It is
  the daemon's ``TrainingProvider`` in the decentralized regime and trains
  alone in the local-only baseline.
- :class:`ByzantineTrainer`: wraps a site's trainer, but what it hands back
  (and so what the site sends its neighbours) is scaled or random weights
  (the Byzantine fault).
- :class:`PooledTrainer`: the centralized baseline, one model on every site's
  consented cases (read from the sites' registries, consent checked with the
  owning site on every read) with the federation's batch (``batch_size`` times
  the number of sites), so the three regimes see the same number of crops per
  round.
- :class:`Monitor`: Dice of the myocardium on one 64^3 window around the heart
  of each site's first held-out scan, cheap enough to run every round; the
  final figures come from whole-scan segmentation (:mod:`simulator.evaluate`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from ml.data import (
    PAD_VALUE,
    TRAIN_SPACING_MM,
    Case,
    CaseDataset,
    Volume,
    normalize_hu,
    resample,
)
from ml.metrics import dice_per_class
from ml.model import MYOCARDIUM, PATCH_SIZE, ModelConfig, build_model
from ml.phantom import Phantom
from ml.train import Trainer
from node.governance.errors import ConsentNotActive
from node.governance.registry import CaseId, ConsentState
from node.governance.site import SiteGovernance
from node.governance.training import GovernedTrainer
from simulator.scenario import Attack

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def model_config(tiny: bool) -> ModelConfig:
    return ModelConfig.tiny() if tiny else ModelConfig()


class ByzantineTrainer:
    """A site that hands back poisoned weights instead of its trained ones.

    Args:
        inner: the site's own (governed) trainer, which it trains honestly.
        attack: scaled (weights times ``scale``) or random (Gaussian noise of
            standard deviation ``|scale|``).
        scale: the factor or noise level.
        seed: seeds the noise.
    """

    def __init__(
        self, inner: GovernedTrainer, *, attack: Attack, scale: float, seed: int
    ) -> None:
        self.inner = inner
        self.attack = attack
        self.scale = scale
        self.active = False  # the attack starts at a given round
        self._private: StateDict | None = None  # the honest model it hides
        self._noise = torch.Generator().manual_seed(seed + 7919)

    @property
    def n_samples(self) -> float:
        return self.inner.n_samples

    def train(self, state: Mapping[str, torch.Tensor], steps: int) -> StateDict:
        # Why keep a private model: the attacker trains its own honest copy and
        # only ever sends a poisoned version of it, so the attack stays the same
        # size round after round instead of compounding on itself.
        if not self.active:
            return self.inner.train(state, steps)
        trained = self.inner.train(self._private or state, steps)
        self._private = trained
        out: StateDict = {}
        for name, tensor in trained.items():
            if not tensor.is_floating_point():
                out[name] = tensor
            elif self.attack is Attack.SCALED:
                out[name] = tensor * self.scale
            else:
                noise = torch.randn(tensor.shape, generator=self._noise)
                out[name] = (noise * abs(self.scale)).to(tensor.dtype)
        return out


SiteTrainer = GovernedTrainer | ByzantineTrainer
"""What trains at a site: its governance's trainer, possibly Byzantine."""


class PooledTrainer:
    """The centralized baseline: every site's consented cases in one place.

    The data set holds each site's consented cases as its registry stores
    them; every read asks the owning site's registry again, and cases whose
    consent is no longer active are dropped before each training call.

    Args:
        sources: ``(governance, observer)`` of each site; ``observer`` is
            called with the case id after each consented read.
        config: model architecture.
        batch_size: crops per step.
        lr: Adam learning rate.
        seed: crop sampling seed.
        patch: crop size in voxels.
    """

    def __init__(
        self,
        sources: Sequence[tuple[SiteGovernance, Callable[[CaseId], None]]],
        config: ModelConfig,
        *,
        batch_size: int,
        lr: float,
        seed: int,
        patch: Sequence[int] = PATCH_SIZE,
    ) -> None:
        self._owner: dict[CaseId, tuple[SiteGovernance, Callable[[CaseId], None]]]
        self._owner = {}
        cases: list[Case] = []
        for gov, observer in sources:
            registry = gov.registry
            for patient in registry.patients():
                if patient.state is not ConsentState.ACTIVE:
                    continue
                self._owner[patient.case_id] = (gov, observer)
                cases.append(
                    Case(
                        patient.case_id,
                        image_path=registry.file_path(patient.case_id, "scan"),
                        label_path=registry.file_path(patient.case_id, "labels"),
                    )
                )
        self.dataset = CaseDataset(cases, patch=patch, on_read=self._on_read)
        self.trainer = Trainer(
            build_model(config),
            self.dataset,
            lr=lr,
            batch_size=batch_size,
            patch=patch,
            seed=seed,
        )
        self._lock = threading.Lock()  # one training call at a time

    @property
    def n_samples(self) -> float:
        """Cases the pooled model trains on; at least 1."""
        return float(max(1, len(self.dataset)))

    def _active(self, case_id: CaseId) -> bool:
        gov, _ = self._owner[case_id]
        return gov.registry.is_active(case_id)

    def _on_read(self, case_id: CaseId) -> None:
        # The veto, before CaseDataset touches (or caches) any voxel.
        if not self._active(case_id):
            raise ConsentNotActive("a case's consent is no longer active")
        self._owner[case_id][1](case_id)

    def forget_inactive(self) -> int:
        """Drop cases (and cached voxels) whose consent is no longer active."""
        with self._lock:
            gone = [c for c in self.dataset.case_ids if not self._active(c)]
            for case_id in gone:
                self.dataset.remove(case_id)
            return len(gone)

    def train(self, state: Mapping[str, torch.Tensor], steps: int) -> StateDict:
        """Train from ``state`` for ``steps`` steps and return the new weights."""
        self.forget_inactive()
        with self._lock:
            torch.set_num_threads(1)
            self.trainer.load_state_dict(state)
            if len(self.dataset) and steps > 0:
                self.trainer.train_steps(steps)
            return self.trainer.state_dict()


@dataclass
class MonitorCase:
    """One 64^3 window of a held-out scan at the training spacing.

    Attributes:
        image: (1, 1, 64, 64, 64) normalized input.
        labels: (64, 64, 64) true classes.
    """

    image: torch.Tensor
    labels: NDArray[np.uint8]


def monitor_case(phantom: Phantom) -> MonitorCase:
    """The window of ``phantom`` centred on its myocardium, resampled and cropped.

    The centre comes from the ground truth: this is a learning-curve probe of
    the model, not a clinical measurement.
    """
    image = resample(Volume(phantom.image, phantom.affine), TRAIN_SPACING_MM, order=1)
    labels = resample(Volume(phantom.labels, phantom.affine), TRAIN_SPACING_MM, order=0)
    img = normalize_hu(image.array)
    lab = np.asarray(labels.array, dtype=np.uint8)
    patch = np.asarray(PATCH_SIZE)
    pads = [(0, int(max(0, p - s))) for p, s in zip(patch, img.shape, strict=True)]
    img = np.pad(img, pads, constant_values=PAD_VALUE)
    lab = np.pad(lab, pads, constant_values=0)
    centre = np.argwhere(lab == MYOCARDIUM).mean(axis=0).astype(int)
    start = np.clip(centre - patch // 2, 0, np.asarray(img.shape) - patch)
    window = tuple(slice(int(a), int(a + p)) for a, p in zip(start, patch, strict=True))
    x = torch.from_numpy(np.ascontiguousarray(img[window]))[None, None]
    return MonitorCase(x, np.ascontiguousarray(lab[window]))


class Monitor:
    """Myocardium Dice of a model on each site's monitor window.

    Args:
        cases: site name -> its monitor window.
        config: the architecture of the states to evaluate.
    """

    def __init__(self, cases: Mapping[str, MonitorCase], config: ModelConfig) -> None:
        self.cases = dict(cases)
        self.config = config

    def dice(self, state: Mapping[str, torch.Tensor], site: str) -> float:
        """Myocardium Dice of ``state`` on ``site``'s window (blocking)."""
        torch.set_num_threads(1)
        case = self.cases[site]
        model = build_model(self.config)
        model.load_state_dict(dict(state))
        model.eval()
        with torch.no_grad():
            pred = model(case.image).argmax(dim=1)[0].numpy().astype(np.uint8)
        return dice_per_class(pred, case.labels, classes=(MYOCARDIUM,))[MYOCARDIUM]
