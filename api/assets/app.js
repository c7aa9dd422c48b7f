// Stevedore dashboard: a client of the public API (see api/src/dashboard.rs).
// Every value from the server reaches the page through textContent or a
// validated attribute, never as HTML.

const RULES = JSON.parse(document.getElementById("rules").textContent);
const PAGE_SIZE = 25;
const MAX_LOG_LINES = 5000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const NAME = /^[a-z0-9_-]+$/;

const $ = (id) => document.getElementById(id);

/** Builds an element: h("a", {href: "#/"}, "text", child, …). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// --- API -------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** One API call; JSON in and out. A 401 sends the page back to the login. */
async function api(method, path, body) {
  // X-Requested-With: a 401 then challenges "Session", not "Basic", so the
  // browser shows no password prompt (see api/src/auth.rs).
  const init = {
    method,
    headers: { Accept: "application/json", "X-Requested-With": "stevedore-dashboard" },
    credentials: "same-origin",
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "the server cannot be reached");
  }
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    /* not JSON */
  }
  if (!resp.ok) {
    if (resp.status === 401 && path !== "/api/v1/login") showLogin();
    throw new ApiError(resp.status, (json && json.error) || `${resp.status} ${resp.statusText}`);
  }
  return json;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// --- state ------------------------------------------------------------------

let me = null; // {user, namespaces}
let types = []; // [{name, subsystem, verbs, creatable}]
let view = null; // the page on screen (see View)
let views = 0;

/**
 * One rendering of a page: its event listeners and what it must close when
 * the user moves on. A page that awaits checks `alive` after each await, so
 * a slow page never draws over, or listens for, the one that replaced it.
 */
class View {
  constructor() {
    this.id = ++views;
    this.alive = true;
    this.listeners = new Set();
    this.cleanups = [];
  }
  /** Listens for events (null: the stream reconnected; refetch). */
  on(fn) {
    this.listeners.add(fn);
  }
  /** Runs fn when the view goes (at once if it is already gone). */
  own(fn) {
    if (this.alive) this.cleanups.push(fn);
    else fn();
  }
  close() {
    this.alive = false;
    this.listeners.clear();
    for (const c of this.cleanups) c();
    this.cleanups = [];
  }
}

function dispatch(msg) {
  if (view) for (const fn of view.listeners) fn(msg);
}

function toast(msg) {
  const t = $("toast");
  t.textContent = msg;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.textContent = ""), 5000);
}

/** Runs fn at most once per `ms`, the last call winning. */
function debounce(fn, ms) {
  let timer = null;
  const d = () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      fn();
    }, ms);
  };
  d.cancel = () => clearTimeout(timer);
  return d;
}

/** Runs fn now, then at most once per `ms` while calls keep coming. */
function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  const t = () => {
    const wait = last + ms - Date.now();
    if (wait <= 0) {
      last = Date.now();
      fn();
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn();
      }, wait);
    }
  };
  t.cancel = () => clearTimeout(timer);
  return t;
}

// --- the events stream -------------------------------------------------------

/** A websocket on this origin whose JSON frames go to onFrame. */
function socket(path, onFrame) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}${path}`);
  ws.onmessage = (m) => {
    let msg;
    try {
      msg = JSON.parse(m.data);
    } catch (_) {
      return;
    }
    onFrame(msg);
  };
  return ws;
}

const events = {
  ws: null,
  retry: 500,
  timer: null,
  open() {
    this.close();
    const ws = socket("/api/audit/v1/events", (msg) => {
      if (this.ws !== ws) return;
      if (msg.type === "auth" && msg.data) {
        this.retry = 500;
        setLive(true);
        // Whatever happened while we were away: the view refetches.
        dispatch(null);
        return;
      }
      dispatch(msg);
      // Progress changes no count.
      if (!isProgress(msg)) header.changed();
    });
    this.ws = ws;
    ws.onclose = () => {
      if (this.ws !== ws) return;
      setLive(false);
      this.timer = setTimeout(() => this.open(), this.retry);
      this.retry = Math.min(this.retry * 2, 15000);
    };
  },
  close() {
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
    setLive(false);
  },
};

function setLive(on) {
  const el = $("live");
  el.textContent = on ? "live" : "offline";
  el.classList.toggle("on", on);
}

// --- formatting ---------------------------------------------------------------

function stateBadge(state) {
  return h("span", { class: "state", "data-state": state || "" }, state || "—");
}

function when(s) {
  if (!s) return "";
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString();
}

/** `/api/app/v1/[ns/]service/<uuid>/` → its dashboard link, or null. */
function objectHref(uri) {
  const m = /^\/api\/([a-z0-9_-]+)\/v1\/(?:[A-Za-z0-9_.-]+\/)?([a-z0-9_-]+)\/([0-9a-f-]{36})\/$/.exec(uri || "");
  if (!m || m[1] === "audit" || !UUID.test(m[3])) return null;
  return `#/object/${m[2]}/${m[3]}`;
}

function objectLink(uri) {
  const href = objectHref(uri);
  return href ? h("a", { href, class: "mono" }, uri) : h("span", { class: "mono" }, uri || "");
}

