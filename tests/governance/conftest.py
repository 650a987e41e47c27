"""A small federation for governance tests: an embedded ledger, two sites,
staff credentials from the site, phantoms of 32^3 voxels."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch

from identity.credentials import issue_credential, make_credential
from identity.keys import SigningKey
from identity.proofs import Cryptosuite
from identity.status_list import StatusList
from ledger import (
    Ledger,
    account_address,
    deploy_federation,
    new_account_key,
    open_ledger,
)
from ml.model import ModelConfig
from ml.phantom import generate_phantom, write_phantom_nifti
from node.governance.policy import Policy, example_policy
from node.governance.site import SiteGovernance

JCS = Cryptosuite.EDDSA_JCS_2022
PATCH = (16, 16, 16)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path]]:
    """Four phantom scans with labels (NIfTI), written once."""
    folder = tmp_path_factory.mktemp("phantoms")
    return [
        write_phantom_nifti(generate_phantom(i, shape=(32, 32, 32)), folder, f"p{i}")
        for i in range(4)
    ]


@dataclass
class Fed:
    root: Path
    keys: list[SigningKey]
    ledgers: list[Ledger]
    govs: list[SiteGovernance] = field(default_factory=list)
    staff_status: StatusList | None = None

    def gov(self, site: int, policy: Policy | None = None, **kw: Any) -> SiteGovernance:
        gov = SiteGovernance(
            self.root / f"site{site}" / "governance",
            policy or example_policy(),
            self.keys[site],
            self.ledgers[site],
            ModelConfig.tiny(),
            scanner_profile="alpha",
            **kw,
        )
        self.govs.append(gov)
        return gov


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Fed]:
    keys = [SigningKey.generate() for _ in range(3)]
    accounts = [new_account_key() for _ in keys]
    founders = [
        (k.did, account_address(a), ["site"])
        for k, a in zip(keys, accounts, strict=True)
    ]
    first = deploy_federation(
        tmp_path / "ledger", deployer_key=accounts[0], founders=founders, threshold=1
    )
    ledgers = [first] + [
        open_ledger(tmp_path / "ledger", account_key=a) for a in accounts[1:]
    ]
    f = Fed(tmp_path, keys, ledgers)
    yield f
    for gov in f.govs:
        gov.close()
    for led in ledgers:
        led.close()


def staff_credential(
    issuer: SigningKey,
    holder: SigningKey,
    role: str,
    *,
    status: StatusList | None = None,
    index: int | None = None,
    valid_for: timedelta = timedelta(days=1),
    type_: str = "StaffRoleCredential",
) -> dict[str, Any]:
    now = datetime.now(UTC)
    unsigned = make_credential(
        issuer.did,
        holder.did,
        [type_],
        {"role": role},
        now - timedelta(days=2),
        now + valid_for,
        status=status.entry(index)
        if status is not None and index is not None
        else None,
    )
    return issue_credential(unsigned, issuer, cryptosuite=JCS)


def with_policy(policy: Policy, **sections: Any) -> Policy:
    return replace(policy, **sections)


@pytest.fixture
def collect_sockets() -> Iterator[None]:
    """Collect sockets the libp2p host left to the garbage collector.

    After ``host.close()`` a dialled TCP socket is sometimes only freed by the
    garbage collector (kept alive by reference cycles of the connection
    objects), and its ResourceWarning would fail whichever later test happens
    to trigger the collection. Collect it when this test is over, silently.
    """
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
