"""The embedded backend's own guarantees: persistence by replay, folder checks."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from ledger import EventKind, account_address, deploy_federation, open_ledger
from ledger.errors import LedgerConfigError
from ledger.index import EventIndex

from .conftest import DID_A, DID_B, DID_C, Fed, _make_fed


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_reopen_replays_the_same_state_and_events(tmp_path):
    fed = _make_fed("embedded", tmp_path / "ledger", tmp_path)
    pid = fed.a.propose_member("did:key:z6MkD", account_address(b"\x07" * 32), [])
    assert pid is not None
    fed.b.vote(pid)
    fed.a.register_consent(digest("kept"), 4, 0)
    fed.b.publish_status_list("did:key:z6MkIssuer", digest("v1"))
    before = fed.a.events()
    for handle in (fed.a, fed.b, fed.c):
        handle.close()

    again = open_ledger(fed.spec, account_key=fed.keys[DID_C])
    try:
        assert again.events() == before  # same hashes, positions and timestamps
        assert [m.did for m in again.members()] == [
            DID_A,
            DID_B,
            DID_C,
            "did:key:z6MkD",
        ]
        assert again.consent_active(digest("kept"))
        assert again.current_status_list_digest("did:key:z6MkIssuer") == digest("v1")
        again.register_consent(digest("after reopen"), 4, 0)  # nonces continue
        assert again.count_events(EventKind.CONSENT_REGISTERED) == 2
    finally:
        again.close()


def test_folder_without_deployment_and_double_deploy_are_refused(tmp_path):
    with pytest.raises(LedgerConfigError, match="no federation deployment"):
        open_ledger(tmp_path / "empty")
    key = b"\x05" * 32
    founders = [(DID_A, account_address(key), ["site"])]
    with pytest.raises(LedgerConfigError, match="threshold"):
        deploy_federation(
            tmp_path / "l", deployer_key=key, founders=founders, threshold=2
        )
    deploy_federation(
        tmp_path / "l", deployer_key=key, founders=founders, threshold=1
    ).close()
    with pytest.raises(LedgerConfigError, match="already holds"):
        deploy_federation(
            tmp_path / "l", deployer_key=key, founders=founders, threshold=1
        )


def test_index_query_of_10k_events_under_100_ms(tmp_path):
    from ledger.api import Event

    index = EventIndex(tmp_path / "i.sqlite", chain_id=1, contract="0x" + "00" * 20)
    kinds = list(EventKind)
    index.add(
        (
            Event(
                kind=kinds[i % len(kinds)],
                block=i // 4,
                tx_hash="0x" + f"{i:064x}",
                log_index=i % 4,
                timestamp=1_700_000_000 + i,
                member=f"did:key:z6Mk{i % 5}",
                commitment="0x" + f"{i:064x}",
                data={"purpose": i % 7},
            )
            for i in range(50_000)
        ),
        height=12_500,
    )
    # CPU time, best of five: the machine (and CI's) is shared by parallel
    # jobs, whose load stretches wall time but not the work this query does.
    elapsed = float("inf")
    for _ in range(5):
        started = time.process_time()
        got = index.query(since=1_700_010_000, limit=10_000)
        elapsed = min(elapsed, time.process_time() - started)
    assert len(got) == 10_000 and got[0].timestamp == 1_700_010_000
    assert elapsed < 0.1, f"10k-event query took {elapsed * 1000:.0f} ms"
    assert index.count(EventKind.ATTESTATION, member="did:key:z6Mk0") > 0
    assert index.query(commitment="0x" + f"{123:064x}")[0].block == 30
    index.close()


def test_handles_of_one_folder_write_from_threads(tmp_path):
    # Sites of a simulation run their ledger calls in worker threads; the
    # handles share one embedded chain, which must serialise them.
    fed = _make_fed("embedded", tmp_path / "ledger", tmp_path)
    errors: list[BaseException] = []

    def work(handle, tag):
        try:
            for i in range(3):
                handle.register_consent(digest(f"{tag}{i}"), 1, 0)
                handle.is_member(DID_A)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(h, t))
        for h, t in ((fed.a, "a"), (fed.b, "b"), (fed.c, "c"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert fed.a.count_events(EventKind.CONSENT_REGISTERED) == 9
        assert {e.member for e in fed.c.events(EventKind.CONSENT_REGISTERED)} == {
            DID_A,
            DID_B,
            DID_C,
        }
    finally:
        for handle in (fed.a, fed.b, fed.c):
            handle.close()


def _close_all(fed: Fed) -> None:
    for handle in (fed.a, fed.b, fed.c):
        handle.close()


def test_stale_or_wrong_snapshot_falls_back_to_the_journal(tmp_path):
    fed = _make_fed("embedded", tmp_path / "ledger", tmp_path)
    fed.a.register_consent(digest("first"), 1, 0)
    _close_all(fed)
    folder = Path(fed.spec)
    journal = folder / "chain.sqlite"
    shutil.copy(journal, tmp_path / "old.sqlite")  # snapshot of session one

    again = open_ledger(fed.spec, account_key=fed.keys[DID_B])
    again.register_consent(digest("second"), 2, 0)
    expected = again.events()
    again.close()

    # A crash before close leaves the last snapshot behind the journal:
    # put session one's snapshot back, so reopening must replay the tail.
    with sqlite3.connect(journal) as db:
        db.execute("ATTACH ? AS old", (str(tmp_path / "old.sqlite"),))
        db.execute("DELETE FROM snapshot")
        db.execute("INSERT INTO snapshot SELECT * FROM old.snapshot")
        db.execute("DELETE FROM snapshot_head")
        db.execute("INSERT INTO snapshot_head SELECT * FROM old.snapshot_head")
    (folder / "index.sqlite").unlink()
    reopened = open_ledger(fed.spec)
    try:
        assert reopened.events() == expected
        assert reopened.consent_active(digest("second"))
    finally:
        reopened.close()

    # A snapshot that claims more blocks than its state holds is ignored.
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE snapshot_head SET blocks = blocks - 1")
    reopened = open_ledger(fed.spec, account_key=fed.keys[DID_C])
    try:
        assert reopened.events() == expected
        reopened.register_consent(digest("third"), 3, 0)  # the chain goes on
        assert reopened.consent_active(digest("first"))
    finally:
        reopened.close()
