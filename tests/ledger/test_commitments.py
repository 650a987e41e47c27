"""Salted commitments: binding, hiding by salt, malformed input refused."""

from __future__ import annotations

import pytest

from ledger.commitments import commit, new_salt, parse_commitment, verify_commitment
from ledger.errors import MalformedDigest

SALT = bytes(range(32))


def test_commitment_is_32_bytes_deterministic_and_verifies():
    c = commit(SALT, "pseudo-17", 3)
    assert len(c) == 32 and c == commit(SALT, "pseudo-17", 3)
    assert verify_commitment(c, SALT, "pseudo-17", 3)
    assert verify_commitment("0x" + c.hex(), SALT, "pseudo-17", 3)


@pytest.mark.parametrize(
    ("salt", "pseudonym", "purpose"),
    [
        (bytes(32), "pseudo-17", 3),  # other salt
        (SALT, "pseudo-18", 3),  # other pseudonym
        (SALT, "pseudo-17", 4),  # other purpose
        (SALT[:31], "\x1fpseudo-17", 3),  # shifting bytes between fields
    ],
)
def test_any_other_input_gives_another_commitment(salt, pseudonym, purpose):
    assert not verify_commitment(commit(SALT, "pseudo-17", 3), salt, pseudonym, purpose)


def test_fresh_salts_unlink_the_same_pseudonym():
    # Why it matters: after the salt is erased, the commitment cannot be
    # recomputed from the pseudonym (crypto-shredding).
    salts = {new_salt() for _ in range(8)}
    assert len(salts) == 8 and all(len(s) == 32 for s in salts)
    assert len({commit(s, "pseudo-1", 1) for s in salts}) == 8


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x00" * 31, b"\x00" * 33, "0x" + "ab" * 31, "gg" * 32, 7, None],
)
def test_malformed_commitments_are_refused(bad):
    with pytest.raises(MalformedDigest, match="commitment"):
        parse_commitment(bad)


@pytest.mark.parametrize(
    ("salt", "pseudonym", "purpose", "field"),
    [
        (b"short", "p", 1, "salt"),
        (SALT, "", 1, "pseudonym"),
        (SALT, "p", -1, "purpose"),
        (SALT, "p", 70000, "purpose"),
    ],
)
def test_bad_commit_inputs_name_the_field_not_the_salt(salt, pseudonym, purpose, field):
    with pytest.raises(MalformedDigest, match=field) as info:
        commit(salt, pseudonym, purpose)
    assert salt.hex() not in str(info.value)


def test_hex_forms_parse_to_the_same_bytes():
    raw = bytes(range(32))
    assert parse_commitment(raw.hex()) == raw
    assert parse_commitment("0X" + raw.hex().upper()) == raw
