"""The JSON API: sign-in (each refusal), sessions, paging, views, verification."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ledger.explorer.auth import COOKIE, Authenticator, Session
from ledger.explorer.errors import SignInRefused
from tests.explorer.conftest import sign_in
from tests.explorer.scenario import credential

DATA_ENDPOINTS = [
    ("GET", "/api/overview"),
    ("GET", "/api/members"),
    ("GET", "/api/events"),
    ("GET", "/api/commitment?value=0x" + "11" * 32),
    ("GET", "/api/provenance"),
    ("POST", "/api/verify/commitment"),
    ("POST", "/api/verify/status-list"),
    ("POST", "/api/verify/model"),
]


@pytest.mark.parametrize(("method", "path"), DATA_ENDPOINTS)
def test_data_endpoints_need_a_session(client, method, path):
    reply = client.request(method, path, content=b"{}")
    assert reply.status_code == 401
    assert "sign in" in reply.json()["error"]


def test_forged_session_cookie_is_refused(client):
    client.cookies.set(COOKIE, "not-a-session")
    assert client.get("/api/overview").status_code == 401


def test_sign_in_sets_a_strict_http_only_cookie(explorer, scenario, client):
    reply = sign_in(explorer, scenario, client)
    assert reply.status_code == 200
    assert reply.json()["auditor"] == scenario.auditor.did
    assert reply.json()["issuer"] == scenario.regulator.did
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    token = client.cookies[COOKIE]
    assert len(token) >= 40
    assert client.get("/api/session").json()["signed_in"] is True
    assert client.get("/api/overview").status_code == 200
    client.post("/api/signout")
    client.cookies.set(COOKIE, token)  # the old token must be dead now
    assert client.get("/api/overview").status_code == 401


def _refusal(reply: httpx.Response) -> str:
    assert reply.status_code == 403, reply.text
    return " ".join(reply.json()["reasons"])


def test_wrong_credential_type_is_refused(explorer, scenario, client):
    vc = credential(scenario.regulator, scenario.auditor, "ClinicianCredential")
    assert "credential type: expected a AuditorCredential" in _refusal(
        sign_in(explorer, scenario, client, vc)
    )


def test_untrusted_issuer_is_refused(explorer, scenario, client):
    from identity.keys import SigningKey

    vc = credential(SigningKey.generate(), scenario.auditor, "AuditorCredential")
    assert "untrusted issuer" in _refusal(sign_in(explorer, scenario, client, vc))


def test_expired_credential_is_refused(explorer, scenario, client):
    past = datetime.now(UTC) - timedelta(days=10)
    vc = credential(
        scenario.regulator,
        scenario.auditor,
        "AuditorCredential",
        valid_from=past - timedelta(days=10),
        valid_until=past,
    )
    assert "expired" in _refusal(sign_in(explorer, scenario, client, vc))


def test_bad_signature_is_refused(explorer, scenario, client):
    vc = dict(scenario.auditor_vc)
    vc["credentialSubject"] = {**vc["credentialSubject"], "role": "root"}
    assert "signature" in _refusal(sign_in(explorer, scenario, client, vc))


def test_replayed_challenge_is_refused(explorer, scenario, client):
    challenge = client.get("/api/challenge").json()
    vp = scenario.present(
        scenario.auditor_vc, challenge["challenge"], challenge["domain"]
    )
    assert client.post("/api/signin", json=vp).status_code == 200
    client.cookies.clear()
    assert "already used" in _refusal(client.post("/api/signin", json=vp))


def test_unknown_challenge_and_wrong_domain_are_refused(explorer, scenario, client):
    vp = scenario.present(scenario.auditor_vc, "made-up", explorer.auth.domain)
    assert "wrong challenge" in _refusal(client.post("/api/signin", json=vp))
    challenge = client.get("/api/challenge").json()
    vp = scenario.present(scenario.auditor_vc, challenge["challenge"], "evil.example")
    assert "wrong domain" in _refusal(client.post("/api/signin", json=vp))
    # A failed attempt still consumed its challenge.
    vp = scenario.present(
        scenario.auditor_vc, challenge["challenge"], explorer.auth.domain
    )
    assert "already used" in _refusal(client.post("/api/signin", json=vp))


def test_presentation_by_someone_else_is_refused(explorer, scenario, client):
    from identity.keys import SigningKey

    challenge = client.get("/api/challenge").json()
    thief = SigningKey.generate()
    vp = scenario.present(
        scenario.auditor_vc, challenge["challenge"], challenge["domain"], holder=thief
    )
    assert "subject mismatch" in _refusal(client.post("/api/signin", json=vp))


def test_malformed_sign_in_bodies(client):
    reply = client.post("/api/signin", content=b"not json")
    assert reply.status_code == 400 and "JSON" in reply.json()["error"]
    assert "no challenge" in _refusal(client.post("/api/signin", json={"a": 1}))
    assert "malformed" in _refusal(client.post("/api/signin", json=[1, 2]))


def test_expired_challenge_and_session_on_a_fake_clock(scenario):
    now = [1_000_000.0]
    auth = Authenticator(
        domain="d.example",
        trusted_issuers=[scenario.regulator.did],
        clock=lambda: now[0],
        challenge_ttl=60,
        session_ttl=120,
    )
    c = auth.new_challenge()["challenge"]
    now[0] += 61
    with pytest.raises(SignInRefused, match="expired"):
        auth.sign_in(scenario.present(scenario.auditor_vc, c, "d.example"))
    # verify_presentation checks validity against real time; the fake clock
    # only drives challenge and session lifetimes.
    now[0] = datetime.now(UTC).timestamp()
    c = auth.new_challenge()["challenge"]
    session = auth.sign_in(scenario.present(scenario.auditor_vc, c, "d.example"))
    assert auth.session(session.token) == session
    now[0] += 121
    assert auth.session(session.token) is None


def test_members_are_trusted_issuers_with_trust_members(source, scenario):
    auth = Authenticator(domain="d.example", is_member=source.is_member)
    site_a = scenario.sites["A"]
    vc = credential(site_a, scenario.auditor, "AuditorCredential")
    c = auth.new_challenge()["challenge"]
    assert auth.sign_in(scenario.present(vc, c, "d.example")).issuer == site_a.did
    c = auth.new_challenge()["challenge"]
    vc = credential(scenario.regulator, scenario.auditor, "AuditorCredential")
    with pytest.raises(SignInRefused, match="untrusted issuer"):
        auth.sign_in(scenario.present(vc, c, "d.example"))


def test_foreign_host_header_is_refused(explorer):
    reply = httpx.get(explorer.url + "api/session", headers={"Host": "evil.example"})
    assert reply.status_code == 421


def test_page_and_assets_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert (
        client.get("/static/app.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/nothing").status_code == 404


# ----- data --------------------------------------------------------------------


def test_overview_counts(auditor):
    o = auditor.get("/api/overview").json()
    assert o["members"] == 3 and o["removed_members"] == 1 and o["threshold"] == 2
    assert o["counts"]["model_recorded"] == 9
    assert o["events"] == sum(o["counts"].values())


def test_keyset_paging_visits_every_event_once(auditor):
    total = auditor.get("/api/overview").json()["events"]
    for order in ("asc", "desc"):
        seen, cursor = [], None
        while True:
            params = {"limit": 7, "order": order}
            if cursor:
                params["cursor"] = cursor
            page = auditor.get("/api/events", params=params).json()
            assert page["total"] == total
            seen += [(e["block"], e["log_index"]) for e in page["events"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == total
        assert seen == sorted(seen, reverse=order == "desc")


def test_filters_combine(auditor, scenario):
    a = scenario.dids["A"]
    page = auditor.get(
        "/api/events", params={"kind": "model_recorded", "member": a}
    ).json()
    assert page["total"] == 3  # a1, ab2, ac3
    assert {e["member"] for e in page["events"]} == {a}
    every = auditor.get("/api/events", params={"limit": 1000}).json()["events"]
    mid = every[len(every) // 2]["timestamp"]
    later = auditor.get("/api/events", params={"since": mid, "limit": 1000}).json()
    assert later["total"] == sum(e["timestamp"] >= mid for e in every)
    earlier = auditor.get("/api/events", params={"until": mid, "limit": 1000}).json()
    assert earlier["total"] + later["total"] == len(every)
    commitment = "0x" + scenario.erased.commitment.hex()
    kinds = [
        e["kind"]
        for e in auditor.get("/api/events", params={"commitment": commitment}).json()[
            "events"
        ]
    ]
    assert kinds == ["consent_registered", "erasure_requested", "erasure_completed"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"kind": "bogus"}, "kind: expected one of"),
        ({"since": "yesterday"}, "since: expected seconds"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "since: expected a time"),
        ({"commitment": "0x12"}, "commitment: expected 64 hex"),
        ({"member": "alice"}, "member: expected a DID"),
        ({"limit": "0"}, "limit: expected an integer"),
        ({"cursor": "x"}, "cursor: expected"),
        ({"order": "up"}, "order: expected asc or desc"),
    ],
)
def test_bad_filters_are_400(auditor, params, message):
    reply = auditor.get("/api/events", params=params)
    assert reply.status_code == 400
    assert message in reply.json()["error"]


def test_members_show_votes_and_attestations(auditor, scenario):
    members = {m["did"]: m for m in auditor.get("/api/members").json()["members"]}
    d = members[scenario.dids["D"]]
    assert not d["admission"]["founder"]
    assert [v["member"] for v in d["admission"]["votes"]] == [
        scenario.dids["A"],
        scenario.dids["B"],
    ]
    assert sorted(t["verdict"] for t in d["attestations"]) == [False, True]
    assert members[scenario.dids["A"]]["admission"]["founder"]
    c = members[scenario.dids["C"]]
    assert c["removed"] and c["admission"]["founder"]
    assert c["removal"]["removal"] and len(c["removal"]["votes"]) == 2


def test_commitment_lifecycle(auditor, scenario):
    c = auditor.get(
        "/api/commitment", params={"value": scenario.withdrawn.commitment.hex()}
    ).json()
    assert (c["registered"], c["withdrawn"], c["erasure"], c["active"]) == (
        True,
        True,
        "none",
        False,
    )
    c = auditor.get(
        "/api/commitment", params={"value": scenario.erased.commitment.hex()}
    ).json()
    assert c["erasure"] == "completed" and not c["active"]
    c = auditor.get(
        "/api/commitment", params={"value": scenario.consents[0].commitment.hex()}
    ).json()
    assert c["active"] and c["purpose"] == scenario.consents[0].purpose


def test_provenance_merges_digests_and_keeps_parents(auditor, scenario):
    p = auditor.get("/api/provenance").json()
    models = {m["digest"]: m for m in p["models"]}
    assert p["rounds"] == [1, 2, 3] and len(models) == 7
    ab2 = models["0x" + scenario.models["ab2"].hex()]
    assert sorted(ab2["recorded_by"]) == sorted(
        [scenario.dids["A"], scenario.dids["B"]]
    )
    assert ab2["parents"] == [
        "0x" + scenario.models["a1"].hex(),
        "0x" + scenario.models["b1"].hex(),
    ]


# ----- verification tools ---------------------------------------------------------


def test_commitment_check(auditor, scenario):
    d = scenario.withdrawn
    form = {"salt": d.salt.hex(), "pseudonym": d.pseudonym, "purpose": d.purpose}
    r = auditor.post(
        "/api/verify/commitment", json={**form, "commitment": d.commitment.hex()}
    ).json()
    assert r["matches_claim"] and r["on_ledger"] and r["state"]["withdrawn"]
    r = auditor.post(
        "/api/verify/commitment", json={**form, "purpose": d.purpose + 1}
    ).json()
    assert r["matches_claim"] is None and not r["on_ledger"]
    other = scenario.consents[0].commitment.hex()
    r = auditor.post(
        "/api/verify/commitment", json={**form, "commitment": other}
    ).json()
    assert r["matches_claim"] is False


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"salt": "zz", "pseudonym": "p", "purpose": 1}, "salt: expected hex"),
        ({"salt": "ab" * 4, "pseudonym": "p", "purpose": 1}, "salt: expected at least"),
        ({"salt": "ab" * 32, "pseudonym": "", "purpose": 1}, "pseudonym"),
        ({"salt": "ab" * 32, "pseudonym": "p", "purpose": 70000}, "purpose"),
        ({"salt": "ab" * 32, "pseudonym": "p", "purpose": "x"}, "purpose"),
    ],
)
def test_commitment_check_bad_input_never_echoes_the_salt(auditor, form, message):
    reply = auditor.post("/api/verify/commitment", json=form)
    assert reply.status_code == 400
    assert message in reply.json()["error"]
    assert form["salt"] not in reply.text or form["salt"] == "zz"


def test_status_list_check(auditor, scenario):
    r = auditor.post("/api/verify/status-list", json=scenario.status_new).json()
    assert r["is_current"] and r["signature_valid"]
    r = auditor.post("/api/verify/status-list", json=scenario.status_old).json()
    assert not r["is_current"] and r["superseded"]
    tampered = {**scenario.status_new, "validFrom": "2020-01-01T00:00:00Z"}
    r = auditor.post("/api/verify/status-list", json=tampered).json()
    assert not r["is_current"] and not r["signature_valid"]
    reply = auditor.post("/api/verify/status-list", json={"issuer": 5})
    assert reply.status_code == 400


def test_model_check(auditor, scenario):
    r = auditor.post("/api/verify/model", content=scenario.model_bytes).json()
    assert r["model_digest"] == "0x" + scenario.models["a1"].hex()
    assert r["recorded"] and r["records"][0]["data"]["round"] == 1
    r = auditor.post("/api/verify/model", content=b"\x00" * 100)
    assert r.status_code == 400 and "safetensors" in r.json()["error"]


def test_model_check_of_an_unrecorded_file(auditor):
    import numpy as np
    from safetensors.numpy import save

    data = save({"w": np.ones(3, dtype=np.float32)})
    r = auditor.post("/api/verify/model", content=data).json()
    assert not r["recorded"]
    assert r["model_digest"] == "0x" + hashlib.sha256(data).hexdigest()


def test_unread_body_does_not_poison_the_keep_alive_connection(client):
    reply = client.post("/api/verify/model", content=b"GET /x HTTP/1.1\r\n\r\n" * 50)
    assert reply.status_code == 401
    assert client.get("/api/session").json() == {"signed_in": False}


def test_oversized_body_is_refused(auditor, monkeypatch):
    from ledger.explorer import server

    monkeypatch.setattr(server, "MAX_JSON_BYTES", 10)
    reply = auditor.post("/api/verify/status-list", json={"issuer": "did:key:z" * 5})
    assert reply.status_code == 400 and "at most 10" in reply.json()["error"]
    assert auditor.get("/api/session").json()["signed_in"]


def test_did_web_is_never_fetched():
    from identity.errors import DidResolutionFailed
    from ledger.explorer.auth import offline_fetcher

    with pytest.raises(DidResolutionFailed, match="no network"):
        offline_fetcher("https://example.com/.well-known/did.json")


def test_a_taken_port_is_a_clear_error(source, explorer):
    from ledger.explorer.errors import BadQuery
    from ledger.explorer.server import Explorer

    with pytest.raises(
        BadQuery, match=f"--port: cannot listen on 127.0.0.1:{explorer.port}"
    ):
        Explorer(source, port=explorer.port, trusted_issuers=["did:key:z6Mkx"])


def test_a_status_list_replaced_on_the_ledger_stops_sign_in(source, scenario):
    site_a = scenario.sites["A"]
    vc = credential(site_a, scenario.auditor, "AuditorCredential")

    def sign_in_with(status_list: dict[str, Any]) -> Session:
        auth = Authenticator(
            domain="d.example",
            trusted_issuers=[site_a.did],
            status_lists=[status_list],
            anchored_digest=source.status_list_digest_of,
        )
        c = auth.new_challenge()["challenge"]
        return auth.sign_in(scenario.present(vc, c, "d.example"))

    assert sign_in_with(scenario.status_new).issuer == site_a.did
    with pytest.raises(SignInRefused, match=r"status list of .* is outdated"):
        sign_in_with(scenario.status_old)
