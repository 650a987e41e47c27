"""Zero trust between sites: a mutual presentation exchange on every stream.

Every protocol stream a site opens or accepts starts with this exchange, so each
request (each averaging round, each governance call) is authorized afresh; no
session outlives the stream it was made for:

    initiator -> responder   hello {did, nonce_i, action}
    responder -> initiator   hello {did, nonce_r, vp(challenge=nonce_i, domain=did_i)}
    initiator -> responder   auth  {vp(challenge=nonce_r, domain=did_r)}
    responder -> initiator   ok

Each side picks its nonce fresh (32 random bytes) and the other must sign a
presentation bound to it and to the verifier's DID as domain (VC Data Integrity
§2.1 "challenge" and "domain"), so a presentation recorded from an earlier
exchange, or made for another verifier, is refused. The alternative of a bearer
session token after one handshake was rejected: a token outlives a revocation.

The verifier then checks, in :class:`CredentialAuthorizer`: the presentation's
holder is the DID that the peer's libp2p key (already proven by Noise) names;
the presentation and a membership credential from a federation issuer verify;
the issuer's status list is the one whose digest the ledger holds and does not
revoke the credential; the ledger lists the holder as a current member; the
site's policy allows the action.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import trio

from identity.credentials import create_presentation, verify_presentation
from identity.keys import SigningKey
from identity.proofs import Cryptosuite
from identity.status_list import status_list_digest
from node.errors import PeerRefused, ProtocolViolation
from node.wire import FramedStream, Header

logger = logging.getLogger(__name__)

MEMBERSHIP_CREDENTIAL = "MembershipCredential"
NONCE_BYTES = 32


class Action(StrEnum):
    """What a peer asks to do on a stream (the policy decides per action)."""

    HELLO = "hello"
    AVERAGE = "average"


@dataclass(frozen=True)
class Decision:
    """A policy's answer: ``allowed``, or a reason (no personal data) if not."""

    allowed: bool
    reason: str = ""


PolicyHook = Callable[[str, str], Awaitable[Decision]]
"""``await policy(peer_did, action)``: governance's per-exchange veto."""


async def allow_all(peer_did: str, action: str) -> Decision:
    """The policy of a site with no policy file: every admitted member may act."""
    return Decision(True)


@dataclass(frozen=True)
class AuthenticatedPeer:
    """A peer that passed the exchange on one stream.

    Attributes:
        did: the peer's ``did:key`` (equal to its libp2p peer ID's key).
        action: what it was authorized to do on this stream.
        credential_types: types of the credentials it presented.
    """

    did: str
    action: str
    credential_types: tuple[str, ...]


class MembershipLedger(Protocol):
    """The part of :class:`ledger.api.Ledger` that authorization reads."""

    def is_member(self, did: str) -> bool: ...

    def current_status_list_digest(self, issuer_did: str) -> bytes | None: ...


class Authorizer(Protocol):
    """Makes this site's presentations and judges the peers'."""

    async def presentation(self, challenge: str, domain: str) -> dict[str, Any]:
        """This site's presentation bound to a verifier's challenge and domain."""
        ...

    async def authorize(
        self,
        peer_did: str,
        presentation: object,
        *,
        challenge: str,
        domain: str,
        action: str,
    ) -> AuthenticatedPeer:
        """Admit the peer for ``action`` or raise :class:`PeerRefused` (reason)."""
        ...


StatusListSource = Callable[[], Sequence[dict[str, Any]]]
"""Returns the issuers' current signed BitstringStatusListCredentials."""


