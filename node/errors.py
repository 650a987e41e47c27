"""Errors of the ``node`` package (the site daemon).

    ParomaError
    └── NodeError
        ├── ConfigInvalid        the site's TOML config has a bad or missing field
        ├── PeerRefused          a peer failed authentication or authorization
        ├── ProtocolViolation    a peer broke the wire protocol
        │   ├── FrameTooLarge        a frame is over the size limit
        │   ├── StreamTruncated      the stream ended in the middle of a message
        │   ├── DigestMismatch       a payload's SHA-256 is not the announced one
        │   └── UnsupportedVersion   the peer speaks an unknown protocol version
        ├── PeerBusy             the peer is in another exchange; try later
        ├── PeerUnreachable      no connection or stream could be opened
        └── StoreCorrupt         the site's store or checkpoint cannot be read

Refusal reasons name the rule that failed and the peer's DID (an institution's
identifier), never personal data or key material.
"""

from __future__ import annotations

from common.errors import BadInput, ParomaError


class NodeError(ParomaError):
    """Any error of the site daemon."""


class ConfigInvalid(NodeError, BadInput):
    """A config field is missing or not what was expected (the message names it)."""


class PeerRefused(NodeError):
    """A peer was not authenticated or not authorized for an exchange."""


class ProtocolViolation(NodeError):
    """A peer sent something the wire protocol does not allow."""


class FrameTooLarge(ProtocolViolation):
    """A header or payload is larger than the configured limit."""


class StreamTruncated(ProtocolViolation):
    """The stream ended before a complete message arrived."""


class DigestMismatch(ProtocolViolation):
    """A payload's SHA-256 differs from the digest its header announced."""


class UnsupportedVersion(ProtocolViolation):
    """The peer's protocol version is not one this site speaks."""


class PeerBusy(NodeError):
    """The peer is already in an exchange (a site is in at most one at a time)."""


class PeerUnreachable(NodeError):
    """No connection or stream to the peer could be opened."""


class StoreCorrupt(NodeError):
    """The site's store or a checkpoint is unreadable or inconsistent."""
