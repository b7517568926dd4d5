/* phagoflow review — plain JavaScript + canvas front end (no build step).
 *
 * Views (hash routes): #/ plate heat-map, #/well/rRRcCC fields of a well, #/field/rRRcCCfFFpPP
 * viewer + correction, #/rate and #/rate/<session> blind rating. A token given as #token=... is
 * moved to sessionStorage and removed from the address bar.
 */
"use strict";

const $ = (id) => document.getElementById(id);
// The mask classes, served by the page (phagoflow.core.classes.class_table): one entry per label
// value, {value, name, plural, paint_rgb, reference_rgb}; nothing about them is defined here.
const CLASSES = JSON.parse($("phagoflow-classes").textContent);
const OBJECTS = CLASSES.filter((c) => c.value > 0); // the classes of objects (not background)
const CLASS_RGB = Object.fromEntries(OBJECTS.map((c) => [c.value, c.paint_rgb]));
// outline colours of the i-th reference source, per class value (each class's list is cycled)
const refRGB = (i) => Object.fromEntries(OBJECTS.map((c) => [c.value, c.reference_rgb[i % c.reference_rgb.length]]));

const S = {
  plate: null, token: sessionStorage.getItem("phagoflow.token") || "",
  user: localStorage.getItem("phagoflow.user") || "",
  // field view
  field: null, info: null, W: 0, H: 0, img: null, refs: {}, edit: null, startFrom: null,
  undo: [], redo: [], dirty: false, activeSeconds: 0, lastAction: 0, editOps: 0,
  tool: "brush", cls: 1, size: 5, view: { scale: 1, tx: 0, ty: 0 },
  contrast: [{ low: 0, high: 4095 }, { low: 0, high: 4095 }], channels: [true, true],
  showRefs: {}, showEdit: true, opacity: 0.55, sideBySide: false, sideSource: null,
  base: null, overlay: null, sideOverlay: null, painting: false, panning: null, space: false,
  last: null,
  // rating
  session: null, item: null, scores: {},
};

// ------------------------------------------------------------------ networking
async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (S.token) headers["Authorization"] = "Bearer " + S.token;
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  if (!res.ok) {
    let msg = res.status + " " + res.statusText;
    try { const j = await res.json(); if (j.detail) msg = res.status + ": " + (typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail)); } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return res;
}
const getJSON = async (path) => (await api(path)).json();
async function getRaw(path) {
  const res = await api(path);
  const shape = res.headers.get("X-Shape").split(",").map(Number);
  const dtype = res.headers.get("X-Dtype");
  const buf = await res.arrayBuffer();
  return { shape, data: dtype === "uint16" ? new Uint16Array(buf) : new Uint8Array(buf) };
}

function npyBytes(data, h, w) { // NumPy .npy v1.0, uint8, C order
  let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (" + h + ", " + w + "), }";
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += " ".repeat(pad % 64) + "\n";
  const out = new Uint8Array(10 + header.length + data.length);
  out.set([0x93, 78, 85, 77, 80, 89, 1, 0, header.length & 255, header.length >> 8]);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set(data, 10 + header.length);
  return out;
}

function status(msg, kind) {
  const el = $("status");
  if (!el) return;
  el.textContent = msg;
  el.className = "status " + (kind || "");
}

// ------------------------------------------------------------------ header: auth, progress
function initHeader() {
  const hash = location.hash;
  if (hash.startsWith("#token=")) {
    S.token = decodeURIComponent(hash.slice(7));
    sessionStorage.setItem("phagoflow.token", S.token);
    history.replaceState(null, "", location.pathname + "#/");
  }
  $("token").value = S.token;
  $("user").value = S.user;
  $("token").addEventListener("change", () => {
    S.token = $("token").value.trim();
    sessionStorage.setItem("phagoflow.token", S.token);
    checkAuth();
  });
  $("user").addEventListener("change", () => {
    S.user = $("user").value.trim();
    localStorage.setItem("phagoflow.user", S.user);
  });
  $("help-link").addEventListener("click", (e) => { e.preventDefault(); $("help").hidden = false; });
  $("help-close").addEventListener("click", () => { $("help").hidden = true; });
  checkAuth();
}

async function checkAuth() {
  const el = $("auth-state");
  if (!S.token) { el.textContent = "read-only (no token)"; return; }
  try {
    const j = await getJSON("/api/auth");
    el.textContent = j.user ? "signed in as " + j.user : "token ok";
    if (j.user) { S.user = j.user; $("user").value = j.user; }
  } catch (e) { el.textContent = "token rejected"; }
}

function showProgress(p) {
  $("progress-text").textContent = "curated " + p.curated + " / " + p.total;
  const c = p.correction;
  if (c) $("progress-text").title = c.fields_timed + " field(s) timed: " + (c.minutes_total ?? 0).toFixed(1) + " min in all, median " + (c.minutes_median ?? 0).toFixed(1) + " min per field";
  $("progress-bar").style.width = (100 * p.fraction).toFixed(1) + "%";
}

// ------------------------------------------------------------------ routing
function showView(name) {
  for (const v of ["plate", "well", "field", "rate"]) $("view-" + v).hidden = v !== name;
}

