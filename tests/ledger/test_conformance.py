"""The Ledger conformance suite: every test runs on the embedded and rpc backends."""

from __future__ import annotations

import hashlib
import threading

import pytest

from ledger import EventKind, OfferKind, account_address, new_account_key
from ledger.commitments import commit, new_salt
from ledger.errors import LedgerConfigError, MalformedDigest, TransactionReverted

from .conftest import DID_A, DID_B, DID_C


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_founders_are_members_with_roles(fed):
    members = fed.a.members()
    assert [m.did for m in members] == [DID_A, DID_B, DID_C]
    assert members[0].account == fed.a.account
    assert members[0].roles == ("site",)
    assert fed.a.threshold == 2
    assert fed.b.is_member(DID_C) and not fed.b.is_member("did:key:z6MkNobody")
    admitted = fed.a.events(EventKind.MEMBER_ADMITTED)
    assert [e.data["did"] for e in admitted] == [DID_A, DID_B, DID_C]
    assert {e.member for e in admitted} == {DID_A}  # the deployer wrote them


def test_admission_takes_k_votes_and_a_second_vote_is_refused(fed):
    key = new_account_key()
    pid = fed.a.propose_member("did:key:z6MkNew", account_address(key), ["site"])
    assert not fed.a.is_member("did:key:z6MkNew")
    with pytest.raises(TransactionReverted) as info:
        fed.a.vote(pid)
    assert info.value.reason == "already voted"
    fed.b.vote(pid)
    assert fed.a.is_member("did:key:z6MkNew")
    proposal = fed.a.proposal(pid)
    assert proposal is not None and proposal.executed and proposal.votes == 2
    assert fed.a.proposal(pid + 1) is None
    votes = fed.c.events(EventKind.MEMBER_VOTED)
    assert [(e.member, e.data["votes"]) for e in votes] == [(DID_A, 1), (DID_B, 2)]
    # the new member writes under its own DID
    new = fed.open(key)
    try:
        new.publish_status_list("did:key:z6MkIssuer", digest("list"))
        assert (
            fed.a.events(EventKind.STATUS_LIST_PUBLISHED)[0].member == "did:key:z6MkNew"
        )
    finally:
        new.close()


def test_removal_takes_k_votes_and_stops_writes(fed):
    pid = fed.a.propose_removal(DID_C)
    fed.b.vote(pid)
    assert not fed.a.is_member(DID_C)
    removed = fed.a.member(DID_C)
    assert removed is not None and removed.removed
    assert [m.did for m in fed.a.members()] == [DID_A, DID_B]
    assert len(fed.a.members(include_removed=True)) == 3
    with pytest.raises(TransactionReverted, match="not a member"):
        fed.c.register_consent(digest("x"), 1, 0)
    # k=2 and two members left: a further removal would lock the federation
    with pytest.raises(TransactionReverted, match="threshold"):
        fed.a.propose_removal(DID_B)


def test_non_member_write_reverts_with_reason(fed):
    outsider = fed.open(new_account_key())
    try:
        with pytest.raises(TransactionReverted) as info:
            outsider.record_attestation(DID_A, digest("m"), digest("e"), True)
        assert info.value.reason == "not a member"
        assert "not a member" in str(info.value)
    finally:
        outsider.close()


def test_consent_lifecycle_and_queries(fed):
    c1 = commit(new_salt(), "pseudo-1", 7)
    c2 = commit(new_salt(), "pseudo-2", 7)
    fed.a.register_consent(c1, 7, 0)
    fed.b.register_consent(c2, 7, 1)  # expired long ago
    assert fed.a.consent_active(c1)
    assert not fed.a.consent_active(c2)
    with pytest.raises(TransactionReverted, match="another member"):
        fed.b.withdraw_consent(c1)
    fed.a.withdraw_consent(c1)
    assert not fed.c.consent_active(c1)
    assert fed.c.count_events(EventKind.CONSENT_REGISTERED) == 2
    about_c1 = fed.c.events(commitment=c1)
    assert [e.kind for e in about_c1] == [
        EventKind.CONSENT_REGISTERED,
        EventKind.CONSENT_WITHDRAWN,
    ]
    assert about_c1[0].commitment == "0x" + c1.hex()
    assert about_c1[0].data["purpose"] == 7
    by_b = fed.c.events(member=DID_B, kind="consent_registered")
    assert [e.commitment for e in by_b] == ["0x" + c2.hex()]


