// The page: wires the file picker, the viewer, the object list, the history and the exports
// to the HTTP API. No framework: a small render() redraws the side panel from the state.

import * as api from "./api.js";
import { decodeRle } from "./rle.js";
import { Annotation, frameKey } from "./state.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const view = {
  image: null,  // ImageInfo from the server
  axis: 0,
  frame: 0,
  opacity: 0.45,
  showMasks: true,
  playing: null,  // interval id
  pending: 0,
};
const annotation = new Annotation(render);
const viewer = new Viewer({
  stage: $("stage"), box: $("canvas-box"), img: $("frame-img"), overlay: $("overlay"), ui: $("ui"),
  onPoint: addPoint, onBox: setBox,
});

// ------------------------------------------------------------------------------ messages
let toastTimer = null;
function toast(message, kind = "error") {
  const t = $("toast");
  t.textContent = message;
  t.className = `toast ${kind === "info" ? "info" : ""}`;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, kind === "info" ? 2500 : 6000);
}

function setPending(delta) {
  view.pending += delta;
  document.body.dataset.pending = String(view.pending);
  $("busy").hidden = view.pending === 0;
}

// -------------------------------------------------------------------------------- images
async function openFile(file) {
  if (!file) return;
  stopPlay();
  $("file-name").textContent = `uploading ${file.name}…`;
  try {
    setPending(1);
    const info = await api.upload(file);
    if (view.image) api.remove(view.image.image_id).catch(() => {});
    view.image = info;
    view.axis = 0;
    annotation.reset();
    annotation.newObject();
    annotation.undoStack = [];  // the first object is not an undoable step
    $("file-name").textContent = info.name;
    $("file-name").title = `${info.format}, ${info.width} x ${info.height}` + (info.frames > 1 ? `, ${info.frames} ${info.kind === "volume" ? "slices" : "frames"}` : "");
    showCalibration(info);
    for (const w of info.warnings) toast(w, "info");
    $("dropzone").hidden = true;
    setupFrameBar(info);
    await goToFrame(info.default_frame);
  } catch (e) {
    $("file-name").textContent = view.image ? view.image.name : "no image";
    toast(`Could not open ${file.name}: ${e.message}`);
  } finally {
    setPending(-1);
  }
}

function showCalibration(info) {
  const el = $("calibration");
  if (info.calibration === "calibrated") {
    const [dy, dx] = info.spacing_mm;
    el.textContent = `calibrated ${dx.toPrecision(3)} × ${dy.toPrecision(3)} mm/px`;
    el.className = "badge ok";
    el.title = "Areas in mm², diameters in mm (pixel width × height)";
  } else if (info.calibration === "regions") {
    el.textContent = "calibrated per region";
    el.className = "badge ok";
    el.title = "DICOM ultrasound regions: a mask is measured in mm only inside one region";
  } else {
    el.textContent = "not calibrated: px";
    el.className = "badge warn";
    el.title = "The file carries no physical calibration: areas and diameters are in pixels";
  }
}

function axisInfo() { return view.image.axes[view.axis]; }

function setupFrameBar(info) {
  const many = info.axes.some((a) => a.frames > 1);
  $("frame-bar").hidden = !many;
  $("axis").hidden = info.kind !== "volume";
  $("axis").value = "0";
  const slider = $("frame-slider");
  slider.max = String(info.axes[0].frames - 1);
}

async function goToFrame(index) {
  if (!view.image) return;
  const a = axisInfo();
  view.frame = Math.min(Math.max(0, index), a.frames - 1);
  $("frame-slider").value = String(view.frame);
  $("frame-label").textContent = `${view.frame + 1} / ${a.frames}`;
  const url = api.frameUrl(view.image.image_id, view.frame, view.axis);
  const shown = view.frame;
  try {
    await viewer.show(url, a.width, a.height);
  } catch (e) {
    toast(e.message);
    return;
  }
  if (shown === view.frame) {
    $("stage").dataset.frame = String(view.frame);
    drawFrame();
    drawCurve();
    renderMeasures();
  }
}

// ------------------------------------------------------------------------------- prompts
function currentEntry(obj) { return obj ? obj.frames.get(frameKey(view.axis, view.frame)) || null : null; }

function ensureObject() { return annotation.active || annotation.newObject(); }

function addPoint(x, y, label) {
  if (!view.image) return;
  const obj = ensureObject();
  const before = currentEntry(obj);
  const points = [...(before ? before.points : []), [x, y, label]];
  change(obj, { points, box: before ? before.box : null });
}

function setBox(box) {
  if (!view.image) return;
  const obj = ensureObject();
  const before = currentEntry(obj);
  change(obj, { points: before ? before.points : [], box });
}

