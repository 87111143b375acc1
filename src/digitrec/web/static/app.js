// digitrec drawing page: pointer strokes on a canvas, live predictions from /api/predict.
"use strict";

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const $ = (id) => document.getElementById(id);
const strokes = [];          // each stroke: array of [x, y] in canvas pixels
let current = null;          // the stroke being drawn
let inflight = false, queued = false, lastSent = 0;
const LIVE_MS = 150;         // at most one request per 150 ms while drawing

// The canvas keeps a 280x280 drawing buffer scaled to the device's pixel ratio,
// so lines are sharp on HiDPI screens; coordinates are stored in CSS pixels.
function fitCanvas() {
  const ratio = window.devicePixelRatio || 1;
  const size = canvas.getBoundingClientRect().width;
  canvas.width = Math.round(size * ratio);
  canvas.height = Math.round(size * ratio);
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  redraw();
}

function brushWidth() {
  return canvas.getBoundingClientRect().width / 14;  // MNIST-like pen for a digit filling the pad
}

function redraw() {
  const size = canvas.getBoundingClientRect().width;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, size, size);
  ctx.strokeStyle = "#111";
  ctx.fillStyle = "#111";
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.lineWidth = brushWidth();
  for (const s of strokes) drawStroke(s);
}

function drawStroke(points) {
  if (points.length === 1) {  // a tap is a dot
    ctx.beginPath();
    ctx.arc(points[0][0], points[0][1], ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  // Quadratic curves through the midpoints: smooth strokes from sparse pointer events.
  ctx.beginPath();
  ctx.moveTo(points[0][0], points[0][1]);
  for (let i = 1; i < points.length - 1; i++) {
    const mx = (points[i][0] + points[i + 1][0]) / 2, my = (points[i][1] + points[i + 1][1]) / 2;
    ctx.quadraticCurveTo(points[i][0], points[i][1], mx, my);
  }
  const last = points[points.length - 1];
  ctx.lineTo(last[0], last[1]);
  ctx.stroke();
}

function point(e) {
  const r = canvas.getBoundingClientRect();
  return [e.clientX - r.left, e.clientY - r.top];
}

canvas.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  canvas.setPointerCapture(e.pointerId);
  current = [point(e)];
  strokes.push(current);
  hideThumb();
  redraw();
});
canvas.addEventListener("pointermove", (e) => {
  if (!current) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events) current.push(point(ev));
  redraw();
  if (Date.now() - lastSent > LIVE_MS) predictCanvas();
});
function endStroke() {
  if (!current) return;
  current = null;
  predictCanvas();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

function clearAll() {
  strokes.length = 0;
  redraw();
  hideThumb();
  showEmpty();
}
function undo() {
  strokes.pop();
  redraw();
  if (strokes.length) predictCanvas(); else showEmpty();
}
$("clear").addEventListener("click", clearAll);
$("undo").addEventListener("click", undo);
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") { e.preventDefault(); clearAll(); }
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); }
});

// ---------------------------------------------------------------- predictions

function predictCanvas() {
  if (!strokes.length) return;
  if (inflight) { queued = true; return; }  // the newest drawing goes out when this one returns
  busy(true);
  lastSent = Date.now();
  sendable().toBlob(async (blob) => {
    await send(blob, "image/png");
    busy(false);
    if (queued) { queued = false; predictCanvas(); }
  }, "image/png");
}

// What goes to the server: the drawing at no more than SEND_PX pixels a side, the size
// the server's pipeline works at (preprocess.WORK_SIDE). A HiDPI buffer (1080 px on a
// phone) is a PNG the server takes tens of milliseconds to decode, only to shrink it to
// 128 px before anything else; at 128 it decodes a third fewer pixels than at 160 and
// shrinks nothing (0.99 against 1.12 ms a drawing, the same accuracy on validation digits).
const SEND_PX = 128;
const sendCanvas = document.createElement("canvas");
function sendable() {
  if (canvas.width <= SEND_PX) return canvas;
  sendCanvas.width = sendCanvas.height = SEND_PX;
  const c = sendCanvas.getContext("2d");
  c.imageSmoothingEnabled = true;
  c.imageSmoothingQuality = "high";
  c.drawImage(canvas, 0, 0, SEND_PX, SEND_PX);
  return sendCanvas;
}

