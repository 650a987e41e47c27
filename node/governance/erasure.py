"""The right to be forgotten (GDPR Art. 17): erasure record and retraining.

What an erasure does, in order (:meth:`SiteGovernance.erase`):

1. the patient's consent is set withdrawn in the registry, so the next
   training step (which re-checks consent) no longer reads the case, and on
   the ledger if it was still active there;
2. ``request_erasure(commitment)`` is logged on the ledger;
3. optionally, :func:`retrain_without` rebuilds the site's model without the
   patient (below);
4. the scan, labels and derived files are deleted, then the patient's rows,
   including the salt (crypto-shredding: the commitment left on the ledger can
   no longer be linked to the pseudonym, :mod:`ledger.commitments`);
5. ``complete_erasure(commitment, proof_digest)`` is logged.

The proof digest is ``SHA-256`` of the canonical JSON
``{"commitment", "deleted": [sorted SHA-256 of each deleted file], "completed_at"}``.
It commits the site, on an immutable ledger and at a known time, to *which*
file contents it says it deleted for that commitment: an auditor who was shown
the erasure report (which the DPO keeps) can recompute it, and a copy of a
deleted file found later at the site contradicts the site's own signed record.
It cannot prove that no copy exists anywhere (no digest can prove an absence).

Retraining: before a case is first trained on, the model it starts from is
saved. :func:`retrain_without` restores that checkpoint and trains again on the
remaining consented cases for as many local steps as the site took since, so
the site's *own* model no longer carries the patient's influence. What was
already averaged into peers' models stays there (docs/governance.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ml.model import build_model
from ml.weights import load_weights
from node.governance.errors import GovernanceError
from node.governance.registry import PatientRecord, PatientRegistry, StoredFile
from node.governance.training import STEPS, GovernedTrainer


@dataclass(frozen=True)
class Retrained:
    """The result of :func:`retrain_without`.

    Attributes:
        state: the retrained weights (not yet the site's model: the caller
            installs them).
        steps: local steps retrained.
        from_step: the site's step count at the restored checkpoint.
    """

    state: dict[str, torch.Tensor] = field(repr=False)
    steps: int
    from_step: int


@dataclass(frozen=True)
class ErasureReport:
    """What an erasure did; hand it to the DPO (it holds no personal data).

    Attributes:
        commitment: hex consent commitment (on the ledger).
        proof_digest: hex digest logged with ``complete_erasure``.
        deleted: SHA-256 hex of each deleted file (sorted).
        completed_at: seconds since the epoch (part of the proof).
        models_seen: model versions of this site trained on the patient's
            data: ``{"round", "digest", "step"}``, oldest first. Every later
            version of this site's model, and the models of peers that
            averaged with it since the first, descend from these.
        retrained: the retraining, if one was asked for and possible.
    """

    commitment: str
    proof_digest: str
    deleted: list[str]
    completed_at: float
    models_seen: list[dict[str, Any]]
    retrained: Retrained | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "commitment": self.commitment,
            "proof_digest": self.proof_digest,
            "deleted_files": len(self.deleted),
            "deleted": self.deleted,
            "completed_at": self.completed_at,
            "models_seen": self.models_seen,
            "retrained_steps": self.retrained.steps if self.retrained else None,
        }


def proof_digest(commitment: bytes, deleted: Sequence[StoredFile], at: float) -> bytes:
    """The erasure proof digest (see the module docstring)."""
    record = {
        "commitment": commitment.hex(),
        "deleted": sorted(f.sha256 for f in deleted),
        "completed_at": at,
    }
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).digest()


def retrain_without(
    trainer: GovernedTrainer, registry: PatientRegistry, patient: PatientRecord
) -> Retrained | None:
    """Rebuild the site's model as if the patient's data had never been used.

    Restores the checkpoint saved before the patient's first use and trains
    from it on the cases consented *now* for as many steps as the site has
    taken since. The patient must already be withdrawn (the trainer reads only
    consented cases). Returns None if the patient's data was never used.

    Raises:
        GovernanceError: the patient is still consented, or the checkpoint is gone.
    """
    if patient.first_checkpoint is None or patient.first_step is None:
        return None
    if registry.is_active(patient.case_id):
        raise GovernanceError("withdraw the patient's consent before retraining")
    found = registry.checkpoint(patient.first_checkpoint)
    if found is None or not found[0].exists():
        raise GovernanceError("the checkpoint from before the first use is missing")
    path, step = found
    reference = build_model(trainer.model_config).state_dict()
    state = load_weights(path, reference)
    total = registry.counter(STEPS)
    steps = int(total) - step
    retrained = trainer.train(state, steps) if steps > 0 else state
    # The retrained steps replace the ones taken since the checkpoint; they
    # are not new ones (another patient's retraining must count the same).
    registry.set_counter(STEPS, total)
    return Retrained(retrained, max(steps, 0), step)