function typeLabel(t) {
  return t.charAt(0).toUpperCase() + t.slice(1) + "s";
}

// --- header: counts by state and completions per minute ------------------------

const header = {
  timer: null,
  start() {
    this.stop();
    this.refresh();
    this.timer = setInterval(() => this.refresh(), 15000);
    // Events move the counts (at most every 2 s) and the chart (every 10 s).
    const counts = throttle(() => this.counts(), 2000);
    const chart = throttle(() => this.chart(), 10000);
    this.changed = () => {
      counts();
      chart();
    };
    this.changed.cancel = () => {
      counts.cancel();
      chart.cancel();
    };
  },
  stop() {
    clearInterval(this.timer);
    if (this.changed.cancel) this.changed.cancel();
    this.changed = () => {};
  },
  changed() {},
  refresh() {
    this.counts();
    this.chart();
  },
  async counts() {
    try {
      const counts = await Promise.all(
        RULES.states.map((s) => api("GET", `/api/audit/v1/action/${query({ state: s, limit: 1 })}`)),
      );
      $("counts").replaceChildren(
        ...RULES.states.map((s, i) =>
          h("a", { class: "count", href: `#/actions?state=${encodeURIComponent(s)}`, "data-state": s },
            `${s}: ${counts[i].meta.total_count}`),
        ),
      );
    } catch (e) {
      if (e.status !== 401) $("counts").replaceChildren(h("span", { class: "error" }, e.message));
    }
  },
  async chart() {
    const minute = 60000;
    const now = Date.now();
    try {
      const bins = await Promise.all(
        Array.from({ length: 15 }, (_, i) => {
          const from = new Date(now - (15 - i) * minute).toISOString();
          const to = new Date(now - (14 - i) * minute - 1).toISOString();
          return api("GET", `/api/audit/v1/action/${query({ end_date__gte: from, end_date__lte: to, limit: 1 })}`)
            .then((r) => r.meta.total_count);
        }),
      );
      drawChart(bins);
    } catch (_) {
      /* the counts show the error */
    }
  },
};

function drawChart(bins) {
  const svg = $("chart");
  const max = Math.max(1, ...bins);
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren(
    ...bins.map((n, i) => {
      const r = document.createElementNS(ns, "rect");
      const height = (n / max) * 34;
      r.setAttribute("x", String(i * 10 + 1));
      r.setAttribute("y", String(36 - height));
      r.setAttribute("width", "8");
      r.setAttribute("height", String(height));
      const t = document.createElementNS(ns, "title");
      t.textContent = `${n} completed ${15 - i} min ago`;
      r.append(t);
      return r;
    }),
  );
  svg.setAttribute("aria-label", `completed per minute: ${bins.join(", ")}; now ${bins[bins.length - 1]}/min`);
}

// --- progress: an action's `progress` (0–100) and `progress_message` ------------

/** Whether an events frame is a live progress report (no seq, not a change of state). */
function isProgress(e) {
  return !!e && e.type === "action" && e.action === "progress";
}

/** A progress bar (hidden while `progress` is null); `compact` for table cells. */
function progressBar(progress, message, compact) {
  const bar = h("div", { class: compact ? "progress compact" : "progress", role: "progressbar",
    "aria-valuemin": "0", "aria-valuemax": "100", "aria-label": "Progress" },
    h("div", { class: "progress-fill" }), h("span", { class: "progress-text" }));
  setProgress(bar, progress, message);
  return bar;
}

/** Shows `progress` and `message` on a bar made by progressBar. */
function setProgress(bar, progress, message) {
  bar.hidden = progress === null || progress === undefined;
  if (bar.hidden) return;
  const p = Math.max(0, Math.min(100, Number(progress) || 0));
  const text = message ? `${p}% · ${message}` : `${p}%`;
  bar.setAttribute("aria-valuenow", String(p));
  bar.setAttribute("aria-valuetext", text);
  bar.querySelector(".progress-fill").style.width = `${p}%`;
  bar.querySelector(".progress-text").textContent = bar.classList.contains("compact") ? `${p}%` : text;
}

// --- queue places of Pending actions -------------------------------------------

/** A Pending action's place in its object's queue, for a table cell ("#2"), or null. */
function queueBadge(a) {
  if (a.state !== "Pending" || a.queue_position == null) return null;
  return h("span", { class: "queue", title: `queued #${a.queue_position}` }, `#${a.queue_position}`);
}

/** "Queued #2, waiting for <link>" for a Pending action's page, or null. */
function queueLine(a) {
  if (a.state !== "Pending" || a.queue_position == null) return null;
  const ahead = ((a.waiting_for || "").match(/\/action\/([0-9a-f-]{36})\/$/) || [])[1];
  return h("p", { class: "queue-line" }, `Queued #${a.queue_position}`,
    ahead && UUID.test(ahead) ? [", waiting for ", h("a", { href: `#/action/${ahead}` }, ahead.slice(0, 8))] : null);
}

/**
 * Whether event `e` may have moved the queue `objects` (object URIs of
 * Pending actions shown) wait in: any action event on one of them (a
 * queue moves with one event, for the first action still waiting).
 */
