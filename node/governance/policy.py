"""A site's policy for one application, read from TOML and checked field by field.

The policy says who may do what at the site and with which peers: the
application's purpose code (the one its consent commitments carry on the
ledger), the credentials and ledger roles peers need, the role a staff member's
credential must carry for each action, the software measurements accepted from
peers, the merge rule, differential privacy, the minimum number of peers and
retention. Every field is documented in docs/policy.md.

A policy that fails a check is refused whole, with one line naming the first
wrong field and why (:class:`PolicyInvalid`): a site must never run on a policy
it half understood. Unknown fields are refused too, so a misspelt field is not
silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from node.governance.errors import PolicyInvalid

EXAMPLE_POLICY = "cardiac_ct_wall_thickness.toml"
"""The example policy shipped as package data (``node/governance/policies``)."""

MAX_PURPOSE = 0xFFFF  # purpose codes are uint16 on chain (ledger.commitments)


class StaffAction(StrEnum):
    """What staff may ask the site to do through the admin interface."""

    REGISTER_CONSENT = "register_consent"
    WITHDRAW_CONSENT = "withdraw_consent"
    ERASE = "erase"
    ANALYSE = "analyse"
    CHANGE_POLICY = "change_policy"


class MergeRule(StrEnum):
    """How the site merges a neighbour's model (node.daemon.RobustMode values)."""

    NONE = "none"
    CLIPPED = "clipped"
    TRIMMED = "trimmed"


@dataclass(frozen=True)
class PeerRules:
    """What a peer must show to exchange with this site.

    Attributes:
        credentials: credential types its presentation must include.
        roles: ledger member roles it must hold (any one of them).
        min_peers: admitted peers needed before the site trains or averages.
    """

    credentials: tuple[str, ...]
    roles: tuple[str, ...]
    min_peers: int


@dataclass(frozen=True)
class StaffRules:
    """Which staff credential authorizes which action.

    Attributes:
        credential_type: the credential type carrying ``credentialSubject.role``.
        trusted_issuers: DIDs whose staff credentials are accepted (the site's
            own DID is always trusted).
        roles: for each action, the roles allowed to ask for it.
    """

    credential_type: str
    trusted_issuers: tuple[str, ...]
    roles: Mapping[StaffAction, tuple[str, ...]]


@dataclass(frozen=True)
class AttestationRules:
    """Which peer software is accepted.

    Attributes:
        required: refuse peers without an accepted attestation on the ledger.
        accepted_measurements: SHA-256 software measurements (32 bytes each).
    """

    required: bool
    accepted_measurements: tuple[bytes, ...]


@dataclass(frozen=True)
class TrainingRules:
    """Local training and merging.

    Attributes:
        robust: merge rule for neighbours' models.
        tau: clipping radius for ``clipped`` (L2 over all parameters).
        trim: values trimmed at each end per coordinate for ``trimmed``.
        lr: Adam learning rate.
        batch_size: crops per step.
    """

    robust: MergeRule
    tau: float
    trim: int
    lr: float
    batch_size: int


@dataclass(frozen=True)
class PrivacyRules:
    """DP-SGD through opacus (Abadi et al. 2016, "Deep Learning with DP").

    Attributes:
        enabled: train with per-sample clipping and Gaussian noise.
        noise_multiplier: noise standard deviation over ``max_grad_norm``.
        max_grad_norm: per-sample gradient clipping bound (L2).
        epsilon_budget: the most epsilon the site may spend, in total.
        delta: the delta of (epsilon, delta)-DP, below 1 / number of scans.
    """

    enabled: bool
    noise_multiplier: float
    max_grad_norm: float
    epsilon_budget: float
    delta: float


@dataclass(frozen=True)
class RetentionRules:
    """How long consent and scans are kept.

    Attributes:
        consent_days: consent expiry registered on the ledger (0: none).
        scan_days: days after registration after which a scan is due for
            deletion and no longer trained on (0: kept until erased).
    """

    consent_days: int
    scan_days: int


