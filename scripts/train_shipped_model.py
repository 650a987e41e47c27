"""Train the model shipped in ml/weights/myocardium_unet.safetensors.

Reproduce the shipped file with (fixed seeds; about 9 + 4 minutes on an idle
2-core machine):

    .venv/bin/python scripts/train_shipped_model.py --steps 6000 --threads 2 \
        --max-seconds 1200 --out /tmp/stage1.safetensors
    .venv/bin/python scripts/train_shipped_model.py --steps 2500 --threads 2 \
        --lr 1e-3 --cases 32 --init /tmp/stage1.safetensors

(both ran to their step count, at about 0.09 and 0.1 s a step).

It trains the default ModelConfig on phantoms of seeds 0..N-1 from all four
scanner profiles (the benchmark evaluates on seeds from 10000 up, never used
here), with Adam and a cosine learning-rate decay, and writes the weights in
float16 (half the size; loaded back as float32).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from ml.data import Case, CaseDataset
from ml.model import ModelConfig, build_model, count_parameters
from ml.phantom import SCANNER_PROFILES, generate_phantom
from ml.train import Trainer
from ml.weights import load_weights, save_weights

OUT = Path(__file__).resolve().parent.parent / "ml" / "weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=OUT / "myocardium_unet.safetensors")
    parser.add_argument("--init", type=Path, help="start from these weights")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    profiles = list(SCANNER_PROFILES.values())
    cases = [
        Case.from_phantom(
            f"train-{i}", generate_phantom(i, profiles[i % len(profiles)])
        )
        for i in range(args.cases)
    ]
    model = build_model(ModelConfig())
    if args.init:
        model.load_state_dict(load_weights(args.init, reference=model.state_dict()))
    print(f"parameters: {count_parameters(model)}")
    trainer = Trainer(model, CaseDataset(cases), lr=args.lr, batch_size=2, seed=0)
    start = time.monotonic()
    chunk = 50
    while trainer.step < args.steps:
        # Cosine decay from lr to lr / 20.
        frac = trainer.step / args.steps
        lr = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        losses = trainer.train_steps(min(chunk, args.steps - trainer.step))
        elapsed = time.monotonic() - start
        print(
            f"step {trainer.step} loss {sum(losses) / len(losses):.4f} "
            f"lr {lr:.5f} {elapsed:.0f} s",
            flush=True,
        )
        save_weights(args.out, trainer.state_dict(), fp16=True)
        if elapsed > args.max_seconds:
            print("time budget reached")
            break
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