function movesQueueOf(e, objects) {
  return e.type === "action" && Array.isArray(e.parents) && objects.has(e.parents[0]);
}

/**
 * GETs `path` for a view's table: the answer, or null when the view is gone
 * or the request failed (the error is then shown in `wrap`).
 */
async function getInto(v, wrap, path) {
  try {
    const page = await api("GET", path);
    return v.alive ? page : null;
  } catch (e) {
    if (v.alive) wrap.replaceChildren(h("p", { class: "error", role: "alert" }, e.message));
    return null;
  }
}

// --- the actions table (shared by the actions page and the object page) ---------

/** A live table of actions for `filter`; `pageLink(offset)` makes pager hrefs. */
function actionsTable(v, filter, offset, pageLink) {
  const wrap = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  const box = h("div", {}, wrap, pager);
  let shown = new Set();
  let queues = new Set();
  let first = true;
  // One load at a time; an event during a load makes one more afterwards, so
  // a change that lands between the server's snapshot and the redraw is not lost.
  let loading = false;
  let again = false;
  // Progress reports that arrive while a load is in flight may be newer than
  // its snapshot (or name a row it is about to draw): the load applies them
  // to the rows it draws, so a bar never stays behind its last report.
  let reportsDuringLoad = new Map();

  async function load() {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      await loadOnce();
    } finally {
      loading = false;
      if (again && v.alive) {
        again = false;
        load();
      }
    }
  }

  async function loadOnce() {
    reportsDuringLoad = new Map();
    const page = await getInto(v, wrap, `/api/audit/v1/action/${query({ ...filter, limit: PAGE_SIZE, offset })}`);
    if (!page) return;
    const rows = page.objects.map((a) => {
      const tr = h("tr", { "data-uuid": a.uuid, class: !first && !shown.has(a.uuid) ? "fresh" : null },
        h("td", {}, h("a", { href: `#/action/${a.uuid}` }, a.action || a.uuid)),
        h("td", {}, objectLink(a.object)),
        h("td", { class: "nowrap" }, stateBadge(a.state), queueBadge(a),
          RULES.final.includes(a.state) ? null : progressBar(a.progress, a.progress_message, true)),
        h("td", { class: "nowrap" }, when(a.start_date)),
        h("td", { class: "nowrap opt" }, when(a.end_date)),
        h("td", { class: "nowrap opt" }, a.user),
        h("td", { class: "mono nowrap opt" }, a.uuid.slice(0, 8)),
      );
      return tr;
    });
    shown = new Set(page.objects.map((a) => a.uuid));
    queues = new Set(page.objects.filter((a) => a.state === "Pending").map((a) => a.object));
    first = false;
    wrap.replaceChildren(
      rows.length
        ? h("table", { "aria-label": "Actions" },
            h("thead", {}, h("tr", {}, ...["Action", "Object", "State", "Started"].map((c) => h("th", { scope: "col" }, c)),
              ...["Ended", "User", "UUID"].map((c) => h("th", { scope: "col", class: "opt" }, c)))),
            h("tbody", {}, rows))
        : h("p", { class: "empty" }, "No actions match."),
    );
    for (const e of reportsDuringLoad.values()) showReport(e);
    reportsDuringLoad = new Map();
    const m = page.meta;
    const next = m.next ? new URLSearchParams(m.next.split("?")[1] || "").get("offset") : null;
    const prev = m.previous ? new URLSearchParams(m.previous.split("?")[1] || "").get("offset") || "0" : null;
    pager.replaceChildren(
      ...[h("span", {}, m.total_count ? `${m.offset + 1}–${m.offset + page.objects.length} of ${m.total_count}` : "0 of 0"),
      prev !== null ? h("a", { href: pageLink(Number(prev)), rel: "prev" }, "← Newer") : null,
      next !== null ? h("a", { href: pageLink(Number(next)), rel: "next" }, "Older →") : null].filter(Boolean),
    );
  }

  function showReport(e) {
    const bar = shown.has(e.uuid) && wrap.querySelector(`tr[data-uuid="${e.uuid}"] .progress`);
    if (bar) setProgress(bar, e.progress, e.progress_message);
  }

  const refresh = debounce(load, 300);
  v.on((e) => {
    // Progress moves the bar of a shown row in place; it changes no listing.
    if (isProgress(e)) {
      if (loading) reportsDuringLoad.set(e.uuid, e);
      showReport(e);
      return;
    }
    // Reconnected (null), a shown action changed, or (page one) any action
    // changed: with a filter, an update can move one into the page.
    if (!e || (e.type === "action" && (shown.has(e.uuid) || offset === 0 || loading)) || movesQueueOf(e, queues)) refresh();
  });
  v.own(() => refresh.cancel());
  load();
  return box;
}

// --- pages -----------------------------------------------------------------------

/** A datetime-local value (the browser's time zone) as ISO 8601, or "". */
function isoDate(value, endOfMinute) {
  const d = value ? new Date(value) : null;
  if (!d || isNaN(d)) return "";
  return new Date(d.getTime() + (endOfMinute ? 59999 : 0)).toISOString();
}

