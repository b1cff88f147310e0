// The ops page: polls /ui/data every two seconds and fills the page. Plain JS, no build step.
// An admin token, when given, is kept in this tab's session storage only and sent with every
// request: under --auth-reads the page needs one, and without it one shows the failing
// document files and allows a rescan.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "bobgen-admin-token";
const SVG = "http://www.w3.org/2000/svg";

function $(id) { return document.getElementById(id); }

// ---- formatting ------------------------------------------------------------------------------

function number(n) { return n === null || n === undefined ? "–" : n.toLocaleString("en"); }

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

// A server time (ISO-8601 UTC) as this browser's local time; the date too unless today.
function when(iso) {
  if (!iso) return "–";
  const t = new Date(iso);
  return t.toDateString() === new Date().toDateString() ? t.toLocaleTimeString() : t.toLocaleString();
}

function short(id) { return id ? String(id).slice(0, 8) : "–"; }

// ---- tables and charts -----------------------------------------------------------------------

// columns: [text(item), kind, title(item)?]; kind "num" aligns right, "free" (free text:
// messages, paths, command lines) may wrap anywhere; a title shows all of a shortened value.
function fillTable(id, items, columns) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  for (const item of items) {
    const row = body.insertRow();
    for (const [text, kind, title] of columns) {
      const td = row.insertCell();
      const value = text(item);
      td.textContent = value === null || value === undefined ? "–" : String(value);
      if (kind) td.className = kind;
      if (title) td.title = title(item) || "";
    }
  }
  if (!items.length) {
    const td = body.insertRow().insertCell();
    td.colSpan = columns.length;
    td.className = "empty";
    td.textContent = "none";
  }
}

const key = (name) => (item) => item[name];

// A line over the points, scaled to its own maximum (a missing value drawn as 0).
function line(svg, points, field) {
  const values = points.map((p) => (p[field] === null ? 0 : p[field]));
  const top = Math.max(...values, 1e-9);
  const step = values.length > 1 ? 240 / (values.length - 1) : 0;
  const polyline = document.createElementNS(SVG, "polyline");
  polyline.setAttribute("points", values.map((v, i) =>
    (i * step).toFixed(1) + "," + (58 - (v / top) * 54).toFixed(1)).join(" "));
  svg.replaceChildren(polyline);
}

function latest(points, field, digits) {
  const last = points.length ? points[points.length - 1][field] : null;
  return last === null ? "–" : Number(last).toFixed(digits);
}

function chart(id, points, field, digits) {
  line($(id), points, field);
  $(id + "-now").textContent = latest(points, field, digits);
}

// One row per route: a small chart of each measure with its newest value.
function routeCharts(routes) {
  const body = $("route-charts").tBodies[0];
  body.replaceChildren();
  for (const [route, points] of Object.entries(routes)) {
    const row = body.insertRow();
    row.insertCell().textContent = route;
    for (const [field, digits] of [["rate_per_s", 1], ["error_ratio", 3], ["p50_ms", 2], ["p99_ms", 2]]) {
      const td = row.insertCell();
      td.className = "spark";
      const svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", "0 0 240 60");
      svg.setAttribute("preserveAspectRatio", "none");
      line(svg, points, field);
      const now = document.createElement("b");
      now.textContent = latest(points, field, digits);
      td.append(svg, now);
    }
  }
  if (!body.rows.length) {
    const td = body.insertRow().insertCell();
    td.colSpan = 5;
    td.className = "empty";
    td.textContent = "no API requests in the last 15 minutes";
  }
}

// ---- panels ----------------------------------------------------------------------------------

