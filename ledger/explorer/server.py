"""The explorer's web server: a JSON API and one static page, on loopback only.

Standard library only (:class:`http.server.ThreadingHTTPServer`): the server
binds 127.0.0.1, answers only requests whose ``Host`` names that address (a
page from another site that rebinds its DNS name to 127.0.0.1 is refused), and
serves nothing but its own three files and JSON. Every data endpoint needs the
session cookie that :mod:`ledger.explorer.auth` issues; the cookie is
SameSite=Strict, so another site's page cannot make the browser send it.

API (all JSON; data endpoints answer 401 without a session):

========================  ===================================================
GET  /api/challenge       a fresh sign-in challenge and the domain
POST /api/signin          body: the presentation; sets the session cookie
POST /api/signout         ends the session
GET  /api/session         who is signed in (no session needed)
GET  /api/overview        contract, threshold, event counts per kind
GET  /api/members         members, admission votes, attestations about them
GET  /api/events          ?kind&member&since&until&commitment&cursor&limit&order
GET  /api/commitment      ?value=0x..: a consent commitment's lifecycle
GET  /api/provenance      every recorded model, parents and contributors
POST /api/verify/commitment   {salt, pseudonym, purpose, commitment?}
POST /api/verify/status-list  body: a status list credential
POST /api/verify/model        body: a safetensors file (octet-stream)
========================  ===================================================
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from common.errors import BadInput, ParomaError
from ledger.errors import LedgerUnreachable
from ledger.explorer.auth import COOKIE, Authenticator, Session
from ledger.explorer.errors import BadQuery, NotSignedIn, SignInRefused
from ledger.explorer.query import EventFilter, event_json, parse_limit
from ledger.explorer.source import Source

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 4 * 1024 * 1024
"""Largest JSON request body (a presentation, a status list credential)."""

MAX_MODEL_BYTES = 512 * 1024 * 1024
"""Largest model file accepted for the digest check."""

_LINGER_S = 2.0
_LINGER_BYTES = 8 * 1024 * 1024
"""How long, and how much, a refused request's unread body is drained."""

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}

# Why a strict policy: the page shows strings written to the ledger by
# members (DIDs, URIs); even if one slipped past the page's escaping, no
# inline or foreign script could run.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


def _static(name: str) -> bytes:
    return resources.files("ledger.explorer").joinpath(name).read_bytes()


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    cookie: str | None = None


