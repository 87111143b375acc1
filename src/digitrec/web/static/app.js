// digitrec drawing page: pointer strokes on a canvas, live answers from /api/predict (one
// digit) or /api/read (a number, on a wide canvas, each digit boxed over the drawing).
"use strict";

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const overlay = document.getElementById("overlay");
const octx = overlay.getContext("2d");
const $ = (id) => document.getElementById(id);
const LIVE_MS = 150;         // at most one request per 150 ms while drawing

// What is on the pad, as data: strokes in units of the canvas's height (so a resize redraws
// them scaled, never cropped), or an uploaded picture. Every change is a new doc; undo and
// redo move docs between the two stacks. A stroke: { w: its pen (PENS), points: [[x, y]] }.
const EMPTY = { strokes: [], upload: null };
let doc = EMPTY;
const past = [], future = [];
let mode = "digit";          // "digit" or "number"
let tool = "normal";         // a pen (PENS) or "eraser"
let current = null;          // the stroke being drawn, or the doc an erasing started from
let inflight = false, queued = false, lastSent = 0;
let reading = null;          // the last number read, to box it again after a resize

const PENS = { thin: 0.5, normal: 1, thick: 1.7 };  // the screen's pen, times the normal one
const STEP = 0.01;           // the eraser cuts strokes at a point every 1% of the height
const ERASER = 0.06;         // the eraser's radius, in canvas heights

function setDoc(next) {
  past.push(doc);
  future.length = 0;
  doc = next;
  changed();
}

function undo() {
  if (!past.length) return;
  future.push(doc);
  doc = past.pop();
  changed();
}

function redo() {
  if (!future.length) return;
  past.push(doc);
  doc = future.pop();
  changed();
}

function clearAll() {
  if (doc.strokes.length || doc.upload) setDoc(EMPTY);
}

// The pad and the answer follow the doc: one state whatever led to it.
function changed() {
  $("undo").disabled = !past.length;
  $("redo").disabled = !future.length;
  $("clear").disabled = !doc.strokes.length && !doc.upload;
  showUpload();
  redraw();
  answer();
}

function answer() {
  if (doc.upload) sendUpload(doc.upload);
  else if (doc.strokes.length) predictCanvas();
  else showEmpty();
}

// ------------------------------------------------------------------ drawing

// The canvas keeps a drawing buffer scaled to the device's pixel ratio, so lines are
// sharp on HiDPI screens; coordinates are in CSS pixels.
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
  boxes(mode === "number" ? reading : null);
}

function side() {
  return canvas.getBoundingClientRect().height;
}

function brushWidth() {
  // MNIST-like pen for a digit as tall as the pad
  return side() / 14;
}

function colors() {
  const css = getComputedStyle(document.documentElement);
  return { paper: css.getPropertyValue("--paper").trim() || "#fff",
           pen: css.getPropertyValue("--pen").trim() || "#111" };
}

function redraw() {
  const normal = brushWidth();
  paint(ctx, (s) => normal * PENS[s.w], colors());
}

// The picture (in number mode) and the strokes, in CSS pixels, each stroke ``penOf`` wide.
function paint(c, penOf, { paper, pen }) {
  const { width, height } = canvas.getBoundingClientRect();
  c.fillStyle = paper;
  c.fillRect(0, 0, width, height);
  const photo = mode === "number" && doc.upload && doc.upload.img;
  if (photo) {
    const g = photoFit(photo);
    c.drawImage(photo, g.ox, g.oy, photo.width * g.k, photo.height * g.k);
  }
  c.strokeStyle = c.fillStyle = pen;
  c.lineCap = "round";
  c.lineJoin = "round";
  for (const s of doc.strokes) {
    c.lineWidth = penOf(s);
    drawStroke(c, s.points.map(([x, y]) => [x * height, y * height]));
  }
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
// number's height), never wider than the normal pen nor under 2 px, whichever pen drew it:
// a 60 px 3 drawn with the fat pen would reach the model as a blob of an 8. The desktop
// app's is the same (gui.POSTED_PEN).
const POSTED_PEN = 0.12;
function postedPen() {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of doc.strokes) {
    for (const [x, y] of s.points) {
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
  }
  const extent = (mode === "number" ? y1 - y0 : Math.max(x1 - x0, y1 - y0)) * side();
  return Math.min(brushWidth(), Math.max(2, POSTED_PEN * extent));
}

function point(e) {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) / r.height, (e.clientY - r.top) / r.height];
}