// aria-busy on the result tells screen readers (and tests) that an answer is coming.
function busy(on) {
  inflight = on;
  $("result").setAttribute("aria-busy", on || queued ? "true" : "false");
}

async function send(body, type) {
  try {
    const headers = type ? { "Content-Type": type } : {};  // FormData sets its own boundary
    const res = await fetch("/api/predict", { method: "POST", headers, body });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.detail || `the server answered ${res.status}`);
    show(data);
  } catch (err) {
    showError(err.message === "Failed to fetch" ? "The server cannot be reached." : err.message);
  }
}

function show(r) {
  $("error").hidden = true;
  $("seen").src = "data:image/png;base64," + r.image;
  const digit = $("digit");
  if (r.blank) {
    digit.textContent = "?";
    digit.classList.add("unsure");
    $("confidence").textContent = "No digit found";
    $("status").textContent = "The image looks blank.";
  } else {
    digit.textContent = r.label;
    digit.classList.toggle("unsure", r.uncertain);
    $("confidence").textContent = `${(r.confidence * 100).toFixed(1)}% sure`;
    $("status").textContent = r.uncertain ? "Not sure: try drawing it bigger or clearer." : "";
  }
  bars(r.probabilities);
}

function bars(probs) {
  const list = $("bars");
  const top = probs.indexOf(Math.max(...probs));
  list.innerHTML = "";
  probs.forEach((p, d) => {
    const li = document.createElement("li");
    if (d === top && p > 0) li.className = "top";
    li.setAttribute("aria-label", `${d}: ${(p * 100).toFixed(1)} percent`);
    li.innerHTML = `<span>${d}</span><span class="track"><span class="fill" style="width:${(p * 100).toFixed(1)}%"></span></span><span class="pct">${(p * 100).toFixed(1)}%</span>`;
    list.appendChild(li);
  });
}

function showEmpty() {
  $("digit").textContent = "?";
  $("digit").classList.add("unsure");
  $("confidence").textContent = "Draw a digit to start";
  $("status").textContent = "";
  $("error").hidden = true;
  bars(new Array(10).fill(0));
  $("seen").removeAttribute("src");
}

function showError(message) {
  showEmpty();  // an old answer beside a new error would be misleading
  $("confidence").textContent = "No answer";
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
}

// ------------------------------------------------------------------- uploads

function hideThumb() { $("thumbfig").hidden = true; }

function predictFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name} is not a readable image (PNG, JPEG, BMP, GIF, WebP and TIFF are read).`);
    return;
  }
  strokes.length = 0;
  redraw();
  $("thumb").src = URL.createObjectURL(file);
  $("thumbcap").textContent = file.name || "pasted image";
  $("thumbfig").hidden = false;
  const form = new FormData();
  form.append("file", file, file.name || "pasted.png");
  busy(true);
  send(form).finally(() => {
    busy(false);
    if (!$("error").hidden) hideThumb();  // the file could not be shown either
  });
}

$("file").addEventListener("change", (e) => { predictFile(e.target.files[0]); e.target.value = ""; });
canvas.addEventListener("dragover", (e) => { e.preventDefault(); canvas.classList.add("dragover"); });
canvas.addEventListener("dragleave", () => canvas.classList.remove("dragover"));
canvas.addEventListener("drop", (e) => {
  e.preventDefault();
  canvas.classList.remove("dragover");
  predictFile(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
  if (item) predictFile(item.getAsFile());
});

// ---------------------------------------------------------------------- start

fetch("/api/model").then((r) => r.json()).then((m) => {
  const acc = m.test_accuracy ? `, test accuracy ${(m.test_accuracy * 100).toFixed(2)}%` : "";
  const runtime = m.backend.startsWith("onnx") ? `, ONNX Runtime${m.backend.slice(4)}` : ", PyTorch";
  $("model").textContent = `model ${m.name} (${m.source})${acc}${runtime}`;
}).catch(() => { $("model").textContent = "model unavailable"; });
window.addEventListener("resize", fitCanvas);
fitCanvas();
showEmpty();
