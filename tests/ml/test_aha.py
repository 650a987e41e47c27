import numpy as np
import pytest

from ml.aha import assign_segments, estimate_geometry, voxel_world
from ml.errors import LabelsInvalid


@pytest.mark.parametrize(
    ("height", "psi", "segment"),
    [
        # basal ring, 60 degree sectors from the anterior RV insertion
        (0.1, 10, 2),
        (0.1, 70, 3),
        (0.1, 130, 4),
        (0.1, 190, 5),
        (0.1, 250, 6),
        (0.1, 310, 1),
        (-0.05, 30, 2),
        # mid ring
        (0.5, 10, 8),
        (0.5, 70, 9),
        (0.5, 130, 10),
        (0.5, 190, 11),
        (0.5, 250, 12),
        (0.5, 310, 7),
        # apical ring: septal sector centred on the septum (psi = 60)
        (0.8, 20, 14),
        (0.8, 100, 14),
        (0.8, 110, 15),
        (0.8, 200, 16),
        (0.8, 290, 13),
        (0.8, 10, 13),
        # apex cap beyond the cavity tip
        (1.05, 123, 17),
        # angles wrap
        (0.5, 370, 8),
        (0.5, -50, 7),
    ],
)
def test_segment_table(height, psi, segment):
    assert assign_segments(np.array([height]), np.array([float(psi)]))[0] == segment


def test_geometry_found_from_labels_matches_the_phantom(phantom):
    truth = phantom.geometry
    found = estimate_geometry(phantom.labels, phantom.affine)
    assert float(found.axis @ truth.axis) > 0.995
    assert abs(found.length_mm - truth.length_mm) < 2 * max(phantom.spacing)
    assert abs(found.anterior_deg - truth.anterior_deg) < 8.0
    # Per-voxel segment agreement on the myocardium.
    points = voxel_world(np.argwhere(phantom.labels == 1), phantom.affine)
    agree = (found.segments(points) == truth.segments(points)).mean()
    assert agree > 0.93


def test_geometry_needs_the_rv(phantom):
    labels = phantom.labels.copy()
    labels[labels == 3] = 0
    with pytest.raises(LabelsInvalid, match="RV"):
        estimate_geometry(labels, phantom.affine)


@pytest.mark.parametrize(("drop", "message"), [(1, "myocardium"), (2, "LV blood")])
def test_geometry_needs_myocardium_and_lv(phantom, drop, message):
    labels = phantom.labels.copy()
    labels[labels == drop] = 0
    with pytest.raises(LabelsInvalid, match=message):
        estimate_geometry(labels, phantom.affine)