// Each navigation gets a number; one overtaken while it waited (the first plate load is slow)
// must not show its view over the newer one's (it used to hide an open field behind the plate).
let routeSeq = 0;

async function route() {
  const seq = ++routeSeq;
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  try {
    if (!S.plate) await loadPlate();
    if (seq !== routeSeq) return;
    if (parts[0] === "well" && parts[1]) { showView("well"); await showWell(parts[1]); }
    else if (parts[0] === "field" && parts[1]) { showView("field"); await openField(parts[1]); }
    else if (parts[0] === "rate") { showView("rate"); await showRating(parts[1]); }
    else { showView("plate"); drawHeatmap(); }
  } catch (e) {
    console.error(e);
    alert(e.message);
  }
}

async function loadPlate() {
  S.plate = await getJSON("/api/plate");
  $("plate-id").textContent = "plate " + S.plate.plate_id;
  showProgress(await getJSON("/api/progress")); // with the correction time (tooltip)
  const metrics = [["disagreement_total", "CIP-vs-CDL disagreement"]];
  for (const m of S.plate.methods) for (const c of OBJECTS) metrics.push([m + ":" + c.name, m.toUpperCase() + " " + c.plural]);
  metrics.push(["curated", "fields curated"]);
  $("heat-metric").innerHTML = metrics.map(([v, t]) => `<option value="${v}">${t}</option>`).join("");
  fillWellTable();
}

// ------------------------------------------------------------------ plate heat-map
function wellValue(w, metric) {
  if (metric === "disagreement_total") return w.disagreement_total;
  if (metric === "curated") return w.curated / Math.max(1, w.fields);
  const [m, c] = metric.split(":");
  return w.counts[m] ? w.counts[m][c] : null;
}

function viridis(t) { // compact approximation of viridis
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
  return stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
}

function heatGeometry() {
  const cv = $("heatmap"), p = S.plate;
  const cell = Math.min((cv.width - 50) / p.columns, (cv.height - 40) / p.rows);
  return { cv, cell, x0: 40, y0: 30 };
}

function drawHeatmap() {
  if (!S.plate) return;
  const { cv, cell, x0, y0 } = heatGeometry(), p = S.plate, ctx = cv.getContext("2d");
  const metric = $("heat-metric").value;
  ctx.clearRect(0, 0, cv.width, cv.height);
  ctx.fillStyle = "#9aa0aa"; ctx.font = "12px system-ui"; ctx.textAlign = "center";
  for (let c = 1; c <= p.columns; c++) ctx.fillText(String(c), x0 + (c - 0.5) * cell, y0 - 8);
  for (let r = 1; r <= p.rows; r++) ctx.fillText(String.fromCharCode(64 + r), x0 - 14, y0 + (r - 0.5) * cell + 4);
  const vals = p.wells.map((w) => wellValue(w, metric)).filter((v) => v !== null && v !== undefined);
  const lo = Math.min(...vals, 0), hi = Math.max(...vals, 1e-9);
  for (let r = 1; r <= p.rows; r++) for (let c = 1; c <= p.columns; c++) {
    ctx.strokeStyle = "#333"; ctx.beginPath();
    ctx.arc(x0 + (c - 0.5) * cell, y0 + (r - 0.5) * cell, cell * 0.42, 0, 2 * Math.PI); ctx.stroke();
  }
  for (const w of p.wells) {
    const v = wellValue(w, metric);
    const cx = x0 + (w.col - 0.5) * cell, cy = y0 + (w.row - 0.5) * cell;
    ctx.fillStyle = v === null || v === undefined ? "#555" : "rgb(" + viridis((v - lo) / (hi - lo || 1)).join(",") + ")";
    ctx.beginPath(); ctx.arc(cx, cy, cell * 0.42, 0, 2 * Math.PI); ctx.fill();
    if (w.curated > 0) { ctx.strokeStyle = "#3fbf6f"; ctx.lineWidth = 3; ctx.stroke(); ctx.lineWidth = 1; }
  }
  // colour bar
  for (let i = 0; i < 200; i++) { ctx.fillStyle = "rgb(" + viridis(i / 199).join(",") + ")"; ctx.fillRect(x0 + i, cv.height - 8, 1, 8); }
  ctx.fillStyle = "#9aa0aa"; ctx.textAlign = "left";
  ctx.fillText(fmt(lo) + " … " + fmt(hi) + "  " + $("heat-metric").selectedOptions[0].text, x0 + 210, cv.height - 1);
}

function fmt(v) { return v === null || v === undefined ? "–" : Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2); }

function wellAt(ev) {
  const { cv, cell, x0, y0 } = heatGeometry(), rect = cv.getBoundingClientRect();
  const x = (ev.clientX - rect.left) * cv.width / rect.width, y = (ev.clientY - rect.top) * cv.height / rect.height;
  const col = Math.floor((x - x0) / cell) + 1, row = Math.floor((y - y0) / cell) + 1;
  return S.plate.wells.find((w) => w.row === row && w.col === col);
}

