"""Benchmark of the ml package on phantoms never used in training.

Trains the default model from scratch for a time budget (2 torch threads), then
on held-out phantoms (seeds from 10000, all four scanner profiles) measures:

* thickness_mae_gt_mm: mean absolute error of the AHA segment mean thickness
  from ground-truth labels (goal <= 0.5 mm at 1.5 mm voxels);
* thickness_mae_pred_mm: the same from the predicted segmentation (goal <= 0.75);
* thinning_agreement: share of segments whose thinning flag (<= 5.5 mm) from the
  predicted segmentation matches the truth (goal >= 0.95);
* dice_myocardium, hd95_myocardium_mm;
* train_seconds, s_per_step, parameters, model_mb.

Run: ``.venv/bin/python benchmarks/ml_bench.py`` (about 5-6 minutes), or
``--weights FILE`` to evaluate existing weights without training.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ml.analysis import measure
from ml.data import Case, CaseDataset
from ml.errors import MLError
from ml.infer import segment
from ml.metrics import dice_per_class, hd95_per_class
from ml.model import ModelConfig, build_model, count_parameters, load_model
from ml.phantom import SCANNER_PROFILES, generate_phantom
from ml.train import Trainer
from ml.weights import state_to_bytes

TEST_SEED = 10_000


def train(seconds: float, cases: int, lr: float) -> tuple[torch.nn.Module, float, int]:
    """Train the default model for ``seconds``; return it, time and steps."""
    profiles = list(SCANNER_PROFILES.values())
    data = [
        Case.from_phantom(f"train-{i}", generate_phantom(i, profiles[i % 4]))
        for i in range(cases)
    ]
    torch.manual_seed(0)
    model = build_model(ModelConfig())
    trainer = Trainer(model, CaseDataset(data), lr=lr, batch_size=2, seed=0)
    start = time.monotonic()
    elapsed = 0.0
    while elapsed < seconds:
        # Cosine decay over the time budget, from lr to lr / 20.
        frac = min(elapsed / seconds, 1.0)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        trainer.train_steps(10)
        elapsed = time.monotonic() - start
    return model, elapsed, trainer.step


def _mean_finite(values: list[float]) -> float:
    """Mean of the finite values (NaN when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def evaluate(model: torch.nn.Module, count: int) -> dict[str, float]:
    """Thickness, thinning and Dice figures on ``count`` held-out phantoms."""
    profiles = list(SCANNER_PROFILES.values())
    gt_err, pred_err, agree, dice, hd95 = [], [], [], [], []
    failures = 0
    for i in range(count):
        ph = generate_phantom(TEST_SEED + i, profiles[i % 4])
        truth = ph.true_segment_thickness_mm
        gt_means, _, _ = measure(ph.labels, ph.affine)
        pred = segment(model, ph.image, ph.spacing)
        dice.append(dice_per_class(pred, ph.labels)[1])
        hd95.append(hd95_per_class(pred, ph.labels, ph.spacing)[1])
        try:
            pred_means, _, _ = measure(pred, ph.affine)
        except MLError as exc:
            # A segmentation that cannot be measured counts as a failure: its
            # segments are NaN (left out of the MAE, wrong for thinning).
            print(f"case {i}: predicted labels not measurable: {exc}", file=sys.stderr)
            failures += 1
            pred_means = dict.fromkeys(range(1, 18), math.nan)
        for seg in range(1, 18):
            gt_err.append(abs(gt_means[seg] - truth[seg]))
            pred_err.append(abs(pred_means[seg] - truth[seg]))
            agree.append((pred_means[seg] <= 5.5) == (truth[seg] <= 5.5))
        print(
            f"case {i} ({ph.profile}): dice {dice[-1]:.3f}, "
            f"mae gt {np.mean(gt_err[-17:]):.2f} pred {np.mean(pred_err[-17:]):.2f}",
            file=sys.stderr,
            flush=True,
        )
    return {
        "thickness_mae_gt_mm": _mean_finite(gt_err),
        "thickness_mae_pred_mm": _mean_finite(pred_err),
        "thinning_agreement": float(np.mean(agree)),
        "dice_myocardium": float(np.mean(dice)),
        "hd95_myocardium_mm": float(np.mean(hd95)),
        "pred_unmeasurable_cases": float(failures),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="ml benchmark on held-out phantoms")
    parser.add_argument("--train-seconds", type=float, default=240.0)
    parser.add_argument("--cases", type=int, default=16, help="training phantoms")
    parser.add_argument("--test-cases", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", type=Path, help="evaluate these, do not train")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.weights:
        model, seconds, steps = load_model(str(args.weights)), math.nan, 0
    else:
        model, seconds, steps = train(args.train_seconds, args.cases, args.lr)
    results = {
        "train_seconds": seconds,
        "train_steps": float(steps),
        "s_per_step": seconds / steps if steps else math.nan,
        "parameters": float(count_parameters(model)),
        "model_mb": len(state_to_bytes(model.state_dict())) / 1e6,
        "model_mb_fp16": len(state_to_bytes(model.state_dict(), fp16=True)) / 1e6,
    }
    results.update(evaluate(model, args.test_cases))
    for key, value in results.items():
        print(f"{key}: {value:.4g}")


if __name__ == "__main__":
    main()