@dataclass(frozen=True)
class Policy:
    """One application's policy (see docs/policy.md for every field).

    Attributes:
        name: the application, e.g. "cardiac CT wall thickness".
        purpose: purpose code of its consents on the ledger (0..65535).
        description: free text for staff.
        peers, staff, attestation, training, privacy, retention: the sections.
        raw: the parsed TOML, for hashing and re-serialising.
    """

    name: str
    purpose: int
    description: str
    peers: PeerRules
    staff: StaffRules
    attestation: AttestationRules
    training: TrainingRules
    privacy: PrivacyRules
    retention: RetentionRules
    raw: Mapping[str, Any]

    def roles_for(self, action: StaffAction | str) -> tuple[str, ...]:
        """The staff roles allowed to ask for ``action``."""
        return self.staff.roles[StaffAction(action)]

    def measured_digest(self) -> bytes:
        """SHA-256 of the policy as measured by attestation.

        The accepted measurements are left out: they are digests of the
        software *including* this policy, so hashing them would make every
        measurement change the measurement (a fixed point nobody can compute).
        """
        raw = {k: v for k, v in self.raw.items() if k != "attestation"}
        attestation = dict(self.raw.get("attestation", {}))
        attestation.pop("accepted_measurements", None)
        raw["attestation"] = attestation
        text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).digest()


# ----- reading --------------------------------------------------------------


def load_policy(path: Path | str) -> Policy:
    """Read and check a TOML policy file.

    Raises:
        PolicyInvalid: the file is not TOML, or a field is missing or wrong
            (the message names the file and the field).
        OSError: the file cannot be read.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return parse_policy(text, source=str(path))


def example_policy_text() -> str:
    """The shipped example policy's TOML text."""
    folder = resources.files("node.governance") / "policies"
    return (folder / EXAMPLE_POLICY).read_text(encoding="utf-8")


def example_policy() -> Policy:
    """The shipped example policy (cardiac CT wall thickness)."""
    return parse_policy(example_policy_text(), source=EXAMPLE_POLICY)


