from typing import Any

import numpy as np
import pytest

from ml.thickness import laplace_thickness


def _shell(spacing: Any, inner_mm: float, wall_mm: float, size_mm: float = 70.0) -> Any:
    centre = (0.3, -0.2, 0.1)
    n = [int(size_mm / s) for s in spacing]
    axes = [
        (np.arange(k) - (k - 1) / 2) * s - c
        for k, s, c in zip(n, spacing, centre, strict=True)
    ]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    labels = np.zeros(r.shape, np.uint8)
    labels[r < inner_mm] = 2
    labels[(r >= inner_mm) & (r < inner_mm + wall_mm)] = 1
    return labels


@pytest.mark.parametrize(
    ("spacing", "wall_mm", "tolerance_mm"),
    [
        ((1.5, 1.5, 1.5), 8.0, 0.3),
        ((1.5, 1.5, 1.5), 4.0, 0.3),
        ((1.0, 1.0, 2.0), 8.0, 0.3),
        ((1.4, 1.4, 2.0), 5.0, 0.35),
        ((2.0, 2.0, 2.0), 10.0, 0.4),
    ],
)
def test_spherical_shell_thickness(spacing, wall_mm, tolerance_mm):
    labels = _shell(spacing, 18.0, wall_mm, size_mm=2 * (18.0 + wall_mm) + 12)
    thickness = laplace_thickness(labels, spacing)
    wall = thickness[labels == 1]
    assert np.isnan(thickness[labels != 1]).all()
    assert np.isfinite(wall).mean() > 0.99
    assert abs(np.nanmean(wall) - wall_mm) < tolerance_mm


def test_flat_slab_with_zero_flux_sides_is_exact():
    labels = np.zeros((12, 12, 20), np.uint8)
    labels[1:-1, 1:-1, :6] = 2
    labels[1:-1, 1:-1, 6:13] = 1  # 7 voxels of 1.25 mm
    sides = np.ones(labels.shape, bool)
    sides[1:-1, 1:-1, :] = False
    thickness = laplace_thickness(labels, (1.0, 1.0, 1.25), exclude=sides)
    assert np.nanmedian(thickness[labels == 1]) == pytest.approx(8.75, abs=0.05)


def test_only_the_largest_component_is_measured():
    labels = _shell((2.0, 2.0, 2.0), 14.0, 6.0, size_mm=60)
    labels[0:2, 0:2, 0:2] = 1  # a stray island
    thickness = laplace_thickness(labels, (2.0, 2.0, 2.0))
    assert np.isnan(thickness[0:2, 0:2, 0:2]).all()


def test_vanishing_gradient_gives_nan_not_huge_values():
    # No LV blood pool: psi is 1 everywhere, its gradient is zero.
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:12, 4:12, 4:12] = 1
    thickness = laplace_thickness(labels, (1.5, 1.5, 1.5))
    wall = thickness[labels == 1]
    assert not (np.nan_to_num(wall, nan=0.0) > 100).any()
    assert np.isnan(wall).mean() > 0.5


def test_empty_myocardium_gives_all_nan():
    assert np.isnan(laplace_thickness(np.zeros((5, 5, 5), np.uint8), (1, 1, 1))).all()
