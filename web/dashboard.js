// The neurostream dashboard: one WebSocket (docs/protocol.md), four views (signal traces,
// feature heatmap, class probabilities, command log) and a status panel. No framework and no
// build step, so the binary can embed this file as it is.
"use strict";

// Seconds of signal on screen: enough to see a motor-imagery trial (about 4 s) whole.
const TRACE_SECONDS = 5;
// Seconds of probability history (stream time): several trials, to see the decoder settle.
const PROBABILITY_SECONDS = 30;
// Traces drawn when the page address names none: more are hard to read on one canvas.
const DEFAULT_TRACES = 8;
// Commands kept in the log; older ones scroll away.
const MAX_LOG = 100;
// Wait before reconnecting after a lost connection (not after an auth error or a stream end).
const RECONNECT_MS = 2000;
// How often the server-wide counters are read from /metrics.
const METRICS_MS = 2000;
// Sensorimotor channels first: they are what motor imagery changes.
const PREFERRED_CHANNELS = ["C3", "Cz", "C4", "FC3", "FC4", "CP3", "CP4", "Pz"];
const CLASS_COLOURS = ["#58a6ff", "#f78166", "#3fb950", "#d2a8ff", "#e3b341", "#ff7b72"];
// The rest class sends no command: grey, so the colours go to the classes that act.
const REST_COLOUR = "#8b949e";
const TRACE_COLOUR = "#7ee787";

const params = new URLSearchParams(location.search);
const token = params.get("token");

// Everything the page knows, in one object; `window.dashboard` exposes it for debugging and
// for the browser test (tests/dashboard.rs).
const state = {
  connection: "connecting",
  authError: null,
  session: null,
  hello: null,
  stream: "waiting",
  streamReason: null,
  counters: {
    signal: 0, windows: 0, commands: 0, framesDrawn: 0,
    messagesDropped: 0, samplesDropped: 0, commandsMissed: 0,
  },
  latency: { last: null, sum: 0, count: 0, max: 0 },
  server: {},
  lastSeq: 0,
  traces: null,
  features: null,
  probabilities: [],
  commandMarks: [],
  // Closed loop (`session` message) and paradigm (`paradigm`, `cue`, `cue_timing`).
  loop: null,
  paradigm: { stage: null, cue: null, timing: null },
  dirty: true,
};
window.dashboard = state;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- connection

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  return `${scheme}//${location.host}/ws${query}`;
}

function connect() {
  state.connection = "connecting";
  let greeted = false;
  const ws = new WebSocket(socketUrl());
  ws.onopen = () => {
    state.connection = "open";
    ws.send(JSON.stringify({ type: "subscribe", topics: ["signal", "features"] }));
    pollMetrics();
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "hello") greeted = true;
    handle(message);
    state.dirty = true;
  };
  ws.onclose = async (event) => {
    state.connection = `closed (${event.code})`;
    state.dirty = true;
    // A refused upgrade reaches the page only as code 1006; asking the same URL over plain
    // HTTP tells a wrong token (401) or origin (403) from a service that is just gone.
    if (!greeted) {
      const refusal = await diagnose();
      if (refusal) {
        state.authError = refusal;
        showBanner(refusal);
        state.dirty = true;
        return;
      }
    }
    // Also after the stream ended: a restarted service (a new session) is picked up.
    setTimeout(connect, RECONNECT_MS);
  };
}

async function diagnose() {
  try {
    const response = await fetch(socketUrl().replace(/^ws/, "http"), { cache: "no-store" });
    if (response.status === 401) {
      return token
        ? "Not authorized: the token in this page's address is wrong."
        : "Not authorized: this service needs a token; open the page as /?token=YOUR_TOKEN.";
    }
    if (response.status === 403) {
      return "Origin not allowed: start the service with --allow-origin " + location.origin + ".";
    }
  } catch (_) {
    // Unreachable: the service stopped; keep retrying.
  }
  return null;
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = false;
}

// ---------------------------------------------------------------- messages

function handle(message) {
  switch (message.type) {
    case "hello": return onHello(message);
    case "signal": return onSignal(message);
    case "features": return onFeatures(message);
    case "command": return onCommand(message);
    case "status": return onStatus(message);
    // The closed loop and the cue paradigm (docs/protocol.md): shown in the status panel.
    case "session": state.loop = message; return;
    case "paradigm": state.paradigm.stage = message.stage; return;
    case "cue": state.paradigm.cue = message; return;
    case "cue_timing": state.paradigm.timing = message; return;
    default: return; // The protocol asks clients to ignore types they do not know.
  }
}

