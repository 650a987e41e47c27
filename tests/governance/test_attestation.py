"""Attestation: measurements, signed evidence, peers refused for changed software."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from identity.credentials import issue_credential, make_credential
from identity.status_list import StatusList, status_list_digest
from ledger.api import EventKind
from ml.model import ModelConfig
from node.auth import MEMBERSHIP_CREDENTIAL, CredentialAuthorizer
from node.daemon import AveragingSettings, NodeSettings, SiteNode
from node.errors import PeerRefused
from node.governance.attestation import (
    check_peer,
    evidence_digest,
    latest_attestation,
    make_evidence,
    measure_software,
    package_roots,
    verify_evidence,
)
from node.governance.errors import AttestationRefused
from node.governance.policy import example_policy, with_measurements

from .conftest import JCS

PLACEHOLDER = bytes(32)


def changed_roots(tmp_path: Path) -> dict[str, Path]:
    """The installed packages, with one source file of ``common`` changed."""
    roots = package_roots()
    copy = tmp_path / "tree" / "common"
    shutil.copytree(roots["common"], copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "errors.py").open("a") as f:
        f.write("\n# an unreviewed change\n")
    return {**roots, "common": copy}


@pytest.fixture(scope="module")
def policies():
    """(measurement of the installed software, a policy accepting only it)."""
    probe = with_measurements(example_policy(), [PLACEHOLDER])
    good = measure_software(probe, ModelConfig.tiny())
    policy = with_measurements(example_policy(), [good.digest])
    assert measure_software(policy, ModelConfig.tiny()).digest == good.digest
    return good, policy


def test_measurement_covers_files_model_and_policy(policies, tmp_path):
    good, policy = policies
    assert any(f.startswith("node/governance/") for f in good.files)
    assert any(f.startswith("contracts/artifacts/") for f in good.contracts)
    assert not any("__pycache__" in f for f in good.files)
    changed = measure_software(
        policy, ModelConfig.tiny(), roots=changed_roots(tmp_path)
    )
    assert changed.digest != good.digest
    assert [f for f in good.files if good.files[f] != changed.files[f]] == [
        "common/errors.py"
    ]
    other_model = measure_software(policy, ModelConfig())
    assert other_model.digest != good.digest and other_model.files == good.files
    looser = replace(
        policy, raw={**policy.raw, "peers": {**policy.raw["peers"], "min_peers": 9}}
    )
    assert measure_software(looser, ModelConfig.tiny()).digest != good.digest


def test_evidence_is_signed_and_has_room_for_hardware(fed, policies):
    good, _ = policies
    key = fed.keys[0]
    evidence = make_evidence(key, good, hardware={"tpm": "base64-quote"})
    assert evidence["type"] == "software" and evidence["hardware"] == {
        "tpm": "base64-quote"
    }
    assert evidence["measurement"] == good.digest.hex()
    assert verify_evidence(evidence)
    tampered = {**evidence, "measurement": "00" * 32}
    assert not verify_evidence(tampered)
    assert evidence_digest(tampered) != evidence_digest(evidence)
    with pytest.raises(AttestationRefused):
        make_evidence(key, good, hardware={"abacus": "x"})
    assert make_evidence(key, good)["hardware"] is None


def test_changed_software_is_refused_by_peers(fed, policies, tmp_path):
    good, policy = policies
    honest = fed.gov(0, policy)
    drifted = fed.gov(1, policy)
    assert honest.attest().digest == good.digest
    assert drifted.attest(roots=changed_roots(tmp_path)).digest != good.digest
    judge = fed.gov(2, policy)
    gate = judge.peer_gate()
    assert gate.decide(honest.did, "average").allowed
    verdict = gate.decide(drifted.did, "average")
    assert not verdict.allowed and "not accepted by the policy" in verdict.reason
    # the drifted site recorded its own verdict: not accepted, so no offer
    record = latest_attestation(fed.ledgers[2], drifted.did)
    assert record is not None and record.verdict is False
    sites = {o["site"] for o in judge.catalogue()}
    assert honest.did in sites and drifted.did not in sites
    # an unattested site is refused; a site fixed later is accepted again
    with pytest.raises(AttestationRefused, match="no attestation"):
        check_peer(fed.ledgers[0], policy, judge.did)
    drifted.attest()
    assert gate.decide(drifted.did, "average").allowed
    # without required attestation the gate only checks membership roles
    relaxed = example_policy()
    judge._policy = relaxed
    assert gate.decide(fed.keys[1].did, "hello").allowed
    judge._policy = replace(relaxed, peers=replace(relaxed.peers, roles=("auditor",)))
    assert "roles" in gate.decide(fed.keys[1].did, "hello").reason


@pytest.mark.slow
@pytest.mark.usefixtures("collect_sockets")
async def test_mesh_refuses_a_peer_with_a_changed_file(fed, policies, tmp_path):
    """Two real daemons: the per-exchange policy hook reads the ledger."""
    _, policy = policies
    issuer = fed.keys[2]
    status = StatusList.create(issuer, "urn:paroma:members:1")
    status_vc = status.to_credential(issuer, cryptosuite=JCS)
    fed.ledgers[2].publish_status_list(issuer.did, status_list_digest(status_vc))
    govs = [fed.gov(0, policy), fed.gov(1, policy)]
    govs[0].attest()
    govs[1].attest(roots=changed_roots(tmp_path))
    nodes = []
    now = datetime.now(UTC)
    for i, gov in enumerate(govs):
        vc = issue_credential(
            make_credential(
                issuer.did,
                fed.keys[i].did,
                [MEMBERSHIP_CREDENTIAL],
                {"role": "site"},
                now - timedelta(minutes=1),
                now + timedelta(days=1),
            ),
            issuer,
            cryptosuite=JCS,
        )
        inner = CredentialAuthorizer(
            fed.keys[i],
            [vc],
            [issuer.did],
            fed.ledgers[i],
            lambda: [status_vc],
            policy=gov.peer_gate(),
            cryptosuite=JCS,
        )
        settings = NodeSettings(
            store=tmp_path / f"node{i}",
            averaging=AveragingSettings(period_s=0, step_timeout_s=10.0),
            maintenance_s=0.2,
        )
        state = {"w": __import__("torch").zeros(3)}
        nodes.append(SiteNode(fed.keys[i], settings, gov.authorizer(inner), state, 1.0))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run)
            with pytest.raises(PeerRefused):
                await nodes[0].connect(nodes[1].addresses[0])
            refusals = nodes[0].store.refusals()
            assert any("not accepted by the policy" in r["reason"] for r in refusals)
            # once the drifted site runs the accepted software again, it is admitted
            await trio.to_thread.run_sync(govs[1].attest)
            assert await nodes[0].call_hello(nodes[1].peer_id) == nodes[1].did
            nursery.cancel_scope.cancel()
    assert fed.ledgers[0].count_events(EventKind.ATTESTATION) == 3


async def test_required_credential_types_are_checked_per_exchange(fed):
    from identity.credentials import create_presentation
    from node.governance.site import SiteGovernance

    issuer = fed.keys[2]
    now = datetime.now(UTC)
    vc = issue_credential(
        make_credential(
            issuer.did,
            fed.keys[1].did,
            [MEMBERSHIP_CREDENTIAL],
            {"role": "site"},
            now - timedelta(minutes=1),
            now + timedelta(days=1),
        ),
        issuer,
        cryptosuite=JCS,
    )
    gov: SiteGovernance = fed.gov(0)
    inner = CredentialAuthorizer(
        fed.keys[0],
        [],
        [issuer.did],
        fed.ledgers[0],
        lambda: [],
        policy=gov.peer_gate(),
        cryptosuite=JCS,
    )
    authorizer = gov.authorizer(inner)

    async def present() -> None:
        vp = create_presentation(
            [vc], fed.keys[1], challenge="c1", domain=gov.did, cryptosuite=JCS
        )
        await authorizer.authorize(
            fed.keys[1].did, vp, challenge="c1", domain=gov.did, action="average"
        )

    await present()  # the example policy asks for MembershipCredential only
    policy = gov.policy
    gov._policy = replace(
        policy,
        peers=replace(
            policy.peers, credentials=(MEMBERSHIP_CREDENTIAL, "SiteCredential")
        ),
    )
    with pytest.raises(PeerRefused, match="requires credentials SiteCredential"):
        await present()
