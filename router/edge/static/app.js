// The router's try-it page: plain JavaScript, no framework, nothing from a CDN.
"use strict";

const $ = (id) => document.getElementById(id);
let models = {};

// When the router needs an API key (401), ask for one once and keep it for
// this tab only (sessionStorage): it is sent as X-API-Key from then on.
const KEY_ITEM = "router-api-key";

async function api(url, init = {}) {
  const send = () => {
    const key = sessionStorage.getItem(KEY_ITEM);
    const headers = { ...(init.headers || {}), ...(key ? { "X-API-Key": key } : {}) };
    return fetch(url, { ...init, headers });
  };
  let resp = await send();
  if (resp.status === 401) {
    const key = window.prompt("This router needs an API key for this request. API key:");
    if (key) {
      sessionStorage.setItem(KEY_ITEM, key.trim());
      resp = await send();
    }
  }
  return resp;
}

async function loadModels() {
  const resp = await api("/models");
  const body = await resp.json();
  models = body.models || {};
  const select = $("model");
  const previous = select.value || body.default_model;
  select.innerHTML = "";
  // Models that take raw tensors (no input_kind) are served over /v2 only: not offered here.
  for (const name of Object.keys(models).filter((m) => models[m].input_kind)) {
    select.add(new Option(name, name, false, name === previous));
  }
  renderModels(body.default_model);
  onModelChange();
}

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// "name DTYPE [dims]" per tensor, -1 shown as "?" (a dynamic axis)
function tensors(list) {
  return (list || []).map((t) => `${escape(t.name)} <span class="muted">${escape(t.datatype)} ` +
    `[${t.shape.map((d) => (d < 0 ? "?" : d)).join("×")}]</span>`).join("<br>") || "-";
}

function canaryCell(m) {
  return m.canary_version ? `v${escape(m.canary_version)} at ${escape(m.canary_percent)}%` : "none";
}

function renderModels(defaultModel) {
  const rows = Object.entries(models).map(([name, m]) => {
    const versions = Object.entries(m.versions)
      .map(([v, state]) => `<span class="state-${escape(state)}">v${escape(v)} ${escape(state.toLowerCase())}</span>`)
      .join(", ");
    const kind = m.input_kind ? `<span class="muted">${escape(m.input_kind)}</span><br>` : "";
    const via = m.input_kind ? "" : "<br><span class='muted'>raw tensors: /v2</span>";
    return `<tr class="model" data-model="${escape(name)}"><td>${escape(name)}` +
      `${name === defaultModel ? " <span class='muted'>(default)</span>" : ""}</td>` +
      `<td>${versions || "-"}</td><td class="default">${m.default_version ? "v" + escape(m.default_version) : "-"}</td>` +
      `<td class="canary">${canaryCell(m)}</td><td>${kind}${tensors(m.inputs)}${via}</td><td>${tensors(m.outputs)}</td></tr>` +
      `<tr class="rollout-row" data-rollout="${escape(name)}"><td colspan="6">${rolloutLine(m.rollout)}</td></tr>`;
  });
  $("models").querySelector("tbody").innerHTML = rows.join("");
}

const percent = (x) => `${(x * 100).toFixed(x > 0 && x < 0.01 ? 2 : 1)}%`;

// One version's figures in the current window: error rate, p99 and how many requests.
function versionFigures(role, f) {
  const p99 = f.p99_ms === null ? "-" : `${f.p99_ms.toFixed(1)} ms`;
  return `<span class="figure">${role} v${escape(f.version)}: ${percent(f.error_rate)} errors, p99 ${p99} ` +
    `<span class="muted">(${escape(f.requests)} req)</span></span>`;
}

// A model's live rollout in one line: its status, the canary's share and step, each
// version's error rate and p99, the shadow's agreement, and why it is paused or was rolled back.
function rolloutLine(r) {
  if (!r) return "";
  const parts = [`<span class="badge status-${escape(r.status)}">${escape(r.status.replace("_", " "))}</span>`];
  if (r.canary_version) {
    parts.push(`canary v${escape(r.canary_version)} at ${escape(r.canary_percent)}%` +
      (r.step ? ` · step ${escape(r.step)}/${escape(r.steps.length)}` : ""));
  } else {
    parts.push("no canary");
  }
  if (r.shadow_version && r.shadow_percent > 0) parts.push(`shadow v${escape(r.shadow_version)} at ${escape(r.shadow_percent)}%`);
  const f = r.figures;
  if (f) {
    if (f.default && f.default.version) parts.push(versionFigures("default", f.default));
    if (f.canary) parts.push(versionFigures("canary", f.canary));
    if (f.shadow) {
      const agreement = f.shadow.agreement === null ? "-" : percent(f.shadow.agreement);
      parts.push(`<span class="figure">shadow agreement ${agreement} <span class="muted">(${escape(f.shadow.compared)} compared)</span></span>`);
    }
  }
  if (r.reason && (r.status === "paused" || r.status === "rolled_back")) {
    parts.push(`<span class="reason">${escape(r.reason)}</span>`);
  }
  return parts.join(" · ");
}

// Every 2 s while the page is shown: the rollout lines (and the split they set) from
// /models, in place; nothing else is redrawn, so the form keeps what the user entered.
const ROLLOUT_REFRESH_MS = 2000;