function onHello(hello) {
  if (state.session !== hello.session) {
    // A new service run: its stream time starts afresh, so old history would mislead.
    state.probabilities = [];
    state.commandMarks = [];
    state.lastSeq = 0;
    $("commands").replaceChildren();
  }
  state.session = hello.session;
  state.hello = hello;
  state.stream = "live";
  state.streamReason = null;
  $("stream-name").textContent =
    `${hello.stream.name} · ${hello.stream.channel_count} ch @ ${hello.stream.rate} Hz · ` +
    `decoder ${hello.decoder ? hello.decoder.kind : "none"}`;
  setUpTraces(hello);
  setUpFeatures(hello.features);
  renderLegend(null);
}

function onSignal(signal) {
  state.counters.signal += 1;
  const traces = state.traces;
  if (!traces) return;
  if (traces.rate !== signal.rate) resizeTraces(signal.rate);
  const length = signal.values[0] ? signal.values[0].length : 0;
  traces.shown.forEach((channel, row) => {
    const source = signal.values[channel];
    const ring = traces.rings[row];
    for (let i = 0; i < length; i++) ring[(traces.written + i) % ring.length] = source[i];
  });
  traces.written += length;
  traces.newest = signal.timestamp + (length - 1) / signal.rate;
}

function onFeatures(features) {
  state.counters.windows += 1;
  if (state.features) state.features.values = features.values;
  if (features.probabilities) addProbabilities(features.timestamp, features.probabilities);
}

function onCommand(command) {
  state.counters.commands += 1;
  if (state.lastSeq && command.seq > state.lastSeq + 1) {
    state.counters.commandsMissed += command.seq - state.lastSeq - 1;
  }
  state.lastSeq = command.seq;
  const latency = state.latency;
  latency.last = command.latency_ms;
  latency.sum += command.latency_ms;
  latency.count += 1;
  latency.max = Math.max(latency.max, command.latency_ms);
  state.commandMarks.push({ t: command.timestamp, classIndex: command.class_index });
  // Without the features topic the commands are the only source of probabilities.
  if (state.counters.windows === 0) addProbabilities(command.timestamp, command.probabilities);

  const item = document.createElement("li");
  item.value = command.seq;
  item.style.color = classColour(command.class_index);
  item.textContent =
    `${command.timestamp.toFixed(2)} s  ${command.command}  ` +
    `${(100 * command.confidence).toFixed(0)} %  ${command.latency_ms.toFixed(2)} ms`;
  const log = $("commands");
  log.prepend(item);
  while (log.children.length > MAX_LOG) log.lastChild.remove();
}

function onStatus(status) {
  switch (status.event) {
    case "stream_lost":
      state.stream = "lost"; state.streamReason = status.reason || null; break;
    case "stream_regained":
      state.stream = "live"; state.streamReason = null; break;
    case "samples_dropped":
      state.counters.samplesDropped += status.samples || 0; break;
    case "messages_dropped":
      state.counters.messagesDropped = status.dropped_total || state.counters.messagesDropped; break;
    case "stream_ended":
      state.stream = "ended"; state.streamReason = status.reason || null; break;
    default: break;
  }
}

function addProbabilities(t, p) {
  const history = state.probabilities;
  // Stream time going back means a replay restarted: start the plot over.
  if (history.length && t < history[history.length - 1].t) history.length = 0;
  history.push({ t, p });
  while (history.length && history[0].t < t - PROBABILITY_SECONDS) history.shift();
  const marks = state.commandMarks;
  while (marks.length && marks[0].t < t - PROBABILITY_SECONDS) marks.shift();
  renderLegend(p);
}

// ---------------------------------------------------------------- signal traces

function chosenChannels(channels) {
  const asked = (params.get("channels") || "").split(",").map((c) => c.trim()).filter(Boolean);
  const find = (name) => channels.findIndex((c) => normalise(c) === normalise(name));
  let shown = asked.map(find).filter((i) => i >= 0);
  if (!shown.length) shown = PREFERRED_CHANNELS.map(find).filter((i) => i >= 0);
  if (shown.length < 3) shown = channels.map((_, i) => i).slice(0, DEFAULT_TRACES);
  return shown.slice(0, Math.max(DEFAULT_TRACES, asked.length));
}

// EDF labels often carry padding dots ("C3.."); compare names without them.
function normalise(name) {
  return name.replace(/\.+$/, "").toLowerCase();
}

