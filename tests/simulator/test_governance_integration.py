"""A simulated site keeps its patients through the real site governance.

The simulator's federation writes the consenting patients' scans as NIfTI,
registers them with ``SiteGovernance``, and trains through governance's
consent-checked trainer (and the pooled baseline through the registries): after
a withdrawal or an erasure the patient's voxels are never read again, and after
the erasure nothing of the patient is left in the site's folder.
"""

from __future__ import annotations

from pathlib import Path

from ledger.api import EventKind
from ml.data import Case
from ml.model import ModelConfig, build_model
from ml.phantom import generate_phantom
from simulator.federation import Federation
from simulator.training import PooledTrainer

PATCH = (16, 16, 16)  # small crops of 32^3 phantoms: a fast test


def files_mentioning(folder: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``folder`` whose bytes or path contain a needle."""
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                if needle in data or needle.decode(errors="ignore") in str(path):
                    hits.append(str(path))
    return hits


def test_withdrawn_and_erased_patients_are_never_read_and_leave_nothing(tmp_path):
    config = ModelConfig.tiny()
    sites_dir = tmp_path / "sites"
    fed = Federation(
        tmp_path / "ledger",
        ["aurora", "borealis"],
        ["aurora", "borealis"],
        1,
        config,
        sites_dir=sites_dir,
        lr=2e-3,
        batch_size=2,
    )
    try:
        fed.deploy()
        gov = fed.join("aurora")
        site = fed.sites["aurora"]
        pseudonyms = [f"aurora-p{i:03d}" for i in range(3)]
        cases = [
            Case.from_phantom(p, generate_phantom(40 + i, shape=(32, 32, 32)))
            for i, p in enumerate(pseudonyms)
        ]
        fed.register_consents("aurora", cases)
        folder = sites_dir / "aurora"
        assert not (folder / "incoming").exists()  # the registry's copy only
        assert site.active() == pseudonyms
        assert gov.consented_scans() == 3
        withdrawn, erased, kept = pseudonyms
        ids = {p: gov.registry.find(p).case_id for p in pseudonyms}
        salt = gov.registry.salt_of(ids[erased])
        commitment = gov.registry.find(erased).commitment

        trainer = gov.trainer(patch=PATCH, seed=0, observer=site.count_read)
        pooled = PooledTrainer(
            [(gov, site.count_read)], config, batch_size=6, lr=2e-3, seed=0, patch=PATCH
        )
        state = build_model(config).state_dict()
        state = trainer.train(state, 6)
        pooled.train(state, 2)
        assert set(site.reads) == set(ids.values())  # 24 crops of 3 cases
        needles = [erased.encode(), salt, salt.hex().encode(), ids[erased].encode()]
        assert files_mentioning(folder, needles), "the scan must see the patient"

        fed.withdraw_consent("aurora", withdrawn)
        pooled.forget_inactive()
        report = fed.erase("aurora", erased)
        pooled.forget_inactive()
        before = dict(site.reads)
        state = trainer.train(state, 4)
        pooled.train(state, 2)

        assert site.reads[ids[withdrawn]] == before[ids[withdrawn]]
        assert site.reads[ids[erased]] == before[ids[erased]]
        assert site.reads[ids[kept]] > before[ids[kept]]
        assert site.active() == [kept]
        assert site.registered(withdrawn) and not site.registered(erased)
        assert pooled.dataset.case_ids == [ids[kept]]
        # Nothing of the erased patient is left: files, database bytes, names.
        assert files_mentioning(folder, needles) == []
        assert not gov.registry.case_folder(ids[erased]).exists()
        assert len(report.deleted) == 2  # scan and labels
        assert report.models_seen  # the first training call read it
        assert report.commitment == commitment.hex()
        ledger = fed.handle("aurora")
        assert ledger.call(lambda led: led.erasure_completed(commitment))
        events = fed.event_counts()
        assert events[str(EventKind.CONSENT_REGISTERED)] == 3
        assert events[str(EventKind.CONSENT_WITHDRAWN)] == 2  # withdrawn, erased
        assert events[str(EventKind.ERASURE_COMPLETED)] == 1
        assert events[str(EventKind.ATTESTATION)] == 1
    finally:
        fed.close()
