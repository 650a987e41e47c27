// paroma-explorer page: vanilla JS, no dependencies, nothing fetched but our API.
// Every value from the ledger is inserted as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e",
                 "#e6ab02", "#a6761d", "#1f78b4", "#b2df8a", "#fb9a99"];

const state = { members: [], labels: new Map(), colors: new Map(),
                cursor: null, provenance: null, tab: "members" };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function short(hex) {
  if (!hex) return "-";
  return hex.length > 14 ? hex.slice(0, 8) + "…" + hex.slice(-4) : hex;
}

function who(did) {
  const label = state.labels.get(did);
  const text = label ? label + " " + short(did.replace("did:key:", "")) : short(did);
  return el("span", { class: "mono", title: did }, text);
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
  let body = null;
  try { body = await response.json(); } catch (e) { body = { error: response.statusText }; }
  if (response.status === 401) { showSignIn(); }
  if (!response.ok) {
    const err = new Error(body.error || response.statusText);
    err.reasons = body.reasons || [];
    throw err;
  }
  return body;
}

function showError(box, err) {
  box.hidden = false;
  box.replaceChildren(el("strong", {}, err.message));
  if (err.reasons && err.reasons.length) {
    box.append(el("ul", {}, ...err.reasons.map((r) => el("li", {}, r))));
  }
}

// ----- sign-in ---------------------------------------------------------------------

function showSignIn() {
  $("app").hidden = true;
  $("session").hidden = true;
  $("signin").hidden = false;
}

async function getChallenge() {
  const c = await api("/api/challenge");
  $("challenge-box").hidden = false;
  $("challenge-value").textContent = c.challenge;
  $("challenge-domain").textContent = c.domain;
  $("challenge-type").textContent = c.credential_type;
  $("challenge-expires").textContent = c.expires;
  $("challenge-command").textContent =
    "paroma-wallet present --challenge " + c.challenge + " --domain " + c.domain +
    " --out presentation.json CREDENTIAL_ID";
}

async function signIn() {
  const box = $("signin-error");
  box.hidden = true;
  let text = $("vp-text").value.trim();
  const file = $("vp-file").files[0];
  if (!text && file) text = await file.text();
  try {
    if (!text) throw new Error("paste the presentation JSON or choose its file");
    let vp;
    try { vp = JSON.parse(text); } catch (e) { throw new Error("the presentation is not valid JSON"); }
    await api("/api/signin", { method: "POST", headers: { "Content-Type": "application/json" },
                               body: JSON.stringify(vp) });
    $("vp-text").value = "";
    $("vp-file").value = "";
    $("challenge-box").hidden = true;
    await start();
  } catch (err) {
    showError(box, err);
    // The attempt used up its challenge: show a fresh one for the next try.
    if (!$("challenge-box").hidden) getChallenge().catch(() => {});
  }
}

async function signOut() {
  await api("/api/signout", { method: "POST" });
  showSignIn();
}

// ----- the views -------------------------------------------------------------------

function selectTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll("nav .tab")) {
    b.classList.toggle("active", b.dataset.tab === name);
  }
  for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== "panel-" + name;
  $("app-error").hidden = true;
  const load = { members: loadMembers, timeline: () => loadEvents(false),
                 provenance: loadProvenance }[name];
  if (load) load().catch((err) => showError($("app-error"), err));
}

async function loadOverview() {
  const o = await api("/api/overview");
  $("overview").textContent =
    "Ledger " + o.ledger + " · contract " + o.contract + " · " + o.members +
    " members (k = " + o.threshold + ") · " + o.events + " events";
  const kind = $("f-kind");
  kind.replaceChildren(el("option", { value: "" }, "any"));
  for (const k of o.kinds) kind.append(el("option", { value: k }, k + " (" + o.counts[k] + ")"));
}