function setUpTraces(hello) {
  const previous = state.traces;
  const shown = previous && previous.channels.join() === hello.channels.join()
    ? previous.shown
    : chosenChannels(hello.channels);
  state.traces = { channels: hello.channels, shown, rate: 0, rings: [], written: 0, newest: null };
  resizeTraces(hello.stream.rate);
  renderChannelPicker();
}

function resizeTraces(rate) {
  const traces = state.traces;
  traces.rate = rate;
  const length = Math.max(1, Math.round(TRACE_SECONDS * rate));
  traces.rings = traces.shown.map(() => new Float32Array(length));
  traces.written = 0;
}

function renderChannelPicker() {
  const list = $("channel-list");
  list.replaceChildren();
  state.traces.channels.forEach((name, index) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = state.traces.shown.includes(index);
    box.onchange = () => {
      const traces = state.traces;
      traces.shown = traces.channels.map((_, i) => i).filter((i) =>
        i === index ? box.checked : traces.shown.includes(i));
      resizeTraces(traces.rate);
    };
    label.append(box, " " + name);
    list.append(label);
  });
}

function drawTraces() {
  const canvas = $("traces");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const traces = state.traces;
  if (!traces || !traces.shown.length) return;
  const rows = traces.shown.length;
  const rowHeight = canvas.height / rows;
  const labelWidth = 48;
  const plotWidth = canvas.width - labelWidth;
  g.font = "12px system-ui, sans-serif";
  g.textBaseline = "middle";
  traces.shown.forEach((channel, row) => {
    const ring = traces.rings[row];
    const filled = Math.min(traces.written, ring.length);
    const middle = rowHeight * (row + 0.5);
    g.fillStyle = "#8792a0";
    g.fillText(traces.channels[channel], 4, middle);
    g.strokeStyle = "#222933";
    g.beginPath();
    g.moveTo(labelWidth, middle);
    g.lineTo(canvas.width, middle);
    g.stroke();
    if (filled < 2) return;
    // Each row is scaled to its own spread (4 standard deviations fill half a row), so a
    // quiet and a noisy channel are both readable.
    const start = traces.written - filled;
    let mean = 0;
    for (let i = 0; i < filled; i++) mean += ring[(start + i) % ring.length];
    mean /= filled;
    let variance = 0;
    for (let i = 0; i < filled; i++) variance += (ring[(start + i) % ring.length] - mean) ** 2;
    const spread = Math.sqrt(variance / filled) || 1;
    const yScale = rowHeight / 2 / (4 * spread);
    const xStep = plotWidth / (ring.length - 1);
    const x0 = canvas.width - (filled - 1) * xStep;
    g.strokeStyle = TRACE_COLOUR;
    g.lineWidth = 1;
    g.beginPath();
    for (let i = 0; i < filled; i++) {
      const value = ring[(start + i) % ring.length] - mean;
      const y = middle - Math.max(-rowHeight / 2, Math.min(rowHeight / 2, value * yScale));
      if (i === 0) g.moveTo(x0, y); else g.lineTo(x0 + i * xStep, y);
    }
    g.stroke();
  });
  if (traces.newest !== null) $("trace-time").textContent = `stream time ${traces.newest.toFixed(2)} s`;
}

// ---------------------------------------------------------------- features heatmap

// Feature names are "channel:band" for band power; other features (CSP, tangent space) get
// one row of their own. Rows are bands, columns channels, so 64 channels fit across.
function setUpFeatures(names) {
  const rows = [];
  const columns = [];
  const cells = names.map((name) => {
    const colon = name.lastIndexOf(":");
    const column = colon >= 0 ? name.slice(0, colon) : name;
    const row = colon >= 0 ? name.slice(colon + 1) : "value";
    if (!rows.includes(row)) rows.push(row);
    if (!columns.includes(column)) columns.push(column);
    return { row: rows.indexOf(row), column: columns.indexOf(column) };
  });
  state.features = { rows, columns, cells, values: null };
  const canvas = $("bands");
  canvas.height = 24 + rows.length * 28;
}

// A perceptually ordered dark-blue → teal → yellow ramp (a few viridis-like stops).
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function rampColour(x) {
  const at = Math.max(0, Math.min(1, x)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(at));
  const f = at - i;
  const mix = (k) => Math.round(RAMP[i][k] + f * (RAMP[i + 1][k] - RAMP[i][k]));
  return `rgb(${mix(0)},${mix(1)},${mix(2)})`;
}

