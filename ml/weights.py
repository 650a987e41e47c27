"""Model weights as bytes and files: safetensors only, never pickle.

Weights cross the network between sites (DESIGN.md, "Network"), so decoding must
not execute anything: safetensors stores raw little-endian tensors behind a JSON
header, whereas ``torch.load`` unpickles arbitrary objects. Every decoded state is
checked for NaN, infinity and (given a reference) names, shapes and dtypes before
anyone averages or loads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ml.errors import WeightsInvalid

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def _canonical(state: Mapping[str, torch.Tensor], fp16: bool) -> StateDict:
    """Detached, contiguous CPU copies in sorted name order (fp16 if asked)."""
    out: StateDict = {}
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        if fp16 and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        out[name] = tensor
    return out


def check_finite(state: Mapping[str, torch.Tensor], what: str = "weights") -> None:
    """Raise :class:`WeightsInvalid` if any floating tensor holds NaN or infinity."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsInvalid(f"{what}: tensor {name!r} holds NaN or infinity")


def check_compatible(
    state: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    what: str = "weights",
) -> None:
    """Raise :class:`WeightsInvalid` unless names and shapes match ``reference``."""
    missing = sorted(set(reference) - set(state))
    extra = sorted(set(state) - set(reference))
    if missing or extra:
        raise WeightsInvalid(
            f"{what}: tensor names differ from the model "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for name, tensor in state.items():
        expected = tuple(reference[name].shape)
        if tuple(tensor.shape) != expected:
            raise WeightsInvalid(
                f"{what}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                f"expected {expected}"
            )


def state_to_bytes(state: Mapping[str, torch.Tensor], fp16: bool = False) -> bytes:
    """Encode a state dict as canonical safetensors bytes.

    Args:
        state: tensor name to tensor; moved to CPU and made contiguous.
        fp16: store floating tensors as float16 (half the bytes on the wire).

    Raises:
        WeightsInvalid: a tensor holds NaN or infinity.
    """
    canonical = _canonical(state, fp16)
    check_finite(canonical)
    return bytes(st_save(canonical))


def state_from_bytes(
    data: bytes, reference: Mapping[str, torch.Tensor] | None = None
) -> StateDict:
    """Decode safetensors bytes into a state dict, checking it before use.

    Args:
        data: bytes from :func:`state_to_bytes` (possibly from an untrusted peer).
        reference: if given, names and shapes must match it, and tensors are cast
            to its dtypes (so fp16 wire weights come back as the model's float32).

    Raises:
        WeightsInvalid: not safetensors, NaN/infinity, or a name/shape mismatch.
    """
    try:
        state = dict(st_load(bytes(data)))
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise WeightsInvalid(f"weights bytes are not valid safetensors: {exc}") from exc
    check_finite(state)
    if reference is not None:
        check_compatible(state, reference)
        state = {n: t.to(reference[n].dtype) for n, t in state.items()}
    return state


def model_digest(state: Mapping[str, torch.Tensor]) -> bytes:
    """SHA-256 (32 bytes) of the canonical float safetensors encoding of ``state``."""
    return hashlib.sha256(state_to_bytes(state)).digest()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old file or the new one.

    Writes a temporary file in the same folder, fsyncs it, renames it over
    ``path`` (atomic on POSIX) and fsyncs the folder so the rename survives.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        # mkstemp creates 0600; give the file the usual mode under the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_weights(
    path: Path | str, state: Mapping[str, torch.Tensor], fp16: bool = False
) -> None:
    """Save a state dict atomically as a safetensors file."""
    atomic_write_bytes(path, state_to_bytes(state, fp16=fp16))
    logger.debug("saved weights to %s", path)


def load_weights(
    path: Path | str, reference: Mapping[str, torch.Tensor] | None = None
) -> StateDict:
    """Load and check a safetensors weights file (see :func:`state_from_bytes`)."""
    data = Path(path).read_bytes()
    try:
        return state_from_bytes(data, reference)
    except WeightsInvalid as exc:
        raise WeightsInvalid(f"{path}: {exc}") from exc
