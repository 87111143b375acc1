// digitrec drawing page: pointer strokes on a canvas, live answers from /api/predict (one
// digit) or /api/read (a number, on a wide canvas, each digit boxed over the drawing).
"use strict";

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const $ = (id) => document.getElementById(id);
const strokes = [];          // each stroke: array of [x, y] in canvas pixels
let current = null;          // the stroke being drawn
let inflight = false, queued = false, lastSent = 0;
let mode = "digit";          // "digit" or "number"
let photo = null;            // an uploaded image shown on the canvas in number mode
const overlay = document.getElementById("overlay");
const octx = overlay.getContext("2d");
const LIVE_MS = 150;         // at most one request per 150 ms while drawing

// The canvas keeps a drawing buffer scaled to the device's pixel ratio, so lines are
// sharp on HiDPI screens; coordinates are stored in CSS pixels.
function fitCanvas() {
  const ratio = window.devicePixelRatio || 1;
  const { width, height } = canvas.getBoundingClientRect();
  for (const c of [canvas, overlay]) {
    c.width = Math.round(width * ratio);
    c.height = Math.round(height * ratio);
  }
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  octx.setTransform(ratio, 0, 0, ratio, 0, 0);
  redraw();
}

function brushWidth() {
  // MNIST-like pen for a digit as tall as the pad
  return canvas.getBoundingClientRect().height / 14;
}

function redraw() {
  paint(ctx, brushWidth());
}

// The photo (if any) and the strokes on white, in CSS pixels, with a pen ``pen`` wide.
function paint(c, pen) {
  const { width, height } = canvas.getBoundingClientRect();
  c.fillStyle = "#fff";
  c.fillRect(0, 0, width, height);
  if (photo) {
    const g = photoFit();
    c.drawImage(photo, g.ox, g.oy, photo.width * g.k, photo.height * g.k);
  }
  c.strokeStyle = "#111";
  c.fillStyle = "#111";
  c.lineCap = "round";
  c.lineJoin = "round";
  c.lineWidth = pen;
  for (const s of strokes) drawStroke(c, s);
}

function drawStroke(c, points) {
  if (points.length === 1) {  // a tap is a dot
    c.beginPath();
    c.arc(points[0][0], points[0][1], c.lineWidth / 2, 0, 2 * Math.PI);
    c.fill();
    return;
  }
  // Quadratic curves through the midpoints: smooth strokes from sparse pointer events.
  c.beginPath();
  c.moveTo(points[0][0], points[0][1]);
  for (let i = 1; i < points.length - 1; i++) {
    const mx = (points[i][0] + points[i + 1][0]) / 2, my = (points[i][1] + points[i + 1][1]) / 2;
    c.quadraticCurveTo(points[i][0], points[i][1], mx, my);
  }
  const last = points[points.length - 1];
  c.lineTo(last[0], last[1]);
  c.stroke();
}

// The pen a drawing is read with: a share of its strokes' extent (a digit's longer side, a
// number's height), never wider than the screen's pen nor under 2 px: a 60 px 3 drawn with
// the fat pen would reach the model as a blob of an 8. The desktop app's is the same
// (gui.POSTED_PEN).
const POSTED_PEN = 0.12;
function postedPen() {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of strokes) {
    for (const [x, y] of s) {
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
  }
  const extent = mode === "number" ? y1 - y0 : Math.max(x1 - x0, y1 - y0);
  return Math.min(brushWidth(), Math.max(2, POSTED_PEN * extent));
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
  photo = null;  // drawing starts afresh over an uploaded photo
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
  photo = null;
  redraw();
  hideThumb();
  showEmpty();
}
function undo() {
  strokes.pop();
  photo = null;
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

// What goes to the server: the strokes drawn again with the pen they are read with, at no
// more than the size the server works at, preprocess.WORK_SIDE for a digit and
// reading.READ_SIDE for a number. A HiDPI buffer (1080 px on a phone) is a PNG the server
// takes tens of milliseconds to decode, only to shrink it first (docs/results.md#measured).
const SEND_PX = { digit: 128, number: 1024 };
const sendCanvas = document.createElement("canvas");
function sendable() {
  const { width, height } = canvas.getBoundingClientRect();
  const k = Math.min(window.devicePixelRatio || 1, SEND_PX[mode] / Math.max(width, height));
  sendCanvas.width = Math.round(width * k);
  sendCanvas.height = Math.round(height * k);
  const c = sendCanvas.getContext("2d");
  c.setTransform(k, 0, 0, k, 0, 0);
  paint(c, postedPen());
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
    const asked = mode;
    const url = asked === "number" ? "/api/read" : "/api/predict";
    const res = await fetch(url, { method: "POST", headers, body });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.detail || `the server answered ${res.status}`);
    if (asked !== mode) return;  // the mode changed meanwhile: this answer is for neither
    if (asked === "number") showReading(data); else show(data, { body, type });
  } catch (err) {
    showError(err.message === "Failed to fetch" ? "The server cannot be reached." : err.message);
  }
}

