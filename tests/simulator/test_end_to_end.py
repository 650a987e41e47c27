"""The quick scenario end to end: real libp2p sites, ledger, credentials, report."""

import json
import math
import re
from pathlib import Path

import pytest

import simulator
from simulator.cli import main

pytestmark = pytest.mark.slow


def test_quick_scenario_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "quick", "--out", str(out)]) == 0
    assert "mean Dice" in capsys.readouterr().out

    metrics = json.loads((out / "metrics.json").read_text())
    sites = metrics["sites"]
    assert set(sites) == {"aurora", "borealis", "cygnus"}
    for name, site in sites.items():
        assert site["n_train"] >= 1, name
        for regime in ("decentralized", "local_only", "pooled"):
            assert 0.0 <= site["dice"][regime] <= 1.0, (name, regime)
        assert site["bytes_sent"] > 100_000, name  # at least one model sent
    dice = metrics["dice_mean"]
    assert dice["decentralized"] >= 0.4
    assert dice["decentralized"] >= 0.8 * dice["pooled"]

    # Consensus: every site starts from the same model, then trains apart.
    consensus = metrics["consensus_distance"]
    assert len(consensus) == 5 and consensus[0] == 0.0
    assert all(math.isfinite(c) and c > 0 for c in consensus[1:])

    # The ledger's audit trail holds the whole story.
    events = metrics["ledger_events"]
    assert events["member_admitted"] == 3  # two founders, one by vote
    assert events["member_voted"] >= 1
    assert events["consent_registered"] >= 6
    # The withdrawal in round 2, and the erased patient's consent (erasure
    # withdraws it before deleting the data).
    assert events["consent_withdrawn"] == 2
    assert events["erasure_requested"] == events["erasure_completed"] == 1
    assert events["model_recorded"] >= 3 * 4  # each site, each round
    assert events["attestation"] == 3
    assert events["status_list_published"] >= 1
    erasure = metrics["erasure"]
    assert erasure == {
        "patients_erased": 1,
        "salts_deleted": True,
        "reads_after_erasure": 0,
    }
    assert metrics["exchanges"]["decentralized"]["ok"] >= 4

    # Thickness was measured against the phantoms' truth.
    assert any(
        s["thickness_mae_mm"] is not None and 0 <= s["thickness_mae_mm"] < 20
        for s in sites.values()
    )
    assert all(0 <= (s["thinning_agreement"] or 0) <= 1 for s in sites.values())

    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert "Ledger audit trail" in page and "aurora" in page
    assert (out / "ledger" / "chain.sqlite").is_file()
    assert metrics["wall_seconds"] > 0


def test_every_fault_with_a_tiny_model(tmp_path):
    # The shipped faults scenario, but a tiny model and 2 local steps: the
    # fault mechanics, not the accuracy, are under test.
    scenarios = Path(simulator.__file__).parent / "scenarios"
    shipped = (scenarios / "faults.toml").read_text()
    text, n = re.subn(
        r"(?m)^local_steps = \d+$", 'local_steps = 2\nmodel = "tiny"', shipped
    )
    assert n == 1
    scenario = tmp_path / "faults-tiny.toml"
    scenario.write_text(text)
    out = tmp_path / "run"
    assert main(["run", str(scenario), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())

    faults = {f["kind"]: f for f in metrics["faults"]}
    assert set(faults) == {
        "crash",
        "restart",
        "partition",
        "heal",
        "late_join",
        "revoke",
    }
    assert "resumed from its round" in faults["restart"]["what"]
    assert faults["restart"]["outcome"].startswith("its final Dice: decentralized")
    assert faults["revoke"]["outcome"].split()[0] != "0"  # some were refused
    assert metrics["exchanges"]["decentralized"]["refused"] >= 1
    admitted = [e for e in metrics["governance"] if e["kind"] == "admitted"]
    assert {e["site"]: e["round"] for e in admitted} == {
        "delta": 0,
        "echo": 0,
        "foxtrot": 3,
    }
    assert metrics["ledger_events"]["member_admitted"] == 6
    assert metrics["ledger_events"]["status_list_published"] >= 3
    history = metrics["dice_history"]["regimes"]["decentralized"]["foxtrot"]
    assert history[:3] == [None, None, None] and history[-1] is not None
    assert metrics["sites"]["foxtrot"]["joined"]