def parse_policy(text: str, source: str = "policy") -> Policy:
    """Check a policy's TOML text; see :func:`load_policy`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyInvalid("(file)", f"is not valid TOML: {exc}", source) from exc
    return policy_from_dict(raw, source)


def policy_from_dict(raw: Mapping[str, Any], source: str = "policy") -> Policy:
    """Check a parsed policy (a TOML table); see :func:`load_policy`."""
    r = _Reader(raw, source)
    r.only("", ["application", "peers", "staff", "attestation"], optional=_OPTIONAL)
    policy = Policy(
        name=r.text("application.name"),
        purpose=r.integer("application.purpose", 0, MAX_PURPOSE),
        description=r.text("application.description", default=""),
        peers=_peers(r),
        staff=_staff(r),
        attestation=_attestation(r),
        training=_training(r),
        privacy=_privacy(r),
        retention=_retention(r),
        raw=raw,
    )
    r.only("application", ["name", "purpose"], optional=("description",))
    return policy


_OPTIONAL = ("training", "privacy", "retention")


def _peers(r: _Reader) -> PeerRules:
    r.only("peers", ["credentials", "roles", "min_peers"])
    return PeerRules(
        credentials=r.names("peers.credentials", nonempty=True),
        roles=r.names("peers.roles", nonempty=True),
        min_peers=r.integer("peers.min_peers", 0, 10_000),
    )


def _staff(r: _Reader) -> StaffRules:
    r.only("staff", ["credential_type", "trusted_issuers", "roles"])
    r.only("staff.roles", [a.value for a in StaffAction])
    issuers = r.names("staff.trusted_issuers")
    for i, did in enumerate(issuers):
        if not did.startswith("did:"):
            raise PolicyInvalid(
                f"staff.trusted_issuers[{i}]", "must be a DID (did:...)", r.source
            )
    roles = {a: r.names(f"staff.roles.{a.value}", nonempty=True) for a in StaffAction}
    return StaffRules(r.text("staff.credential_type"), issuers, roles)


def _attestation(r: _Reader) -> AttestationRules:
    r.only("attestation", ["required", "accepted_measurements"])
    name = "attestation.accepted_measurements"
    digests = []
    for i, text in enumerate(r.names(name)):
        try:
            digest = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise PolicyInvalid(
                f"{name}[{i}]", "must be 64 hex digits (a SHA-256)", r.source
            )
        digests.append(digest)
    required = r.boolean("attestation.required")
    if required and not digests:
        raise PolicyInvalid(
            name, "must list at least one digest when required = true", r.source
        )
    return AttestationRules(required, tuple(digests))


def _training(r: _Reader) -> TrainingRules:
    r.only("training", [], optional=("robust", "tau", "trim", "lr", "batch_size"))
    robust = r.text("training.robust", default="none")
    if robust not in MergeRule._value2member_map_:
        choices = ", ".join(m.value for m in MergeRule)
        raise PolicyInvalid("training.robust", f"must be one of {choices}", r.source)
    return TrainingRules(
        robust=MergeRule(robust),
        tau=r.number("training.tau", default=1.0, positive=True),
        trim=r.integer("training.trim", 0, 100, default=1),
        lr=r.number("training.lr", default=2e-3, positive=True, at_most=1.0),
        batch_size=r.integer("training.batch_size", 1, 256, default=2),
    )


def _privacy(r: _Reader) -> PrivacyRules:
    fields = ["noise_multiplier", "max_grad_norm", "epsilon_budget", "delta"]
    r.only("privacy", [], optional=("enabled", *fields))
    rules = PrivacyRules(
        enabled=r.boolean("privacy.enabled", default=False),
        noise_multiplier=r.number(
            "privacy.noise_multiplier", default=1.0, positive=True
        ),
        max_grad_norm=r.number("privacy.max_grad_norm", default=1.0, positive=True),
        epsilon_budget=r.number("privacy.epsilon_budget", default=8.0, positive=True),
        delta=r.number("privacy.delta", default=1e-5, positive=True, below=1.0),
    )
    return rules


def _retention(r: _Reader) -> RetentionRules:
    r.only("retention", [], optional=("consent_days", "scan_days"))
    return RetentionRules(
        consent_days=r.integer("retention.consent_days", 0, 36_500, default=0),
        scan_days=r.integer("retention.scan_days", 0, 36_500, default=0),
    )


_MISSING = object()


class _Reader:
    """Typed access to dotted fields; every failure names the field."""

    def __init__(self, raw: Mapping[str, Any], source: str) -> None:
        self.raw = raw
        self.source = source

    def _get(self, name: str, default: Any = _MISSING) -> Any:
        node: Any = self.raw
        for part in name.split("."):
            if not isinstance(node, Mapping) or part not in node:
                if default is not _MISSING:
                    return default
                raise PolicyInvalid(name, "is missing", self.source)
            node = node[part]
        return node

    def only(
        self, table: str, required: list[str], optional: tuple[str, ...] = ()
    ) -> None:
        """Refuse a missing required key or an unknown key in ``table``."""
        value = self._get(table, {}) if table else self.raw
        prefix = f"{table}." if table else ""
        if not isinstance(value, Mapping):
            raise PolicyInvalid(table, "must be a table", self.source)
        for key in required:
            if key not in value:
                raise PolicyInvalid(prefix + key, "is missing", self.source)
        for key in value:
            if key not in required and key not in optional:
                raise PolicyInvalid(prefix + key, "is not a policy field", self.source)

    def text(self, name: str, default: Any = _MISSING) -> str:
        value = self._get(name, default)
        if not isinstance(value, str) or (not value.strip() and default is _MISSING):
            raise PolicyInvalid(name, "must be a non-empty string", self.source)
        return value

    def boolean(self, name: str, default: Any = _MISSING) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise PolicyInvalid(name, "must be true or false", self.source)
        return value

    def integer(self, name: str, low: int, high: int, default: Any = _MISSING) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyInvalid(name, "must be an integer", self.source)
        if not low <= value <= high:
            raise PolicyInvalid(
                name, f"must be between {low} and {high}, got {value}", self.source
            )
        return value

    def number(
        self,
        name: str,
        *,
        default: Any = _MISSING,
        positive: bool = False,
        below: float | None = None,
        at_most: float | None = None,
    ) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PolicyInvalid(name, "must be a number", self.source)
        number = float(value)
        if not math.isfinite(number):
            raise PolicyInvalid(name, "must be finite", self.source)
        if positive and number <= 0:
            raise PolicyInvalid(name, f"must be > 0, got {value}", self.source)
        if below is not None and number >= below:
            raise PolicyInvalid(name, f"must be < {below}, got {value}", self.source)
        if at_most is not None and number > at_most:
            raise PolicyInvalid(name, f"must be <= {at_most}, got {value}", self.source)
        return number

    def names(self, name: str, *, nonempty: bool = False) -> tuple[str, ...]:
        value = self._get(name)
        if not isinstance(value, list) or not all(
            isinstance(v, str) and v for v in value
        ):
            raise PolicyInvalid(
                name, "must be a list of non-empty strings", self.source
            )
        if nonempty and not value:
            raise PolicyInvalid(name, "must not be empty", self.source)
        return tuple(value)


def with_measurements(policy: Policy, measurements: Sequence[bytes]) -> Policy:
    """The same policy requiring attestation with ``measurements`` accepted.

    The measured digest of the result does not depend on the list, so a
    federation can measure once with any list and then publish the real one.
    """
    raw = dict(policy.raw)
    raw["attestation"] = {
        "required": True,
        "accepted_measurements": [m.hex() for m in measurements],
    }
    return policy_from_dict(raw, source="policy")
