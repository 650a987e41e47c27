"""A realistic federation history on an embedded ledger, for the explorer's tests.

Until the simulator writes one, this fills a ledger through the public Ledger
API in the order a federation lives it: three founding hospitals (k = 2), a
fourth admitted by two votes, attestations of each other's software,
consents registered (one withdrawn, one erased: request then completion),
three rounds of models with pairwise averages (parents and contributors),
catalogue offers, an issuer's status list published twice (so one version
is current and one is superseded), and the third founder removed at the end
by two votes.

Also the auditor side: a regulator (trusted issuer) who issued an
AuditorCredential to an auditor, and the credentials that must be refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save as np_save

from identity.credentials import create_presentation, issue_credential, make_credential
from identity.keys import SigningKey
from identity.status_list import StatusList, status_list_digest
from ledger import (
    OfferKind,
    account_address,
    deploy_federation,
    new_account_key,
    open_ledger,
)
from ledger.api import Ledger
from ledger.commitments import commit, new_salt

JCS = "eddsa-jcs-2022"

# Members write free text (offer URIs, DIDs) that the page must show as text.
MARKUP_URI = "https://b.example/o/2?<img src=x id=injected>"


def model_file(seed: int) -> tuple[bytes, bytes]:
    """A tiny float32 safetensors checkpoint and its model digest."""
    rng = np.random.default_rng(seed)
    state = {
        "conv.weight": rng.standard_normal((4, 1, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(4).astype(np.float32),
    }
    data = np_save({k: state[k] for k in sorted(state)})
    return data, hashlib.sha256(data).digest()


@dataclass
class Disclosure:
    """What a hospital discloses to an auditor about one consent."""

    salt: bytes
    pseudonym: str
    purpose: int
    commitment: bytes


@dataclass
class Scenario:
    folder: Path
    sites: dict[str, SigningKey]  # name -> DID key (A..D)
    dids: dict[str, str]
    consents: list[Disclosure]
    withdrawn: Disclosure
    erased: Disclosure
    models: dict[str, bytes]  # label -> 32-byte digest
    model_bytes: bytes  # the safetensors file of models["a1"]
    rounds: dict[int, list[str]]
    status_old: dict[str, Any]
    status_new: dict[str, Any]
    issuer: SigningKey  # the status list issuer (hospital A's identity office)
    regulator: SigningKey  # trusted issuer of AuditorCredentials
    auditor: SigningKey
    auditor_vc: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def present(
        self, vc: dict[str, Any], challenge: str, domain: str, holder=None
    ) -> dict[str, Any]:
        return create_presentation(
            [vc],
            holder or self.auditor,
            challenge=challenge,
            domain=domain,
            cryptosuite=JCS,
        )


def credential(
    issuer: SigningKey, subject: SigningKey, kind: str, **kw
) -> dict[str, Any]:
    now = datetime.now(UTC)
    unsigned = make_credential(
        issuer.did,
        subject.did,
        [kind],
        {"role": "auditor"},
        kw.get("valid_from", now - timedelta(days=1)),
        kw.get("valid_until", now + timedelta(days=30)),
    )
    return issue_credential(unsigned, issuer, cryptosuite=JCS)


def build(folder: Path) -> Scenario:
    sites = {n: SigningKey.generate() for n in "ABCD"}
    dids = {n: k.did for n, k in sites.items()}
    keys = {n: new_account_key() for n in "ABCD"}
    founders = [(dids[n], account_address(keys[n]), ["site"]) for n in "ABC"]
    a = deploy_federation(
        folder, deployer_key=keys["A"], founders=founders, threshold=2
    )
    led: dict[str, Ledger] = {"A": a}
    for n in "BC":
        led[n] = open_ledger(folder, account_key=keys[n])
    try:
        # Admission of D: A proposes (its vote counts), B votes: k = 2.
        pid = a.propose_member(dids["D"], account_address(keys["D"]), ["site"])
        assert pid is not None
        led["B"].vote(pid)
        led["D"] = open_ledger(folder, account_key=keys["D"])

        # Attestations of software measurements.
        measure = hashlib.sha256(b"paroma-node 0.1.0").digest()
        evidence = hashlib.sha256(b"evidence").digest()
        a.record_attestation(dids["B"], measure, evidence, True)
        led["B"].record_attestation(dids["D"], measure, evidence, True)
        led["C"].record_attestation(
            dids["D"], hashlib.sha256(b"old").digest(), evidence, False
        )

        # Consents at A: four registered, one withdrawn, one erased.
        consents = []
        for i in range(4):
            salt, pseudonym, purpose = new_salt(), f"PSN-A-{i:04d}", 1 + i % 2
            consents.append(
                Disclosure(salt, pseudonym, purpose, commit(salt, pseudonym, purpose))
            )
        with a.batch():
            for c in consents:
                a.register_consent(c.commitment, c.purpose, 0)
        a.withdraw_consent(consents[1].commitment)
        a.request_erasure(consents[2].commitment)
        a.complete_erasure(consents[2].commitment, hashlib.sha256(b"erasure").digest())

        # Models: round 1 local, round 2 pairwise A+B and C+D, round 3 A+C.
        data, a1 = model_file(1)
        models = {"a1": a1}
        for n in "BCD":
            models[f"{n.lower()}1"] = model_file(ord(n))[1]
        models["ab2"] = hashlib.sha256(b"ab2").digest()
        models["cd2"] = hashlib.sha256(b"cd2").digest()
        models["ac3"] = hashlib.sha256(b"ac3").digest()
        for n in "ABCD":
            led[n].record_model(1, models[f"{n.lower()}1"], [], [dids[n]])
        for n in "AB":
            led[n].record_model(
                2, models["ab2"], [models["a1"], models["b1"]], [dids["A"], dids["B"]]
            )
        for n in "CD":
            led[n].record_model(
                2, models["cd2"], [models["c1"], models["d1"]], [dids["C"], dids["D"]]
            )
        a.record_model(
            3,
            models["ac3"],
            [models["ab2"], models["cd2"]],
            [dids[n] for n in "ABCD"],
        )

        # Catalogue offers.
        offer = hashlib.sha256(b"offer-1").digest()
        led["B"].publish_offer(
            offer,
            OfferKind.DATA,
            hashlib.sha256(b"meta").digest(),
            "https://b.example/o/1",
        )
        led["B"].publish_offer(
            hashlib.sha256(b"offer-2").digest(),
            OfferKind.SERVICE,
            hashlib.sha256(b"meta2").digest(),
            MARKUP_URI,
        )
        led["B"].withdraw_offer(offer)

        # A status list, published, then a new version after a revocation.
        issuer = sites["A"]
        status = StatusList.create(issuer, "https://a.example/status/1")
        old = status.to_credential(issuer, cryptosuite=JCS)
        a.publish_status_list(issuer.did, status_list_digest(old))
        status.revoke(status.allocate())
        new = status.to_credential(issuer, cryptosuite=JCS)
        a.publish_status_list(issuer.did, status_list_digest(new))

        # C leaves: a removal takes k = 2 votes too.
        removal = a.propose_removal(dids["C"])
        assert removal is not None
        led["B"].vote(removal)
    finally:
        for handle in led.values():
            handle.close()

    regulator = SigningKey.generate()
    auditor = SigningKey.generate()
    return Scenario(
        folder=folder,
        sites=sites,
        dids=dids,
        consents=consents,
        withdrawn=consents[1],
        erased=consents[2],
        models=models,
        model_bytes=data,
        rounds={1: ["a1", "b1", "c1", "d1"], 2: ["ab2", "cd2"], 3: ["ac3"]},
        status_old=old,
        status_new=new,
        issuer=issuer,
        regulator=regulator,
        auditor=auditor,
        auditor_vc=credential(regulator, auditor, "AuditorCredential"),
    )