function actionsPage(v, q) {
  const offset = Math.max(0, Number(q.get("offset")) || 0);
  const filter = {
    state: q.get("state") || "",
    object_type: q.get("object_type") || "",
    object: q.get("object") || "",
    start_date__gte: isoDate(q.get("from"), false),
    start_date__lte: isoDate(q.get("to"), true),
  };
  const stateSel = h("select", { name: "state", id: "f-state" }, h("option", { value: "" }, "Any"),
    RULES.states.map((s) => h("option", { value: s, selected: s === filter.state }, s)));
  const typeSel = h("select", { name: "object_type", id: "f-type" }, h("option", { value: "" }, "Any"),
    types.map((t) => h("option", { value: t.name, selected: t.name === filter.object_type }, t.name)));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter actions", onsubmit: (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const p = new URLSearchParams();
    for (const [k, v] of data.entries()) if (v) p.set(k, v);
    location.hash = `#/actions${p.toString() ? "?" + p : ""}`;
  } },
    h("label", { for: "f-state" }, "State", stateSel),
    h("label", { for: "f-type" }, "Object type", typeSel),
    h("label", { for: "f-object" }, "Object (URI or uuid)",
      h("input", { name: "object", id: "f-object", value: filter.object, placeholder: "/api/app/v1/service/…/" })),
    h("label", { for: "f-from" }, "Started from", h("input", { type: "datetime-local", name: "from", id: "f-from", value: q.get("from") || "" })),
    h("label", { for: "f-to" }, "Started to", h("input", { type: "datetime-local", name: "to", id: "f-to", value: q.get("to") || "" })),
    h("button", { type: "submit" }, "Apply"),
    h("a", { href: "#/actions" }, "Clear"),
  );
  const link = (o) => {
    const p = new URLSearchParams(q);
    p.set("offset", String(o));
    return `#/actions?${p}`;
  };
  return [h("h1", {}, "Actions"), form, actionsTable(v, filter, offset, link)];
}

async function actionPage(v, uuid) {
  if (!UUID.test(uuid)) return [h("h1", {}, "Not found"), h("p", {}, "That is not an action uuid.")];
  const title = h("h1", { "data-uuid": uuid }, "Action");
  const cancel = h("button", { type: "button", class: "danger", id: "cancel", disabled: true }, "Cancel");
  const retry = h("button", { type: "button", id: "retry", disabled: true }, "Retry");
  const fields = h("dl", { class: "fields", "aria-label": "Fields" });
  // role=log without live announcements: a tail of thousands of lines must not flood a screen reader.
  const logBox = h("div", { class: "logs", id: "logs", tabindex: "0", role: "log", "aria-live": "off", "aria-label": "Log lines" });
  const follow = h("input", { type: "checkbox", id: "follow", checked: true });
  const logState = h("span", { id: "log-state" }, "connecting…");
  const progress = progressBar(null, "", false);
  progress.id = "progress";
  const queue = h("div", { id: "queue" });
  let action = null;

  function render(a) {
    action = a;
    title.replaceChildren(`${a.action} `, stateBadge(a.state));
    setProgress(progress, a.progress, a.progress_message);
    queue.replaceChildren(...[queueLine(a)].filter(Boolean));
    // The API's own answers (the state rule; for retry also "the object
    // exists and the operation is configured").
    cancel.disabled = !a.can_be_canceled;
    retry.disabled = !a.can_be_retried;
    fields.replaceChildren(
      ...Object.entries(a).flatMap(([k, val]) => [
        h("dt", {}, k),
        h("dd", {}, k === "object" ? objectLink(val)
          : typeof val === "object" && val !== null ? h("code", {}, JSON.stringify(val)) : String(val ?? "")),
      ]),
    );
  }
  let reloads = 0;
  // The newest live progress report, and how many have come: a fetch that
  // overlaps a report may hold an older value, so the report wins.
  let lastReport = null;
  let reports = 0;
  function showReport(r) {
    lastReport = r;
    reports += 1;
    setProgress(progress, r.progress, r.progress_message);
  }
  /** Fetches and shows the action; the newest of overlapping fetches wins. */
  async function reload() {
    const mine = ++reloads;
    const seen = reports;
    try {
      const a = await api("GET", `/api/audit/v1/action/${uuid}/`);
      if (mine === reloads && v.alive) {
        render(a);
        if (reports !== seen && !RULES.final.includes(a.state)) {
          setProgress(progress, lastReport.progress, lastReport.progress_message);
        }
      }
      return a;
    } catch (e) {
      if (v.alive) toast(e.message);
      return null;
    }
  }
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await api("POST", `/api/audit/v1/action/${uuid}/cancel/`);
      toast("Cancel requested");
    } catch (e) {
      toast(e.message);
    }
    reload();
  });
  retry.addEventListener("click", async () => {
    retry.disabled = true;
    try {
      const a = await api("POST", `/api/audit/v1/action/${uuid}/retry/`);
      toast(`Retried as ${a.uuid.slice(0, 8)}`);
      location.hash = `#/action/${a.uuid}`;
    } catch (e) {
      toast(e.message);
      reload();
    }
  });
  try {
    render(await api("GET", `/api/audit/v1/action/${uuid}/`));
  } catch (e) {
    return [h("h1", {}, "Action"), h("p", { class: "error", role: "alert" }, e.message)];
  }
  if (!v.alive) return null;
  const refresh = debounce(reload, 200);
  v.on((e) => {
    if (isProgress(e)) {
      if (e.uuid === uuid) showReport(e);
      return;
    }
    const waitsOn = new Set(action && action.state === "Pending" ? [action.object] : []);
    if (!e || (e.type === "action" && e.uuid === uuid) || movesQueueOf(e, waitsOn)) refresh();
  });
  v.own(() => refresh.cancel());

  // Logs: the websocket sends the stored tail, then follows until the action
  // ends. A drop before the end reconnects (with backoff) and replays the tail.
  let ws = null;
  let lines = 0;
  let delay = 1000;
  let timer = null;
  let scrolling = false;
  function scrollSoon() {
    if (scrolling) return;
    scrolling = true;
    requestAnimationFrame(() => {
      scrolling = false;
      if (follow.checked) logBox.scrollTop = logBox.scrollHeight;
    });
  }
  function connect() {
    if (!v.alive) return;
    logBox.replaceChildren();
    lines = 0;
    ws = socket(`/api/audit/v1/action/${uuid}/logs/`, (msg) => {
      if (msg.type === "log") {
        logBox.append(h("div", { class: `line ${msg.streamType === "stderr" ? "stderr" : ""}` }, msg.log));
        if (++lines > MAX_LOG_LINES) logBox.firstChild.remove();
        scrollSoon();
      } else if (msg.type === "progress") {
        showReport(msg);
      } else if (msg.type === "error") {
        logBox.append(h("div", { class: "note" }, msg.error || "stream error"));
      }
    });
    ws.onopen = () => {
      logState.textContent = "following";
      delay = 1000;
    };
    ws.onclose = async () => {
      if (!v.alive) return;
      // Ended, or dropped? Ask the API rather than trust a stale state.
      const a = (await reload()) || action;
      if (!v.alive) return;
      if (RULES.final.includes(a.state)) {
        logState.textContent = "ended";
        if (lines === 0) logBox.append(h("div", { class: "note" }, "No log lines."));
        return;
      }
      logState.textContent = "reconnecting…";
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }
  connect();
  v.own(() => {
    clearTimeout(timer);
    if (ws) ws.close();
  });

  return [
    title,
    queue,
    h("div", { class: "toolbar" }, cancel, retry),
    progress,
    h("h2", {}, "Logs"),
    h("div", { class: "logbar" }, h("label", { for: "follow" }, follow, " Follow"), logState),
    logBox,
    h("h2", {}, "Fields"),
    fields,
  ];
}

