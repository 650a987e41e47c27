"""Scenarios: what a simulated federation looks like, read from TOML and checked.

A scenario names the sites (scanner profile, training and test sizes, which
ones found the federation), the mesh (topology, robust merging), the training
budget (rounds, local steps, gossip exchanges per round), the baselines trained
on the same budget, differential privacy (DP-SGD at every site), the governance
events (consent withdrawn, a patient
erased) and the faults to inject (crash and restart, partition and heal,
Byzantine site, credential revoked, late joiner). ``docs/simulator.md`` lists
every field; the shipped scenarios live in ``simulator/scenarios/``.

Every field is checked when the file is read, and a bad one raises
:class:`ScenarioInvalid` naming it (``sites[2].profile: expected one of ...``),
so a run never fails halfway through on a typo.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from ml.phantom import SCANNER_PROFILES
from node.governance.policy import PrivacyRules, example_policy
from simulator.errors import ScenarioInvalid, ScenarioNotFound

T = TypeVar("T")

POLICY_PRIVACY = example_policy().privacy
"""The shipped policy's ``[privacy]``: a scenario's defaults (DP off)."""


class Topology(StrEnum):
    """Who is connected to whom in the mesh."""

    RING = "ring"
    RANDOM_REGULAR = "random-regular"
    FULL = "full"


class Robust(StrEnum):
    """How sites merge a neighbour's model (``node.daemon.RobustMode`` values)."""

    NONE = "none"
    CLIPPED = "clipped"
    TRIMMED = "trimmed"


class Baseline(StrEnum):
    """Reference training regimes run on the same step budget."""

    LOCAL_ONLY = "local_only"
    POOLED = "pooled"


class FaultKind(StrEnum):
    """The faults a scenario can inject."""

    CRASH = "crash"
    PARTITION = "partition"
    BYZANTINE = "byzantine"
    REVOKE = "revoke"
    LATE_JOIN = "late_join"


class Attack(StrEnum):
    """What a Byzantine site sends instead of its trained weights."""

    SCALED = "scaled"  # its weights times ``scale`` (e.g. -4: flipped, amplified)
    RANDOM = "random"  # Gaussian noise of standard deviation ``scale``


class ModelSize(StrEnum):
    """Which :class:`ml.model.ModelConfig` to train."""

    DEFAULT = "default"  # about 0.28 M parameters
    TINY = "tiny"  # about 8 k parameters, for scale runs


@dataclass(frozen=True)
class SiteSpec:
    """One hospital.

    Attributes:
        name: short name, unique, letters, digits and ``-`` only.
        profile: scanner profile (:data:`ml.phantom.SCANNER_PROFILES`).
        n_train: patients in its training cohort.
        n_test: held-out scans it segments and measures at the end.
        founder: founders deploy the ledger; the others are admitted by vote.
    """

    name: str
    profile: str
    n_train: int
    n_test: int
    founder: bool = False


@dataclass(frozen=True)
class Fault:
    """One injected fault.

    Attributes:
        kind: which fault.
        round: round (1-based) at whose start the fault begins.
        site: the site it concerns (all but partitions).
        until: round at whose start it ends (crash: restart; partition: heal);
            0 for faults that do not end.
        groups: partition only: the sides of the cut, by site name.
        attack: Byzantine only: what the site sends.
        scale: Byzantine only: factor (scaled) or noise level (random).
    """

    kind: FaultKind
    round: int
    site: str = ""
    until: int = 0
    groups: tuple[tuple[str, ...], ...] = ()
    attack: Attack = Attack.SCALED
    scale: float = -4.0