function change(obj, prompts) {
  const key = frameKey(view.axis, view.frame);
  const entry = { ...prompts, axis: view.axis, frame: view.frame, result: null, mask: null, error: null };
  annotation.setEntry(obj, key, entry);
  request(entry);
}

async function request(entry) {
  setPending(1);
  const started = performance.now();
  try {
    const res = await api.segment(view.image.image_id, {
      frame: entry.frame, axis: entry.axis, points: entry.points, box: entry.box,
      refine: $("refine").checked,
    });
    entry.result = res;
    entry.mask = decodeRle(res.rle).mask;
    const total = performance.now() - started;
    $("latency").textContent = `last answer ${total.toFixed(0)} ms (model ${res.model_ms.toFixed(0)} ms${res.embedded ? ", frame embedded" : ""})`;
  } catch (e) {
    entry.error = e.message;
    toast(e.message);
  } finally {
    setPending(-1);
    render();
  }
}

// Track the active object through the frames of the current axis from its prompted frames.
async function propagateActive() {
  const obj = annotation.active;
  if (!view.image || !obj || axisInfo().frames < 2) return;
  const prompts = [];
  for (const e of obj.frames.values()) {
    if (e.axis === view.axis && (e.points.length || e.box)) {
      prompts.push({ frame: e.frame, points: e.points, box: e.box });
    }
  }
  if (!prompts.length) { toast("Prompt the object on at least one frame first", "info"); return; }
  stopPlay();
  setPending(1);
  try {
    const res = await api.propagate(view.image.image_id, { axis: view.axis, prompts });
    const entries = new Map();
    for (const f of res.frames) {
      const key = frameKey(view.axis, f.frame);
      const own = obj.frames.get(key);
      if (own && (own.points.length || own.box)) continue;  // the user's own prompt stays
      entries.set(key, { points: [], box: null, axis: view.axis, frame: f.frame, result: f,
                         mask: decodeRle(f.rle).mask, error: null, propagated: true });
    }
    annotation.setEntries(obj, entries);
    const flagged = res.frames.filter((f) => f.flags.length).length;
    toast(`Tracked ${res.frames.length} frames in ${res.seconds.toFixed(1)} s` + (flagged ? `; ${flagged} flagged (low score or area jump)` : ""), "info");
  } catch (e) {
    toast(`Propagation failed: ${e.message}`);
  } finally {
    setPending(-1);
    render();
  }
}