function typeOf(name) {
  return types.find((t) => t.name === name);
}

function objectsPage(v, typeName, q) {
  const t = typeOf(typeName);
  if (!t) return [h("h1", {}, "Not found"), h("p", {}, `No object type ${typeName}.`)];
  const offset = Math.max(0, Number(q.get("offset")) || 0);
  const base = `/api/${t.subsystem}/v1/${t.name}/`;
  const wrap = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  let shown = new Set();

  async function load() {
    const page = await getInto(v, wrap, `${base}${query({ limit: PAGE_SIZE, offset })}`);
    if (!page) return;
    shown = new Set(page.objects.map((o) => o.uuid));
    wrap.replaceChildren(
      page.objects.length
        ? h("table", { "aria-label": typeLabel(t.name) },
            h("thead", {}, h("tr", {}, ["Name", "State", "Parents"].map((c) => h("th", { scope: "col" }, c)),
              ["Created", "UUID"].map((c) => h("th", { scope: "col", class: "opt" }, c)))),
            h("tbody", {}, page.objects.map((o) =>
              h("tr", { "data-uuid": o.uuid },
                h("td", {}, h("a", { href: `#/object/${t.name}/${o.uuid}` }, o.name || o.uuid)),
                h("td", {}, stateBadge(o.state)),
                h("td", {}, (o.parents || []).map((p) => h("div", {}, objectLink(p)))),
                h("td", { class: "nowrap opt" }, when(o.created_at || o.created)),
                h("td", { class: "mono nowrap opt" }, o.uuid.slice(0, 8)),
              ))))
        : h("p", { class: "empty" }, `No ${t.name}s yet.`),
    );
    const m = page.meta;
    pager.replaceChildren(
      ...[h("span", {}, m.total_count ? `${m.offset + 1}–${m.offset + page.objects.length} of ${m.total_count}` : "0 of 0"),
      m.previous ? h("a", { href: `#/objects/${t.name}?offset=${Math.max(0, offset - PAGE_SIZE)}`, rel: "prev" }, "← Newer") : null,
      m.next ? h("a", { href: `#/objects/${t.name}?offset=${offset + PAGE_SIZE}`, rel: "next" }, "Older →") : null].filter(Boolean),
    );
  }
  const refresh = debounce(load, 300);
  v.on((e) => {
    if (!e || (e.type === t.name && (shown.has(e.uuid) || offset === 0))) refresh();
  });
  v.own(() => refresh.cancel());
  load();

  const name = h("input", { name: "name", id: "new-name", required: true, maxlength: 200 });
  const create = t.creatable
    ? h("form", { class: "filters", "aria-label": `Create a ${t.name}`, onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const o = await api("POST", base, { name: name.value });
          toast(`Created ${t.name} ${o.name || o.uuid}`);
          name.value = "";
          load();
        } catch (e) {
          toast(e.message);
        }
      } },
      h("label", { for: "new-name" }, `New ${t.name} name`, name),
      h("button", { type: "submit" }, `Create ${t.name}`))
    : null;
  return [h("h1", {}, typeLabel(t.name)), create, wrap, pager];
}