// A stroke's points with one every STEP between them, so the eraser can cut anywhere.
function dense(points) {
  const out = [points[0]];
  for (let i = 1; i < points.length; i++) {
    const [a, b] = [points[i - 1], points[i]];
    const n = Math.floor(Math.hypot(b[0] - a[0], b[1] - a[1]) / STEP);
    for (let j = 1; j <= n; j++) out.push([a[0] + (b[0] - a[0]) * j / (n + 1), a[1] + (b[1] - a[1]) * j / (n + 1)]);
    out.push(b);
  }
  return out;
}

function near(p, at) {
  return Math.hypot(p[0] - at[0], p[1] - at[1]) < ERASER;
}

// Every stroke the eraser reaches, with its points within reach taken out, split where they
// were; the others as they are (drawn as they were: their points are the pointer's).
function erase(strokes, at) {
  const out = [];
  for (const s of strokes) {
    const points = dense(s.points);
    if (!points.some((p) => near(p, at))) { out.push(s); continue; }
    let run = [];
    points.forEach((p, i) => {
      const gone = near(p, at);
      if (!gone) run.push(p);
      if ((gone || i === points.length - 1) && run.length) {
        if (run.length > 1) out.push({ w: s.w, points: run });
        run = [];
      }
    });
  }
  return out;
}

canvas.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  canvas.setPointerCapture(e.pointerId);
  if (tool === "eraser") {
    current = { from: doc, last: point(e) };
    rub(current.last, current.last);
  } else {
    current = { w: tool, points: [point(e)] };
    // a stroke over an uploaded picture starts a new drawing (undo brings the picture back)
    past.push(doc);
    future.length = 0;
    doc = { strokes: [...(doc.upload ? [] : doc.strokes), current], upload: null };
    showUpload();
  }
  redraw();
});
canvas.addEventListener("pointermove", (e) => {
  if (!current) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events) {
    const p = point(ev);
    if (current.from) rub(current.last, p); else current.points.push(p);
  }
  redraw();
  if (Date.now() - lastSent > LIVE_MS && doc.strokes.length) predictCanvas();
});

// Erasing from one pointer position to the next, at every half radius: a quick rub leaves
// no gaps.
function rub(from, to) {
  const n = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) / (ERASER / 2)));
  let strokes = doc.strokes;
  for (let i = 1; i <= n; i++) {
    strokes = erase(strokes, [from[0] + (to[0] - from[0]) * i / n, from[1] + (to[1] - from[1]) * i / n]);
  }
  doc = { strokes, upload: doc.upload };
  current.last = to;
}

function endStroke() {
  if (!current) return;
  const from = current.from;
  current = null;
  if (!from) { changed(); return; }
  const erased = doc;
  doc = from;
  const same = erased.strokes.length === from.strokes.length &&
    erased.strokes.every((s, i) => s === from.strokes[i]);
  if (same) redraw(); else setDoc(erased);
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

$("clear").addEventListener("click", clearAll);
$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);
document.addEventListener("keydown", (e) => {
  const key = e.key.toLowerCase(), cmd = e.ctrlKey || e.metaKey;
  if (e.key === "Escape") { e.preventDefault(); clearAll(); }
  else if (cmd && (key === "y" || (key === "z" && e.shiftKey))) { e.preventDefault(); redo(); }
  else if (cmd && key === "z") { e.preventDefault(); undo(); }
});
document.querySelectorAll("input[name=pen]").forEach((el) => el.addEventListener("change", () => {
  tool = el.value;
  canvas.classList.toggle("erasing", tool === "eraser");
}));

// ---------------------------------------------------------------- predictions

function predictCanvas() {
  if (!doc.strokes.length) return;
  if (inflight) { queued = true; return; }  // the newest drawing goes out when this one returns
  busy(true);
  lastSent = Date.now();
  sendable().toBlob(async (blob) => {
    if (doc.strokes.length) await send(blob, "image/png");  // else cleared meanwhile
    done();
  }, "image/png");
}

// An answer is in: the newest state goes out if it changed meanwhile.
function done() {
  inflight = false;
  if (queued) { queued = false; answer(); }
  if (!inflight) busy(false);
}

// What goes to the server: the strokes drawn again, dark on white, with the pen they are
// read with, at no more than the size the server works at, preprocess.WORK_SIDE for a digit
// and reading.READ_SIDE for a number. A HiDPI buffer (1080 px on a phone) is a PNG the
// server takes tens of milliseconds to decode, only to shrink it first.
const SEND_PX = { digit: 128, number: 1024 };
const sendCanvas = document.createElement("canvas");
function sendable() {
  const { width, height } = canvas.getBoundingClientRect();
  const k = Math.min(window.devicePixelRatio || 1, SEND_PX[mode] / Math.max(width, height));
  sendCanvas.width = Math.round(width * k);
  sendCanvas.height = Math.round(height * k);
  const c = sendCanvas.getContext("2d");
  c.setTransform(k, 0, 0, k, 0, 0);
  const pen = postedPen();
  paint(c, () => pen, { paper: "#fff", pen: "#111" });
  return sendCanvas;
}

