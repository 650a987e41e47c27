"""``paroma-node start`` with governance: policy checked, attested, admin served."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import trio

from identity.credentials import issue_credential, make_credential
from identity.keystore import Keystore
from identity.proofs import Cryptosuite
from identity.status_list import StatusList, status_list_digest
from ledger import EventKind, account_address, deploy_federation, open_ledger
from node.auth import MEMBERSHIP_CREDENTIAL
from node.cli import main
from node.config import LEDGER_ACCOUNT_SECRET, load_config
from node.governance.extension import GOVERNANCE_FOLDER, extension
from node.governance.policy import example_policy_text
from node.site import open_site

from .conftest import staff_credential

PASSPHRASE = "correct horse battery staple"
JCS = Cryptosuite.EDDSA_JCS_2022


def make_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site from ``paroma-node init``, founder of an embedded ledger."""
    monkeypatch.setenv("PAROMA_PASSPHRASE", PASSPHRASE)
    site, ledger_dir = tmp_path / "site", tmp_path / "ledger"
    keystore_dir = site / "keystore"
    args = ["init", "--dir", str(site), "--listen", "/ip4/127.0.0.1/tcp/0"]
    args += ["--ledger", str(ledger_dir), "--issuer", "did:key:placeholder"]
    assert main(args) == 0
    keystore = Keystore.open(keystore_dir, PASSPHRASE)
    key = keystore.signing_key
    account = keystore.get_secret(LEDGER_ACCOUNT_SECRET)
    ledger = deploy_federation(
        ledger_dir,
        deployer_key=account,
        founders=[(key.did, account_address(account), ["site"])],
        threshold=1,
    )
    # The site issues its own membership credential (it is the only founder)
    # and its staff's credentials, under one status list.
    status = StatusList.create(key, "urn:paroma:site-status:1")
    now = datetime.now(UTC)
    membership = make_credential(
        key.did,
        key.did,
        [MEMBERSHIP_CREDENTIAL],
        {"role": "site"},
        now - timedelta(minutes=1),
        None,
        status=status.entry(status.allocate()),
    )
    keystore.add_credential(issue_credential(membership, key, cryptosuite=JCS))
    status_vc = status.to_credential(key, cryptosuite=JCS)
    (site / "status-lists" / "site.json").write_text(json.dumps(status_vc))
    ledger.publish_status_list(key.did, status_list_digest(status_vc))
    ledger.close()
    document = tomllib.loads((site / "node.toml").read_text())
    document["federation"]["issuer_dids"] = [key.did]
    document["policy"] = {"file": "policy.toml"}
    document["extensions"] = {"modules": ["node.governance.extension"]}
    document["averaging"]["period_s"] = 0.0
    (site / "node.toml").write_text(tomli_w.dumps(document))
    (site / "policy.toml").write_text(example_policy_text())
    return site


