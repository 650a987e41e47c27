"""Differential privacy in scenarios: the [privacy] table, the sites' policy,
and a real run whose sites spend epsilon within their budget."""

import copy
import json
import tomllib
from typing import Any

import pytest
import tomli_w

from node.governance.policy import PrivacyRules, example_policy
from simulator.cli import main
from simulator.errors import ScenarioInvalid
from simulator.federation import simulation_policy
from simulator.scenario import load_scenario, parse_scenario, shipped_scenarios

BASE = tomllib.loads(
    """
name = "t"
seed = 5
[data]
phantom_shape = 64
consent_fraction = 1.0
[training]
model = "tiny"
rounds = 2
local_steps = 2
baselines = ["local_only"]
evaluate = false
[[sites]]
name = "a"
profile = "alpha"
n_train = 2
n_test = 1
founder = true
[[sites]]
name = "b"
profile = "bravo"
n_train = 2
n_test = 1
founder = true
[[sites]]
name = "c"
profile = "charlie"
n_train = 3
n_test = 0
"""
)

DP: dict[str, Any] = {
    "enabled": True,
    "noise_multiplier": 1.0,
    "max_grad_norm": 0.5,
    "epsilon_budget": 8.0,
    "delta": 1e-6,
}


def with_privacy(**fields: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["privacy"] = fields
    return data


def test_privacy_defaults_are_the_shipped_policys():
    rules = parse_scenario(BASE).privacy
    assert rules == example_policy().privacy
    assert rules.enabled is False


def test_privacy_table_is_read():
    rules = parse_scenario(with_privacy(**DP)).privacy
    assert rules == PrivacyRules(**DP)


def test_enabled_alone_keeps_the_other_defaults():
    rules = parse_scenario(with_privacy(enabled=True)).privacy
    shipped = example_policy().privacy
    assert rules.enabled is True
    assert rules.noise_multiplier == shipped.noise_multiplier
    assert rules.epsilon_budget == shipped.epsilon_budget
    assert rules.delta == shipped.delta


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"enabled": "yes"}, "privacy.enabled: expected true or false, got 'yes'"),
        (
            {"noise_multiplier": 0},
            "privacy.noise_multiplier: expected a number in 0.1..100.0, got 0.0",
        ),
        ({"max_grad_norm": "1"}, "privacy.max_grad_norm: expected a number, got '1'"),
        (
            {"epsilon_budget": -1.0},
            "privacy.epsilon_budget: expected a number in 0.01..1000.0",
        ),
        ({"delta": 0.5}, "privacy.delta: expected a number in 1e-12..0.1, got 0.5"),
        ({"epsilon": 3.0}, "privacy.epsilon: unknown field"),
    ],
)
def test_bad_privacy_field_is_named(fields, message):
    with pytest.raises(ScenarioInvalid) as info:
        parse_scenario(with_privacy(**fields))
    assert message in str(info.value)


def test_privacy_must_be_a_table():
    data = copy.deepcopy(BASE)
    data["privacy"] = True
    with pytest.raises(ScenarioInvalid, match="privacy: expected a table"):
        parse_scenario(data)


def test_simulation_policy_carries_privacy():
    rules = PrivacyRules(**DP)
    policy = simulation_policy(1e-3, 2, rules)
    assert policy.privacy == rules
    assert policy.training.lr == 1e-3 and policy.training.batch_size == 2
    # The raw form is what attestation measures: it must say DP runs.
    assert policy.raw["privacy"] == DP
    off = simulation_policy(1e-3, 2)
    assert off.privacy == example_policy().privacy
    assert policy.measured_digest() != off.measured_digest()


def test_shipped_dp_scenario():
    assert "dp" in shipped_scenarios()
    sc = load_scenario("dp")
    assert sc.privacy.enabled
    assert sc.privacy.epsilon_budget > 0


@pytest.mark.slow
@pytest.mark.parametrize("enabled", [True, False])
def test_run_spends_epsilon_within_budget(tmp_path, enabled):
    # A tiny model, two rounds of two steps. Batches of two over two or three
    # consented cases: with noise 1.0 the budget of 8 stops every regime after
    # two steps. The decentralized site and its local-only baseline train at
    # once in threads, each from its own account.
    data = with_privacy(**dict(DP, enabled=enabled))
    scenario = tmp_path / "dp-tiny.toml"
    scenario.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    assert main(["run", str(scenario), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())

    privacy = metrics["privacy"]
    assert privacy["enabled"] is enabled
    assert privacy["epsilon_budget"] == DP["epsilon_budget"]
    assert privacy["noise_multiplier"] == DP["noise_multiplier"]
    assert privacy["delta"] == DP["delta"]
    sites = metrics["sites"]
    spent = {n: s["epsilon_spent"] for n, s in sites.items()}
    assert set(spent) == {"a", "b", "c"}
    for name, site in sites.items():
        by_regime = site["epsilon_by_regime"]
        assert set(by_regime) == {"decentralized", "local_only"}, name
        assert by_regime["decentralized"] == spent[name], name
    page = (out / "report.html").read_text()
    assert "<h2>Differential privacy</h2>" in page
    if enabled:
        assert privacy["private_regimes"] == ["decentralized", "local_only"]
        for name, site in sites.items():
            # Each regime's own steps at the site's sampling rate (batch 2 over
            # its consented cases), counted by an accountant of our own: as
            # many as the budget allows, never another regime's.
            rate = min(1.0, 2 / site["n_train"])
            expected = budget_epsilon(rate, steps=2 * 2)
            assert 0 < expected <= DP["epsilon_budget"]
            for regime, epsilon in site["epsilon_by_regime"].items():
                assert epsilon == pytest.approx(expected, rel=1e-9), (name, regime)
        assert "epsilon spent" in page
    else:
        assert privacy["private_regimes"] == []
        assert spent == {"a": 0.0, "b": 0.0, "c": 0.0}
        for site in sites.values():
            assert set(site["epsilon_by_regime"].values()) == {0.0}
        assert "without DP-SGD" in page


def budget_epsilon(rate: float, steps: int) -> float:
    """The epsilon of up to ``steps`` DP steps at ``rate``, stopping before a
    step would exceed the budget (what a governed trainer does)."""
    from opacus.accountants import RDPAccountant

    spent = 0.0
    for taken in range(1, steps + 1):
        accountant = RDPAccountant()
        accountant.history = [(DP["noise_multiplier"], rate, taken)]
        epsilon = float(accountant.get_epsilon(DP["delta"]))
        if epsilon > DP["epsilon_budget"]:
            break
        spent = epsilon
    return spent
