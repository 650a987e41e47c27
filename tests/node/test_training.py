"""Local training through the daemon: worker thread, checks, checkpoint, round."""

import math

import pytest
import torch
import trio

from ml.errors import WeightsInvalid
from tests.node.federation import small_state


class QuadraticTrainer:
    """Gradient descent on ||w - target||^2: a real, tiny training problem."""

    n_samples = 4.0

    def __init__(self, target: dict[str, torch.Tensor], poison: bool = False) -> None:
        self.target = target
        self.poison = poison

    def train(self, state: dict[str, torch.Tensor], steps: int):
        out = {}
        for name, tensor in state.items():
            if not tensor.is_floating_point():
                out[name] = tensor.clone()
                continue
            weight = tensor.clone().requires_grad_(True)
            for _ in range(steps):
                loss = (weight - self.target[name]).pow(2).sum()
                (grad,) = torch.autograd.grad(loss, weight)
                with torch.no_grad():
                    weight -= 0.25 * grad
            out[name] = weight.detach()
        if self.poison:
            out["conv.bias"] = torch.full_like(out["conv.bias"], math.nan)
        return out


async def test_train_once_checkpoints_a_new_round(tmp_path, make_federation):
    fed = make_federation(1)
    node = fed.node(0, tmp_path, small_state(0), 1.0)
    node.trainer = QuadraticTrainer(small_state(1))
    start = node.digest
    with trio.fail_after(10):
        await node.train_once(3, trio.CapacityLimiter(1))
    assert node.round == 1 and node.digest != start
    # Each step halves the distance to the target: 3 steps leave 1/8 of it.
    target = small_state(1)["conv.weight"]
    initial_gap = (small_state(0)["conv.weight"] - target).abs()
    gap = (node.state["conv.weight"] - target).abs()
    assert torch.allclose(gap, initial_gap / 8, atol=1e-5)
    row = node.store.rounds()[-1]
    assert row["kind"] == "train" and start.hex() in row["parents"]
    node.store.close()


async def test_trainer_returning_nan_changes_nothing(tmp_path, make_federation):
    fed = make_federation(1)
    node = fed.node(0, tmp_path, small_state(0), 1.0)
    node.trainer = QuadraticTrainer(small_state(1), poison=True)
    with pytest.raises(WeightsInvalid, match="NaN"):
        await node.train_once(2)
    assert node.round == 0
    assert len(node.store.rounds()) == 1
    node.store.close()
