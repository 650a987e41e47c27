"""Bitstring Status List v1.0: encoding, revocation, suspension, verification."""

import base64
import gzip

import pytest

from identity.credentials import verify_credential
from identity.errors import MalformedDocument, StatusListError
from identity.keys import SigningKey
from identity.status_list import (
    MIN_SIZE,
    StatusList,
    decode_encoded_list,
    status_list_digest,
)

from .conftest import LIST_ID, NOW, clinician_credential


@pytest.mark.parametrize(
    ("index", "byte", "mask"),
    [(0, 0, 0x80), (7, 0, 0x01), (8, 1, 0x80), (MIN_SIZE - 1, MIN_SIZE // 8 - 1, 0x01)],
)
def test_bit_order_is_left_most_first(status_list, index, byte, mask):
    status_list.revoke(index)
    raw = gzip.decompress(
        base64.urlsafe_b64decode(status_list.encoded_list()[1:] + "==")
    )
    assert len(raw) == MIN_SIZE // 8
    assert raw[byte] == mask and sum(raw) == mask
    assert status_list.is_set(index)


def test_encoding_round_trips_and_is_reproducible(issuer, status_list):
    for index in (3, 1000, 99_999):
        status_list.revoke(index)
    vc = status_list.to_credential(issuer, valid_from=NOW)
    decoded = StatusList.from_credential(vc)
    assert [decoded.is_set(i) for i in (2, 3, 1000, 99_999)] == [
        False,
        True,
        True,
        True,
    ]
    assert status_list.encoded_list() == decoded.encoded_list()
    assert len(status_list_digest(vc)) == 32


def test_allocate_is_random_and_unique(status_list):
    indexes = [status_list.allocate() for _ in range(200)]
    assert len(set(indexes)) == 200
    assert indexes != sorted(indexes)
    state = StatusList.from_state(status_list.to_state())
    assert not set(indexes) & {state.allocate() for _ in range(200)}


@pytest.mark.parametrize(
    ("size", "list_id"),
    [(MIN_SIZE - 8, LIST_ID), (MIN_SIZE + 1, LIST_ID), (MIN_SIZE, "x")],
)
def test_create_refuses_small_or_odd_lists(issuer, size, list_id):
    with pytest.raises(StatusListError):
        StatusList.create(issuer, list_id, size=size)


@pytest.mark.parametrize("index", [-1, MIN_SIZE, "3"])
def test_index_out_of_range(status_list, index):
    with pytest.raises(StatusListError, match="outside"):
        status_list.revoke(index)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "zabc",
        "u!!!",
        "u" + base64.urlsafe_b64encode(gzip.compress(b"\0" * 10)).decode(),
    ],
)
def test_bad_encoded_list(value):
    with pytest.raises(MalformedDocument):
        decode_encoded_list(value)


def test_revoked_credential_fails_and_others_pass(issuer, holder, status_list):
    index = status_list.allocate()
    other = status_list.allocate()
    vc = clinician_credential(issuer, holder, status=status_list.entry(index))
    vc_other = clinician_credential(issuer, holder, status=status_list.entry(other))
    assert verify_credential(
        vc, status_lists=[status_list.to_credential(issuer, valid_from=NOW)], now=NOW
    ).verified
    status_list.revoke(index)
    published = status_list.to_credential(issuer, valid_from=NOW)
    errors = verify_credential(vc, status_lists=[published], now=NOW).errors
    assert errors == [f"revoked: {LIST_ID} index {index}"]
    assert verify_credential(vc_other, status_lists=[published], now=NOW).verified


def test_suspension_can_be_lifted(issuer, holder):
    suspensions = StatusList.create(issuer, LIST_ID + "s", "suspension")
    index = suspensions.allocate()
    vc = clinician_credential(issuer, holder, status=suspensions.entry(index))
    suspensions.suspend(index)
    errors = verify_credential(
        vc, status_lists=[suspensions.to_credential(issuer, valid_from=NOW)], now=NOW
    ).errors
    assert [e.split(":")[0] for e in errors] == ["suspended"]
    suspensions.reinstate(index)
    assert verify_credential(
        vc, status_lists=[suspensions.to_credential(issuer, valid_from=NOW)], now=NOW
    ).verified


def test_revocation_cannot_be_undone(status_list):
    with pytest.raises(StatusListError, match="cannot be undone"):
        status_list.reinstate(1)


def test_status_list_checks(issuer, holder, status_list):
    index = status_list.allocate()
    vc = clinician_credential(issuer, holder, status=status_list.entry(index))
    # Missing list.
    assert (
        verify_credential(vc, now=NOW)
        .errors[0]
        .startswith("status: status list credential")
    )
    # A forged list: tampered after signing.
    forged = status_list.to_credential(issuer, valid_from=NOW)
    flipped = StatusList.create(issuer, LIST_ID)
    flipped.revoke(index + 1 if index + 1 < MIN_SIZE else 0)
    forged["credentialSubject"]["encodedList"] = flipped.encoded_list()
    errors = verify_credential(vc, status_lists=[forged], now=NOW).errors
    assert errors and errors[0].startswith(f"status: status list {LIST_ID}: signature")
    # A list signed by someone else, claiming the same id.
    mallory = SigningKey.from_seed(bytes(range(5, 37)))
    foreign = StatusList.create(mallory, LIST_ID).to_credential(mallory, valid_from=NOW)
    errors = verify_credential(vc, status_lists=[foreign], now=NOW).errors
    assert any(
        "controller mismatch: the status list has another issuer" in e for e in errors
    )
