// The cue paradigm page (docs/protocol.md, "Paradigm"). The service plans each trial on the
// EEG stream's clock and announces it (`cue`) before its fixation starts; this page
//  1. maps performance.now() onto the stream clock: `clock_sync` exchanges, keeping the
//     offset of the one with the lowest round trip among the recent ones;
//  2. draws fixation, arrow, imagery and break in the requestAnimationFrame callback whose
//     frame time is nearest each planned time, and reports the frame time of the cue's first
//     frame, mapped to stream time (`cue_painted`). That is when the browser drew the cue,
//     not when light left the screen: compositor and display add one to three frames, which
//     a page cannot see;
//  3. during online trials shows the class probabilities (topic `features`) as bars.
// No framework and no build step: the binary embeds this file.
"use strict";

// Clock sync: quickly at first (a good offset before the first cue), then to follow drift.
const SYNC_FAST_MS = 200;
const SYNC_FAST_COUNT = 25;
const SYNC_SLOW_MS = 2000;
// The offset comes from the lowest-RTT exchange among this many recent ones.
const SYNC_WINDOW = 30;
const RECONNECT_MS = 2000;
const ARROWS = { left: "\u2190", right: "\u2192", feet: "\u2193", tongue: "\u2191", rest: "\u25cb" };

const params = new URLSearchParams(location.search);
const token = params.get("token");
// Recalibration changes the model, so it needs the feedback right (docs/security.md).
const feedbackToken = params.get("feedback_token");

// Everything the page knows; `window.paradigm` exposes it to the console and the browser test.
const state = {
  connection: "connecting",
  authError: null,
  hello: null,
  classes: [],
  // Stream time = performance.now() / 1000 + offset.
  offset: null,
  bestRtt: null,
  syncs: [],
  syncCount: 0,
  stage: null,
  loop: null,
  trials: [],
  current: null,
  shown: "none",
  painted: [],
  timing: null,
  probabilities: null,
  feedbackFrames: 0,
  frameMs: 1000 / 60,
  lastFrame: null,
  errors: [],
  // Calibration blocks the service confirmed after a Recalibrate click.
  recalibrations: [],
  // Whether this page can show cues (visible, big enough), and what it last told the service.
  ready: false,
  readySent: null,
};
window.paradigm = state;

const $ = (id) => document.getElementById(id);
let socket = null;

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams();
  if (token) query.set("token", token);
  if (feedbackToken) query.set("feedback_token", feedbackToken);
  const text = query.toString();
  return `${scheme}//${location.host}/ws${text ? "?" + text : ""}`;
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function connect() {
  state.connection = "connecting";
  let greeted = false;
  const ws = new WebSocket(socketUrl());
  socket = ws;
  ws.onopen = () => {
    state.connection = "open";
    state.readySent = null;
    send({ type: "subscribe", topics: ["features"] });
    reportReadiness();
    syncLoop();
    renderStatus();
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "hello") greeted = true;
    handle(message);
  };
  ws.onclose = async (event) => {
    state.connection = `closed (${event.code})`;
    if (!greeted) {
      const refusal = await diagnose();
      if (refusal) {
        state.authError = refusal;
        showBanner(refusal);
        renderStatus();
        return;
      }
    }
    renderStatus();
    setTimeout(connect, RECONNECT_MS);
  };
}

async function diagnose() {
  try {
    const response = await fetch(socketUrl().replace(/^ws/, "http"), { cache: "no-store" });
    if (response.status === 401) {
      return token
        ? "Not authorized: the token in this page's address is wrong."
        : "Not authorized: this service needs a token; open the page as /paradigm?token=YOUR_TOKEN.";
    }
    if (response.status === 403) {
      return "Origin not allowed: start the service with --allow-origin " + location.origin + ".";
    }
  } catch (_) {
    // The service is gone; keep retrying.
  }
  return null;
}

// The service starts cues only while a paradigm page says it can show them: visible and
// big enough to be the subject's screen. A trial during which no page could is left out.
const MIN_SCREEN_SHARE = 0.8;

function pageCanShowCues() {
  if (document.visibilityState !== "visible") return false;
  const fullWidth = window.screen && window.screen.availWidth ? window.screen.availWidth : window.innerWidth;
  const fullHeight = window.screen && window.screen.availHeight ? window.screen.availHeight : window.innerHeight;
  return window.innerWidth >= MIN_SCREEN_SHARE * fullWidth && window.innerHeight >= MIN_SCREEN_SHARE * fullHeight;
}

