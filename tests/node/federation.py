"""A small federation for node tests: an issuer, sites with real VCs, a real ledger.

The ledger is the embedded federation ledger (py-evm through eth-tester, see
docs/ledger.md) in a folder. Two founders deploy it with threshold k=2: the
credential issuer and a co-founding institution. A site is admitted the way
a real one is: the issuer proposes its DID and ledger account (its vote
counts), the co-founder votes, and the second vote admits it; a site left at
one vote is not a member. Each site writes from its own ledger account
(model provenance) and reads membership and status list digests through its
own handle. Revoking a credential flips its bit in the issuer's Bitstring
Status List and publishes the new list's digest on the ledger.

Deploying costs about a second, so :func:`deploy_template` runs once per test
session and each federation starts from a copy of that folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch

from identity.credentials import issue_credential, make_credential
from identity.keys import SigningKey
from identity.proofs import Cryptosuite
from identity.status_list import StatusList, status_list_digest
from ledger import (
    Ledger,
    account_address,
    deploy_federation,
    new_account_key,
    open_ledger,
)
from node.auth import MEMBERSHIP_CREDENTIAL, CredentialAuthorizer
from node.daemon import AveragingSettings, NodeSettings, SiteNode

JCS = Cryptosuite.EDDSA_JCS_2022
THRESHOLD = 2  # votes of current members to admit a site


@dataclass(frozen=True)
class LedgerTemplate:
    """A deployed, closed embedded ledger folder and its two founders' keys."""

    folder: Path
    issuer: SigningKey
    issuer_account: bytes
    cofounder: SigningKey
    cofounder_account: bytes


def deploy_template(folder: Path) -> LedgerTemplate:
    """Deploy the federation contract into ``folder`` with the two founders."""
    issuer, cofounder = SigningKey.generate(), SigningKey.generate()
    issuer_account, cofounder_account = new_account_key(), new_account_key()
    founders = [
        (issuer.did, account_address(issuer_account), ["issuer"]),
        (cofounder.did, account_address(cofounder_account), ["site"]),
    ]
    deploy_federation(
        folder, deployer_key=issuer_account, founders=founders, threshold=THRESHOLD
    ).close()
    return LedgerTemplate(folder, issuer, issuer_account, cofounder, cofounder_account)


@dataclass
class Federation:
    """The federation of one test; :meth:`close` releases every ledger handle.

    Attributes:
        folder: the embedded ledger folder (a copy of the template).
        issuer: the credential issuer's key (a founder).
        status_list: the issuer's status list (private state).
        ledger: the issuer's ledger handle (founder account).
        cofounder_ledger: the second founder's handle (votes admissions).
        keys, credentials, indexes, accounts, ledgers: per site, by site number:
            DID key, membership credential, status list index, ledger account
            key, and the site's own ledger handle.
    """

    folder: Path
    issuer: SigningKey
    status_list: StatusList
    ledger: Ledger
    cofounder_ledger: Ledger
    status_vc: dict[str, Any] = field(default_factory=dict)
    keys: list[SigningKey] = field(default_factory=list)
    credentials: list[dict[str, Any]] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    accounts: list[bytes] = field(default_factory=list)
    ledgers: list[Ledger] = field(default_factory=list)
    proposals: list[int] = field(default_factory=list)

    def publish_status(self) -> None:
        """Sign the status list and publish its digest on the ledger (blocking)."""
        self.status_vc = self.status_list.to_credential(self.issuer, cryptosuite=JCS)
        self.ledger.publish_status_list(
            self.issuer.did, status_list_digest(self.status_vc)
        )

    def status_lists(self) -> list[dict[str, Any]]:
        return [self.status_vc]

    def add_site(self, *, admit: bool = True) -> int:
        """A new site with a membership credential; voted in unless ``admit=False``.

        Without ``admit`` the site's admission is proposed but gets only the
        proposer's vote (1 of the k=2 needed), so it is not a member. Blocking.
        """
        key = SigningKey.generate()
        account = new_account_key()
        index = self.status_list.allocate()
        unsigned = make_credential(
            self.issuer.did,
            key.did,
            [MEMBERSHIP_CREDENTIAL],
            {"role": "site"},
            datetime.now(UTC) - timedelta(minutes=1),
            datetime.now(UTC) + timedelta(days=1),
            status=self.status_list.entry(index),
        )
        proposal = self.ledger.propose_member(
            key.did, account_address(account), ["site"]
        )
        assert proposal is not None
        if admit:
            self.cofounder_ledger.vote(proposal)
        self.keys.append(key)
        self.credentials.append(
            issue_credential(unsigned, self.issuer, cryptosuite=JCS)
        )
        self.indexes.append(index)
        self.accounts.append(account)
        self.proposals.append(proposal)
        self.ledgers.append(open_ledger(self.folder, account_key=account))
        return len(self.keys) - 1

    def revoke(self, site: int) -> None:
        """Revoke the site's credential and publish the new list (blocking)."""
        self.status_list.revoke(self.indexes[site])
        self.publish_status()

    def authorizer(self, site: int) -> CredentialAuthorizer:
        return CredentialAuthorizer(
            self.keys[site],
            [self.credentials[site]],
            [self.issuer.did],
            self.ledgers[site],
            self.status_lists,
            cryptosuite=JCS,
        )

    def node(
        self,
        site: int,
        folder: Path,
        state: dict[str, torch.Tensor],
        n_samples: float,
        *,
        authorizer=None,
        **averaging,
    ) -> SiteNode:
        settings = NodeSettings(
            store=folder / f"site{site}",
            averaging=AveragingSettings(
                **{"period_s": 0, "step_timeout_s": 10.0, **averaging}
            ),
            maintenance_s=0.2,
            status_file=folder / f"site{site}" / "status.json",
        )
        return SiteNode(
            self.keys[site],
            settings,
            authorizer or self.authorizer(site),
            state,
            n_samples,
            ledger=self.ledgers[site],
        )

    def close(self) -> None:
        for handle in (*self.ledgers, self.cofounder_ledger, self.ledger):
            handle.close()


def make_federation_on(
    template: LedgerTemplate, folder: Path, sites: int
) -> Federation:
    """A federation on a copy of ``template`` in ``folder`` with ``sites`` members."""
    shutil.copytree(template.folder, folder)
    issuer_ledger = open_ledger(folder, account_key=template.issuer_account)
    federation = Federation(
        folder,
        template.issuer,
        StatusList.create(template.issuer, "urn:paroma:status:1"),
        issuer_ledger,
        open_ledger(folder, account_key=template.cofounder_account),
    )
    try:
        for _ in range(sites):
            federation.add_site()
        federation.publish_status()
    except BaseException:
        federation.close()
        raise
    return federation


def small_state(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(8, 4, 3, generator=gen),
        "conv.bias": torch.randn(8, generator=gen),
        "norm.steps": torch.tensor(3, dtype=torch.int64),
    }