def test_start_refuses_an_invalid_policy(tmp_path, monkeypatch, capsys):
    site = make_site(tmp_path, monkeypatch)
    text = example_policy_text().replace("epsilon_budget = 8.0", "epsilon_budget = -1")
    (site / "policy.toml").write_text(text)
    assert main(["start", "--dir", str(site)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "privacy.epsilon_budget" in err and "must be > 0" in err
    (site / "policy.toml").unlink()
    assert main(["start", "--dir", str(site)]) == 2
    assert "policy.toml" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("collect_sockets")
async def test_started_site_attests_and_serves_staff(tmp_path, monkeypatch, phantoms):
    site = make_site(tmp_path, monkeypatch)
    config = load_config(site)
    ext = extension(config)
    opened = open_site(config, PASSPHRASE, extensions=[ext])
    keystore = Keystore.open(site / "keystore", PASSPHRASE)
    # a data steward's wallet with a credential from the site
    steward = Keystore.create(tmp_path / "wallet", "pw", scrypt_n=2**10)
    steward.add_credential(
        staff_credential(keystore.signing_key, steward.signing_key, "data_steward")
    )
    monkeypatch.setenv("PAROMA_PASSPHRASE", "pw")
    scan, labels = phantoms[0]
    argv = ["consent", "add", "--wallet", str(tmp_path / "wallet"), "--site", str(site)]
    argv += ["--patient", "PSN-EXT", "--scan", str(scan), "--labels", str(labels)]
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(opened.node.run)
                url = await nursery.start(ext.run)
                assert url.startswith("http://127.0.0.1:")
                assert await trio.to_thread.run_sync(main, argv) == 0
                # the policy's merge rule (clipped) is the node's, and follows
                # a new policy
                averaging = opened.node.settings.averaging
                assert averaging.robust.value == "clipped"
                text = example_policy_text().replace('"clipped"', '"none"')
                assert ext.governance is not None
                await trio.to_thread.run_sync(ext.governance.set_policy, text)
                assert opened.node.settings.averaging.robust.value == "none"
                assert (site / "policy.toml").read_text() == text  # read at start
                nursery.cancel_scope.cancel()
    finally:
        opened.ledger.close()
    gov = ext.governance
    assert gov is not None and gov.consented_scans() == 1
    assert gov.folder == config.store / GOVERNANCE_FOLDER
    assert not (gov.folder / "admin.json").exists()  # removed when it stopped
    with open_ledger(config.ledger_spec) as ledger:
        # attested at start, and again under the new policy
        assert ledger.count_events(EventKind.ATTESTATION) == 2
        assert ledger.count_events(EventKind.OFFER_PUBLISHED) == 2
        assert ledger.count_events(EventKind.CONSENT_REGISTERED) == 1
    gov.close()


@pytest.mark.slow
@pytest.mark.usefixtures("collect_sockets")
async def test_erase_with_retrain_installs_the_model(tmp_path, monkeypatch, phantoms):
    from identity.credentials import create_presentation
    from ml.model import ModelConfig
    from ml.weights import model_digest
    from node.governance.admin import AdminClient
    from node.governance.policy import example_policy
    from node.governance.site import SiteGovernance

    site = make_site(tmp_path, monkeypatch)
    document = tomllib.loads((site / "node.toml").read_text())
    document["training"]["model"] = "tiny"
    (site / "node.toml").write_text(tomli_w.dumps(document))
    # a site alone: the policy must allow training without peers
    text = example_policy_text().replace("min_peers = 1", "min_peers = 0")
    (site / "policy.toml").write_text(text)
    config = load_config(site)
    keystore = Keystore.open(site / "keystore", PASSPHRASE)
    key = keystore.signing_key
    # patients registered before this start (the daemon's weight is fixed then)
    with open_ledger(
        config.ledger_spec, account_key=keystore.get_secret(LEDGER_ACCOUNT_SECRET)
    ) as ledger:
        before = SiteGovernance(
            config.store / GOVERNANCE_FOLDER,
            example_policy(),
            key,
            ledger,
            ModelConfig.tiny(),
        )
        before.register_consents(
            [(f"PSN-R{i}", phantoms[i][0], phantoms[i][1]) for i in range(2)]
        )
        before.close()
    ext = extension(config)
    opened = open_site(config, PASSPHRASE, extensions=[ext])
    node = opened.node
    assert node.trainer is not None and node.n_samples == 2
    dpo = Keystore.create(tmp_path / "dpo", "pw", scrypt_n=2**10)
    dpo_vc = staff_credential(key, dpo.signing_key, "dpo")

    def erase(url: str) -> dict[str, Any]:
        client = AdminClient(url, timeout_s=120)
        challenge, domain = client.challenge()
        vp = create_presentation(
            [dpo_vc],
            dpo.signing_key,
            challenge=challenge,
            domain=domain,
            cryptosuite=JCS,
        )
        return client.action("erase", vp, {"patient": "PSN-R0", "retrain": True})

    try:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                url = await nursery.start(ext.run)
                trained = await trio.to_thread.run_sync(
                    node.trainer.train, node.state, 3
                )
                await node.install(trained, kind="train")
                assert node.round == 1
                answer = await trio.to_thread.run_sync(erase, url)
                assert answer["result"]["retrained_steps"] == 3
                assert [m["round"] for m in answer["result"]["models_seen"]] == [1]
                assert node.round == 2 and node.digest != model_digest(trained)
                rows = await trio.to_thread.run_sync(node.store.rounds)
                assert [r["kind"] for r in rows] == ["initial", "train", "retrain"]
                nursery.cancel_scope.cancel()
    finally:
        opened.ledger.close()
        if ext.governance is not None:
            ext.governance.close()
