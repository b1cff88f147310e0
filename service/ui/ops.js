// The ops page: polls /ui/data every two seconds and fills the page. Plain JS, no build step.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "bobgen-admin-token";

function $(id) { return document.getElementById(id); }

function cell(row, text, numeric) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (numeric) td.className = "num";
}

function fillTable(id, items, columns) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  for (const item of items) {
    const row = body.insertRow();
    for (const [key, numeric] of columns) cell(row, item[key], numeric);
  }
}

const SVG = "http://www.w3.org/2000/svg";

// A line over the history's points, scaled to its own maximum; the newest value beside it.
function chart(id, points, key, digits) {
  const svg = $(id);
  const values = points.map((p) => (p[key] === null ? 0 : p[key]));
  const top = Math.max(...values, 1e-9);
  const step = values.length > 1 ? 240 / (values.length - 1) : 0;
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", values.map((v, i) =>
    (i * step).toFixed(1) + "," + (58 - (v / top) * 54).toFixed(1)).join(" "));
  svg.replaceChildren(line);
  const last = points.length ? points[points.length - 1][key] : null;
  $(id + "-now").textContent = last === null ? "–" : Number(last).toFixed(digits);
}

function showProblem(text) {
  $("problem").hidden = !text;
  $("problem").textContent = text || "";
}

function render(data) {
  const ready = data.ready && data.db.up;
  $("state").textContent = ready ? "ready" : "not ready";
  $("state").className = "badge " + (ready ? "ok" : "bad");
  $("uptime").textContent = "up " + Math.round(data.uptime_s) + " s";
  $("build").textContent = "v" + data.build.version +
    (data.build.git_sha ? " (" + data.build.git_sha.slice(0, 10) + ")" : "");
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  const overall = data.history.overall;
  chart("chart-rate", overall, "rate_per_s", 1);
  chart("chart-errors", overall, "error_ratio", 3);
  chart("chart-p50", overall, "p50_ms", 2);
  chart("chart-p99", overall, "p99_ms", 2);
  $("db").textContent = data.db.up ? "answers" : "unavailable: " + data.db.reason;
  $("seed-rows").textContent = data.db.up ? data.db.status_rows.toLocaleString("en") : "–";
  $("seed-state").textContent = data.seed.state + " (" + data.seed.rows.toLocaleString("en") +
    " of " + data.seed.target.toLocaleString("en") + ")";
  $("seed-progress").max = Math.max(data.seed.target, 1);
  $("seed-progress").value = data.seed.rows;
  // The API's routes in the table; the page's own polling and unmatched paths apart.
  const api = data.traffic.filter((r) => r.kind === "api");
  fillTable("traffic", api, [["route"], ["method"], ["requests", true], ["2xx", true],
    ["4xx", true], ["5xx", true], ["rate_per_s", true], ["p50_ms", true], ["p99_ms", true]]);
  const apart = (kind) => data.traffic.filter((r) => r.kind === kind)
    .reduce((sum, r) => sum + r.requests, 0);
  $("traffic-apart").textContent = "This page's own requests: " + apart("page") +
    "; to no route: " + apart("unmatched") + ". Rates and latencies: the last minute.";
  fillTable("runs", data.runs || [], [["created_at"], ["run_id"], ["git_sha"]]);
  fillTable("audit", data.audit || [], [["ts"], ["actor"], ["event"], ["message"]]);
  if (data.documents) {
    // An admin token sees the failing files; anyone else their number (as /health).
    var failing = Array.isArray(data.documents.errors) ? data.documents.errors : [];
    var count = Array.isArray(data.documents.errors) ? failing.length : data.documents.errors;
    $("documents-state").textContent = data.documents.state +
      (data.documents.reason ? " (" + data.documents.reason + ")" : "") + ", " +
      count + " error(s)";
    $("documents-state").className = data.documents.reason ? "bad" : "";
    $("sync-reload").hidden = false;
    fillTable("sync-errors", failing, [["file"], ["reason"], ["since"]]);
  }
}

function authHeaders() {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  return headers;
}

// POST /admin/sync/reload needs an admin token: ask for one when the server says so.
async function reloadDocuments() {
  const resp = await fetch("/admin/sync/reload", { method: "POST", headers: authHeaders() });
  if (resp.status === 401 || resp.status === 403) {
    $("token-form").hidden = false;
    $("sync-reload-result").textContent = "a rescan needs an admin token";
    return;
  }
  const data = await resp.json();
  $("sync-reload-result").textContent = resp.status === 202 ? "rescan started" :
    (data.error ? data.error.message : "HTTP " + resp.status);
}

async function poll() {
  const headers = authHeaders();
  try {
    const resp = await fetch("/ui/data", { headers });
    if (resp.status === 401 || resp.status === 403) {
      $("token-form").hidden = false;
      showProblem("This server needs an admin token to show its state (--auth-reads).");
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
    setTimeout(poll, POLL_MS);
  }
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  $("token-form").hidden = true;
});

$("sync-reload").addEventListener("click", () => {
  reloadDocuments().catch((err) => { $("sync-reload-result").textContent = err.message; });
});

poll();
