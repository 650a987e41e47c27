"""Erasure: nothing of the patient remains; the ledger logs request and completion."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from ledger.api import EventKind
from ml.model import ModelConfig, build_model
from ml.weights import load_weights, model_digest
from node.governance.erasure import proof_digest, retrain_without
from node.governance.errors import GovernanceError, PatientUnknown
from node.governance.registry import StoredFile

from .conftest import PATCH


def scan_site(folder, needles: list[bytes]) -> list[str]:
    """Every file under ``folder`` whose bytes or name contain a needle."""
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                if needle in data or needle.decode(errors="ignore") in str(path):
                    hits.append(str(path))
    return hits


def test_erasure_leaves_nothing_and_is_logged(fed, phantoms, tmp_path):
    gov = fed.gov(0)
    pseudonym = "PSN-ERASE-7731"
    commitment = gov.register_consent(pseudonym, *phantoms[0])
    gov.register_consent("PSN-KEEP-1", *phantoms[1])
    case_id = gov.registry.find(pseudonym).case_id
    salt = gov.registry.salt_of(case_id)
    # a derived file in the case folder, as an analysis would write it
    derived = gov.registry.case_folder(case_id) / "derived" / "thickness.json"
    derived.parent.mkdir()
    derived.write_text(json.dumps({"mean_mm": 9.1}))
    gov.registry.note_file(case_id, "derived-000", derived)
    trainer = gov.trainer(patch=PATCH, current_round=lambda: 4)
    trainer.train(build_model(ModelConfig.tiny()).state_dict(), 2)
    site = fed.root / "site0"
    needles = [pseudonym.encode(), salt, salt.hex().encode(), case_id.encode()]
    assert scan_site(site, needles), "the scan must find the patient before erasure"
    stored = [f.sha256 for f in gov.registry.files(case_id)]

    report = gov.erase(pseudonym)

    assert scan_site(site, needles) == []
    assert not gov.registry.case_folder(case_id).exists()
    with pytest.raises(PatientUnknown):
        gov.registry.find(pseudonym)
    assert gov.registry.find("PSN-KEEP-1")  # the other patient is untouched
    ledger = fed.ledgers[1]
    assert ledger.count_events(EventKind.ERASURE_REQUESTED, commitment=commitment) == 1
    [completed] = ledger.events(EventKind.ERASURE_COMPLETED, commitment=commitment)
    assert completed.data["proofDigest"] == "0x" + report.proof_digest
    assert ledger.erasure_completed(commitment)
    assert not ledger.consent_active(commitment)
    assert sorted(stored) == report.deleted and len(report.deleted) == 3
    files = [StoredFile("x", tmp_path, d) for d in report.deleted]
    again = proof_digest(commitment, files, report.completed_at)
    assert again.hex() == report.proof_digest
    assert [m["round"] for m in report.models_seen] == [5]
    assert report.to_json()["deleted_files"] == 3
    # the trainer never reads it again, and erasing twice is refused
    reads: list[str] = []
    trainer.observer = reads.append
    trainer.train(build_model(ModelConfig.tiny()).state_dict(), 2)
    assert case_id not in reads
    with pytest.raises(PatientUnknown):
        gov.erase(pseudonym)


def test_retrain_without_restores_the_pre_use_checkpoint(fed, phantoms):
    gov = fed.gov(0)
    gov.register_consent("PSN-A", *phantoms[0])
    trainer = gov.trainer(patch=PATCH)
    start = build_model(ModelConfig.tiny()).state_dict()
    after_a = trainer.train(start, 3)  # A only
    gov.register_consent("PSN-B", *phantoms[1])
    after_b = trainer.train(after_a, 2)  # A and B; B first used here
    record_b = gov.registry.find("PSN-B")
    assert record_b.first_step == 3
    path, step = gov.registry.checkpoint(record_b.first_checkpoint)
    assert step == 3
    saved = load_weights(path, start)
    assert model_digest(saved) == model_digest(after_a)

    with pytest.raises(GovernanceError, match="withdraw"):
        retrain_without(trainer, gov.registry, record_b)
    reads: list[str] = []
    trainer.observer = reads.append
    report = gov.erase("PSN-B", retrain=True)
    retrained = report.retrained
    assert retrained is not None and retrained.steps == 2 and retrained.from_step == 3
    case_b = record_b.case_id
    assert reads and case_b not in reads
    assert model_digest(retrained.state) not in (
        model_digest(after_b),
        model_digest(after_a),
    )
    assert all(torch.isfinite(t).all() for t in retrained.state.values())
    # the checkpoint still serves A? A's own checkpoint stays; B's is gone
    record_a = gov.registry.find("PSN-A")
    assert gov.registry.checkpoint(record_a.first_checkpoint) is not None
    assert gov.registry.checkpoint(record_b.first_checkpoint) is None
    assert not path.exists()
    # the step count is unchanged by retraining (it replaced the same steps)
    from node.governance.training import STEPS

    assert gov.registry.counter(STEPS) == 5


def test_erasure_without_use_and_sqlite_bytes(fed, phantoms):
    gov = fed.gov(0)
    pseudonym = "PSN-NEVER-USED-99"
    gov.register_consent(pseudonym, *phantoms[2])
    case_id = gov.registry.find(pseudonym).case_id
    salt = gov.registry.salt_of(case_id)
    report = gov.erase(pseudonym, retrain=True)
    assert report.retrained is None and report.models_seen == []
    db = (gov.folder / "governance.db").read_bytes()
    assert pseudonym.encode() not in db and salt not in db
    assert hashlib.sha256(db).digest()  # the file is still a database
    assert gov.registry.erasures()[0]["files"] == 2
