// livepiano's stage view: frames from /events (server-sent events) drawn as a scrolling piano
// roll, the status shown, the knobs as controls that post to /set and /press. No library, no
// build step: this file is served as it is shipped.
"use strict";
(function () {
  const TOKEN = new URLSearchParams(location.search).get("token");
  const Q = TOKEN ? "?token=" + encodeURIComponent(TOKEN) : "";
  // `livepiano plot`'s colours (livepiano/tools/pianoroll.py: HUES, BACKGROUND and its
  // velocity shading): [hue in degrees, saturation] of the pianist (p) and the model (m).
  const HUES = { p: [212, 0.72], m: [28, 0.88] };
  const BACKGROUND = [24, 26, 32];
  const BLACK_KEY_ROW = [17, 18, 23];
  const C_LINE = [62, 66, 78];
  const SECOND_LINE = [33, 36, 44];
  const BLACK_KEYS = new Set([1, 3, 6, 8, 10]);
  const NOW_AT = 0.88; // the "now" line, as a share of the roll's width
  const SEEN_KEPT = 5000;
  const DRAW_EVERY_MS = 30; // about 30 frames a second: smooth enough, half a browser's work
  const SEND_EVERY_MS = 80; // a control being dragged posts at most this often
  const HANDS_OFF_MS = 800; // a control just moved by hand is not moved by the frames meanwhile
  const STALE_MS = 1500; // frames arriving this much later than they could: start afresh
  const RECONNECT_EVERY_MS = 5000; // ... at most this often

  // What the tests (and a curious user's console) can read.
  const view = window.livepiano = {
    frames: 0, resets: 0, notes: [], status: {}, originEpochMs: null,
    seen: { p: [], m: [] }, // [event ms on the session clock, wall-clock ms when drawn]
  };
  let historyMs = 20000;
  let skew = -Infinity; // session ms minus performance.now(), from the frames
  let open = new Map(); // "who pitch" -> the sounding notes of that pitch, oldest first
  let fresh = []; // live events not drawn yet
  let source = null, connectedAt = -Infinity;
  const controls = new Map(); // name -> {spec, set(value)}
  let dragging = null; // the control held by the pointer
  const touched = new Map(); // name -> when it was last moved by hand (performance.now())
  const $ = (id) => document.getElementById(id);

  function rgb(c) { return `rgb(${c[0]},${c[1]},${c[2]})`; }

  function hsv(h, s, v) {
    const i = Math.floor(h * 6), f = h * 6 - i, p = v * (1 - s), q = v * (1 - f * s),
      t = v * (1 - (1 - f) * s);
    const [r, g, b] = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
    return [Math.round(r * 255), Math.round(g * 255), Math.round(b * 255)];
  }

  function noteColor(who, velocity) {
    const [h, s] = HUES[who];
    return rgb(hsv(h / 360, s, 0.30 + 0.70 * Math.max(0, Math.min(127, velocity)) / 127));
  }

  // --- the frames ------------------------------------------------------------------------

  function apply(ev, live) {
    const [who, t, pitch, velocity] = ev;
    if (pitch < 0) { // all of that player's notes off
      for (const [key, list] of open) {
        if (key[0] === who) { for (const n of list) n.e = t; open.delete(key); }
      }
    } else if (velocity > 0) {
      const n = { w: who, p: pitch, v: velocity, s: t, e: null };
      view.notes.push(n);
      const key = who + " " + pitch;
      if (!open.has(key)) open.set(key, []);
      open.get(key).push(n);
    } else { // a note-off ends the oldest voice of its pitch
      const list = open.get(who + " " + pitch);
      if (list && list.length) list.shift().e = t;
    }
    if (live) fresh.push(ev);
  }

  function onFrame(f) {
    const received = performance.now();
    if (f.reset) {
      view.notes = [];
      open = new Map();
      fresh = [];
      skew = -Infinity;
      view.originEpochMs = f.origin_epoch_ms;
      historyMs = f.history_s * 1000;
      if (!controls.size) build(f.params);
      view.resets += 1;
    }
    skew = Math.max(skew, f.now - received);
    // A frame that arrives much later than the best one did: this page fell behind (a busy
    // device); what waits in the connection is old, so a new one starts from a whole frame.
    if (skew - (f.now - received) > STALE_MS && received - connectedAt > RECONNECT_EVERY_MS) {
      view.reconnects = (view.reconnects || 0) + 1;
      connect();
      return;
    }
    for (const ev of f.ev) apply(ev, !f.reset);
    if (view.frames % 20 === 0) { // about once a second: forget what ended out of sight
      const horizon = f.now - historyMs - 2000;
      view.notes = view.notes.filter((n) => n.e === null || n.e >= horizon);
    }
    view.frames += 1;
    view.status = f.st;
    showStatus(f.st);
  }

  function connect() {
    if (source) source.close();
    connectedAt = performance.now();
    source = new EventSource("events" + Q);
    source.onmessage = (e) => onFrame(JSON.parse(e.data));
    source.onopen = () => { $("link").textContent = "live"; $("link").className = "figure"; };
    source.onerror = () => {
      $("link").textContent = "reconnecting…";
      $("link").className = "figure down";
    };
  }

  // --- the status --------------------------------------------------------------------------

  function text(id, value) { const el = $(id); if (el.textContent !== value) el.textContent = value; }

  function showStatus(st) {
    text("mode", st.mode || "…");
    const turn = st.mode === "duet" && st.turn ? st.turn : "";
    text("turn", turn);
    $("turn").className = "badge turn " + turn.split(" ")[0];
    text("latency", st.mode === "duet" && st.answer_latency_ms != null
      ? `last answer after ${(st.answer_latency_ms / 1000).toFixed(2)} s` : "");
    text("in-rate", st.in_per_s != null ? `${st.in_per_s.toFixed(1)} n/s` : "–");
    text("out-rate", st.out_per_s != null ? `${st.out_per_s.toFixed(1)} n/s` : "–");
    text("late", st.late_p99_ms != null ? `${st.late_p99_ms.toFixed(2)} ms` : "–");
    text("input", st.input === "gone" ? "gone, reconnecting" : "connected");
    $("input").className = st.input === "gone" ? "gone" : "";
    if (st.in_label) text("in-label", st.in_label);
    text("ahead-ms", st.lookahead_ms != null ? `${st.lookahead_ms} ms` : "…");
    const values = st.values || {};
    for (const [name, c] of controls) {
      const recent = performance.now() - (touched.get(name) || -Infinity) < HANDS_OFF_MS;
      if (name in values && dragging !== name && !recent) c.set(values[name]);
    }
  }

  function showLag(now) {
    const lags = [];
    for (const who of ["p", "m"]) {
      for (const [t, , drawnSession] of view.seen[who].slice(-50)) {
        if (now - t < 5000) lags.push(drawnSession - t);
      }
    }
    if (!lags.length) return;
    lags.sort((a, b) => a - b);
    text("lag", `${Math.max(0, Math.round(lags[Math.floor(lags.length * 0.9)]))} ms`);
  }

  // --- the controls ----------------------------------------------------------------------

  function showError(line) {
    const el = $("error");
    el.textContent = line;
    el.hidden = false;
    clearTimeout(showError.timer);
    showError.timer = setTimeout(() => { el.hidden = true; }, 5000);
  }

  async function post(path, body) {
    try {
      const r = await fetch(path + Q, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!r.ok) showError((await r.text()).trim());
    } catch (e) {
      showError("the view could not reach livepiano (" + e + ")");
    }
  }

  function shown(spec, value) {
    if (typeof value !== "number") return String(value);
    return value.toFixed(spec.digits) + (spec.unit || "");
  }

  function nearest(values, value) {
    let best = 0;
    for (let i = 1; i < values.length; i++) {
      if (Math.abs(values[i] - value) < Math.abs(values[best] - value)) best = i;
    }
    return best;
  }

  function rangeControl(spec, box) {
    const out = document.createElement("output");
    const input = Object.assign(document.createElement("input"),
      { type: "range", min: 0, max: spec.values.length - 1, step: 1, id: "control-" + spec.name });
    input.setAttribute("aria-label", spec.label);
    const label = document.createElement("label");
    label.htmlFor = input.id;
    label.append(Object.assign(document.createElement("span"), { textContent: spec.label }), out);
    box.append(label, input);
    // One value in flight at a time: two requests may be served out of order, and the
    // engine must end on the slider's last value, not on one from the middle of a drag.
    let last = 0, timer = null, inFlight = false, again = false;
    const send = async () => {
      timer = null;
      if (inFlight) { again = true; return; }
      inFlight = true;
      last = performance.now();
      try {
        await post("set", { name: spec.name, value: spec.values[+input.value] });
      } finally {
        inFlight = false;
      }
      if (again) { again = false; send(); }
    };
    input.addEventListener("pointerdown", () => { dragging = spec.name; });
    for (const end of ["pointerup", "pointercancel"]) {
      input.addEventListener(end, () => { dragging = null; });
    }
    input.addEventListener("input", () => {
      touched.set(spec.name, performance.now());
      out.value = shown(spec, spec.values[+input.value]);
      const wait = SEND_EVERY_MS - (performance.now() - last);
      if (wait <= 0) send(); else if (!timer) timer = setTimeout(send, wait);
    });
    input.addEventListener("change", () => {
      dragging = null;
      touched.set(spec.name, performance.now());
      if (timer) { clearTimeout(timer); send(); }
    });
    return (value) => {
      out.value = shown(spec, value);
      const i = nearest(spec.values, value);
      if (+input.value !== i) input.value = i;
    };
  }

  function choiceControl(spec, box) {
    box.append(Object.assign(document.createElement("label"), { textContent: spec.label }));
    if (spec.choices.length <= 3) { // a toggle: one button per choice
      const row = Object.assign(document.createElement("div"), { className: "modes" });
      const buttons = spec.choices.map((choice) => {
        const b = Object.assign(document.createElement("button"),
          { type: "button", textContent: choice, id: `control-${spec.name}-${choice}` });
        b.addEventListener("click", () => post("set", { name: spec.name, value: choice }));
        row.append(b);
        return b;
      });
      box.append(row);
      return (value) => buttons.forEach((b, i) => {
        b.setAttribute("aria-pressed", String(spec.choices[i] === value));
      });
    }
    const select = Object.assign(document.createElement("select"), { id: "control-" + spec.name });
    select.setAttribute("aria-label", spec.label);
    for (const choice of spec.choices) select.append(new Option(choice, choice));
    select.addEventListener("focus", () => { dragging = spec.name; });
    select.addEventListener("blur", () => { dragging = null; });
    select.addEventListener("change", () => {
      touched.set(spec.name, performance.now());
      post("set", { name: spec.name, value: select.value });
    });
    box.append(select);
    return (value) => { if (select.value !== value) select.value = value; };
  }

  function build(specs) {
    const aside = $("controls");
    const buttons = Object.assign(document.createElement("div"), { className: "buttons" });
    for (const spec of specs) {
      if (spec.kind === "action") {
        const b = Object.assign(document.createElement("button"), {
          type: "button", textContent: spec.label, title: spec.help,
          id: "action-" + spec.name, className: spec.name === "panic" ? "panic" : "",
        });
        b.addEventListener("click", () => post("press", { name: spec.name }));
        buttons.append(b);
        continue;
      }
      const box = Object.assign(document.createElement("div"),
        { className: "control", title: spec.help });
      const set = spec.kind === "range" ? rangeControl(spec, box) : choiceControl(spec, box);
      controls.set(spec.name, { spec, set });
      aside.append(box);
    }
    aside.append(buttons);
  }

  // --- the piano roll ----------------------------------------------------------------------

  let lastDrawn = -Infinity;

  function draw(when) {
    requestAnimationFrame(draw);
    if (when - lastDrawn < DRAW_EVERY_MS) return;
    lastDrawn = when;
    const canvas = $("roll");
    const ratio = window.devicePixelRatio || 1;
    const W = Math.round(canvas.clientWidth * ratio), H = Math.round(canvas.clientHeight * ratio);
    if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
    const g = canvas.getContext("2d");
    g.fillStyle = rgb(BACKGROUND);
    g.fillRect(0, 0, W, H);
    if (!isFinite(skew)) return;
    const now = performance.now() + skew;
    const left = 34 * ratio, nowX = left + (W - left) * NOW_AT;
    const px = (nowX - left) / historyMs; // pixels per ms
    const x = (t) => nowX + (t - now) * px;
    const start = now - historyMs;
    // the pitch range: what was played in the window, whole octaves, at least three
    let lo = 128, hi = -1;
    for (const n of view.notes) {
      if (n.e === null || n.e >= start) { lo = Math.min(lo, n.p); hi = Math.max(hi, n.p); }
    }
    if (hi < 0) { lo = 48; hi = 83; }
    lo = Math.max(0, Math.floor(lo / 12) * 12);
    hi = Math.min(127, Math.max(Math.ceil((hi + 1) / 12) * 12 - 1, lo + 35));
    const rows = hi - lo + 1, rowH = H / rows;
    const y = (p) => H - (p - lo + 1) * rowH;
    g.font = `${11 * ratio}px system-ui, sans-serif`;
    for (let p = lo; p <= hi; p++) {
      if (BLACK_KEYS.has(p % 12)) { g.fillStyle = rgb(BLACK_KEY_ROW); g.fillRect(left, y(p), W - left, rowH); }
      if (p % 12 === 0) {
        g.fillStyle = rgb(C_LINE);
        g.fillRect(left, y(p) + rowH - ratio, W - left, ratio);
        g.fillStyle = "rgb(120,126,140)";
        g.fillText(`C${p / 12 - 1}`, 4 * ratio, y(p) + rowH - 2 * ratio);
      }
    }
    g.fillStyle = rgb(SECOND_LINE);
    for (let s = Math.ceil(start / 1000) * 1000; s <= now + 2000; s += 1000) {
      g.fillRect(Math.round(x(s)), 0, ratio, H);
    }
    // the look-ahead: what the model may have sampled and not yet sent (taken back when you
    // play or turn a knob); drawn at least 8 px wide, to be seen at this scale
    const ahead = (view.status.lookahead_ms || 0);
    const aheadW = Math.max(ahead * px, 8 * ratio);
    g.fillStyle = "rgba(255,255,255,0.16)";
    g.fillRect(nowX, 0, aheadW, H);
    g.strokeStyle = "rgba(170,176,190,0.9)";
    g.setLineDash([4 * ratio, 3 * ratio]);
    g.strokeRect(nowX + 0.5, 0.5, aheadW, H - 1);
    g.setLineDash([]);
    g.fillStyle = "rgb(170,176,190)";
    const label = `look-ahead ${ahead} ms`;
    const labelW = g.measureText(label).width;
    g.fillText(label, nowX + aheadW + 4 * ratio + labelW < W ? nowX + aheadW + 4 * ratio
      : nowX - labelW - 4 * ratio, 14 * ratio);
    // the notes: the pianist's first, the model's over them
    for (const who of ["p", "m"]) {
      for (const n of view.notes) {
        if (n.w !== who || (n.e !== null && n.e < start)) continue;
        const x0 = Math.max(left, x(n.s));
        const x1 = Math.max(x0 + 2 * ratio, Math.min(nowX, n.e === null ? nowX : x(n.e)));
        g.fillStyle = noteColor(who, n.v);
        g.fillRect(x0, y(n.p) + 0.5, x1 - x0, Math.max(1, rowH - 1));
      }
    }
    g.fillStyle = "#fff";
    g.fillRect(Math.round(nowX), 0, ratio, H);
    // what was just drawn for the first time: when (for the view lag and the tests)
    if (fresh.length) {
      const drawnPerf = performance.now();
      const drawnEpoch = performance.timeOrigin + drawnPerf;
      for (const [who, t] of fresh) {
        const list = view.seen[who];
        list.push([t, drawnEpoch, drawnPerf + skew]);
        if (list.length > SEEN_KEPT) list.splice(0, list.length - SEEN_KEPT);
      }
      fresh = [];
      showLag(now);
    }
  }

  connect();
  requestAnimationFrame(draw);
})();