async function loadMembers() {
  const body = await api("/api/members");
  state.members = body.members;
  state.labels.clear();
  state.colors.clear();
  body.members.forEach((m, i) => {
    state.labels.set(m.did, "M" + (i + 1));
    state.colors.set(m.did, PALETTE[i % PALETTE.length]);
  });
  const member = $("f-member");
  const chosen = member.value;
  member.replaceChildren(el("option", { value: "" }, "any"));
  for (const m of body.members) {
    member.append(el("option", { value: m.did }, state.labels.get(m.did) + " " + short(m.did)));
  }
  member.value = chosen;
  const rows = body.members.map((m) => {
    const a = m.admission;
    let admission;
    if (!a) admission = el("span", {}, "-");
    else if (a.founder) admission = el("span", {}, "founder, " + a.executed_at);
    else admission = el("div", {},
      "proposal #" + a.proposal_id + " by ", who(a.proposed_by), " at " + a.proposed_at,
      el("ul", {}, ...a.votes.map((v) => el("li", {}, "vote: ", who(v.member), " " + v.time))),
      "admitted " + a.executed_at);
    const atts = el("ul", {}, ...m.attestations.map((t) => el("li", {},
      el("span", { class: t.verdict ? "ok" : "bad" }, t.verdict ? "pass" : "FAIL"),
      " by ", who(t.by), " " + t.time + " measurement ",
      el("code", { title: t.measurement_digest }, short(t.measurement_digest)))));
    return el("tr", { "data-did": m.did },
      el("td", {}, who(m.did), m.removed ? el("span", { class: "badge bad" }, "removed") : null),
      el("td", {}, m.roles.join(", ")), el("td", {}, admission), el("td", {}, atts));
  });
  $("members-table").tBodies[0].replaceChildren(...rows);
}

function filterParams() {
  const p = new URLSearchParams();
  for (const [key, id] of [["kind", "f-kind"], ["member", "f-member"], ["since", "f-since"],
                           ["until", "f-until"], ["commitment", "f-commitment"],
                           ["order", "f-order"]]) {
    const v = $(id).value.trim();
    if (v) p.set(key, v);
  }
  p.set("limit", "50");
  return p;
}

// Digests and DIDs are shortened (full value in the commitment column or the
// member views); any other text, such as an offer's URI, is shown whole.
function brief(v) {
  const text = String(v);
  if (state.labels.has(text)) return state.labels.get(text);
  return /^(0x[0-9a-fA-F]{40,}|did:)/.test(text) ? short(text) : text;
}

function details(e) {
  const d = Object.assign({}, e.data);
  delete d.commitment; delete d.modelDigest; delete d.offerId; delete d.digest;
  delete d.measurementDigest;
  return Object.entries(d).map(([k, v]) => k + ": " +
    (Array.isArray(v) ? "[" + v.map(brief).join(", ") + "]" : brief(v))).join("; ");
}

async function loadEvents(more) {
  const params = filterParams();
  if (more && state.cursor) params.set("cursor", state.cursor);
  const page = await api("/api/events?" + params.toString());
  state.cursor = page.next_cursor;
  $("events-more").hidden = !page.next_cursor;
  $("events-total").textContent = page.total + " matching events";
  const rows = page.events.map((e) => el("tr", { "data-kind": e.kind },
    el("td", {}, e.time), el("td", {}, e.kind), el("td", {}, who(e.member)),
    el("td", {}, e.commitment ? el("a", { href: "#", title: e.commitment, class: "mono",
                                         onclick: (ev) => { ev.preventDefault(); showCommitment(e.commitment); } },
                                   short(e.commitment)) : "-"),
    el("td", { class: "mono" }, details(e)), el("td", {}, e.block + "." + e.log_index)));
  const body = $("events-table").tBodies[0];
  if (more) body.append(...rows); else body.replaceChildren(...rows);
}

function showCommitment(value) {
  $("consent-value").value = value;
  selectTab("consent");
  loadCommitment().catch((err) => showError($("app-error"), err));
}