// aria-busy on the result tells screen readers (and tests) that an answer is coming.
function busy(on) {
  inflight = on;
  $("result").setAttribute("aria-busy", on || queued ? "true" : "false");
}

async function send(body, type) {
  const asked = doc;
  try {
    const headers = type ? { "Content-Type": type } : {};  // FormData sets its own boundary
    const askedMode = mode;
    const url = askedMode === "number" ? "/api/read" : "/api/predict";
    const res = await fetch(url, { method: "POST", headers, body });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.detail || `the server answered ${res.status}`);
    if (askedMode !== mode) return;  // the mode changed meanwhile: this answer is for neither
    if (askedMode === "number") showReading(data); else show(data, { body, type });
    if (askedMode === "digit") await severalDigits(data, body, type, asked);
  } catch (err) {
    if (asked !== doc && !doc.strokes.length && !doc.upload) return;  // cleared meanwhile
    showError(err.message === "Failed to fetch" ? "The server cannot be reached." : err.message);
  }
}

function show(r, input) {
  $("error").hidden = true;
  $("several").hidden = true;
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

// One digit is read at a time: an answer that is not a sure digit is asked of the number
// reader too, and when that finds several digits the page says so and offers to read them.
async function severalDigits(r, body, type, asked) {
  // not while a stroke is on its way: a half-drawn digit is often unsure
  if (current || queued || r.blank || (!r.not_a_digit && !r.uncertain)) return;
  const headers = type ? { "Content-Type": type } : {};
  const res = await fetch("/api/read", { method: "POST", headers, body }).catch(() => null);
  const read = res && res.ok ? await res.json() : null;
  const digits = read && !read.blank && !read.uncertain ? read.digits.filter((c) => c.probabilities) : [];
  if (digits.length < 2 || asked !== doc || mode !== "digit") return;
  $("severalsaid").textContent =
    `This looks like ${digits.length} digits (${read.text.trim()}); one digit is read at a time here.`;
  $("several").hidden = false;
}
$("asnumber").addEventListener("click", () => switchMode("number"));

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
    const pct = `${(p * 100).toFixed(1)}%`;
    if (d === top && p > 0) li.className = "top";
    li.setAttribute("aria-label", `${d}: ${(p * 100).toFixed(1)} percent`);
    li.innerHTML = `<span>${d}</span><span class="track"><span class="fill" style="width:${pct};--p:${pct}"></span></span><span class="pct">${pct}</span>`;
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

// Where an uploaded picture sits on the canvas: scaled to fit, centred.
function photoFit(photo) {
  const { width, height } = canvas.getBoundingClientRect();
  const k = Math.min(width / photo.width, height / photo.height);
  return { k, ox: (width - photo.width * k) / 2, oy: (height - photo.height * k) / 2 };
}

function showReading(r) {
  $("error").hidden = true;
  reading = r;
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

// Each character's box over the drawing or the picture, from the source's pixels.
function boxes(r) {
  const { width, height } = canvas.getBoundingClientRect();
  octx.clearRect(0, 0, width, height);
  if (!r || r.blank) return;
  const photo = doc.upload && doc.upload.img;
  const g = photo ? photoFit(photo) : { k: width / r.source_size[0], ox: 0, oy: 0 };
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

// A new mode keeps what is on the pad: the picture, or the strokes centred on the new
// canvas (shrunk to fit when a number goes to the square one). Undo starts afresh.
function switchMode(next) {
  mode = next;
  document.querySelector(`input[name=mode][value=${next}]`).checked = true;
  document.body.classList.toggle("number-mode", mode === "number");
  $("numberanswer").hidden = mode !== "number";
  canvas.setAttribute("aria-label", mode === "number"
    ? "Drawing canvas: write a number with the mouse, a pen or a finger"
    : "Drawing canvas: draw one digit with the mouse, a pen or a finger");
  reading = null;
  fitCanvas();
  const { width, height } = canvas.getBoundingClientRect();
  doc = { strokes: recentred(doc.strokes, width / height), upload: doc.upload };
  past.length = future.length = 0;
  changed();
}
document.querySelectorAll("input[name=mode]").forEach((el) =>
  el.addEventListener("change", () => switchMode(el.value)));

function recentred(strokes, toAspect) {
  if (!strokes.length) return strokes;
  const xs = strokes.flatMap((s) => s.points.map((p) => p[0]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const k = Math.min(1, (0.9 * toAspect) / Math.max(x1 - x0, 1e-6));
  const dx = toAspect / 2 - ((x0 + x1) / 2) * k, dy = 0.5 - 0.5 * k;
  return strokes.map((s) => ({ w: s.w, points: s.points.map(([x, y]) => [x * k + dx, y * k + dy]) }));
}

function showEmpty() {
  reading = null;
  boxes(null);
  offerCorrection(null);
  $("several").hidden = true;
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
  $("thumbfig").hidden = true;  // a picture that could not be read cannot be shown either
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
}

// ------------------------------------------------------------------- uploads

let accepted = null;  // from /api/limits: "PNG, JPEG, ... and TIFF"

// The uploaded picture: as a thumbnail beside the answer for one digit, on the canvas
// (boxed) for a number.
function showUpload() {
  const up = doc.upload;
  $("thumbfig").hidden = !up || mode === "number";
  if (!up) return;
  $("thumb").src = up.url;
  $("thumbcap").textContent = up.name;
  $("thumbcap").title = up.name;  // the whole name on hover; the caption ellipsizes it
}

function openFile(file) {
  if (!file) return;
  const name = file.name || "pasted picture";
  if (file.type && !file.type.startsWith("image/")) {  // the server's words, with the name
    showError(`${name} is not a readable image` + (accepted ? ` (${accepted} are read)` : ""));
    return;
  }
  const up = { file, name, url: URL.createObjectURL(file), img: null };
  const img = new Image();
  img.onload = () => { up.img = img; if (doc.upload === up) { redraw(); boxes(reading); } };
  img.src = up.url;
  setDoc({ strokes: [], upload: up });
}

function sendUpload(up) {
  const form = new FormData();
  form.append("file", up.file, up.name);
  if (inflight) { queued = true; return; }
  busy(true);
  send(form).finally(done);
}

$("file").addEventListener("change", (e) => { openFile(e.target.files[0]); e.target.value = ""; });
$("camera").addEventListener("change", (e) => { openFile(e.target.files[0]); e.target.value = ""; });
// A picture dropped anywhere on the page is read, never opened by the browser in its place.
let dragDepth = 0;
document.addEventListener("dragenter", (e) => {
  e.preventDefault();
  dragDepth++;
  document.body.classList.add("dragover");
});
document.addEventListener("dragleave", () => {
  if (--dragDepth <= 0) { dragDepth = 0; document.body.classList.remove("dragover"); }
});
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  document.body.classList.remove("dragover");
  openFile(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
  if (item) openFile(item.getAsFile());
});

// Examples to click: what the page does, before drawing anything.
async function showExamples() {
  const list = await fetch("/static/examples/examples.json").then((r) => r.json()).catch(() => []);
  const box = $("examplelist");
  for (const ex of list) {
    const b = document.createElement("button");
    b.type = "button";
    b.title = ex.title;
    b.innerHTML = `<img src="/static/examples/${ex.file}" alt="${ex.title}">`;
    b.addEventListener("click", async () => {
      const blob = await fetch(`/static/examples/${ex.file}`).then((r) => r.blob());
      if (mode !== ex.mode) switchMode(ex.mode);
      openFile(new File([blob], ex.file, { type: blob.type }));
    });
    box.appendChild(b);
  }
  $("examples").hidden = !list.length;
}

// ---------------------------------------------------------------------- start

// Touch screens get touch hints and a camera button; mice and keyboards get shortcuts.
const touch = matchMedia("(pointer: coarse)").matches;
document.body.classList.toggle("touch", touch);
fetch("/api/model").then((r) => r.json()).then((m) => {
  const acc = m.test_accuracy ? `, test accuracy ${(m.test_accuracy * 100).toFixed(2)}%` : "";
  const runtime = m.backend.startsWith("onnx") ? `, ONNX Runtime${m.backend.slice(4)}` : ", PyTorch";
  $("model").textContent = `model ${m.name} (${m.source})${acc}${runtime}`;
}).catch(() => { $("model").textContent = "model unavailable"; });
fetch("/api/limits").then((r) => r.json()).then((l) => {
  accepted = l.format_names;
  $("accepts").textContent = `Pictures: ${l.accepted}.`;
}).catch(() => {});
let resizing = 0;
window.addEventListener("resize", () => {
  fitCanvas();
  clearTimeout(resizing);  // the answer again once the size settles: it is of what is shown
  resizing = setTimeout(() => { if (doc.strokes.length) answer(); }, 200);
});
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redraw);
fitCanvas();
showEmpty();
showExamples();