function initHeatmap() {
  const cv = $("heatmap"), tip = $("heat-tip");
  $("heat-metric").addEventListener("change", drawHeatmap);
  cv.addEventListener("click", (ev) => { const w = wellAt(ev); if (w) location.hash = "#/well/" + w.well; });
  cv.addEventListener("mousemove", (ev) => {
    const w = S.plate && wellAt(ev);
    if (!w) { tip.hidden = true; return; }
    const lines = [w.name + "  (" + w.fields + " fields, " + w.curated + " curated)"];
    for (const [m, c] of Object.entries(w.counts)) lines.push(m + ": " + OBJECTS.map((k) => c[k.name] + " " + k.plural).join(", "));
    lines.push("disagreement " + fmt(w.disagreement_total));
    tip.textContent = lines.join("\n"); tip.hidden = false;
    tip.style.left = ev.clientX + 14 + "px"; tip.style.top = ev.clientY + 10 + "px";
  });
  cv.addEventListener("mouseleave", () => { tip.hidden = true; });
}

function countCells(counts, methods) {
  return methods.map((m) => OBJECTS.map((k) => `<td>${counts[m] ? counts[m][k.name] : "–"}</td>`).join("")).join("");
}
function countHeads(methods) {
  return methods.map((m) => OBJECTS.map((k) => `<th>${m} ${k.name.slice(0, 5)}.</th>`).join("")).join("");
}

function fillWellTable() {
  const p = S.plate, t = $("well-table");
  t.tHead.innerHTML = `<tr><th>well</th><th>fields</th><th>curated</th>${countHeads(p.methods)}<th>disagreement</th></tr>`;
  const wells = [...p.wells].sort((a, b) => (b.disagreement_total ?? -1) - (a.disagreement_total ?? -1));
  t.tBodies[0].innerHTML = wells.map((w) => `<tr data-well="${w.well}"><td>${w.name}</td><td>${w.fields}</td><td>${w.curated}</td>${countCells(w.counts, p.methods)}<td>${fmt(w.disagreement_total)}</td></tr>`).join("");
  for (const tr of t.tBodies[0].rows) tr.addEventListener("click", () => { location.hash = "#/well/" + tr.dataset.well; });
}

// ------------------------------------------------------------------ well view
async function showWell(well) {
  const j = await getJSON("/api/wells/" + encodeURIComponent(well) + "/fields");
  $("well-title").textContent = "Well " + j.name;
  const t = $("field-table"), methods = S.plate.methods;
  t.tHead.innerHTML = `<tr><th>field</th>${countHeads(methods)}<th>disagreement</th><th>curated</th></tr>`;
  t.tBodies[0].innerHTML = j.fields.map((f) => `<tr data-field="${f.field}"><td>${f.label}</td>${countCells(f.counts, methods)}<td>${fmt(f.disagreement)}</td><td>${f.curated ? "✓" : ""}</td></tr>`).join("");
  for (const tr of t.tBodies[0].rows) tr.addEventListener("click", () => { location.hash = "#/field/" + tr.dataset.field; });
}

// ------------------------------------------------------------------ field view: loading
async function openField(name) {
  if (S.field === name && S.img) { resizeCanvas(); render(); return; }
  if (S.dirty && !confirm("Discard unsaved edits of " + S.info.label + "?")) { history.back(); return; }
  status("loading " + name + " …");
  const info = await getJSON("/api/fields/" + encodeURIComponent(name));
  const img = await getRaw("/api/fields/" + encodeURIComponent(name) + "/image");
  S.field = name; S.info = info; S.H = info.size_yx[0]; S.W = info.size_yx[1]; S.img = img.data;
  S.refs = {};
  for (const src of info.masks) S.refs[src] = (await getRaw("/api/fields/" + encodeURIComponent(name) + "/masks/" + src)).data;
  S.contrast = info.contrast.map((c) => ({ low: c.low, high: c.high, max: c.max }));
  $("field-title").textContent = info.label;
  $("field-title").title = name; // the file name, for finding the TIFFs
  $("back-well").href = "#/well/" + info.well;
  $("back-well").textContent = "← " + info.well_name;
  buildFieldControls();
  resetTiming();
  const start = info.masks.includes("curated") ? "curated" : (S.plate.methods.find((m) => info.masks.includes(m) && m !== "cip") || info.masks[0] || "empty");
  $("start-from").value = start;
  loadStart(start);
  resizeCanvas();
  fitView();
  renderBase();
  showProvenance();
  status("ready: " + (info.masks.length ? "masks " + info.masks.join(", ") : "no masks yet"), "ok");
}

function showProvenance() {
  const p = S.info.provenance;
  const effort = p && p.seconds_editing !== null && p.seconds_editing !== undefined ? ", " + (p.seconds_editing / 60).toFixed(1) + " min, " + (p.edit_operations ?? "?") + " edits" : "";
  $("provenance").textContent = p ? "curated by " + p.user + " at " + p.saved_at + " from " + p.started_from + " (" + p.pixels_changed + " px changed" + effort + ")" : "not curated yet";
}

