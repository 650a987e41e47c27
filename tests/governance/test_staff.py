"""Staff act through presentations at the loopback admin interface."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import trio

from identity.credentials import create_presentation
from identity.keys import SigningKey
from identity.keystore import Keystore
from identity.status_list import StatusList
from node.cli import main
from node.governance.admin import AdminClient, AdminServer, admin_url
from node.governance.errors import StaffRefused

from .conftest import JCS, staff_credential


class Staff:
    """A site with an admin server and a revocation list for its staff."""

    client: AdminClient
    server: AdminServer

    def __init__(self, fed: Any) -> None:
        self.fed = fed
        self.site_key = fed.keys[0]
        self.status = StatusList.create(self.site_key, "urn:paroma:staff-status:1")
        self.status_vc = self.status.to_credential(self.site_key, cryptosuite=JCS)
        self.gov = fed.gov(0, status_lists=lambda: [self.status_vc])

    def member(self, role: str, **kw: Any) -> tuple[SigningKey, dict[str, Any], int]:
        key = SigningKey.generate()
        issuer = kw.pop("issuer", self.site_key)
        index = self.status.allocate()
        status = self.status if issuer is self.site_key else None
        vc = staff_credential(issuer, key, role, status=status, index=index, **kw)
        return key, vc, index

    def revoke(self, index: int) -> None:
        self.status.revoke(index)
        self.status_vc = self.status.to_credential(self.site_key, cryptosuite=JCS)


async def call(
    client: AdminClient,
    action: str,
    key: SigningKey,
    vc: dict[str, Any],
    params: dict[str, Any],
    *,
    domain: str | None = None,
    challenge: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    def run() -> tuple[dict[str, Any], dict[str, Any]]:
        c, d = client.challenge()
        vp = create_presentation(
            [vc], key, challenge=challenge or c, domain=domain or d, cryptosuite=JCS
        )
        return client.action(action, vp, params), vp

    return await trio.to_thread.run_sync(run)


@pytest.fixture
async def admin(fed, nursery):
    staff = Staff(fed)
    server = AdminServer(staff.gov)
    url = await nursery.start(server.run)
    staff.client = AdminClient(url, timeout_s=60)
    staff.server = server
    return staff


async def test_roles_decide_each_action(admin, phantoms):
    steward, steward_vc, _ = admin.member("data_steward")
    scan, labels = phantoms[0]
    params = {"patient": "PSN-S1", "scan": str(scan), "labels": str(labels)}
    answer, _ = await call(
        admin.client, "register_consent", steward, steward_vc, params
    )
    assert answer["ok"] and answer["role"] == "data_steward"
    assert answer["staff"] == steward.did
    assert admin.gov.consented_scans() == 1
    # a data steward may not erase; a DPO may
    with pytest.raises(StaffRefused, match=r"allowed to erase \(dpo\)"):
        await call(admin.client, "erase", steward, steward_vc, {"patient": "PSN-S1"})
    dpo, dpo_vc, _ = admin.member("dpo")
    answer, _ = await call(admin.client, "erase", dpo, dpo_vc, {"patient": "PSN-S1"})
    assert answer["result"]["deleted_files"] == 2
    assert admin.gov.consented_scans() == 0


async def test_expired_revoked_untrusted_and_replayed_are_refused(admin):
    params = {"patient": "PSN-X"}
    key, vc, _ = admin.member("dpo", valid_for=timedelta(days=-1))
    with pytest.raises(StaffRefused, match="expired"):
        await call(admin.client, "withdraw_consent", key, vc, params)

    key, vc, index = admin.member("dpo")
    admin.revoke(index)
    with pytest.raises(StaffRefused, match="revoked"):
        await call(admin.client, "withdraw_consent", key, vc, params)

    stranger = SigningKey.generate()
    key, vc, _ = admin.member("dpo", issuer=stranger)
    with pytest.raises(StaffRefused, match="trusted issuer"):
        await call(admin.client, "withdraw_consent", key, vc, params)

    key, vc, _ = admin.member("dpo", type_="ClinicianCredential")
    with pytest.raises(StaffRefused, match="no StaffRoleCredential"):
        await call(admin.client, "withdraw_consent", key, vc, params)

    key, vc, _ = admin.member("dpo")
    with pytest.raises(StaffRefused, match="wrong domain"):
        await call(admin.client, "withdraw_consent", key, vc, params, domain="mesh")
    with pytest.raises(StaffRefused, match="challenge is unknown"):
        await call(
            admin.client, "withdraw_consent", key, vc, params, challenge="made-up"
        )

    # a valid presentation works once (the patient is unknown: 400), never twice
    def replay():
        c, d = admin.client.challenge()
        vp = create_presentation([vc], key, challenge=c, domain=d, cryptosuite=JCS)
        with pytest.raises(Exception, match="no registered patient") as first:
            admin.client.action("withdraw_consent", vp, params)
        assert not isinstance(first.value, StaffRefused)
        with pytest.raises(StaffRefused, match="challenge is unknown"):
            admin.client.action("withdraw_consent", vp, params)

    await trio.to_thread.run_sync(replay)


async def test_status_catalogue_and_bad_requests(admin):
    status = await trio.to_thread.run_sync(admin.client.get, "/status")
    assert status["consented_scans"] == 0 and status["purpose"] == 1
    assert await trio.to_thread.run_sync(admin.client.get, "/catalogue") == []
    with pytest.raises(Exception, match="no endpoint"):
        await trio.to_thread.run_sync(admin.client.get, "/nope")
    info = json.loads((admin.gov.folder / "admin.json").read_text())
    assert info["url"] == admin.client.url == admin_url(admin.gov.folder)


async def test_staff_commands_use_the_wallet(admin, phantoms, tmp_path, monkeypatch):
    key, vc, _ = admin.member("data_steward")
    wallet = tmp_path / "wallet"
    store = Keystore.create(wallet, "correct horse", signing_key=key, scrypt_n=2**10)
    store.add_credential(vc)
    monkeypatch.setenv("PAROMA_PASSPHRASE", "correct horse")
    scan, labels = phantoms[1]
    site = admin.gov.folder.parent
    argv = ["consent", "add", "--wallet", str(wallet), "--site", str(site)]
    argv += ["--patient", "PSN-CLI", "--scan", str(scan), "--labels", str(labels)]
    assert await trio.to_thread.run_sync(main, argv) == 0
    assert admin.gov.registry.find("PSN-CLI")
    argv = ["erase", "--wallet", str(wallet), "--admin", admin.client.url]
    argv += ["--patient", "PSN-CLI"]
    assert await trio.to_thread.run_sync(main, argv) == 2  # a steward may not erase
    assert admin.gov.registry.find("PSN-CLI")
    argv = ["consent", "withdraw", "--wallet", str(wallet), "--site", str(site)]
    assert await trio.to_thread.run_sync(main, [*argv, "--patient", "PSN-CLI"]) == 0
    assert admin.gov.consented_scans() == 0


async def test_analysis_outputs_are_erased_with_the_patient(admin, tmp_path):
    from ml.phantom import generate_phantom, write_phantom_nifti

    scan, labels = write_phantom_nifti(
        generate_phantom(5, shape=(48, 48, 48)), tmp_path, "p48"
    )
    steward, steward_vc, _ = admin.member("data_steward")
    params: dict[str, Any] = {"patient": "PSN-AN", "scan": str(scan)}
    params["labels"] = str(labels)
    await call(admin.client, "register_consent", steward, steward_vc, params)
    with pytest.raises(StaffRefused, match=r"allowed to analyse \(clinician\)"):
        await call(admin.client, "analyse", steward, steward_vc, {"patient": "PSN-AN"})
    clinician, clinician_vc, _ = admin.member("clinician")
    params = {"patient": "PSN-AN", "use_labels": True}
    answer, _ = await call(admin.client, "analyse", clinician, clinician_vc, params)
    result = answer["result"]
    assert "thickness.json" in result["outputs"] and "bullseye.png" in result["outputs"]
    assert 5.0 < result["report"]["global_mean_mm"] < 15.0
    case_id = admin.gov.registry.find("PSN-AN").case_id
    assert (admin.gov.registry.case_folder(case_id) / "derived").is_dir()
    dpo, dpo_vc, _ = admin.member("dpo")
    answer, _ = await call(admin.client, "erase", dpo, dpo_vc, {"patient": "PSN-AN"})
    assert answer["result"]["deleted_files"] == 2 + len(result["outputs"])
    assert not admin.gov.registry.case_folder(case_id).exists()
