"""A small federation for node tests: an issuer, sites with real VCs, a ledger.

The ledger here is an in-memory table with the three reads and one write the
daemon uses (``node.auth.MembershipLedger`` and ``node.daemon.ModelLedger``);
credentials, presentations and status lists are the real ``identity`` ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch

from identity.credentials import issue_credential, make_credential
from identity.keys import SigningKey
from identity.proofs import Cryptosuite
from identity.status_list import StatusList, status_list_digest
from node.auth import MEMBERSHIP_CREDENTIAL, CredentialAuthorizer
from node.daemon import AveragingSettings, NodeSettings, SiteNode

JCS = Cryptosuite.EDDSA_JCS_2022


@dataclass
class MemoryLedger:
    members: set[str] = field(default_factory=set)
    status_digests: dict[str, bytes] = field(default_factory=dict)
    models: list[tuple[int, bytes, tuple[bytes, ...], tuple[str, ...]]] = field(
        default_factory=list
    )

    def is_member(self, did: str) -> bool:
        return did in self.members

    def current_status_list_digest(self, issuer_did: str) -> bytes | None:
        return self.status_digests.get(issuer_did)

    def record_model(self, round, model_digest, parents, contributors):
        self.models.append((round, model_digest, tuple(parents), tuple(contributors)))


@dataclass
class Federation:
    issuer: SigningKey
    status_list: StatusList
    ledger: MemoryLedger
    status_vc: dict[str, Any] = field(default_factory=dict)
    keys: list[SigningKey] = field(default_factory=list)
    credentials: list[dict[str, Any]] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)

    def publish_status(self) -> None:
        self.status_vc = self.status_list.to_credential(self.issuer, cryptosuite=JCS)
        self.ledger.status_digests[self.issuer.did] = status_list_digest(self.status_vc)

    def status_lists(self) -> list[dict[str, Any]]:
        return [self.status_vc]

    def add_site(self, *, admit: bool = True) -> int:
        key = SigningKey.generate()
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
        self.keys.append(key)
        self.credentials.append(
            issue_credential(unsigned, self.issuer, cryptosuite=JCS)
        )
        self.indexes.append(index)
        if admit:
            self.ledger.members.add(key.did)
        return len(self.keys) - 1

    def revoke(self, site: int) -> None:
        self.status_list.revoke(self.indexes[site])
        self.publish_status()

    def authorizer(self, site: int) -> CredentialAuthorizer:
        return CredentialAuthorizer(
            self.keys[site],
            [self.credentials[site]],
            [self.issuer.did],
            self.ledger,
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
            ledger=self.ledger,
        )


def make_federation(sites: int) -> Federation:
    issuer = SigningKey.generate()
    status = StatusList.create(issuer, "urn:paroma:status:1")
    federation = Federation(issuer, status, MemoryLedger())
    for _ in range(sites):
        federation.add_site()
    federation.publish_status()
    return federation


def small_state(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(8, 4, 3, generator=gen),
        "conv.bias": torch.randn(8, generator=gen),
        "norm.steps": torch.tensor(3, dtype=torch.int64),
    }