function buildFieldControls() {
  const refs = $("ref-toggles");
  const sources = S.plate.sources;
  refs.innerHTML = sources.map((s, i) => {
    const colours = refRGB(i);
    const has = S.info.masks.includes(s);
    return `<label><input type="checkbox" data-ref="${s}" ${has ? "" : "disabled"} ${S.showRefs[s] && has ? "checked" : ""}> ${s} outline` +
      OBJECTS.map((c) => `<span class="legend-sw" style="background:rgb(${colours[c.value]})"></span>`).join("") + "</label>";
  }).join("");
  for (const cb of refs.querySelectorAll("input")) cb.addEventListener("change", () => { S.showRefs[cb.dataset.ref] = cb.checked; renderOverlay(); });
  const opts = ["empty", ...S.info.masks].map((s) => `<option value="${s}">${s}</option>`).join("");
  $("start-from").innerHTML = opts;
  $("side-source").innerHTML = S.info.masks.map((s) => `<option value="${s}">${s}</option>`).join("");
  if (S.sideSource && S.info.masks.includes(S.sideSource)) $("side-source").value = S.sideSource;
  S.sideSource = $("side-source").value;
  for (let c = 0; c < 2; c++) {
    const top = Math.max(4095, Math.ceil(S.contrast[c].max || 0));
    for (const k of ["lo", "hi"]) { $(k + c).max = top; }
    $("lo" + c).value = S.contrast[c].low; $("hi" + c).value = S.contrast[c].high;
    $("ch" + c).checked = S.channels[c];
  }
  const wf = S.info.well_fields, i = wf.indexOf(S.field);
  $("prev-field").disabled = i <= 0; $("next-field").disabled = i >= wf.length - 1;
}

function loadStart(src) {
  const n = S.W * S.H;
  S.edit = src !== "empty" && S.refs[src] ? new Uint8Array(S.refs[src]) : new Uint8Array(n);
  S.startFrom = src; S.undo = []; S.redo = []; S.dirty = false;
  touch(); // loading a start mask is an action; the clock keeps running (see resetTiming)
  renderOverlay();
}

// ------------------------------------------------------------------ rendering
function resizeCanvas() {
  const cv = $("view"), r = cv.getBoundingClientRect();
  cv.width = Math.max(100, Math.round(r.width)); cv.height = Math.max(100, Math.round(r.height));
}

function fitView() {
  const cv = $("view"), panes = S.sideBySide ? 2 : 1;
  const scale = Math.min(cv.width / panes / S.W, cv.height / S.H);
  S.view = { scale, tx: (cv.width / panes - S.W * scale) / 2, ty: (cv.height - S.H * scale) / 2 };
  render();
}

function renderBase() {
  const n = S.W * S.H, out = new ImageData(S.W, S.H), d = out.data, img = S.img;
  const k = [0, 1].map((c) => 255 / Math.max(1, S.contrast[c].high - S.contrast[c].low));
  const lo = [S.contrast[0].low, S.contrast[1].low];
  for (let i = 0; i < n; i++) {
    const r = S.channels[0] ? Math.max(0, Math.min(255, (img[i] - lo[0]) * k[0])) : 0;
    const g = S.channels[1] ? Math.max(0, Math.min(255, (img[n + i] - lo[1]) * k[1])) : 0;
    d[4 * i] = r; d[4 * i + 1] = g; d[4 * i + 2] = r; d[4 * i + 3] = 255; // DsRed magenta, pHluorin green
  }
  S.base = S.base || document.createElement("canvas");
  S.base.width = S.W; S.base.height = S.H;
  S.base.getContext("2d").putImageData(out, 0, 0);
  renderOverlay();
}

function paintMask(d, mask, colours, outline) {
  const W = S.W, H = S.H;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const i = y * W + x, v = mask[i];
    if (!v) continue;
    if (outline) {
      const edge = x === 0 || y === 0 || x === W - 1 || y === H - 1 ||
        mask[i - 1] !== v || mask[i + 1] !== v || mask[i - W] !== v || mask[i + W] !== v;
      if (!edge) continue;
    }
    const c = colours[v]; if (!c) continue;
    d[4 * i] = c[0]; d[4 * i + 1] = c[1]; d[4 * i + 2] = c[2]; d[4 * i + 3] = 255;
  }
}

function overlayCanvas(edit, refs) {
  const out = new ImageData(S.W, S.H), d = out.data;
  if (edit) paintMask(d, edit, CLASS_RGB, false);
  S.plate.sources.forEach((s, i) => {
    if (refs.includes(s) && S.refs[s]) paintMask(d, S.refs[s], refRGB(i), true);
  });
  const cv = document.createElement("canvas"); cv.width = S.W; cv.height = S.H;
  cv.getContext("2d").putImageData(out, 0, 0);
  return cv;
}

function renderOverlay() {
  if (!S.edit) return;
  const refs = Object.keys(S.showRefs).filter((s) => S.showRefs[s]);
  S.overlay = overlayCanvas(S.showEdit ? S.edit : null, refs);
  S.sideOverlay = S.sideBySide && S.refs[S.sideSource] ? overlayCanvas(S.refs[S.sideSource], []) : null;
  render();
}

