"""The ledger's errors.

    ParomaError
    └── LedgerError                 anything the ledger reports
        ├── LedgerUnreachable       the JSON-RPC endpoint did not answer (after retries)
        ├── TransactionReverted     the contract refused a transaction (``.reason``)
        ├── MalformedDigest         a digest or id is not 32 bytes (also BadInput)
        └── LedgerConfigError       a ledger folder, URL or deployment is unusable

    ParomaError
    └── contracts.build.ContractArtifactError   artifacts missing or uncompilable
        (re-exported here; defined in ``contracts`` so that package needs
        nothing from ``ledger``)

Backends raise different exceptions for the same revert (eth-tester's
``TransactionFailed``, web3's ``ContractLogicError``, an anvil JSON-RPC error
object); :mod:`ledger.client` translates them all into ``TransactionReverted``.
"""

from __future__ import annotations

from common.errors import BadInput, ParomaError
from contracts.build import ContractArtifactError


class LedgerError(ParomaError):
    """Any error of the ledger client or its contracts."""


class LedgerUnreachable(LedgerError):
    """The ledger's JSON-RPC endpoint could not be reached, even after retries."""


class TransactionReverted(LedgerError):
    """The contract reverted a transaction or call.

    Attributes:
        reason: the contract's revert reason (e.g. ``"not a member"``), or
            ``"unknown"`` when the backend gave none.
    """

    def __init__(self, reason: str, *, operation: str = "transaction") -> None:
        super().__init__(f"{operation} reverted: {reason}")
        self.reason = reason
        self.operation = operation


class MalformedDigest(LedgerError, BadInput):
    """A digest, commitment or offer id is not exactly 32 bytes (or not hex)."""


class LedgerConfigError(LedgerError, BadInput):
    """A ledger folder, URL, contract address or deployment parameter is unusable."""


__all__ = [
    "ContractArtifactError",
    "LedgerConfigError",
    "LedgerError",
    "LedgerUnreachable",
    "MalformedDigest",
    "TransactionReverted",
]