def test_erasure_attestation_model_offer_status(fed):
    c = commit(new_salt(), "pseudo-3", 1)
    fed.a.register_consent(c, 1, 0)
    fed.a.request_erasure(c)
    assert not fed.a.consent_active(c)
    assert not fed.a.erasure_completed(c)
    fed.a.complete_erasure(c, digest("erasure record"))
    assert fed.b.erasure_completed(c)
    with pytest.raises(TransactionReverted, match="no pending erasure"):
        fed.a.complete_erasure(c, digest("again"))

    fed.b.record_attestation(DID_C, digest("measure"), digest("evidence"), False)
    (att,) = fed.a.events(EventKind.ATTESTATION)
    assert att.data["subjectDid"] == DID_C and att.data["verdict"] is False
    assert att.commitment == "0x" + digest("measure").hex()

    parents = [digest("p1"), digest("p2")]
    fed.c.record_model(4, digest("model"), parents, [DID_A, DID_B])
    (model,) = fed.a.events(EventKind.MODEL_RECORDED, member=DID_C)
    assert model.data["round"] == 4
    assert model.data["parents"] == ["0x" + p.hex() for p in parents]
    assert model.data["contributors"] == [DID_A, DID_B]

    offer = digest("offer-1")
    fed.a.publish_offer(offer, OfferKind.SERVICE, digest("meta"), "https://a.example/x")
    with pytest.raises(TransactionReverted, match="another member"):
        fed.b.withdraw_offer(offer)
    fed.a.withdraw_offer(offer)
    kinds = [e.kind for e in fed.b.events(commitment=offer)]
    assert kinds == [EventKind.OFFER_PUBLISHED, EventKind.OFFER_WITHDRAWN]

    assert fed.a.current_status_list_digest("did:key:z6MkIssuer") is None
    fed.a.publish_status_list("did:key:z6MkIssuer", digest("v1"))
    fed.b.publish_status_list("did:key:z6MkIssuer", digest("v2"))
    assert fed.c.current_status_list_digest("did:key:z6MkIssuer") == digest("v2")


def test_time_filters_offset_and_limit(fed):
    with fed.a.batch() as receipts:
        for i in range(4):
            fed.a.register_consent(digest(f"t{i}"), 2, 0)
    assert len(receipts) == 4
    events = fed.a.events(EventKind.CONSENT_REGISTERED)
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps)
    t0 = stamps[0]
    later = fed.a.events(EventKind.CONSENT_REGISTERED, since=stamps[-1])
    assert later and all(e.timestamp >= stamps[-1] for e in later)
    assert fed.a.events(EventKind.CONSENT_REGISTERED, until=t0) == []
    page = fed.a.events(EventKind.CONSENT_REGISTERED, offset=1, limit=2)
    assert page == events[1:3]
    assert fed.a.count_events(EventKind.CONSENT_REGISTERED, since=t0) == 4


def test_batch_sends_many_and_keeps_order(fed):
    commitments = [digest(f"b{i}") for i in range(5)]
    with fed.b.batch() as receipts:
        for c in commitments:
            assert fed.b.register_consent(c, 3, 0) is None
        pid = fed.b.propose_member(
            "did:key:z6MkLate", account_address(new_account_key()), []
        )
        assert pid is None
    assert len(receipts) == 6
    assert [r.events[0].commitment for r in receipts[:5]] == [
        "0x" + c.hex() for c in commitments
    ]
    assert fed.b.pending == 0
    assert all(fed.a.consent_active(c) for c in commitments)


