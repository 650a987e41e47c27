"""The explorer's errors.

    ParomaError
    └── ExplorerError               anything the explorer reports
        ├── BadQuery                a filter, cursor, upload or form field is unusable
        │                           (also common.errors.BadInput)
        ├── SignInRefused           a presentation was refused at sign-in (``.reasons``)
        └── NotSignedIn             a data request came without a valid session

Ledger errors (:mod:`ledger.errors`) pass through unchanged: the server turns
them into HTTP 502/400 answers and the command into a one-line error.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.errors import BadInput, ParomaError


class ExplorerError(ParomaError):
    """Any error of the ledger explorer."""


class BadQuery(ExplorerError, BadInput):
    """A filter, cursor, uploaded file or form field is not what was expected."""


class SignInRefused(ExplorerError):
    """An auditor's presentation was refused.

    Attributes:
        reasons: one line per failed check, each starting with the check's name
            (``challenge``, ``credential type``, ``untrusted issuer``, or one
            of :class:`identity.credentials.VerificationResult`'s error names).
    """

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("sign-in refused: " + "; ".join(reasons))
        self.reasons = list(reasons)


class NotSignedIn(ExplorerError):
    """A data request came without a session, or with an expired one."""
