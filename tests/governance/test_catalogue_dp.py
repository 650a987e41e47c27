"""The catalogue lists attested sites' offers; DP training tracks epsilon."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ml.model import ModelConfig, build_model
from node.cli import main
from node.governance.catalogue import list_offers, offer_id
from node.governance.policy import example_policy
from node.governance.training import EPSILON, STEPS

from .conftest import PATCH


def test_attested_sites_appear_with_aggregate_metadata(fed, phantoms):
    a, b = fed.gov(0), fed.gov(1)
    a.register_consent("PSN-C1", *phantoms[0])
    a.register_consent("PSN-C2", *phantoms[1])
    a.attest()
    b.attest()
    offers = {o.site: o for o in list_offers(fed.ledgers[2])}
    assert set(offers) == {a.did, b.did}
    meta = offers[a.did].metadata
    assert meta is not None and meta["consented_scans"] == 2
    assert meta["modality"] == "CT" and meta["scanner_profile"] == "alpha"
    assert "myocardium" in meta["labels"]
    assert offers[a.did].offer_id == offer_id(a.did, 1).hex()
    text = (a.folder / "catalogue.json").read_text()
    assert "PSN" not in text
    # republishing replaces the offer; a changed document is reported unverified
    a.withdraw_consent("PSN-C1")
    a.publish_catalogue()
    offers = {o.site: o for o in list_offers(fed.ledgers[2])}
    meta = offers[a.did].metadata
    assert meta is not None and meta["consented_scans"] == 1
    path = Path(offers[a.did].uri.removeprefix("file://"))
    path.write_text(json.dumps({"consented_scans": 10_000}))
    assert (
        next(o for o in list_offers(fed.ledgers[2]) if o.site == a.did).metadata is None
    )
    fed.ledgers[0].withdraw_offer(offer_id(a.did, 1))
    assert [o.site for o in list_offers(fed.ledgers[2])] == [b.did]


def test_dp_training_spends_and_stops_at_the_budget(fed, phantoms):
    policy = example_policy()
    dp = replace(
        policy,
        privacy=replace(
            policy.privacy,
            enabled=True,
            noise_multiplier=2.0,
            epsilon_budget=6.0,
            delta=1e-3,
        ),
    )
    gov = fed.gov(0, dp)
    for i in range(2):
        gov.register_consent(f"PSN-D{i}", *phantoms[i])
    trainer = gov.trainer(patch=PATCH)
    state = build_model(ModelConfig.tiny()).state_dict()
    out = trainer.train(state, 2)
    first = trainer.epsilon_spent
    # sampling rate 1 (2 crops of 2 cases), sigma 2: 2.33 after two steps (RDP)
    assert first == pytest.approx(2.33, abs=0.01)
    assert any(not (out[k] == state[k]).all() for k in state)
    out = trainer.train(out, 50)
    spent = gov.epsilon_spent
    assert spent == pytest.approx(5.84, abs=0.01)  # a 10th step would be 6.24
    assert gov.registry.counter(STEPS) == 9
    assert gov.registry.counter(EPSILON) == spent
    assert gov.status()["epsilon_spent"] == spent
    # a new trainer (a restart) remembers the budget and refuses to go over it
    again = gov.trainer(patch=PATCH)
    after = again.train(out, 5)
    assert gov.epsilon_spent <= 6.0
    assert all((after[k] == out[k]).all() for k in out)


def test_attest_command_prints_the_measurement(tmp_path, capsys):
    from node.governance.policy import example_policy_text

    path = tmp_path / "p.toml"
    path.write_text(example_policy_text())
    assert main(["attest", "--policy", str(path), "--tiny"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["measurement"]) == 64 and out["file_count"] > 50
    assert set(out["parts"]) == {"files", "contracts", "model", "policy"}
