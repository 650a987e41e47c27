"""Framed messages on a libp2p stream: a JSON header, then a chunked payload.

Layout of one message (all lengths unsigned 32-bit big-endian)::

    header_length | header (UTF-8 JSON object) | chunk_length | chunk | ...

The header always carries ``v`` (protocol version) and ``type``; when it carries
``size`` > 0 the payload follows as chunks of at most ``CHUNK_BYTES`` until
``size`` bytes arrived, and ``sha256`` (hex) must match them. Limits are checked
*before* reading (a length prefix over the limit is refused without buffering),
so a peer cannot make the site allocate more than the configured maximum.

Why not protobuf or a length-prefixed safetensors blob alone: the header must be
readable before any payload is accepted (version check, size limit,
authorization), and chunks keep each write under yamux's window so large
models stream rather than stall.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from node.errors import (
    DigestMismatch,
    FrameTooLarge,
    PeerBusy,
    PeerRefused,
    ProtocolViolation,
    StreamTruncated,
    UnsupportedVersion,
)

logger = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024  # payload chunk size on the wire
MAX_HEADER_BYTES = 256 * 1024  # headers carry presentations (a few KiB)
_LENGTH = struct.Struct(">I")

Header = dict[str, Any]


class ByteStream(Protocol):
    """What the framing needs of a libp2p ``INetStream``."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class Limits:
    """Size limits for one protocol's messages.

    Attributes:
        max_payload_bytes: the largest payload accepted (model weights).
        max_header_bytes: the largest JSON header accepted.
    """

    max_payload_bytes: int
    max_header_bytes: int = MAX_HEADER_BYTES


class FramedStream:
    """Reads and writes whole messages on a stream, with exact-length reads."""

    def __init__(self, stream: ByteStream, version: int, limits: Limits) -> None:
        self.stream = stream
        self.version = version  # the only version this end accepts
        self.limits = limits
        self._buffer = bytearray()  # bytes read from the stream, not yet consumed

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            try:
                data = await self.stream.read(max(n - len(self._buffer), 1 << 16))
            except EOFError as exc:
                # libp2p's StreamEOF is an EOFError: the peer closed mid-message.
                raise StreamTruncated(
                    f"stream ended after {len(self._buffer)} of {n} bytes"
                ) from exc
            if not data:
                raise StreamTruncated(
                    f"stream ended after {len(self._buffer)} of {n} bytes"
                )
            self._buffer += data
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        return chunk

    async def _read_length(self) -> int:
        (value,) = _LENGTH.unpack(await self._read_exactly(_LENGTH.size))
        return int(value)

    async def send(self, header: Header, payload: bytes = b"") -> None:
        """Send one message; ``v``, ``size`` and ``sha256`` are filled in here."""
        full = {**header, "v": self.version}
        if payload:
            full["size"] = len(payload)
            full["sha256"] = hashlib.sha256(payload).hexdigest()
        encoded = json.dumps(full, sort_keys=True, separators=(",", ":")).encode()
        parts = [_LENGTH.pack(len(encoded)), encoded]
        await self.stream.write(b"".join(parts))
        view = memoryview(payload)
        for start in range(0, len(payload), CHUNK_BYTES):
            chunk = view[start : start + CHUNK_BYTES]
            await self.stream.write(_LENGTH.pack(len(chunk)) + bytes(chunk))

    async def receive(self, expected_type: str | None = None) -> tuple[Header, bytes]:
        """Read one message; check its version, sizes and digest.

        Args:
            expected_type: if given, any other ``type`` raises (a peer's
                ``refused`` message raises :class:`ProtocolViolation` naming
                its reason).

        Raises:
            FrameTooLarge, StreamTruncated, DigestMismatch, UnsupportedVersion,
            ProtocolViolation.
        """
        length = await self._read_length()
        if length > self.limits.max_header_bytes:
            raise FrameTooLarge(
                f"header of {length} bytes exceeds the limit of "
                f"{self.limits.max_header_bytes}"
            )
        header = self._decode_header(await self._read_exactly(length))
        payload = await self._read_payload(header)
        kind = header["type"]
        if expected_type is not None and kind != expected_type:
            if kind == "refused":
                reason = str(header.get("reason", "?"))
                if header.get("busy") is True:
                    raise PeerBusy(f"peer is busy: {reason}")
                raise PeerRefused(f"peer refused: {reason}")
            raise ProtocolViolation(
                f"expected a {expected_type!r} message, got {kind!r}"
            )
        return header, payload

    def _decode_header(self, raw: bytes) -> Header:
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolViolation("header is not JSON") from exc
        if not isinstance(header, dict) or not isinstance(header.get("type"), str):
            raise ProtocolViolation("header is not an object with a string 'type'")
        if header.get("v") != self.version:
            raise UnsupportedVersion(
                f"protocol version {header.get('v')!r} is not supported "
                f"(this site speaks {self.version})"
            )
        return header

    async def _read_payload(self, header: Header) -> bytes:
        size = header.get("size", 0)
        if not isinstance(size, int) or size < 0:
            raise ProtocolViolation("header field 'size' must be an integer >= 0")
        if size > self.limits.max_payload_bytes:
            raise FrameTooLarge(
                f"payload of {size} bytes exceeds the limit of "
                f"{self.limits.max_payload_bytes}"
            )
        if size == 0:
            return b""
        expected = header.get("sha256")
        if not isinstance(expected, str):
            raise ProtocolViolation("header with a payload lacks 'sha256'")
        received = bytearray()
        digest = hashlib.sha256()
        while len(received) < size:
            chunk_length = await self._read_length()
            left = size - len(received)
            if chunk_length == 0 or chunk_length > min(CHUNK_BYTES, left):
                raise FrameTooLarge(
                    f"chunk of {chunk_length} bytes does not fit the announced "
                    f"payload ({left} bytes left, chunks <= "
                    f"{CHUNK_BYTES})"
                )
            chunk = await self._read_exactly(chunk_length)
            digest.update(chunk)
            received += chunk
        if digest.hexdigest() != expected:
            raise DigestMismatch("payload SHA-256 differs from the header's 'sha256'")
        return bytes(received)