function render() {
  const cv = $("view"); if (!S.base || !cv) return;
  const ctx = cv.getContext("2d"), v = S.view;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, cv.width, cv.height);
  ctx.imageSmoothingEnabled = false;
  const panes = S.sideBySide ? 2 : 1, pw = cv.width / panes;
  for (let p = 0; p < panes; p++) {
    ctx.save();
    ctx.beginPath(); ctx.rect(p * pw, 0, pw, cv.height); ctx.clip();
    ctx.setTransform(v.scale, 0, 0, v.scale, v.tx + p * pw, v.ty);
    ctx.drawImage(S.base, 0, 0);
    ctx.globalAlpha = S.opacity;
    const ov = p === 0 ? S.overlay : S.sideOverlay;
    if (ov) ctx.drawImage(ov, 0, 0);
    ctx.restore();
  }
  if (S.sideBySide) {
    ctx.fillStyle = "#fff"; ctx.font = "13px system-ui";
    ctx.fillText("edited", 8, 16); ctx.fillText(S.sideSource || "", pw + 8, 16);
    ctx.fillRect(pw - 1, 0, 2, cv.height);
  }
}

// ------------------------------------------------------------------ coordinates
function clientToImage(clientX, clientY) {
  const cv = $("view"), r = cv.getBoundingClientRect();
  const pw = S.sideBySide ? cv.width / 2 : cv.width;
  let x = (clientX - r.left) * cv.width / r.width, y = (clientY - r.top) * cv.height / r.height;
  if (x >= pw) x -= pw;
  return { x: (x - S.view.tx) / S.view.scale, y: (y - S.view.ty) / S.view.scale };
}
function imageToClient(x, y) { // centre of pixel (x, y) in client coordinates
  const cv = $("view"), r = cv.getBoundingClientRect();
  return {
    x: r.left + ((x + 0.5) * S.view.scale + S.view.tx) * r.width / cv.width,
    y: r.top + ((y + 0.5) * S.view.scale + S.view.ty) * r.height / cv.height,
  };
}

// ------------------------------------------------------------------ editing
// Correction time: the clock starts when a field opens; every action (stroke start and end, fill,
// delete, undo, redo, loading a start mask, save) adds the gap since the previous action, at most
// 60 s, so an idle tab adds at most a minute. Edit operations: strokes, fills, deletions, undo,
// redo. Both are sent with the save and start again from zero after it.
const MAX_GAP_S = 60;
function resetTiming() { S.activeSeconds = 0; S.editOps = 0; S.lastAction = performance.now() / 1000; }
function touch() { // accumulate active editing time (gaps over 60 s count as 60 s)
  const now = performance.now() / 1000;
  if (S.lastAction) S.activeSeconds += Math.min(MAX_GAP_S, Math.max(0, now - S.lastAction));
  S.lastAction = now;
}
function pushUndo() {
  S.undo.push(new Uint8Array(S.edit)); if (S.undo.length > 60) S.undo.shift();
  S.redo = []; S.dirty = true; S.editOps += 1; touch();
}
function undo() { if (!S.undo.length) return; S.redo.push(S.edit); S.edit = S.undo.pop(); S.dirty = true; S.editOps += 1; touch(); renderOverlay(); status("undo (" + S.undo.length + " left)"); }
function redo() { if (!S.redo.length) return; S.undo.push(S.edit); S.edit = S.redo.pop(); S.dirty = true; S.editOps += 1; touch(); renderOverlay(); status("redo"); }

function stamp(cx, cy, value) {
  const r = S.size / 2, W = S.W, H = S.H, r2 = r * r, ri = Math.ceil(r);
  for (let dy = -ri; dy <= ri; dy++) {
    const y = cy + dy; if (y < 0 || y >= H) continue;
    for (let dx = -ri; dx <= ri; dx++) {
      const x = cx + dx; if (x < 0 || x >= W || dx * dx + dy * dy > r2) continue;
      S.edit[y * W + x] = value;
    }
  }
}
function strokeTo(p) { // paint discs along the segment last → p (pixel centres)
  const value = S.tool === "eraser" ? 0 : S.cls;
  const a = S.last || p, steps = Math.max(1, Math.ceil(Math.hypot(p.x - a.x, p.y - a.y) * 2));
  for (let i = 0; i <= steps; i++) {
    const t = i / steps;
    stamp(Math.floor(a.x + t * (p.x - a.x)), Math.floor(a.y + t * (p.y - a.y)), value);
  }
  S.last = p;
}

function flood(x0, y0, match, eight) { // indices of the connected region of pixels where match(v)
  const W = S.W, H = S.H, seen = new Uint8Array(W * H), out = [], stack = [y0 * W + x0];
  seen[y0 * W + x0] = 1;
  let border = false;
  while (stack.length) {
    const i = stack.pop(); out.push(i);
    const x = i % W, y = (i - x) / W;
    if (x === 0 || y === 0 || x === W - 1 || y === H - 1) border = true;
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
      if ((!dx && !dy) || (!eight && dx && dy)) continue;
      const nx = x + dx, ny = y + dy;
      if (nx < 0 || ny < 0 || nx >= W || ny >= H) continue;
      const j = ny * W + nx;
      if (!seen[j] && match(S.edit[j])) { seen[j] = 1; stack.push(j); }
    }
  }
  return { pixels: out, border };
}

