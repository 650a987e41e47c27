"""The run's report: one self-contained HTML page built from ``metrics.json``.

Plots are drawn with matplotlib's Agg backend and embedded as base64 PNG, so
the page needs no other file and no network. Everything shown comes from the
metrics dictionary; :func:`render_report` works on any metrics of the same
shape (the tests render a small hand-written one).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import Wedge

THINNING_MM = 5.5
REGIME_COLOURS = {
    "decentralized": "#1f77b4",
    "local_only": "#ff7f0e",
    "pooled": "#2ca02c",
    "honest": "#9467bd",
    "robust_off": "#d62728",
    "robust_on": "#8c564b",
}


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return html.escape(str(value))
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def dice_plot(metrics: Mapping[str, Any]) -> str:
    """Monitor Dice per site over rounds, one line per regime."""
    history = metrics.get("dice_history", {})
    rounds = history.get("rounds", [])
    regimes: Mapping[str, Mapping[str, list[float | None]]] = history.get("regimes", {})
    sites = sorted({s for per in regimes.values() for s in per})
    if not rounds or not sites:
        return "<p>No per-round Dice was monitored in this run.</p>"
    cols = min(4, len(sites))
    rows = math.ceil(len(sites) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True
    )
    for k, site in enumerate(sites):
        ax = axes[k // cols][k % cols]
        for regime, per in regimes.items():
            values = per.get(site, [])
            points = [
                (r, v)
                for r, v in zip(rounds, values, strict=False)
                if v is not None and _finite(v)
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    ms=3,
                    label=regime,
                    color=REGIME_COLOURS.get(regime),
                )
        ax.set_title(site, fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlabel("round", fontsize=8)
        ax.grid(alpha=0.3)
    for k in range(len(sites), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].set_ylabel("myocardium Dice")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def consensus_plot(metrics: Mapping[str, Any]) -> str:
    """Consensus distance per round for each arm, with the prediction."""
    by_arm: Mapping[str, list[float]] = metrics.get("consensus_by_arm") or {
        "decentralized": metrics.get("consensus_distance", [])
    }
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    drawn = False
    for arm, values in by_arm.items():
        points = [(r, v) for r, v in enumerate(values) if _finite(v) and v > 0]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(
                xs,
                ys,
                marker="o",
                ms=3,
                label=f"{arm} (measured)",
                color=REGIME_COLOURS.get(arm),
            )
            drawn = True
    no_training = metrics.get("budget", {}).get("local_steps", 1) == 0
    curves = [
        ("consensus_predicted", "k--", "spectral-gap bound"),
        ("consensus_expected", "k:", "expected (same matchings, Monte Carlo)"),
    ]
    for key, style, label in curves if no_training else []:
        pts = [
            (r, v) for r, v in enumerate(metrics.get(key) or []) if _finite(v) and v > 0
        ]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, style, label=label)
    if drawn:
        ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("consensus distance (L2)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def bytes_plot(metrics: Mapping[str, Any]) -> str:
    """Bytes sent per site (decentralized arm)."""
    sites: Mapping[str, Any] = metrics.get("sites", {})
    names = list(sites)
    values = [sites[n].get("bytes_sent", 0) / 1e6 for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 2), 3.0))
    ax.bar(names, values, color="#1f77b4")
    ax.set_ylabel("MB sent")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    fig.tight_layout()
    return _png(fig)


def segment_plot(metrics: Mapping[str, Any]) -> str:
    """Thickness error and thinning agreement per AHA segment, over all sites."""
    sites: Mapping[str, Any] = metrics.get("sites", {})
    segs = [str(s) for s in range(1, 18)]
    err, agree = [], []
    for seg in segs:
        e = [
            s["segment_error_mm"][seg]
            for s in sites.values()
            if _finite(s.get("segment_error_mm", {}).get(seg))
        ]
        a = [
            s["segment_agreement"][seg]
            for s in sites.values()
            if _finite(s.get("segment_agreement", {}).get(seg))
        ]
        err.append(sum(e) / len(e) if e else 0.0)
        agree.append(sum(a) / len(a) if a else 0.0)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.0))
    ax1.bar(segs, err, color="#9467bd")
    ax1.set_xlabel("AHA segment")
    ax1.set_ylabel("mean |error| (mm)")
    ax2.bar(segs, agree, color="#17becf")
    ax2.set_ylim(0, 1.05)
    ax2.set_xlabel("AHA segment")
    ax2.set_ylabel("thinning agreement")
    fig.tight_layout()
    return _png(fig)


def _bullseye_axes(ax: Any, values: Mapping[int, float], title: str) -> None:
    """Draw the AHA 17-segment bull's-eye (Cerqueira et al. 2002) on ``ax``.

    Rings from outside in: basal (1-6), mid (7-12), apical (13-16), apex (17);
    segment 1 (anterior) at the top, septum on the left, as in the standard.
    """
    cmap = plt.get_cmap("RdYlGn")

    def colour(seg: int) -> Any:
        v = values.get(seg, math.nan)
        if not _finite(v):
            return "#dddddd"
        return cmap(min(1.0, max(0.0, (v - 2.0) / 10.0)))

    def wedge(r: float, width: float, start: float, span: float, seg: int) -> None:
        thin = _finite(values.get(seg)) and values[seg] <= THINNING_MM
        ax.add_patch(
            Wedge(
                (0, 0),
                r,
                start,
                start + span,
                width=width,
                facecolor=colour(seg),
                edgecolor="black",
                linewidth=2.2 if thin else 0.6,
            )
        )
        mid = math.radians(start + span / 2)
        rr = r - width / 2
        label = f"{values[seg]:.1f}" if _finite(values.get(seg)) else "-"
        ax.text(
            rr * math.cos(mid),
            rr * math.sin(mid),
            label,
            ha="center",
            va="center",
            fontsize=6,
        )

    # Segment 1 centred at the top (90 deg); numbering runs counter-clockwise
    # (towards the septum, drawn on the left).
    for k in range(6):
        wedge(4.0, 1.0, 60 + 60 * k, 60, 1 + k)
        wedge(3.0, 1.0, 60 + 60 * k, 60, 7 + k)
    for k in range(4):
        wedge(2.0, 1.0, 45 + 90 * k, 90, 13 + k)
    wedge(1.0, 1.0, 0, 360, 17)
    ax.set_xlim(-4.2, 4.2)
    ax.set_ylim(-4.2, 4.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)


def bullseye_plots(metrics: Mapping[str, Any]) -> str:
    """One bull's-eye per site: measured mean thickness per segment (mm);
    thick outlines mark segments measured as thinned (<= 5.5 mm)."""
    sites: Mapping[str, Any] = metrics.get("sites", {})
    shown = [(n, s) for n, s in sites.items() if s.get("segment_thickness_mm")]
    shown = [
        (n, s)
        for n, s in shown
        if any(_finite(v) for v in s["segment_thickness_mm"].values())
    ]
    if not shown:
        return "<p>No wall thickness was measured in this run.</p>"
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False
    )
    for k, (name, site) in enumerate(shown):
        values = {int(seg): v for seg, v in site["segment_thickness_mm"].items()}
        _bullseye_axes(axes[k // cols][k % cols], values, name)
    for k in range(len(shown), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    return _png(fig)


STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child { text-align: left; }
img { max-width: 100%; } .note { color: #555; font-size: 0.9em; }
"""


