"""PAROMA-MED ledger: the federation's membership and audit registries on chain.

Start from :func:`open_ledger` (or :func:`deploy_federation`); the interface
is :class:`ledger.api.Ledger`. See docs/ledger.md.
"""

from ledger.api import Event, EventKind, Ledger, Member, OfferKind, Proposal, TxReceipt
from ledger.open import account_address, deploy_federation, new_account_key, open_ledger

__all__ = [
    "Event",
    "EventKind",
    "Ledger",
    "Member",
    "OfferKind",
    "Proposal",
    "TxReceipt",
    "account_address",
    "deploy_federation",
    "new_account_key",
    "open_ledger",
]
