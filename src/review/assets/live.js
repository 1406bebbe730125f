// gridwatch patrol wall, live tiles: each tile opens one WebSocket to
// /api/v1/review/wall/{camera}/live and feeds the camera's fragmented MP4 (H.264 passed through
// by the server) to a Media Source Extensions buffer; detections arrive on the same socket
// stamped with the media time they belong to and are drawn on a canvas when the video shows
// that frame (requestVideoFrameCallback). A stream the browser cannot play (H.265) shows the
// analysed stills, and says why. Uses t(), el() and api() from app.js.
"use strict";

// The tile jumps to the live edge when it is further behind than this.
const LIVE_MAX_BEHIND_S = 0.5;
// Ahead of the playhead by more than this, the tile plays slightly fast until it is not:
// the browser's own buffering would otherwise add its depth to the latency for good.
const LIVE_CATCH_UP_S = 0.2;
const LIVE_CATCH_UP_RATE = 1.1;
// Media kept behind the playhead (older is removed from the source buffer).
const LIVE_KEEP_S = 6;
// Fragments waiting for the source buffer (about 20 s of video) before the tile starts again.
const LIVE_QUEUE_MAX = 500;
// Detections older than this (media seconds) are not drawn.
const OBJECTS_MAX_AGE_S = 1.0;
// A dropped socket is reopened after this long.
const LIVE_RETRY_MS = 2000;

class LiveTile {
  constructor(cam, parts) {
    this.cam = cam;
    this.tile = parts.tile;
    this.screen = parts.screen;
    this.video = parts.video;
    this.img = parts.img;
    this.canvas = parts.canvas;
    this.badge = parts.badge;
    this.queue = [];
    this.clocks = [];
    this.objects = [];
    this.cases = [];
    this.mode = "waiting";
    this.closed = false;
    this.frames = 0;
    this.source(cam.live || { mode: "waiting" });
    // Without a live URL (live video off) the tile shows stills and opens no socket.
    if (cam.live_url) this.open();
  }