function reportReadiness() {
  const ready = pageCanShowCues();
  state.ready = ready;
  if (state.readySent === ready) return;
  if (socket && socket.readyState === WebSocket.OPEN) {
    send({ type: "page_ready", ready });
    state.readySent = ready;
  }
  renderStatus();
}

document.addEventListener("visibilitychange", reportReadiness);
window.addEventListener("resize", reportReadiness);

function showNotice(text) {
  const notice = $("notice");
  notice.textContent = text;
  notice.hidden = false;
}

function requestRecalibration() {
  send({ type: "recalibrate" });
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = false;
}

// ---------------------------------------------------------------- clock

function syncLoop() {
  if (state.connection !== "open") return;
  send({ type: "clock_sync", id: ++state.syncCount, client_time: performance.now() });
  setTimeout(syncLoop, state.syncCount < SYNC_FAST_COUNT ? SYNC_FAST_MS : SYNC_SLOW_MS);
}

function onClockSync(reply) {
  const received = performance.now();
  const rtt = received - reply.client_time;
  if (!(rtt >= 0)) return;
  // The service read its clock somewhere in the round trip: the middle is the best guess,
  // wrong by at most half the round trip, so the shortest round trip wins.
  const offset = reply.stream_time - (reply.client_time + received) / 2000;
  state.syncs.push({ rtt, offset });
  if (state.syncs.length > SYNC_WINDOW) state.syncs.shift();
  const best = state.syncs.reduce((a, b) => (b.rtt < a.rtt ? b : a));
  state.offset = best.offset;
  state.bestRtt = best.rtt;
}

// ---------------------------------------------------------------- messages

function handle(message) {
  switch (message.type) {
    case "hello":
      state.hello = message;
      if (message.classes.length) state.classes = message.classes.slice();
      return;
    case "clock_sync": return onClockSync(message);
    case "cue":
      // A page that connected before the model was loaded got a `hello` without classes.
      if (state.classes[message.class_index] === undefined) {
        state.classes[message.class_index] = message.class;
      }
      state.trials.push({ ...message, paintReported: false });
      if (state.trials.length > 50) state.trials.shift();
      return;
    case "paradigm": state.stage = message.stage; renderStatus(); return;
    case "session": state.loop = message; renderStatus(); return;
    case "cue_timing": state.timing = message; renderStatus(); return;
    case "features":
      if (message.probabilities) state.probabilities = message.probabilities;
      return;
    case "recalibrating":
      state.recalibrations.push(message.calibration);
      showNotice(`Recalibration: calibration block ${message.calibration} starts with the next trial; the current model keeps running until the new one is loaded.`);
      return;
    case "error":
      state.errors.push(message);
      if (message.code === "forbidden" || message.code === "rate_limited" || message.code === "bad_request") {
        showNotice(message.message);
      }
      return;
    case "status":
      if (message.event === "stream_ended") state.stage = "ended";
      renderStatus();
      return;
    default: return; // The protocol asks clients to ignore types they do not know.
  }
}

// ---------------------------------------------------------------- drawing

// What trial `t` shows at stream time `now`.
function phaseOf(t, now) {
  const cueEnd = t.cue_onset + t.cue_seconds;
  const imageryEnd = cueEnd + t.imagery_seconds;
  if (now < t.fixation_onset) return "before";
  if (now < t.cue_onset) return "fixation";
  if (now < cueEnd) return "cue";
  if (now < imageryEnd) return "imagery";
  if (now < imageryEnd + t.break_seconds) return "break";
  return "after";
}

function frame(timestamp) {
  if (state.lastFrame !== null) {
    const dt = timestamp - state.lastFrame;
    if (dt > 0 && dt < 100) state.frameMs += 0.05 * (dt - state.frameMs);
  }
  state.lastFrame = timestamp;
  if (state.offset !== null) {
    const frameTime = timestamp / 1000 + state.offset;
    // Half a frame ahead: the frame whose time is nearest a planned change draws it.
    const now = frameTime + state.frameMs / 2000;
    draw(now, frameTime);
  }
  requestAnimationFrame(frame);
}