async function objectPage(v, typeName, uuid) {
  const t = typeOf(typeName);
  if (!t || !UUID.test(uuid)) return [h("h1", {}, "Not found")];
  let obj;
  try {
    obj = await api("GET", `/api/${t.subsystem}/v1/${t.name}/${uuid}/`);
  } catch (e) {
    return [h("h1", {}, typeLabel(t.name)), h("p", { class: "error", role: "alert" }, e.message)];
  }
  if (!v.alive) return null;
  const verbs = t.verbs.map((v) =>
    h("button", { type: "button", class: "secondary", "data-verb": v, onclick: async () => {
      try {
        const a = await api("POST", `/api/${t.subsystem}/v1/${t.name}/${uuid}/${v}/`);
        toast(`${a.action} submitted`);
      } catch (e) {
        toast(e.message);
      }
    } }, v),
  );
  const fields = h("dl", { class: "fields", "aria-label": "Fields" },
    Object.entries(obj).flatMap(([k, val]) => [
      h("dt", {}, k),
      h("dd", {}, k === "parents" && Array.isArray(val) ? val.map((p) => h("div", {}, objectLink(p)))
        : k === "resource_uri" ? h("span", { class: "mono" }, val)
        : typeof val === "object" && val !== null ? h("code", {}, JSON.stringify(val)) : String(val ?? "")),
    ]));
  const filter = { object: obj.resource_uri, include_related: "true" };
  const link = (o) => `#/object/${t.name}/${uuid}?offset=${o}`;
  const offset = Math.max(0, Number(new URLSearchParams(location.hash.split("?")[1] || "").get("offset")) || 0);
  return [
    h("h1", {}, `${t.name} ${obj.name || uuid} `, stateBadge(obj.state)),
    verbs.length ? h("div", { class: "toolbar", role: "group", "aria-label": "Operations" }, verbs) : null,
    fields,
    h("h2", {}, "Actions on it and its relatives"),
    actionsTable(v, filter, offset, link),
  ];
}

// --- webhooks ------------------------------------------------------------------------

const WEBHOOKS = "/api/v1/webhook/";

function webhookFilters(w) {
  const f = [];
  if (w.object_type) f.push(`type=${w.object_type}`);
  if (w.action) f.push(`action=${w.action}`);
  return f.join(" ") || "any";
}

