// agent-mesh console: plain JavaScript, no build step. Everything it shows comes from the mesh's
// HTTP API and is written with textContent (never as HTML): requests are data from agents.
"use strict";

const TOKEN_KEY = "agent-mesh.operator-token";
const NAME_KEY = "agent-mesh.operator-name";
const MAX_TRACES = 300;
const POLL_MS = 3000;

const tokenRequired = document.body.dataset.tokenRequired === "true";
const traces = []; // newest first, one entry per trace_id (a waiting call is completed in place)

const $ = (selector) => document.querySelector(selector);

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function operatorName() { return sessionStorage.getItem(NAME_KEY) || "console"; }
function canAct() { return !tokenRequired || token() !== ""; }

function notice(text, isError) {
  const el = $("#notice");
  el.textContent = text;
  el.className = isError ? "error" : "ok";
  el.hidden = !text;
}

async function api(path, options = {}) {
  const headers = { "accept": "application/json" };
  if (options.body !== undefined) headers["content-type"] = "application/json";
  if (options.operator && token()) headers["x-operator-token"] = token(); // only in this header
  const response = await fetch(path, {
    method: options.method || "GET", headers, credentials: "omit", cache: "no-store",
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function showMode() {
  const mode = $("#mode");
  if (canAct()) {
    mode.textContent = tokenRequired ? "operator" : "operator (no token configured)";
    mode.className = "badge ok";
  } else {
    mode.textContent = "read-only: enter the operator token to act";
    mode.className = "badge warn";
  }
  document.querySelectorAll("button.approve, button.deny, button.revoke, button.thaw, button.accept").forEach((b) => {
    b.disabled = !canAct();
  });
}

// -- approvals --------------------------------------------------------------------------------

async function loadApprovals() {
  const pending = await api("/approvals?status=pending");
  const list = $("#approvals");
  const seen = new Set();
  for (const approval of pending) {
    seen.add(approval.id);
    let card = list.querySelector(`[data-id="${CSS.escape(approval.id)}"]`);
    if (!card) {
      card = $("#approval-card").content.firstElementChild.cloneNode(true);
      card.dataset.id = approval.id;
      card.querySelector(".approve").addEventListener("click", () => resolve(card, "approve"));
      card.querySelector(".deny").addEventListener("click", () => resolve(card, "deny"));
      list.appendChild(card);
    }
    card.querySelector(".tool").textContent = approval.tool;
    card.querySelector(".agent").textContent = `by ${approval.agent_id}`;
    card.querySelector(".rule").textContent = `rule ${approval.policy_rule || "?"}`;
    card.querySelector(".remaining").textContent = approval.remaining || "0s";
    card.querySelector(".id").textContent = approval.id.slice(0, 8);
    card.querySelector(".params").textContent = JSON.stringify(approval.params, null, 2);
    card.querySelector(".risk").hidden = !approval.injection_risk;
    card.classList.toggle("risky", Boolean(approval.injection_risk));
  }
  for (const card of [...list.children]) {
    if (!seen.has(card.dataset.id)) card.remove();
  }
  $("#approvals-count").textContent = String(pending.length);
  $("#approvals-empty").hidden = pending.length > 0;
  showMode();
}

async function resolve(card, decision) {
  if (!canAct()) {
    notice("Enter the operator token first (this mesh requires it to approve or deny).", true);
    $("#operator-token").focus();
    return;
  }
  const reason = card.querySelector(".reason").value.trim();
  card.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  try {
    const body = { resolved_by: operatorName() };
    if (reason) body.reasoning = reason;
    const answer = await api(`/approvals/${encodeURIComponent(card.dataset.id)}/${decision}`,
      { method: "POST", body, operator: true });
    notice(`${answer.status}: ${card.querySelector(".tool").textContent} (${card.dataset.id.slice(0, 8)})`, false);
    card.remove();
  } catch (error) {
    notice(`Could not ${decision}: ${error.message}`, true);
  } finally {
    card.querySelectorAll("button").forEach((b) => { b.disabled = !canAct(); });
  }
  loadApprovals().catch(() => {});
}

// -- traces -----------------------------------------------------------------------------------

function globToRegExp(glob) {
  const escaped = glob.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return new RegExp(`^${escaped}$`);
}

function addTrace(record) {
  const at = traces.findIndex((t) => t.trace_id === record.trace_id && t.timestamp === record.timestamp);
  if (at >= 0) traces.splice(at, 1);
  traces.unshift(record);
  if (traces.length > MAX_TRACES) traces.length = MAX_TRACES;
}

function renderTraces() {
  const form = $("#filters");
  const agent = form.agent.value.trim();
  const tool = form.tool.value.trim();
  const decision = form.decision.value;
  const toolMatch = tool ? globToRegExp(tool) : null;
  const body = $("#traces tbody");
  body.replaceChildren();
  for (const t of traces) {
    if (agent && t.agent_id !== agent) continue;
    if (toolMatch && !toolMatch.test(t.tool)) continue;
    if (decision && t.policy !== decision) continue;
    const row = document.createElement("tr");
    row.dataset.traceId = t.trace_id;
    row.className = `decision-${t.policy}`;
    cell(row, (t.timestamp || "").replace("T", " ").slice(0, 19));
    cell(row, t.agent_id);
    cell(row, t.tool, "mono");
    cell(row, t.policy);
    cell(row, t.status_code === 0 ? "waiting" : t.status_code);
    cell(row, t.latency_ms);
    const approval = t.approval_status
      ? `${t.approval_status}${t.approved_by ? ` by ${t.approved_by}` : ""}` : "";
    cell(row, approval, "approval");
    cell(row, t.error || t.supervisor_reasoning || "", "detail");
    body.appendChild(row);
  }
}

async function loadTraces() {
  const recent = await api("/traces?limit=100");
  for (const record of recent.reverse()) addTrace(record);
  renderTraces();
}

function follow() {
  const live = $("#live");
  const source = new EventSource("/ui/events");
  source.addEventListener("hello", () => { live.textContent = "live"; live.className = "badge ok"; });
  source.addEventListener("trace", (event) => {
    const record = JSON.parse(event.data);
    addTrace(record);
    renderTraces();
    if (record.approval_id || record.policy === "human_approval") loadApprovals().catch(() => {});
  });
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "badge warn"; };
}

// -- tool pinning: changed definitions (from /health) and flagged descriptions (/tools) ---------

const HELD = { block: "calls refused", approve: "calls need approval", warn: "warned only" };

function renderToolChanges(changes) {
  const body = $("#pins tbody");
  body.replaceChildren();
  for (const change of changes) {
    const tr = document.createElement("tr");
    tr.dataset.tool = change.tool;
    cell(tr, change.tool, "mono");
    cell(tr, HELD[change.mode] || change.mode);
    cell(tr, (change.diff || []).join("\n"), "diff");
    const td = cell(tr, "");
    const button = document.createElement("button");
    button.className = "accept";
    button.textContent = "Accept";
    button.disabled = !canAct();
    button.addEventListener("click", async () => {
      try {
        const body = { fingerprint: change.new_fingerprint, accepted_by: operatorName() };
        await api(`/tools/${encodeURIComponent(change.tool)}/accept`,
          { method: "POST", body, operator: true });
        notice(`accepted the new definition of ${change.tool}`, false);
        tr.remove();
      } catch (error) {
        notice(`Could not accept: ${error.message}`, true);
      }
      loadHealth().catch(() => {});
    });
    td.appendChild(button);
    body.appendChild(tr);
  }
  $("#pins-count").textContent = String(changes.length);
  $("#pins-empty").hidden = changes.length > 0;
}

async function loadFlagged() {
  const tools = await api("/tools");
  const flagged = tools.filter((t) => (t.injection_phrases || []).length > 0)
    .map((t) => `${t.name} (${t.injection_phrases.join(", ")})`);
  const el = $("#flagged");
  el.textContent = flagged.length ? `Descriptions with injection phrases: ${flagged.join("; ")}` : "";
  el.hidden = flagged.length === 0;
}

// -- health, grants and freezes --------------------------------------------------------------

async function loadHealth() {
  const [health, servers] = await Promise.all([api("/health"), api("/mcp-servers")]);
  renderToolChanges(health.tool_changes || []);
  const badge = $("#health-status");
  badge.textContent = health.status;
  badge.className = `badge ${health.status === "ok" ? "ok" : "warn"}`;
  const body = $("#health tbody");
  body.replaceChildren();
  const row = (name, up, workers, error) => {
    const tr = document.createElement("tr");
    tr.className = up ? "up" : "down";
    cell(tr, name, "mono");
    cell(tr, up ? "up" : "down", up ? "state ok" : "state down");
    cell(tr, workers);
    cell(tr, error || "", "detail");
    body.appendChild(tr);
  };
  row("bus (broker)", health.bus === "up", "", "");
  for (const [name, service] of Object.entries(health.services || {})) {
    row(name, service.workers > 0, service.workers, service.workers > 0 ? "" : "no live worker");
  }
  for (const server of servers) {
    const workers = (server.workers || []).length;
    row(`upstream ${server.name}`, server.status === "ready", `${workers}/${server.configured_workers ?? "?"}`,
      server.error || "");
  }
}

async function loadGrants() {
  const grants = await api("/grants");
  const body = $("#grants tbody");
  body.replaceChildren();
  for (const grant of grants) {
    const tr = document.createElement("tr");
    cell(tr, grant.agent);
    cell(tr, grant.tools, "mono");
    cell(tr, grant.remaining);
    cell(tr, grant.granted_by);
    const td = cell(tr, "");
    const button = document.createElement("button");
    button.className = "revoke";
    button.textContent = "Revoke";
    button.disabled = !canAct();
    button.addEventListener("click", async () => {
      try {
        await api(`/grants/${encodeURIComponent(grant.id)}`, { method: "DELETE", operator: true });
        notice(`revoked grant ${grant.id.slice(0, 8)} (${grant.agent}: ${grant.tools})`, false);
      } catch (error) {
        notice(`Could not revoke: ${error.message}`, true);
      }
      loadGrants().catch(() => {});
    });
    td.appendChild(button);
    body.appendChild(tr);
  }
  $("#grants-empty").hidden = grants.length > 0;
}

async function loadFreezes() {
  const freezes = await api("/freezes");
  const body = $("#freezes tbody");
  body.replaceChildren();
  for (const freeze of freezes) {
    const tr = document.createElement("tr");
    const what = freeze.kind === "all" ? "everything" : `${freeze.kind} ${freeze.target}`;
    cell(tr, what, "mono");
    cell(tr, new Date(freeze.created_at).toLocaleTimeString());
    cell(tr, freeze.created_by);
    cell(tr, freeze.reason, "detail");
    const td = cell(tr, "");
    const button = document.createElement("button");
    button.className = "thaw";
    button.textContent = "Thaw";
    button.disabled = !canAct();
    button.addEventListener("click", async () => {
      try {
        await api(`/freezes/${encodeURIComponent(freeze.id)}`, { method: "DELETE", operator: true });
        notice(`thawed freeze ${freeze.id.slice(0, 8)} (${what})`, false);
      } catch (error) {
        notice(`Could not thaw: ${error.message}`, true);
      }
      loadFreezes().catch(() => {});
    });
    td.appendChild(button);
    body.appendChild(tr);
  }
  $("#freezes-empty").hidden = freezes.length > 0;
}

// -- start ------------------------------------------------------------------------------------

function refresh() {
  for (const load of [loadApprovals, loadHealth, loadGrants, loadFreezes, loadFlagged]) {
    load().catch((error) => notice(`The mesh did not answer: ${error.message}`, true));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#operator-name").value = sessionStorage.getItem(NAME_KEY) || "";
  $("#operator").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("#operator-name").value.trim();
    const value = $("#operator-token").value;
    if (name) sessionStorage.setItem(NAME_KEY, name); else sessionStorage.removeItem(NAME_KEY);
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    $("#operator-token").value = "";
    $("#operator-token").placeholder = token() ? "token set for this tab" : $("#operator-token").placeholder;
    showMode();
    notice(canAct() ? `Acting as ${operatorName()}.` : "Read-only.", false);
  });
  $("#filters").addEventListener("input", renderTraces);
  $("#filters").addEventListener("submit", (event) => event.preventDefault());
  showMode();
  loadTraces().catch(() => {});
  follow();
  refresh();
  setInterval(refresh, POLL_MS);
});
