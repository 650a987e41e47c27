"""``analyse``: from a scan (and optionally its label map) to a thickness report.

Steps: load and check the scan; segment it with the model (or load the given
MM-WHS label map); check the labels can be measured; find the LV frame and AHA
segments (:mod:`ml.aha`); Laplace wall thickness (:mod:`ml.thickness`); mean per
segment; write ``segmentation.nii.gz`` (MM-WHS codes), ``thickness.json`` and
``bullseye.png``. The three files are written into a fresh folder beside the
output and moved into place only when all exist, so a failure leaves nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

from ml.aha import THINNING_MM, estimate_geometry, segment_means, voxel_world
from ml.bullseye import write_bullseye
from ml.data import Volume, classes_to_mmwhs, load_labels, load_volume
from ml.errors import LabelsInvalid, LVNotFound, ScanInvalid
from ml.infer import segment
from ml.model import load_shipped_model
from ml.thickness import laplace_thickness

logger = logging.getLogger(__name__)

OUTPUT_FILES = ("segmentation.nii.gz", "thickness.json", "bullseye.png")

# A second myocardium component larger than this share of the whole means the
# label map shows the wall in pieces, which a thickness cannot be measured on.
_MAX_STRAY_SHARE = 0.01
# Least LV blood pool and myocardium volume (mL) a segmentation must find.
_MIN_VOLUME_ML = 5.0


@dataclass(frozen=True)
class SegmentThickness:
    """Mean thickness of one AHA segment (NaN when it holds no myocardium)."""

    mean_mm: float
    thinning: bool


@dataclass(frozen=True)
class ThicknessReport:
    """Result of :func:`analyse`.

    Attributes:
        segments: AHA segment 1-17 to its mean thickness and thinning flag.
        global_mean_mm: mean thickness over all measured myocardial voxels.
        out_dir: folder holding the three output files.
    """

    segments: dict[int, SegmentThickness]
    global_mean_mm: float
    out_dir: Path

    def to_json(self) -> dict[str, Any]:
        """The ``thickness.json`` document (NaN written as null)."""

        def num(v: float) -> float | None:
            return None if math.isnan(v) else round(v, 3)

        return {
            "segments": {
                str(k): {"mean_mm": num(s.mean_mm), "thinning": s.thinning}
                for k, s in sorted(self.segments.items())
            },
            "global_mean_mm": num(self.global_mean_mm),
            "thinning_threshold_mm": THINNING_MM,
        }


def _component_sizes(mask: NDArray[np.bool_]) -> list[int]:
    comps, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    return sorted(np.bincount(comps.ravel())[1:].tolist(), reverse=True)


def check_labels(labels: NDArray[np.integer], what: str) -> None:
    """Raise :class:`LabelsInvalid` unless the map has an LV blood pool and one
    connected myocardium."""
    if not (labels == 1).any():
        raise LabelsInvalid(f"{what}: no myocardium (MM-WHS 205)")
    if not (labels == 2).any():
        raise LabelsInvalid(f"{what}: no LV blood pool (MM-WHS 500)")
    sizes = _component_sizes(labels == 1)
    if len(sizes) > 1 and sizes[1] > _MAX_STRAY_SHARE * sum(sizes):
        raise LabelsInvalid(
            f"{what}: myocardium is disconnected ({len(sizes)} pieces; "
            f"expected one connected wall)"
        )


def measure(
    labels: NDArray[np.integer], affine: NDArray[np.float64]
) -> tuple[dict[int, float], float, NDArray[np.float32]]:
    """Mean thickness per AHA segment, global mean, and the thickness map (mm)."""
    geometry = estimate_geometry(labels, affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)

    # The atrial side of the basal plane bounds the cut face of the base with
    # zero flux: neither endocardium nor epicardium.
    grid = np.indices(labels.shape).reshape(3, -1).T
    height = (voxel_world(grid, affine) - geometry.base_point) @ geometry.axis
    above = (height < -0.5 * float(spacing.min())).reshape(labels.shape)
    exclude = above & (labels != 1) & (labels != 2)

    thickness = laplace_thickness(labels, spacing, exclude=exclude)
    measured = np.isfinite(thickness)
    points = voxel_world(np.argwhere(measured), affine)
    segments = geometry.segments(points)
    values = thickness[measured]
    means = segment_means(values, segments)
    overall = float(values.mean()) if values.size else math.nan
    return means, overall, thickness


def _write_outputs(
    folder: Path,
    labels: NDArray[np.integer],
    affine: NDArray[np.float64],
    report: ThicknessReport,
) -> None:
    img = nib.Nifti1Image(classes_to_mmwhs(labels), affine)  # type: ignore[no-untyped-call]
    img.set_qform(affine, code=1)  # type: ignore[no-untyped-call]
    img.set_sform(affine, code=1)  # type: ignore[no-untyped-call]
    nib.save(img, folder / "segmentation.nii.gz")
    (folder / "thickness.json").write_text(
        json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"
    )
    write_bullseye(
        folder / "bullseye.png", {k: s.mean_mm for k, s in report.segments.items()}
    )


def _publish(stage: Path, out_dir: Path) -> None:
    """Move the finished files from ``stage`` into ``out_dir``."""
    if not out_dir.exists():
        os.replace(stage, out_dir)
        return
    for name in OUTPUT_FILES:
        os.replace(stage / name, out_dir / name)
    stage.rmdir()


def analyse(
    scan: Volume | Path | str,
    labels: Volume | Path | str | None = None,
    model: torch.nn.Module | None = None,
    *,
    out_dir: Path | str,
) -> ThicknessReport:
    """Measure LV wall thickness per AHA segment and write the three outputs.

    Args:
        scan: HU volume, NIfTI file or DICOM series folder.
        labels: MM-WHS label map for ``scan`` (skips segmentation), or None.
        model: segmentation network; None loads the shipped model (only when
            ``labels`` is None).
        out_dir: folder for ``segmentation.nii.gz``, ``thickness.json`` and
            ``bullseye.png`` (created if missing).

    Raises:
        ScanInvalid: the scan is not a 3D volume with spacing.
        LabelsInvalid: the label map lacks myocardium or LV, or the myocardium
            is in pieces, or has no RV to orient the segments.
        LVNotFound: segmentation found no LV in the scan.
    """
    volume = scan if isinstance(scan, Volume) else load_volume(scan)
    image = np.asarray(volume.array)
    if image.ndim != 3:
        raise ScanInvalid(f"scan: expected a 3D volume, got shape {image.shape}")

    if labels is not None:
        given = labels if isinstance(labels, Volume) else load_labels(labels, volume)
        classes = np.asarray(given.array).astype(np.uint8)
        if classes.shape != image.shape:
            raise LabelsInvalid(
                f"labels: shape {classes.shape} differs from the scan's {image.shape}"
            )
        check_labels(classes, "labels")
    else:
        net = model if model is not None else load_shipped_model()
        classes = segment(net, image, volume.spacing)
        voxel_ml = float(np.prod(volume.spacing)) / 1000.0
        lv_ml = float((classes == 2).sum()) * voxel_ml
        myo_ml = float((classes == 1).sum()) * voxel_ml
        # Smaller than any LV, even a child's: noise the model mistook for one.
        if lv_ml < _MIN_VOLUME_ML or myo_ml < _MIN_VOLUME_ML:
            raise LVNotFound(
                "scan: the model found no left ventricle (LV blood pool and "
                "myocardium); is this a contrast-enhanced cardiac CT?"
            )
        check_labels(classes, "segmentation")

    means, overall, _ = measure(classes, volume.affine)
    report_segments = {
        k: SegmentThickness(v, bool(not math.isnan(v) and v <= THINNING_MM))
        for k, v in means.items()
    }
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = ThicknessReport(report_segments, overall, out)
    stage = Path(tempfile.mkdtemp(prefix=".analyse-", dir=out.parent))
    try:
        _write_outputs(stage, classes, volume.affine, report)
        _publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    logger.info("analysis written to %s", out)
    return report