def _json(status: int, value: Any, cookie: str | None = None) -> _Reply:
    return _Reply(status, json.dumps(value).encode(), "application/json", cookie)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ExplorerHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "paroma-explorer"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Why: headers and body leave in two writes; with Nagle's algorithm
        # the body waits for the client's delayed ACK (40 ms a request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        # Why not the default stderr print: library code logs through logging.
        log.debug("%s %s", self.address_string(), format % args)

    # ----- plumbing ----------------------------------------------------------------

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        if reply.cookie is not None:
            self.send_header("Set-Cookie", reply.cookie)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        return host in self.server.allowed_hosts

    def _token(self) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return None
        morsel = jar.get(COOKIE)
        return None if morsel is None else morsel.value

    def _session(self) -> Session:
        session = self.server.auth.session(self._token())
        if session is None:
            raise NotSignedIn("sign in with an auditor credential first")
        return session

    def _body(self, limit: int) -> bytes:
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            raise BadQuery("request: expected a Content-Length header")
        length = int(length_text)
        if length > limit:
            # Drain nothing: the connection is closed after this answer.
            self.close_connection = True
            raise BadQuery(f"request: body of {length} bytes, expected at most {limit}")
        self._body_read = True
        return self.rfile.read(length)

    def _json_body(self) -> Any:
        data = self._body(MAX_JSON_BYTES)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadQuery("request: expected a JSON body") from None

    def _handle(self, method: str) -> None:
        self._body_read = False  # a body left unread ends the connection
        if not self._host_ok():
            self.close_connection = True
            self._send(
                _json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "unexpected Host"})
            )
            self._lingering_close()
            return
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            reply = self._route(method, url.path, params)
        except SignInRefused as exc:
            reply = _json(
                HTTPStatus.FORBIDDEN, {"error": str(exc), "reasons": exc.reasons}
            )
        except NotSignedIn as exc:
            reply = _json(HTTPStatus.UNAUTHORIZED, {"error": str(exc)})
        except LedgerUnreachable as exc:
            reply = _json(HTTPStatus.BAD_GATEWAY, {"error": str(exc)})
        except BadInput as exc:
            reply = _json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except ParomaError as exc:
            reply = _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})
        except Exception:
            log.exception("%s %s failed", method, url.path)
            reply = _json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (logged)"}
            )
        if self.headers.get("Content-Length", "0") != "0" and not self._body_read:
            # Why: its bytes would be read as the next request on this
            # keep-alive connection.
            self.close_connection = True
        self._send(reply)
        if self.close_connection and not self._body_read:
            self._lingering_close()

    def _lingering_close(self) -> None:
        """Half-close, then discard what the client still sends (RFC 9112 §9.6).

        Why not close at once: the unread body still in the socket's receive
        buffer makes the kernel answer the close with a reset, and a reset
        that reaches the client before it has read the answer destroys the
        answer too (the client sees "server disconnected" instead of the 400
        that names the problem). Bounded in bytes and time, so a client that
        keeps sending cannot hold the thread.
        """
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_LINGER_S)
            drained = 0
            while drained < _LINGER_BYTES:
                chunk = self.connection.recv(64 * 1024)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError as exc:  # the client went first: nothing left to save
            log.debug("lingering close: %r", exc)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # ----- routes ------------------------------------------------------------------

    def _route(self, method: str, path: str, params: dict[str, str]) -> _Reply:
        if method == "GET" and path in _STATIC:
            name, kind = _STATIC[path]
            return _Reply(HTTPStatus.OK, _static(name), kind)
        if not path.startswith("/api/"):
            return _json(HTTPStatus.NOT_FOUND, {"error": f"no page {path}"})
        auth = self.server.auth
        if (method, path) == ("GET", "/api/challenge"):
            return _json(HTTPStatus.OK, auth.new_challenge())
        if (method, path) == ("POST", "/api/signin"):
            body = self._json_body()
            if isinstance(body, dict) and "presentation" in body:
                body = body["presentation"]
            session = auth.sign_in(body)
            cookie = (
                f"{COOKIE}={session.token}; HttpOnly; SameSite=Strict; Path=/; "
                f"Max-Age={max(1, int(session.expires - auth.now()))}"
            )
            return _json(HTTPStatus.OK, session.public(), cookie)
        if (method, path) == ("POST", "/api/signout"):
            auth.sign_out(self._token())
            cookie = f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
            return _json(HTTPStatus.OK, {"signed_in": False}, cookie)
        if (method, path) == ("GET", "/api/session"):
            found = auth.session(self._token())
            if found is None:
                return _json(HTTPStatus.OK, {"signed_in": False})
            return _json(HTTPStatus.OK, {"signed_in": True, **found.public()})
        self._session()
        return self._data_route(method, path, params)

    def _data_route(self, method: str, path: str, params: dict[str, str]) -> _Reply:
        source = self.server.source
        if method == "GET":
            if path == "/api/overview":
                return _json(HTTPStatus.OK, source.overview())
            if path == "/api/members":
                return _json(HTTPStatus.OK, {"members": source.members()})
            if path == "/api/events":
                return _json(HTTPStatus.OK, self._events(params))
            if path == "/api/commitment":
                return _json(HTTPStatus.OK, source.commitment(params.get("value", "")))
            if path == "/api/provenance":
                return _json(HTTPStatus.OK, source.provenance())
        if method == "POST":
            if path == "/api/verify/commitment":
                form = self._json_body()
                if not isinstance(form, dict):
                    raise BadQuery("request: expected a JSON object")
                return _json(
                    HTTPStatus.OK,
                    source.check_commitment(
                        salt_hex=str(form.get("salt", "")),
                        pseudonym=str(form.get("pseudonym", "")),
                        purpose=form.get("purpose", ""),
                        commitment=form.get("commitment") or None,
                    ),
                )
            if path == "/api/verify/status-list":
                return _json(HTTPStatus.OK, source.check_status_list(self._json_body()))
            if path == "/api/verify/model":
                data = self._body(MAX_MODEL_BYTES)
                return _json(HTTPStatus.OK, source.check_model(data))
        return _json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {method} {path}"})

    def _events(self, params: dict[str, str]) -> dict[str, Any]:
        order = params.get("order") or "asc"
        if order not in ("asc", "desc"):
            raise BadQuery(f"order: expected asc or desc, got {order!r}")
        page = self.server.source.events(
            EventFilter.from_params(params),
            cursor=params.get("cursor") or None,
            limit=parse_limit(params.get("limit")),
            newest_first=order == "desc",
        )
        return {
            "events": [event_json(e) for e in page.events],
            "next_cursor": page.next_cursor,
            "total": page.total,
        }


