"""The site's admin interface: loopback HTTP, authorized by staff presentations.

Endpoints (JSON bodies, one request per connection)::

    GET  /challenge   -> {"challenge": "...", "domain": "paroma-admin:<site DID>"}
    POST /action      {"action": "erase", "presentation": {...}, "params": {...}}
                      -> {"ok": true, "action": ..., "staff": <DID>, "result": ...}
    GET  /status      -> aggregate figures (no patient data)
    GET  /catalogue   -> the federation's current offers (public ledger data)

Every action needs a presentation bound to a challenge from ``GET /challenge``
(single use, five minutes) and to the domain above, so a presentation made for
the mesh or for another site cannot be replayed here (VC Data Integrity §2.1).
There is no password and no session: each action is authorized on its own.
Actions: ``register_consent`` {patient, scan, labels?}, ``withdraw_consent``
{patient}, ``erase`` {patient, retrain?}, ``analyse`` {patient, use_labels?},
``change_policy`` {policy: TOML text}.

The server listens on 127.0.0.1 only and refuses connections from any other
address; scan paths in ``register_consent`` are read by the node itself, which
runs on the same machine. Request bodies carry pseudonyms: nothing here logs a
request body or a parameter.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11
import trio
from trio_typing import TaskStatus

from common.errors import BadInput, ParomaError
from ml.weights import atomic_write_bytes
from node.governance.errors import GovernanceError, StaffRefused
from node.governance.policy import StaffAction
from node.governance.site import SiteGovernance
from node.governance.staff import ChallengeBook, StaffMember, authorize_staff

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
ADMIN_FILE = "admin.json"  # {"url": ...} written in the governance folder
READ_TIMEOUT_S = 30.0


def admin_domain(site_did: str) -> str:
    """The domain staff presentations for this site's admin interface carry."""
    return f"paroma-admin:{site_did}"