def privacy_section(metrics: Mapping[str, Any]) -> str:
    """The sites' DP settings and the epsilon each site spent."""
    privacy: Mapping[str, Any] = metrics.get("privacy", {})
    if not privacy.get("enabled"):
        return "<p>Off: the sites train without DP-SGD.</p>"
    budget = privacy.get("epsilon_budget", math.nan)
    private = ", ".join(str(r) for r in privacy.get("private_regimes", []))
    settings = _table(
        ["noise multiplier", "max grad norm", "epsilon budget", "delta"],
        [
            (
                privacy.get("noise_multiplier", math.nan),
                privacy.get("max_grad_norm", math.nan),
                budget,
                f"{privacy.get('delta', math.nan):g}",
            )
        ],
    )
    spent = _table(
        ["site", "epsilon spent", "share of budget"],
        [
            (n, eps, eps / budget if _finite(eps) and _finite(budget) else math.nan)
            for n, s in metrics.get("sites", {}).items()
            for eps in [s.get("epsilon_spent", math.nan)]
        ],
    )
    return (
        f"<p>DP-SGD (opacus) at every site, in: {html.escape(private)}. The "
        "pooled baseline is the centralized, non-private reference.</p>"
        f"{settings}{spent}<p class='note'>Epsilon as the site's registry "
        "records it (RDP accountant, delta above); a site stops training "
        "before a step would exceed the budget.</p>"
    )