  open() {
    if (this.closed) return;
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + this.cam.live_url);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (e) => (typeof e.data === "string" ? this.text(JSON.parse(e.data)) : this.binary(e.data));
    ws.onclose = () => {
      if (this.closed) return;
      this.setBadge("reconnecting", t("live_reconnecting"));
      this.retry = setTimeout(() => this.open(), LIVE_RETRY_MS);
    };
    this.ws = ws;
  }

  close() {
    this.closed = true;
    clearTimeout(this.retry);
    if (this.ws) this.ws.close();
    this.resetMedia();
  }

  text(m) {
    switch (m.type) {
      case "hello":
      case "source":
        this.source(m.source);
        break;
      case "init":
        this.startMedia(m.mime);
        break;
      case "clock":
        this.clocks.push(m);
        if (this.clocks.length > 64) this.clocks.shift();
        break;
      case "objects":
        this.objects.push(m);
        if (this.objects.length > 128) this.objects.shift();
        break;
      case "cases":
        this.cases = m.cases;
        this.tile.dataset.openCases = String(m.cases.length);
        if (this.mode !== "video") this.draw(null);
        break;
    }
  }

  source(s) {
    this.mode = s.mode;
    this.tile.dataset.mode = s.mode;
    this.video.hidden = s.mode !== "video";
    this.img.hidden = s.mode === "video";
    if (s.mode === "stills") this.setBadge("stills", t("live_stills") + ": " + s.reason);
    else if (s.mode === "waiting") this.setBadge("waiting", t("live_waiting"));
    if (s.mode !== "video") this.resetMedia();
  }

  startMedia(mime) {
    this.resetMedia();
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
      this.mode = "stills";
      this.video.hidden = true;
      this.img.hidden = false;
      this.setBadge("stills", t("live_stills") + ": " + mime + " " + t("live_unsupported"));
      return;
    }
    const ms = new MediaSource();
    this.ms = ms;
    this.url = URL.createObjectURL(ms);
    this.video.src = this.url;
    ms.addEventListener("sourceopen", () => {
      if (this.ms !== ms) return;
      this.sb = ms.addSourceBuffer(mime);
      this.sb.mode = "segments";
      this.sb.addEventListener("updateend", () => this.pump());
      this.pump();
    }, { once: true });
    this.video.play().catch(() => {});
    this.watchFrames();
  }

  resetMedia() {
    this.queue = [];
    this.sb = null;
    this.ms = null;
    if (this.url) {
      URL.revokeObjectURL(this.url);
      this.url = null;
      this.video.removeAttribute("src");
      this.video.load();
    }
  }

  binary(data) {
    if (!this.ms) return;
    // A media element that gave up (a decode error closes its MediaSource) or a queue that is
    // not drained: start again from the next keyframe rather than hold fragments for ever.
    if ((this.sb && this.ms.readyState !== "open") || this.queue.length >= LIVE_QUEUE_MAX) {
      this.setBadge("error", (this.video.error && this.video.error.message) || "media closed");
      this.ws.close();
      return;
    }
    this.queue.push(new Uint8Array(data));
    this.pump();
  }

  // Appends everything queued as one buffer; trims what is long played; stays at the live edge.
  pump() {
    const sb = this.sb;
    if (!sb || sb.updating || this.ms.readyState !== "open") return;
    const v = this.video;
    const b = v.buffered;
    if (b.length && v.currentTime - b.start(0) > LIVE_KEEP_S * 2) {
      sb.remove(0, v.currentTime - LIVE_KEEP_S);
      return;
    }
    if (b.length) {
      const end = b.end(b.length - 1);
      if (end - v.currentTime > LIVE_MAX_BEHIND_S) v.currentTime = Math.max(b.start(b.length - 1), end - 0.05);
    }
    if (!this.queue.length) return;
    const n = this.queue.reduce((s, c) => s + c.length, 0);
    const all = new Uint8Array(n);
    let at = 0;
    for (const c of this.queue) { all.set(c, at); at += c.length; }
    this.queue = [];
    try {
      sb.appendBuffer(all);
    } catch (e) {
      // A full or broken buffer: start again from the next init (the server sends one).
      this.setBadge("error", String(e.name || e));
      this.ws.close();
    }
    if (v.paused) v.play().catch(() => {});
  }

  watchFrames() {
    const v = this.video;
    if (!v.requestVideoFrameCallback) return;
    const onFrame = (now, meta) => {
      if (this.closed || !this.ms) return;
      this.frames += 1;
      const latency = this.latency(meta);
      if (latency !== null) {
        this.tile.dataset.latencyMs = String(Math.round(latency));
        this.setBadge("live", t("live") + " " + (latency / 1000).toFixed(2) + " s");
      }
      this.tile.dataset.mediaTime = meta.mediaTime.toFixed(3);
      const b = v.buffered;
      const ahead = b.length ? b.end(b.length - 1) - v.currentTime : 0;
      v.playbackRate = ahead > LIVE_CATCH_UP_S ? LIVE_CATCH_UP_RATE : 1.0;
      this.draw(meta.mediaTime);
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  }

  // When the frame now shown reached gridwatch → when it is displayed, in milliseconds.
  latency(meta) {
    let best = null;
    for (const c of this.clocks) if (c.t <= meta.mediaTime + 1e-3 && (!best || c.t > best.t)) best = c;
    if (!best) return null;
    const arrived = best.received_unix_ms + (meta.mediaTime - best.t) * 1000;
    const shown = performance.timeOrigin + (meta.expectedDisplayTime || performance.now());
    return Math.max(0, shown - arrived);
  }

  // Zones, the detections of the frame shown (video only: stills have them drawn), and the
  // zones with an open case.
  draw(mediaTime) {
    const c = this.canvas;
    const w = this.screen.clientWidth, h = this.screen.clientHeight;
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    const open = new Set(this.cases.map((k) => k.zone));
    for (const z of this.cam.zones || []) {
      const isOpen = open.has(z.id);
      if (mediaTime === null && !isOpen) continue;
      g.strokeStyle = isOpen ? "#ff4040" : "rgba(240,180,41,0.9)";
      g.lineWidth = isOpen ? 3 : 1.5;
      g.beginPath();
      z.polygon.forEach(([x, y], i) => (i ? g.lineTo(x * w, y * h) : g.moveTo(x * w, y * h)));
      g.closePath();
      g.stroke();
      if (isOpen) {
        const k = this.cases.find((k) => k.zone === z.id);
        const [x, y] = z.polygon[0];
        g.fillStyle = "#ff4040";
        g.font = "12px sans-serif";
        g.fillText("● " + scenarioName(k.scenario, k.name_zh), x * w + 4, y * h + 14);
      }
    }
    if (mediaTime === null) return;
    let best = null;
    for (const o of this.objects) if (o.t <= mediaTime + 1e-3 && (!best || o.t > best.t)) best = o;
    if (!best || mediaTime - best.t > OBJECTS_MAX_AGE_S) return;
    this.tile.dataset.objectsShown = String(best.objects.length);
    g.lineWidth = 2;
    g.font = "11px sans-serif";
    for (const o of best.objects) {
      const [x0, y0, x1, y1] = o.box;
      g.strokeStyle = "#3fd07f";
      g.strokeRect(x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h);
      g.fillStyle = "#3fd07f";
      g.fillText(o.label + " " + Math.round(o.score * 100), x0 * w + 2, y0 * h - 3);
    }
  }

  setBadge(kind, text) {
    this.badge.className = "badge " + kind;
    this.badge.textContent = text;
    this.tile.dataset.live = kind;
  }
}