class CredentialAuthorizer:
    """The real authorizer: VCs, status lists, ledger membership and policy.

    Args:
        key: this site's DID key (the holder of its presentations).
        credentials: this site's credentials to present (its membership
            credential first).
        issuer_dids: DIDs allowed to issue membership credentials (the
            federation's founders or issuer, from the config).
        ledger: membership and status-list digests (blocking reads: they run
            in a worker thread, one at a time).
        status_lists: where the current status list credentials come from.
        policy: the site's per-action veto.
        cryptosuite: how this site signs its presentations (``eddsa-jcs-2022``
            is several times faster to verify than RDF canonicalization).
    """

    def __init__(
        self,
        key: SigningKey,
        credentials: Sequence[dict[str, Any]],
        issuer_dids: Sequence[str],
        ledger: MembershipLedger,
        status_lists: StatusListSource,
        policy: PolicyHook = allow_all,
        cryptosuite: str = Cryptosuite.EDDSA_JCS_2022,
    ) -> None:
        self.key = key
        self.credentials = list(credentials)
        self.issuer_dids = frozenset(issuer_dids)
        self.ledger = ledger
        self.status_lists = status_lists
        self.policy = policy
        self.cryptosuite = cryptosuite
        # Ledger reads block (a contract call each), so they run in worker
        # threads; one at a time, since a handle serialises its chain use anyway.
        self._ledger_limiter = trio.CapacityLimiter(1)

    async def presentation(self, challenge: str, domain: str) -> dict[str, Any]:
        return await trio.to_thread.run_sync(
            lambda: create_presentation(
                self.credentials,
                self.key,
                challenge=challenge,
                domain=domain,
                cryptosuite=self.cryptosuite,
            )
        )

    async def authorize(
        self,
        peer_did: str,
        presentation: object,
        *,
        challenge: str,
        domain: str,
        action: str,
    ) -> AuthenticatedPeer:
        if not isinstance(presentation, dict):
            raise PeerRefused(f"{peer_did}: presentation is not a JSON object")
        if presentation.get("holder") != peer_did:
            raise PeerRefused(
                f"{peer_did}: presentation holder is not the DID of its peer key"
            )
        lists = await trio.to_thread.run_sync(
            self._current_status_lists, limiter=self._ledger_limiter
        )
        result = await trio.to_thread.run_sync(
            lambda: verify_presentation(
                presentation, challenge=challenge, domain=domain, status_lists=lists
            )
        )
        if not result.verified:
            raise PeerRefused(f"{peer_did}: {result.errors[0]}")
        membership = [
            c
            for c in result.credentials
            if MEMBERSHIP_CREDENTIAL in c.get("type", [])
            and _issuer(c) in self.issuer_dids
        ]
        if not membership:
            raise PeerRefused(
                f"{peer_did}: no {MEMBERSHIP_CREDENTIAL} from a federation issuer"
            )
        admitted = await trio.to_thread.run_sync(
            self.ledger.is_member, peer_did, limiter=self._ledger_limiter
        )
        if not admitted:
            raise PeerRefused(f"{peer_did}: not a current member on the ledger")
        decision = await self.policy(peer_did, action)
        if not decision.allowed:
            raise PeerRefused(f"{peer_did}: policy refuses {action}: {decision.reason}")
        return AuthenticatedPeer(peer_did, action, tuple(result.credential_types))

    def _current_status_lists(self) -> list[dict[str, Any]]:
        """Status lists whose digest is the one the ledger holds for their issuer.

        A list the ledger does not vouch for is dropped, so a credential that
        points to it fails verification ("status list ... was not given"): a
        stale list could hide a revocation.
        """
        current: list[dict[str, Any]] = []
        for status_vc in self.status_lists():
            issuer = _issuer(status_vc)
            if issuer is None:
                continue
            published = self.ledger.current_status_list_digest(issuer)
            if published is not None and published == status_list_digest(status_vc):
                current.append(status_vc)
            else:
                logger.info(
                    "status list %s is not the ledger's current one",
                    status_vc.get("id"),
                )
        return current


def _issuer(credential: dict[str, Any]) -> str | None:
    issuer = credential.get("issuer")
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    return issuer if isinstance(issuer, str) else None


def new_nonce() -> str:
    """A fresh challenge: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(NONCE_BYTES)


def _field(header: Header, name: str) -> str:
    value = header.get(name)
    if not isinstance(value, str) or not value:
        raise ProtocolViolation(f"message {header.get('type')!r} lacks field {name!r}")
    return value


async def _refuse(framed: FramedStream, reason: str) -> None:
    """Tell the peer why (best effort) before the caller resets the stream."""
    try:
        await framed.send({"type": "refused", "reason": reason})
    except Exception as exc:  # the peer may already be gone
        logger.debug("could not send refusal: %r", exc)


async def authenticate_initiator(
    framed: FramedStream,
    *,
    local_did: str,
    peer_did: str,
    authorizer: Authorizer,
    action: str,
) -> AuthenticatedPeer:
    """Run the exchange as the side that opened the stream.

    Args:
        framed: the new stream.
        local_did: this site's DID (the domain the peer must sign for).
        peer_did: the DID named by the peer's libp2p key.
        authorizer: judges the peer and makes this site's presentation.
        action: what this stream is for.

    Raises:
        PeerRefused: either side refused (the message says which and why).
    """
    nonce = new_nonce()
    hello = {"type": "hello", "did": local_did, "nonce": nonce, "action": action}
    await framed.send(hello)
    header, _ = await framed.receive("hello")
    if header.get("did") != peer_did:
        await _refuse(framed, "hello DID is not the DID of the peer key")
        raise PeerRefused(f"{peer_did}: hello names another DID")
    try:
        peer = await authorizer.authorize(
            peer_did,
            header.get("vp"),
            challenge=nonce,
            domain=local_did,
            action=action,
        )
    except PeerRefused as exc:
        await _refuse(framed, "presentation refused")
        raise exc
    vp = await authorizer.presentation(_field(header, "nonce"), peer_did)
    await framed.send({"type": "auth", "vp": vp})
    await framed.receive("ok")
    return peer


async def authenticate_responder(
    framed: FramedStream,
    *,
    local_did: str,
    peer_did: str,
    authorizer: Authorizer,
    allowed_actions: Sequence[str],
) -> AuthenticatedPeer:
    """Run the exchange as the side that accepted the stream.

    Raises:
        PeerRefused: the peer failed a check (it was told, without detail).
    """
    header, _ = await framed.receive("hello")
    action = _field(header, "action")
    if header.get("did") != peer_did:
        await _refuse(framed, "hello DID is not the DID of the peer key")
        raise PeerRefused(f"{peer_did}: hello names another DID")
    if action not in allowed_actions:
        await _refuse(framed, f"action {action!r} is not served on this protocol")
        raise PeerRefused(f"{peer_did}: asked for {action!r} on the wrong protocol")
    nonce = new_nonce()
    vp = await authorizer.presentation(_field(header, "nonce"), peer_did)
    await framed.send({"type": "hello", "did": local_did, "nonce": nonce, "vp": vp})
    reply, _ = await framed.receive("auth")
    try:
        peer = await authorizer.authorize(
            peer_did, reply.get("vp"), challenge=nonce, domain=local_did, action=action
        )
    except PeerRefused:
        await _refuse(framed, "presentation refused")
        raise
    await framed.send({"type": "ok"})
    return peer