function fillAt(x, y) {
  const v = S.edit[y * S.W + x];
  const region = flood(x, y, (u) => u === v, false);
  if (v === 0 && region.border) { status("fill: this background touches the field edge; draw a closed outline first", "err"); return; }
  if (v === S.cls) { status("fill: already this class"); return; }
  pushUndo();
  for (const i of region.pixels) S.edit[i] = S.cls;
  status("filled " + region.pixels.length + " px", "ok");
  renderOverlay();
}
function deleteAt(x, y) {
  const v = S.edit[y * S.W + x];
  if (!v) { status("delete: click on an object", "err"); return; }
  const region = flood(x, y, (u) => u === v, true);
  pushUndo();
  for (const i of region.pixels) S.edit[i] = 0;
  status("deleted an object of " + region.pixels.length + " px", "ok");
  renderOverlay();
}

function initCanvas() {
  const cv = $("view");
  cv.addEventListener("contextmenu", (e) => e.preventDefault());
  cv.addEventListener("mousedown", (ev) => {
    if (!S.edit) return;
    const p = clientToImage(ev.clientX, ev.clientY);
    if (ev.button !== 0 || S.space || S.tool === "pan") { S.panning = { x: ev.clientX, y: ev.clientY, tx: S.view.tx, ty: S.view.ty }; return; }
    const x = Math.floor(p.x), y = Math.floor(p.y);
    if (x < 0 || y < 0 || x >= S.W || y >= S.H) return;
    if (S.tool === "brush" || S.tool === "eraser") { pushUndo(); S.painting = true; S.last = null; strokeTo(p); renderOverlay(); }
    else if (S.tool === "fill") fillAt(x, y);
    else if (S.tool === "delete") deleteAt(x, y);
  });
  window.addEventListener("mousemove", (ev) => {
    if (S.panning) {
      const r = cv.getBoundingClientRect(), k = cv.width / r.width;
      S.view.tx = S.panning.tx + (ev.clientX - S.panning.x) * k; S.view.ty = S.panning.ty + (ev.clientY - S.panning.y) * k;
      render(); return;
    }
    if (!S.edit || $("view-field").hidden) return;
    const p = clientToImage(ev.clientX, ev.clientY);
    if (S.painting) { strokeTo(p); renderOverlay(); }
    const x = Math.floor(p.x), y = Math.floor(p.y);
    if (x >= 0 && y >= 0 && x < S.W && y < S.H) {
      const i = y * S.W + x, n = S.W * S.H;
      $("coords").textContent = `x ${x}  y ${y}  DsRed ${S.img[i]}  pHluorin ${S.img[n + i]}  label ${S.edit[i]}`;
    }
  });
  window.addEventListener("mouseup", () => {
    if (S.painting) { S.painting = false; S.last = null; touch(); status("painted", "ok"); }
    S.panning = null;
  });
  cv.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = cv.getBoundingClientRect(), k = cv.width / r.width;
    zoomAt((ev.clientX - r.left) * k, (ev.clientY - r.top) * k, ev.deltaY < 0 ? 1.25 : 0.8);
  }, { passive: false });
  window.addEventListener("resize", () => { if (!$("view-field").hidden && S.base) { resizeCanvas(); render(); } });
}

function zoomAt(cx, cy, f) {
  const v = S.view, pw = S.sideBySide ? $("view").width / 2 : $("view").width;
  if (cx >= pw) cx -= pw;
  const s = Math.max(0.1, Math.min(64, v.scale * f)), g = s / v.scale;
  v.tx = cx - (cx - v.tx) * g; v.ty = cy - (cy - v.ty) * g; v.scale = s;
  render();
}

function setTool(t) {
  S.tool = t;
  for (const b of $("tools").querySelectorAll("button")) b.classList.toggle("active", b.dataset.tool === t);
  $("view").style.cursor = t === "pan" ? "grab" : "crosshair";
}
function setClass(c) {
  S.cls = c;
  for (const b of $("classes").querySelectorAll("button")) b.classList.toggle("active", Number(b.dataset.class) === c);
}
function setSize(n) { S.size = Math.max(1, Math.min(40, n)); $("brush-size").value = S.size; $("brush-size-text").textContent = S.size; }

async function save() {
  if (!S.edit) return;
  if (!S.token) { status("saving needs the token: paste it in the header (printed by `phagoflow review`)", "err"); $("token").focus(); return; }
  touch();
  const q = new URLSearchParams({
    started_from: S.startFrom, seconds_editing: S.activeSeconds.toFixed(1), edit_operations: String(S.editOps),
  });
  if (S.user) q.set("user", S.user);
  status("saving …");
  try {
    const res = await api("/api/fields/" + encodeURIComponent(S.field) + "/curated?" + q, {
      method: "PUT", headers: { "Content-Type": "application/x-npy" }, body: npyBytes(S.edit, S.H, S.W),
    });
    const j = await res.json();
    S.dirty = false; S.activeSeconds = 0; S.editOps = 0; // the next save reports what follows
    S.refs.curated = new Uint8Array(S.edit);
    if (!S.info.masks.includes("curated")) S.info.masks.push("curated");
    S.info.provenance = j.provenance;
    showProgress(j.progress);
    S.plate = null; // counts of curated wells changed; reload the plate on the next route
    await loadPlate();
    showProvenance();
    status("saved curated mask of " + S.info.label + " (" + j.provenance.pixels_changed + " px changed)", "ok");
  } catch (e) {
    status("not saved: " + e.message, "err");
  }
}

