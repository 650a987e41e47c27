"""Framing: round trips and every malformed message, on an in-memory stream."""

import hashlib
import json
import struct
from typing import Any

import pytest

from node.errors import (
    DigestMismatch,
    FrameTooLarge,
    PeerBusy,
    PeerRefused,
    ProtocolViolation,
    StreamTruncated,
    UnsupportedVersion,
)
from node.wire import CHUNK_BYTES, FramedStream, Limits


class MemoryStream:
    """Hands out its bytes a few at a time, then raises EOFError like libp2p."""

    def __init__(self, data: bytes = b"", step: int = 7001) -> None:
        self.data = data
        self.position = 0
        self.step = step
        self.written = bytearray()

    async def read(self, n: int | None = None) -> bytes:
        if self.position >= len(self.data):
            raise EOFError("stream closed")
        size = min(n or self.step, self.step)
        chunk = self.data[self.position : self.position + size]
        self.position += len(chunk)
        return chunk

    async def write(self, data: bytes) -> None:
        self.written += data


async def _encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    sink = MemoryStream()
    await FramedStream(sink, 1, Limits(1 << 30)).send(header, payload)
    return bytes(sink.written)


def _reader(data: bytes, max_payload: int = 1 << 30) -> FramedStream:
    return FramedStream(MemoryStream(data), 1, Limits(max_payload))


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES, CHUNK_BYTES * 2 + 5])
async def test_round_trip(size):
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    raw = await _encode({"type": "offer", "n_samples": 3.0}, payload)
    header, received = await _reader(raw).receive("offer")
    assert received == payload
    assert header["v"] == 1 and header["n_samples"] == 3.0


def _raw_header(header: dict[str, Any]) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack(">I", len(encoded)) + encoded


async def test_two_messages_back_to_back():
    raw = await _encode({"type": "a"}, b"123") + await _encode({"type": "b"})
    reader = _reader(raw)
    assert (await reader.receive("a"))[1] == b"123"
    assert (await reader.receive("b"))[1] == b""


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (struct.pack(">I", 10**7), FrameTooLarge, "header of"),
        (
            _raw_header({"v": 1, "type": "x", "size": 10**6, "sha256": "0"}),
            FrameTooLarge,
            "payload of",
        ),
        (
            _raw_header({"v": 1, "type": "x", "size": 10, "sha256": "0"})
            + struct.pack(">I", 11)
            + b"x" * 11,
            FrameTooLarge,
            "chunk of 11",
        ),
        (
            _raw_header({"v": 1, "type": "x", "size": 10, "sha256": "0"})
            + struct.pack(">I", 0),
            FrameTooLarge,
            "chunk of 0",
        ),
        (
            _raw_header({"v": 1, "type": "x", "size": 4, "sha256": "00"})
            + struct.pack(">I", 4)
            + b"abcd",
            DigestMismatch,
            "SHA-256",
        ),
        (_raw_header({"v": 2, "type": "x"}), UnsupportedVersion, "version 2"),
        (_raw_header({"type": "x"}), UnsupportedVersion, "version None"),
        (struct.pack(">I", 3) + b"{{{", ProtocolViolation, "not JSON"),
        (_raw_header({"v": 1, "type": 5}), ProtocolViolation, "string 'type'"),
        (_raw_header({"v": 1, "type": "x", "size": -1}), ProtocolViolation, "size"),
        (
            _raw_header({"v": 1, "type": "x", "size": 4}),
            ProtocolViolation,
            "sha256",
        ),
        (b"\x00\x00", StreamTruncated, "after 2 of 4"),
        (_raw_header({"v": 1, "type": "x"})[:-3], StreamTruncated, "stream ended"),
        (
            _raw_header(
                {
                    "v": 1,
                    "type": "x",
                    "size": 8,
                    "sha256": hashlib.sha256(b"12345678").hexdigest(),
                }
            )
            + struct.pack(">I", 8)
            + b"1234",
            StreamTruncated,
            "stream ended",
        ),
        (_raw_header({"v": 1, "type": "other"}), ProtocolViolation, "expected a 'x'"),
        (
            _raw_header({"v": 1, "type": "refused", "reason": "policy"}),
            PeerRefused,
            "policy",
        ),
        (
            _raw_header({"v": 1, "type": "refused", "reason": "busy", "busy": True}),
            PeerBusy,
            "busy",
        ),
    ],
)
async def test_malformed_messages_are_refused(raw, error, message):
    with pytest.raises(error, match=message):
        await _reader(raw, max_payload=1000).receive("x")
