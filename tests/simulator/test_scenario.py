"""Scenario files: every shipped one parses; each bad field is named."""

import copy
import tomllib
from typing import Any

import pytest

from simulator.cli import main
from simulator.errors import ScenarioInvalid, ScenarioNotFound
from simulator.scenario import (
    Attack,
    FaultKind,
    Robust,
    Topology,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)

BASE = tomllib.loads(
    """
name = "t"
seed = 3
[training]
rounds = 4
[[sites]]
name = "a"
profile = "alpha"
n_train = 4
founder = true
[[sites]]
name = "b"
profile = "bravo"
n_train = 3
founder = true
[[sites]]
name = "c"
profile = "charlie"
n_train = 2
"""
)


def edited(path: tuple[Any, ...], value: object) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    *parents, last = path
    node: Any = data
    for key in parents:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


DELETE = object()


def test_base_parses_with_defaults():
    sc = parse_scenario(BASE)
    assert sc.site_names == ["a", "b", "c"]
    assert sc.rounds == 4 and sc.local_steps == 25
    assert sc.topology is Topology.RING and sc.robust is Robust.NONE
    assert sc.threshold == 2 and sc.faults == ()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("sites", 0, "profile"), "echo", "sites[0].profile: expected one of alpha"),
        (("sites", 1, "n_train"), 1, "sites[1].n_train: expected an integer in 2..500"),
        (
            ("sites", 1, "n_train"),
            "3",
            "sites[1].n_train: expected an integer, got '3'",
        ),
        (("sites", 2, "name"), "a b", "sites[2].name: expected letters, digits"),
        (("sites", 2, "name"), "a", "sites: expected unique site names"),
        (("sites", 0, "colour"), "red", "sites[0].colour: unknown field"),
        (("sites", 0, "name"), DELETE, "sites[0].name: required field is missing"),
        (("training", "rounds"), 0, "training.rounds: expected an integer in 1..1000"),
        (("training", "lr"), -1.0, "training.lr: expected a number"),
        (
            ("training", "model"),
            "huge",
            "training.model: expected one of default, tiny",
        ),
        (
            ("training", "baselines"),
            ["fedavg"],
            "training.baselines: expected local_only",
        ),
        (("training", "steps"), 3, "training.steps: unknown field"),
        (("network", "topology"), "star", "network.topology: expected one of ring"),
        (("network", "robust"), "median", "network.robust: expected one of none"),
        (("network", "degree"), 3, "network.degree: expected an integer in 1..2"),
        (
            ("governance", "threshold"),
            3,
            "governance.threshold: expected an integer in 1..2",
        ),
        (("governance", "erase_round"), 9, "governance.erase_round"),
        (
            ("data", "phantom_shape"),
            32,
            "data.phantom_shape: expected an integer in 64..160",
        ),
        (("data", "consent_fraction"), 0.0, "data.consent_fraction"),
        (("seed",), -1, "seed: expected an integer"),
        (("extra",), 1, "extra: unknown field"),
    ],
)
def test_bad_field_is_named(path, value, message):
    with pytest.raises(ScenarioInvalid, match=None) as info:
        parse_scenario(edited(path, value))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"kind": "meteor", "round": 1}, "faults[0].kind: expected one of crash"),
        ({"kind": "crash", "round": 2, "site": "z", "until": 3}, "faults[0].site"),
        ({"kind": "crash", "round": 3, "site": "a", "until": 2}, "faults[0].until"),
        ({"kind": "crash", "round": 9, "site": "a", "until": 10}, "faults[0].round"),
        ({"kind": "partition", "round": 1, "until": 2, "groups": [["a"]]}, "groups"),
        (
            {
                "kind": "partition",
                "round": 1,
                "until": 2,
                "groups": [["a"], ["a", "b"]],
            },
            "two or more disjoint groups",
        ),
        ({"kind": "byzantine", "round": 1, "site": "c", "attack": "x"}, "attack"),
        ({"kind": "late_join", "round": 2, "site": "a"}, "a founder cannot join late"),
        ({"kind": "revoke", "round": 2, "site": "c", "when": 1}, "faults[0].when"),
    ],
)
def test_bad_fault_is_named(fault, message):
    data = copy.deepcopy(BASE)
    data["faults"] = [fault]
    with pytest.raises(ScenarioInvalid) as info:
        parse_scenario(data)
    assert message in str(info.value)


def test_faults_parse():
    data = copy.deepcopy(BASE)
    data["faults"] = [
        {"kind": "crash", "round": 2, "site": "c", "until": 3},
        {"kind": "partition", "round": 1, "until": 3, "groups": [["a"], ["b", "c"]]},
        {"kind": "byzantine", "round": 1, "site": "c", "attack": "random", "scale": 2},
        {"kind": "revoke", "round": 4, "site": "b"},
        {"kind": "late_join", "round": 2, "site": "c"},
    ]
    sc = parse_scenario(data)
    assert [f.kind for f in sc.faults] == list(FaultKind)
    assert sc.faults[1].groups == (("a",), ("b", "c"))
    assert sc.faults[2].attack is Attack.RANDOM and sc.faults[2].scale == 2.0
    assert sc.late_joiners == {"c"}


def test_needs_a_founder_and_two_sites():
    data = copy.deepcopy(BASE)
    for site in data["sites"]:
        site["founder"] = False
    with pytest.raises(ScenarioInvalid, match="founder = true"):
        parse_scenario(data)
    data = copy.deepcopy(BASE)
    data["sites"] = data["sites"][:1]
    with pytest.raises(ScenarioInvalid, match="at least two"):
        parse_scenario(data)


def test_shipped_scenarios_parse():
    names = shipped_scenarios()
    assert {"default", "quick", "byzantine", "faults", "scale"} <= set(names)
    for name in names:
        sc = load_scenario(name)
        assert sc.name == name and sc.description
    assert len(load_scenario("scale").sites) >= 32
    byz = load_scenario("byzantine")
    assert len(byz.sites) == 8 and byz.compare_robust
    assert byz.faults_of(FaultKind.BYZANTINE)


def test_files_and_names(tmp_path):
    with pytest.raises(ScenarioNotFound, match=r"not a \.toml file nor a shipped"):
        load_scenario("no-such-scenario")
    with pytest.raises(ScenarioNotFound, match="no such file"):
        load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ScenarioInvalid, match=r"bad\.toml: not valid TOML"):
        load_scenario(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[[sites]]\nname = "a"\nprofile = "zzz"\nn_train = 2\n')
    with pytest.raises(ScenarioInvalid, match=r"wrong.toml: sites\[0\].profile"):
        load_scenario(wrong)


def test_cli_lists_and_refuses(capsys):
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    assert "default" in out and "quick" in out
    assert main(["run", "no-such-scenario"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: scenario 'no-such-scenario'") and err.count("\n") == 1
