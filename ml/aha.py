"""The AHA 17-segment model of the left ventricle (Cerqueira et al. 2002).

Geometry, from a label map in world millimetres:

1. The LV long axis is the principal axis (PCA) of the LV blood pool; it points
   from base to apex, the apex being the end where the myocardium closes beyond
   the cavity.
2. Height ``h`` runs from the basal plane (the most basal cavity voxel, h = 0)
   to the cavity tip (h = L). Basal, mid and apical thirds of ``[0, L]`` hold
   segments 1-6, 7-12 and 13-16; myocardium beyond the tip (h > L) is the apex,
   segment 17.
3. Angles are measured in the short-axis plane from the *anterior RV insertion
   point*, turning towards the septum: Cerqueira et al. place the boundary of
   the anterior (1) and anteroseptal (2) segments there. Basal and mid rings have
   six 60° sectors (anteroseptal, inferoseptal, inferior, inferolateral,
   anterolateral, anterior); the apical ring has four 90° sectors with the septal
   one centred on the septum (ψ = 60°).

The RV blood pool fixes the septum direction ``s``; its angular extent around
the LV gives both insertion points. Which one is anterior follows from the
heart's handedness: with ``a`` the base-to-apex axis and ``e2 = a × s`` in a
right-handed world frame (NIfTI RAS), the anterior insertion is the end with the
negative angle. This needs a correct affine (its determinant's sign), not a
particular patient orientation.

Thinning is flagged at a mean end-diastolic thickness of 5.5 mm or less
(the viability threshold used for CT/MR wall thickness).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ml.errors import LabelsInvalid

logger = logging.getLogger(__name__)

THINNING_MM = 5.5
SEGMENTS = tuple(range(1, 18))
SEGMENT_NAMES = {
    1: "basal anterior",
    2: "basal anteroseptal",
    3: "basal inferoseptal",
    4: "basal inferior",
    5: "basal inferolateral",
    6: "basal anterolateral",
    7: "mid anterior",
    8: "mid anteroseptal",
    9: "mid inferoseptal",
    10: "mid inferior",
    11: "mid inferolateral",
    12: "mid anterolateral",
    13: "apical anterior",
    14: "apical septal",
    15: "apical inferior",
    16: "apical lateral",
    17: "apex",
}

# Basal/mid sector k (psi in [60k, 60k+60) degrees from the anterior insertion,
# turning towards the septum) -> segment offset within the ring (1 = anterior).
_RING6 = np.array([2, 3, 4, 5, 6, 1])
# Apical sectors of 90 degrees starting at psi = 15 (septal centred on psi = 60).
_RING4 = np.array([14, 15, 16, 13])


def assign_segments(
    height: NDArray[np.floating], psi_deg: NDArray[np.floating]
) -> NDArray[np.int8]:
    """AHA segment (1-17) of points given their normalized height and angle.

    Args:
        height: h / L, 0 at the basal plane, 1 at the cavity tip; values below 0
            count as basal, above 1 as the apex (17).
        psi_deg: angle in degrees from the anterior RV insertion, turning
            towards the septum (any real value; taken modulo 360).

    Returns:
        int8 array of segment numbers, the shape of the inputs.
    """
    psi = np.mod(psi_deg, 360.0)
    ring6 = _RING6[np.minimum((psi // 60).astype(np.int64), 5)]
    ring4 = _RING4[np.minimum((np.mod(psi - 15.0, 360.0) // 90).astype(np.int64), 3)]
    seg = np.where(height < 1 / 3, ring6, np.where(height < 2 / 3, ring6 + 6, ring4))
    seg = np.where(height > 1.0, 17, seg)
    return seg.astype(np.int8)


@dataclass(frozen=True)
class LVGeometry:
    """LV frame in world millimetres.

    Attributes:
        base_point: a point on the basal plane, on the long axis (mm).
        axis: unit vector from base to apex.
        septum: unit vector, orthogonal to ``axis``, towards the RV.
        length_mm: cavity length L from basal plane to cavity tip.
        anterior_deg: angle of the anterior RV insertion from ``septum``, in the
            right-handed frame (septum, axis × septum); negative for a normal
            heart.
    """

    base_point: NDArray[np.float64]
    axis: NDArray[np.float64]
    septum: NDArray[np.float64]
    length_mm: float
    anterior_deg: float

    def coordinates(
        self, points: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Normalized height and angle psi (degrees) of world points (N, 3)."""
        rel = points - self.base_point
        height = rel @ self.axis / self.length_mm
        e2 = np.cross(self.axis, self.septum)
        theta = np.degrees(np.arctan2(rel @ e2, rel @ self.septum))
        return height, np.mod(theta - self.anterior_deg, 360.0)

    def segments(self, points: NDArray[np.float64]) -> NDArray[np.int8]:
        """AHA segment (1-17) of world points (N, 3)."""
        return assign_segments(*self.coordinates(points))


