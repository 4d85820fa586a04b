// The mfas liveness page: plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
let cameraTimer = null;
let stream = null;
let busy = false;

function headers() {
  const key = $("apikey").value;
  return key ? { "X-API-Key": key } : {};
}

async function describeModel() {
  try {
    const r = await fetch("/v1/model", { headers: headers() });
    const m = await r.json();
    if (!r.ok) throw new Error(m.error ? m.error.message : r.statusText);
    $("model").textContent = `${m.name} (${m.backend}), takes ${m.modalities.join(" + ")}, ` +
      `threshold ${m.threshold.toFixed(3)} (${m.policy})`;
  } catch (e) {
    $("model").textContent = "model description unavailable: " + e.message;
  }
}

function drawImage(source, width, height) {
  canvas.width = width;
  canvas.height = height;
  ctx.drawImage(source, 0, 0, width, height);
}

function show(result) {
  $("error").textContent = "";
  const d = $("decision");
  d.dataset.decision = result.decision;
  d.dataset.count = String(Number(d.dataset.count || 0) + 1);  // results shown so far
  d.textContent = { bonafide: "bona fide", attack: "attack", no_face: "no face found" }[result.decision] ||
    result.decision;
  $("score").textContent = result.score === null ? "–" : result.score.toFixed(4);
  $("threshold").textContent = `${result.threshold.toFixed(4)} (${result.policy})`;
  $("latency").textContent = `${result.latency_ms.toFixed(1)} ms in the service`;
  $("modalities").textContent = result.modalities.join(", ");
  $("bar-fill").style.width = `${100 * (result.score || 0)}%`;
  $("bar-threshold").style.left = `${100 * result.threshold}%`;
  if (result.face) {
    const [x, y, w, h] = result.face.box;
    ctx.lineWidth = Math.max(2, canvas.width / 200);
    ctx.strokeStyle = result.decision === "bonafide" ? "#17803d" : "#b3261e";
    ctx.strokeRect(x, y, w, h);
  }
}

function fail(message) {
  $("error").textContent = message;
}

async function send(form) {
  const t0 = performance.now();
  const r = await fetch("/v1/predict", { method: "POST", body: form, headers: headers() });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error ? `${r.status}: ${body.error.message}` : `${r.status} ${r.statusText}`);
  body.round_trip_ms = performance.now() - t0;
  return body;
}

$("upload").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("rgb").files[0];
  if (!file) return fail("choose an RGB image");
  const form = new FormData();
  for (const m of ["rgb", "depth", "ir"]) {
    if ($(m).files[0]) form.append(m, $(m).files[0]);
  }
  try {
    const bitmap = await createImageBitmap(file);
    drawImage(bitmap, bitmap.width, bitmap.height);
  } catch (e) {
    // the service says why it cannot read the file
  }
  try {
    show(await send(form));
  } catch (e) {
    fail(e.message);
  }
});

async function grab() {
  if (busy) return;  // one frame in flight at a time
  const video = $("video");
  if (!video.videoWidth) return;
  busy = true;
  try {
    drawImage(video, video.videoWidth, video.videoHeight);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
    const form = new FormData();
    form.append("rgb", blob, "frame.jpg");
    show(await send(form));
  } catch (e) {
    fail(e.message);
  } finally {
    busy = false;
  }
}

$("camera-start").addEventListener("click", async () => {
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (e) {
    return fail("camera unavailable: " + e.message);
  }
  const video = $("video");
  video.srcObject = stream;
  await video.play();
  const fps = Math.min(10, Math.max(0.5, Number($("fps").value) || 2));
  cameraTimer = setInterval(grab, 1000 / fps);
  $("camera-start").disabled = true;
  $("camera-stop").disabled = false;
});

$("camera-stop").addEventListener("click", () => {
  clearInterval(cameraTimer);
  cameraTimer = null;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  $("camera-start").disabled = false;
  $("camera-stop").disabled = true;
});

describeModel();
