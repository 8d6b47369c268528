// streamvlm web page: a webcam or a video file -> JPEG frames over the /v1/stream WebSocket,
// commentary back as captions and a transcript, with latency and cache stats. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const video = $("video"), canvas = $("canvas"), ctx = canvas.getContext("2d");
const MAX_SIDE = 640;  // frames are scaled down to this before JPEG encoding
const MAX_BUFFERED = 4 * 1024 * 1024;  // skip frames while the socket is this far behind

let ws = null, fps = 2, timer = null, nextSample = 0, clock = null, camera = null;
let captionTimer = null, mediaTimeNow = 0;

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

const HEALTH_EVERY_MS = 5000;  // the header's session count follows the server
let reachable = null;

async function health() {
  try {
    const info = await (await fetch("/health")).json();
    $("model").textContent = `model: ${info.model} · ${info.sessions}/${info.max_sessions} sessions`;
    if (reachable === null) {  // first answer: the token field, then ready
      $("token-field").hidden = !info.token_required;
      const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
      if (fromHash) $("token").value = fromHash;
    }
    if (reachable !== true && !ws) setStatus("ready");
    reachable = true;
  } catch (err) {
    reachable = false;
    setStatus(`server unreachable: ${err}`, true);
  }
}

function connect() {
  return new Promise((resolve, reject) => {
    const url = new URL("/v1/stream", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if ($("token").value) url.searchParams.set("token", $("token").value);
    ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (msg) => {
      const event = JSON.parse(msg.data);
      if (event.type === "ready") {
        fps = event.defaults.fps;
        const query = $("query").value.trim();
        ws.send(JSON.stringify({ type: "start", options: query ? { query } : {} }));
      } else if (event.type === "started") {
        fps = event.config.fps;
        setStatus(`streaming at ${fps} fps`);
        resolve();
      } else {
        handle(event);
      }
    };
    ws.onclose = (e) => {
      if (e.code !== 1000) setStatus(`closed: ${e.code} ${e.reason}`, e.code !== 1001);
      stopCapture();
      if (!$("transcript").children.length) showPlaceholder(e.code === 1008
        ? "Unauthorized: enter the server's token and pick the source again."
        : `The session closed before any commentary (${e.code} ${e.reason}).`);
      reject(new Error(`closed: ${e.code} ${e.reason}`));
    };
    ws.onerror = () => setStatus("WebSocket error", true);
  });
}

function handle(event) {
  if (event.type === "commentary") {
    addLine(event);
  } else if (event.type === "stats") {
    showStats(event);
  } else if (event.type === "dropped") {
    setStatus(`model behind: dropped ${event.start.toFixed(0)} s`, true);
  } else if (event.type === "error") {
    setStatus(`error: ${event.message}`, true);
  } else if (event.type === "closed") {
    setStatus(`finished (${event.reason}), ${event.seconds} s`);
  }
}

function clockText(seconds) {
  const s = Math.floor(seconds), m = Math.floor(s / 60);
  return `${String(m).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

function addLine({ start, text }) {
  const li = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = clockText(start);
  li.append(time, text || "…");
  li.className = text ? "said" : "silence";
  const list = $("transcript");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(li);
  while (list.children.length > 500) list.firstChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
  if (text) {
    const span = document.createElement("span");
    span.textContent = text;
    $("caption").replaceChildren(span);
    clearTimeout(captionTimer);
    captionTimer = setTimeout(() => $("caption").replaceChildren(), 4000);
  }
  $("s-behind").textContent = `${Math.max(0, mediaTimeNow - (start + 1)).toFixed(1)} s`;
}

function showStats(s) {
  const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;
  $("s-latency").textContent = `${s.latency_ms.toFixed(0)} ms`;
  $("s-step").textContent = `${s.step_ms.toFixed(0)} ms (prefill ${s.prefill_ms.toFixed(0)}, decode ${s.decode_ms.toFixed(0)})`;
  $("s-cache").textContent = `${s.cache_tokens} tokens`;
  $("s-position").textContent = `${s.max_position}`;
  $("s-kv").textContent = mib(s.kv_bytes);
  $("s-rss").textContent = `${s.rss_mb.toFixed(0)} MiB`;
  $("s-seconds").textContent = `${$("transcript").children.length}`;
  $("s-queue").textContent = `${s.queued} / ${s.dropped}`;
  $("s-sessions").textContent = `${s.sessions}`;
}

// -- capture -------------------------------------------------------------------------------
function sendFrame(t) {
  const w = video.videoWidth, h = video.videoHeight;
  if (!w || !h || !ws || ws.readyState !== WebSocket.OPEN || ws.bufferedAmount > MAX_BUFFERED) return;
  const scale = Math.min(1, MAX_SIDE / Math.max(w, h));
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
  canvas.toBlob(async (blob) => {
    if (!blob || !ws || ws.readyState !== WebSocket.OPEN) return;
    const header = new DataView(new ArrayBuffer(8));
    header.setFloat64(0, t, true);  // stream time, little-endian float64
    ws.send(new Blob([header.buffer, blob]));
  }, "image/jpeg", 0.85);
}

function tick() {
  if (video.paused || video.readyState < 2) return;
  const t = clock();
  mediaTimeNow = t;
  if (t + 1e-3 >= nextSample) {
    sendFrame(t);
    nextSample = (Math.floor(t * fps + 1e-3) + 1) / fps;
  }
}

function startCapture(timeSource) {
  clock = timeSource;
  nextSample = 0;
  timer = setInterval(tick, 20);
  $("stop").disabled = false;
  $("placeholder").hidden = true;
}

function showPlaceholder(text) {
  video.pause();
  video.removeAttribute("src");
  video.srcObject = null;
  video.load();  // drop the picture, so the message is not drawn over a frame
  $("placeholder").textContent = text;
  $("placeholder").hidden = false;
}

function stopCapture() {
  clearInterval(timer);
  timer = null;
  $("stop").disabled = true;
  if (camera) camera.getTracks().forEach((track) => track.stop());
  camera = null;
}

function stop() {
  stopCapture();
  video.pause();
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "stop" }));
}

function reset() {
  stop();
  if (ws) ws.onclose = null;
  $("transcript").replaceChildren();
  $("caption").replaceChildren();
}

async function playFile(file) {
  reset();
  video.srcObject = null;
  video.src = URL.createObjectURL(file);
  video.muted = true;
  video.onended = stop;
  try {
    await connect();
    await video.play();
    startCapture(() => video.currentTime);
  } catch (err) {
    setStatus(`${err.message || err}`, true);
  }
}

async function useCamera() {
  reset();
  try {
    camera = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    video.removeAttribute("src");
    video.srcObject = camera;
    video.onended = null;
    await connect();
    await video.play();
    const t0 = performance.now();
    startCapture(() => (performance.now() - t0) / 1000);
  } catch (err) {
    setStatus(`webcam: ${err.message || err}`, true);
  }
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) playFile(e.target.files[0]); });
$("camera").addEventListener("click", useCamera);
$("stop").addEventListener("click", stop);
health();
setInterval(health, HEALTH_EVERY_MS);
