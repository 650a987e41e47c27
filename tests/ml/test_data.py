from typing import Any

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ml.data import (
    Case,
    CaseDataset,
    Volume,
    classes_to_mmwhs,
    load_labels,
    load_volume,
    mmwhs_to_classes,
    normalize_hu,
    resample,
)
from ml.errors import LabelsInvalid, ScanInvalid
from ml.phantom import write_phantom_nifti


@pytest.mark.parametrize(
    ("code", "cls"),
    [(205, 1), (500, 2), (600, 3), (0, 0), (420, 0), (550, 0), (820, 0), (850, 0)],
)
def test_mmwhs_codes_map_to_classes(code, cls):
    assert mmwhs_to_classes(np.array([code]))[0] == cls


def test_classes_map_back_to_mmwhs():
    classes = np.array([0, 1, 2, 3], dtype=np.uint8)
    assert classes_to_mmwhs(classes).tolist() == [0, 205, 500, 600]


def test_nifti_round_trip_keeps_affine_and_labels(small_phantom, tmp_path):
    image_path, label_path = write_phantom_nifti(small_phantom, tmp_path)
    codes = nib.load(label_path).dataobj  # type: ignore[attr-defined]
    assert np.unique(np.asarray(codes)).tolist() == [0, 205, 500, 600]
    scan = load_volume(image_path)
    labels = load_labels(label_path, like=scan)
    np.testing.assert_allclose(scan.affine, small_phantom.affine)
    np.testing.assert_allclose(
        np.asarray(scan.array, float), small_phantom.image, atol=1e-3
    )
    assert np.array_equal(labels.array, small_phantom.labels)
    assert scan.spacing == pytest.approx(small_phantom.spacing)


def test_nifti_without_spacing_is_refused(tmp_path):
    img = nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), None)  # type: ignore[no-untyped-call]
    img.header["qform_code"] = 0
    img.header["sform_code"] = 0
    nib.save(img, tmp_path / "x.nii.gz")
    with pytest.raises(ScanInvalid, match="no spacing"):
        load_volume(tmp_path / "x.nii.gz")


def test_2d_image_is_refused(tmp_path):
    nib.save(
        nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)),  # type: ignore[no-untyped-call]
        tmp_path / "a.nii",
    )
    with pytest.raises(ScanInvalid, match="3D"):
        load_volume(tmp_path / "a.nii")


def test_label_shape_must_match_scan(small_phantom, tmp_path):
    _, label_path = write_phantom_nifti(small_phantom, tmp_path)
    other = Volume(np.zeros((10, 10, 10), np.float32), np.eye(4))
    with pytest.raises(LabelsInvalid, match="shape"):
        load_labels(label_path, like=other)


def _write_series(folder: Any, volume_hu: Any, spacing: Any, origin: Any) -> None:
    """A CT series of axial slices, written in shuffled order."""
    rows, cols, n = volume_hu.shape
    uid = generate_uid()
    order = np.random.default_rng(0).permutation(n)
    for k in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(
            str(folder / f"s{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128
        )
        ds.SOPClassUID = CTImageStorage
        ds.SeriesInstanceUID = uid
        ds.Modality = "CT"
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.SliceThickness = spacing[2]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        ds.RescaleSlope = 1
        ds.RescaleIntercept = -1024
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = (volume_hu[:, :, k] + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / f"s{k}.dcm", enforce_file_format=True)


def test_dicom_series_loads_sorted_with_hu_and_affine(tmp_path):
    hu = np.random.default_rng(1).integers(-1000, 1000, (12, 10, 6)).astype(np.int16)
    _write_series(tmp_path, hu, (0.8, 0.7, 2.5), (-10.0, 20.0, 30.0))
    scan = load_volume(tmp_path)
    assert scan.array.shape == (12, 10, 6)
    np.testing.assert_array_equal(scan.array, hu)
    assert scan.spacing == pytest.approx((0.8, 0.7, 2.5))
    # LPS (10, -20, 30) for voxel (0,0,0) is RAS (10, 20... ) with x, y negated.
    origin = scan.affine @ np.array([0, 0, 0, 1.0])
    assert origin[:3] == pytest.approx((10.0, -20.0, 30.0))
    last = scan.affine @ np.array([0, 0, 5, 1.0])
    assert last[2] == pytest.approx(30.0 + 5 * 2.5)


def test_dicom_folder_with_one_slice_is_refused(tmp_path):
    hu = np.zeros((4, 4, 1), np.int16)
    _write_series(tmp_path, hu, (1, 1, 1), (0, 0, 0))
    with pytest.raises(ScanInvalid, match="2 or more"):
        load_volume(tmp_path)


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 1.5), (1.0, 2.0, 3.0)])
def test_resample_keeps_world_positions(spacing):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (5.0, -3.0, 7.0)
    array = np.zeros((20, 20, 20), np.float32)
    array[10, 5, 12] = 1.0
    out = resample(Volume(array, affine), spacing, order=1)
    assert out.spacing == pytest.approx(spacing)
    peak = np.unravel_index(np.argmax(out.array), out.array.shape)
    world_in = affine @ np.array([10, 5, 12, 1.0])
    world_out = out.affine @ np.array([*peak, 1.0])
    assert np.abs(world_in - world_out)[:3].max() <= max(spacing) / 2 + 1e-6


def test_hu_window():
    assert normalize_hu(np.array([-1000.0, 200.0, 2000.0])).tolist() == [-1.0, 0.0, 1.0]


def test_dataset_calls_on_read_for_each_use_and_forgets_removed(small_phantom):
    seen: list[str] = []
    cases = [Case.from_phantom(f"case-{i}", small_phantom) for i in range(3)]
    data = CaseDataset(cases, patch=(32, 32, 32), on_read=seen.append)
    assert data.case_ids == ["case-0", "case-1", "case-2"]
    x, y = data.sample_batch(np.random.default_rng(0), 4)
    assert x.shape == (4, 1, 32, 32, 32) and y.shape == (4, 1, 32, 32, 32)
    assert len(seen) == 4 and set(seen) <= set(data.case_ids)
    data.remove("case-1")
    seen.clear()
    data.sample_batch(np.random.default_rng(1), 20)
    assert "case-1" not in seen and len(seen) == 20


def test_on_read_can_veto_a_case(small_phantom):
    def refuse(case_id: str) -> None:
        raise PermissionError(case_id)

    data = CaseDataset([Case.from_phantom("c", small_phantom)], on_read=refuse)
    with pytest.raises(PermissionError):
        data.sample_batch(np.random.default_rng(0), 1)


def test_cases_on_disk_load_through_paths(small_phantom, tmp_path):
    image_path, label_path = write_phantom_nifti(small_phantom, tmp_path)
    data = CaseDataset([Case("d", image_path, label_path)], patch=(32, 32, 32))
    _, y = data.sample_batch(np.random.default_rng(0), 2)
    assert set(np.unique(y.numpy())) <= {0, 1, 2, 3}
