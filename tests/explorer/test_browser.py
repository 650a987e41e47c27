"""End to end in headless Chromium: sign-in, filters, provenance, verification.

Debian's Chromium (/usr/bin/chromium) driven by Playwright's sync API; no
browser is ever downloaded. Plain sync test functions: Playwright's greenlets
do not mix with pytest-trio's event loop, and the explorer runs in a thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from identity.keys import SigningKey
from ledger.explorer.query import EventFilter
from tests.explorer.scenario import MARKUP_URI, credential

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, explorer):
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.goto(explorer.url)
    yield p
    context.close()
    assert errors == [], errors  # no uncaught script error on the page


def present_on_page(page, scenario, vc) -> None:
    page.click("#challenge-btn")
    page.wait_for_selector("#challenge-box:not([hidden])")
    challenge = page.text_content("#challenge-value")
    domain = page.text_content("#challenge-domain")
    assert challenge and domain
    assert challenge in (page.text_content("#challenge-command") or "")
    vp = scenario.present(vc, challenge, domain)
    page.fill("#vp-text", json.dumps(vp))
    page.click("#signin-btn")


def signed_in(page, scenario) -> None:
    present_on_page(page, scenario, scenario.auditor_vc)
    page.wait_for_selector("#app:not([hidden])")


def test_sign_in_refused_for_a_wrong_credential(page, scenario):
    assert page.is_visible("#signin") and not page.is_visible("#app")
    clinician = credential(scenario.regulator, scenario.auditor, "ClinicianCredential")
    present_on_page(page, scenario, clinician)
    page.wait_for_selector("#signin-error:not([hidden])")
    text = page.text_content("#signin-error") or ""
    assert "credential type: expected a AuditorCredential" in text
    assert not page.is_visible("#app")
    outsider = credential(SigningKey.generate(), scenario.auditor, "AuditorCredential")
    present_on_page(page, scenario, outsider)
    expect(page.locator("#signin-error")).to_contain_text("untrusted issuer")
    assert not page.is_visible("#app")


def test_sign_in_shows_members_with_votes_and_attestations(page, scenario):
    signed_in(page, scenario)
    assert page.text_content("#session-auditor") == scenario.auditor.did
    page.wait_for_selector("#members-table tbody tr")
    assert page.locator("#members-table tbody tr").count() == 4
    row = page.locator(f"#members-table tr[data-did='{scenario.dids['D']}']")
    assert row.locator("li", has_text="vote:").count() == 2
    assert row.locator(".bad", has_text="FAIL").count() == 1
    removed = page.locator(f"#members-table tr[data-did='{scenario.dids['C']}']")
    assert removed.locator(".badge", has_text="removed").count() == 1
    # Signing out locks the data again.
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    assert not page.is_visible("#app")


def _rows(page) -> list[str]:
    kinds = page.eval_on_selector_all(
        "#events-table tbody tr", "rows => rows.map(r => r.dataset.kind)"
    )
    return [str(k) for k in kinds]


def _apply(page, expected_total: int) -> list[str]:
    # Why blank the total first: two filters in a row can match the same number
    # of events, and the old total would then satisfy the wait before the new
    # page arrived. The page writes the total and the rows in one task.
    page.eval_on_selector("#events-total", "e => { e.textContent = ''; }")
    page.click("#f-apply")
    expect(page.locator("#events-total")).to_have_text(
        f"{expected_total} matching events"
    )
    return _rows(page)


def test_timeline_filters(page, scenario, source):
    signed_in(page, scenario)
    page.click("nav .tab[data-tab=timeline]")
    total = source.overview()["events"]
    expect(page.locator("#events-total")).to_have_text(f"{total} matching events")
    assert len(_rows(page)) == total

    page.select_option("#f-kind", "model_recorded")
    assert _apply(page, 9) == ["model_recorded"] * 9

    page.select_option("#f-member", scenario.dids["B"])
    assert _apply(page, 2) == ["model_recorded"] * 2

    # A member's free text is shown as text, never parsed as HTML.
    page.select_option("#f-kind", "offer_published")
    assert _apply(page, 2) == ["offer_published"] * 2
    assert MARKUP_URI in (page.text_content("#events-table") or "")
    assert page.locator("#injected").count() == 0

    page.click("#f-clear")
    page.fill("#f-commitment", "0x" + scenario.erased.commitment.hex())
    page.select_option("#f-order", "asc")
    assert _apply(page, 3) == [
        "consent_registered",
        "erasure_requested",
        "erasure_completed",
    ]

    every = source.index.all(EventFilter())
    mid = every[len(every) // 2]
    page.fill("#f-commitment", "")
    page.fill("#f-since", str(mid.timestamp))
    later = sum(e.timestamp >= mid.timestamp for e in every)
    _apply(page, later)
    page.fill("#f-since", "")
    page.fill("#f-until", str(mid.timestamp))
    _apply(page, len(every) - later)

    page.fill("#f-until", "not a time")
    page.click("#f-apply")
    page.wait_for_selector("#app-error:not([hidden])")
    assert "until: expected" in (page.text_content("#app-error") or "")


def test_provenance_graph(page, scenario):
    signed_in(page, scenario)
    page.click("nav .tab[data-tab=provenance]")
    page.wait_for_selector("#prov-svg .node")
    assert page.locator("#prov-svg g.node").count() == 7
    assert page.locator("#prov-svg path.edge").count() == 6
    hexes = {k: "0x" + v.hex() for k, v in scenario.models.items()}
    for parent, child in [("a1", "ab2"), ("b1", "ab2"), ("ab2", "ac3"), ("cd2", "ac3")]:
        edge = f"[data-from='{hexes[parent]}'][data-to='{hexes[child]}']"
        assert page.locator("#prov-svg path.edge" + edge).count() == 1
    top = page.locator(f"#prov-svg g.node[data-digest='{hexes['ac3']}']")
    contributors = top.locator("circle").evaluate_all(
        "cs => cs.map(c => c.dataset.contributor)"
    )
    assert sorted(contributors) == sorted(scenario.dids.values())

    # One round's lineage: its models and their ancestors only.
    page.select_option("#prov-round", "2")
    expect(page.locator("#prov-svg g.node")).to_have_count(6)
    assert page.locator("#prov-svg path.edge").count() == 4
    page.locator(f"#prov-svg g.node[data-digest='{hexes['ab2']}']").click()
    detail = page.text_content("#prov-detail") or ""
    assert hexes["ab2"] in detail and hexes["a1"] in detail and hexes["b1"] in detail


def test_commitment_check_and_lifecycle(page, scenario):
    signed_in(page, scenario)
    page.click("nav .tab[data-tab=verify]")
    d = scenario.withdrawn
    page.fill("#vc-salt", d.salt.hex())
    page.fill("#vc-pseudonym", d.pseudonym)
    page.fill("#vc-purpose", str(d.purpose))
    page.fill("#vc-commitment", "0x" + d.commitment.hex())
    page.click("#vc-btn")
    page.wait_for_selector("#vc-result .verdict")
    text = page.text_content("#vc-result") or ""
    assert "give the claimed commitment" in text and "is on the ledger" in text
    assert "withdrawn" in text and "MISMATCH" not in text

    page.fill("#vc-pseudonym", d.pseudonym + "x")
    page.click("#vc-btn")
    expect(page.locator("#vc-result")).to_contain_text("MISMATCH")

    # The consent view of the erased commitment: its whole lifecycle.
    page.click("nav .tab[data-tab=consent]")
    page.fill("#consent-value", scenario.erased.commitment.hex())
    page.click("#consent-btn")
    page.wait_for_selector("#lifecycle li")
    kinds = page.eval_on_selector_all(
        "#lifecycle li", "items => items.map(i => i.dataset.kind)"
    )
    assert kinds == ["consent_registered", "erasure_requested", "erasure_completed"]
    assert "erasure: completed" in (page.text_content("#consent-result") or "")


def test_status_list_and_model_file_checks(page, scenario, tmp_path):
    signed_in(page, scenario)
    page.click("nav .tab[data-tab=verify]")
    old = tmp_path / "old.json"
    old.write_text(json.dumps(scenario.status_old))
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"credential": scenario.status_new}))
    page.set_input_files("#vs-file", str(old))
    page.click("#vs-btn")
    page.wait_for_selector("#vs-result .verdict")
    assert "OUTDATED" in (page.text_content("#vs-result") or "")
    page.set_input_files("#vs-file", str(new))
    page.click("#vs-btn")
    expect(page.locator("#vs-result")).to_contain_text("Current:")

    model = tmp_path / "round-000001.safetensors"
    model.write_bytes(scenario.model_bytes)
    page.set_input_files("#vm-file", str(model))
    page.click("#vm-btn")
    page.wait_for_selector("#vm-result .verdict")
    text = page.text_content("#vm-result") or ""
    assert "0x" + scenario.models["a1"].hex() in text and "round 1" in text