function renderHeader(data) {
  const ready = data.ready && data.db.up;
  $("state").textContent = ready ? "ready" : "not ready";
  $("state").className = "badge " + (ready ? "ok" : "bad");
  $("uptime").textContent = "up " + Math.round(data.uptime_s) + " s";
  $("build").textContent = "v" + data.build.version +
    (data.build.git_sha ? " (" + data.build.git_sha.slice(0, 10) + ")" : "");
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function renderTraffic(data) {
  const overall = data.history.overall;
  chart("chart-rate", overall, "rate_per_s", 1);
  chart("chart-errors", overall, "error_ratio", 3);
  chart("chart-p50", overall, "p50_ms", 2);
  chart("chart-p99", overall, "p99_ms", 2);
  routeCharts(data.history.routes);
  // The API's routes in the table; the page's own polling and unmatched paths apart.
  const api = data.traffic.filter((r) => r.kind === "api");
  const fixed = (name, digits) => (r) => (r[name] === null ? null : r[name].toFixed(digits));
  fillTable("traffic", api, [[key("route")], [key("method")], [key("requests"), "num"],
    [key("2xx"), "num"], [key("4xx"), "num"], [key("5xx"), "num"],
    [fixed("rate_per_s", 1), "num"], [fixed("p50_ms", 2), "num"], [fixed("p99_ms", 2), "num"]]);
  const apart = (kind) => data.traffic.filter((r) => r.kind === kind)
    .reduce((sum, r) => sum + r.requests, 0);
  $("traffic-apart").textContent = "This page's own requests: " + apart("page") +
    "; to no route: " + apart("unmatched") + ".";
}

function renderDatabase(data) {
  const db = data.db;
  $("db").textContent = db.up ? "answers" : "unavailable: " + db.reason;
  $("db").className = db.up ? "" : "bad";
  $("seed-state").textContent = data.seed.state + " (" + number(data.seed.rows) +
    " of " + number(data.seed.target) + ")";
  $("seed-progress").max = Math.max(data.seed.target, 1);
  $("seed-progress").value = data.seed.rows;
  if (!db.up) return;
  $("seed-rows").textContent = number(db.status_rows);
  $("db-engine").textContent = db.engine + " (" + db.backend + ")";
  $("db-size").textContent = bytes(db.size_bytes);
  const walOver = db.wal_bytes !== null && db.wal_bytes > db.wal_limit_bytes;
  $("db-wal").textContent = db.wal_bytes === null ? "none (a server database)" :
    bytes(db.wal_bytes) + " (truncated back to " + bytes(db.wal_limit_bytes) + ")";
  $("db-wal").className = walOver ? "bad" : "";
  const m = db.migrations;
  $("db-migrations").textContent = m.applied + " of " + m.known + " applied, head " + m.head +
    (m.pending.length ? "; pending: " + m.pending.join(", ") : "");
  $("db-migrations").className = m.pending.length ? "bad" : "";
  const b = db.backups;
  $("db-backups").textContent = !b ? "no schedule (--backup-dir)" :
    "last " + when(b.last_success_at) + ", every " + b.every_s + " s" +
    (b.failures ? "; " + b.failures + " failed: " + b.last_error : "");
  $("db-backups").className = b && b.failures ? "bad" : "";
}

function renderRuns(runs) {
  const steps = (run) => Object.entries(run.steps).map(([s, n]) => n + " " + s).join(", ") || "none";
  fillTable("runs", runs, [[(r) => when(r.created_at), "", key("created_at")],
    [(r) => short(r.run_id), "", key("run_id")], [key("status")], [steps],
    [(r) => short(r.git_sha), "", key("git_sha")]]);
}

function renderDebug(debug) {
  if (!debug) return;
  $("debug-counts").textContent = number(debug.active_sessions) + " active session(s), " +
    number(debug.reserved_worktrees) + " reserved worktree(s) (" +
    number(debug.expiring_worktrees) + " expiring, " + number(debug.expired_worktrees) +
    " expired), " + number(debug.running_commands) + " running command(s)";
  fillTable("debug-sessions", debug.sessions, [[(s) => when(s.started_at), "", key("started_at")],
    [key("repository")], [key("user")], [(s) => short(s.id), "", key("id")]]);
  fillTable("debug-worktrees", debug.worktrees, [
    [(w) => when(w.lease_expires_at), "", key("lease_expires_at")], [key("lease")],
    [key("repository")], [key("path"), "free"], [key("branch")]]);
  fillTable("debug-commands", debug.commands, [[(c) => when(c.started_at), "", key("started_at")],
    [key("command"), "free"], [(c) => short(c.session_id), "", key("session_id")]]);
}

function renderDocuments(documents) {
  if (!documents) return;  // no --documents-dir: nothing is synced
  // An admin token sees the roots and the failing files; anyone else their number.
  const failing = Array.isArray(documents.errors) ? documents.errors : [];
  const count = Array.isArray(documents.errors) ? failing.length : documents.errors;
  $("documents-state").textContent = documents.state +
    (documents.reason ? " (" + documents.reason + ")" : "") + ", " + count + " error(s)";
  $("documents-state").className = documents.reason || count ? "bad" : "";
  $("documents-stored").textContent = Object.entries(documents.documents)
    .map(([type, n]) => number(n) + " " + type).join(", ") || "none";
  const last = documents.last_full_sync;
  $("documents-last-sync").textContent = !last ? "not yet" : when(last.finished_at) + " (" +
    last.added + " added, " + last.updated + " updated, " + last.deleted + " deleted, " +
    last.errors + " failed, " + last.seconds + " s)";
  $("documents-roots").textContent = documents.roots ? documents.roots.join(", ") :
    "shown to an admin token";
  $("sync-reload").hidden = false;
  fillTable("sync-errors", failing, [[key("file"), "free"], [key("reason"), "free"],
    [(e) => when(e.since), "", key("since")]]);
}

function renderAudit(entries) {
  fillTable("audit", entries, [[(a) => when(a.ts), "", key("ts")], [key("actor")],
    [key("event")], [key("message"), "free"]]);
}

function render(data) {
  renderHeader(data);
  renderTraffic(data);
  renderDatabase(data);
  renderRuns(data.runs || []);
  renderDebug(data.debug);
  renderDocuments(data.documents);
  renderAudit(data.audit || []);
}

// ---- the token -------------------------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function authHeaders() {
  return token() ? { Authorization: "Bearer " + token() } : {};
}

