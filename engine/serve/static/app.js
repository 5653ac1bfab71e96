// The avstream live viewer: one WebSocket (/api/live), one card per stream. Protocol: docs/viewer.md.
const uPlot = window.uPlot;
const HISTORY_S = 120;          // media seconds kept on the charts
const HEATMAPS_KEPT = 40;       // recent localization results, to find the one of a frame's media time
const LATENCY_SAMPLES = 5000;
const CLIP_POLL_MS = 4000;

// Test hooks and a little state anyone can read in the console.
const viewer = { connected: false, ended: null, closeCode: null, messages: 0, streams: {}, latency: [] };
window.avstreamViewer = viewer;

const cards = new Map();
const main = document.getElementById("streams");
const connection = document.getElementById("connection");
const banner = document.getElementById("banner");

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(x, digits = 1) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
}

// A perceptual dark-to-bright map (inferno-like): value 0..255 -> [r, g, b].
const STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
const COLOURS = Array.from({ length: 256 }, (_, v) => {
  const x = (v / 255) * (STOPS.length - 1), i = Math.min(Math.floor(x), STOPS.length - 2), f = x - i;
  return STOPS[i].map((c, k) => Math.round(c + (STOPS[i + 1][k] - c) * f));
});

class StreamCard {
  constructor(id) {
    this.id = id;
    this.hooks = { framesDrawn: 0, lastT: null, lastWall: null, points: { highlight: 0, violence: 0 },
                   alerts: [], events: 0, captions: 0, heatmapsDrawn: 0, heatmapT: null, heatmap: null,
                   heatmapCanvas: null, health: null, latency: [] };
    viewer.streams[id] = this.hooks;
    this.data = { highlight: [[], []], violence: [[], []] };
    this.alerts = [];       // [start, end|null] in media time
    this.heatmaps = [];     // {t0, t1, heatmap}
    this.drawnHeatmap = null;
    this.pending = null;
    this.decoding = false;
    this.events = [];       // {header, li, clip}
    this.dirty = false;
    this.build();
  }

  build() {
    const card = this.root = el("section", "card");
    card.dataset.stream = this.id;
    const head = el("header");
    head.append(el("h2", "", this.id));
    this.healthLine = el("span", "health", "waiting for status");
    head.append(this.healthLine);
    const video = el("div", "video");
    this.canvas = el("canvas", "frame");
    this.canvas.width = 640; this.canvas.height = 360;
    this.heat = el("canvas", "heat");
    this.heat.width = 640; this.heat.height = 360;
    this.hooks.heatmapCanvas = this.heat;
    this.waiting = el("div", "waiting", "waiting for video");
    video.append(this.canvas, this.heat, this.waiting);
    const side = el("div", "side");
    this.chartBoxes = {};
    for (const kind of ["highlight", "violence"]) {
      side.append(el("div", "chart-title", kind));
      this.chartBoxes[kind] = el("div", "chart");
      side.append(this.chartBoxes[kind]);
    }
    const lists = el("div", "lists");
    const captions = el("div"), events = el("div");
    captions.append(el("h3", "", "captions"));
    events.append(el("h3", "", "events"));
    this.captionList = el("ul", "captions");
    this.eventList = el("ul", "events");
    captions.append(this.captionList);
    events.append(this.eventList);
    lists.append(captions, events);
    side.append(lists);
    card.append(head, video, side);
    main.append(card);
    this.charts = {};
    for (const kind of ["highlight", "violence"]) this.charts[kind] = this.makeChart(kind);
  }

  makeChart(kind) {
    const box = this.chartBoxes[kind];
    const shade = (u) => {
      const { left, top, width, height } = u.bbox;
      const ctx = u.ctx;
      ctx.save();
      ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--alert");
      const last = this.data.violence[0].at(-1) ?? 0;
      for (const [a, b] of this.alerts) {
        const x0 = Math.max(left, u.valToPos(a, "x", true));
        const x1 = Math.min(left + width, u.valToPos(b ?? last, "x", true));
        if (x1 >= x0) ctx.fillRect(x0, top, Math.max(2, x1 - x0), height);
      }
      ctx.restore();
    };
    const axis = { stroke: "#8a939d", grid: { stroke: "#2a3038", width: 1 }, ticks: { stroke: "#2a3038" } };
    const opts = {
      width: Math.max(240, box.clientWidth || 400), height: 120, legend: { show: false }, cursor: { show: false },
      scales: { x: { time: false }, y: { range: [0, 1] } },
      axes: [{ ...axis }, { ...axis, size: 36 }],
      series: [{ label: "t (s)" }, { label: kind, stroke: kind === "violence" ? "#ff8a3d" : "#4cc3ff", width: 1.5,
                                     points: { show: false } }],
      hooks: { drawAxes: [shade] },
    };
    return new uPlot(opts, this.data[kind], box);
  }