function drawFeatures() {
  const canvas = $("bands");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const features = state.features;
  if (!features || !features.cells.length) return;
  const labelWidth = 56;
  const cellWidth = (canvas.width - labelWidth) / features.columns.length;
  const cellHeight = 28;
  g.font = "12px system-ui, sans-serif";
  g.textBaseline = "middle";
  features.rows.forEach((row, r) => {
    g.fillStyle = "#8792a0";
    g.textAlign = "left";
    g.fillText(row, 4, r * cellHeight + cellHeight / 2);
  });
  const values = features.values;
  if (values) {
    // Colour is scaled per row: the pattern across channels (e.g. mu weaker over the
    // hemisphere opposite the imagined hand) matters more than one band against another.
    const low = features.rows.map(() => Infinity);
    const high = features.rows.map(() => -Infinity);
    features.cells.forEach((cell, i) => {
      low[cell.row] = Math.min(low[cell.row], values[i]);
      high[cell.row] = Math.max(high[cell.row], values[i]);
    });
    features.cells.forEach((cell, i) => {
      const range = high[cell.row] - low[cell.row] || 1;
      const level = (values[i] - low[cell.row]) / range;
      const x = labelWidth + cell.column * cellWidth;
      const y = cell.row * cellHeight;
      g.fillStyle = rampColour(level);
      g.fillRect(x, y, Math.max(1, cellWidth - 1), cellHeight - 1);
      if (cellWidth > 48) {
        // The ramp is dark at its low end: light text there, dark text on the bright end.
        g.fillStyle = level < 0.5 ? "#fff" : "#000";
        g.textAlign = "center";
        g.fillText(values[i].toFixed(2), x + cellWidth / 2, y + cellHeight / 2);
      }
    });
  }
  // Column labels under the grid; rotated when the columns are narrow (64 channels).
  const top = features.rows.length * cellHeight + 4;
  g.fillStyle = "#8792a0";
  features.columns.forEach((column, c) => {
    const x = labelWidth + (c + 0.5) * cellWidth;
    if (cellWidth > 40) {
      g.textAlign = "center";
      g.fillText(column.replace(/\.+$/, ""), x, top + 8);
    } else if (cellWidth > 8) {
      g.save();
      g.translate(x, top);
      g.rotate(Math.PI / 2);
      g.textAlign = "left";
      g.font = `${Math.min(11, Math.floor(cellWidth))}px system-ui, sans-serif`;
      g.fillText(column.replace(/\.+$/, ""), 0, 0);
      g.restore();
    }
  });
}

// ---------------------------------------------------------------- probabilities

function classColour(index) {
  const classes = state.hello ? state.hello.classes : [];
  if (classes[index] === "rest") return REST_COLOUR;
  const acting = classes.slice(0, index).filter((name) => name !== "rest").length;
  return CLASS_COLOURS[acting % CLASS_COLOURS.length];
}

function renderLegend(p) {
  const legend = $("prob-legend");
  const classes = state.hello ? state.hello.classes : [];
  legend.replaceChildren(...classes.map((name, i) => {
    const span = document.createElement("span");
    span.style.color = classColour(i);
    span.textContent = p ? `${name} ${p[i].toFixed(2)}` : name;
    return span;
  }));
}

function drawProbabilities() {
  const canvas = $("probabilities");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const history = state.probabilities;
  const pad = 6;
  const height = canvas.height - 2 * pad;
  const y = (p) => pad + (1 - p) * height;
  g.strokeStyle = "#222933";
  g.beginPath();
  [0, 0.5, 1].forEach((p) => { g.moveTo(0, y(p)); g.lineTo(canvas.width, y(p)); });
  g.stroke();
  if (history.length) drawHistory(g, canvas, history, pad, y);
  // Last, so the labels stay readable where the lines cross them.
  drawTimeAxis(g, canvas, pad);
}

function drawHistory(g, canvas, history, pad, y) {
  const newest = history[history.length - 1].t;
  const x = (t) => canvas.width * (1 - (newest - t) / PROBABILITY_SECONDS);
  // Commands as vertical marks in their class colour, under the probability lines.
  state.commandMarks.forEach((mark) => {
    g.strokeStyle = classColour(mark.classIndex);
    g.globalAlpha = 0.5;
    g.beginPath();
    g.moveTo(x(mark.t), pad);
    g.lineTo(x(mark.t), canvas.height - pad);
    g.stroke();
  });
  g.globalAlpha = 1;
  g.lineWidth = 2;
  history[0].p.forEach((_, k) => {
    g.strokeStyle = classColour(k);
    g.beginPath();
    history.forEach((point, i) => {
      if (i === 0) g.moveTo(x(point.t), y(point.p[k])); else g.lineTo(x(point.t), y(point.p[k]));
    });
    g.stroke();
  });
  g.lineWidth = 1;
}