function buildClassControls() {
  const order = [...OBJECTS, ...CLASSES.filter((c) => c.value === 0)]; // background last
  $("classes").innerHTML = order.map((c) =>
    `<button data-class="${c.value}" title="${c.name} (${c.value})"><i class="sw${c.value ? "" : " c0"}" style="background:rgb(${c.paint_rgb})"></i>${c.name}</button>`).join("");
  $("help-class-keys").textContent = order.map((c) => c.value).join(" / ");
  $("help-class-names").textContent = "class " + order.map((c) => c.name).join(" / ");
}

function initFieldControls() {
  buildClassControls();
  for (const b of $("tools").querySelectorAll("button")) b.addEventListener("click", () => setTool(b.dataset.tool));
  for (const b of $("classes").querySelectorAll("button")) b.addEventListener("click", () => setClass(Number(b.dataset.class)));
  $("brush-size").addEventListener("input", () => setSize(Number($("brush-size").value)));
  $("undo").addEventListener("click", undo); $("redo").addEventListener("click", redo); $("save").addEventListener("click", save);
  $("load-start").addEventListener("click", () => { if (!S.dirty || confirm("Discard edits?")) loadStart($("start-from").value); });
  for (let c = 0; c < 2; c++) {
    $("ch" + c).addEventListener("change", () => { S.channels[c] = $("ch" + c).checked; renderBase(); });
    $("lo" + c).addEventListener("input", () => { S.contrast[c].low = Number($("lo" + c).value); renderBase(); });
    $("hi" + c).addEventListener("input", () => { S.contrast[c].high = Number($("hi" + c).value); renderBase(); });
  }
  $("auto-contrast").addEventListener("click", () => { S.contrast = S.info.contrast.map((c) => ({ ...c })); buildFieldControls(); renderBase(); });
  $("show-edit").addEventListener("change", () => { S.showEdit = $("show-edit").checked; renderOverlay(); });
  $("opacity").addEventListener("input", () => { S.opacity = Number($("opacity").value) / 100; render(); });
  $("side-by-side").addEventListener("change", () => { S.sideBySide = $("side-by-side").checked; fitView(); renderOverlay(); });
  $("side-source").addEventListener("change", () => { S.sideSource = $("side-source").value; renderOverlay(); });
  $("prev-field").addEventListener("click", () => stepField(-1));
  $("next-field").addEventListener("click", () => stepField(1));
  setTool("brush"); setClass(1); setSize(5);
}
function stepField(d) {
  const wf = S.info.well_fields, i = wf.indexOf(S.field) + d;
  if (i >= 0 && i < wf.length) location.hash = "#/field/" + wf[i];
}

function initKeys() {
  window.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t instanceof HTMLSelectElement || (t instanceof HTMLInputElement && t.type !== "range" && t.type !== "checkbox")) return;
    if (ev.key === "?") { $("help").hidden = !$("help").hidden; return; }
    if ($("view-field").hidden) return;
    const k = ev.key.toLowerCase(), ctrl = ev.ctrlKey || ev.metaKey;
    if (ctrl && k === "z") { ev.preventDefault(); ev.shiftKey ? redo() : undo(); return; }
    if (ctrl && k === "y") { ev.preventDefault(); redo(); return; }
    if (ctrl && k === "s") { ev.preventDefault(); save(); return; }
    if (ctrl || ev.altKey) return;
    const tools = { b: "brush", e: "eraser", f: "fill", d: "delete", p: "pan" };
    if (tools[k]) setTool(tools[k]);
    else if (CLASSES.some((c) => String(c.value) === k)) setClass(Number(k));
    else if (k === "[") setSize(S.size - 1);
    else if (k === "]") setSize(S.size + 1);
    else if (k === "r" || k === "g") { const c = k === "r" ? 0 : 1; S.channels[c] = !S.channels[c]; $("ch" + c).checked = S.channels[c]; renderBase(); }
    else if (k === "o") { S.showEdit = !S.showEdit; $("show-edit").checked = S.showEdit; renderOverlay(); }
    else if (k === "+" || k === "=") zoomAt($("view").width / 2, $("view").height / 2, 1.25);
    else if (k === "-") zoomAt($("view").width / 2, $("view").height / 2, 0.8);
    else if (k === "h") fitView();
    else if (k === "n") stepField(ev.shiftKey ? -1 : 1);
    else if (k === " ") { S.space = true; ev.preventDefault(); }
  });
  window.addEventListener("keyup", (ev) => { if (ev.key === " ") S.space = false; });
  window.addEventListener("beforeunload", (ev) => { if (S.dirty) { ev.preventDefault(); ev.returnValue = ""; } });
}

