"""Loading scans and label maps, and the training dataset of random crops.

Scans come as NIfTI files or DICOM series folders; label maps use the MM-WHS
codes (205 myocardium, 500 LV blood pool, 600 RV blood pool; every other code,
such as 420 left atrium or 820 aorta, is background here). Everything is
resampled to one spacing for the network, and HU are windowed to [-1, 1].

:class:`CaseDataset` serves random 64^3 crops for training (the same size as
the inference windows, DESIGN.md pitfalls). Its ``on_read`` hook is called with a
case id every time that case's voxels are used, so a consent check can watch or
veto (by raising) each use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pydicom
import torch
from numpy.typing import NDArray
from scipy import ndimage

from ml.errors import LabelsInvalid, ScanInvalid
from ml.model import PATCH_SIZE

if TYPE_CHECKING:
    from ml.phantom import Phantom

logger = logging.getLogger(__name__)

MMWHS_TO_CLASS = {205: 1, 500: 2, 600: 3}
TRAIN_SPACING_MM = (1.5, 1.5, 1.5)

# HU window for the network input: lung and air clip to -1, contrast blood
# (up to about 500 HU) stays below +1.
HU_LOW, HU_HIGH = -250.0, 650.0
# The normalized value of HU_LOW and below: what crops and inference windows
# are padded with where a volume is shorter than the patch.
PAD_VALUE = -1.0


@dataclass
class Volume:
    """A 3D array on a voxel grid.

    Attributes:
        array: voxel values, axes in file order (i, j, k).
        affine: voxel-to-world (RAS, mm) 4x4 matrix.
    """

    array: NDArray[np.generic]
    affine: NDArray[np.float64]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along each array axis, mm."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))


def mmwhs_to_classes(codes: NDArray[np.generic]) -> NDArray[np.uint8]:
    """Map MM-WHS codes to classes 0-3 (unknown codes become background)."""
    out = np.zeros(codes.shape, dtype=np.uint8)
    for code, cls in MMWHS_TO_CLASS.items():
        out[codes == code] = cls
    return out


def classes_to_mmwhs(labels: NDArray[np.generic]) -> NDArray[np.uint16]:
    """Map classes 0-3 to MM-WHS codes (background stays 0)."""
    out = np.zeros(labels.shape, dtype=np.uint16)
    for code, cls in MMWHS_TO_CLASS.items():
        out[labels == cls] = code
    return out


def normalize_hu(image: NDArray[np.generic]) -> NDArray[np.float32]:
    """Window HU to [HU_LOW, HU_HIGH] and scale linearly to [-1, 1]."""
    clipped = np.clip(np.asarray(image, dtype=np.float32), HU_LOW, HU_HIGH)
    return ((clipped - HU_LOW) / (HU_HIGH - HU_LOW) * 2.0 - 1.0).astype(np.float32)


def _check_volume(volume: Volume, what: str) -> Volume:
    array = np.asarray(volume.array)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or min(array.shape) < 2:
        raise ScanInvalid(f"{what}: expected a 3D volume, got shape {array.shape}")
    spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ScanInvalid(f"{what}: voxel spacing {spacing} is not positive")
    return Volume(array, volume.affine)


def _load_nifti(path: Path) -> Volume:
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for a bad file
        raise ScanInvalid(f"{path}: not a readable NIfTI file ({exc})") from exc
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass
        raise ScanInvalid(f"{path}: expected a NIfTI image")
    header = img.header
    # Without a qform or sform, NIfTI has no physical voxel size (NIfTI-1 §
    # "method 1" falls back to pixdim only for analyze compatibility): refuse,
    # since thickness in mm would be a guess.
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        raise ScanInvalid(f"{path}: image has no spacing (no qform or sform)")
    return _check_volume(Volume(np.asarray(img.dataobj), img.affine), str(path))


def _load_dicom_series(folder: Path) -> Volume:
    slices = []
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            slices.append(pydicom.dcmread(file))
        except pydicom.errors.InvalidDicomError:
            continue
    if len(slices) < 2:
        raise ScanInvalid(f"{folder}: expected a DICOM series of 2 or more slices")
    try:
        orient = np.array(slices[0].ImageOrientationPatient, dtype=np.float64)
        row, col = orient[:3], orient[3:]
        normal = np.cross(row, col)
        slices.sort(key=lambda s: float(np.dot(s.ImagePositionPatient, normal)))
        pixel = [float(v) for v in slices[0].PixelSpacing]
        positions = np.array([s.ImagePositionPatient for s in slices], dtype=float)
        stack = np.stack([s.pixel_array for s in slices], axis=-1).astype(np.float32)
        slope = float(getattr(slices[0], "RescaleSlope", 1.0))
        intercept = float(getattr(slices[0], "RescaleIntercept", 0.0))
    except AttributeError as exc:
        raise ScanInvalid(f"{folder}: DICOM series lacks {exc.name or exc}") from exc
    gaps = np.diff(positions @ normal)
    if np.any(gaps <= 0):
        raise ScanInvalid(f"{folder}: DICOM slices overlap or repeat")
    # pixel_array is (rows, columns): axis 0 steps along the column direction
    # (PixelSpacing[0]), axis 1 along the row direction (DICOM PS3.3 C.7.6.2).
    lps = np.eye(4)
    lps[:3, 0] = col * pixel[0]
    lps[:3, 1] = row * pixel[1]
    lps[:3, 2] = normal * float(np.median(gaps))
    lps[:3, 3] = positions[0]
    # DICOM patient coordinates are LPS; NIfTI world is RAS.
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    image = stack * slope + intercept
    return _check_volume(Volume(image, affine), str(folder))


def load_volume(path: Path | str) -> Volume:
    """Load a scan from a NIfTI file or a folder holding one DICOM series.

    Raises:
        ScanInvalid: unreadable, not 3D, or without physical spacing.
    """
    source = Path(path)
    if source.is_dir():
        return _load_dicom_series(source)
    if not source.exists():
        raise ScanInvalid(f"{source}: no such file or folder")
    return _load_nifti(source)


def load_labels(path: Path | str, like: Volume | None = None) -> Volume:
    """Load an MM-WHS label map as classes 0-3.

    Args:
        path: NIfTI file or DICOM folder of MM-WHS codes.
        like: the scan the labels belong to; shapes must match.

    Raises:
        LabelsInvalid: shape differs from ``like``.
        ScanInvalid: the file is not a 3D volume with spacing.
    """
    volume = load_volume(path)
    classes = mmwhs_to_classes(np.rint(np.asarray(volume.array)).astype(np.int64))
    if like is not None and classes.shape != like.array.shape:
        raise LabelsInvalid(
            f"{path}: label map shape {classes.shape} differs from the scan's "
            f"{like.array.shape}"
        )
    return Volume(classes, volume.affine)


def resample(volume: Volume, spacing: Sequence[float], order: int = 1) -> Volume:
    """Resample to ``spacing`` (mm per axis) keeping the field of view.

    Args:
        volume: input volume.
        spacing: target voxel size per array axis, mm.
        order: spline order (0 for labels, 1 for images).
    """
    old = np.asarray(volume.spacing)
    factor = np.asarray(spacing, dtype=np.float64) / old
    shape = tuple(
        max(1, round(float(n) / float(f)))
        for n, f in zip(volume.array.shape, factor, strict=True)
    )
    if shape == volume.array.shape and np.allclose(factor, 1.0):
        return volume
    # New voxel i sits at old index (i + 0.5) * f - 0.5 (voxel centres, same
    # corner of the field of view).
    offset = (factor - 1.0) / 2.0
    out = ndimage.affine_transform(
        np.asarray(volume.array),
        factor,
        offset=offset,
        output_shape=shape,
        order=order,
        mode="nearest",
    )
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] * factor
    affine[:3, 3] = volume.affine[:3, :3] @ offset + volume.affine[:3, 3]
    return Volume(out, affine)


@dataclass
class Case:
    """One training case: a scan and its label map, on disk or in memory.

    Attributes:
        case_id: pseudonymous id, passed to ``on_read``; never logged.
        image_path: NIfTI file or DICOM folder (when not in memory).
        label_path: MM-WHS label map (when not in memory).
        image: HU volume, when in memory.
        labels: class map 0-3, when in memory.
    """

    case_id: str
    image_path: Path | None = None
    label_path: Path | None = None
    image: Volume | None = field(default=None, repr=False)
    labels: Volume | None = field(default=None, repr=False)

    @classmethod
    def from_phantom(cls, case_id: str, phantom: Phantom) -> Case:
        """A case held in memory, from a phantom."""
        return cls(
            case_id,
            image=Volume(phantom.image, phantom.affine),
            labels=Volume(phantom.labels, phantom.affine),
        )

    def read(self) -> tuple[Volume, Volume]:
        """The scan (HU) and label map (classes), from memory or disk."""
        if self.image is not None and self.labels is not None:
            return self.image, self.labels
        if self.image_path is None or self.label_path is None:
            raise ScanInvalid("case has neither arrays nor image and label paths")
        image = load_volume(self.image_path)
        return image, load_labels(self.label_path, like=image)


@dataclass
class _Prepared:
    image: NDArray[np.float32]  # normalized, at the training spacing
    labels: NDArray[np.uint8]  # classes, same grid
    foreground: NDArray[np.intp]  # (N, 3) indices of myocardium voxels


class CaseDataset:
    """Random crops of cases resampled to one spacing, for training.

    Each case is read once (then kept in memory, resampled and normalized);
    ``on_read(case_id)`` is called on every use of a case, from the cache or
    not, so a consent check sees each one and can stop it by raising.

    Args:
        cases: the cases; ids must be unique.
        spacing: training voxel size, mm.
        patch: crop size in voxels (the inference window size).
        on_read: hook called with the case id on every use.
        foreground_fraction: share of crops centred on a myocardium voxel.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        *,
        spacing: Sequence[float] = TRAIN_SPACING_MM,
        patch: Sequence[int] = PATCH_SIZE,
        on_read: Callable[[str], None] | None = None,
        foreground_fraction: float = 0.7,
    ) -> None:
        ids = [c.case_id for c in cases]
        if len(set(ids)) != len(ids):
            raise ScanInvalid("case ids in a dataset must be unique")
        self._cases = {c.case_id: c for c in cases}  # insertion order = case order
        self._cache: dict[str, _Prepared] = {}
        self.spacing = tuple(float(s) for s in spacing)
        self.patch = tuple(int(p) for p in patch)
        self.on_read = on_read
        self.foreground_fraction = foreground_fraction

    def __len__(self) -> int:
        return len(self._cases)

    @property
    def case_ids(self) -> list[str]:
        """The ids of the cases this dataset may read, in order."""
        return list(self._cases)

    def remove(self, case_id: str) -> None:
        """Forget a case and its cached voxels (after erasure or withdrawn consent)."""
        self._cases.pop(case_id, None)
        self._cache.pop(case_id, None)

    def _prepared(self, case_id: str) -> _Prepared:
        if self.on_read is not None:
            self.on_read(case_id)
        cached = self._cache.get(case_id)
        if cached is None:
            image, labels = self._cases[case_id].read()
            img = resample(image, self.spacing, order=1).array
            lab = resample(labels, self.spacing, order=0).array.astype(np.uint8)
            cached = _Prepared(normalize_hu(img), lab, np.argwhere(lab == 1))
            self._cache[case_id] = cached
        return cached

    def _crop(
        self, prep: _Prepared, rng: np.random.Generator
    ) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
        patch = np.asarray(self.patch)
        shape = np.asarray(prep.image.shape)
        # Pad small volumes up to the patch (image at its window minimum).
        pads = [(0, int(max(0, p - s))) for p, s in zip(patch, shape, strict=True)]
        image = np.pad(prep.image, pads, constant_values=PAD_VALUE)
        labels = np.pad(prep.labels, pads, constant_values=0)
        shape = np.asarray(image.shape)
        if len(prep.foreground) and rng.random() < self.foreground_fraction:
            centre = prep.foreground[rng.integers(len(prep.foreground))]
            start = np.clip(centre - patch // 2, 0, shape - patch)
        else:
            start = np.array(
                [rng.integers(0, s - p + 1) for s, p in zip(shape, patch, strict=True)]
            )
        window = tuple(
            slice(int(a), int(a + p)) for a, p in zip(start, patch, strict=True)
        )
        return image[window], labels[window]

    def sample_batch(
        self, rng: np.random.Generator, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of random crops: images (B, 1, *patch), labels (B, 1, *patch).

        Image intensities get a small random scale and shift, which helps across
        scanner profiles.
        """
        if not self._cases:
            raise ScanInvalid("dataset has no cases to sample from")
        ids = self.case_ids
        images, labels = [], []
        for _ in range(batch_size):
            prep = self._prepared(ids[int(rng.integers(len(ids)))])
            image, label = self._crop(prep, rng)
            image = image * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
            images.append(image.astype(np.float32))
            labels.append(label.astype(np.int64))
        x = torch.from_numpy(np.stack(images)[:, None])
        y = torch.from_numpy(np.stack(labels)[:, None])
        return x, y
