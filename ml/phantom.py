"""Synthetic cardiac CT phantoms with exact ground truth.

No real scans can be downloaded here (DESIGN.md, "Data"), so every site trains on
phantoms: a contrast-enhanced LV blood pool inside an LV myocardium of known,
regionally varying wall thickness (normal 8-12 mm; thinned 2.5-4 mm territories
like post-infarct scar), an RV blood pool wrapped around the septum, a left
atrium above the mitral plane, pericardial fat, mediastinal soft tissue and
lungs. Size, position and long-axis orientation are random; each site's
:class:`ScannerProfile` (noise, blur, HU offset, contrast timing, voxel spacing)
makes the sites' data non-IID.

The LV is a capsule: points within ``R`` of a segment of its long axis form the
cavity, and the wall is the shell ``R <= d < R + T``, where ``T`` is looked up at
the endocardial point along the same radial ray. The wall thickness along the
surface normal is therefore exactly ``T`` everywhere, and the true mean
thickness of each AHA segment is the mean of ``T`` over that segment's
myocardial voxels (segments assigned by :mod:`ml.aha` in the true LV frame).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ml.aha import LVGeometry, assign_segments, segment_means

logger = logging.getLogger(__name__)

MMWHS_MYOCARDIUM = 205
MMWHS_LV_BLOOD = 500
MMWHS_RV_BLOOD = 600
CLASS_TO_MMWHS = {1: MMWHS_MYOCARDIUM, 2: MMWHS_LV_BLOOD, 3: MMWHS_RV_BLOOD}

# Coronary territories (Cerqueira et al. 2002, figure 3): an infarct thins some
# segments of one territory.
TERRITORIES = {
    "LAD": (1, 2, 7, 8, 13, 14, 17),
    "RCA": (3, 4, 9, 10, 15),
    "LCx": (5, 6, 11, 12, 16),
}


@dataclass(frozen=True)
class ScannerProfile:
    """How one site's scanner and protocol render the same anatomy.

    Attributes:
        name: profile name.
        spacing_mm: voxel spacing (x, y, z) in mm; z is through-plane.
        noise_hu: standard deviation of the image noise, HU.
        blur_inplane_mm: Gaussian point-spread sigma in x and y, mm.
        blur_through_mm: Gaussian point-spread sigma in z, mm.
        hu_offset: calibration offset added to every voxel, HU.
        lv_blood_hu: LV blood pool enhancement (contrast timing), HU.
        rv_blood_hu: RV blood pool enhancement (contrast timing), HU.
        myocardium_hu: enhanced myocardium, HU.
    """

    name: str
    spacing_mm: tuple[float, float, float]
    noise_hu: float
    blur_inplane_mm: float
    blur_through_mm: float
    hu_offset: float
    lv_blood_hu: float
    rv_blood_hu: float
    myocardium_hu: float = 110.0


SCANNER_PROFILES: dict[str, ScannerProfile] = {
    # Late arterial phase, thin slices, low noise.
    "alpha": ScannerProfile("alpha", (1.5, 1.5, 1.5), 20.0, 0.7, 0.7, 0.0, 380, 230),
    # Thicker slices, noisier, RV brighter than LV (early phase).
    "bravo": ScannerProfile("bravo", (1.4, 1.4, 2.0), 35.0, 0.8, 1.4, 20.0, 300, 340),
    # Strong enhancement, smooth kernel, negative calibration drift.
    "charlie": ScannerProfile(
        "charlie", (1.6, 1.6, 1.6), 15.0, 1.1, 1.1, -15.0, 450, 190
    ),
    # Low-dose protocol: high noise, weak enhancement, fine voxels.
    "delta": ScannerProfile("delta", (1.3, 1.3, 1.5), 45.0, 0.6, 0.9, 10.0, 270, 260),
}


@dataclass
class Phantom:
    """One synthetic scan and its exact ground truth.

    Attributes:
        image: CT volume in HU, float32, axes (x, y, z).
        labels: uint8 classes: 0 background, 1 myocardium, 2 LV blood pool,
            3 RV blood pool.
        spacing: voxel spacing (x, y, z) in mm.
        affine: voxel-to-world (RAS, mm) 4x4 matrix.
        true_segment_thickness_mm: AHA segment (1-17) to its true mean wall
            thickness, mm.
        thickness_mm: true wall thickness at each myocardial voxel (0 elsewhere).
        geometry: the true LV frame (axis, basal plane, septum, insertion).
        profile: name of the scanner profile used.
    """

    image: NDArray[np.float32]
    labels: NDArray[np.uint8]
    spacing: tuple[float, float, float]
    affine: NDArray[np.float64]
    true_segment_thickness_mm: dict[int, float]
    thickness_mm: NDArray[np.float32]
    geometry: LVGeometry
    profile: str
    seed: int = 0
    thinned_segments: tuple[int, ...] = field(default=())


Field = NDArray[np.float32]


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return v / np.linalg.norm(v)


def _dot(parts: list[Field], vector: NDArray[np.float64]) -> Field:
    """Per-voxel dot product of a vector field (three arrays) with a vector."""
    out: Field = parts[0] * np.float32(vector[0])
    out += parts[1] * np.float32(vector[1])
    out += parts[2] * np.float32(vector[2])
    return out


def _thickness_field(
    rng: np.random.Generator, eta17: float
) -> tuple[NDArray[np.float64], dict[int, float], tuple[int, ...]]:
    """Smooth thickness map over (normalized height, psi) of the endocardium.

    Returns the grid (101 heights x 181 angles, 2 degree steps, periodic), the
    per-segment plateau values, and the thinned segments.
    """
    values = {seg: float(rng.uniform(8.0, 12.0)) for seg in range(1, 18)}
    thinned: tuple[int, ...] = ()
    if rng.random() < 0.75:
        territory = TERRITORIES[str(rng.choice(list(TERRITORIES)))]
        count = int(rng.integers(2, len(territory) + 1))
        thinned = tuple(sorted(int(s) for s in rng.choice(territory, count, False)))
        for seg in thinned:
            values[seg] = float(rng.uniform(2.5, 4.0))

    heights = np.linspace(0.0, 1.0, 101)[:, None]
    angles = np.arange(0.0, 362.0, 2.0)[None, :]
    segs = assign_segments(np.broadcast_to(heights, (101, 181)), angles + 1.0)
    segs = np.where(heights >= eta17, 17, segs)
    grid = np.vectorize(values.__getitem__, otypes=[np.float64])(segs)
    # Smooth transitions (about 4 degrees, 0.02 of the length) between segments;
    # the angle axis wraps.
    grid = ndimage.gaussian_filter(grid[:, :180], (2.0, 2.0), mode=("nearest", "wrap"))
    return np.concatenate([grid, grid[:, :1]], axis=1), values, thinned


def generate_phantom(
    seed: int,
    profile: ScannerProfile | None = None,
    shape: tuple[int, int, int] = (96, 96, 96),
) -> Phantom:
    """Generate one random phantom, deterministic in ``seed``.

    Args:
        seed: random seed; the same seed and profile give the same phantom.
        profile: scanner profile (default ``SCANNER_PROFILES["alpha"]``).
        shape: volume shape in voxels; anatomy shrinks (wall thickness does not)
            when the field of view is smaller than 140 mm.
    """
    profile = profile or SCANNER_PROFILES["alpha"]
    rng = np.random.default_rng(seed)
    spacing = np.asarray(profile.spacing_mm, dtype=np.float64)
    dims = np.asarray(shape)
    fov = dims * spacing
    scale = float(np.clip(fov.min() / 140.0, 0.5, 1.0))

    # Voxel-to-world: axis-aligned RAS, volume centred on the origin.
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(dims - 1) / 2 * spacing
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    world = [
        g * np.float32(s) + np.float32(o)
        for g, s, o in zip(grid, spacing, affine[:3, 3], strict=True)
    ]

    # LV frame: apex left, anterior, inferior (RAS), tilted at random; RV to the
    # right and front. The anterior insertion sits at -alpha (see ml.aha).
    axis = _unit(_unit(np.array([-1.0, 0.8, -0.6])) + rng.normal(0, 0.25, 3))
    septum = np.array([1.0, 0.6, 0.2]) + rng.normal(0, 0.2, 3)
    septum = _unit(septum - septum @ axis * axis)
    e2 = np.cross(axis, septum)
    radius = rng.uniform(17.0, 23.0) * scale
    cyl = rng.uniform(25.0, 38.0) * scale
    length = cyl + radius
    alpha = rng.uniform(50.0, 65.0)
    centre = rng.uniform(-8.0, 8.0, 3) * scale - septum * 8.0 * scale
    base = centre - axis * length / 2

    # Capsule coordinates of every voxel: height along the axis, radial distance
    # to the clamped axis point, and angle psi from the anterior insertion.
    rel = [w - np.float32(b) for w, b in zip(world, base, strict=True)]
    h = _dot(rel, axis)
    t = np.clip(h, 0.0, cyl)
    v = [r - t * np.float32(a) for r, a in zip(rel, axis, strict=True)]
    d = np.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2)
    xs = _dot(v, septum)
    ys = _dot(v, e2)
    theta = np.degrees(np.arctan2(ys, xs))
    psi = np.mod(theta + alpha, 360.0)
    cos_polar = np.where(h > cyl, (h - cyl) / np.maximum(d, 1e-3), 0.0)
    eta_endo = (t + radius * cos_polar) / length

    # Wall thickness at each voxel's endocardial point.
    eta17 = (cyl + 0.75 * radius) / length
    tgrid, _, thinned = _thickness_field(rng, eta17)
    coords = np.stack([np.clip(eta_endo, 0, 1) * 100.0, psi / 2.0])
    wall = ndimage.map_coordinates(
        tgrid, coords.reshape(2, -1), order=1, mode="nearest"
    )
    wall = wall.reshape(shape).astype(np.float32)

    inside = h >= 0
    cavity = inside & (d < radius)
    myo = inside & (d >= radius) & (d < radius + wall)
    outer = radius + wall

    # RV: a crescent over the septum (|theta| < alpha), from the epicardium out,
    # down to 65-85 % of the LV length; thin free wall around it.
    rv_end = rng.uniform(0.65, 0.85) * length
    rv_width = rng.uniform(10.0, 16.0) * scale
    arc = np.abs(theta) < alpha
    width = rv_width * (0.4 + 0.6 * np.sqrt(np.clip(1 - (theta / alpha) ** 2, 0, 1)))
    in_h = (h > 2.0) & (h < rv_end)
    rv = arc & in_h & (d >= outer) & (d < outer + width) & ~myo & ~cavity
    rv_wall = arc & in_h & (d >= outer + width) & (d < outer + width + 3.0)
    fat = (h > -4.0) & (d >= outer) & (d < outer + rng.uniform(2.0, 4.5)) & ~rv
    mediastinum = (h > -30.0) & (d < outer + 25.0)

    # Left atrium above the mitral plane, 4 mm of valve tissue between.
    la_r = rng.uniform(14.0, 19.0) * scale
    la_c = base - axis * (la_r + 4.0)
    la = (
        sum((w - np.float32(c)) ** 2 for w, c in zip(world, la_c, strict=True))
        < la_r**2
    )

    # Body outline (air outside), lungs left and right of the mediastinum.
    x, y = world[0], world[1]
    body = (x / (0.6 * fov[0])) ** 2 + (y / (0.55 * fov[1])) ** 2 < 1.0
    lungs = body & ~mediastinum & ((np.abs(x) > 0.18 * fov[0]) | (y < -0.15 * fov[1]))

    # Paint HU, later structures over earlier ones.
    image = np.full(shape, -1000.0, dtype=np.float32)
    image[body] = 40.0
    image[body & ((x / (0.6 * fov[0])) ** 2 + (y / (0.55 * fov[1])) ** 2 > 0.85)] = -100
    image[lungs] = -850.0
    image[mediastinum] = 40.0
    image[fat] = -90.0
    image[rv_wall] = profile.myocardium_hu
    image[la & ~myo & ~cavity] = profile.lv_blood_hu
    image[rv] = profile.rv_blood_hu
    image[myo] = profile.myocardium_hu
    image[cavity] = profile.lv_blood_hu

    # Scanner: blur (point-spread function), correlated noise, calibration.
    sigma = np.array(
        [profile.blur_inplane_mm, profile.blur_inplane_mm, profile.blur_through_mm]
    )
    image = ndimage.gaussian_filter(image, sigma / spacing)
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape).astype(np.float32), 0.6)
    noise *= profile.noise_hu / max(float(noise.std()), 1e-6)
    image = (image + noise + profile.hu_offset).astype(np.float32)

    labels = np.zeros(shape, dtype=np.uint8)
    labels[rv] = 3
    labels[myo] = 1
    labels[cavity] = 2
    thickness = np.where(myo, wall, 0.0).astype(np.float32)

    # Ground truth: mean thickness per AHA segment in the true frame.
    geometry = LVGeometry(base, axis, septum, float(length), float(-alpha))
    idx = np.nonzero(myo)
    segs = assign_segments(h[idx] / length, psi[idx])
    truth = segment_means(wall[idx], segs)
    logger.debug("phantom seed %s profile %s generated", seed, profile.name)
    return Phantom(
        image=image,
        labels=labels,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        affine=affine,
        true_segment_thickness_mm=truth,
        thickness_mm=thickness,
        geometry=geometry,
        profile=profile.name,
        seed=seed,
        thinned_segments=thinned,
    )


def write_phantom_nifti(
    phantom: Phantom, folder: Path | str, stem: str = "phantom"
) -> tuple[Path, Path]:
    """Write a phantom as ``STEM_image.nii.gz`` and ``STEM_label.nii.gz``.

    Labels are written in MM-WHS codes (205 myocardium, 500 LV blood pool,
    600 RV blood pool), both files with the phantom's affine as sform and qform.

    Returns:
        (image path, label path).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    codes = np.zeros(phantom.labels.shape, dtype=np.uint16)
    for cls, code in CLASS_TO_MMWHS.items():
        codes[phantom.labels == cls] = code
    image_path = out / f"{stem}_image.nii.gz"
    label_path = out / f"{stem}_label.nii.gz"
    for data, path in ((phantom.image, image_path), (codes, label_path)):
        img = nib.Nifti1Image(data, phantom.affine)  # type: ignore[no-untyped-call]
        img.set_qform(phantom.affine, code=1)  # type: ignore[no-untyped-call]
        img.set_sform(phantom.affine, code=1)  # type: ignore[no-untyped-call]
        nib.save(img, path)
    return image_path, label_path