function drawTimeAxis(g, canvas, pad) {
  g.fillStyle = "#8792a0";
  g.font = "11px system-ui, sans-serif";
  g.textBaseline = "top";
  g.textAlign = "left";
  g.fillText(`−${PROBABILITY_SECONDS} s`, 4, pad + 2);
  g.textAlign = "right";
  g.fillText("now", canvas.width - 4, pad + 2);
}

// ---------------------------------------------------------------- status

function renderStatus() {
  const connection = $("connection");
  connection.textContent = state.authError ? "not authorized" : state.connection;
  connection.className = "badge " + (state.connection === "open" ? "ok" : state.authError ? "bad" : "warn");
  const stream = $("stream-state");
  stream.textContent = "stream " + state.stream + (state.streamReason ? `: ${state.streamReason}` : "");
  stream.className = "badge " + ({ live: "ok", lost: "bad", ended: "warn" }[state.stream] || "");
  const c = state.counters;
  const l = state.latency;
  const ms = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(2)} ms`);
  const rows = [
    ["signal chunks", c.signal],
    ["windows", c.windows],
    ["commands", c.commands],
    ["commands missed", c.commandsMissed],
    ["latency (last)", ms(l.last)],
    ["latency (mean)", ms(l.count ? l.sum / l.count : null)],
    ["latency (max)", ms(l.count ? l.max : null)],
    ["messages dropped (this page)", c.messagesDropped],
    ["samples dropped (source)", c.samplesDropped],
  ];
  rows.push(...loopRows());
  for (const [reason, value] of Object.entries(state.server)) {
    rows.push([`server drops: ${reason}`, value]);
  }
  $("counters").replaceChildren(...rows.flatMap(([name, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    return [dt, dd];
  }));
}

// Paradigm state, current cue, calibration count and online hit rate.
function loopRows() {
  const rows = [];
  const p = state.paradigm;
  if (p.stage) rows.push(["paradigm", p.stage]);
  if (p.cue) {
    rows.push(["cue", `${p.cue.block} ${p.cue.trial_in_block}/${p.cue.block_trials}: ${p.cue.class}`]);
  }
  const loop = state.loop;
  if (loop) {
    rows.push(["closed loop", loop.phase]);
    if (loop.phase === "calibrating") {
      rows.push(["calibration trials", `${loop.trials.join(" + ")} of ${loop.needed} per class`]);
    }
    if (loop.phase === "online") {
      rows.push(["CV accuracy", loop.cv_accuracy === null ? "–" : loop.cv_accuracy.toFixed(3)]);
      const rate = loop.trials ? (loop.hits / loop.trials).toFixed(3) : "–";
      rows.push(["online hit rate", `${loop.hits}/${loop.trials} (${rate})`]);
      if (loop.warning) rows.push(["warning", loop.warning]);
    }
    if (loop.phase === "failed") rows.push(["training failed", loop.reason]);
  }
  if (p.timing) {
    rows.push(["cue paint offset p50/p99", `${p.timing.p50_ms.toFixed(1)} / ${p.timing.p99_ms.toFixed(1)} ms`]);
  }
  return rows;
}

// Server-wide drop counters (every client, the source, the feedback queue) from /metrics.
async function pollMetrics() {
  if (state.connection !== "open") return;
  try {
    const text = await (await fetch("metrics", { cache: "no-store" })).text();
    const drops = {};
    for (const match of text.matchAll(/^neurostream_drops_total\{reason="([a-z_]+)"\} (\d+)/gm)) {
      drops[match[1]] = Number(match[2]);
    }
    state.server = drops;
    state.dirty = true;
  } catch (_) {
    // The service is gone or restarting; the connection status already says so.
  }
}

// ---------------------------------------------------------------- main loop

// Draw only when a message arrived since the last frame: an idle page costs nothing, and
// `framesDrawn` counts frames that showed new data.
function frame() {
  if (state.dirty) {
    state.dirty = false;
    drawTraces();
    drawFeatures();
    drawProbabilities();
    renderStatus();
    state.counters.framesDrawn += 1;
  }
  requestAnimationFrame(frame);
}

connect();
setInterval(pollMetrics, METRICS_MS);
requestAnimationFrame(frame);