async function refreshRollouts() {
  if (document.hidden) return;
  const resp = await fetch("/models");  // public: never asks for a key
  if (!resp.ok) return;
  const fresh = (await resp.json()).models || {};
  const rows = new Map([...document.querySelectorAll("#models tr[data-model]")].map((tr) => [tr.dataset.model, tr]));
  const lines = new Map([...document.querySelectorAll("#models tr[data-rollout]")].map((tr) => [tr.dataset.rollout, tr]));
  for (const [name, m] of Object.entries(fresh)) {
    if (models[name]) Object.assign(models[name], { rollout: m.rollout, default_version: m.default_version,
      canary_version: m.canary_version, canary_percent: m.canary_percent });
    const row = rows.get(name);
    if (row) {
      row.querySelector(".default").textContent = m.default_version ? "v" + m.default_version : "-";
      row.querySelector(".canary").innerHTML = canaryCell(m);
    }
    const line = lines.get(name);
    if (line) line.firstElementChild.innerHTML = rolloutLine(m.rollout);
  }
}

function refreshRolloutsForever() {
  setTimeout(() => refreshRollouts().catch(() => {}).finally(refreshRolloutsForever), ROLLOUT_REFRESH_MS);
}

function onModelChange() {
  const m = models[$("model").value] || {};
  const isImage = m.input_kind === "image_gray";
  $("text-input").hidden = isImage;
  $("image-input").hidden = !isImage;
  const version = $("version");
  version.innerHTML = "";
  version.add(new Option("routed", ""));
  for (const v of Object.keys(m.versions || {})) version.add(new Option("v" + v, v));
  const classes = Math.max(1, (m.labels || []).length);
  $("top-k").max = classes;
  $("top-k").value = Math.min(3, classes);
}

function showError(err) {
  $("error").hidden = false;
  $("error").textContent = `${err.code}: ${err.message}` + (err.request_id ? ` (request id ${err.request_id})` : "");
}

function render(body, cacheHeader) {
  $("result").hidden = false;
  $("prediction").textContent = body.prediction;
  $("confidence").textContent = `${(body.confidence * 100).toFixed(1)}%`;
  $("scores").innerHTML = Object.entries(body.scores).map(([label, p]) =>
    `<div class="bar"><span>${label}</span><span class="track"><span class="fill" style="width:${(p * 100).toFixed(1)}%"></span></span>` +
    `<span>${(p * 100).toFixed(1)}%</span></div>`).join("");
  $("meta-version").textContent = `v${body.model_version}` + (body.requested_version ? ` (asked for v${body.requested_version})` : "");
  $("meta-routed").textContent = body.routed_by;
  $("meta-cache").textContent = cacheHeader || (body.cached ? "HIT" : "MISS");
  $("meta-latency").textContent = `${body.latency_ms} ms`;
  $("meta-request-id").textContent = body.request_id;
}

function buildRequest() {
  const m = models[$("model").value] || {};
  const fields = { model: $("model").value, top_k: Number($("top-k").value) || 1 };
  if ($("version").value) fields.model_version = $("version").value;
  if (m.input_kind === "image_gray") {
    const file = $("file").files[0];
    if (!file) throw { code: "invalid_input", message: "choose an image first" };
    const form = new FormData();
    form.append("file", file);
    for (const [k, v] of Object.entries(fields)) form.append(k, String(v));
    return { body: form };
  }
  fields.text = $("text").value;
  return { body: JSON.stringify(fields), headers: { "Content-Type": "application/json" } };
}

async function pollJob(url) {
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline) {
    const job = await (await api(url)).json();
    $("job-status").textContent = `job ${job.job_id}: ${job.status}` + (job.attempts > 1 ? ` (attempt ${job.attempts})` : "");
    if (job.status === "done") return job.result;
    if (job.status === "failed") throw job.error;
    await new Promise((r) => setTimeout(r, 300));
  }
  throw { code: "timeout", message: "the job did not finish in 60 s" };
}

async function submit(event) {
  event.preventDefault();
  $("error").hidden = true;
  $("result").hidden = true;
  $("predict").disabled = true;
  const asJob = $("as-job").checked;
  $("job-status").hidden = !asJob;
  try {
    const request = buildRequest();
    const resp = await api(asJob ? "/jobs" : "/predict", { method: "POST", ...request });
    const body = await resp.json();
    if (!resp.ok) throw body.error;
    if (asJob) {
      $("job-status").textContent = `job ${body.job_id}: queued`;
      render(await pollJob(body.status_url), null);
    } else {
      render(body, resp.headers.get("X-Cache"));
    }
  } catch (err) {
    showError(err && err.code ? err : { code: "error", message: String(err) });
  } finally {
    $("predict").disabled = false;
    loadModels();
  }
}

function setUpDrop() {
  const drop = $("drop");
  const preview = () => {
    const file = $("file").files[0];
    if (!file) return;
    $("preview").src = URL.createObjectURL(file);
    $("preview").hidden = false;
  };
  $("file").addEventListener("change", preview);
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    $("file").files = e.dataTransfer.files;
    preview();
  });
}

$("model").addEventListener("change", onModelChange);
$("form").addEventListener("submit", submit);
setUpDrop();
loadModels().catch((err) => showError({ code: "error", message: "cannot read /models: " + err }));
refreshRolloutsForever();
