"""The report renders from a small metrics dictionary, plots embedded."""

import base64
import math
import re
from typing import Any

from simulator.cli import main
from simulator.report import render_report, write_report


def small_metrics() -> dict[str, Any]:
    segs = {str(s): 9.0 for s in range(1, 18)}
    thin = dict(segs, **{"7": 3.5, "13": 3.0})
    site = {
        "profile": "alpha",
        "n_train": 4,
        "n_test": 1,
        "dice": {"decentralized": 0.91, "local_only": 0.8, "pooled": 0.93},
        "thickness_mae_mm": 0.7,
        "thinning_agreement": 0.94,
        "segment_error_mm": {str(s): 0.5 + s / 20 for s in range(1, 18)},
        "segment_agreement": {str(s): 1.0 for s in range(1, 18)},
        "segment_thickness_mm": thin,
        "segment_truth_mm": segs,
        "bytes_sent": 5_000_000,
    }
    return {
        "scenario": "tiny-test",
        "description": "two sites <b>escaped</b>",
        "sites": {"north": site, "south": dict(site, bytes_sent=2_500_000)},
        "dice_mean": {"decentralized": 0.91, "local_only": 0.8, "pooled": 0.93},
        "dice_history": {
            "rounds": [1, 2],
            "regimes": {
                "decentralized": {"north": [0.5, 0.8], "south": [None, 0.7]},
                "pooled": {"north": [0.6, 0.85], "south": [0.6, 0.8]},
            },
        },
        "consensus_distance": [0.0, 1.2, 0.8],
        "consensus_by_arm": {"decentralized": [0.0, 1.2, 0.8]},
        "consensus_predicted": [1.0, 0.5, 0.25],
        "spectral_gap": 0.5,
        "exchanges": {"decentralized": {"ok": 4, "refused": 1, "failed": 0}},
        "ledger_events": {"member_admitted": 2, "consent_registered": 7},
        "governance": [{"kind": "admitted", "site": "south", "votes": 2}],
        "erasure": {"patients_erased": 1, "salts_deleted": True},
        "faults": [{"round": 2, "kind": "revoke", "what": "credential revoked"}],
        "timings_s": {"rounds": 12.5},
        "budget": {"local_steps": 5},
        "wall_seconds": 30.0,
    }


def test_report_has_every_section_and_embedded_plots(tmp_path):
    page = render_report(small_metrics())
    for heading in [
        "Segmentation quality",
        "Dice per site over the rounds",
        "Decentralized averaging",
        "Bytes sent per site",
        "Wall thickness and AHA segments",
        "Bull's-eye per site",
        "Ledger audit trail",
        "Faults injected and what happened",
    ]:
        assert heading in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 5  # dice, consensus, bytes, segments, bull's-eyes
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG")
    assert "<b>escaped</b>" not in page and "&lt;b&gt;escaped" in page
    assert "member_admitted" in page and "credential revoked" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    out = tmp_path / "r.html"
    write_report(small_metrics(), out)
    assert out.read_text() == page


def test_report_tolerates_missing_figures():
    metrics = small_metrics()
    metrics["dice_history"] = {"rounds": [], "regimes": {}}
    for site in metrics["sites"].values():
        site["segment_thickness_mm"] = {str(s): math.nan for s in range(1, 18)}
        site["thickness_mae_mm"] = math.nan
    metrics["faults"] = []
    page = render_report(metrics)
    assert "No per-round Dice was monitored" in page
    assert "No wall thickness was measured" in page
    assert "No faults were injected" in page
    assert "n/a" in page


def test_cli_refuses_a_non_empty_out_folder(tmp_path, capsys):
    (tmp_path / "x").write_text("keep me")
    assert main(["run", "quick", "--out", str(tmp_path)]) == 2
    assert "folder exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "x").read_text() == "keep me"
