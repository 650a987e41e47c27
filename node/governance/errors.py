"""Errors of site governance (policy, staff, consent, erasure, attestation).

    ParomaError
    └── NodeError
        └── GovernanceError
            ├── PolicyInvalid         a policy field is missing or wrong (named)
            ├── StaffRefused          a staff action's presentation was refused
            ├── PatientUnknown        no registered patient has that pseudonym
            ├── PatientExists         the pseudonym is already registered
            ├── ConsentNotActive      a case was about to be used without consent
            ├── PrivacyBudgetSpent    DP training would exceed the epsilon budget
            ├── AttestationRefused    a peer's software measurement is not accepted
            └── AdminUnreachable      the command could not reach the admin interface

Messages name the input and what was expected. None carries a pseudonym, a salt,
a key or a passphrase: a patient is named in messages only as "the patient".
"""

from __future__ import annotations

from common.errors import BadInput
from node.errors import NodeError


class GovernanceError(NodeError):
    """Any failure of the site's governance."""


class PolicyInvalid(GovernanceError, BadInput):
    """A policy field is missing or invalid.

    Attributes:
        field: the dotted name of the field, e.g. ``privacy.delta``.
    """

    def __init__(self, field: str, reason: str, source: str = "policy") -> None:
        super().__init__(f"{source}: field {field!r} {reason}")
        self.field = field


class StaffRefused(GovernanceError):
    """A staff presentation does not authorize the action (the message says why)."""


class PatientUnknown(GovernanceError, BadInput):
    """No registered (unerased) patient has the given pseudonym."""


class PatientExists(GovernanceError, BadInput):
    """The pseudonym is already registered at this site."""


class ConsentNotActive(GovernanceError):
    """A case's consent is withdrawn or expired; its voxels must not be read."""


class PrivacyBudgetSpent(GovernanceError):
    """Another DP training step would spend more than the policy's epsilon budget."""


class AttestationRefused(GovernanceError):
    """A peer's latest attestation is missing or names an unaccepted measurement."""


class AdminUnreachable(GovernanceError):
    """The site's admin interface did not answer (is the node running?)."""