  resize() {
    for (const [kind, chart] of Object.entries(this.charts)) {
      chart.setSize({ width: Math.max(240, this.chartBoxes[kind].clientWidth), height: 120 });
    }
  }

  // --- frames ---
  frame(head, blob) {
    this.pending = { head, blob };  // newest wins: a slow decode skips frames, never queues them
    if (!this.decoding) this.decodeNext();
  }

  async decodeNext() {
    this.decoding = true;
    while (this.pending) {
      const { head, blob } = this.pending;
      this.pending = null;
      let bitmap;
      try {
        bitmap = await createImageBitmap(blob);
      } catch (err) {
        continue;  // a damaged JPEG: the next frame replaces it
      }
      this.draw(head, bitmap);
      bitmap.close();
    }
    this.decoding = false;
  }

  draw(head, bitmap) {
    if (this.canvas.width !== bitmap.width || this.canvas.height !== bitmap.height) {
      this.canvas.width = this.heat.width = bitmap.width;
      this.canvas.height = this.heat.height = bitmap.height;
      this.drawnHeatmap = null;
    }
    this.canvas.getContext("2d").drawImage(bitmap, 0, 0);
    this.waiting.hidden = true;
    const latency = Date.now() - head.wall * 1000;
    for (const samples of [viewer.latency, this.hooks.latency]) {
      samples.push(latency);
      if (samples.length > LATENCY_SAMPLES) samples.shift();
    }
    this.hooks.framesDrawn += 1;
    this.hooks.lastT = head.t;
    this.hooks.lastWall = head.wall;
    this.drawHeat(head.t);
  }

  // The localization result whose window holds media time t, else the latest one.
  heatmapFor(t) {
    for (let i = this.heatmaps.length - 1; i >= 0; i--) {
      const h = this.heatmaps[i];
      if (h.t0 <= t && t <= h.t1) return h;
    }
    return this.heatmaps.at(-1) ?? null;
  }

  drawHeat(t) {
    const found = this.heatmapFor(t);
    if (found === null || found === this.drawnHeatmap) return;
    this.drawnHeatmap = found;
    const { w, h, data } = found.heatmap;
    const small = new OffscreenCanvas(w, h);
    const image = new ImageData(w, h);
    for (let i = 0; i < w * h; i++) {
      const v = data[i], [r, g, b] = COLOURS[v];
      image.data.set([r, g, b, Math.round(v * 0.7)], i * 4);  // opacity follows the value: cold cells vanish
    }
    small.getContext("2d").putImageData(image, 0, 0);
    const ctx = this.heat.getContext("2d");
    ctx.clearRect(0, 0, this.heat.width, this.heat.height);
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(small, 0, 0, this.heat.width, this.heat.height);
    this.hooks.heatmapsDrawn += 1;
    this.hooks.heatmapT = [found.t0, found.t1];
    this.hooks.heatmap = { w, h, peak: found.peak };
  }

  // --- results ---
  result(header) {
    const kind = header.kind;
    if (kind === "highlight" || kind === "violence") {
      const [xs, ys] = this.data[kind];
      if (xs.length && header.t1 < xs.at(-1) - 1) {  // media time went back (a looped or restarted input)
        xs.length = ys.length = 0;
        if (kind === "violence") this.alerts.length = 0;
      }
      xs.push(header.t1); ys.push(header.score);
      while (xs.length && xs[0] < header.t1 - HISTORY_S) { xs.shift(); ys.shift(); }
      this.hooks.points[kind] += 1;
      if (kind === "violence") this.alert(header);
      this.dirty = true;
    } else if (kind === "localization" && header.heatmap) {
      this.heatmaps.push({ t0: header.t0, t1: header.t1, heatmap: header.heatmap, peak: header.peak });
      if (this.heatmaps.length > HEATMAPS_KEPT) this.heatmaps.shift();
      if (this.hooks.lastT !== null) this.drawHeat(this.hooks.lastT);
    } else if (kind === "caption") {
      const li = el("li");
      li.append(el("span", "t", `${fmt(header.t0)}–${fmt(header.t1)} s`), document.createTextNode(header.text));
      this.captionList.prepend(li);
      while (this.captionList.children.length > 30) this.captionList.lastChild.remove();
      this.hooks.captions += 1;
    }
  }

  alert(header) {
    const open = this.alerts.at(-1);
    if (header.alert) {
      if (open && open[1] === null) return;
      this.alerts.push([header.t1, null]);
    } else if (open && open[1] === null) {
      open[1] = header.t1;
    }
    this.hooks.alerts = this.alerts.map(([a, b]) => [a, b]);
  }

  event(header) {
    const li = el("li", `event-${header.name}`);
    const when = new Date(header.wall * 1000).toLocaleTimeString();
    const span = typeof header.t1 === "number" && header.t1 > header.t0 ? `${fmt(header.t0)}–${fmt(header.t1)}` : fmt(header.t0);
    const media = typeof header.t0 === "number" ? ` at ${span} s` : "";
    li.append(el("span", "t", when), document.createTextNode(`${header.name}${media}`));
    this.eventList.prepend(li);
    while (this.eventList.children.length > 50) this.eventList.lastChild.remove();
    this.events.push({ header, li, clip: null });
    if (this.events.length > 50) this.events.shift();
    this.hooks.events += 1;
  }

