"""Local training for the three regimes, and the per-round Dice monitor.

- :class:`SiteTrainer`: one site's local training (``ml.train.Trainer`` on its
  consented cases); it is the daemon's ``TrainingProvider`` in the
  decentralized regime and trains alone in the local-only baseline.
- :class:`ByzantineTrainer`: the same, but what it hands back (and so what the
  site sends its neighbours) is scaled or random weights (the Byzantine fault,
  a subclass that overrides one step).
- :func:`pooled_trainer`: the centralized baseline, one model on every site's
  consented cases with the federation's batch (``batch_size`` times the number
  of sites), so the three regimes see the same number of crops per round.
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

from ml.data import TRAIN_SPACING_MM, Case, CaseDataset, Volume, normalize_hu, resample
from ml.metrics import dice_per_class
from ml.model import MYOCARDIUM, PATCH_SIZE, ModelConfig, build_model
from ml.phantom import Phantom
from ml.train import Trainer
from simulator.scenario import Attack

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def model_config(tiny: bool) -> ModelConfig:
    return ModelConfig.tiny() if tiny else ModelConfig()


class SiteTrainer:
    """One site's local training on the cases it may read.

    The optimizer's moments persist across calls (as in ``ml.train.Trainer``):
    after an exchange the site continues from the averaged weights.

    Args:
        cases: the site's training cases (all patients; reads of cases
            without active consent are refused by ``on_read``).
        allowed: the pseudonyms whose consent is active now.
        on_read: the consent check, called on every read.
        config: model architecture.
        batch_size: crops per step.
        lr: Adam learning rate.
        seed: crop sampling seed.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        allowed: Callable[[], Sequence[str]],
        on_read: Callable[[str], None],
        config: ModelConfig,
        *,
        batch_size: int,
        lr: float,
        seed: int,
    ) -> None:
        active = set(allowed())
        self.dataset = CaseDataset(
            [c for c in cases if c.case_id in active], on_read=on_read
        )
        self.allowed = allowed
        self.trainer = Trainer(
            build_model(config), self.dataset, lr=lr, batch_size=batch_size, seed=seed
        )
        self._lock = threading.Lock()  # one training call at a time
        self.steps_done = 0  # optimizer steps taken

    @property
    def n_samples(self) -> float:
        """Cases the site trains on (its averaging weight); at least 1."""
        return float(max(1, len(self.dataset)))

    def forget_inactive(self) -> int:
        """Drop cases whose consent is no longer active; returns how many."""
        active = set(self.allowed())
        gone = [c for c in self.dataset.case_ids if c not in active]
        for case_id in gone:
            self.dataset.remove(case_id)
        return len(gone)

    def train(self, state: Mapping[str, torch.Tensor], steps: int) -> StateDict:
        """Train from ``state`` for ``steps`` steps and return the new weights."""
        with self._lock:
            torch.set_num_threads(1)
            self.forget_inactive()
            self.trainer.load_state_dict(state)
            if len(self.dataset) and steps > 0:
                self.trainer.train_steps(steps)
                self.steps_done += steps
            return self.trainer.state_dict()


class ByzantineTrainer(SiteTrainer):
    """A site that hands back poisoned weights instead of its trained ones.

    Args:
        attack: scaled (weights times ``scale``) or random (Gaussian noise of
            standard deviation ``|scale|``).
        scale: the factor or noise level.
        active: whether the attack is on (it starts at a given round).
    """

    def __init__(
        self, *args: object, attack: Attack, scale: float, seed: int, **kw: object
    ) -> None:
        super().__init__(*args, seed=seed, **kw)  # type: ignore[arg-type]
        self.attack = attack
        self.scale = scale
        self.active = False
        self._private: StateDict | None = None  # the honest model it hides
        self._noise = torch.Generator().manual_seed(seed + 7919)

    def train(self, state: Mapping[str, torch.Tensor], steps: int) -> StateDict:
        # Why keep a private model: the attacker trains its own honest copy and
        # only ever sends a poisoned version of it, so the attack stays the same
        # size round after round instead of compounding on itself.
        if not self.active:
            return super().train(state, steps)
        trained = super().train(self._private or state, steps)
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


class PooledTrainer(SiteTrainer):
    """The centralized baseline: every site's consented cases in one place.

    Args:
        sources: ``(cases, allowed, on_read)`` of each site; the pooled data
            set holds the union and asks each case's own site on every read.
    """

    def __init__(
        self,
        sources: Sequence[
            tuple[Sequence[Case], Callable[[], Sequence[str]], Callable[[str], None]]
        ],
        config: ModelConfig,
        *,
        batch_size: int,
        lr: float,
        seed: int,
    ) -> None:
        owner: dict[str, Callable[[str], None]] = {}
        cases: list[Case] = []
        for site_cases, _, hook in sources:
            for case in site_cases:
                owner[case.case_id] = hook
                cases.append(case)

        def allowed() -> list[str]:
            return [p for _, allow, _ in sources for p in allow()]

        def check(case_id: str) -> None:
            owner[case_id](case_id)

        super().__init__(
            cases, allowed, check, config, batch_size=batch_size, lr=lr, seed=seed
        )


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
    img = np.pad(img, pads, constant_values=-1.0)
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