/** The webhooks of the caller's namespaces: add, list, remove. */
function webhooksPage(v) {
  const wrap = h("div", { class: "table-wrap" });
  const secret = h("p", { class: "secret", id: "webhook-secret", role: "status", hidden: true });

  async function load() {
    const page = await getInto(v, wrap, `${WEBHOOKS}${query({ limit: 0 })}`);
    if (!page) return;
    wrap.replaceChildren(
      page.objects.length
        ? h("table", { "aria-label": "Webhooks" },
            h("thead", {}, h("tr", {}, ["URL", "States", "Filters", "Namespace", "Created", ""].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, page.objects.map((w) =>
              h("tr", { "data-uuid": w.uuid },
                h("td", { class: "mono" }, h("a", { href: `#/webhook/${w.uuid}` }, w.url)),
                h("td", {}, w.states.join(", ")),
                h("td", {}, webhookFilters(w)),
                h("td", {}, w.namespace),
                h("td", { class: "nowrap" }, when(w.created_at)),
                h("td", {}, h("button", { type: "button", class: "secondary", "data-remove": w.uuid, onclick: async () => {
                  try {
                    await api("DELETE", `${WEBHOOKS}${w.uuid}/`);
                    toast(`Removed webhook ${w.url}`);
                    load();
                  } catch (e) {
                    toast(e.message);
                  }
                } }, "Remove")),
              ))))
        : h("p", { class: "empty" }, "No webhooks yet."),
    );
  }
  load();

  const url = h("input", { name: "url", id: "new-webhook-url", type: "url", required: true, placeholder: "https://…", maxlength: 2048 });
  const states = h("fieldset", { class: "states", id: "new-webhook-states" }, h("legend", {}, "States"),
    RULES.states.map((s) => h("label", {}, h("input", { type: "checkbox", value: s, checked: s === "Success" || s === "Failed" }), ` ${s}`)));
  const type = h("select", { name: "object_type", id: "new-webhook-type" },
    h("option", { value: "" }, "any type"), types.map((t) => h("option", { value: t.name }, t.name)));
  const verb = h("input", { name: "action", id: "new-webhook-action", placeholder: "any verb", maxlength: 64 });
  const form = h("form", { class: "filters", "aria-label": "Add a webhook", onsubmit: async (ev) => {
      ev.preventDefault();
      const body = {
        url: url.value,
        states: [...states.querySelectorAll("input:checked")].map((c) => c.value),
      };
      if (type.value) body.object_type = type.value;
      if (verb.value) body.action = verb.value;
      try {
        const w = await api("POST", WEBHOOKS, body);
        secret.textContent = `Signing secret for ${w.url} (shown only now): ${w.secret}`;
        secret.hidden = false;
        url.value = "";
        load();
      } catch (e) {
        toast(e.message);
      }
    } },
    h("label", { for: "new-webhook-url" }, "URL", url),
    states,
    h("label", { for: "new-webhook-type" }, "Object type", type),
    h("label", { for: "new-webhook-action" }, "Verb", verb),
    h("button", { type: "submit" }, "Add webhook"));
  return [h("h1", {}, "Webhooks"), form, secret, wrap];
}

/** One webhook and its delivery log, refreshed as actions change. */
async function webhookPage(v, uuid) {
  if (!UUID.test(uuid)) return [h("h1", {}, "Not found")];
  let w;
  try {
    w = await api("GET", `${WEBHOOKS}${uuid}/`);
  } catch (e) {
    return [h("h1", {}, "Webhook"), h("p", { class: "error", role: "alert" }, e.message)];
  }
  if (!v.alive) return null;
  const wrap = h("div", { class: "table-wrap" });
  async function load() {
    const page = await getInto(v, wrap, `${WEBHOOKS}${uuid}/delivery/${query({ limit: PAGE_SIZE })}`);
    if (!page) return;
    wrap.replaceChildren(
      page.objects.length
        ? h("table", { "aria-label": "Deliveries" },
            h("thead", {}, h("tr", {}, ["Action", "State", "Delivery", "Attempts", "Last result", "Next attempt", "Delivered"].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, page.objects.map((d) =>
              h("tr", { "data-delivery": d.uuid, "data-status": d.status },
                h("td", { class: "mono" }, h("a", { href: `#/action/${d.action_uuid}` }, d.action_uuid.slice(0, 8))),
                h("td", {}, stateBadge(d.state)),
                h("td", {}, h("span", { class: `delivery ${d.status}` }, d.status)),
                h("td", {}, String(d.attempts)),
                h("td", {}, d.last_error && d.status !== "delivered" ? d.last_error : d.last_status_code ? `HTTP ${d.last_status_code}` : "–"),
                h("td", { class: "nowrap" }, d.next_attempt_at ? when(d.next_attempt_at) : "–"),
                h("td", { class: "nowrap" }, d.delivered_at ? when(d.delivered_at) : "–"),
              ))))
        : h("p", { class: "empty" }, "No deliveries yet."),
    );
  }
  const refresh = debounce(load, 500);
  v.on(() => refresh());
  const timer = setInterval(load, 2000);
  v.own(() => {
    refresh.cancel();
    clearInterval(timer);
  });
  load();
  const fields = h("dl", { class: "fields", "aria-label": "Fields" },
    [["url", w.url], ["states", w.states.join(", ")], ["filters", webhookFilters(w)], ["namespace", w.namespace], ["created", when(w.created_at)]]
      .flatMap(([k, val]) => [h("dt", {}, k), h("dd", {}, val)]));
  return [h("h1", {}, "Webhook"), fields, h("h2", {}, "Deliveries"), wrap];
}

// --- workers (admins only) ----------------------------------------------------------

const WORKERS_REFRESH_MS = 3000;

/** The live workers of the registry, refreshed every few seconds. */
function workersPage(v) {
  const wrap = h("div", { class: "table-wrap" });
  const summary = h("p", { class: "hint", id: "workers-summary" });
  async function load() {
    const page = await getInto(v, wrap, `/api/v1/worker/${query({ limit: 1000 })}`);
    if (!page) return;
    const busy = page.objects.reduce((n, w) => n + w.running_actions.length, 0);
    const slots = page.objects.reduce((n, w) => n + w.concurrency, 0);
    summary.textContent = `${page.meta.total_count} live worker${page.meta.total_count === 1 ? "" : "s"}, ${busy} of ${slots} slots busy`;
    wrap.replaceChildren(
      page.objects.length
        ? h("table", { "aria-label": "Workers" },
            h("thead", {}, h("tr", {}, ["Worker", "Host", "PID", "Version", "Started", "Busy", "Running", "Last heartbeat"]
              .map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, page.objects.map((w) =>
              h("tr", { "data-worker": w.id },
                h("td", { class: "mono" }, w.id),
                h("td", {}, w.host),
                h("td", { class: "nowrap" }, String(w.pid)),
                h("td", { class: "nowrap" }, w.version),
                h("td", { class: "nowrap" }, when(w.started)),
                h("td", { class: "nowrap" }, `${w.running_actions.length} / ${w.concurrency}`),
                h("td", {}, w.running_actions.filter((u) => UUID.test(u)).map((u) =>
                  h("div", {}, h("a", { href: `#/action/${u}`, class: "mono" }, u.slice(0, 8))))),
                h("td", { class: "nowrap" }, when(w.last_heartbeat)),
              ))))
        : h("p", { class: "empty" }, "No live workers."),
    );
  }
  const timer = setInterval(load, WORKERS_REFRESH_MS);
  v.own(() => clearInterval(timer));
  load();
  return [h("h1", {}, "Workers"), summary, wrap];
}

/** The nav entries only admins get. */
function adminNav() {
  return me && me.admin ? [h("a", { href: "#/workers", "data-page": "workers" }, "Workers")] : [];
}

// --- routing -----------------------------------------------------------------------

/** Whether a hash is a page of ours (the skip link's `#view` is not). */
function isRoute(hash) {
  return hash === "" || hash === "#" || hash.startsWith("#/");
}

async function route() {
  if (!me || !isRoute(location.hash)) return;
  if (view) view.close();
  const v = new View();
  view = v;
  const [path, qs] = (location.hash.replace(/^#/, "") || "/actions").split("?");
  const q = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean);
  let content;
  let current = "actions";
  if (parts[0] === "action" && parts[1]) content = await actionPage(v, parts[1]);
  else if (parts[0] === "objects" && parts[1] && NAME.test(parts[1])) {
    content = objectsPage(v, parts[1], q);
    current = parts[1];
  } else if (parts[0] === "object" && parts[1] && NAME.test(parts[1]) && parts[2]) {
    content = await objectPage(v, parts[1], parts[2]);
    current = parts[1];
  } else if (parts[0] === "workers" && me.admin) {
    content = workersPage(v);
    current = "workers";
  } else if (parts[0] === "webhooks") {
    content = webhooksPage(v);
    current = "webhooks";
  } else if (parts[0] === "webhook" && parts[1]) {
    content = await webhookPage(v, parts[1]);
    current = "webhooks";
  } else content = actionsPage(v, q);
  if (!v.alive) return; // a newer navigation (or a logout) won
  for (const a of $("nav").querySelectorAll("a")) {
    if (a.dataset.page === current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  $("page").replaceChildren(...[content].flat().filter(Boolean));
  document.title = `${$("page").querySelector("h1")?.textContent || "Stevedore"} · Stevedore`;
}

/** Object types and their verbs, from the API's own OpenAPI document. */
async function loadTypes() {
  const doc = await api("GET", "/openapi.json");
  const found = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    const m = /^\/api\/([a-z0-9_-]+)\/v1\/([a-z0-9_-]+)\/$/.exec(path);
    if (!m || m[1] === "audit" || !item.get) continue;
    const verbItem = doc.paths[`/api/${m[1]}/v1/${m[2]}/{uuid}/{verb}/`];
    const verbParam = verbItem?.post?.parameters?.find((p) => p.name === "verb");
    found.push({
      subsystem: m[1],
      name: m[2],
      creatable: !!item.post,
      verbs: (verbParam?.schema?.enum || []).filter((v) => NAME.test(v)),
    });
  }
  types = found;
}

// --- login ---------------------------------------------------------------------------

function showLogin() {
  me = null;
  events.close();
  header.stop();
  if (view) view.close();
  view = null;
  $("top").hidden = true;
  $("page").replaceChildren();
  $("login").hidden = false;
  $("login-user").focus();
}

async function start(who) {
  if (me) return;
  me = who;
  $("login").hidden = true;
  $("top").hidden = false;
  $("who").textContent = me.user;
  try {
    await loadTypes();
  } catch (e) {
    toast(`object types unavailable: ${e.message}`);
  }
  $("nav").replaceChildren(
    h("a", { href: "#/actions", "data-page": "actions" }, "Actions"),
    ...types.map((t) => h("a", { href: `#/objects/${t.name}`, "data-page": t.name }, typeLabel(t.name))),
    h("a", { href: "#/webhooks", "data-page": "webhooks" }, "Webhooks"),
    ...adminNav(),
  );
  events.open();
  header.start();
  if (!isRoute(location.hash)) history.replaceState(null, "", "#/actions");
  await route();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const button = $("login-form").querySelector("button");
  if (button.disabled) return;
  button.disabled = true;
  $("login-error").textContent = "";
  try {
    const who = await api("POST", "/api/v1/login", { user: $("login-user").value, apikey: $("login-key").value });
    $("login-key").value = "";
    await start(who);
  } catch (e) {
    $("login-error").textContent = e.status === 401 ? "Wrong user or API key." : e.message;
  } finally {
    button.disabled = false;
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await api("POST", "/api/v1/logout");
  } finally {
    showLogin();
  }
});

window.addEventListener("hashchange", () => {
  if (isRoute(location.hash)) route().then(() => $("view").focus({ preventScroll: true }));
});

(async () => {
  try {
    await start(await api("GET", "/api/v1/auth/"));
  } catch (_) {
    showLogin();
  }
})();
