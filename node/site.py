"""Assemble a running site from its folder: keystore, ledger, authorizer, model.

``paroma-node start`` calls :func:`open_site`; the simulator and tests build a
:class:`node.daemon.SiteNode` directly. Extensions (site governance) plug in
through the config's ``[extensions] modules``: each named module exposes
``extension(config) -> SiteExtension``, which may wrap the authorizer (policy,
consent, attestation checks) and attach protocols to the node.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from identity.keys import SigningKey
from identity.keystore import Keystore
from ml.model import ModelConfig, build_model
from node.auth import Authorizer, CredentialAuthorizer, MembershipLedger
from node.config import LEDGER_ACCOUNT_SECRET, SiteConfig
from node.daemon import ModelLedger, SiteNode, TrainingProvider
from node.errors import ConfigInvalid

logger = logging.getLogger(__name__)


class SiteExtension(Protocol):
    """What an extension module's ``extension(config)`` returns."""

    def wrap_authorizer(self, authorizer: Authorizer) -> Authorizer:
        """Return an authorizer that adds checks around ``authorizer``."""
        ...

    def attach(self, node: SiteNode) -> None:
        """Register protocols on ``node`` (before it runs)."""
        ...

    def trainer(self) -> TrainingProvider | None:
        """The site's local training, if this extension provides the data."""
        ...


class SiteLedger(MembershipLedger, ModelLedger, Protocol):
    """The ledger reads and writes a site needs."""

    def sync(self) -> int: ...

    def close(self) -> None: ...


def read_status_lists(folder: Path) -> list[dict[str, Any]]:
    """The status list credentials saved in ``folder`` (``*.json``).

    Unreadable files are skipped with a warning: the authorizer then lacks
    that list and refuses credentials pointing to it, which is the safe side.
    """
    lists: list[dict[str, Any]] = []
    if not folder.is_dir():
        return lists
    for path in sorted(folder.glob("*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("skipping status list %s: %s", path, exc)
            continue
        if isinstance(document, dict):
            lists.append(document)
    return lists


def load_extensions(names: Sequence[str], config: SiteConfig) -> list[SiteExtension]:
    """Import each module and call its ``extension(config)``."""
    extensions: list[SiteExtension] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigInvalid(
                f"config field 'extensions.modules': cannot import {name!r}"
            ) from exc
        factory = getattr(module, "extension", None)
        if factory is None:
            raise ConfigInvalid(
                f"config field 'extensions.modules': {name!r} has no extension()"
            )
        extensions.append(factory(config))
    return extensions


@dataclass
class OpenedSite:
    """A site ready to run: its node and what must be closed after it."""

    node: SiteNode
    ledger: SiteLedger


def open_ledger_for(config: SiteConfig, account_key: bytes | None) -> SiteLedger:
    """Open the federation ledger named in the config with the site's account.

    Args:
        config: the checked config (``ledger.spec``, ``ledger.contract_address``).
        account_key: the site's ledger account key, from its keystore (None:
            read-only, the site's writes such as model provenance then fail).
    """
    from ledger import open_ledger

    if not config.ledger_spec:
        raise ConfigInvalid("config field 'ledger.spec' is empty (folder or URL)")
    ledger: SiteLedger = open_ledger(
        config.ledger_spec,
        account_key=account_key,
        contract_address=config.contract_address,
    )
    return ledger


def open_site(
    config: SiteConfig,
    passphrase: str,
    *,
    extensions: Sequence[SiteExtension] = (),
) -> OpenedSite:
    """Build the site's node from its config and keystore.

    Args:
        config: the checked config.
        passphrase: the keystore's passphrase (never logged).
        extensions: governance and other add-ons.
    """
    keystore = Keystore.open(config.keystore, passphrase)
    key: SigningKey = keystore.signing_key
    credentials = [c for _, c in keystore.list_credentials()]
    if not config.issuer_dids:
        raise ConfigInvalid("config field 'federation.issuer_dids' is empty")
    account_key: bytes | None = None
    if keystore.has_secret(LEDGER_ACCOUNT_SECRET):
        account_key = keystore.get_secret(LEDGER_ACCOUNT_SECRET)
    else:
        logger.warning(
            "no ledger account key in the keystore at %s: the ledger is read-only "
            "and model provenance will not be recorded",
            config.keystore,
        )
    ledger = open_ledger_for(config, account_key)
    authorizer: Authorizer = CredentialAuthorizer(
        key,
        credentials,
        config.issuer_dids,
        ledger,
        lambda: read_status_lists(config.status_lists),
    )
    trainer: TrainingProvider | None = None
    for extension in extensions:
        authorizer = extension.wrap_authorizer(authorizer)
        trainer = trainer or extension.trainer()
    model_config = ModelConfig.tiny() if config.model == "tiny" else ModelConfig()
    initial = build_model(model_config).state_dict()
    node = SiteNode(
        key,
        config.node_settings(),
        authorizer,
        initial,
        config.n_samples,
        ledger=ledger,
        trainer=trainer,
    )
    for extension in extensions:
        extension.attach(node)
    return OpenedSite(node, ledger)
