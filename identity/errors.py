"""The identity package's exceptions.

    ParomaError
    └── IdentityError
        ├── InvalidDid                 a DID string or DID document is not usable
        │   └── DidResolutionFailed    did:web fetch failed or returned junk
        ├── InvalidKey                 key bytes / multibase of the wrong shape
        ├── MalformedDocument          JSON that cannot be parsed or lacks fields
        ├── UnknownContext             a JSON-LD context URL not shipped offline
        ├── UnsupportedCryptosuite     a proof names a suite we do not implement
        ├── CredentialInvalid          a credential or presentation failed a check
        ├── StatusListError            a status list index/state is unusable
        └── KeystoreError
            ├── WrongPassphrase        the passphrase does not open the keystore
            ├── KeystoreCorrupt        a keystore file is damaged (never rewritten)
            ├── KeystoreExists         ``create`` over an existing keystore
            ├── KeystoreMissing        ``open`` where no keystore is
            ├── CredentialNotFound     no stored credential has that id
            ├── SecretNotFound         no sealed secret has that name
            └── SecretExists           ``put_secret`` over a stored secret

Messages name the input and what was expected; none carries a key, a seed or a
passphrase.
"""

from __future__ import annotations

from common.errors import ParomaError


class IdentityError(ParomaError):
    """Any failure of keys, DIDs, credentials, status lists or the keystore."""


class InvalidDid(IdentityError):
    """A DID or a DID document cannot be used (bad syntax, unsupported method)."""


class DidResolutionFailed(InvalidDid):
    """A did:web document could not be fetched or is not a valid DID document."""


class InvalidKey(IdentityError):
    """Key material has the wrong length, codec or encoding."""


class MalformedDocument(IdentityError):
    """A JSON document cannot be parsed, or lacks a field that must be there."""


class UnknownContext(IdentityError):
    """A JSON-LD ``@context`` URL is not among the contexts shipped offline."""


class UnsupportedCryptosuite(IdentityError):
    """A proof names a cryptosuite or proof type this package does not implement."""


class CredentialInvalid(IdentityError):
    """A credential or presentation failed verification; the message names why."""


class StatusListError(IdentityError):
    """A status list index is out of range, or the list is full or malformed."""


class KeystoreError(IdentityError):
    """The encrypted keystore folder cannot be created, opened or updated."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not open this keystore; nothing was changed."""


class KeystoreCorrupt(KeystoreError):
    """A keystore file is damaged; it is reported and never overwritten."""


class KeystoreExists(KeystoreError):
    """A keystore already exists where a new one was to be created."""


class KeystoreMissing(KeystoreError):
    """No keystore exists at the given folder."""


class CredentialNotFound(KeystoreError):
    """No credential with the given id is stored in the keystore."""


class SecretNotFound(KeystoreError):
    """No sealed secret with the given name is stored in the keystore."""


class SecretExists(KeystoreError):
    """A sealed secret with that name is already stored (and was kept)."""