function showProblem(text) {
  $("problem").hidden = !text;
  $("problem").textContent = text || "";
}

function showTokenState() {
  $("token-forget").hidden = !token();
  $("token-show").hidden = Boolean(token()) || !$("token-form").hidden;
}

function askForToken(why) {
  $("token-form").hidden = false;
  showTokenState();
  showProblem(why);
  $("token").focus();
}

// What a refusal means for the token the page sent (or did not).
function refusal(status) {
  if (status === 403) return "This token is not an admin token: the page needs one with the admin scope.";
  if (token()) return "The server refused this token (unknown or revoked): enter another.";
  return "This server needs an admin token to show its state (--auth-reads).";
}

// ---- polling ---------------------------------------------------------------------------------

let timer = null;
let latestPoll = 0;

// Polls until the server refuses the token (or its absence): then it waits for one, rather
// than asking again every two seconds with a token it knows to be wrong. A poll started while
// another is on its way (a token entered, a rescan) takes over: only the newest schedules
// the next, so two chains never run side by side.
async function poll() {
  clearTimeout(timer);
  const mine = ++latestPoll;
  let again = true;
  try {
    const resp = await fetch("/ui/data", { headers: authHeaders() });
    if (mine !== latestPoll) return;  // a newer poll, perhaps with another token, decides
    if (resp.status === 401 || resp.status === 403) {
      const why = refusal(resp.status);
      sessionStorage.removeItem(TOKEN_KEY);
      askForToken(why);
      again = false;
      return;
    }
    const data = await resp.json();
    if (!resp.ok) {
      showProblem(data.error ? data.error.message : "HTTP " + resp.status);
      return;
    }
    showProblem("");
    render(data);
  } catch (err) {
    showProblem("BobGen does not answer: " + err.message);
  } finally {
    if (again && mine === latestPoll) timer = setTimeout(poll, POLL_MS);
  }
}

// POST /admin/sync/reload needs an admin token: ask for one when the server says so.
async function reloadDocuments() {
  const resp = await fetch("/admin/sync/reload", { method: "POST", headers: authHeaders() });
  if (resp.status === 401 || resp.status === 403) {
    askForToken(resp.status === 403 ? refusal(403) : "A rescan needs an admin token.");
    $("sync-reload-result").textContent = "not started";
    return;
  }
  const data = await resp.json();
  $("sync-reload-result").textContent = resp.status === 202 ?
    "rescan started at " + new Date().toLocaleTimeString() :
    (data.error ? data.error.message : "HTTP " + resp.status);
  poll();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  $("token-form").hidden = true;
  showTokenState();
  showProblem("");
  poll();
});

$("token-cancel").addEventListener("click", () => {
  $("token-form").hidden = true;
  showTokenState();
  showProblem("");
  poll();
});

$("token-show").addEventListener("click", () => askForToken(""));

$("token-forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
  poll();
});

$("sync-reload").addEventListener("click", () => {
  reloadDocuments().catch((err) => { $("sync-reload-result").textContent = err.message; });
});

showTokenState();
poll();
