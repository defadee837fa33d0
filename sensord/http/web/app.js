// sensord status page. No build step, no framework, no request outside this origin.
// Polls the JSON API with ETags (a 304 costs no body); builds the DOM with textContent
// only, since sensor names come from MQTT topics and are not to be trusted as HTML.
"use strict";
(function () {
  const POLL_FAST_MS = 2000; // overview and alerts
  const POLL_SENSORS_MS = 3000;
  const POLL_DETAIL_MS = 10000;
  const PAGE_SIZE = 200;
  const TOKEN_KEY = "sensord-token";

  const $ = (id) => document.getElementById(id);
  const cache = new Map(); // path -> {etag, data}
  const state = { offset: 0, total: 0, detail: null, plot: null, mutations: true };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  async function getJSON(path) {
    const hit = cache.get(path);
    const headers = hit ? { "If-None-Match": hit.etag } : {};
    const r = await fetch(path, { headers, cache: "no-cache" });
    if (r.status === 304 && hit) return { data: hit.data, changed: false };
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    const data = await r.json();
    const etag = r.headers.get("ETag");
    if (etag) cache.set(path, { etag, data });
    return { data, changed: true };
  }

  // ---- formatting

  function fmtNum(v) {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return Number(v.toPrecision(4)).toLocaleString();
  }
  function fmtAge(s) {
    if (s < 0) s = 0;
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d";
  }
  function since(iso) {
    const t = Date.parse(iso);
    return isNaN(t) ? iso : fmtAge((Date.now() - t) / 1000) + " ago";
  }
  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (t.textContent = ""), 4000);
  }

  // ---- overview

  function renderOverview(o) {
    state.mutations = o.mutations;
    const pill = $("status");
    pill.textContent = o.status + (o.reasons.length ? ": " + o.reasons.join("; ") : "");
    pill.className = "pill " + o.status.replace(" ", "-");
    $("ov-reporting").textContent = o.sensors.reporting.toLocaleString() +
      " / " + o.sensors.total.toLocaleString();
    $("ov-silent").textContent = o.sensors.silent.toLocaleString();
    $("ov-invalid").textContent = o.invalid_5m.toLocaleString();
    const s = o.alerts.by_severity;
    $("ov-alerts").replaceChildren(
      el("span", { class: "sev critical", title: "critical" }, s.critical + " crit"), " ",
      el("span", { class: "sev warning", title: "warning" }, s.warning + " warn"), " ",
      el("span", { class: "sev info", title: "info" }, s.info + " info"));
    const conn = (c) => el("span", { class: c ? "up" : "down" }, c ? "connected" : "DOWN");
    $("ov-mqtt").replaceChildren(o.mqtt ? conn(o.mqtt.connected) : "– (notify role)");
    $("ov-amqp").replaceChildren(conn(o.amqp.connected));
    $("ov-outbox").textContent = o.outbox_pending.toLocaleString() + " held";
    const dlq = Object.entries(o.dlq);
    const total = dlq.reduce((a, [, n]) => a + n, 0);
    $("ov-dlq").textContent = total.toLocaleString();
    $("ov-dlq").title = dlq.map(([c, n]) => c + ": " + n).join(", ");
    renderSources(o.sources || []);
  }

  function renderSources(sources) {
    // one row per source; shown once more than today's one source is configured
    $("sources").hidden = sources.length < 2;
    const n = (v) => v.toLocaleString();
    $("sources-table").querySelector("tbody").replaceChildren(...sources.map((src) =>
      el("tr", { "data-source": src.name },
        el("td", {}, src.name), el("td", {}, src.format), el("td", {}, n(src.devices)),
        el("td", {}, n(src.readings)), el("td", {}, n(src.refused)), el("td", {}, n(src.skipped)))));
  }

  // ---- alerts

  function renderAlerts(alerts) {
    const body = $("alerts-table").querySelector("tbody");
    $("alerts-count").textContent = "(" + alerts.length + ")";
    $("alerts-empty").hidden = alerts.length > 0;
    const rows = alerts.map((a) => {
      const l = a.labels;
      const badges = [];
      if (a.acked_by) badges.push(el("span", { class: "badge acked", title: "by " + a.acked_by }, "acked"));
      if (a.silenced_by) badges.push(el("span", { class: "badge suppressed" }, "silenced"));
      else if (a.inhibited_by) badges.push(el("span", { class: "badge suppressed" }, "inhibited"));
      if (!badges.length) badges.push(el("span", { class: "badge" }, "firing"));
      const sensor = [l.site, l.device, l.kind].filter(Boolean).join("/");
      return el("tr", { "data-fingerprint": a.fingerprint, "data-rule": a.rule, "data-sensor": sensor },
        el("td", {}, el("span", { class: "sev " + a.severity }, a.severity)),
        el("td", { title: (a.annotations && a.annotations.summary) || "" }, a.rule),
        el("td", {}, sensor),
        el("td", { class: "num" }, fmtNum(a.value),
          a.threshold !== null ? el("span", { class: "muted" }, " / " + fmtNum(a.threshold)) : null),
        el("td", { title: a.starts_at }, since(a.starts_at)),
        el("td", { class: "state" }, ...badges),
        el("td", { class: "actions" },
          a.acked_by ? null : el("button", {
            type: "button", class: "ack", onclick: () => ack(a), disabled: !state.mutations,
            title: state.mutations ? null : "set [http] token_file to allow this",
            "aria-label": "Acknowledge " + a.rule + " on " + sensor,
          }, "Ack"),
          el("button", {
            type: "button", class: "silence", onclick: () => openSilence(a),
            disabled: !state.mutations,
            title: state.mutations ? null : "set [http] token_file to allow this",
            "aria-label": "Silence " + a.rule + " on " + sensor,
          }, "Silence…")));
    });
    // keep the focused button focused across a refresh (keyboard users)
    const focused = document.activeElement;
    const keep = focused && focused.closest && focused.closest("#alerts-table tr");
    const key = keep && [keep.dataset.fingerprint, focused.className];
    body.replaceChildren(...rows);
    if (key) {
      const again = body.querySelector('tr[data-fingerprint="' + CSS.escape(key[0]) + '"] button.' + key[1]);
      if (again) again.focus();
    }
  }

  // ---- token, ack, silence

  function askToken(message) {
    return new Promise((resolve) => {
      const dlg = $("token-dialog");
      $("token-error").textContent = message || "";
      $("token-input").value = "";
      const done = (token) => {
        dlg.removeEventListener("close", onClose);
        $("token-form").removeEventListener("submit", onSubmit);
        $("token-cancel").removeEventListener("click", onCancel);
        resolve(token);
      };
      const onSubmit = (ev) => {
        ev.preventDefault();
        const token = $("token-input").value.trim();
        if (!token) return;
        sessionStorage.setItem(TOKEN_KEY, token);
        dlg.close();
        done(token);
      };
      const onCancel = () => { dlg.close(); };
      const onClose = () => done(null);
      $("token-form").addEventListener("submit", onSubmit);
      $("token-cancel").addEventListener("click", onCancel);
      dlg.addEventListener("close", onClose);
      dlg.showModal();
      $("token-input").focus();
    });
  }

  // POST with the bearer token; asks for it once per tab, again when refused
  async function mutate(method, path, body) {
    let token = sessionStorage.getItem(TOKEN_KEY) || (await askToken());
    for (let attempt = 0; token && attempt < 3; attempt++) {
      const r = await fetch(path, {
        method,
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
        body: JSON.stringify(body),
      });
      if (r.status !== 401) {
        const data = await r.json().catch(() => ({}));
        if (!r.ok) throw new Error(data.error || "HTTP " + r.status);
        return data;
      }
      sessionStorage.removeItem(TOKEN_KEY);
      token = await askToken("That token was refused.");
    }
    throw new Error("cancelled: no token");
  }

  async function ack(alert) {
    try {
      await mutate("POST", "api/v1/alerts/" + encodeURIComponent(alert.fingerprint) + "/ack",
        { by: "status page" });
      toast("Acknowledged " + alert.rule);
      refreshFast();
    } catch (e) {
      toast("Not acknowledged: " + e.message);
    }
  }

  function openSilence(alert) {
    const l = alert.labels;
    const matchers = ["alertname=" + alert.rule];
    for (const k of ["site", "device", "kind"]) if (l[k]) matchers.push(k + "=" + l[k]);
    $("silence-matchers").value = matchers.join("\n");
    $("silence-comment").value = "";
    $("silence-error").textContent = "";
    $("silence-dialog").showModal();
    $("silence-duration").focus();
  }

  async function submitSilence(ev) {
    ev.preventDefault();
    const matchers = $("silence-matchers").value.split("\n").map((m) => m.trim()).filter(Boolean);
    try {
      const s = await mutate("POST", "api/v1/silences", {
        matchers,
        duration: $("silence-duration").value,
        comment: $("silence-comment").value,
        author: "status page",
      });
      $("silence-dialog").close();
      toast("Silence " + s.id.slice(0, 8) + " until " + new Date(s.ends_at * 1000).toLocaleString());
      refreshFast();
    } catch (e) {
      $("silence-error").textContent = e.message;
    }
  }

  // ---- sensors

  function spark(values) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 120 24");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    const nums = values.filter((v) => v !== null);
    if (!nums.length) return svg;
    let lo = Math.min(...nums), hi = Math.max(...nums);
    if (hi === lo) { hi += 1; lo -= 1; }
    const dx = values.length > 1 ? 120 / (values.length - 1) : 0;
    let pts = [];
    const flush = () => {
      if (pts.length === 1) { // an isolated bucket: a dot, a line needs two points
        const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
        dot.setAttribute("cx", pts[0][0]);
        dot.setAttribute("cy", pts[0][1]);
        dot.setAttribute("r", "1.5");
        svg.append(dot);
      } else if (pts.length) {
        const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
        line.setAttribute("points", pts.map((p) => p.join(",")).join(" "));
        svg.append(line);
      }
      pts = [];
    };
    values.forEach((v, i) => {
      if (v === null) return flush();
      pts.push([(i * dx).toFixed(1), (22 - ((v - lo) / (hi - lo)) * 20).toFixed(1)]);
    });
    flush();
    return svg;
  }

  function filterQuery() {
    const f = new FormData($("filters"));
    const q = new URLSearchParams();
    for (const k of ["site", "kind", "device"]) {
      const v = String(f.get(k) || "").trim();
      if (v) q.set(k, /[*?[]/.test(v) ? v : "*" + v + "*");
    }
    if (f.get("silent")) q.set("silent", "true");
    return q;
  }

  function renderSensors(d) {
    state.total = d.total;
    $("sensors-count").textContent = "(" + d.total.toLocaleString() + ")";
    const body = $("sensors-table").querySelector("tbody");
    const rows = [];
    let site = null;
    for (const s of d.sensors) {
      if (s.site !== site) {
        site = s.site;
        rows.push(el("tr", { class: "site" }, el("th", { colspan: 5, scope: "rowgroup" }, site)));
      }
      const extra = Object.entries(s.labels).map(([k, v]) => k + "=" + v).join(" ");
      rows.push(el("tr", { class: s.silent ? "sensor silent" : "sensor", "data-sensor": s.id },
        el("td", {},
          el("button", { type: "button", class: "link", onclick: () => openDetail(s.id) }, s.device),
          extra ? el("span", { class: "muted" }, " " + extra) : null,
          s.silent ? el("span", { class: "badge silent", title: "no reading for " + fmtAge(s.age_s) }, " silent") : null),
        el("td", {}, s.kind),
        el("td", { class: "num" }, fmtNum(s.value), s.unit ? el("span", { class: "muted" }, " " + s.unit) : null),
        el("td", { class: "num age" }, fmtAge(s.age_s)),
        el("td", {}, spark(s.spark || []))));
    }
    body.replaceChildren(...rows);
    const last = Math.min(d.offset + d.limit, d.total);
    $("page-info").textContent = d.total ? (d.offset + 1) + "–" + last + " of " + d.total : "no sensors";
    $("prev").disabled = d.offset === 0;
    $("next").disabled = last >= d.total;
  }

  // ---- detail plot

  const SEV_COLOR = { critical: "--critical", warning: "--warning", info: "--info" };
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  function renderDetail(h) {
    $("detail-h").textContent = h.site + " / " + h.device + " / " + h.kind;
    $("detail-meta").textContent = "last " + fmtNum(h.value) + (h.unit ? " " + h.unit : "") +
      ", " + fmtAge(h.age_s) + " ago" + (h.silent ? " — silent" : "") +
      "; one point per " + h.step + " s (min, max, last)";
    // the window's two ends as extra x values, empty for the data: threshold lines then
    // cross the whole plot even while the window fills up
    const ends = [h.end - h.window, h.end + h.step];
    const xs = [ends[0], ...h.points.map((p) => p[0]), ends[1]];
    const col = (i) => [null, ...h.points.map((p) => p[i]), null];
    const data = [xs, col(1), col(2), col(3)];
    const fg = cssVar("--fg"), grid = cssVar("--line"), accent = cssVar("--accent");
    const series = [
      {},
      { label: "min", stroke: cssVar("--muted"), width: 1, dash: [2, 3] },
      { label: "max", stroke: cssVar("--muted"), width: 1, dash: [2, 3] },
      { label: "last", stroke: accent, width: 2 },
    ];
    const legend = $("thresholds");
    legend.replaceChildren();
    for (const t of h.thresholds) {
      data.push(xs.map(() => t.value));
      const color = cssVar(SEV_COLOR[t.severity] || "--muted");
      series.push({ label: t.rule + " " + t.op + " " + t.value, stroke: color, width: 1.5, dash: [6, 4], points: { show: false } });
      legend.append(el("li", {}, el("span", { class: "swatch", style: "border-color:" + color }),
        t.rule + ": " + t.op.replace("_", " ") + " " + fmtNum(t.value) + (t.on !== "value" ? " (" + t.on + ")" : "")));
    }
    const box = $("plot");
    const width = Math.max(280, box.clientWidth || 600);
    const axis = { stroke: fg, grid: { stroke: grid }, ticks: { stroke: grid } };
    const opts = {
      width, height: 300, series,
      axes: [axis, { ...axis, label: h.unit || "" }],
      // the whole window, even while it fills up after a start
      scales: { x: { time: true, range: ends } },
    };
    if (state.plot) state.plot.destroy();
    box.replaceChildren();
    state.plot = new uPlot(opts, data, box);
  }

  async function refreshDetail() {
    if (!state.detail) return;
    try {
      const { data, changed } = await getJSON("api/v1/sensors/" +
        state.detail.split("/").map(encodeURIComponent).join("/") + "/history");
      if (changed || !state.plot) renderDetail(data);
    } catch (e) {
      $("detail-meta").textContent = e.message;
    }
  }

  function openDetail(id) {
    state.detail = id;
    $("detail").hidden = false;
    if (state.plot) { state.plot.destroy(); state.plot = null; }
    refreshDetail().then(() => $("detail").focus());
  }

  // ---- polling

  async function refreshFast() {
    try {
      const [ov, al] = await Promise.all([getJSON("api/v1/overview"), getJSON("api/v1/alerts")]);
      const mutations = state.mutations;
      if (ov.changed) renderOverview(ov.data);
      if (al.changed || mutations !== state.mutations) renderAlerts(al.data.alerts);
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      $("status").textContent = "offline: " + e.message;
      $("status").className = "pill offline";
    }
  }

  async function refreshSensors() {
    const q = filterQuery();
    q.set("limit", PAGE_SIZE);
    q.set("offset", state.offset);
    try {
      const { data, changed } = await getJSON("api/v1/sensors?" + q.toString());
      if (changed) renderSensors(data);
    } catch (e) {
      if (!String(e.message).includes("503")) toast(e.message);
    }
  }

  function every(ms, fn) {
    const tick = () => fn().finally(() => setTimeout(tick, document.hidden ? ms * 5 : ms));
    tick();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("silence-form").addEventListener("submit", submitSilence);
    $("silence-cancel").addEventListener("click", () => $("silence-dialog").close());
    $("detail-close").addEventListener("click", () => {
      state.detail = null;
      $("detail").hidden = true;
      if (state.plot) { state.plot.destroy(); state.plot = null; }
    });
    let debounce = 0;
    $("filters").addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { state.offset = 0; refreshSensors(); }, 250);
    });
    $("filters").addEventListener("submit", (ev) => ev.preventDefault());
    $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); refreshSensors(); });
    $("next").addEventListener("click", () => { state.offset += PAGE_SIZE; refreshSensors(); });
    every(POLL_FAST_MS, refreshFast);
    every(POLL_SENSORS_MS, refreshSensors);
    every(POLL_DETAIL_MS, refreshDetail);
  });
})();