// ------------------------------------------------------------------ blind rating
async function showRating(sid) {
  const srcs = S.plate.sources.map((s) => `<option value="${s}">${s}</option>`).join("");
  if (!$("rate-a").options.length) {
    $("rate-a").innerHTML = srcs; $("rate-b").innerHTML = srcs;
    $("rate-a").value = S.plate.sources[0]; $("rate-b").value = S.plate.sources[1] || S.plate.sources[0];
  }
  $("rater").value = $("rater").value || S.user;
  $("rate-start").hidden = !!sid; $("rate-item").hidden = true; $("rate-done").hidden = true;
  if (!sid) return;
  S.session = await getJSON("/api/rating/sessions/" + encodeURIComponent(sid));
  await nextRatingItem();
}

async function beginRating() {
  const rater = $("rater").value.trim();
  if (!S.token) { alert("Rating needs the token (header, top right)."); return; }
  const body = { rater, methods: [$("rate-a").value, $("rate-b").value] };
  const n = Number($("rate-n").value); if (n > 0) body.n_fields = n;
  try {
    const res = await api("/api/rating/sessions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const j = await res.json();
    location.hash = "#/rate/" + j.id;
  } catch (e) { alert(e.message); }
}

async function nextRatingItem() {
  const items = S.session.items, item = items.find((it) => !it.rated);
  const box = $("rate-item");
  box.dataset.ready = "0";
  $("rate-submit").disabled = true;
  for (const el of document.querySelectorAll(".scores")) el.innerHTML = "";
  if (!item) { box.hidden = true; $("rate-done").hidden = false; return; }
  S.item = item; S.scores = {};
  // load everything first, then draw: the buttons appear only when both masks are shown
  const info = await getJSON("/api/fields/" + encodeURIComponent(item.field));
  const img = (await getRaw("/api/fields/" + encodeURIComponent(item.field) + "/image")).data;
  const masks = {};
  for (const slot of S.session.slots) masks[slot] = (await getRaw("/api/rating/sessions/" + S.session.id + "/items/" + item.index + "/masks/" + slot)).data;
  box.hidden = false;
  $("rate-title").textContent = info.label;
  $("rate-count").textContent = "(" + (items.filter((it) => it.rated).length + 1) + " of " + items.length + ")";
  const H = info.size_yx[0], W = info.size_yx[1], n = W * H, c = info.contrast;
  const k0 = 255 / Math.max(1, c[0].high - c[0].low), k1 = 255 / Math.max(1, c[1].high - c[1].low);
  for (const slot of S.session.slots) {
    const mask = masks[slot], cv = $("rate-canvas-" + slot);
    cv.width = W; cv.height = H;
    const out = new ImageData(W, H), d = out.data;
    for (let i = 0; i < n; i++) {
      let r = Math.max(0, Math.min(255, (img[i] - c[0].low) * k0)), g = Math.max(0, Math.min(255, (img[n + i] - c[1].low) * k1)), b = r;
      const col = CLASS_RGB[mask[i]];
      if (col) { r = 0.45 * r + 0.55 * col[0]; g = 0.45 * g + 0.55 * col[1]; b = 0.45 * b + 0.55 * col[2]; }
      d[4 * i] = r; d[4 * i + 1] = g; d[4 * i + 2] = b; d[4 * i + 3] = 255;
    }
    cv.getContext("2d").putImageData(out, 0, 0);
    const scores = document.querySelector(`.scores[data-slot="${slot}"]`);
    scores.innerHTML = Array.from({ length: 10 }, (_, i) => `<button data-score="${i + 1}">${i + 1}</button>`).join("");
    for (const b of scores.querySelectorAll("button")) b.addEventListener("click", () => {
      S.scores[slot] = Number(b.dataset.score);
      for (const o of scores.querySelectorAll("button")) o.classList.toggle("active", o === b);
      $("rate-submit").disabled = Object.keys(S.scores).length !== S.session.slots.length;
    });
  }
  box.dataset.ready = "1";
}

async function submitScores() {
  $("rate-submit").disabled = true;
  try {
    await api("/api/rating/sessions/" + S.session.id + "/items/" + S.item.index, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ scores: S.scores }),
    });
    S.item.rated = true;
    await nextRatingItem();
  } catch (e) { alert("not recorded: " + e.message); }
}

// ------------------------------------------------------------------ start
function wellCenter(well) { // client coordinates of a well on the heat-map (tests, screenshots)
  const w = S.plate.wells.find((x) => x.well === well), { cv, cell, x0, y0 } = heatGeometry();
  const r = cv.getBoundingClientRect();
  return { x: r.left + (x0 + (w.col - 0.5) * cell) * r.width / cv.width, y: r.top + (y0 + (w.row - 0.5) * cell) * r.height / cv.height };
}

// A small hook for tests and the screenshot script; the app itself does not use it.
window.review = { state: S, imageToClient, clientToImage, wellCenter, fitView,
  setView(scale, tx, ty) { S.view = { scale, tx, ty }; render(); } };

window.addEventListener("DOMContentLoaded", () => {
  initHeader(); initHeatmap(); initCanvas(); initFieldControls(); initKeys();
  $("rate-begin").addEventListener("click", beginRating);
  $("rate-submit").addEventListener("click", submitScores);
  window.addEventListener("hashchange", route);
  route();
});
