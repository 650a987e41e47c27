"""The explorer's model file digest equals what a site records on the ledger."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save

from ledger.explorer.digest import model_file_digest
from ledger.explorer.errors import BadQuery
from ml.weights import model_digest, state_to_bytes


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {
        "model.2.conv.weight": torch.randn(8, 4, 3, 3, 3, generator=g),
        "model.0.conv.bias": torch.randn(4, generator=g),
        "steps": torch.arange(3),
        "scale": torch.randn(2, generator=g).half(),
    }


def test_checkpoint_file_digest_is_the_recorded_digest():
    state = _state()
    checkpoint = state_to_bytes(state)  # exactly what node.store saves
    found = model_file_digest(checkpoint)
    assert found.model_digest == "0x" + model_digest(state).hex()
    assert found.file_sha256 == found.model_digest
    assert found.tensors == 4


def test_other_tensor_order_and_metadata_give_the_same_digest():
    state = _state()
    other = save(dict(reversed(list(state.items()))), metadata={"tool": "x"})
    found = model_file_digest(other)
    assert found.model_digest == "0x" + model_digest(state).hex()
    assert found.file_sha256 == "0x" + hashlib.sha256(other).hexdigest()
    assert found.file_sha256 != found.model_digest


def test_changed_weight_changes_the_digest():
    state = _state()
    state["model.0.conv.bias"][0] += 1e-6
    assert model_file_digest(state_to_bytes(state)).model_digest != (
        "0x" + model_digest(_state()).hex()
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a safetensors file"),
        (b"PK\x03\x04zipfile", "not a safetensors file"),
        (save({"w": torch.ones(2, dtype=torch.bfloat16)}), "BF16 is not supported"),
    ],
)
def test_bad_files_are_refused(data, message):
    with pytest.raises(BadQuery, match=message):
        model_file_digest(data)
