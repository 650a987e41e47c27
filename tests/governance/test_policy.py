"""Policies: the example is valid; each wrong field is named in one line."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from typing import Any

import pytest
import tomli_w

from node.cli import main
from node.governance.errors import PolicyInvalid
from node.governance.policy import (
    MergeRule,
    StaffAction,
    example_policy,
    example_policy_text,
    load_policy,
    parse_policy,
)


def raw() -> dict[str, Any]:
    return tomllib.loads(example_policy_text())


def test_example_policy_reads():
    policy = example_policy()
    assert policy.name == "cardiac CT wall thickness"
    assert policy.purpose == 1
    assert policy.roles_for(StaffAction.ERASE) == ("dpo",)
    assert policy.training.robust is MergeRule.CLIPPED
    assert not policy.privacy.enabled
    assert policy.peers.credentials == ("MembershipCredential",)


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        *head, last = path.split(".")
        for part in head:
            d = d[part]
        if value is DELETE:
            del d[last]
        else:
            d[last] = value

    return change


DELETE = object()
GOOD_DIGEST = "ab" * 32

INVALID = [
    ("application.purpose", -1, "between 0 and 65535"),
    ("application.purpose", 70000, "between 0 and 65535"),
    ("application.purpose", "1", "must be an integer"),
    ("application.purpose", True, "must be an integer"),
    ("application.name", DELETE, "is missing"),
    ("application.name", "", "non-empty string"),
    ("application.colour", "red", "is not a policy field"),
    ("peers.credentials", [], "must not be empty"),
    ("peers.roles", "site", "list of non-empty strings"),
    ("peers.min_peers", -2, "between 0"),
    ("staff.credential_type", 3, "non-empty string"),
    ("staff.trusted_issuers", ["hospital-a"], "must be a DID"),
    ("staff.roles.erase", [], "must not be empty"),
    ("staff.roles.erase", DELETE, "is missing"),
    ("staff.roles.delete_everything", ["dpo"], "is not a policy field"),
    ("attestation.required", "yes", "true or false"),
    ("attestation.accepted_measurements", ["abc"], "64 hex digits"),
    ("training.robust", "median", "one of none, clipped, trimmed"),
    ("training.tau", 0, "must be > 0"),
    ("training.batch_size", 0, "between 1 and 256"),
    ("training.lr", 5.0, "<= 1.0"),
    ("privacy.enabled", 1, "true or false"),
    ("privacy.noise_multiplier", -1.0, "must be > 0"),
    ("privacy.max_grad_norm", 0.0, "must be > 0"),
    ("privacy.epsilon_budget", float("inf"), "must be finite"),
    ("privacy.delta", 1.5, "must be < 1.0"),
    ("privacy.delta", 0, "must be > 0"),
    ("retention.scan_days", -1, "between 0"),
    ("retention.keep_forever", True, "is not a policy field"),
]


@pytest.mark.parametrize(
    ("field", "value", "reason"), INVALID, ids=[f"{f}={v!r}" for f, v, _ in INVALID]
)
def test_invalid_field_is_named(field, value, reason):
    data = raw()
    _set(field, value)(data)
    text = tomli_w.dumps(data)
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(text, source="p.toml")
    assert info.value.field.startswith(field.rsplit("[", 1)[0])
    message = str(info.value)
    assert f"'{field}" in message and reason in message
    assert "\n" not in message


def test_required_attestation_needs_measurements():
    data = raw()
    data["attestation"]["required"] = True
    with pytest.raises(PolicyInvalid, match=r"attestation\.accepted_measurements"):
        parse_policy(tomli_w.dumps(data))
    data["attestation"]["accepted_measurements"] = [GOOD_DIGEST]
    assert parse_policy(tomli_w.dumps(data)).attestation.accepted_measurements == (
        bytes.fromhex(GOOD_DIGEST),
    )


def test_missing_sections_and_bad_toml():
    data = raw()
    del data["staff"]
    with pytest.raises(PolicyInvalid, match="field 'staff' is missing"):
        parse_policy(tomli_w.dumps(data))
    with pytest.raises(PolicyInvalid, match="not valid TOML"):
        parse_policy("[application\nname=")
    # optional sections take their defaults
    data = raw()
    for section in ("training", "privacy", "retention"):
        del data[section]
    policy = parse_policy(tomli_w.dumps(data))
    assert policy.training.robust is MergeRule.NONE
    assert policy.privacy.delta == 1e-5


def test_measured_digest_ignores_accepted_list_only():
    data = raw()
    base = parse_policy(tomli_w.dumps(data)).measured_digest()
    other = copy.deepcopy(data)
    other["attestation"]["accepted_measurements"] = [GOOD_DIGEST]
    assert parse_policy(tomli_w.dumps(other)).measured_digest() == base
    other["staff"]["roles"]["erase"] = ["dpo", "clinician"]
    assert parse_policy(tomli_w.dumps(other)).measured_digest() != base


def test_policy_check_command(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text(example_policy_text())
    assert main(["policy", "check", str(good)]) == 0
    assert '"valid": true' in capsys.readouterr().out
    data = raw()
    data["privacy"]["delta"] = 2.0
    bad = tmp_path / "bad.toml"
    bad.write_text(tomli_w.dumps(data))
    assert main(["policy", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "privacy.delta" in err and "bad.toml" in err
    assert load_policy(good).name == "cardiac CT wall thickness"