// ----- staff report: draw a box on a tile, pick a scenario, add a note -----

function reportDrawing(tile, screen, cam, onDone) {
  const box = el("div", { class: "drawn" });
  screen.append(box);
  let start = null, rect = null;
  const frac = (e) => {
    const r = screen.getBoundingClientRect();
    return [Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)), Math.min(1, Math.max(0, (e.clientY - r.top) / r.height))];
  };
  const show = (a, b) => {
    rect = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
    Object.assign(box.style, { left: rect[0] * 100 + "%", top: rect[1] * 100 + "%", width: (rect[2] - rect[0]) * 100 + "%", height: (rect[3] - rect[1]) * 100 + "%" });
  };
  const down = (e) => { e.preventDefault(); e.stopPropagation(); start = frac(e); show(start, start); };
  const move = (e) => { if (start) show(start, frac(e)); };
  const up = (e) => {
    if (!start) return;
    e.stopPropagation();
    show(start, frac(e));
    start = null;
    stop();
    onDone(rect, box);
  };
  const stop = () => {
    screen.removeEventListener("pointerdown", down, true);
    screen.removeEventListener("pointermove", move, true);
    screen.removeEventListener("pointerup", up, true);
    // After the click that ends the drag (it must not enlarge the tile).
    setTimeout(() => tile.classList.remove("drawing"), 0);
  };
  tile.classList.add("drawing");
  screen.addEventListener("pointerdown", down, true);
  screen.addEventListener("pointermove", move, true);
  screen.addEventListener("pointerup", up, true);
  return () => { stop(); box.remove(); };
}

function reportForm(tile, screen, cam) {
  const out = el("span", { class: "report-said" });
  const scenarios = (S.meta ? S.meta.scenarios : []).map((s) => s.id);
  const zoneScenarios = new Set((cam.zones || []).flatMap((z) => z.scenarios));
  // The camera's own scenarios first.
  scenarios.sort((a, b) => Number(zoneScenarios.has(b)) - Number(zoneScenarios.has(a)));
  const pick = el("select", { class: "report-scenario" }, ...scenarios.map((s) => el("option", { value: s }, scenarioName(s))));
  const note = el("input", { class: "report-note", placeholder: t("report_note"), maxLength: 500 });
  const send = el("button", { class: "report-send", disabled: true }, t("report_send"));
  const form = el("div", { class: "report-form" }, pick, note, send, out);
  let rect = null, cancel = null;
  const draw = el("button", { class: "report-draw" }, t("report_draw"));
  draw.onclick = (e) => {
    e.stopPropagation();
    if (cancel) cancel();
    out.textContent = t("report_drawing");
    cancel = reportDrawing(tile, screen, cam, (r, box) => {
      rect = r;
      send.disabled = false;
      out.textContent = "";
      cancel = () => box.remove();
    });
  };
  send.onclick = async (e) => {
    e.stopPropagation();
    if (!rect) return;
    send.disabled = true;
    const r = await api("/api/v1/review/wall/" + encodeURIComponent(cam.id) + "/reports",
      { method: "POST", body: { scenario: pick.value, box: rect, note: note.value } });
    if (r.status === 202) {
      out.textContent = t("reported_ok");
      tile.dataset.reported = r.data.id;
      note.value = "";
      rect = null;
      if (cancel) cancel();
      cancel = null;
    } else {
      out.textContent = t("report_failed", { status: r.status }) + " " + ((r.data && r.data.error) || "");
      send.disabled = false;
    }
  };
  return el("div", { class: "reporter" }, draw, form);
}
