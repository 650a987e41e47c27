"""Auditor sign-in: a fresh challenge, a presentation, a session cookie.

The explorer has one way in. It hands out a random single-use challenge bound
to its domain; the auditor makes a presentation of an auditor credential for
exactly that challenge and domain with ``paroma-wallet present`` and pastes it
in; the explorer verifies it with :func:`identity.credentials.verify_presentation`
(VC Data Integrity §2.1: challenge and domain stop a presentation made for one
verifier or one moment being replayed to another), then checks the credential's
type and that its issuer is one the explorer trusts. Success opens a session
named by a random token that travels only in an HttpOnly, SameSite=Strict
cookie.

Every challenge is consumed by the first presentation that carries it, whether
that presentation passes or not, so a captured presentation can never be
replayed, not even after a failed attempt.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from identity.credentials import verify_presentation
from identity.errors import DidResolutionFailed
from identity.status_list import status_list_digest
from ledger.explorer.errors import SignInRefused
from ledger.explorer.query import iso_time

log = logging.getLogger(__name__)

AUDITOR_CREDENTIAL = "AuditorCredential"
"""The credential type an auditor presents (configurable)."""

CHALLENGE_TTL = 300.0
"""Seconds a challenge stays usable."""

SESSION_TTL = 8 * 3600.0
"""Seconds a session lasts at most (also never past the credential's end)."""

COOKIE = "paroma_explorer_session"
"""The session cookie's name."""


@dataclass(frozen=True)
class Session:
    """A signed-in auditor.

    Attributes:
        token: the random session token (the cookie's value).
        auditor: the holder's DID.
        issuer: the DID of the issuer of the auditor credential.
        expires: end of the session, seconds since the epoch.
    """

    token: str
    auditor: str
    issuer: str
    expires: float

    def public(self) -> dict[str, Any]:
        """What the page may show about the session (not the token)."""
        return {
            "auditor": self.auditor,
            "issuer": self.issuer,
            "expires": iso_time(int(self.expires)),
        }


def offline_fetcher(url: str) -> bytes:
    """A did:web fetcher that refuses: the explorer makes no outbound request.

    Why: resolving a did:web key means an HTTPS request chosen by whoever
    wrote the document (it would leak who verifies what, and the explorer
    runs offline). Issuers and auditors use did:key, resolved locally.

    Raises:
        DidResolutionFailed: always.
    """
    raise DidResolutionFailed(
        f"did:web is not resolved by the explorer (no network; {url}): "
        "use did:key identities"
    )


def _proof_challenge(presentation: Mapping[str, Any]) -> object:
    proof = presentation.get("proof")
    if isinstance(proof, list) and proof:
        proof = proof[0]
    return proof.get("challenge") if isinstance(proof, dict) else None


def _issuer_did(credential: Mapping[str, Any]) -> str | None:
    issuer = credential.get("issuer")
    found = issuer.get("id") if isinstance(issuer, dict) else issuer
    return found if isinstance(found, str) else None


def _types(credential: Mapping[str, Any]) -> list[str]:
    kinds = credential.get("type")
    return [str(k) for k in (kinds if isinstance(kinds, list) else [kinds])]


def _valid_until(credential: Mapping[str, Any]) -> float | None:
    value = credential.get("validUntil")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Authenticator:
    """Challenges, presentation checks and sessions (thread-safe)."""

    def __init__(
        self,
        *,
        domain: str,
        trusted_issuers: Iterable[str] = (),
        is_member: Callable[[str], bool] | None = None,
        credential_type: str = AUDITOR_CREDENTIAL,
        status_lists: Sequence[dict[str, Any]] = (),
        anchored_digest: Callable[[str], bytes | None] | None = None,
        challenge_ttl: float = CHALLENGE_TTL,
        session_ttl: float = SESSION_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Configure who may sign in.

        Args:
            domain: this explorer's domain, bound into every presentation.
            trusted_issuers: DIDs whose auditor credentials are accepted.
            is_member: if given, an issuer that is a current federation member
                (by this check) is trusted too.
            credential_type: the credential type required.
            status_lists: signed status list credentials the auditor
                credentials' ``credentialStatus`` entries are checked against.
            anchored_digest: if given, the digest the ledger anchors for an
                issuer's status list; a configured list that no longer matches
                it is refused at sign-in (a revocation published since the
                explorer started must take effect).
            challenge_ttl: seconds a challenge stays usable.
            session_ttl: seconds a session lasts at most.
            clock: seconds since the epoch (tests pass a fake clock).
        """
        self.domain = domain
        self.trusted_issuers = frozenset(trusted_issuers)
        self.credential_type = credential_type
        self._is_member = is_member
        self._status_lists = list(status_lists)
        self._anchored_digest = anchored_digest
        self._challenge_ttl = challenge_ttl
        self._session_ttl = session_ttl
        self._clock = clock
        self._lock = threading.Lock()  # guards the three dicts below
        self._challenges: dict[str, float] = {}  # unused challenge -> expiry
        self._used: dict[str, float] = {}  # consumed challenge -> forget-after time
        self._sessions: dict[str, Session] = {}  # token -> live session

    def now(self) -> float:
        """The authenticator's clock: seconds since the epoch."""
        return self._clock()

    def _purge(self, now: float) -> None:
        for table in (self._challenges, self._used):
            for key in [k for k, t in table.items() if t <= now]:
                del table[key]
        for token in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]

    def new_challenge(self) -> dict[str, Any]:
        """A fresh random challenge with this explorer's domain and its expiry."""
        challenge = secrets.token_urlsafe(24)
        now = self._clock()
        with self._lock:
            self._purge(now)
            self._challenges[challenge] = now + self._challenge_ttl
        return {
            "challenge": challenge,
            "domain": self.domain,
            "expires": iso_time(int(now + self._challenge_ttl)),
            "credential_type": self.credential_type,
        }

    def _consume(self, challenge: object) -> str:
        """Take a challenge out of the pool, or say why it is unusable."""
        if not isinstance(challenge, str) or not challenge:
            raise SignInRefused(["challenge: the presentation carries no challenge"])
        now = self._clock()
        with self._lock:
            if challenge in self._used:
                raise SignInRefused(
                    [
                        "challenge: already used (a challenge works once; "
                        "ask for a new one and present again)"
                    ]
                )
            expiry = self._challenges.pop(challenge, None)
            if expiry is None:
                raise SignInRefused(
                    ["wrong challenge: this explorer did not issue that challenge"]
                )
            self._used[challenge] = max(expiry, now) + self._challenge_ttl
            if expiry <= now:
                raise SignInRefused(
                    ["challenge: expired (ask for a new one and present again)"]
                )
        return challenge

    def _check_status_lists_current(self) -> None:
        """Refuse to rely on a status list the ledger has since replaced."""
        if self._anchored_digest is None:
            return
        stale = []
        for vc in self._status_lists:
            issuer = _issuer_did(vc) or "?"
            anchored = self._anchored_digest(issuer)
            if anchored is not None and anchored != status_list_digest(vc):
                stale.append(
                    f"status: the explorer's status list of {issuer} is outdated "
                    "(the ledger anchors a newer one); restart it with the "
                    "issuer's current list"
                )
        if stale:
            raise SignInRefused(stale)

    def _trusted(self, issuer: str) -> bool:
        if issuer in self.trusted_issuers:
            return True
        return self._is_member is not None and self._is_member(issuer)

    def sign_in(self, presentation: object) -> Session:
        """Check an auditor's presentation and open a session.

        Raises:
            SignInRefused: with one reason per failed check: the challenge
                (missing, unknown, used, expired), the presentation's own
                checks (signature, wrong domain, expired credential, revoked
                ...), the credential type, the issuer.
        """
        if not isinstance(presentation, dict):
            raise SignInRefused(["malformed: a presentation is a JSON object"])
        challenge = self._consume(_proof_challenge(presentation))
        self._check_status_lists_current()
        result = verify_presentation(
            presentation,
            challenge=challenge,
            domain=self.domain,
            status_lists=self._status_lists,
            fetcher=offline_fetcher,
        )
        if not result.verified:
            raise SignInRefused(result.errors)
        typed = [c for c in result.credentials if self.credential_type in _types(c)]
        if not typed:
            raise SignInRefused(
                [
                    f"credential type: expected a {self.credential_type}, got "
                    f"{', '.join(result.credential_types) or 'no credential'}"
                ]
            )
        trusted = [c for c in typed if self._trusted(_issuer_did(c) or "")]
        if not trusted:
            issuers = ", ".join(sorted({_issuer_did(c) or "?" for c in typed}))
            raise SignInRefused(
                [
                    f"untrusted issuer: {issuers} is not an issuer this explorer "
                    "trusts for auditors (see --trusted-issuer)"
                ]
            )
        credential = trusted[0]
        now = self._clock()
        expires = now + self._session_ttl
        until = _valid_until(credential)
        if until is not None:
            expires = min(expires, until)
        session = Session(
            token=secrets.token_urlsafe(32),
            auditor=str(result.holder),
            issuer=str(_issuer_did(credential)),
            expires=expires,
        )
        with self._lock:
            self._sessions[session.token] = session
        log.info("auditor %s signed in", session.auditor)
        return session

    def session(self, token: str | None) -> Session | None:
        """The live session of ``token``, None if unknown or expired."""
        if not token:
            return None
        now = self._clock()
        with self._lock:
            found = self._sessions.get(token)
            if found is not None and found.expires <= now:
                del self._sessions[token]
                return None
        return found

    def sign_out(self, token: str | None) -> None:
        """End a session (no-op for an unknown token)."""
        if token:
            with self._lock:
                self._sessions.pop(token, None)
