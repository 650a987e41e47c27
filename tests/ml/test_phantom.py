import numpy as np
import pytest

from ml.aha import THINNING_MM
from ml.phantom import SCANNER_PROFILES, generate_phantom


def test_at_least_four_distinct_site_profiles():
    profiles = list(SCANNER_PROFILES.values())
    assert len(profiles) >= 4
    for field in ("spacing_mm", "noise_hu", "hu_offset", "lv_blood_hu"):
        assert len({getattr(p, field) for p in profiles}) >= 3, field


@pytest.mark.parametrize("name", sorted(SCANNER_PROFILES))
def test_ground_truth_is_consistent(name):
    ph = generate_phantom(11, SCANNER_PROFILES[name])
    assert ph.image.dtype == np.float32 and ph.image.shape == (96, 96, 96)
    assert set(np.unique(ph.labels)) == {0, 1, 2, 3}
    assert ph.spacing == SCANNER_PROFILES[name].spacing_mm
    assert np.allclose(np.linalg.norm(ph.affine[:3, :3], axis=0), ph.spacing)
    # Thickness map: defined exactly on the myocardium, 2-12 mm.
    wall = ph.thickness_mm[ph.labels == 1]
    assert wall.min() >= 2.4 and wall.max() <= 12.01
    assert np.all(ph.thickness_mm[ph.labels != 1] == 0)
    # All 17 segments measured; thinned ones below the threshold, others above.
    truth = ph.true_segment_thickness_mm
    assert sorted(truth) == list(range(1, 18))
    for seg, value in truth.items():
        if seg in ph.thinned_segments:
            assert value <= THINNING_MM
        else:
            assert value >= 7.0


def test_intensities_follow_the_profile():
    profile = SCANNER_PROFILES["charlie"]
    ph = generate_phantom(3, profile)
    core = ph.labels == 2
    lv = float(np.median(ph.image[core]))
    assert abs(lv - (profile.lv_blood_hu + profile.hu_offset)) < 25


def test_same_seed_same_phantom_other_seed_other_anatomy():
    a = generate_phantom(5, shape=(48, 48, 48))
    b = generate_phantom(5, shape=(48, 48, 48))
    c = generate_phantom(6, shape=(48, 48, 48))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert abs(float(a.geometry.axis @ c.geometry.axis)) < 0.9999