// Area of the active object on every frame of the current axis (mm² when calibrated).
function drawCurve() {
  const panel = $("curve-panel");
  const obj = annotation.active;
  const n = view.image ? axisInfo().frames : 0;
  panel.hidden = n < 2;
  if (panel.hidden) return;
  const canvas = $("curve");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 272, h = canvas.clientHeight || 110;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, w, h);
  const points = [];
  let mm = true;
  if (obj) {
    for (const e of obj.frames.values()) {
      if (e.axis !== view.axis || !e.result) continue;
      const r = e.result;
      mm = mm && r.area_mm2 !== null;
      points.push({ frame: e.frame, r, own: !e.propagated });
    }
  }
  points.sort((a, b) => a.frame - b.frame);
  const value = (r) => (mm ? r.area_mm2 : r.area_px);
  $("curve-unit").textContent = points.length ? (mm ? "mm²" : "px") : "";
  const pad = 6, x = (f) => pad + (f / Math.max(1, n - 1)) * (w - 2 * pad);
  const top = Math.max(1, ...points.map((p) => value(p.r) || 0));
  const y = (v) => h - pad - (v / top) * (h - 2 * pad);
  ctx.strokeStyle = "#2a3340"; ctx.beginPath(); ctx.moveTo(pad, h - pad); ctx.lineTo(w - pad, h - pad); ctx.stroke();
  ctx.strokeStyle = obj ? obj.color : "#3fb7a6"; ctx.lineWidth = 1.5; ctx.beginPath();
  points.forEach((p, i) => { const px = x(p.frame), py = y(value(p.r) || 0); if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py); });
  ctx.stroke();
  for (const p of points) {
    if (!p.own && !(p.r.flags && p.r.flags.length)) continue;
    ctx.fillStyle = p.own ? "#ffffff" : "#e5534b";
    ctx.beginPath(); ctx.arc(x(p.frame), y(value(p.r) || 0), 3, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.strokeStyle = "#d8dee6"; ctx.setLineDash([3, 3]); ctx.beginPath();
  ctx.moveTo(x(view.frame), 2); ctx.lineTo(x(view.frame), h - 2); ctx.stroke(); ctx.setLineDash([]);
}

function clearActive() {
  const obj = annotation.active;
  if (obj && currentEntry(obj)) annotation.setEntry(obj, frameKey(view.axis, view.frame), null);
}

// ------------------------------------------------------------------------------ render
function formatMeasure(r) {
  if (!r) return "no mask on this frame";
  if (r.area_px === 0) return "empty mask";
  if (r.calibrated && r.area_mm2 !== null) {
    return `area <b>${r.area_mm2.toFixed(1)} mm²</b> · Ø <b>${r.diameter_mm.toFixed(1)} mm</b>`;
  }
  return `area <b>${r.area_px} px</b> · Ø <b>${r.diameter_px.toFixed(1)} px</b> <span title="${r.note || "not calibrated"}">(px: not calibrated)</span>`;
}

function render() {
  const list = $("objects");
  list.replaceChildren();
  annotation.objects.forEach((obj, i) => {
    const li = document.createElement("li");
    li.className = obj.id === annotation.activeId ? "active" : "";
    li.dataset.objectId = String(obj.id);
    const color = document.createElement("input");
    color.type = "color"; color.value = obj.color; color.title = "Colour";
    color.addEventListener("input", () => { obj.color = color.value; drawFrame(); });
    const name = document.createElement("input");
    name.className = "name"; name.value = obj.name; name.maxLength = 64;
    name.title = `Object ${i + 1} (press ${i + 1} to select)`;
    name.addEventListener("change", () => { obj.name = name.value.trim() || obj.name; });
    const del = document.createElement("button");
    del.className = "del"; del.textContent = "✕"; del.title = "Delete object (Del)";
    del.addEventListener("click", (e) => { e.stopPropagation(); annotation.deleteObject(obj); });
    const meas = document.createElement("div");
    meas.className = "meas";
    const entry = currentEntry(obj);
    meas.innerHTML = entry && entry.error ? `<span class="err">${escapeHtml(entry.error)}</span>`
      : entry && !entry.result ? "segmenting…" : formatMeasure(entry && entry.result);
    li.append(color, name, del, meas);
    li.addEventListener("click", () => { annotation.activeId = obj.id; render(); });
    list.append(li);
  });
  $("undo").disabled = !annotation.undoStack.length;
  $("redo").disabled = !annotation.redoStack.length;
  const hasImage = !!view.image;
  for (const id of ["export-masks", "export-coco", "export-csv", "close-image", "clear"]) $(id).disabled = !hasImage;
  $("propagate").hidden = !hasImage || axisInfo().frames < 2;
  drawFrame();
  drawCurve();
}

function renderMeasures() {
  for (const li of $("objects").children) {
    const obj = annotation.objects.find((o) => String(o.id) === li.dataset.objectId);
    const entry = currentEntry(obj);
    const meas = li.querySelector(".meas");
    if (meas) meas.innerHTML = entry && entry.error ? `<span class="err">${escapeHtml(entry.error)}</span>`
      : entry && !entry.result ? "segmenting…" : formatMeasure(entry && entry.result);
  }
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function drawFrame() {
  if (!view.image) return;
  const layers = [];
  for (const obj of annotation.objects) {
    const e = currentEntry(obj);
    if (obj.visible && e && e.mask) layers.push({ mask: e.mask, color: obj.color });
  }
  viewer.drawMasks(layers, view.opacity, view.showMasks);
  const active = annotation.active;
  const e = currentEntry(active);
  viewer.setPrompts(e ? e.points : [], e ? e.box : null, active ? active.color : "#3fb7a6");
}

// ------------------------------------------------------------------------------ playback
function togglePlay() {
  if (!view.image || axisInfo().frames < 2) return;
  if (view.playing) { stopPlay(); return; }
  $("play").textContent = "❚❚";
  let loading = false;
  view.playing = setInterval(async () => {
    if (loading) return;  // never queue frames faster than they load
    loading = true;
    await goToFrame((view.frame + 1) % axisInfo().frames);
    loading = false;
  }, 1000 / Number($("fps").value));
}

function stopPlay() {
  if (view.playing) clearInterval(view.playing);
  view.playing = null;
  $("play").textContent = "▶";
}

// ------------------------------------------------------------------------------- exports
async function exportKind(kind) {
  if (!view.image) return;
  const objects = annotation.exportObjects();
  if (!objects.length) { toast("Nothing to export yet: segment an object first", "info"); return; }
  try {
    const { blob, filename } = await api.exportFile(view.image.image_id, kind, objects);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = filename;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) {
    toast(`Export failed: ${e.message}`);
  }
}

async function closeImage() {
  if (!view.image) return;
  stopPlay();
  const id = view.image.image_id;
  view.image = null;
  annotation.reset();
  $("canvas-box").hidden = true;
  $("dropzone").hidden = false;
  $("frame-bar").hidden = true;
  $("file-name").textContent = "no image";
  $("calibration").textContent = "—";
  $("calibration").className = "badge muted";
  render();
  try { await api.remove(id); } catch (e) { toast(e.message); }
}

// ------------------------------------------------------------------------------- wiring
function bind() {
  $("file-input").addEventListener("change", (e) => { openFile(e.target.files[0]); e.target.value = ""; });
  const stage = $("stage");
  stage.addEventListener("dragover", (e) => { e.preventDefault(); $("dropzone").classList.add("hover"); });
  stage.addEventListener("dragleave", () => $("dropzone").classList.remove("hover"));
  stage.addEventListener("drop", (e) => {
    e.preventDefault();
    $("dropzone").classList.remove("hover");
    if (e.dataTransfer.files.length) openFile(e.dataTransfer.files[0]);
  });
  $("add-object").addEventListener("click", () => annotation.newObject());
  $("undo").addEventListener("click", () => annotation.undo());
  $("redo").addEventListener("click", () => annotation.redo());
  $("clear").addEventListener("click", clearActive);
  $("opacity").addEventListener("input", (e) => setOpacity(Number(e.target.value) / 100));
  $("show-masks").addEventListener("change", (e) => { view.showMasks = e.target.checked; drawFrame(); });
  $("frame-slider").addEventListener("input", (e) => goToFrame(Number(e.target.value)));
  $("play").addEventListener("click", togglePlay);
  $("fps").addEventListener("change", () => { if (view.playing) { stopPlay(); togglePlay(); } });
  $("axis").addEventListener("change", (e) => {
    stopPlay();
    view.axis = Number(e.target.value);
    $("frame-slider").max = String(axisInfo().frames - 1);
    goToFrame(Math.floor(axisInfo().frames / 2));
  });
  $("propagate").addEventListener("click", propagateActive);
  $("curve").addEventListener("click", (e) => {
    if (!view.image) return;
    const r = e.target.getBoundingClientRect();
    const f = Math.round(((e.clientX - r.left - 6) / (r.width - 12)) * (axisInfo().frames - 1));
    goToFrame(f);
  });
  $("export-masks").addEventListener("click", () => exportKind("masks"));
  $("export-coco").addEventListener("click", () => exportKind("coco"));
  $("export-csv").addEventListener("click", () => exportKind("csv"));
  $("close-image").addEventListener("click", closeImage);
  window.addEventListener("keydown", onKey);
}

function setOpacity(value) {
  view.opacity = Math.min(1, Math.max(0, value));
  $("opacity").value = String(Math.round(view.opacity * 100));
  $("opacity-label").textContent = `${Math.round(view.opacity * 100)}%`;
  drawFrame();
}

function onKey(e) {
  const tag = (e.target.tagName || "").toLowerCase();
  if (tag === "input" && e.target.type !== "range" && e.target.type !== "checkbox") return;
  if (tag === "select" || tag === "textarea") return;
  const k = e.key;
  const ctrl = e.ctrlKey || e.metaKey;
  let handled = true;
  if ((k === "z" || k === "Z") && ctrl && e.shiftKey) annotation.redo();
  else if ((k === "z" || k === "Z")) annotation.undo();
  else if (k === "y" || k === "Y") annotation.redo();
  else if (k === "c" && !ctrl) clearActive();
  else if (k === "n" && !ctrl) annotation.newObject();
  else if (/^[1-9]$/.test(k) && annotation.objects[Number(k) - 1]) { annotation.activeId = annotation.objects[Number(k) - 1].id; render(); }
  else if (k === "Delete") { if (annotation.active) annotation.deleteObject(annotation.active); }
  else if (k === "r" && !ctrl) { $("refine").checked = !$("refine").checked; toast(`Refinement ${$("refine").checked ? "on" : "off"}`, "info"); }
  else if (k === "h" && !ctrl) { view.showMasks = !view.showMasks; $("show-masks").checked = view.showMasks; drawFrame(); }
  else if (k === "[") setOpacity(view.opacity - 0.1);
  else if (k === "]") setOpacity(view.opacity + 0.1);
  else if (k === "ArrowLeft" && view.image) goToFrame(view.frame - 1);
  else if (k === "ArrowRight" && view.image) goToFrame(view.frame + 1);
  else if (k === " ") togglePlay();
  else if (k === "p" && !ctrl) propagateActive();
  else if (k === "Escape") viewer.cancelDrag();
  else handled = false;
  if (handled) e.preventDefault();
}

async function start() {
  bind();
  render();
  try {
    const h = await api.health();
    const m = h.model;
    $("model").textContent = `${m.name} · ${m.variant}`;
    $("model").title = `${m.parameters.toLocaleString()} parameters, ${m.img_size} px input` + (m.format ? `, ${m.format} format` : "");
    document.body.dataset.ready = "1";
  } catch (e) {
    $("model").textContent = "server unreachable";
    toast(e.message);
  }
}

start();