class AdminServer:
    """Serves the admin interface of one site.

    Args:
        governance: the site's governance.
        port: TCP port on 127.0.0.1 (0: any free port).
        on_retrained: called with the retrained weights after an erasure with
            ``retrain`` (the daemon installs them as its model).
    """

    def __init__(
        self,
        governance: SiteGovernance,
        *,
        port: int = 0,
        on_retrained: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.governance = governance
        self.port = port
        self.on_retrained = on_retrained
        self.challenges = ChallengeBook()
        self.domain = admin_domain(governance.did)
        self.url = ""
        self._limiter = trio.CapacityLimiter(1)  # one action at a time

    async def run(
        self, *, task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen until cancelled; ``task_status.started(url)`` once listening."""
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        sockname = listeners[0].socket.getsockname()
        self.url = f"http://127.0.0.1:{sockname[1]}"
        info = json.dumps({"url": self.url, "site": self.governance.did}).encode()
        await trio.to_thread.run_sync(
            atomic_write_bytes, self.governance.folder / ADMIN_FILE, info
        )
        logger.info("admin interface on %s", self.url)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._serve, listeners)
                task_status.started(self.url)
        finally:
            # A stale file would send the staff commands to a closed port.
            (self.governance.folder / ADMIN_FILE).unlink(missing_ok=True)

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            if peer[0] != "127.0.0.1":
                return
            conn = h11.Connection(h11.SERVER)
            with trio.fail_after(READ_TIMEOUT_S):
                request = await _read_request(stream, conn)
            if request is None:
                return
            method, target, body = request
            status, payload = await self._route(method, target, body)
            await _respond(stream, conn, status, payload)
        except (trio.TooSlowError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            logger.debug("admin connection dropped: %r", exc)
        finally:
            await stream.aclose()

    async def _route(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and target == "/challenge":
            return 200, {"challenge": self.challenges.issue(), "domain": self.domain}
        if method == "GET" and target == "/status":
            return 200, await self._blocking(self.governance.status)
        if method == "GET" and target == "/catalogue":
            return 200, await self._blocking(self.governance.catalogue)
        if method == "POST" and target == "/action":
            return await self._action(body)
        return 404, {"error": f"no endpoint {method} {target}"}

    async def _blocking(self, func: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(func, limiter=self._limiter)

    async def _action(self, body: bytes) -> tuple[int, Any]:
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            return 400, {"error": "the body must be a JSON object"}
        action = request.get("action")
        params = request.get("params") or {}
        if not isinstance(params, dict):
            return 400, {"error": "'params' must be a JSON object"}
        try:
            self.challenges.consume(_challenge_of(request.get("presentation")))
            staff = await self._blocking(
                lambda: authorize_staff(
                    request.get("presentation"),
                    action=str(action),
                    policy=self.governance.policy,
                    site_did=self.governance.did,
                    challenge=_challenge_of(request.get("presentation")),
                    domain=self.domain,
                    status_lists=self.governance.status_lists(),
                )
            )
        except StaffRefused as exc:
            logger.info("admin action %s refused: %s", action, exc)
            return 403, {"error": str(exc)}
        try:
            result = await self._blocking(lambda: self._perform(staff, params))
        except (BadInput, GovernanceError) as exc:
            return 400, {"error": str(exc)}
        except ParomaError as exc:
            return 500, {"error": str(exc)}
        logger.info("admin action %s by %s done", staff.action.value, staff.did)
        return 200, {
            "ok": True,
            "action": staff.action.value,
            "staff": staff.did,
            "role": staff.role,
            "result": result,
        }

    def _perform(self, staff: StaffMember, params: dict[str, Any]) -> Any:
        gov = self.governance
        action = staff.action
        if action is StaffAction.REGISTER_CONSENT:
            labels = params.get("labels")
            commitment = gov.register_consent(
                _text(params, "patient"),
                Path(_text(params, "scan")),
                Path(labels) if isinstance(labels, str) else None,
            )
            return {"commitment": commitment.hex()}
        if action is StaffAction.WITHDRAW_CONSENT:
            return {"commitment": gov.withdraw_consent(_text(params, "patient")).hex()}
        if action is StaffAction.ERASE:
            report = gov.erase(
                _text(params, "patient"), retrain=_flag(params, "retrain")
            )
            if report.retrained is not None and self.on_retrained is not None:
                self.on_retrained(report.retrained.state)
            return report.to_json()
        if action is StaffAction.ANALYSE:
            use_labels = _flag(params, "use_labels")
            return gov.analyse(_text(params, "patient"), use_labels=use_labels)
        policy = gov.set_policy(_text(params, "policy"))
        return {"application": policy.name, "purpose": policy.purpose}


def _challenge_of(presentation: object) -> str:
    """The challenge a presentation's proof was signed for ("" if none)."""
    if isinstance(presentation, dict):
        proof = presentation.get("proof")
        if isinstance(proof, dict) and isinstance(proof.get("challenge"), str):
            return str(proof["challenge"])
    return ""


def _text(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise BadInput(f"parameter {name!r}: expected a non-empty string")
    return value


def _flag(params: dict[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise BadInput(f"parameter {name!r}: expected true or false")
    return value


async def _read_request(
    stream: trio.SocketStream, conn: h11.Connection
) -> tuple[str, str, bytes] | None:
    method = target = ""
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            method, target = event.method.decode(), event.target.decode()
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                await _respond(stream, conn, 413, {"error": "request body too large"})
                return None
        elif isinstance(event, h11.EndOfMessage):
            return method, target, bytes(body)
        else:
            return None


async def _respond(
    stream: trio.SocketStream, conn: h11.Connection, status: int, payload: Any
) -> None:
    data = json.dumps(payload, sort_keys=True).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(data))),
        ("connection", "close"),
    ]
    out = conn.send(h11.Response(status_code=status, headers=headers))
    out = (out or b"") + (conn.send(h11.Data(data=data)) or b"")
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)


# ----- the client side (the staff commands) ---------------------------------------


class AdminClient:
    """Calls a site's admin interface on loopback (blocking, httpx).

    Args:
        url: ``http://127.0.0.1:PORT`` of the admin interface.
        timeout_s: per request; erasure with retraining may take minutes.
    """

    def __init__(self, url: str, timeout_s: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        from node.governance.errors import AdminUnreachable

        try:
            response = httpx.request(
                method, self.url + path, json=body, timeout=self.timeout_s
            )
        except httpx.HTTPError as exc:
            raise AdminUnreachable(
                f"admin interface at {self.url} did not answer: {exc}"
            ) from exc
        try:
            payload = response.json()
        except ValueError as exc:
            raise AdminUnreachable(f"{self.url}{path}: answer is not JSON") from exc
        if response.status_code == 403:
            raise StaffRefused(str(payload.get("error", "refused")))
        if response.status_code >= 400:
            raise GovernanceError(str(payload.get("error", response.status_code)))
        return payload

    def challenge(self) -> tuple[str, str]:
        """A fresh challenge and the domain to sign for."""
        payload = self._request("GET", "/challenge")
        return str(payload["challenge"]), str(payload["domain"])

    def action(
        self, action: str, presentation: dict[str, Any], params: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"action": action, "presentation": presentation, "params": params}
        result = self._request("POST", "/action", body)
        return dict(result)

    def get(self, path: str) -> Any:
        return self._request("GET", path)


def admin_url(folder: Path) -> str:
    """The admin interface's URL from the file the server wrote at start.

    Raises:
        AdminUnreachable: no such file (the node is not running here).
    """
    from node.governance.errors import AdminUnreachable

    path = folder / ADMIN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return str(info["url"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdminUnreachable(
            f"{path}: no admin interface recorded (is the node running?)"
        ) from exc
