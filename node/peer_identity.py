"""A site's libp2p identity *is* its DID key.

The Noise handshake (libp2p noise spec, "Authentication") proves possession of
the libp2p identity key, and for Ed25519 keys the peer ID embeds the public key
itself (identity multihash, libp2p peer-ids spec). Deriving the key pair from the
site's Ed25519 seed therefore makes the peer ID and the ``did:key`` two spellings
of one public key: each converts into the other and they cannot disagree.
"""

from __future__ import annotations

from typing import NewType

from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.peer.id import ID

from identity.did import did_key_from_public_key, public_key_from_did_key
from identity.errors import IdentityError
from identity.keys import SigningKey
from node.errors import PeerRefused

Did = NewType("Did", str)
PeerIdText = NewType("PeerIdText", str)


def key_pair_from_signing_key(key: SigningKey) -> KeyPair:
    """libp2p's Ed25519 key pair for the same RFC 8032 seed as ``key``."""
    pair = create_new_key_pair(key.seed)
    if pair.public_key.to_bytes() != key.public_bytes:
        # Both libraries implement RFC 8032 §5.1.5; a mismatch is a bug, not input.
        raise AssertionError("libp2p and identity derive different Ed25519 keys")
    return pair


def peer_id_from_did(did: str) -> ID:
    """The libp2p peer ID of an Ed25519 ``did:key``.

    Raises:
        PeerRefused: ``did`` is not an Ed25519 did:key.
    """
    try:
        public = public_key_from_did_key(did)
    except IdentityError as exc:
        raise PeerRefused(f"{did!r} is not an Ed25519 did:key") from exc
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(public))


def did_from_peer_id(peer_id: ID) -> Did:
    """The ``did:key`` named by an Ed25519 peer ID (which inlines its key).

    Raises:
        PeerRefused: the peer ID does not carry an Ed25519 public key (e.g. an
            RSA peer, whose ID is only a hash of its key).
    """
    public = peer_id.extract_public_key()
    if public is None or public.get_type() != KeyType.Ed25519:
        raise PeerRefused(f"peer {peer_id} does not use an Ed25519 identity key")
    return Did(did_key_from_public_key(public.to_bytes()))
