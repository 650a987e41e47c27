"""Zero trust on real streams: who is refused, and bad input never merges."""

import contextlib
import hashlib
import json
import math
import struct
from typing import Any

import pytest
import torch
import trio
from safetensors.torch import save as st_save

from identity.status_list import status_bit, status_list_digest
from ledger import EventKind
from node.auth import Action, authenticate_initiator
from node.daemon import AVERAGE_PROTOCOL, SiteNode
from node.errors import PeerRefused
from node.wire import FramedStream, Limits
from tests.node.federation import small_state

pytestmark = pytest.mark.slow


class ReplayingAuthorizer:
    """Answers every challenge with the first presentation it ever made."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.recorded = None

    async def presentation(self, challenge, domain):
        if self.recorded is None:
            self.recorded = await self.inner.presentation(challenge, domain)
        return self.recorded

    async def authorize(self, peer_did, presentation, **kwargs):
        return await self.inner.authorize(peer_did, presentation, **kwargs)


async def _start(nursery: trio.Nursery, *nodes: SiteNode) -> None:
    for node in nodes:
        await nursery.start(node.run)


async def _refusal_reasons(node: SiteNode, count: int) -> list[str]:
    with trio.fail_after(5):
        while len(node.store.refusals()) < count:
            await trio.sleep(0.02)
    return [r["reason"] for r in node.store.refusals()]


async def test_unadmitted_revoked_and_replaying_peers_are_refused(
    tmp_path, make_federation
):
    fed = make_federation(2)
    outsider = fed.add_site(admit=False)
    revoked = fed.add_site()
    replayer = fed.add_site()
    a = fed.node(0, tmp_path, small_state(0), 1.0)
    u = fed.node(outsider, tmp_path, small_state(1), 1.0)
    r = fed.node(revoked, tmp_path, small_state(2), 1.0)
    p = fed.node(
        replayer,
        tmp_path,
        small_state(3),
        1.0,
        authorizer=ReplayingAuthorizer(fed.authorizer(replayer)),
    )
    before = a.digest
    with trio.fail_after(25):
        async with trio.open_nursery() as nursery:
            await _start(nursery, a, u, r, p)

            # Not admitted on the ledger: refused at hello and at averaging.
            with pytest.raises(PeerRefused):
                await u.connect(a.addresses[0])
            with pytest.raises(PeerRefused):
                await u.call_average(a.did)

            # Admitted, then its credential revoked on the issuer's status list.
            assert await r.connect(a.addresses[0]) == a.did
            await trio.to_thread.run_sync(fed.revoke, revoked)
            with pytest.raises(PeerRefused):
                await r.call_average(a.did)

            # Replays its first presentation: only the first exchange can pass
            # (A's own hello to it may already have used that one up).
            with contextlib.suppress(PeerRefused):
                await p.connect(a.addresses[0])
            with pytest.raises(PeerRefused):
                await p.call_average(a.did)

            reasons = await _refusal_reasons(a, 3)
            nursery.cancel_scope.cancel()
    assert a.digest == before and a.round == 0
    # The outsider's admission was proposed but got 1 of the k=2 votes.
    pending = fed.ledger.proposal(fed.proposals[outsider])
    assert pending is not None and pending.votes == 1 and not pending.executed
    assert not fed.ledger.is_member(fed.keys[outsider].did)
    # The revocation is on the ledger: the digest of the list that revokes.
    assert status_bit(fed.status_vc, fed.credentials[revoked]["credentialStatus"])[1]
    digest = status_list_digest(fed.status_vc)
    assert fed.ledger.current_status_list_digest(fed.issuer.did) == digest
    published = fed.ledger.events(EventKind.STATUS_LIST_PUBLISHED)
    assert len(published) == 2 and published[-1].commitment == "0x" + digest.hex()
    assert any("not a current member" in x for x in reasons)
    assert any("revoked" in x for x in reasons)
    assert any("wrong challenge" in x for x in reasons)
    for reason in reasons:
        assert fed.keys[0].seed.hex() not in reason


async def test_presenting_another_sites_credential_is_refused(
    tmp_path, make_federation
):
    fed = make_federation(3)
    a = fed.node(0, tmp_path, small_state(0), 1.0)
    # Site 2's host key, but site 1's credentials and presentations.
    thief = fed.node(2, tmp_path, small_state(1), 1.0, authorizer=fed.authorizer(1))
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            await _start(nursery, a, thief)
            with pytest.raises(PeerRefused):
                await thief.connect(a.addresses[0])
            reasons = await _refusal_reasons(a, 1)
            nursery.cancel_scope.cancel()
    assert "holder is not the DID of its peer key" in reasons[0]


def _frame(header: dict[str, Any]) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">I", len(raw)) + raw


def _payload_message(payload: bytes, **overrides: Any) -> bytes:
    header = {
        "v": 1,
        "type": "offer",
        "n_samples": 1.0,
        "round": 0,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        **overrides,
    }
    return _frame(header) + struct.pack(">I", len(payload)) + payload


def _tensors(**changes: torch.Tensor) -> bytes:
    state = small_state(5)
    state.update(changes)
    return bytes(st_save({k: v.contiguous() for k, v in state.items()}))


BAD_INPUTS = {
    "header over the limit": struct.pack(">I", 10**8),
    "payload over the limit": _frame(
        {"v": 1, "type": "offer", "n_samples": 1.0, "size": 10**12, "sha256": "0"}
    ),
    "truncated stream": _payload_message(_tensors())[:-40],
    "NaN tensor": _payload_message(
        _tensors(**{"conv.bias": torch.full((8,), math.nan)})
    ),
    "wrongly shaped tensor": _payload_message(
        _tensors(**{"conv.bias": torch.zeros(9)})
    ),
    "not safetensors": _payload_message(b"\x00" * 64),
    "digest mismatch": _payload_message(_tensors(), sha256="00" * 32),
    "unknown protocol version": _payload_message(_tensors(), v=2),
    "bad sample count": _payload_message(_tensors(), n_samples=-3),
}


async def test_bad_input_is_refused_and_nothing_merged(tmp_path, make_federation):
    fed = make_federation(2)
    victim = fed.node(0, tmp_path, small_state(0), 1.0)
    evil = fed.node(1, tmp_path, small_state(1), 1.0)
    before = victim.digest
    with trio.fail_after(28):
        async with trio.open_nursery() as nursery:
            await _start(nursery, victim, evil)
            await evil.connect(victim.addresses[0])
            for count, (name, raw) in enumerate(BAD_INPUTS.items(), start=1):
                stream = await evil.host.new_stream(victim.peer_id, [AVERAGE_PROTOCOL])
                framed = FramedStream(stream, 1, Limits(1 << 30))
                await authenticate_initiator(
                    framed,
                    local_did=evil.did,
                    peer_did=victim.did,
                    authorizer=evil.authorizer,
                    action=Action.AVERAGE,
                )
                await stream.write(raw)
                if name == "truncated stream":
                    await stream.close()
                with trio.fail_after(5):
                    while victim.refusals < count:
                        await trio.sleep(0.02)
                # The victim reset the stream: nothing more comes from it.
                with pytest.raises(Exception):  # noqa: B017 (libp2p stream error)
                    await stream.read(1)
                assert victim.digest == before and victim.round == 0, name
            # The daemon still serves a well-formed exchange afterwards.
            await evil.call_average(victim.did)
            nursery.cancel_scope.cancel()
    assert victim.round == 1 and victim.digest == evil.digest
