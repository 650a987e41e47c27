import io
import math

import pytest
import torch

from ml.errors import WeightsInvalid
from ml.model import ModelConfig, build_model
from ml.weights import (
    load_weights,
    model_digest,
    save_weights,
    state_from_bytes,
    state_to_bytes,
)


@pytest.fixture
def state():
    torch.manual_seed(0)
    return build_model(ModelConfig.tiny()).state_dict()


def test_round_trip_is_exact(state):
    back = state_from_bytes(state_to_bytes(state), reference=state)
    assert back.keys() == state.keys()
    for name in state:
        assert torch.equal(back[name], state[name])


def test_fp16_round_trip_returns_model_dtype(state):
    data = state_to_bytes(state, fp16=True)
    assert len(data) < 0.6 * len(state_to_bytes(state))
    back = state_from_bytes(data, reference=state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype
        assert torch.allclose(back[name], tensor, atol=1e-2, rtol=1e-3)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_rejected_both_ways(state, bad):
    name = next(iter(state))
    poisoned = dict(state)
    poisoned[name] = state[name].clone()
    poisoned[name].view(-1)[0] = bad
    with pytest.raises(WeightsInvalid, match="NaN or infinity"):
        state_to_bytes(poisoned)
    # A peer could send such bytes anyway: decoding refuses them too.
    from safetensors.torch import save

    with pytest.raises(WeightsInvalid, match="NaN or infinity"):
        state_from_bytes(save({k: v.contiguous() for k, v in poisoned.items()}))


def test_shape_and_name_mismatch_are_rejected(state):
    other = build_model(ModelConfig()).state_dict()
    with pytest.raises(WeightsInvalid, match=r"names differ|shape"):
        state_from_bytes(state_to_bytes(other), reference=state)
    name = next(iter(state))
    reshaped = dict(state)
    reshaped[name] = torch.zeros(3, 3)
    with pytest.raises(WeightsInvalid, match="shape"):
        state_from_bytes(state_to_bytes(reshaped), reference=state)


def test_pickled_bytes_are_never_unpickled(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with pytest.raises(WeightsInvalid, match="not valid safetensors"):
        state_from_bytes(buffer.getvalue())
    with pytest.raises(WeightsInvalid):
        state_from_bytes(b"\x80\x04garbage")


def test_digest_is_stable_and_sensitive(state):
    assert model_digest(state) == model_digest(dict(reversed(list(state.items()))))
    assert len(model_digest(state)) == 32
    changed = dict(state)
    name = next(iter(state))
    changed[name] = state[name] + 1e-3
    assert model_digest(changed) != model_digest(state)


def test_save_is_atomic_and_loads_checked(state, tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, state)
    save_weights(path, state)
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
    back = load_weights(path, reference=state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    path.write_bytes(b"truncated")
    with pytest.raises(WeightsInvalid, match=r"w\.safetensors"):
        load_weights(path)