def voxel_world(
    index: NDArray[np.integer] | NDArray[np.floating], affine: NDArray[np.float64]
) -> NDArray[np.float64]:
    """World coordinates (N, 3) mm of voxel indices (N, 3) under ``affine``."""
    idx = np.asarray(index, dtype=np.float64)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def estimate_geometry(
    labels: NDArray[np.integer], affine: NDArray[np.float64]
) -> LVGeometry:
    """Find the LV long axis, basal plane, septum and anterior RV insertion.

    Args:
        labels: class map (0 background, 1 myocardium, 2 LV blood, 3 RV blood).
        affine: voxel-to-world (RAS, mm) 4x4 matrix.

    Raises:
        LabelsInvalid: no LV blood pool, myocardium or RV blood pool, or an RV
            that does not touch the myocardium.
    """
    cavity = voxel_world(np.argwhere(labels == 2), affine)
    myo = voxel_world(np.argwhere(labels == 1), affine)
    if len(cavity) < 10:
        raise LabelsInvalid("label map has no LV blood pool (class 2 / MM-WHS 500)")
    if len(myo) < 10:
        raise LabelsInvalid("label map has no myocardium (class 1 / MM-WHS 205)")

    # Long axis: principal direction of the cavity, pointing to the apex, i.e.
    # to the end where the myocardium reaches furthest beyond the cavity.
    centre = cavity.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((cavity - centre).T))
    axis = vectors[:, -1]
    cav_proj = (cavity - centre) @ axis
    myo_proj = (myo - centre) @ axis
    if (myo_proj.max() - cav_proj.max()) < (cav_proj.min() - myo_proj.min()):
        axis, cav_proj = -axis, -cav_proj
    base_point = centre + axis * cav_proj.min()
    length = float(cav_proj.max() - cav_proj.min())
    if length <= 0:
        raise LabelsInvalid("LV blood pool has no extent along its long axis")

    # Septum: towards the RV voxels that touch the myocardium (within 2 voxels).
    near_myo = ndimage.binary_dilation(labels == 1, iterations=2)
    contact = voxel_world(np.argwhere((labels == 3) & near_myo), affine)
    if len(contact) < 5:
        raise LabelsInvalid(
            "label map has no RV blood pool next to the myocardium (class 3 / "
            "MM-WHS 600); the AHA orientation needs it"
        )
    rel = contact - base_point
    flat = rel - np.outer(rel @ axis, axis)
    septum = flat.mean(axis=0)
    septum /= np.linalg.norm(septum)

    # Insertion points: the two ends of the RV's angular extent around the LV.
    e2 = np.cross(axis, septum)
    theta = np.degrees(np.arctan2(flat @ e2, flat @ septum))
    anterior = float(np.percentile(theta, 1.0))
    logger.debug(
        "LV length %.1f mm, RV arc %.0f..%.0f deg",
        length,
        anterior,
        float(np.percentile(theta, 99.0)),
    )
    return LVGeometry(base_point, axis, septum, length, anterior)


def segment_means(
    values: NDArray[np.floating], segments: NDArray[np.integer]
) -> dict[int, float]:
    """Mean of ``values`` per AHA segment; NaN for a segment with no value."""
    means: dict[int, float] = {}
    for seg in SEGMENTS:
        chosen = values[segments == seg]
        means[seg] = float(chosen.mean()) if chosen.size else float("nan")
    return means
