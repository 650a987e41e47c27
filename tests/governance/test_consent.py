"""Consent: commitments on the ledger; training reads only consented cases."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ledger.api import EventKind
from ledger.commitments import verify_commitment
from ml.model import ModelConfig, build_model
from node.governance.errors import ConsentNotActive, PatientExists, PatientUnknown
from node.governance.registry import ConsentState

from .conftest import PATCH


def initial_state() -> dict[str, torch.Tensor]:
    return build_model(ModelConfig.tiny()).state_dict()


def test_register_records_a_salted_commitment(fed, phantoms):
    gov = fed.gov(0)
    commitment = gov.register_consent("PSN-001", *phantoms[0])
    ledger = fed.ledgers[1]  # another member reads it
    assert ledger.consent_active(commitment)
    [event] = ledger.events(EventKind.CONSENT_REGISTERED)
    assert event.commitment == "0x" + commitment.hex()
    assert event.data["purpose"] == 1
    # The pseudonym is on no event; the commitment opens only with the salt.
    for e in ledger.events():
        assert "PSN-001" not in repr(e)
    record = gov.registry.find("PSN-001")
    salt = gov.registry.salt_of(record.case_id)
    assert verify_commitment(commitment, salt, "PSN-001", 1)
    assert not verify_commitment(commitment, bytes(32), "PSN-001", 1)
    # the stored copy is named by the case id, never the pseudonym
    for f in gov.registry.files(record.case_id):
        assert "PSN" not in str(f.path)
    with pytest.raises(PatientExists):
        gov.register_consent("PSN-001", *phantoms[1])


def test_withdraw_and_unknown(fed, phantoms):
    gov = fed.gov(0)
    commitment = gov.register_consent("PSN-002", *phantoms[0])
    assert gov.withdraw_consent("PSN-002") == commitment
    assert not fed.ledgers[0].consent_active(commitment)
    assert fed.ledgers[0].count_events(EventKind.CONSENT_WITHDRAWN) == 1
    assert gov.registry.find("PSN-002").state is ConsentState.WITHDRAWN
    with pytest.raises(PatientUnknown) as info:
        gov.withdraw_consent("PSN-404")
    assert "PSN-404" not in str(info.value)


def test_missing_scan_is_refused_and_nothing_registered(fed, tmp_path):
    gov = fed.gov(0)
    with pytest.raises(Exception, match="does not exist"):
        gov.register_consent("PSN-003", tmp_path / "nope.nii.gz")
    assert gov.registry.patients() == []
    assert fed.ledgers[0].count_events(EventKind.CONSENT_REGISTERED) == 0


def test_training_never_reads_a_case_without_consent(fed, phantoms):
    gov = fed.gov(0)
    for i in range(3):
        gov.register_consent(f"PSN-{i}", *phantoms[i])
    withdrawn = gov.registry.find("PSN-1").case_id
    kept = {gov.registry.find(f"PSN-{i}").case_id for i in (0, 2)}
    reads: list[str] = []
    state: dict[str, int | None] = {"step_of_withdrawal": None}

    def observer(case_id):
        reads.append(case_id)
        # Withdraw in the middle of the first call, from inside a read.
        if len(reads) == 3 and state["step_of_withdrawal"] is None:
            state["step_of_withdrawal"] = len(reads)
            gov.withdraw_consent("PSN-1")

    trainer = gov.trainer(patch=PATCH, observer=observer)
    assert trainer.n_samples == 3
    out = trainer.train(initial_state(), 6)
    assert state["step_of_withdrawal"] == 3
    after = reads[state["step_of_withdrawal"] :]
    assert after and withdrawn not in after
    assert set(after) <= kept
    assert trainer.n_samples == 2
    # a fresh call never reads it either
    reads.clear()
    trainer.train(out, 4)
    assert withdrawn not in reads and reads


def test_on_read_hook_vetoes_a_withdrawn_case(fed, phantoms):
    gov = fed.gov(0)
    gov.register_consent("PSN-0", *phantoms[0])
    trainer = gov.trainer(patch=PATCH)
    case_id = gov.registry.find("PSN-0").case_id
    trainer._sync()
    gov.registry.set_state(case_id, ConsentState.WITHDRAWN)  # behind its back
    with pytest.raises(ConsentNotActive):
        trainer._on_read(case_id)
    # the training loop resyncs and finds nothing left to read
    state = initial_state()
    out = trainer.train(state, 3)
    assert all((out[k] == state[k]).all() for k in state)


def test_retention_and_purpose_exclude_cases(fed, phantoms):
    gov = fed.gov(0)
    gov.register_consent("PSN-0", *phantoms[0])
    gov.register_consent("PSN-1", *phantoms[1])
    old = gov.registry.find("PSN-0").case_id
    with gov.registry.db.conn:
        gov.registry.db.execute(
            "update patients set registered_at = registered_at - 400 * 86400 "
            "where case_id = ?",
            [old],
        )
    policy = gov.policy
    short = replace(policy, retention=replace(policy.retention, scan_days=365))
    reads: list[str] = []
    trainer = gov.trainer(patch=PATCH, observer=reads.append)
    trainer.policy = short
    trainer.train(initial_state(), 3)
    assert old not in reads and reads
    gov._policy = short
    assert gov.due_for_erasure() == 1 and gov.status()["due_for_erasure"] == 1
    other = replace(short, purpose=7)
    trainer.policy = other
    assert trainer.n_samples == 0


def test_first_use_checkpoint_and_usage(fed, phantoms):
    gov = fed.gov(0)
    gov.register_consent("PSN-0", *phantoms[0])
    trainer = gov.trainer(patch=PATCH, current_round=lambda: 41)
    state = initial_state()
    out = trainer.train(state, 2)
    record = gov.registry.find("PSN-0")
    assert record.first_step == 0 and record.first_checkpoint is not None
    [use] = gov.registry.usage(record.case_id)
    assert use["round"] == 42 and use["step"] == 2
    from ml.weights import model_digest

    assert use["digest"] == model_digest(out).hex()


def test_no_training_below_min_peers(fed, phantoms):
    gov = fed.gov(0)
    gov.register_consent("PSN-0", *phantoms[0])
    peers = {"n": 0}
    policy = gov.policy
    gov._policy = replace(policy, peers=replace(policy.peers, min_peers=2))
    reads: list[str] = []
    trainer = gov.trainer(
        patch=PATCH, observer=reads.append, admitted_peers=lambda: peers["n"]
    )
    state = initial_state()
    out = trainer.train(state, 2)
    assert reads == [] and all((out[k] == state[k]).all() for k in state)
    peers["n"] = 2
    trainer.train(state, 1)
    assert reads


def test_batch_registration_is_all_or_nothing(fed, phantoms, tmp_path):
    gov = fed.gov(0)
    commitments = gov.register_consents(
        [(f"PSN-B{i}", phantoms[i][0], phantoms[i][1]) for i in range(3)]
    )
    assert len(set(commitments)) == 3
    assert all(fed.ledgers[1].consent_active(c) for c in commitments)
    assert gov.consented_scans() == 3
    with pytest.raises(PatientExists):
        gov.register_consents(
            [("PSN-B9", phantoms[0][0], None), ("PSN-B1", phantoms[1][0], None)]
        )
    assert gov.consented_scans() == 3
    with pytest.raises(PatientUnknown):
        gov.registry.find("PSN-B9")
    assert len(list((gov.folder / "data").iterdir())) == 3