async function loadCommitment() {
  const value = $("consent-value").value.trim();
  const c = await api("/api/commitment?value=" + encodeURIComponent(value));
  $("consent-result").replaceChildren(renderLifecycle(c));
}

function renderLifecycle(c) {
  const badge = (text, good) => el("span", { class: "badge " + (good ? "ok" : "bad") }, text);
  const status = el("p", {},
    badge(c.registered ? "registered" : "not registered", c.registered),
    badge(c.withdrawn ? "withdrawn" : "not withdrawn", !c.withdrawn),
    badge("erasure: " + c.erasure, c.erasure === "none"),
    badge(c.active ? "consent active" : "consent not active", c.active));
  const steps = el("ol", { id: "lifecycle" }, ...c.lifecycle.map((e) =>
    el("li", { "data-kind": e.kind }, e.time + " — " + e.kind + " by ", who(e.member))));
  return el("div", {}, el("p", {}, "commitment ", el("code", {}, c.commitment),
    c.purpose !== null ? " · purpose code " + c.purpose : "",
    c.expiry ? " · expires " + new Date(c.expiry * 1000).toISOString() : ""),
    status, c.lifecycle.length ? steps : el("p", {}, "No consent event names this commitment."));
}

// ----- provenance graph ---------------------------------------------------------------

async function loadProvenance() {
  if (!state.labels.size) await loadMembers();
  state.provenance = await api("/api/provenance");
  const select = $("prov-round");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "all rounds"),
    ...state.provenance.rounds.map((r) => el("option", { value: String(r) }, "round " + r)));
  select.value = chosen;
  // A long run has thousands of models: start with the last round's lineage.
  if (!chosen && state.provenance.models.length > 200 && state.provenance.rounds.length) {
    select.value = String(state.provenance.rounds[state.provenance.rounds.length - 1]);
  }
  const legend = $("prov-legend");
  legend.replaceChildren(...state.members.map((m) => {
    const swatch = el("i", {});
    swatch.style.background = state.colors.get(m.did);
    return el("span", {}, swatch, who(m.did));
  }));
  drawGraph();
}

function lineage(models, round) {
  const byDigest = new Map(models.map((m) => [m.digest, m]));
  if (!round) return models;
  const keep = new Set();
  const stack = models.filter((m) => m.round === Number(round)).map((m) => m.digest);
  while (stack.length) {
    const d = stack.pop();
    if (keep.has(d) || !byDigest.has(d)) continue;
    keep.add(d);
    stack.push(...byDigest.get(d).parents);
  }
  return models.filter((m) => keep.has(m.digest));
}

