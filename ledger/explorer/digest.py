"""A model file's digest, computed the way a site records it on the ledger.

What goes on chain (``ModelRecorded.modelDigest``) is
:func:`ml.weights.model_digest` of the site's in-memory state dict: SHA-256 of
the safetensors encoding of the tensors in sorted name order, on the CPU,
contiguous, in their own dtypes (float32 for a site's model; the float16
wire format is never what is recorded), with no ``__metadata__``. The node
then saves exactly those bytes as ``checkpoints/round-NNNNNN.safetensors``
(:meth:`node.store.SiteStore.save_checkpoint` through
:func:`ml.weights.save_weights`), so for a checkpoint file the digest is also
the SHA-256 of the file.

The explorer may not import ``ml`` (nor torch: ``ledger`` depends on
``identity`` at most), so it re-encodes the uploaded file's tensors with
``safetensors.numpy`` in sorted name order and hashes that. The result equals
``model_digest`` of the same tensors (checked in tests/explorer against
``ml.weights``), also for a file written by another tool with metadata or a
different tensor order. bfloat16 tensors have no numpy dtype and are refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from safetensors import SafetensorError
from safetensors.numpy import load as np_load
from safetensors.numpy import save as np_save

from ledger.explorer.errors import BadQuery


@dataclass(frozen=True)
class ModelFileDigest:
    """The digests of an uploaded weights file.

    Attributes:
        model_digest: ``0x`` hex SHA-256 of the canonical encoding (what the
            ledger records).
        file_sha256: ``0x`` hex SHA-256 of the file's bytes as uploaded.
        tensors: how many tensors the file holds.
    """

    model_digest: str
    file_sha256: str
    tensors: int


def model_file_digest(data: bytes) -> ModelFileDigest:
    """Digest a safetensors file's bytes as :func:`ml.weights.model_digest` would.

    Raises:
        BadQuery: not a safetensors file, or a dtype numpy cannot hold (BF16).
    """
    try:
        arrays = np_load(bytes(data))
    except KeyError as exc:
        raise BadQuery(
            f"model file: tensor dtype {exc.args[0]} is not supported "
            "(expected the float32 checkpoint a site saves)"
        ) from None
    except (SafetensorError, ValueError, OSError) as exc:
        raise BadQuery(f"model file: not a safetensors file ({exc})") from None
    canonical = np_save({name: arrays[name] for name in sorted(arrays)})
    return ModelFileDigest(
        model_digest="0x" + hashlib.sha256(canonical).hexdigest(),
        file_sha256="0x" + hashlib.sha256(data).hexdigest(),
        tensors=len(arrays),
    )