def render_report(metrics: Mapping[str, Any]) -> str:
    """The report page for ``metrics`` (the shape ``metrics.json`` has)."""
    sites: Mapping[str, Any] = metrics.get("sites", {})
    dice_mean: Mapping[str, float] = metrics.get("dice_mean", {})
    regimes = list(dice_mean)
    title = f"PAROMA-MED simulation: {metrics.get('scenario', '')}"
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(str(metrics.get('description', '')))}</p>",
        f"<p class='note'>Wall time {_fmt(metrics.get('wall_seconds', 0.0), 1)} s; "
        f"model {html.escape(str(metrics.get('model', {})))}; budget "
        f"{html.escape(str(metrics.get('budget', {})))}.</p>",
        "<h2>Segmentation quality</h2>",
        "<p>Myocardium Dice on each site's held-out scans (whole-scan "
        "segmentation), mean over honest sites:</p>",
        _table(["regime", "mean Dice"], [(r, dice_mean[r]) for r in regimes]),
        _table(
            ["site", "profile", "n_train", *regimes],
            [
                (
                    n,
                    s.get("profile", ""),
                    s.get("n_train", 0),
                    *[s.get("dice", {}).get(r, math.nan) for r in regimes],
                )
                for n, s in sites.items()
            ],
        ),
        "<h3>Dice per site over the rounds</h3>",
        "<p class='note'>Monitor: one 64³ window around the heart of each "
        "site's first held-out scan, evaluated after every monitored round.</p>",
        dice_plot(metrics),
        "<h2>Decentralized averaging</h2>",
        f"<p>Spectral gap of the expected gossip matrix: "
        f"{_fmt(metrics.get('spectral_gap', math.nan), 4)} per matching, "
        f"{_fmt(metrics.get('spectral_gap_round', math.nan), 4)} per round "
        "(the bound's rate).</p>",
        consensus_plot(metrics),
        "<h3>Exchanges</h3>",
        _table(
            ["arm", "ok", "refused", "failed"],
            [
                (arm, e.get("ok", 0), e.get("refused", 0), e.get("failed", 0))
                for arm, e in metrics.get("exchanges", {}).items()
            ],
        ),
        "<h3>Bytes sent per site</h3>",
        bytes_plot(metrics),
        "<h2>Differential privacy</h2>",
        privacy_section(metrics),
        "<h2>Wall thickness and AHA segments</h2>",
        _table(
            ["site", "thickness MAE (mm)", "thinning agreement"],
            [
                (
                    n,
                    s.get("thickness_mae_mm", math.nan),
                    s.get("thinning_agreement", math.nan),
                )
                for n, s in sites.items()
            ],
        ),
        segment_plot(metrics),
        "<h3>Bull's-eye per site (measured mean thickness, mm)</h3>",
        bullseye_plots(metrics),
        "<h2>Ledger audit trail</h2>",
        _table(
            ["event kind", "count"],
            sorted(metrics.get("ledger_events", {}).items()),
        ),
        "<h3>Governance events</h3>",
        _table(
            ["event", "details"],
            [
                (
                    e.get("kind", ""),
                    ", ".join(f"{k}={v}" for k, v in e.items() if k != "kind"),
                )
                for e in metrics.get("governance", [])
            ],
        ),
        _table(
            ["erasure check", "value"],
            sorted(metrics.get("erasure", {}).items()),
        ),
        "<h2>Faults injected and what happened</h2>",
        _table(
            ["round", "fault", "what was done", "what followed"],
            [
                (
                    f.get("round", ""),
                    f.get("kind", ""),
                    f.get("what", ""),
                    f.get("outcome", ""),
                )
                for f in metrics.get("faults", [])
            ],
        )
        if metrics.get("faults")
        else "<p>No faults were injected in this scenario.</p>",
        "<h2>Timings</h2>",
        _table(["stage", "seconds"], sorted(metrics.get("timings_s", {}).items())),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(metrics: Mapping[str, Any], path: Path) -> None:
    """Write :func:`render_report` to ``path``."""
    path.write_text(render_report(metrics), encoding="utf-8")