  // Links to the recorded clips of this stream's events (when the run records clips).
  async linkClips() {
    const waiting = this.events.filter((e) => e.clip === null && Date.now() / 1000 - e.header.wall < 600);
    if (!waiting.length) return;
    let clips;
    try {
      const reply = await fetch(`/api/clips?stream=${encodeURIComponent(this.id)}`, { credentials: "same-origin" });
      if (!reply.ok) return;
      clips = await reply.json();
    } catch (err) {
      return;
    }
    for (const ev of waiting) {
      const clip = clips.find((c) => c.event === ev.header.name && c.wall_start !== null
        && c.wall_start - 1 <= ev.header.wall && ev.header.wall <= c.wall_start + (c.duration_s || 0) + 1);
      if (!clip) continue;
      ev.clip = clip.id;
      const a = el("a", "", "clip");
      a.href = `/api/clips/${encodeURIComponent(clip.id)}.mp4`;
      a.target = "_blank";
      ev.li.append(a);
    }
  }

  health(msg) {
    this.hooks.health = msg;
    const parts = [`${fmt(msg.fps)} fps`, `drops ${msg.drops}`, `A/V skew ${fmt(msg.av_skew_ms, 0)} ms`,
                   `latency ${fmt(msg.latency_ms, 0)} ms`];
    if (msg.connection) parts.push(`connection ${msg.connection}`);
    if (msg.reconnects) parts.push(`${msg.reconnects} reconnects`);
    if (msg.restarts) parts.push(`${msg.restarts} restarts`);
    this.healthLine.replaceChildren(el("span", `state-${msg.state}`, msg.state ?? "?"),
                                    document.createTextNode(" · " + parts.join(" · ")));
  }

  render() {
    if (!this.dirty) return;
    this.dirty = false;
    // One media-time axis for both charts, so an alert lines up with the highlight curve under it.
    const xs = ["highlight", "violence"].map((kind) => this.data[kind][0]).filter((x) => x.length);
    if (!xs.length) return;
    const lo = Math.min(...xs.map((x) => x[0])), hi = Math.max(...xs.map((x) => x.at(-1)));
    for (const kind of ["highlight", "violence"]) {
      this.charts[kind].setData(this.data[kind], false);
      this.charts[kind].setScale("x", { min: lo, max: hi > lo ? hi : lo + 1 });
    }
  }

  remove() {
    for (const chart of Object.values(this.charts)) chart.destroy();
    this.root.remove();
    delete viewer.streams[this.id];
  }
}

function setStreams(ids) {
  for (const [id, card] of cards) {
    if (!ids.includes(id)) { card.remove(); cards.delete(id); }
  }
  for (const id of ids) if (!cards.has(id)) cards.set(id, new StreamCard(id));
  document.getElementById("empty").hidden = cards.size > 0;
}

function onText(msg) {
  viewer.messages += 1;
  switch (msg.type) {
    case "hello":
    case "streams":
      setStreams(msg.streams);
      break;
    case "result":
      cards.get(msg.header.stream)?.result(msg.header);
      break;
    case "event":
      cards.get(msg.stream)?.event(msg);
      break;
    case "health":
      cards.get(msg.stream)?.health(msg);
      break;
    case "ended":
      viewer.ended = msg.reason;
      banner.textContent = msg.reason;
      banner.hidden = false;
      break;
  }
}

function onFrame(buffer) {
  const length = new DataView(buffer).getUint32(0);
  const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  cards.get(head.stream)?.frame(head, new Blob([new Uint8Array(buffer, 4 + length)], { type: "image/jpeg" }));
}

function setConnection(text, cls) {
  connection.textContent = text;
  connection.className = `pill ${cls}`;
}

let retryMs = 500;
function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/live`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { viewer.connected = true; retryMs = 500; setConnection("live", "live"); };
  ws.onmessage = (e) => (typeof e.data === "string" ? onText(JSON.parse(e.data)) : onFrame(e.data));
  ws.onclose = (e) => {
    viewer.connected = false;
    viewer.closeCode = e.code;
    if (e.code === 4401) {
      setConnection("wrong token: sign in again at /", "down");
    } else if (viewer.ended) {
      setConnection("run ended", "down");
    } else {
      setConnection("disconnected: reconnecting", "down");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 5000);
    }
  };
}

function frameLoop() {
  for (const card of cards.values()) card.render();
  requestAnimationFrame(frameLoop);
}

window.addEventListener("resize", () => { for (const card of cards.values()) card.resize(); });
setInterval(() => { for (const card of cards.values()) card.linkClips(); }, CLIP_POLL_MS);
requestAnimationFrame(frameLoop);
connect();
