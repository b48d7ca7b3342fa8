// affedge dashboard: one card per source, fed by the WebSocket on the page's own host.
// No libraries, no build step. Messages: schema-1 prediction records ({"source": ...}),
// {"type": "status"} once a second, {"type": "hello"} on connect.
"use strict";
(function () {
  const WINDOW_S = 30;          // traces show the last 30 s of each source's own clock
  const MAX_POINTS = 3000;      // per source (30 s at 100 fps)
  const RECENT_MS = 5000;       // fps and latency from the last 5 s of predictions (no status)
  const MIN_FPS_MS = 1000;      // no fps figure before a second of predictions
  const sources = new Map();    // name -> {card, points: [[t, v, a]], last, status}
  const conn = document.getElementById("conn");
  const main = document.getElementById("sources");
  let retryMs = 500;

  // The token (#token=... or ?token=...) is read once, kept for this tab (sessionStorage: a
  // reload still connects) and taken out of the address bar and the history, where anyone
  // at the kiosk could read it back.
  const TOKEN = (function () {
    const m = (location.hash + "&" + location.search).match(/[#?&]token=([^&]*)/);
    let tok = m ? decodeURIComponent(m[1]) : "";
    try {
      if (tok) sessionStorage.setItem("affedge-token", tok);
      else tok = sessionStorage.getItem("affedge-token") || "";
    } catch (e) { /* storage switched off: the token lives in this page only */ }
    if (m && history.replaceState) {
      const search = location.search.replace(/([?&])token=[^&]*&?/, "$1").replace(/[?&]$/, "");
      history.replaceState(null, "", location.pathname + search);
    }
    return tok;
  })();

  function token() { return TOKEN; }

  function setConn(on, text) {
    conn.className = "conn " + (on ? "on" : "off");
    conn.textContent = text;
    // while disconnected the cards keep their last values, dimmed and marked as not live
    for (const s of sources.values()) s.card.classList.toggle("stale", !on);
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function card(name) {
    let s = sources.get(name);
    if (s) return s;
    const empty = document.getElementById("empty");
    if (empty) empty.remove();
    const c = el("section", "card");
    c.dataset.source = name;
    const h = el("h2", "", name);
    const state = el("span", "state", "");
    h.appendChild(state);
    const row = el("div", "row");
    const trace = el("canvas", "trace"); trace.width = 600; trace.height = 300;
    const circ = el("canvas", "circ"); circ.width = 300; circ.height = 300;
    row.append(trace, circ);
    const stats = el("div", "stats");
    const f = {};
    for (const [k, label] of [["v", "valence"], ["a", "arousal"], ["fps", "fps"],
                              ["lat", "latency p50/p99"], ["face", "face"],
                              ["speech", "speech"], ["conf", "confidence"], ["n", "frames"],
                              ["who", "faces (shown)"]]) {
      stats.append(el("span", "k", label), f[k] = el("span", "val-" + k, "–"));
    }
    const err = el("div", "err", "");
    c.append(h, row, stats, err);
    main.appendChild(c);
    s = {card: c, state, trace, circ, f, err, points: [], last: null, status: null,
         recent: [], received: 0};
    sources.set(name, s);
    return s;
  }

  const fmt = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x)) ? "–"
    : Number(x).toFixed(d);

  function onPrediction(p) {
    const s = card(p.source || "default");
    const v = p.valence_smoothed ?? p.valence, a = p.arousal_smoothed ?? p.arousal;
    if (s.points.length && p.timestamp <= s.points[s.points.length - 1][0]) {
      s.points = [];   // the source restarted (a new file run or a reconnect)
    }
    s.points.push([p.timestamp, v, a]);
    if (s.points.length > MAX_POINTS) s.points.splice(0, s.points.length - MAX_POINTS);
    s.last = p;
    // fps, latency and frames from the predictions themselves, for a stream that sends no
    // status (Recognizer.publish("ws://..."): only affedge serve's hub sends status)
    const now = performance.now();
    if (!s.recent.length) s.firstAt = now;  // (again after a gap longer than RECENT_MS)
    s.recent.push([now, p.latency_ms]);
    while (s.recent.length && now - s.recent[0][0] > RECENT_MS) s.recent.shift();
    s.received += 1;
    s.dirty = true;
  }

  function fromPredictions(s) {
    const r = s.recent;
    const lat = r.map(x => x[1]).filter(x => typeof x === "number").sort((a, b) => a - b);
    const q = (f) => lat.length ? lat[Math.min(lat.length - 1, Math.floor(f * lat.length))] : null;
    // frames over the time since the first of them, and over the whole window once that is
    // full, so a burst (a reconnect, a page that just connected, a busy machine) is not read as
    // a rate of 80 frames/s; nothing before MIN_FPS_MS of them
    const elapsed = r.length ? r[r.length - 1][0] - s.firstAt : 0;
    const span = Math.max(r.length > 1 ? r[r.length - 1][0] - r[0][0] : 0,
                          Math.min(elapsed, RECENT_MS)) / 1000;
    return {fps: elapsed >= MIN_FPS_MS && span > 0 ? (r.length - 1) / span : null,
            latency_ms_p50: q(0.5),
            latency_ms_p99: q(0.99), frames: s.received};
  }

  function onStatus(st) {
    for (const [name, info] of Object.entries(st.sources || {})) {
      const s = card(name);
      s.status = info;
      s.dirty = true;
    }
  }

  function render() {
    for (const s of sources.values()) {
      if (!s.dirty) continue;
      s.dirty = false;
      const p = s.last, st = s.status;
      if (p) {
        s.f.v.textContent = fmt(p.valence_smoothed ?? p.valence);
        s.f.a.textContent = fmt(p.arousal_smoothed ?? p.arousal);
        s.f.conf.textContent = fmt(p.confidence, 2);
        flag(s.f.face, p.face_present);
        flag(s.f.speech, p.speech_present);
        // several people: how many are tracked and whose values these are (the primary's)
        const n = p.n_faces ?? (p.faces || []).length;
        s.f.who.textContent = n ? `${n} (#${p.track_id ?? "–"})` : "0";
      }
      if (st) {
        s.state.textContent = st.state + (st.reconnects ? ` · ${st.reconnects} reconnects` : "");
        s.err.textContent = st.error ? "⚠ " + st.error : "";
      }
      const m = st || (p ? fromPredictions(s) : null);
      if (m) {
        s.f.fps.textContent = fmt(m.fps, 1);
        s.f.lat.textContent = `${fmt(m.latency_ms_p50, 1)} / ${fmt(m.latency_ms_p99, 1)} ms`;
        s.f.n.textContent = String(m.frames);
      }
      drawTrace(s);
      drawCirc(s);
    }
  }

  function flag(e, on) {
    e.textContent = on ? "yes" : "no";
    e.className = "val-flag flag" + (on ? " yes" : "");
  }

  function drawTrace(s) {
    const g = s.trace.getContext("2d"), W = s.trace.width, H = s.trace.height;
    g.clearRect(0, 0, W, H);
    g.strokeStyle = "#2a313b"; g.lineWidth = 1;
    for (const y of [-1, -0.5, 0, 0.5, 1]) {
      const py = H / 2 - y * (H / 2 - 6);
      g.beginPath(); g.moveTo(0, py); g.lineTo(W, py); g.stroke();
    }
    if (s.points.length) drawLines(s, g, W, H);
    // the axis labels last, on their own patch, so that a trace never hides them
    g.font = "18px system-ui";
    for (const [text, y] of [["+1", 20], ["0", H / 2 - 4], ["−1", H - 8]]) {
      g.fillStyle = "#0d1014"; g.fillRect(2, y - 17, g.measureText(text).width + 6, 21);
      g.fillStyle = "#5d6675"; g.fillText(text, 4, y);
    }
  }

  function drawLines(s, g, W, H) {
    // the window fills from the left until 30 s of data exist, then scrolls
    const tEnd = s.points[s.points.length - 1][0];
    const t0 = Math.max(tEnd - WINDOW_S, s.points[0][0]);
    for (const [k, color] of [[1, "#4ea1ff"], [2, "#ff9f43"]]) {
      g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
      let pen = false;
      for (const pt of s.points) {
        if (pt[0] < t0) continue;
        const y = pt[k];
        if (y === null || y === undefined) { pen = false; continue; }
        const px = (pt[0] - t0) / WINDOW_S * W, py = H / 2 - y * (H / 2 - 6);
        if (pen) g.lineTo(px, py); else g.moveTo(px, py);
        pen = true;
      }
      g.stroke();
    }
  }

  function drawCirc(s) {
    const g = s.circ.getContext("2d"), W = s.circ.width, R = W / 2 - 10, c = W / 2;
    g.clearRect(0, 0, W, W);
    g.strokeStyle = "#2a313b"; g.lineWidth = 2;
    g.beginPath(); g.arc(c, c, R, 0, 2 * Math.PI); g.stroke();
    g.beginPath(); g.moveTo(c - R, c); g.lineTo(c + R, c); g.moveTo(c, c - R); g.lineTo(c, c + R);
    g.stroke();
    g.fillStyle = "#8b94a3"; g.font = "20px system-ui";
    g.fillText("V", W - 26, c - 6); g.fillText("A", c + 6, 26);
    const p = s.last;
    if (!p) return;
    const v = p.valence_smoothed ?? p.valence, a = p.arousal_smoothed ?? p.arousal;
    if (v === null || a === null || v === undefined || a === undefined) return;
    g.fillStyle = p.face_present ? "#2ecc71" : "#8b94a3";
    g.beginPath(); g.arc(c + v * R, c - a * R, 12, 0, 2 * Math.PI); g.fill();
  }

  function connect() {
    const tok = token();
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" +
      (tok ? "?token=" + encodeURIComponent(tok) : "");
    let ws;
    try { ws = new WebSocket(url); } catch (e) { schedule(); return; }
    let opened = false;
    ws.onopen = () => { opened = true; retryMs = 500; setConn(true, "connected"); };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "status") onStatus(m);
      else if (m.type === undefined && m.schema === 1) onPrediction(m);
    };
    ws.onclose = () => {
      setConn(false, opened ? "disconnected – reconnecting…"
        : (tok ? "cannot connect (wrong token?) – retrying…"
          : "cannot connect (token needed?) – retrying…"));
      schedule();
    };
  }

  function schedule() {
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 5000);
  }

  setInterval(render, 100);
  connect();
})();
