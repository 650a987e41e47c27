"""Site governance as a ``paroma-node start`` extension.

Enable it in the site's ``node.toml``::

    [policy]
    file = "policy.toml"

    [extensions]
    modules = ["node.governance.extension"]

At start (:func:`node.site.open_site`) the extension reads and checks the
policy (an invalid one stops the start with one line naming the field), wraps
the daemon's authorizer (per-exchange policy hook: ledger roles and
attestation; required credential types), provides the consent-checked
training provider, makes the policy's merge rule the node's, measures and
attests the site's software on the ledger (which publishes its catalogue
offer), and serves the admin interface on 127.0.0.1 for the staff commands.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from typing import Any

import trio
from trio_typing import TaskStatus

from ledger.api import Ledger
from ml.model import ModelConfig
from node.auth import Authorizer, CredentialAuthorizer
from node.config import CONFIG_FILE, SiteConfig
from node.daemon import RobustMode, SiteNode
from node.governance.admin import AdminServer
from node.governance.errors import GovernanceError, PolicyInvalid
from node.governance.policy import Policy, load_policy
from node.governance.site import SiteGovernance
from node.governance.training import GovernedTrainer

logger = logging.getLogger(__name__)

GOVERNANCE_FOLDER = "governance"  # inside the site's store folder


class GovernanceExtension:
    """The :class:`node.site.SiteExtension` of site governance.

    Args:
        config: the site's checked config.

    Raises:
        PolicyInvalid: no policy file configured, or a field of it is wrong.
    """

    def __init__(self, config: SiteConfig) -> None:
        if config.policy is None:
            raise PolicyInvalid(
                "policy.file",
                "is required when node.governance.extension is enabled",
                str(config.folder / CONFIG_FILE),
            )
        self.config = config
        self.policy = load_policy(config.policy)
        self.model_config = (
            ModelConfig.tiny() if config.model == "tiny" else ModelConfig()
        )
        self.governance: SiteGovernance | None = None
        self._trainer: GovernedTrainer | None = None
        self._node: SiteNode | None = None

    def _gov(self) -> SiteGovernance:
        if self.governance is None:
            raise GovernanceError(
                "governance is used before the authorizer was wrapped"
            )
        return self.governance

    def wrap_authorizer(self, authorizer: Authorizer) -> Authorizer:
        """Open the site's governance and put the policy in the authorizer."""
        from node.site import read_status_lists

        if not isinstance(authorizer, CredentialAuthorizer) or not isinstance(
            authorizer.ledger, Ledger
        ):
            raise GovernanceError(
                "node.governance needs the daemon's CredentialAuthorizer over a "
                "ledger.api.Ledger"
            )
        folder = self.config.status_lists
        self.governance = SiteGovernance(
            self.config.store / GOVERNANCE_FOLDER,
            self.policy,
            authorizer.key,
            authorizer.ledger,
            self.model_config,
            scanner_profile=self.config.name,
            status_lists=lambda: read_status_lists(folder),
            policy_path=self.config.policy,
        )
        authorizer.policy = self.governance.peer_gate()
        return self.governance.authorizer(authorizer)

    def trainer(self) -> GovernedTrainer | None:
        """The consent-checked trainer, if the site has consented scans now.

        The daemon fixes its averaging weight at start, so a site that starts
        with no consented scan averages only; scans registered later are
        trained on after the next start.
        """
        gov = self._gov()
        if gov.consented_scans() == 0:
            logger.warning(
                "no consented scans at start: this site averages but does not "
                "train until it is restarted with registered scans"
            )
            return None
        self._trainer = gov.trainer()
        return self._trainer

    def attach(self, node: SiteNode) -> None:
        """Tie the trainer to the node and attest the site's software."""
        self._node = node
        if self._trainer is not None:
            self._trainer.current_round = lambda: node.round
            self._trainer.admitted_peers = lambda: len(node.admitted_peers())
        gov = self._gov()
        apply_merge_rule(node, gov.policy)
        gov.policy_listeners.append(lambda policy: apply_merge_rule(node, policy))
        measurement = gov.attest()
        logger.info("software measurement %s", measurement.digest.hex())

    async def run(
        self, *, task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the admin interface until cancelled (started with the node)."""
        server = AdminServer(self._gov(), on_retrained=self._install_retrained)
        await server.run(task_status=task_status)

    def _install_retrained(self, state: dict[str, Any]) -> None:
        """Make the retrained weights the node's model (called from the worker
        thread of an admin action, so it enters trio through ``from_thread``)."""
        node = self._node
        if node is None:
            raise GovernanceError("retrained weights arrived before the node")
        trio.from_thread.run(partial(node.install, state, kind="retrain"))
        logger.info("installed the model retrained without the erased patient")


def apply_merge_rule(node: SiteNode, policy: Policy) -> None:
    """Make the policy's ``[training]`` merge rule the node's averaging rule.

    The daemon reads its settings at every exchange, so a new policy applies
    from the next exchange on.
    """
    rules = policy.training
    averaging = replace(
        node.settings.averaging,
        robust=RobustMode(rules.robust.value),
        tau=rules.tau,
        trim=rules.trim,
    )
    node.settings = replace(node.settings, averaging=averaging)


def extension(config: SiteConfig) -> GovernanceExtension:
    """The entry point ``node.site.load_extensions`` calls."""
    return GovernanceExtension(config)
