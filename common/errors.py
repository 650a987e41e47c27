"""The root of PAROMA-MED's exceptions.

    ParomaError
    ├── identity.errors.IdentityError ...
    ├── ledger.errors.LedgerError ...
    ├── ml.errors.MLError ...
    ├── node.errors.NodeError ...
    └── simulator.errors.ScenarioError ...

Each package's own ``errors`` module draws its branch. A command catches
``ParomaError`` at the top, prints its message on one line and exits non-zero.
Messages name the input and what was expected, and never carry a patient
identifier, a salt, a key or a passphrase.
"""

from __future__ import annotations


class ParomaError(Exception):
    """Any error PAROMA-MED reports to its user, with a message fit to print."""


class BadInput(ParomaError):
    """An input (file, argument, config field, message) is not what was expected."""
