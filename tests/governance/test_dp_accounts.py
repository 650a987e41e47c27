"""DP accounts: trainers of one registry spend from their own account's budget,
the default account keeps the counters' old names, and DP steps raise no
warning, even from two trainers stepping at once in threads."""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import replace

import pytest
import torch

from ml.model import ModelConfig, build_model
from node.governance.policy import Policy, example_policy
from node.governance.site import SiteGovernance
from node.governance.training import (
    DP_RATE,
    DP_STEPS,
    EPSILON,
    STEPS,
    GovernedTrainer,
    account_counter,
    epsilon_spent,
)

from .conftest import PATCH, Fed

SIGMA = 2.0
DELTA = 1e-3


def dp_policy() -> Policy:
    policy = example_policy()
    privacy = replace(
        policy.privacy,
        enabled=True,
        noise_multiplier=SIGMA,
        epsilon_budget=50.0,
        delta=DELTA,
    )
    return replace(policy, privacy=privacy)


def rdp_epsilon(steps: int) -> float:
    """Epsilon of ``steps`` DP-SGD steps at sampling rate 1, by our own accountant.

    Two consented cases and batches of two: every step samples the whole cohort.
    """
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(SIGMA, 1.0, steps)]
    return float(accountant.get_epsilon(DELTA))


@pytest.fixture
def gov(fed: Fed, phantoms) -> SiteGovernance:
    gov = fed.gov(0, dp_policy())
    for i in range(2):
        gov.register_consent(f"PSN-A{i}", *phantoms[i])
    return gov


def fresh() -> dict[str, torch.Tensor]:
    return build_model(ModelConfig.tiny()).state_dict()


def test_accounts_spend_separately(gov):
    decentralized = gov.trainer(patch=PATCH, account="decentralized")
    local = gov.trainer(patch=PATCH, account="local_only", seed=1)
    decentralized.train(fresh(), 2)
    local.train(fresh(), 3)
    decentralized.train(fresh(), 1)

    assert decentralized.epsilon_spent == pytest.approx(rdp_epsilon(3), rel=1e-9)
    assert local.epsilon_spent == pytest.approx(rdp_epsilon(3), rel=1e-9)
    assert epsilon_spent(gov.registry, "local_only") == local.epsilon_spent
    registry = gov.registry
    assert registry.counter(account_counter(DP_STEPS, "decentralized")) == 3
    assert registry.counter(account_counter(DP_RATE, "local_only")) == 1.0
    # The site's own account (the daemon's) is untouched; the step clock of
    # erasure checkpoints stays one per site.
    assert gov.epsilon_spent == 0.0
    assert registry.counter(DP_STEPS) == 0.0
    assert registry.counter(STEPS) == 6


def test_unequal_spending_stays_apart(gov):
    a = gov.trainer(patch=PATCH, account="a")
    b = gov.trainer(patch=PATCH, account="b")
    a.train(fresh(), 1)
    b.train(fresh(), 4)
    a.train(fresh(), 1)
    assert a.epsilon_spent == pytest.approx(rdp_epsilon(2), rel=1e-9)
    assert b.epsilon_spent == pytest.approx(rdp_epsilon(4), rel=1e-9)
    assert a.epsilon_spent < b.epsilon_spent


def test_one_account_shares_its_budget(gov):
    first = gov.trainer(patch=PATCH, account="x")
    second = gov.trainer(patch=PATCH, account="x", seed=1)
    first.train(fresh(), 2)
    second.train(fresh(), 1)
    assert second.epsilon_spent == pytest.approx(rdp_epsilon(3), rel=1e-9)
    # The first trainer's accountant was built before the second stepped: it
    # counts those steps too.
    first.train(fresh(), 1)
    assert first.epsilon_spent == pytest.approx(rdp_epsilon(4), rel=1e-9)
    assert second.epsilon_spent == first.epsilon_spent
    assert gov.registry.counter(account_counter(DP_STEPS, "x")) == 4


def test_shared_account_stops_at_the_budget(fed, phantoms):
    policy = dp_policy()
    policy = replace(policy, privacy=replace(policy.privacy, epsilon_budget=6.0))
    gov = fed.gov(0, policy)
    for i in range(2):
        gov.register_consent(f"PSN-B{i}", *phantoms[i])
    first = gov.trainer(patch=PATCH, account="x")
    second = gov.trainer(patch=PATCH, account="x", seed=1)
    first.train(fresh(), 5)
    second.train(fresh(), 50)
    # sigma 2, rate 1: nine steps spend 5.84, a tenth would spend 6.24.
    assert gov.registry.counter(account_counter(DP_STEPS, "x")) == 9
    state = fresh()
    after = first.train(state, 5)  # no step left in the account
    assert all((after[k] == state[k]).all() for k in state)
    assert gov.registry.counter(account_counter(DP_STEPS, "x")) == 9
    assert second.epsilon_spent == pytest.approx(rdp_epsilon(9), rel=1e-9)
    assert rdp_epsilon(9) < 6.0 < rdp_epsilon(10)


def test_default_account_reads_the_old_counters(gov):
    # A registry written before accounts existed: two DP steps at rate 1.
    registry = gov.registry
    registry.set_counter("dp_steps", 2)
    registry.set_counter("dp_rate", 1.0)
    registry.set_counter("epsilon", rdp_epsilon(2))
    trainer = gov.trainer(patch=PATCH)
    assert trainer.account == ""
    assert trainer.epsilon_spent == rdp_epsilon(2) == gov.epsilon_spent
    trainer.train(fresh(), 1)
    assert registry.counter("dp_steps") == 3
    assert registry.counter("epsilon") == pytest.approx(rdp_epsilon(3), rel=1e-9)
    assert gov.epsilon_spent == registry.counter(EPSILON)
    assert gov.status()["epsilon_spent"] == gov.epsilon_spent
    # Another account starts from nothing.
    assert epsilon_spent(registry, "local_only") == 0.0


@pytest.mark.parametrize(
    ("account", "name"),
    [("", "epsilon"), ("local_only", "epsilon:local_only"), ("robust-on.2", None)],
)
def test_account_counter_names(account, name):
    expected = name if name is not None else f"epsilon:{account}"
    assert account_counter(EPSILON, account) == expected


@pytest.mark.parametrize("account", ["a:b", "with space", "é", "a/b"])
def test_bad_account_is_named(gov, account):
    with pytest.raises(ValueError, match="account: expected letters, digits"):
        gov.trainer(patch=PATCH, account=account)
    with pytest.raises(ValueError, match=re.escape(repr(account))):
        GovernedTrainer(gov.registry, dp_policy(), ModelConfig.tiny(), account=account)


def test_dp_steps_in_threads_raise_no_warning(gov):
    # Two trainers stepping at once, as the simulator's decentralized site and
    # its local-only baseline do. Every warning is recorded, none filtered.
    trainers = [
        gov.trainer(patch=PATCH, account=name, seed=i)
        for i, name in enumerate(["decentralized", "local_only"])
    ]
    errors: list[BaseException] = []

    def train(trainer: GovernedTrainer) -> None:
        try:
            trainer.train(fresh(), 6)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=train, args=(t,)) for t in trainers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert [str(w.message) for w in log] == []
    for trainer in trainers:
        assert trainer.epsilon_spent == pytest.approx(rdp_epsilon(6), rel=1e-9)