function show(r, input) {
  $("error").hidden = true;
  offerCorrection(r, input);
  $("seen").src = "data:image/png;base64," + r.image;
  const digit = $("digit");
  if (r.blank) {
    digit.textContent = "?";
    digit.classList.add("unsure");
    $("confidence").textContent = "No digit found";
    $("status").textContent = "The image looks blank.";
  } else if (r.not_a_digit) {
    digit.textContent = "×";
    digit.classList.add("unsure");
    $("confidence").textContent = "Not a digit";
    $("status").textContent = "This looks like none of 0-9. Draw one digit.";
  } else {
    digit.textContent = r.label;
    digit.classList.toggle("unsure", r.uncertain);
    $("confidence").textContent = `${(r.confidence * 100).toFixed(1)}% sure`;
    $("status").textContent = r.uncertain
      ? `Not sure: ${candidates(r.probabilities)}. Try drawing it bigger or clearer.`
      : "";
  }
  bars(r.probabilities);
}

// The two likeliest digits, as the CLI and the window say them: "4 (55%) or 9 (40%)".
function candidates(probs) {
  const [a, b] = probs.map((p, d) => [p, d]).sort((x, y) => y[0] - x[0]);
  const pct = (p) => `${Math.round(p * 100)}%`;
  return `${a[1]} (${pct(a[0])}) or ${b[1]} (${pct(b[0])})`;
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

// --------------------------------------------------------------- corrections

// After an answer: "Wrong? It is a 0 1 ... 9" and "Right". The server remembers the image
// by the answer's prediction_id; a server that has forgotten it (restarted, another
// worker) gets the image again.
let answered = null;  // { id, digit, input: { body, type } } of the answer shown
["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"].forEach((d) => {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = d;
  b.title = `It is a ${d}`;
  b.addEventListener("click", () => correct(Number(d)));
  $("fbdigits").appendChild(b);
});
$("fbright").addEventListener("click", () => correct(answered.digit));

function offerCorrection(r, input) {
  answered = r && !r.blank && r.prediction_id ? { id: r.prediction_id, digit: r.digit, input } : null;
  $("feedback").hidden = !answered;
  $("fbright").hidden = !answered || answered.digit === null;
  $("fbsaid").textContent = "";
  for (const b of $("fbdigits").children) b.classList.remove("chosen");
}

async function correct(label) {
  const asked = answered;
  let res = await post("/api/feedback", { headers: { "Content-Type": "application/json" },
                                          body: JSON.stringify({ prediction_id: asked.id, label }) });
  if (res.status === 404 && asked.input) {  // forgotten: send the image itself
    const { body } = asked.input;  // an upload's form, or the drawing's PNG
    const form = body instanceof FormData ? body : new FormData();
    if (form !== body) form.append("file", body, "drawing.png");
    form.set("label", String(label));
    res = await post("/api/feedback", { body: form });
  }
  const data = await res.json().catch(() => ({}));
  if (asked !== answered) return;  // another answer is shown now
  if (!res.ok) {
    $("fbsaid").textContent = `Not kept: ${data.detail || `the server answered ${res.status}`}`;
    return;
  }
  for (const b of $("fbdigits").children) b.classList.toggle("chosen", b.textContent === String(label));
  $("fbsaid").textContent = label === asked.digit
    ? `Thanks: kept as a right answer (#${data.id}).`
    : `Thanks: kept as a ${label} (#${data.id}). digitrec learns from corrections.`;
}

function post(url, init) {
  return fetch(url, { method: "POST", ...init }).catch(() =>
    new Response(JSON.stringify({ detail: "the server cannot be reached" }), { status: 503 }));
}

// ------------------------------------------------------------------ numbers

// Where an uploaded photo sits on the canvas: scaled to fit, centred.
function photoFit() {
  const { width, height } = canvas.getBoundingClientRect();
  const k = Math.min(width / photo.width, height / photo.height);
  return { k, ox: (width - photo.width * k) / 2, oy: (height - photo.height * k) / 2 };
}

function showReading(r) {
  $("error").hidden = true;
  const number = $("number");
  number.textContent = r.blank ? "?" : r.text;
  number.classList.toggle("unsure", r.uncertain);
  $("confidence").textContent = r.blank
    ? "No digits found"
    : `${(r.confidence * 100).toFixed(1)}% sure of every digit`;
  $("status").textContent = r.blank ? "The image looks blank."
    : r.uncertain ? "Not sure of some digit (in grey): try writing it clearer." : "";
  const list = $("chars");
  list.innerHTML = "";
  for (const c of r.digits) {
    const li = document.createElement("li");
    const sure = c.probabilities ? `${(c.confidence * 100).toFixed(0)}%` : "mark";
    li.innerHTML = `<b>${c.char}</b><span>${sure}</span>`;
    if (c.probabilities && c.confidence < 0.6) li.className = "unsure";
    list.appendChild(li);
  }
  boxes(r);
}

// Each character's box over the drawing or the photo, from the source's pixels.
function boxes(r) {
  const { width, height } = canvas.getBoundingClientRect();
  octx.clearRect(0, 0, width, height);
  if (!r || r.blank) return;
  const g = photo ? photoFit() : { k: width / r.source_size[0], ox: 0, oy: 0 };
  octx.lineWidth = 2;
  octx.font = "600 13px system-ui, sans-serif";
  for (const c of r.digits) {
    const [x0, y0, x1, y1] = c.box.map((v, i) => (i % 2 ? g.oy : g.ox) + v * g.k);
    const color = c.probabilities && c.confidence < 0.6 ? "#b45309" : "#2563eb";
    octx.strokeStyle = octx.fillStyle = color;
    octx.strokeRect(x0 - 2, y0 - 2, x1 - x0 + 4, y1 - y0 + 4);
    const label = y0 > 18 ? y0 - 6 : y1 + 16;  // above the box, or below it at the top edge
    if (c.probabilities) octx.fillText(`${c.char} ${(c.confidence * 100).toFixed(0)}%`, x0, label);
  }
}

function setMode(next) {
  mode = next;
  document.body.classList.toggle("number-mode", mode === "number");
  $("numberanswer").hidden = mode !== "number";
  canvas.setAttribute("aria-label", mode === "number"
    ? "Drawing canvas: write a number with the mouse, a pen or a finger"
    : "Drawing canvas: draw one digit with the mouse, a pen or a finger");
  strokes.length = 0;
  photo = null;
  hideThumb();
  fitCanvas();
  showEmpty();
}
document.querySelectorAll("input[name=mode]").forEach((el) =>
  el.addEventListener("change", () => setMode(el.value)));

function showEmpty() {
  boxes(null);
  offerCorrection(null);
  $("number").textContent = "?";
  $("chars").innerHTML = "";
  $("digit").textContent = "?";
  $("digit").classList.add("unsure");
  $("confidence").textContent = mode === "number" ? "Write a number to start" : "Draw a digit to start";
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
  photo = null;
  redraw();
  boxes(null);
  const url = URL.createObjectURL(file);
  if (mode === "number") {  // the photo on the canvas, the boxes over it
    const img = new Image();
    img.onload = () => { photo = img; redraw(); };
    img.src = url;
  } else {
    $("thumb").src = url;
    $("thumbcap").textContent = file.name || "pasted image";
    $("thumbfig").hidden = false;
  }
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
