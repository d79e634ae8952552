/* pixelpipe live dashboard: polls dashboard/data and renders it. Vanilla JS, no libraries.
 *
 * Every section tolerates a missing, empty or null part of the document (a worker that has no
 * heartbeats yet, no alerts, `override: null`); keys it does not know are ignored. Text from the
 * document is only ever set with textContent, never parsed as HTML.
 *
 * `?poll=<ms>` changes the polling interval (default 2000 ms; tests use a shorter one).
 */
"use strict";

(function () {
  const DATA_URL = "dashboard/data"; // relative: works behind a path prefix too
  // A worker bound beyond loopback wants a bearer token for its data: open the page as
  // /dashboard#token=... (a fragment is never sent to the server, so it stays out of logs).
  const TOKEN = new URLSearchParams(location.hash.replace(/^#/, "")).get("token");
  const DEFAULT_POLL_MS = 2000;
  const FETCH_TIMEOUT_MS = 5000;
  const STALE_STATUS_S = 60; // a status snapshot older than this is flagged
  const LEVELS = ["full", "reduced_quality", "basic", "cached_only", "emergency"];
  const SEVERITIES = ["critical", "warning", "info"];

  const pollMs = pollInterval(new URLSearchParams(window.location.search).get("poll"));

  const state = {
    doc: null, // the last good document
    okAt: null, // when it arrived (browser clock, ms)
    skewMs: 0, // server clock - browser clock, from the Date header
    failure: null, // why the last fetch failed, or null
    timer: null,
  };

  /* ---------- small helpers ---------- */

  function pollInterval(raw) {
    const n = Number(raw);
    if (!raw || !Number.isFinite(n)) return DEFAULT_POLL_MS;
    return Math.min(60000, Math.max(250, Math.round(n)));
  }

  function isObj(x) { return x !== null && typeof x === "object" && !Array.isArray(x); }
  function obj(x) { return isObj(x) ? x : {}; }
  function arr(x) { return Array.isArray(x) ? x : []; }
  function num(x) { return typeof x === "number" && Number.isFinite(x) ? x : null; }
  function str(x) { return x === null || x === undefined ? "" : String(x); }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach((c) => append(node, c)); return; }
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  function setAttrs(node, attrs) {
    Object.keys(attrs || {}).forEach((k) => {
      const v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "class") node.setAttribute("class", v);
      else node.setAttribute(k, v === true ? "" : String(v));
    });
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  /** An SVG element, in the namespace of the <svg> the page's HTML declares for it. */
  function svgEl(parent, tag, attrs, ...children) {
    const node = document.createElementNS(parent.namespaceURI, tag);
    setAttrs(node, attrs);
    append(node, children);
    parent.appendChild(node);
    return node;
  }

  function byId(id) { return document.getElementById(id); }

  function fill(id, ...children) {
    const host = byId(id);
    if (!host) return;
    host.replaceChildren();
    append(host, children);
  }

  function empty(text, good) { return el("div", { class: good ? "empty good" : "empty" }, text); }

  function fmtNum(v, digits) {
    const n = num(v);
    if (n === null) return "–";
    if (Number.isInteger(n) && digits === undefined) return n.toLocaleString("en-US");
    let d = digits;
    if (d === undefined) d = Math.abs(n) >= 100 ? 0 : Math.abs(n) >= 10 ? 1 : 2;
    return n.toLocaleString("en-US", { minimumFractionDigits: 0, maximumFractionDigits: d });
  }

  function fmtPct(v) {
    const n = num(v);
    return n === null ? "–" : fmtNum(n * 100, Math.abs(n) < 0.1 ? 1 : 0) + "%";
  }

  function fmtDuration(seconds) {
    const s = num(seconds);
    if (s === null) return "–";
    const a = Math.abs(s);
    if (a < 10) return fmtNum(s, 1) + " s";
    if (a < 90) return Math.round(s) + " s";
    if (a < 5400) return Math.round(s / 60) + " min";
    if (a < 172800) return fmtNum(s / 3600, 1) + " h";
    return fmtNum(s / 86400, 1) + " d";
  }

  function parseTime(x) {
    if (num(x) !== null) return x > 1e11 ? x : x * 1000; // ms or epoch seconds
    if (typeof x !== "string" || !x) return null;
    const t = Date.parse(x);
    return Number.isFinite(t) ? t : null;
  }

  function pad(n) { return String(n).padStart(2, "0"); }

  function fmtClock(ms) {
    const d = new Date(ms);
    const hms = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + "Z";
    const today = new Date(serverNow());
    if (d.getUTCFullYear() === today.getUTCFullYear() && d.getUTCMonth() === today.getUTCMonth()
        && d.getUTCDate() === today.getUTCDate()) return hms;
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + hms;
  }

  function serverNow() { return Date.now() + state.skewMs; }

  /** "09:58:00Z (2 min ago)" or "10:10:00Z (in 9 min)"; the full value as a title. */
  function timeCell(x) {
    const t = parseTime(x);
    if (t === null) return el("span", { class: "muted" }, x ? str(x) : "–");
    const delta = (serverNow() - t) / 1000;
    const rel = delta >= 0 ? fmtDuration(delta) + " ago" : "in " + fmtDuration(-delta);
    return el("span", { title: new Date(t).toISOString() }, fmtClock(t), " ",
      el("span", { class: "muted small" }, "(" + rel + ")"));
  }

  function healthClass(h) {
    const n = num(h);
    if (n === null) return "";
    return n >= 0.7 ? "good" : n >= 0.5 ? "fair" : "poor";
  }

  function pressureClass(p) {
    const n = num(p);
    if (n === null) return "";
    return n < 0.5 ? "good" : n < 0.8 ? "fair" : "poor";
  }

  function bar(fraction, cls, inline) {
    const f = num(fraction);
    const width = f === null ? 0 : Math.max(0, Math.min(1, f)) * 100;
    return el("div", { class: inline ? "bar inline" : "bar" },
      el("span", { class: cls || "", style: "width:" + width.toFixed(1) + "%" }));
  }

  function badge(text, cls, attrs) {
    return el("span", Object.assign({ class: "badge " + (cls || "") }, attrs || {}), text);
  }

  function human(name) { return str(name).replace(/_/g, " "); }

  function ranges(parts) {
    const ns = arr(parts).filter((p) => Number.isInteger(p)).sort((a, b) => a - b);
    if (!ns.length) return "–";
    const out = [];
    let start = ns[0];
    let prev = ns[0];
    for (let i = 1; i <= ns.length; i += 1) {
      const n = ns[i];
      if (n === prev + 1) { prev = n; continue; }
      out.push(start === prev ? String(start) : start + "–" + prev);
      start = n;
      prev = n;
    }
    return out.join(", ");
  }

  function table(columns, rows) {
    const head = el("tr", null, columns.map((c) => el("th", { class: c.num ? "num" : null }, c.title)));
    return el("div", { class: "table-wrap" },
      el("table", null, el("thead", null, head), el("tbody", null, rows)));
  }

  function total(value, label, attrs) {
    return el("div", Object.assign({ class: "total" }, attrs || {}),
      el("span", { class: "v" }, value), el("span", { class: "k" }, label));
  }

  /* ---------- sections ---------- */

  function localWorker(status, local) {
    const workers = arr(status.workers).filter(isObj);
    const id = str(local.worker_id);
    return workers.find((w) => id && str(w.id) === id)
      || workers.find((w) => !w.missing) || null;
  }

  function renderLevel(status, local) {
    const levelInfo = obj(status.level);
    const override = isObj(levelInfo.override) ? levelInfo.override : null;
    const me = localWorker(status, local);
    const series = arr(local.series).filter(isObj);
    const last = series.length ? series[series.length - 1] : {};
    const counts = obj(levelInfo.workers);

    let level = str((me && me.level) || last.level || (override && override.level));
    if (!level) {
      const known = Object.keys(counts).filter((k) => num(counts[k]) > 0);
      known.sort((a, b) => num(counts[b]) - num(counts[a]));
      level = known[0] || "";
    }
    const forced = Boolean((me && me.forced) || override);

    const levelEl = byId("level");
    levelEl.className = "level" + (level ? " level-" + level : "");
    levelEl.dataset.level = level;
    levelEl.dataset.forced = forced ? "true" : "false";
    fill("level", level ? human(level) : "unknown", forced ? [" ", badge("forced", "forced", { "data-testid": "level-forced" })] : null);

    const ov = byId("override");
    if (override) {
      ov.hidden = false;
      fill("override",
        el("strong", null, "Override: " + human(override.level || "?")),
        override.until ? [" until ", timeCell(override.until)] : " (no end)",
        override.reason ? [" — ", el("span", { "data-testid": "override-reason" }, str(override.reason))] : null);
    } else {
      ov.hidden = true;
      fill("override");
    }

    const parts = Object.keys(counts).filter((k) => num(counts[k]) !== null)
      .sort((a, b) => rankOf(a) - rankOf(b))
      .map((k) => human(k) + " ×" + fmtNum(counts[k]));
    fill("level-workers", parts.length ? "cluster: " + parts.join(", ") : "");

    const health = num(me && me.health) !== null ? me.health : num(last.health);
    const healthEl = byId("health");
    healthEl.className = "health " + healthClass(health);
    fill("health", health === null ? "–" : fmtNum(health, 2));

    const pressures = obj(me && me.pressures);
    const names = Object.keys(pressures).filter((k) => num(pressures[k]) !== null);
    let worst = null;
    names.forEach((k) => { if (worst === null || pressures[k] > pressures[worst]) worst = k; });
    fill("health-of", me ? "of " + str(me.id) : "", worst && pressures[worst] > 0 ? el("div", null, "worst: " + human(worst)) : null);

    fill("pressures", names.length ? names.map((k) => el("div", { class: "bar-row", "data-pressure": k },
      el("span", { class: "name", title: k }, human(k)),
      bar(pressures[k], pressureClass(pressures[k])),
      el("span", { class: "num" }, fmtNum(pressures[k], 2)))) : empty("no pressures reported"));
  }

  function rankOf(level) {
    const i = LEVELS.indexOf(level);
    return i < 0 ? LEVELS.length : i;
  }

  function renderAlerts(status) {
    const firing = arr(status.alerts).filter(isObj)
      .filter((a) => a.state === undefined || a.state === null || a.state === "firing");
    firing.sort((a, b) => {
      const s = sevRank(a.severity) - sevRank(b.severity);
      return s !== 0 ? s : (parseTime(a.since) || 0) - (parseTime(b.since) || 0);
    });
    const count = byId("alerts-count");
    count.textContent = String(firing.length);
    count.className = "count" + (firing.length ? " hot" : "");
    if (!firing.length) { fill("alerts", empty("No alerts firing", true)); return; }
    fill("alerts", table(
      [{ title: "severity" }, { title: "rule" }, { title: "value", num: true },
        { title: "threshold", num: true }, { title: "since" }, { title: "summary" }],
      firing.map((a) => el("tr", {
        class: "alert-" + str(a.severity), "data-testid": "alert-row",
        "data-rule": str(a.rule), "data-severity": str(a.severity),
      },
      el("td", null, badge(str(a.severity) || "?", str(a.severity))),
      el("td", { class: "mono" }, str(a.rule)),
      el("td", { class: "num" }, fmtNum(a.value)),
      el("td", { class: "num" }, fmtNum(a.threshold)),
      el("td", null, timeCell(a.since)),
      el("td", null, str(a.summary))))));
  }

  function sevRank(s) {
    const i = SEVERITIES.indexOf(s);
    return i < 0 ? SEVERITIES.length : i;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  /** A line chart of `defs` ({key, cls, label, area}) over the points' `t` (epoch seconds),
   * drawn into the page's <svg id="<name>-svg">, with the latest values in #<name>-now. */
  function lineChart(name, points, defs, unit) {
    const host = byId(name + "-chart");
    const svg = byId(name + "-svg");
    const nowEl = byId(name + "-now");
    if (!host || !svg || !nowEl) return;
    svg.replaceChildren();
    const pts = points.filter((p) => num(p.t) !== null).sort((a, b) => a.t - b.t);
    const values = [];
    pts.forEach((p) => defs.forEach((d) => { if (num(p[d.key]) !== null) values.push(p[d.key]); }));
    if (!values.length) {
      svg.style.display = "none";
      nowEl.replaceChildren(empty("no samples yet"));
      return;
    }
    svg.style.display = "";

    const W = Math.max(260, Math.round(host.clientWidth || 520));
    const H = 150;
    const L = 44; const R = 8; const T = 8; const B = 18;
    const t0 = pts[0].t;
    const t1 = pts[pts.length - 1].t;
    const span = Math.max(t1 - t0, 1e-9);
    const yMax = niceMax(Math.max(...values));
    const x = (t) => (pts.length === 1 ? W - R : L + ((t - t0) / span) * (W - L - R));
    const y = (v) => T + (1 - Math.max(0, v) / yMax) * (H - T - B);

    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    [0, 0.5, 1].forEach((f) => {
      const yy = y(yMax * f);
      svgEl(svg, "line", { class: "grid-line", x1: L, x2: W - R, y1: yy, y2: yy });
      svgEl(svg, "text", { class: "axis-text", x: L - 4, y: yy + 3, "text-anchor": "end" }, fmtNum(yMax * f));
    });
    svgEl(svg, "text", { class: "axis-text", x: L, y: H - 4 }, pts.length > 1 ? "−" + fmtDuration(t1 - t0) : "");
    svgEl(svg, "text", { class: "axis-text", x: W - R, y: H - 4, "text-anchor": "end" }, fmtClock(t1 * 1000));

    defs.forEach((d) => {
      // one path per run of points that have a value (a null is a gap, not a zero)
      const runs = [];
      let run = [];
      pts.forEach((p) => {
        if (num(p[d.key]) === null) { if (run.length) runs.push(run); run = []; return; }
        run.push([x(p.t), y(p[d.key])]);
      });
      if (run.length) runs.push(run);
      runs.forEach((r) => {
        const line = r.map((xy, i) => (i ? "L" : "M") + xy[0].toFixed(1) + " " + xy[1].toFixed(1)).join(" ");
        if (d.area && r.length > 1) {
          const base = y(0).toFixed(1);
          svgEl(svg, "path", {
            class: "area area-" + d.cls,
            d: line + " L" + r[r.length - 1][0].toFixed(1) + " " + base + " L" + r[0][0].toFixed(1) + " " + base + " Z",
          });
        }
        if (r.length === 1) {
          svgEl(svg, "circle", { class: "line line-" + d.cls, cx: r[0][0], cy: r[0][1], r: 2.5, "data-series": d.key });
        } else {
          svgEl(svg, "path", { class: "line line-" + d.cls, d: line, "data-series": d.key });
        }
      });
    });

    const last = pts[pts.length - 1];
    nowEl.replaceChildren("now: ");
    append(nowEl, defs.map((d, i) => [i ? ", " : "", (d.label ? d.label + " " : "") + fmtNum(last[d.key]) + " " + unit]));
  }

  function renderCharts(local) {
    const series = arr(local.series).filter(isObj);
    lineChart("throughput", series, [{ key: "completed_per_s", cls: "throughput", area: true }], "/s");
    lineChart("latency", series, [
      { key: "p50_ms", cls: "p50", label: "p50" },
      { key: "p99_ms", cls: "p99", label: "p99" },
    ], "ms");
  }

  function renderLag(status) {
    if (!isObj(status.lag)) { fill("lag", empty("no lag data")); return; }
    const lag = status.lag;
    const parts = arr(lag.partitions).filter(isObj).sort((a, b) => (num(a.partition) || 0) - (num(b.partition) || 0));
    const maxRecords = Math.max(0, ...parts.map((p) => num(p.records) || 0));
    fill("lag",
      el("div", { class: "totals" },
        total(fmtNum(lag.total_records), "records", { "data-testid": "lag-total" }),
        total(fmtDuration(lag.max_seconds), "max behind"),
        lag.group ? el("div", { class: "muted small", style: "align-self:center" }, "group " + str(lag.group)) : null),
      parts.length ? table(
        [{ title: "partition" }, { title: "committed", num: true }, { title: "end", num: true },
          { title: "records" }, { title: "behind", num: true }],
        parts.map((p) => el("tr", { "data-partition": str(p.partition) },
          el("td", { class: "mono" }, str(p.partition)),
          el("td", { class: "num" }, fmtNum(p.committed)),
          el("td", { class: "num" }, fmtNum(p.end)),
          el("td", null, bar(maxRecords ? (num(p.records) || 0) / maxRecords : 0, "neutral", true), el("span", { class: "num" }, fmtNum(p.records))),
          el("td", { class: "num" }, fmtDuration(p.seconds))))) : empty("no partitions reported"));
  }

  function renderRetry(status) {
    if (!isObj(status.retry)) { fill("retry", empty("no retry data")); return; }
    const tiers = arr(status.retry.tiers).filter(isObj);
    const max = Math.max(0, ...tiers.map((t) => num(t.records) || 0));
    fill("retry",
      el("div", { class: "totals" }, total(fmtNum(status.retry.total), "waiting", { "data-testid": "retry-total" })),
      tiers.length ? table([{ title: "tier" }, { title: "records" }],
        tiers.map((t) => el("tr", { "data-tier": str(t.tier) },
          el("td", { class: "mono" }, str(t.tier)),
          el("td", null, bar(max ? (num(t.records) || 0) / max : 0, "neutral", true), el("span", { class: "num" }, fmtNum(t.records))))))
        : empty("no retry tiers reported"));
  }

  function renderDlq(status) {
    if (!isObj(status.dlq)) { fill("dlq", empty("no dead-letter data")); return; }
    const dlq = status.dlq;
    const byCode = obj(dlq.by_code);
    const codes = Object.keys(byCode).filter((k) => num(byCode[k]) !== null).sort((a, b) => byCode[b] - byCode[a]);
    const max = Math.max(0, ...codes.map((k) => byCode[k]));
    fill("dlq",
      el("div", { class: "totals" },
        total(fmtNum(dlq.total), "total", { "data-testid": "dlq-total" }),
        total(fmtNum(dlq.last_hour), "last hour", { "data-testid": "dlq-last-hour" })),
      codes.length ? table([{ title: "code" }, { title: "records" }],
        codes.map((k) => el("tr", { "data-code": k },
          el("td", { class: "mono" }, k),
          el("td", null, bar(max ? byCode[k] / max : 0, "poor", true), el("span", { class: "num" }, fmtNum(byCode[k]))))))
        : empty("no dead letters", true));
  }

  function renderBreakers(status) {
    const open = arr(status.breakers).filter(isObj).filter((b) => b.state !== "closed");
    open.sort((a, b) => str(a.processor).localeCompare(str(b.processor)));
    if (!open.length) { fill("breakers", empty("all breakers closed", true)); return; }
    fill("breakers", table(
      [{ title: "processor" }, { title: "state" }, { title: "error rate", num: true }, { title: "calls", num: true }],
      open.map((b) => el("tr", { "data-testid": "breaker-row", "data-processor": str(b.processor), "data-state": str(b.state) },
        el("td", { class: "mono" }, str(b.processor)),
        el("td", null, badge(human(b.state) || "?", str(b.state))),
        el("td", { class: "num" }, fmtPct(b.error_rate)),
        el("td", { class: "num" }, fmtNum(b.calls))))));
  }

  function renderWorkers(status, local) {
    const workers = arr(status.workers).filter(isObj);
    const missing = workers.filter((w) => w.missing === true).length;
    const count = byId("workers-count");
    count.textContent = workers.length + (missing ? " · " + missing + " missing" : "");
    count.className = "count" + (missing ? " hot" : "");
    if (!workers.length) { fill("workers", empty("no workers reported yet (no heartbeats)")); return; }
    const localId = str(local.worker_id);
    const sorted = workers.slice().sort((a, b) =>
      (b.missing === true) - (a.missing === true) || str(a.id).localeCompare(str(b.id)));
    fill("workers", table(
      [{ title: "worker" }, { title: "host / pid" }, { title: "version" }, { title: "partitions" },
        { title: "level" }, { title: "health" }, { title: "in flight", num: true }, { title: "pool" },
        { title: "retry", num: true }, { title: "refusing" }, { title: "seen" }],
      sorted.map((w) => {
        const isMissing = w.missing === true;
        const pool = obj(w.pool);
        const seen = num(w.age_s) !== null ? fmtDuration(w.age_s) + " ago" : null;
        return el("tr", {
          class: (isMissing ? "worker-missing" : "") + (str(w.id) === localId ? " worker-local" : ""),
          "data-testid": "worker-row", "data-worker-id": str(w.id), "data-missing": isMissing ? "true" : "false",
        },
        el("td", { class: "mono" }, str(w.id) || "?", " ",
          isMissing ? badge("missing", "missing", { "data-testid": "worker-missing" }) : null,
          str(w.id) === localId ? badge("this", "info") : null),
        el("td", null, str(w.host) || "–", w.pid !== undefined && w.pid !== null ? el("span", { class: "muted" }, " / " + str(w.pid)) : null),
        el("td", { class: "muted" }, str(w.version) || "–"),
        el("td", { class: "parts", title: arr(w.partitions).join(", ") }, ranges(w.partitions)),
        el("td", null, w.level ? human(w.level) : "–", w.forced ? [" ", badge("forced", "forced")] : null),
        el("td", null, num(w.health) !== null ? [bar(w.health, healthClass(w.health), true), el("span", { class: "num " + healthClass(w.health) }, fmtNum(w.health, 2))] : "–"),
        el("td", { class: "num" }, fmtNum(w.in_flight)),
        el("td", null, num(pool.size) !== null ? fmtNum(pool.size) + (num(pool.restarts) ? " (" + fmtNum(pool.restarts) + " restarts)" : "") : "–"),
        el("td", { class: "num" }, fmtNum(w.retry_backlog)),
        el("td", null, arr(w.refusing).length ? arr(w.refusing).map((p) => [badge(str(p), "bad"), " "]) : el("span", { class: "muted" }, "–")),
        el("td", { class: isMissing ? "" : "muted" }, seen || (w.seen_at ? timeCell(w.seen_at) : "–")));
      })));
  }

  /* ---------- banner, header, polling ---------- */

  function renderHeader() {
    const doc = obj(state.doc);
    const status = obj(doc.status);
    const local = obj(doc.local);
    fill("local-worker", str(local.worker_id) || "–");
    const at = parseTime(status.at);
    fill("status-at", at === null ? "–" : timeCell(status.at));
    fill("updated", state.okAt === null ? "never" : fmtDuration((Date.now() - state.okAt) / 1000) + " ago");
    const conn = byId("conn");
    const cstate = state.failure ? "error" : state.okAt === null ? "waiting" : "ok";
    conn.dataset.state = cstate;
    conn.className = "conn conn-" + (cstate === "waiting" ? "wait" : cstate);
    conn.textContent = cstate === "error" ? "offline" : cstate === "ok" ? "live" : "connecting";
  }

  function renderBanner() {
    const banner = byId("banner");
    let text = null;
    let kind = "error";
    if (state.failure) {
      text = "Cannot reach " + DATA_URL + " (" + state.failure + "). ";
      text += state.okAt === null ? "No data yet."
        : "Data is stale: last update " + fmtDuration((Date.now() - state.okAt) / 1000) + " ago.";
    } else if (state.doc) {
      const at = parseTime(obj(obj(state.doc).status).at);
      const age = at === null ? null : (serverNow() - at) / 1000;
      if (age !== null && age > STALE_STATUS_S) {
        kind = "stale";
        text = "Data is stale: the cluster status is " + fmtDuration(age) + " old (its source may be stuck).";
      }
    }
    document.body.classList.toggle("is-stale", Boolean(state.failure));
    if (text === null) {
      banner.hidden = true;
      banner.textContent = "";
      delete banner.dataset.kind;
      return;
    }
    banner.hidden = false;
    banner.className = "banner" + (kind === "stale" ? " stale" : "");
    banner.dataset.kind = kind;
    banner.textContent = text;
  }

  /** Runs one section's renderer; an error is shown in the section (never thrown), so a bad
   * part of the document cannot break the rest of the page. */
  function section(id, fn) {
    const host = byId(id);
    let err = null;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    if (!host) return;
    const old = host.querySelector(":scope > .section-error");
    if (old) old.remove();
    if (err !== null) {
      host.prepend(el("div", { class: "section-error", "data-testid": "section-error" },
        "cannot render: " + (err && err.message ? err.message : String(err))));
    }
  }

  function render() {
    const doc = obj(state.doc);
    const status = obj(doc.status);
    const local = obj(doc.local);
    section("level-card", () => renderLevel(status, local));
    section("alerts", () => renderAlerts(status));
    section("throughput-chart", () => renderCharts(local));
    section("lag", () => renderLag(status));
    section("retry", () => renderRetry(status));
    section("dlq", () => renderDlq(status));
    section("breakers", () => renderBreakers(status));
    section("workers", () => renderWorkers(status, local));
    refresh();
  }

  function refresh() {
    section("banner", renderBanner);
    section("header", renderHeader);
  }

  async function fetchDocument() {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), FETCH_TIMEOUT_MS);
    let resp;
    try {
      const headers = { Accept: "application/json" };
      if (TOKEN) headers.Authorization = "Bearer " + TOKEN;
      resp = await fetch(DATA_URL, { cache: "no-store", signal: ctrl.signal, headers: headers });
    } catch (err) {
      throw new Error(err && err.name === "AbortError" ? "timed out" : "network error");
    } finally {
      clearTimeout(timer);
    }
    let body = null;
    try { body = await resp.json(); } catch (err) { body = undefined; }
    if (!resp.ok) {
      if (resp.status === 401) throw new Error("HTTP 401: open this page as /dashboard#token=<PIXELPIPE_WEB_TOKEN>");
      const why = isObj(body) && body.error ? ": " + str(body.error) : "";
      throw new Error("HTTP " + resp.status + why);
    }
    if (!isObj(body)) throw new Error(body === undefined ? "not JSON" : "not a JSON object");
    const date = Date.parse(resp.headers.get("Date") || "");
    return { body: body, serverMs: Number.isFinite(date) ? date : null };
  }

  async function poll() {
    state.timer = null;
    let got = null;
    try {
      got = await fetchDocument();
    } catch (err) {
      state.failure = err && err.message ? err.message : String(err);
    }
    if (got) {
      state.doc = got.body;
      state.okAt = Date.now();
      state.failure = null;
      // the Date header has 1 s resolution: only trust it for a skew beyond that
      if (got.serverMs !== null) {
        const skew = got.serverMs - Date.now();
        state.skewMs = Math.abs(skew) > 2000 ? skew : 0;
      }
      render();
    } else {
      refresh();
    }
    schedule(pollMs);
  }

  function schedule(ms) {
    if (state.timer !== null) clearTimeout(state.timer);
    state.timer = setTimeout(poll, ms);
  }

  function start() {
    fill("poll-interval", fmtNum(pollMs / 1000));
    render();
    setInterval(refresh, 1000);
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      if (resizeTimer !== null) clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (state.doc) section("throughput-chart", () => renderCharts(obj(state.doc.local))); }, 150);
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.timer !== null) schedule(0);
    });
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
