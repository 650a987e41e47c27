"""Each site's patients: synthetic phantoms in its scanner profile, non-IID.

Sites differ in scanner profile (noise, blur, contrast timing, voxel spacing)
and in cohort size, so their data are not identically distributed. Every
patient gets a pseudonym (``<site>-p007``), the only name under which the
site registers consent on the ledger (as a salted commitment) and reads the
scan; pseudonyms are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ml.data import Case
from ml.phantom import SCANNER_PROFILES, Phantom, generate_phantom
from simulator.scenario import Scenario, SiteSpec

logger = logging.getLogger(__name__)


@dataclass
class SiteCohort:
    """One site's training cases and held-out test phantoms.

    Attributes:
        spec: the site as the scenario defines it.
        train: training cases, in pseudonym order (all patients, consented
            or not: the consent registry decides which may be read).
        test: held-out phantoms with their exact ground truth.
    """

    spec: SiteSpec
    train: list[Case]
    test: list[Phantom]

    @property
    def pseudonyms(self) -> list[str]:
        return [c.case_id for c in self.train]


def _seeds(scenario: Scenario) -> list[tuple[list[int], list[int]]]:
    """Distinct phantom seeds per site: (train seeds, test seeds)."""
    root = np.random.SeedSequence(scenario.seed)
    out = []
    for spec, child in zip(
        scenario.sites, root.spawn(len(scenario.sites)), strict=True
    ):
        values = child.generate_state(spec.n_train + spec.n_test, dtype=np.uint32)
        seeds = [int(v) for v in values]
        out.append((seeds[: spec.n_train], seeds[spec.n_train :]))
    return out


def generate_cohorts(
    scenario: Scenario,
    *,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> list[SiteCohort]:
    """Generate every site's phantoms (deterministic in the scenario's seed).

    Args:
        scenario: sites, sizes, profiles and the phantom shape.
        workers: threads generating phantoms (NumPy/SciPy release the GIL).
        progress: called with 1 after each phantom (a progress bar's update).
    """
    shape = (scenario.phantom_shape,) * 3
    jobs: list[tuple[int, bool, int]] = []
    for i, (train, test) in enumerate(_seeds(scenario)):
        jobs += [(i, False, s) for s in train] + [(i, True, s) for s in test]

    def make(job: tuple[int, bool, int]) -> Phantom:
        site, _, seed = job
        profile = SCANNER_PROFILES[scenario.sites[site].profile]
        phantom = generate_phantom(seed, profile, shape=shape)
        if progress is not None:
            progress(1)
        return phantom

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        phantoms = list(pool.map(make, jobs))

    cohorts = [SiteCohort(spec, [], []) for spec in scenario.sites]
    for (site, is_test, _), phantom in zip(jobs, phantoms, strict=True):
        cohort = cohorts[site]
        if is_test:
            cohort.test.append(phantom)
        else:
            # Only the image and labels are kept for training (no ground-truth
            # thickness): the case is what a hospital would hold.
            case_id = f"{cohort.spec.name}-p{len(cohort.train):03d}"
            cohort.train.append(Case.from_phantom(case_id, phantom))
    logger.info("generated %d phantoms for %d sites", len(jobs), len(cohorts))
    return cohorts
