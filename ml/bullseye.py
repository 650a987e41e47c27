"""The AHA 17-segment bull's-eye plot (Cerqueira et al. 2002, figure 1).

Rings from the centre: apex (17), apical (13-16), mid (7-12), basal (1-6);
anterior at the top, septum on the left, as the standard prescribes. Colours give
the mean wall thickness; thinned segments (<= 5.5 mm) get a thick outline.
Drawn with matplotlib's object API on an Agg canvas: no pyplot state, so it is
safe in worker threads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Wedge

from ml.aha import THINNING_MM

# (first segment, count, inner radius, outer radius, start angle of the first
# segment in degrees counter-clockwise from 3 o'clock)
_RINGS = ((1, 6, 0.75, 1.0, 60.0), (7, 6, 0.5, 0.75, 60.0), (13, 4, 0.25, 0.5, 45.0))


def write_bullseye(path: Path | str, segment_mm: Mapping[int, float]) -> None:
    """Write a bull's-eye PNG of mean thickness per AHA segment.

    Args:
        path: PNG file to write.
        segment_mm: segment number (1-17) to mean thickness in mm (NaN: no data,
            drawn grey).
    """
    fig = Figure(figsize=(5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    norm = Normalize(vmin=0.0, vmax=14.0)
    cmap = matplotlib.colormaps["viridis"]
    mapper = ScalarMappable(norm=norm, cmap=cmap)

    def draw(seg: int, r0: float, r1: float, a0: float, a1: float) -> None:
        value = segment_mm.get(seg, math.nan)
        colour = "lightgrey" if math.isnan(value) else cmap(norm(value))
        thin = not math.isnan(value) and value <= THINNING_MM
        ax.add_patch(
            Wedge(
                (0, 0),
                r1,
                a0,
                a1,
                width=r1 - r0,
                facecolor=colour,
                edgecolor="red" if thin else "white",
                linewidth=3 if thin else 1,
            )
        )
        mid = math.radians((a0 + a1) / 2)
        rad = (r0 + r1) / 2 if r0 > 0 else 0.0
        text = "-" if math.isnan(value) else f"{value:.1f}"
        ax.text(
            rad * math.cos(mid),
            rad * math.sin(mid),
            f"{seg}\n{text}",
            ha="center",
            va="center",
            fontsize=7,
            color="white",
        )

    for first, count, r0, r1, start in _RINGS:
        span = 360.0 / count
        # Segments run counter-clockwise on the plot: anterior at the top, then
        # the septum on the left (standard orientation).
        for k in range(count):
            a0 = start + k * span
            draw(first + k, r0, r1, a0, a0 + span)
    draw(17, 0.0, 0.25, 0.0, 360.0)

    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("LV wall thickness (mm), AHA 17 segments")
    fig.colorbar(mapper, ax=ax, label="mm", shrink=0.8)
    fig.savefig(str(path), format="png")
