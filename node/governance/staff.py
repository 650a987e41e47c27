"""Who may act: staff presentations at the admin interface, peers on the mesh.

Staff authorize each action with a presentation from ``paroma-wallet`` bound
to a fresh, single-use challenge from the admin interface and to its domain
(VC Data Integrity §2.1 "challenge" and "domain"). A password shared by staff
was rejected: it names nobody, cannot be revoked for one person and leaves no
trace of who acted. The presentation must hold a credential of the policy's
staff type (``StaffRoleCredential``), issued by the site's own DID or an issuer
the policy trusts, about the presenter, unexpired and not revoked, whose
``credentialSubject.role`` is one the policy allows for the action.

Peers: :class:`PeerGate` is the daemon's per-exchange policy hook
(:data:`node.auth.PolicyHook`): the peer must hold one of the policy's ledger
roles and, when the policy requires it, an accepted software attestation.
:class:`GovernedAuthorizer` wraps the daemon's authorizer to require the
policy's credential types in the peer's presentation.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import trio

from identity.credentials import verify_presentation
from ledger.api import Ledger
from node.auth import AuthenticatedPeer, Authorizer, Decision
from node.errors import PeerRefused
from node.governance.attestation import check_peer
from node.governance.errors import AttestationRefused, StaffRefused
from node.governance.policy import Policy, StaffAction

CHALLENGE_TTL_S = 300.0
"""How long a challenge from ``GET /challenge`` stays usable, seconds."""

StatusLists = Callable[[], Sequence[dict[str, Any]]]
"""Returns the current signed status list credentials of the staff issuers."""


@dataclass(frozen=True)
class StaffMember:
    """A staff member authorized for one action.

    Attributes:
        did: the presenter's DID (the holder).
        role: the role of the credential that authorized the action.
        action: the action authorized.
    """

    did: str
    role: str
    action: StaffAction


class ChallengeBook:
    """Fresh single-use challenges with a time to live (thread-safe)."""

    def __init__(self, ttl_s: float = CHALLENGE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._issued: dict[str, float] = {}  # challenge -> monotonic expiry
        self._lock = threading.Lock()

    def issue(self) -> str:
        challenge = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._issued = {c: t for c, t in self._issued.items() if t > now}
            self._issued[challenge] = now + self.ttl_s
        return challenge

    def consume(self, challenge: object) -> None:
        """Spend a challenge.

        Raises:
            StaffRefused: unknown, already used or expired.
        """
        with self._lock:
            expiry = (
                self._issued.pop(challenge, None)
                if isinstance(challenge, str)
                else None
            )
        if expiry is None or expiry < time.monotonic():
            raise StaffRefused("the challenge is unknown, used or expired")


def authorize_staff(
    presentation: object,
    *,
    action: StaffAction | str,
    policy: Policy,
    site_did: str,
    challenge: str,
    domain: str,
    status_lists: Sequence[dict[str, Any]] = (),
    now: datetime | None = None,
) -> StaffMember:
    """Check a staff presentation for ``action``; see the module docstring.

    Raises:
        StaffRefused: the presentation fails a check or carries no allowed
            role (the message names the check, never a personal datum).
    """
    try:
        action = StaffAction(action)
    except ValueError:
        raise StaffRefused(f"unknown action {action!r}") from None
    if not isinstance(presentation, dict):
        raise StaffRefused("the presentation must be a JSON object")
    result = verify_presentation(
        presentation,
        challenge=challenge,
        domain=domain,
        status_lists=status_lists,
        now=now,
    )
    if not result.verified:
        raise StaffRefused(f"presentation refused: {result.errors[0]}")
    trusted = {site_did, *policy.staff.trusted_issuers}
    allowed = policy.roles_for(action)
    wanted = policy.staff.credential_type
    for credential in result.credentials:
        if wanted not in credential.get("type", []):
            continue
        if _issuer(credential) not in trusted:
            continue
        subject = credential.get("credentialSubject", {})
        role = subject.get("role") if isinstance(subject, dict) else None
        if isinstance(role, str) and role in allowed and result.holder:
            return StaffMember(result.holder, role, action)
    raise StaffRefused(
        f"no {wanted} from a trusted issuer with a role allowed to {action.value} "
        f"({', '.join(allowed)})"
    )


def _issuer(credential: dict[str, Any]) -> str | None:
    issuer = credential.get("issuer")
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    return issuer if isinstance(issuer, str) else None


class PeerGate:
    """The daemon's policy hook: ledger roles and attestation, per exchange.

    Args:
        policy: returns the site's current policy (it may change at run time).
        ledger: the federation ledger (blocking reads run in a worker thread).
    """

    def __init__(self, policy: Callable[[], Policy], ledger: Ledger) -> None:
        self.policy = policy
        self.ledger = ledger
        self._limiter = trio.CapacityLimiter(1)

    async def __call__(self, peer_did: str, action: str) -> Decision:
        return await trio.to_thread.run_sync(
            self.decide, peer_did, action, limiter=self._limiter
        )

    def decide(self, peer_did: str, action: str) -> Decision:
        """The blocking check behind :meth:`__call__`."""
        policy = self.policy()
        member = self.ledger.member(peer_did)
        if member is None or member.removed:
            return Decision(False, "not a current member")
        if not set(member.roles) & set(policy.peers.roles):
            return Decision(
                False, f"holds none of the roles {', '.join(policy.peers.roles)}"
            )
        try:
            check_peer(self.ledger, policy, peer_did)
        except AttestationRefused as exc:
            return Decision(False, f"attestation: {exc}")
        return Decision(True)


class GovernedAuthorizer:
    """An :class:`node.auth.Authorizer` that also requires the policy's credentials.

    Args:
        inner: the daemon's authorizer (e.g. ``CredentialAuthorizer`` with a
            :class:`PeerGate` as its policy hook).
        policy: returns the site's current policy.
    """

    def __init__(self, inner: Authorizer, policy: Callable[[], Policy]) -> None:
        self.inner = inner
        self.policy = policy

    async def presentation(self, challenge: str, domain: str) -> dict[str, Any]:
        return await self.inner.presentation(challenge, domain)

    async def authorize(
        self,
        peer_did: str,
        presentation: object,
        *,
        challenge: str,
        domain: str,
        action: str,
    ) -> AuthenticatedPeer:
        peer = await self.inner.authorize(
            peer_did, presentation, challenge=challenge, domain=domain, action=action
        )
        missing = set(self.policy().peers.credentials) - set(peer.credential_types)
        if missing:
            raise PeerRefused(
                f"{peer_did}: policy requires credentials {', '.join(sorted(missing))}"
            )
        return peer