@dataclass(frozen=True)
class Scenario:
    """A whole simulated federation (see the module docstring and the docs)."""

    name: str
    description: str
    seed: int
    sites: tuple[SiteSpec, ...]
    # data
    phantom_shape: int = 96
    consent_fraction: float = 0.9
    # training
    model: ModelSize = ModelSize.DEFAULT
    rounds: int = 8
    local_steps: int = 25
    gossip_steps: int = 1
    batch_size: int = 2
    lr: float = 2e-3
    baselines: tuple[Baseline, ...] = (Baseline.LOCAL_ONLY, Baseline.POOLED)
    monitor_every: int = 1
    evaluate: bool = True
    same_init: bool = True
    # network
    topology: Topology = Topology.RING
    degree: int = 2
    robust: Robust = Robust.NONE
    tau: float = 1.0
    trim: int = 1
    fp16: bool = False
    compare_robust: bool = False
    # privacy: every site's policy [privacy] (DP-SGD in its governed trainer)
    privacy: PrivacyRules = POLICY_PRIVACY
    # governance
    threshold: int = 2
    withdraw_round: int = 0
    erase_round: int = 0
    faults: tuple[Fault, ...] = field(default=())

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    def site(self, name: str) -> SiteSpec:
        return next(s for s in self.sites if s.name == name)

    def faults_of(self, kind: FaultKind) -> list[Fault]:
        return [f for f in self.faults if f.kind is kind]

    @property
    def late_joiners(self) -> set[str]:
        return {f.site for f in self.faults_of(FaultKind.LATE_JOIN)}


# ----- reading fields ------------------------------------------------------------


_KIND_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
}