def test_revert_inside_batch_is_one_error_and_the_rest_is_mined(fed):
    c = digest("dup")
    with pytest.raises(TransactionReverted) as info, fed.a.batch():
        fed.a.register_consent(c, 1, 0)
        fed.a.register_consent(c, 1, 0)  # reverts once mined
        fed.a.register_consent(digest("after"), 1, 0)
    assert info.value.reason == "consent already registered"
    assert fed.a.consent_active(c) and fed.a.consent_active(digest("after"))
    assert fed.a.pending == 0
    fed.a.register_consent(digest("next"), 1, 0)  # nonce recovered


@pytest.mark.parametrize(
    "bad",
    [b"short", b"x" * 33, "0x1234", "zz" * 32, 42],
    ids=["short-bytes", "long-bytes", "short-hex", "not-hex", "int"],
)
def test_malformed_commitment_refused_before_sending(fed, bad):
    before = fed.a.sync()
    with pytest.raises(MalformedDigest, match="commitment"):
        fed.a.register_consent(bad, 1, 0)
    with pytest.raises(MalformedDigest):
        fed.a.events(commitment=bad)
    assert fed.a.pending == 0
    assert fed.a.sync() == before  # no transaction reached the chain


def test_bad_arguments_are_named(fed):
    with pytest.raises(LedgerConfigError, match="account"):
        fed.a.propose_member("did:key:z6MkX", "not-an-address", [])
    with pytest.raises(LedgerConfigError, match="did"):
        fed.a.propose_member("no-did", account_address(new_account_key()), [])
    with pytest.raises(LedgerConfigError, match="kind"):
        fed.a.events("nonsense")
    reader = fed.open(None)
    try:
        with pytest.raises(LedgerConfigError, match="read-only"):
            reader.register_consent(digest("r"), 1, 0)
        assert reader.is_member(DID_A)
    finally:
        reader.close()


def test_index_resyncs_after_deletion_and_reopen(fed, tmp_path):
    fed.a.register_consent(digest("persist"), 5, 0)
    total = fed.a.count_events()
    if fed.backend == "embedded":
        for handle in (fed.a, fed.b, fed.c):
            handle.close()
        (fed.spec / "index.sqlite").unlink()
        fed.a = fed.open(fed.keys[DID_A])
        fed.b = fed.open(fed.keys[DID_B])
        fed.c = fed.open(fed.keys[DID_C])
    else:
        path = tmp_path / "fresh.sqlite"
        fresh = fed.open(None, index_path=path)
        assert fresh.count_events() == total
        fresh.close()
        path.unlink()
        fresh = fed.open(None, index_path=path)
        fed.a.close()
        fed.a = fresh
    assert fed.a.count_events() == total
    assert fed.a.sync() == fed.a.sync()  # idempotent
    assert fed.a.count_events() == total
    assert fed.a.consent_active(digest("persist"))


def test_one_handle_writes_and_reads_from_threads(fed):
    # Nonces are assigned and writes sent under the handle's lock, receipts
    # awaited outside it: writes from threads sharing one handle must each
    # get their own nonce. (That a read does not wait for another thread's
    # write to be mined is shown on anvil with manual mining, in
    # test_rpc_mining.py: the embedded chain mines inside the send.)
    errors: list[BaseException] = []
    expected = [digest(f"{tag}{i}") for tag in "xyz" for i in range(3)]

    def work(tag: str) -> None:
        try:
            for i in range(3):
                receipt = fed.a.register_consent(digest(f"{tag}{i}"), 1, 0)
                assert receipt is not None
                assert receipt.events[0].commitment == "0x" + digest(f"{tag}{i}").hex()
                assert fed.a.is_member(DID_B)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(tag,)) for tag in "xyz"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert fed.a.pending == 0
    got = [e.commitment for e in fed.b.events(EventKind.CONSENT_REGISTERED)]
    assert sorted(got) == sorted("0x" + c.hex() for c in expected)
    assert all(fed.c.consent_active(c) for c in expected)