function drawGraph() {
  const models = lineage(state.provenance.models, $("prov-round").value);
  const rounds = [...new Set(models.map((m) => m.round))].sort((a, b) => a - b);
  const W = 190, H = 62, GX = 70, GY = 22, PAD = 30;
  const pos = new Map();
  let tallest = 0;
  rounds.forEach((r, i) => {
    const column = models.filter((m) => m.round === r);
    column.forEach((m, j) => pos.set(m.digest, { x: PAD + i * (W + GX), y: PAD + 20 + j * (H + GY) }));
    tallest = Math.max(tallest, column.length);
  });
  const root = svg("svg", { id: "prov-svg", width: PAD * 2 + rounds.length * (W + GX),
                            height: PAD * 2 + 20 + tallest * (H + GY), role: "img" });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                 markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#6a7f95" }));
  defs.append(marker);
  root.append(defs);
  rounds.forEach((r, i) => {
    const t = svg("text", { x: PAD + i * (W + GX), y: PAD, "font-weight": "bold" });
    t.textContent = "round " + r;
    root.append(t);
  });
  for (const m of models) {
    const to = pos.get(m.digest);
    for (const p of m.parents) {
      const from = pos.get(p);
      if (!from) continue;
      const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2;
      root.append(svg("path", { class: "edge", "data-from": p, "data-to": m.digest,
        d: `M ${x1} ${y1} C ${x1 + GX / 2} ${y1}, ${x2 - GX / 2} ${y2}, ${x2} ${y2}`,
        "marker-end": "url(#arrow)" }));
    }
  }
  for (const m of models) {
    const { x, y } = pos.get(m.digest);
    const g = svg("g", { class: "node", "data-digest": m.digest, transform: `translate(${x},${y})` });
    g.append(svg("rect", { width: W, height: H, rx: 6 }));
    const title = svg("title");
    title.textContent = m.digest;
    g.append(title);
    const line1 = svg("text", { x: 8, y: 16 });
    line1.textContent = short(m.digest);
    const line2 = svg("text", { x: 8, y: 32 });
    line2.textContent = "by " + m.recorded_by.map((d) => state.labels.get(d) || short(d)).join(", ");
    const line3 = svg("text", { x: 8, y: 50 });
    // No contributors: the recorder's own training step on its parent.
    line3.textContent = m.contributors.length ? "from" : "local update";
    g.append(line1, line2, line3);
    m.contributors.forEach((d, k) => {
      const dot = svg("circle", { cx: 48 + k * 16, cy: 46, r: 6,
                                  fill: state.colors.get(d) || "#999", "data-contributor": d });
      const tip = svg("title");
      tip.textContent = (state.labels.get(d) || "") + " " + d;
      dot.append(tip);
      g.append(dot);
    });
    g.addEventListener("click", () => showModel(m, g));
    root.append(g);
  }
  $("prov-graph").replaceChildren(root);
  $("prov-detail").replaceChildren(el("p", { class: "hint" },
    models.length + " model digests" + (state.provenance.truncated ? " (newest only)" : "")));
}

function showModel(m, g) {
  for (const n of document.querySelectorAll("#prov-svg .node")) n.classList.remove("selected");
  g.classList.add("selected");
  $("prov-detail").replaceChildren(el("dl", {},
    el("dt", {}, "model digest"), el("dd", {}, el("code", {}, m.digest)),
    el("dt", {}, "round"), el("dd", {}, String(m.round)),
    el("dt", {}, "recorded by"), el("dd", {}, ...m.recorded_by.map((d) => el("div", {}, who(d)))),
    el("dt", {}, "parents"), el("dd", {}, ...(m.parents.length ? m.parents.map((p) =>
      el("div", {}, el("code", {}, p),
         state.provenance.models.some((x) => x.digest === p) ? "" : " (not recorded on the ledger)"))
      : ["none recorded"])),
    el("dt", {}, "contributors"), el("dd", {}, ...m.contributors.map((d) => el("div", {}, who(d)))),
    el("dt", {}, "first recorded"), el("dd", {}, m.first_recorded)));
}

// ----- verification tools ---------------------------------------------------------------

function verdict(ok, yes, no) {
  return el("p", { class: ok ? "ok verdict" : "bad verdict" }, ok ? yes : no);
}

async function checkCommitment() {
  const out = $("vc-result");
  out.replaceChildren();
  try {
    const r = await api("/api/verify/commitment", { method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ salt: $("vc-salt").value, pseudonym: $("vc-pseudonym").value,
                             purpose: $("vc-purpose").value, commitment: $("vc-commitment").value }) });
    const parts = [el("p", {}, "computed commitment ", el("code", {}, r.computed))];
    if (r.matches_claim !== null) {
      parts.push(verdict(r.matches_claim, "The disclosed salt, pseudonym and purpose give the claimed commitment.",
                         "MISMATCH: they do not give the claimed commitment."));
    }
    parts.push(verdict(r.on_ledger, "This commitment is on the ledger.",
                       "This commitment is not on the ledger."));
    if (r.on_ledger) parts.push(renderLifecycle(r.state));
    out.replaceChildren(...parts);
  } catch (err) { showError(out, err); out.classList.add("error"); return; }
  out.classList.remove("error");
}