class _Table:
    """A TOML table whose reads name the field on error and track unknown keys."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = data
        self.where = where  # "" at the top level, else "training." or "sites[1]."
        self.used: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.where}{key}"

    def fail(self, key: str, expected: str, got: object = None) -> ScenarioInvalid:
        shown = "" if got is None else f", got {got!r}"
        return ScenarioInvalid(f"{self._name(key)}: expected {expected}{shown}")

    def get(self, key: str, kind: type[T], default: T | None = None) -> T:
        self.used.add(key)
        if key not in self.data:
            if default is None:
                raise ScenarioInvalid(f"{self._name(key)}: required field is missing")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, _KIND_NAMES.get(kind, kind.__name__), value)
        return value

    def integer(self, key: str, default: int | None, low: int, high: int) -> int:
        value = self.get(key, int, default)
        if not low <= value <= high:
            raise self.fail(key, f"an integer in {low}..{high}", value)
        return value

    def number(self, key: str, default: float | None, low: float, high: float) -> float:
        value = self.get(key, float, default)
        if not low <= value <= high:
            raise self.fail(key, f"a number in {low}..{high}", value)
        return value

    def choice(self, key: str, enum: type[T], default: T | None = None) -> T:
        raw = self.get(key, str, None if default is None else str(default))
        try:
            return enum(raw)  # type: ignore[call-arg]
        except ValueError:
            options = ", ".join(str(e) for e in enum)  # type: ignore[attr-defined]
            raise self.fail(key, f"one of {options}", raw) from None

    def table(self, key: str) -> _Table:
        self.used.add(key)
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "a table", value)
        return _Table(value, f"{self.where}{key}.")

    def tables(self, key: str) -> list[_Table]:
        self.used.add(key)
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, "an array of tables ([[" + key + "]])", None)
        return [_Table(v, f"{self.where}{key}[{i}].") for i, v in enumerate(value)]

    def strings(self, key: str, default: Sequence[str]) -> list[str]:
        self.used.add(key)
        value = self.data.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "an array of strings", value)
        return list(value)

    def check_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ScenarioInvalid(
                f"{self._name(unknown[0])}: unknown field (check the spelling; "
                "docs/simulator.md lists the fields)"
            )


def _site(t: _Table) -> SiteSpec:
    name = t.get("name", str)
    if not name or not all(c.isalnum() or c == "-" for c in name):
        raise t.fail("name", "letters, digits and '-' only", name)
    profile = t.get("profile", str)
    if profile not in SCANNER_PROFILES:
        raise t.fail("profile", f"one of {', '.join(SCANNER_PROFILES)}", profile)
    spec = SiteSpec(
        name=name,
        profile=profile,
        n_train=t.integer("n_train", None, 2, 500),
        n_test=t.integer("n_test", 1, 0, 100),
        founder=t.get("founder", bool, False),
    )
    t.check_unknown()
    return spec


def _fault(t: _Table, names: set[str], rounds: int) -> Fault:
    kind = t.choice("kind", FaultKind)
    start = t.integer("round", None, 1, rounds)

    def site() -> str:
        value = t.get("site", str)
        if value not in names:
            raise t.fail(
                "site", f"one of the sites ({', '.join(sorted(names))})", value
            )
        return value

    def until() -> int:
        value = t.integer("until", None, 1, rounds + 1)
        if value <= start:
            raise t.fail("until", f"a round after round {start}", value)
        return value

    if kind is FaultKind.CRASH:
        fault = Fault(kind, start, site=site(), until=until())
    elif kind is FaultKind.PARTITION:
        groups = [_names(t, "groups", i, g, names) for i, g in enumerate(_raw(t))]
        seen = [n for g in groups for n in g]
        if len(groups) < 2 or len(seen) != len(set(seen)):
            raise t.fail("groups", "two or more disjoint groups of site names")
        fault = Fault(kind, start, until=until(), groups=tuple(groups))
    elif kind is FaultKind.BYZANTINE:
        fault = Fault(
            kind,
            start,
            site=site(),
            attack=t.choice("attack", Attack, Attack.SCALED),
            scale=t.number("scale", -4.0, -1e3, 1e3),
        )
    else:
        fault = Fault(kind, start, site=site())
    t.check_unknown()
    return fault


def _raw(t: _Table) -> list[Any]:
    t.used.add("groups")
    value = t.data.get("groups")
    if not isinstance(value, list):
        raise t.fail("groups", "an array of arrays of site names", value)
    return value


def _names(
    t: _Table, key: str, i: int, value: object, names: set[str]
) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise t.fail(f"{key}[{i}]", "a non-empty array of site names", value)
    for name in value:
        if name not in names:
            raise t.fail(
                f"{key}[{i}]", f"site names ({', '.join(sorted(names))})", name
            )
    return tuple(str(n) for n in value)


def _privacy(t: _Table) -> PrivacyRules:
    # The ranges are narrower than the policy's (positive; delta below 1):
    # outside them opacus' accountant returns an epsilon of no use (noise
    # near zero) or the run trains on noise alone.
    d = POLICY_PRIVACY
    rules = PrivacyRules(
        enabled=t.get("enabled", bool, d.enabled),
        noise_multiplier=t.number("noise_multiplier", d.noise_multiplier, 0.1, 100.0),
        max_grad_norm=t.number("max_grad_norm", d.max_grad_norm, 1e-3, 1e3),
        epsilon_budget=t.number("epsilon_budget", d.epsilon_budget, 0.01, 1e3),
        delta=t.number("delta", d.delta, 1e-12, 0.1),
    )
    t.check_unknown()
    return rules


def parse_scenario(data: Mapping[str, Any], default_name: str = "scenario") -> Scenario:
    """Check a scenario's TOML document and build the :class:`Scenario`.

    Raises:
        ScenarioInvalid: naming the first bad field.
    """
    top = _Table(data, "")
    name = top.get("name", str, default_name)
    description = top.get("description", str, "")
    seed = top.integer("seed", 0, 0, 2**32 - 1)
    sites = tuple(_site(t) for t in top.tables("sites"))
    if len(sites) < 2:
        raise ScenarioInvalid("sites: expected at least two [[sites]] tables")
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise ScenarioInvalid("sites: expected unique site names")

    data_t = top.table("data")
    phantom_shape = data_t.integer("phantom_shape", 96, 64, 160)
    consent_fraction = data_t.number("consent_fraction", 0.9, 0.1, 1.0)
    data_t.check_unknown()

    tr = top.table("training")
    rounds = tr.integer("rounds", 8, 1, 1000)
    baselines = []
    for raw in tr.strings("baselines", ["local_only", "pooled"]):
        try:
            baselines.append(Baseline(raw))
        except ValueError:
            raise tr.fail("baselines", "local_only and/or pooled", raw) from None
    training: dict[str, Any] = {
        "model": tr.choice("model", ModelSize, ModelSize.DEFAULT),
        "rounds": rounds,
        "local_steps": tr.integer("local_steps", 25, 0, 10_000),
        "gossip_steps": tr.integer("gossip_steps", 1, 0, 100),
        "batch_size": tr.integer("batch_size", 2, 1, 64),
        "lr": tr.number("lr", 2e-3, 1e-6, 1.0),
        "baselines": tuple(dict.fromkeys(baselines)),
        "monitor_every": tr.integer("monitor_every", 1, 0, 1000),
        "evaluate": tr.get("evaluate", bool, True),
        "same_init": tr.get("same_init", bool, True),
    }
    tr.check_unknown()

    net = top.table("network")
    topology = net.choice("topology", Topology, Topology.RING)
    degree = net.integer("degree", 2, 1, len(sites) - 1)
    if topology is Topology.RANDOM_REGULAR and (degree * len(sites)) % 2:
        raise net.fail("degree", "an even degree when the site count is odd", degree)
    network: dict[str, Any] = {
        "topology": topology,
        "degree": degree,
        "robust": net.choice("robust", Robust, Robust.NONE),
        "tau": net.number("tau", 1.0, 1e-6, 1e6),
        "trim": net.integer("trim", 1, 0, 16),
        "fp16": net.get("fp16", bool, False),
        "compare_robust": net.get("compare_robust", bool, False),
    }
    net.check_unknown()

    privacy = _privacy(top.table("privacy"))

    gov = top.table("governance")
    founders = sum(s.founder for s in sites)
    if founders == 0:
        raise ScenarioInvalid("sites: expected at least one site with founder = true")
    governance: dict[str, Any] = {
        "threshold": gov.integer("threshold", min(2, founders), 1, founders),
        "withdraw_round": gov.integer("withdraw_round", 0, 0, rounds),
        "erase_round": gov.integer("erase_round", 0, 0, rounds),
    }
    gov.check_unknown()

    faults = tuple(_fault(t, set(names), rounds) for t in top.tables("faults"))
    for i, fault in enumerate(faults):
        if fault.kind is FaultKind.LATE_JOIN and sites[names.index(fault.site)].founder:
            raise ScenarioInvalid(f"faults[{i}].site: a founder cannot join late")
    top.check_unknown()
    return Scenario(
        name=name,
        description=description,
        seed=seed,
        sites=sites,
        phantom_shape=phantom_shape,
        consent_fraction=consent_fraction,
        faults=faults,
        privacy=privacy,
        **training,
        **network,
        **governance,
    )


SHIPPED_PACKAGE = "simulator.scenarios"


def shipped_scenarios() -> dict[str, str]:
    """Name -> one-line description of each scenario shipped with the package."""
    out: dict[str, str] = {}
    folder = importlib.resources.files("simulator").joinpath("scenarios")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            scenario = parse_scenario(tomllib.loads(entry.read_text()), entry.name)
            out[entry.name.removesuffix(".toml")] = scenario.description
    return out


def load_scenario(spec: str | Path) -> Scenario:
    """Read a scenario from a TOML file, or a shipped one by name (``quick``).

    Raises:
        ScenarioNotFound: neither a file nor a shipped name.
        ScenarioInvalid: bad TOML or a bad field (the message names the file).
    """
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ScenarioNotFound(f"scenario {spec}: no such file")
        text, label, stem = path.read_text(encoding="utf-8"), str(path), path.stem
    else:
        entry = importlib.resources.files("simulator").joinpath(
            "scenarios", f"{spec}.toml"
        )
        if not entry.is_file():
            names = ", ".join(shipped_scenarios())
            raise ScenarioNotFound(
                f"scenario {spec!r}: not a .toml file nor a shipped scenario ({names})"
            )
        text, label, stem = entry.read_text(encoding="utf-8"), f"{spec}.toml", str(spec)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioInvalid(f"scenario {label}: not valid TOML ({exc})") from exc
    try:
        return parse_scenario(data, stem)
    except ScenarioInvalid as exc:
        raise ScenarioInvalid(f"scenario {label}: {exc}") from exc
