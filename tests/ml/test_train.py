from typing import Any

import numpy as np
import pytest
import torch

from ml.data import Case, CaseDataset
from ml.errors import CheckpointInvalid, WeightsInvalid
from ml.model import ModelConfig, build_model, count_parameters
from ml.train import Trainer

PATCH = (32, 32, 32)


def _trainer(small_phantom: Any, seed: int = 0, config: Any = None) -> Any:
    torch.manual_seed(seed)
    model = build_model(config or ModelConfig.tiny())
    data = CaseDataset([Case.from_phantom("a", small_phantom)], patch=PATCH)
    return Trainer(model, data, lr=1e-2, batch_size=2, patch=PATCH, seed=seed)


def test_default_model_is_about_a_third_of_a_million_parameters():
    assert 250_000 < count_parameters(build_model()) < 400_000
    assert count_parameters(build_model(ModelConfig.tiny())) < 20_000


def test_training_steps_reduce_the_loss(small_phantom):
    trainer = _trainer(small_phantom)
    losses = trainer.train_steps(30)
    assert len(losses) == 30 and trainer.step == 30
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05


def test_checkpoint_resume_continues_identically(small_phantom, tmp_path):
    first = _trainer(small_phantom)
    first.train_steps(3)
    first.save_checkpoint(tmp_path / "ckpt.safetensors")
    expected = first.train_steps(3)

    second = _trainer(small_phantom, seed=99)  # other init and sampler
    second.load_checkpoint(tmp_path / "ckpt.safetensors")
    assert second.step == 3
    assert second.train_steps(3) == pytest.approx(expected, abs=1e-6)
    for name, tensor in first.state_dict().items():
        assert torch.allclose(second.state_dict()[name], tensor, atol=1e-6)


def test_checkpoint_of_another_model_is_refused(small_phantom, tmp_path):
    big = _trainer(small_phantom, config=ModelConfig())
    big.save_checkpoint(tmp_path / "big.safetensors")
    with pytest.raises(CheckpointInvalid):
        _trainer(small_phantom).load_checkpoint(tmp_path / "big.safetensors")
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointInvalid):
        _trainer(small_phantom).load_checkpoint(tmp_path / "junk")


def test_load_state_dict_rejects_nan(small_phantom):
    trainer = _trainer(small_phantom)
    state = trainer.state_dict()
    name = next(iter(state))
    state[name] = state[name].clone().fill_(float("nan"))
    with pytest.raises(WeightsInvalid):
        trainer.load_state_dict(state)


def test_patch_must_match_dataset(small_phantom):
    data = CaseDataset([Case.from_phantom("a", small_phantom)], patch=PATCH)
    with pytest.raises(CheckpointInvalid, match="patch"):
        Trainer(build_model(ModelConfig.tiny()), data, patch=(64, 64, 64))
