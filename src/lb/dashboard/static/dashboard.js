// lb dashboard: polls the admin status once a second, turns counters into rates, draws a small
// uPlot chart per backend and calls the admin API for drain / disable / enable.
(() => {
  "use strict";

  const POLL_MS = 1000;
  const WINDOW = 120; // seconds the charts show
  const HISTORY = WINDOW + 5; // points kept per backend (one a second)
  const RATE_WINDOW = 5; // samples averaged for the req/s and error figures
  const STALE_S = 5; // a worker whose heartbeat is this far behind the freshest one is stuck
  const TOKEN_KEY = "lb-admin-token";
  const ACTIONS = { drain: "draining", disable: "disabled", enable: "active" };
  const COLORS = { req: "#1f6feb", err: "#cf222e", p50: "#2da44e", p95: "#bf8700", p99: "#8250df" };

  const api_base = new URL(".", location.href); // "/_lb/" for "/_lb/dashboard"
  const $ = (id) => document.getElementById(id);
  const pools = new Map(); // pool name -> {el, grid, meta, backends: Map(id -> backend view)}
  let asking = false;
  let polling = null;

  // -- token -----------------------------------------------------------------------------------
  // Given once as ?token=..., then kept in this tab's sessionStorage and sent as a bearer header;
  // it is taken out of the address bar at once so it does not stay in the history.
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function askToken() {
    const dialog = $("token-dialog");
    $("token-button").hidden = false;
    if (asking || dialog.open) return;
    asking = true;
    $("token-input").value = "";
    dialog.showModal();
  }

  $("token-dialog").addEventListener("close", () => {
    const dialog = $("token-dialog");
    if (dialog.returnValue === "save") {
      const value = $("token-input").value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
      asking = false;
      pollNow();
    }
  });
  $("token-button").addEventListener("click", () => {
    asking = false;
    askToken();
  });

  function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const t = token();
    if (t) headers.set("Authorization", "Bearer " + t);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 5000);
    return fetch(new URL(path, api_base), {
      ...options,
      headers,
      cache: "no-store",
      signal: abort.signal,
    }).finally(() => clearTimeout(timer));
  }

  // -- formatting ------------------------------------------------------------------------------
  function fixed(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }
  const ms = (v) => (v === null || v === undefined ? "–" : fixed(v) + " ms");
  const clock = (d) => d.toLocaleTimeString([], { hour12: false });

  function setConn(state, text) {
    const conn = $("conn");
    conn.dataset.state = state;
    $("conn-text").textContent = text;
  }

  // -- charts ----------------------------------------------------------------------------------
  function axis(values) {
    return {
      stroke: "#656d76",
      font: "10px system-ui, sans-serif",
      grid: { stroke: "#eef1f4", width: 1 },
      ticks: { show: false },
      gap: 2,
      ...values,
    };
  }

  function tick(v) {
    if (v === 0) return "0";
    if (Math.abs(v) >= 1000) return (v / 1000).toFixed(v % 1000 ? 1 : 0) + "k";
    return Number.isInteger(v) ? String(v) : v.toFixed(v < 1 ? 2 : 1);
  }
  const hhmmss = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });

  function chart(el, lines) {
    const opts = {
      width: Math.max(el.clientWidth, 200),
      height: 104,
      legend: { show: false },
      cursor: { points: { show: false }, drag: { x: false, y: false } },
      scales: {
        // The history so far (at least ten seconds), then a rolling window ending now.
        x: {
          time: true,
          range: (u, min, max) => [Math.min(Math.max(min ?? max, max - WINDOW), max - 10), max],
        },
        y: { range: (u, min, max) => [0, Math.max(max || 0, 0.001) * 1.2] },
      },
      axes: [
        axis({ size: 24, space: 80, values: (u, ticks) => ticks.map(hhmmss) }),
        axis({ size: 40, space: 22, values: (u, ticks) => ticks.map(tick) }),
      ],
      series: [
        {},
        ...lines.map(([color, fill]) => ({
          stroke: color,
          width: 1.5,
          fill: fill ? color + "18" : undefined,
          points: { show: false },
        })),
      ],
    };
    return new uPlot(opts, [[], ...lines.map(() => [])], el);
  }

  window.addEventListener("resize", () => {
    for (const pool of pools.values()) {
      for (const view of pool.backends.values()) {
        for (const [name, plot] of Object.entries(view.charts)) {
          plot.setSize({ width: Math.max(view.els[name].clientWidth, 200), height: 104 });
        }
      }
    }
  });

  // -- views -----------------------------------------------------------------------------------
  function poolView(name) {
    let view = pools.get(name);
    if (view) return view;
    const el = document.createElement("section");
    el.className = "pool";
    el.dataset.pool = name;
    el.innerHTML = '<div class="pool-head"><h2></h2><span class="meta"></span></div><div class="grid"></div>';
    el.querySelector("h2").textContent = name;
    $("pools").append(el);
    view = { el, grid: el.querySelector(".grid"), meta: el.querySelector(".meta"), backends: new Map() };
    pools.set(name, view);
    return view;
  }

  function backendView(pool, poolName, b) {
    const card = $("backend-card").content.firstElementChild.cloneNode(true);
    card.dataset.backend = poolName + "/" + b.id;
    const els = {};
    for (const el of card.querySelectorAll("[data-role]")) els[el.dataset.role] = el;
    els.id.textContent = b.id;
    els.url.textContent = b.url;
    els.url.title = b.url;
    // config (the file), api (POST .../backends) or dns (discovery)
    const origin = b.origin || "config";
    els.origin.textContent = origin;
    card.dataset.origin = origin;
    pool.grid.append(card);
    const view = {
      pool: poolName,
      id: b.id,
      url: b.url,
      card,
      els,
      last: null,
      hist: { t: [], rps: [], eps: [], p50: [], p95: [], p99: [], dreq: [], dfail: [], dt: [] },
      charts: {},
    };
    view.charts.traffic = chart(els.traffic, [[COLORS.req, true], [COLORS.err, false]]);
    view.charts.latency = chart(els.latency, [[COLORS.p50], [COLORS.p95], [COLORS.p99]]);
    for (const button of card.querySelectorAll("[data-action]")) {
      button.addEventListener("click", () => act(view, button.dataset.action));
    }
    pool.backends.set(b.id, view);
    return view;
  }

  function dropBackend(pool, view) {
    for (const plot of Object.values(view.charts)) plot.destroy();
    view.card.remove();
    pool.backends.delete(view.id);
  }

  function adminOf(state) {
    return state === "draining" || state === "disabled" ? state : "active";
  }

  function showState(view, state) {
    // Right after a button press, another worker may answer a poll before the change has
    // reached it (within half a second): keep showing the change rather than flicker back.
    const pending = view.pending;
    if (pending && Date.now() < pending.until && adminOf(state) !== adminOf(pending.state)) {
      state = pending.state;
    }
    view.state = state;
    view.card.className = "card state-" + state;
    view.els.state.textContent = state;
    const admin = adminOf(state);
    for (const button of view.card.querySelectorAll("[data-action]")) {
      button.hidden = ACTIONS[button.dataset.action] === admin;
    }
  }

  function push(hist, point) {
    for (const [key, value] of Object.entries(point)) {
      hist[key].push(value);
      if (hist[key].length > HISTORY) hist[key].shift();
    }
  }

  function windowSum(list) {
    let sum = 0;
    let n = 0;
    for (let i = list.length - 1; i >= 0 && n < RATE_WINDOW; i--) {
      if (list[i] !== null) {
        sum += list[i];
        n++;
      }
    }
    return n ? sum : null;
  }

  function updateBackend(view, b, now) {
    // Rates come from counter deltas between polls. A counter that went backwards (a restart, or
    // an answer from a worker whose own counters differ) gives no point rather than a wrong one.
    const last = view.last;
    let dreq = null;
    let dfail = null;
    let dt = null;
    if (last) {
      const dr = b.requests_total - last.requests;
      const df = b.failures_total - last.failures;
      if (now > last.t && dr >= 0 && df >= 0) {
        dreq = dr;
        dfail = df;
        dt = now - last.t;
      }
    }
    view.last = { t: now, requests: b.requests_total, failures: b.failures_total };
    // Latencies are 0 until a backend has served a request: no data yet, not a fast backend.
    const lat = b.requests_total > 0 ? b.latency_ms || {} : {};
    push(view.hist, {
      t: now,
      rps: dt ? dreq / dt : null,
      eps: dt ? dfail / dt : null,
      p50: lat.p50 ?? null,
      p95: lat.p95 ?? null,
      p99: lat.p99 ?? null,
      dreq,
      dfail,
      dt,
    });
    const h = view.hist;
    view.card.dataset.points = String(h.t.length);
    view.charts.traffic.setData([h.t, h.rps, h.eps]);
    view.charts.latency.setData([h.t, h.p50, h.p95, h.p99]);

    const seconds = windowSum(h.dt);
    const requests = windowSum(h.dreq);
    const failures = windowSum(h.dfail);
    const rps = seconds ? requests / seconds : null;
    view.rps = rps || 0;
    view.els.rps.textContent = fixed(rps);
    const errors = requests ? (100 * failures) / requests : null;
    view.els.errors.textContent = errors === null ? "–" : errors.toFixed(1) + "%";
    view.els.errors.classList.toggle("bad", errors !== null && errors > 0);
    view.els.active.textContent = b.active_requests;
    view.els.weight.textContent = Number.isInteger(b.weight) ? b.weight : fixed(b.weight);
    view.els.total.textContent = b.requests_total.toLocaleString();
    view.els.connections.textContent = b.connections ?? "–";
    view.els.pending.textContent = b.pending ?? "–";
    view.els.p50.textContent = ms(lat.p50);
    view.els.p95.textContent = ms(lat.p95);
    view.els.p99.textContent = ms(lat.p99);
    showState(view, b.state);
  }

  // A pool's circuit breakers, per backend, as the meta line shows them ("" without limits).
  function limitsText(limits) {
    if (!limits) return "";
    const parts = [
      ["connections", limits.max_connections],
      ["pending", limits.max_pending],
      ["requests/connection", limits.max_requests_per_connection],
    ].filter(([, value]) => value != null);
    return parts.length ? " · limits " + parts.map(([k, v]) => `${k} ≤ ${v}`).join(", ") : "";
  }

  function render(doc) {
    const now = Date.now() / 1000;
    const seen = new Set();
    let backends = 0;
    let healthy = 0;
    let rps = 0;
    $("empty")?.remove();
    for (const [name, pool] of Object.entries(doc.pools || {})) {
      seen.add(name);
      const view = poolView(name);
      const ids = new Set();
      let ok = 0;
      for (const b of pool.backends) {
        ids.add(b.id);
        let bv = view.backends.get(b.id);
        if (bv && bv.url !== b.url) {
          dropBackend(view, bv); // same id, another server: a new backend
          bv = null;
        }
        bv = bv || backendView(view, name, b);
        updateBackend(bv, b, now);
        // A full queue means the next request is refused (503): show it as trouble.
        const max = pool.limits?.max_pending;
        bv.els.pending.classList.toggle("bad", max != null && b.pending >= max && b.pending > 0);
        if (b.state === "healthy") ok++;
        rps += bv.rps;
      }
      for (const [id, bv] of view.backends) if (!ids.has(id)) dropBackend(view, bv);
      backends += pool.backends.length;
      healthy += ok;
      view.el.classList.toggle("degraded", ok < pool.backends.length);
      view.meta.innerHTML = "";
      const count = document.createElement("b");
      count.textContent = `${ok} of ${pool.backends.length}`;
      view.meta.append(count, ` healthy · strategy ${pool.strategy}${limitsText(pool.limits)}`);
    }
    for (const [name, view] of pools) {
      if (seen.has(name)) continue;
      for (const bv of [...view.backends.values()]) dropBackend(view, bv);
      view.el.remove();
      pools.delete(name);
    }
    $("totals").innerHTML =
      `<b>${seen.size}</b> pool${seen.size === 1 ? "" : "s"} · ` +
      `<b>${healthy}/${backends}</b> backends healthy · <b>${fixed(rps)}</b> req/s`;
  }

  function age(seconds) {
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  // Every worker's pid, age and heartbeat, as the status reports them; ages are taken from the
  // freshest heartbeat (the balancer's clock), not this browser's.
  function renderWorkers(workers) {
    const section = $("workers");
    if (!Array.isArray(workers) || workers.length === 0) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    const now = Math.max(...workers.map((w) => w.last_seen));
    const body = $("workers-body");
    body.replaceChildren();
    let stale = 0;
    for (const w of workers) {
      const row = document.createElement("tr");
      const behind = now - w.last_seen;
      row.dataset.pid = w.pid;
      if (behind > STALE_S) {
        row.classList.add("stale");
        stale++;
      }
      for (const text of [String(w.pid), age(now - w.started), behind < 1.5 ? "now" : `${age(behind)} ago`]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      body.append(row);
    }
    $("workers-meta").textContent =
      `${workers.length} live` + (stale ? ` · ${stale} not seen for over ${STALE_S} s` : "");
  }

  // -- polling and actions ---------------------------------------------------------------------
  async function poll() {
    let res;
    try {
      res = await api("status");
    } catch (err) {
      setConn("down", "cannot reach the balancer");
      return;
    }
    if (res.status === 401) {
      setConn("down", "admin token needed");
      askToken();
      return;
    }
    if (!res.ok) {
      setConn("down", `status answered HTTP ${res.status}`);
      return;
    }
    const doc = await res.json();
    render(doc);
    renderWorkers(doc.workers);
    setConn("up", "live · " + clock(new Date()));
  }

  function pollNow() {
    clearTimeout(polling);
    poll().finally(() => {
      polling = setTimeout(pollNow, POLL_MS);
    });
  }

  async function act(view, action) {
    const buttons = view.card.querySelectorAll("[data-action]");
    buttons.forEach((b) => (b.disabled = true));
    view.els.note.textContent = "";
    try {
      const path = `pools/${encodeURIComponent(view.pool)}/backends/${encodeURIComponent(view.id)}`;
      const res = await api(path, {
        method: "PATCH",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ state: ACTIONS[action] }),
      });
      if (res.status === 401) {
        askToken();
        throw new Error("admin token needed");
      }
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.detail || `HTTP ${res.status}`);
      view.pending = { state: body.state, until: Date.now() + 2000 };
      showState(view, body.state);
      const applied = body.applied;
      if (applied && applied.workers < applied.of) {
        const late = (applied.not_applied || []).map((w) => w.pid).join(", ");
        view.els.note.textContent = `applied in ${applied.workers} of ${applied.of} workers (late: ${late})`;
      }
    } catch (err) {
      view.els.note.textContent = err.message;
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  if (token()) $("token-button").hidden = false;
  pollNow();
})();