function draw(now, frameTime) {
  while (state.trials.length && phaseOf(state.trials[0], now) === "after") state.trials.shift();
  const trial = state.trials.find((t) => phaseOf(t, now) !== "before") || null;
  const phase = trial ? phaseOf(trial, now) : "none";
  state.current = trial;
  const key = trial ? `${trial.trial}:${phase}` : "none";
  if (key !== state.shown) {
    state.shown = key;
    $("fixation").hidden = !(phase === "fixation" || phase === "cue" || phase === "imagery");
    const arrow = $("arrow");
    arrow.hidden = phase !== "cue";
    if (trial) arrow.textContent = ARROWS[trial.class] || trial.class;
    $("caption").textContent = {
      fixation: "get ready", cue: "", imagery: trial ? `imagine: ${trial.class}` : "",
      break: "relax", none: state.stage === "free" ? "free mode: no cues" : "",
    }[phase] || "";
    $("trial").textContent = trial
      ? `${trial.block} trial ${trial.trial_in_block} of ${trial.block_trials} (session trial ${trial.trial}): ${phase}`
      : (state.stage || "waiting for the first trial");
    if (phase === "cue" && trial && !trial.paintReported) {
      trial.paintReported = true;
      state.painted.push({ trial: trial.trial, paint_time: frameTime, planned: trial.cue_onset });
      send({ type: "cue_painted", trial: trial.trial, paint_time: frameTime });
    }
  }
  const feedback = $("feedback");
  const showFeedback = trial && trial.block === "online" && (phase === "cue" || phase === "imagery")
    && state.probabilities;
  feedback.hidden = !showFeedback;
  if (showFeedback) {
    drawFeedback(feedback, trial);
    state.feedbackFrames += 1;
  }
}

function drawFeedback(root, trial) {
  const names = state.probabilities.map((_, i) => state.classes[i] || `class ${i}`);
  if (root.childElementCount !== names.length || root.dataset.names !== names.join()) {
    root.dataset.names = names.join();
    root.replaceChildren(...names.map((name) => {
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("div");
      fill.className = "fill";
      const label = document.createElement("div");
      label.className = "label";
      label.textContent = name;
      bar.append(fill, label);
      return bar;
    }));
  }
  [...root.children].forEach((bar, i) => {
    bar.classList.toggle("cued", i === trial.class_index);
    bar.firstChild.style.height = `${Math.round(100 * (state.probabilities[i] || 0))}%`;
  });
}

// ---------------------------------------------------------------- status

function badge(id, text, kind) {
  const el = $(id);
  el.textContent = text;
  el.className = "badge " + (kind || "");
}

function renderStatus() {
  badge("connection", state.authError ? "not authorized" : state.connection,
    state.connection === "open" ? "ok" : state.authError ? "bad" : "warn");
  badge("stage", "paradigm: " + (state.stage || "waiting"), state.stage === "online" ? "ok" : "");
  const loop = state.loop;
  const warning = $("warning");
  warning.hidden = true;
  if (state.connection === "open" && !state.ready) {
    warning.textContent = "Cues are paused: show this page full screen (F11) and keep it visible.";
    warning.hidden = false;
  }
  if (loop) {
    if (loop.phase === "calibrating") {
      const left = loop.excluded ? ` (${loop.excluded} unseen left out)` : "";
      badge("loop", `calibrating: ${loop.trials.join(" + ")} of ${loop.needed} per class${left}`, "warn");
      badge("score", "–");
    } else if (loop.phase === "training") {
      badge("loop", `training on ${loop.trials} trials…`, "warn");
    } else if (loop.phase === "online") {
      badge("loop", "model loaded", "ok");
      const cv = loop.cv_accuracy === null || loop.cv_accuracy === undefined ? "scoring…" : loop.cv_accuracy.toFixed(3);
      const rate = loop.trials ? (loop.hits / loop.trials).toFixed(3) : "–";
      const left = loop.excluded ? ` · ${loop.excluded} unseen left out` : "";
      badge("score", `CV ${cv} · online ${loop.hits}/${loop.trials} (${rate})${left}`, loop.warning ? "warn" : "ok");
      if (loop.warning) {
        warning.textContent = loop.warning;
        warning.hidden = false;
      }
    } else if (loop.phase === "failed") {
      badge("loop", "training failed", "bad");
      warning.textContent = loop.reason;
      warning.hidden = false;
    }
  }
  if (state.timing) {
    badge("timing", `cue paint offset p50 ${state.timing.p50_ms.toFixed(1)} ms · p99 ${state.timing.p99_ms.toFixed(1)} ms (n ${state.timing.count})`);
  }
}

$("recalibrate").addEventListener("click", requestRecalibration);
connect();
renderStatus();
requestAnimationFrame(frame);