class ExplorerHTTPServer(http.server.ThreadingHTTPServer):
    """The HTTP server with the explorer's state attached."""

    daemon_threads = True
    auth: Authenticator  # set by Explorer once the port (and domain) is known

    def __init__(self, source: Source, port: int) -> None:
        self.source = source
        super().__init__(("127.0.0.1", port), _Handler)
        bound = int(self.server_address[1])
        self.allowed_hosts = frozenset({f"127.0.0.1:{bound}", f"localhost:{bound}"})


class Explorer:
    """A running explorer server (start it, read its URL, stop it).

    Usage::

        explorer = Explorer(source, trusted_issuers=[did], port=0)
        explorer.start()          # serves in a background thread
        print(explorer.url)
        explorer.stop()

    or ``explorer.serve_forever()`` in the foreground (the command does).
    """

    def __init__(
        self,
        source: Source,
        *,
        port: int = 0,
        domain: str | None = None,
        trusted_issuers: tuple[str, ...] | list[str] = (),
        trust_members: bool = False,
        credential_type: str | None = None,
        status_lists: list[dict[str, Any]] | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        """Bind 127.0.0.1:``port`` (0: any free port).

        Args:
            source: the ledger to show.
            port: TCP port on 127.0.0.1.
            domain: the domain bound into presentations (default
                ``127.0.0.1:PORT``).
            trusted_issuers: issuer DIDs trusted for auditor credentials.
            trust_members: also trust issuers that are current members.
            credential_type: required credential type (default AuditorCredential).
            status_lists: status list credentials for the auditors' credentials.
            auth: a ready :class:`Authenticator` (overrides the four above).

        Raises:
            BadQuery: the port is taken or out of range.
        """
        self.source = source
        try:
            self.httpd = ExplorerHTTPServer(source, port)
        except (OSError, OverflowError) as exc:
            raise BadQuery(
                f"--port: cannot listen on 127.0.0.1:{port} ({exc})"
            ) from None
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/"
        if auth is None:
            options: dict[str, Any] = {}
            if credential_type:
                options["credential_type"] = credential_type
            auth = Authenticator(
                domain=domain or f"127.0.0.1:{self.port}",
                trusted_issuers=trusted_issuers,
                is_member=source.is_member if trust_members else None,
                status_lists=status_lists or [],
                anchored_digest=source.status_list_digest_of,
                **options,
            )
        self.httpd.auth = auth
        self.auth = auth
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve in a background thread (stop with :meth:`stop`)."""
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="paroma-explorer", daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self.httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket (the source stays open)."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()
