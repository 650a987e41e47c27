import pytest

from ml.phantom import SCANNER_PROFILES, Phantom, generate_phantom

SMALL = (48, 48, 48)  # 2 mm voxels: 96 mm field of view


@pytest.fixture(scope="session")
def small_phantom() -> Phantom:
    profile = SCANNER_PROFILES["alpha"]
    two_mm = type(profile)(**{**profile.__dict__, "spacing_mm": (2.0, 2.0, 2.0)})
    return generate_phantom(7, two_mm, SMALL)


@pytest.fixture(scope="session")
def phantom() -> Phantom:
    """A full-size phantom (96^3 at 1.5 mm)."""
    return generate_phantom(20001, SCANNER_PROFILES["alpha"])
