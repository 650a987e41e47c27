"""``paroma-node analyse``: outputs, and every kind of bad input refused cleanly."""

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from common.cli import EXIT_ERROR, EXIT_OK
from ml.metrics import dice_per_class
from ml.phantom import SCANNER_PROFILES, generate_phantom, write_phantom_nifti
from node.cli import main

OUTPUTS = {"segmentation.nii.gz", "thickness.json", "bullseye.png"}


@pytest.fixture(scope="module")
def case(tmp_path_factory: Any) -> Any:
    folder = tmp_path_factory.mktemp("scan")
    phantom = generate_phantom(30001, SCANNER_PROFILES["alpha"])
    image, labels = write_phantom_nifti(phantom, folder)
    return phantom, image, labels


def _save(path: Path, data: Any, affine: Any = None) -> Path:
    # Without an affine, nibabel writes qform_code = sform_code = 0: no spacing.
    img = nib.Nifti1Image(data, affine)  # type: ignore[no-untyped-call]
    nib.save(img, path)
    return path


def _nothing_left(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".analyse-")]


def test_analyse_with_labels_writes_the_three_files(case, tmp_path, capsys):
    phantom, image, labels = case
    out = tmp_path / "out"
    assert (
        main(["analyse", str(image), "--labels", str(labels), "--out", str(out)])
        == EXIT_OK
    )
    assert {p.name for p in out.iterdir()} == OUTPUTS
    report = json.loads((out / "thickness.json").read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert sorted(report["segments"], key=int) == [str(k) for k in range(1, 18)]
    for seg, truth in phantom.true_segment_thickness_mm.items():
        measured = report["segments"][str(seg)]
        assert abs(measured["mean_mm"] - truth) < 1.0
        assert measured["thinning"] == (truth <= 5.5)
    assert 2.0 < report["global_mean_mm"] < 12.0
    seg = nib.load(out / "segmentation.nii.gz")
    np.testing.assert_allclose(seg.affine, phantom.affine)  # type: ignore[attr-defined]
    assert (out / "bullseye.png").read_bytes()[:4] == b"\x89PNG"


def test_analyse_segments_with_the_shipped_model(case, tmp_path):
    phantom, image, _ = case
    out = tmp_path / "pred"
    assert main(["analyse", str(image), "--out", str(out)]) == EXIT_OK
    codes = np.asarray(nib.load(out / "segmentation.nii.gz").dataobj)  # type: ignore[attr-defined]
    pred = np.select([codes == 205, codes == 500, codes == 600], [1, 2, 3], 0)
    assert dice_per_class(pred, phantom.labels)[1] > 0.85


def _bad_labels(phantom: Any, kind: str) -> Any:
    codes = np.select(
        [phantom.labels == 1, phantom.labels == 2, phantom.labels == 3],
        [205, 500, 600],
        0,
    ).astype(np.uint16)
    if kind == "no-myocardium":
        codes[codes == 205] = 0
    elif kind == "no-lv":
        codes[codes == 500] = 0
    elif kind == "disconnected":
        # Cut the wall through with a slab of background across the LV.
        centre = np.argwhere(phantom.labels == 2).mean(axis=0).astype(int)
        codes[centre[0] - 3 : centre[0] + 3] = 0
    return codes


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("no-myocardium", "no myocardium"),
        ("no-lv", "no LV blood pool"),
        ("disconnected", "disconnected"),
    ],
)
def test_bad_label_maps_are_refused(case, tmp_path, capsys, kind, message):
    phantom, image, _ = case
    labels = _save(
        tmp_path / f"{kind}.nii.gz", _bad_labels(phantom, kind), phantom.affine
    )
    out = tmp_path / "out"
    assert (
        main(["analyse", str(image), "--labels", str(labels), "--out", str(out)])
        == EXIT_ERROR
    )
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    _nothing_left(out)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("2d", "expected a 3D volume"),
        ("no-spacing", "no spacing"),
        ("missing", "no such"),
    ],
)
def test_bad_scans_are_refused(tmp_path, capsys, kind, message):
    if kind == "2d":
        scan = _save(
            tmp_path / "flat.nii.gz", np.zeros((32, 32), np.float32), np.eye(4)
        )
    elif kind == "no-spacing":
        scan = _save(tmp_path / "raw.nii.gz", np.zeros((32, 32, 32), np.float32))
    else:
        scan = tmp_path / "absent.nii.gz"
    out = tmp_path / "out"
    assert main(["analyse", str(scan), "--out", str(out)]) == EXIT_ERROR
    assert message in capsys.readouterr().err
    _nothing_left(out)


def test_scan_without_a_heart_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    water = (rng.normal(0.0, 20.0, (64, 64, 64))).astype(np.float32)
    scan = _save(tmp_path / "water.nii.gz", water, np.diag([1.5, 1.5, 1.5, 1.0]))
    out = tmp_path / "out"
    assert main(["analyse", str(scan), "--out", str(out)]) == EXIT_ERROR
    assert "no left ventricle" in capsys.readouterr().err
    _nothing_left(out)


def test_unusable_weights_are_refused(case, tmp_path, capsys):
    _, image, _ = case
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\x80\x04pickle")
    out = tmp_path / "out"
    assert (
        main(["analyse", str(image), "--model", str(weights), "--out", str(out)])
        == EXIT_ERROR
    )
    assert "not valid safetensors" in capsys.readouterr().err
    _nothing_left(out)