async function checkStatusList() {
  const out = $("vs-result");
  out.replaceChildren();
  out.classList.remove("error");
  try {
    const file = $("vs-file").files[0];
    if (!file) throw new Error("choose a status list credential file (JSON)");
    let vc;
    try { vc = JSON.parse(await file.text()); } catch (e) { throw new Error("the file is not valid JSON"); }
    if (vc && typeof vc === "object" && vc.credential) vc = vc.credential;
    const r = await api("/api/verify/status-list", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(vc) });
    out.replaceChildren(
      verdict(r.is_current, "Current: this is the status list the ledger anchors for its issuer.",
              r.current_digest ? (r.superseded ? "OUTDATED: an older list of this issuer; a newer one is anchored."
                                               : "NOT the list the ledger anchors for this issuer.")
                               : "The ledger anchors no status list for this issuer."),
      el("p", {}, "issuer ", who(r.issuer)),
      el("p", {}, "digest of the file ", el("code", {}, r.digest)),
      el("p", {}, "digest on the ledger ", el("code", {}, r.current_digest || "none")),
      verdict(r.signature_valid, "The issuer's signature is valid.",
              "Signature problem: " + r.signature_errors.join("; ")));
  } catch (err) { showError(out, err); out.classList.add("error"); }
}

async function checkModel() {
  const out = $("vm-result");
  out.replaceChildren();
  out.classList.remove("error");
  try {
    const file = $("vm-file").files[0];
    if (!file) throw new Error("choose a .safetensors model file");
    const r = await api("/api/verify/model", { method: "POST",
      headers: { "Content-Type": "application/octet-stream" }, body: await file.arrayBuffer() });
    out.replaceChildren(
      el("p", {}, "model digest ", el("code", {}, r.model_digest), " (" + r.tensors + " tensors)"),
      verdict(r.recorded, "Recorded on the ledger:", "No model record on the ledger has this digest."),
      el("ul", {}, ...r.records.map((e) => el("li", {},
        "round " + e.data.round + " by ", who(e.member), " at " + e.time))));
  } catch (err) { showError(out, err); out.classList.add("error"); }
}

// ----- start -----------------------------------------------------------------------------

async function start() {
  const s = await api("/api/session");
  if (!s.signed_in) { showSignIn(); return; }
  $("signin").hidden = true;
  $("session").hidden = false;
  $("session-auditor").textContent = s.auditor;
  $("session-issuer").textContent = s.issuer;
  $("session-expires").textContent = s.expires;
  $("app").hidden = false;
  await loadOverview();
  await loadMembers();
  selectTab(state.tab);
}

function wire() {
  $("challenge-btn").addEventListener("click", () =>
    getChallenge().catch((err) => showError($("signin-error"), err)));
  $("signin-btn").addEventListener("click", signIn);
  $("signout").addEventListener("click", () => signOut().catch(() => showSignIn()));
  for (const b of document.querySelectorAll("nav .tab")) {
    b.addEventListener("click", () => selectTab(b.dataset.tab));
  }
  $("filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadEvents(false).catch((err) => showError($("app-error"), err));
  });
  $("f-clear").addEventListener("click", () => {
    $("filters").reset();
    loadEvents(false).catch((err) => showError($("app-error"), err));
  });
  $("events-more").addEventListener("click", () =>
    loadEvents(true).catch((err) => showError($("app-error"), err)));
  $("consent-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    $("app-error").hidden = true;
    loadCommitment().catch((err) => showError($("app-error"), err));
  });
  $("prov-round").addEventListener("change", drawGraph);
  $("vc-form").addEventListener("submit", (ev) => { ev.preventDefault(); checkCommitment(); });
  $("vs-form").addEventListener("submit", (ev) => { ev.preventDefault(); checkStatusList(); });
  $("vm-form").addEventListener("submit", (ev) => { ev.preventDefault(); checkModel(); });
  start().catch((err) => showError($("signin-error"), err));
}

document.addEventListener("DOMContentLoaded", wire);
