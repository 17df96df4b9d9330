// Herald operator console: a client of the admin REST API (/api/admin/, scope admin; docs/console.md).
// Strict CSP: no inline script or style. Data is written with textContent only, never as HTML.
"use strict";

const TOKEN_KEY = "herald-console-token";
const REFRESH_MS = 2000;
const PRIORITIES = ["high", "medium", "low"];
// The channels come from the registry (GET /api/admin/channels, read when the console opens):
// a new channel shows in the charts and the search form without editing this page.
const COLORS = {
  high: "#d92d20", medium: "#dc8a00", low: "#7a869a",
  websocket: "#3056d3", email: "#12875a", apns: "#8e44ad", webhook: "#0b8a8a",
  p50: "#12875a", p90: "#dc8a00", p99: "#d92d20", dead: "#d92d20",
};
const LAG_COLORS = ["#3056d3", "#12875a", "#dc8a00", "#8e44ad", "#d92d20", "#0b8a8a"];
const channelColor = (name, i) => COLORS[name] || LAG_COLORS[i % LAG_COLORS.length];
const HISTORY = 150; // client-side samples kept for the latency and lag charts (5 minutes at 2 s)

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  channels: [], // channel names in canonical order, from the registry
  open: false, // the token passed the check and the console is shown
  tab: null,
  timer: null,
  inFlight: false,
  refreshes: 0,
  bucketSeconds: 10,
  charts: {},
  latency: [[], [], [], []], // x, p50, p90, p99
  lag: { x: [], roles: new Map() }, // role/group -> values aligned with x
  search: { params: null, cursors: [], next: null },
  dl: { params: null, before: [], next: null, selected: new Map() },
};

// ---------- helpers ----------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = v;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function td(value, cls) {
  return el("td", { class: cls }, value === null || value === undefined || value === "" ? "–" : value);
}

function shortTime(t) {
  if (!t) return "–";
  return String(t).replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, "");
}

function fmtNumber(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en");
}

function fmtMs(n) {
  if (n === null || n === undefined) return "–";
  return n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${Math.round(n)} ms`;
}

function epoch(t) {
  return Date.parse(t) / 1000;
}

function jwtClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch (err) {
    return null;
  }
}

function badge(kind, text) {
  return el("span", { class: `badge ${kind}` }, text ?? kind);
}

class ApiError extends Error {
  constructor(status, title, detail, body) {
    super(detail ? `${status} ${title}: ${detail}` : `${status} ${title}`);
    this.status = status;
    this.body = body;
  }
}

// Every call: Bearer token; 401/403 end the session and show the server's reason on the login panel.
async function api(path, options = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${state.token}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "Network error", `${path} could not be reached (${err.message})`, null);
  }
  let body = null;
  const text = await resp.text();
  if (text) {
    try {
      body = JSON.parse(text);
    } catch (err) {
      body = null;
    }
  }
  if (!resp.ok) {
    const title = (body && body.title) || resp.statusText || "Error";
    let detail = (body && body.detail) || "";
    if (body && Array.isArray(body.errors)) detail += ` (${body.errors.map((e) => JSON.stringify(e)).join("; ")})`;
    const error = new ApiError(resp.status, title, detail, body);
    if (resp.status === 401 || resp.status === 403) {
      logout(resp.status === 403 ? `${error.message} — this console needs a token with the admin scope.` : error.message);
    }
    throw error;
  }
  return body;
}

function showError(error) {
  const banner = $("error");
  if (!error) {
    banner.hidden = true;
    banner.textContent = "";
    return;
  }
  if (error.status === 401 || error.status === 403) return; // already back on the login panel
  banner.textContent = error.message || String(error);
  banner.hidden = false;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

function formParams(form) {
  const params = {};
  for (const [key, value] of new FormData(form).entries()) {
    const v = String(value).trim();
    if (!v) continue;
    // datetime-local has no zone: the labels say UTC, so the value is sent as UTC.
    params[key] = form.elements[key].type === "datetime-local" ? `${v.length === 16 ? `${v}:00` : v}Z` : v;
  }
  return params;
}

// ---------- session ----------

// The token is tried on a small admin call first: one the API refuses is never stored.
async function login(token) {
  state.token = token;
  $("login-error").textContent = "";
  $("login-submit").disabled = true;
  try {
    await api("/api/admin/bulks?limit=1");
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) {
      state.token = null;
      $("login-error").textContent = `Could not check the token: ${err.message}`;
    }
    return;
  } finally {
    $("login-submit").disabled = false;
  }
  try {
    await loadChannels();
  } catch (err) {
    state.token = null;
    $("login-error").textContent = `Could not read the channel list: ${err.message}`;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.open = true;
  const claims = jwtClaims(token);
  $("operator").textContent = claims && claims.sub ? `operator: ${claims.sub}` : "";
  $("logout").hidden = false;
  $("login-panel").hidden = true;
  $("console").hidden = false;
  $("token").value = "";
  route();
}

// The registry's channels: chart series and the search form's channel choice.
async function loadChannels() {
  const body = await api("/api/admin/channels");
  state.channels = body.results.map((c) => c.name);
  const select = $("search-channel");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "any"), ...state.channels.map((c) => el("option", {}, c)));
  select.value = state.channels.includes(chosen) ? chosen : "";
}

function logout(message) {
  state.token = null;
  state.open = false;
  sessionStorage.removeItem(TOKEN_KEY);
  stopRefresh();
  $("operator").textContent = "";
  $("logout").hidden = true;
  $("console").hidden = true;
  $("login-panel").hidden = false;
  $("login-error").textContent = message || "";
  $("token").value = "";
}

async function devLogin() {
  $("login-error").textContent = "";
  let resp;
  try {
    resp = await fetch("/api/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user_id: "ops", scope: "admin" }),
    });
  } catch (err) {
    $("login-error").textContent = `Network error: ${err.message}`;
    return;
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    $("login-error").textContent =
      resp.status === 404 ? "No dev login on this server (herald dev only)." : `${resp.status} ${body.title}: ${body.detail || ""}`;
    return;
  }
  login(body.token);
}

// ---------- tabs and routing (#tab or #tab/id) ----------

function route() {
  if (!state.open) return;
  let hash = "";
  try {
    hash = decodeURIComponent(location.hash.slice(1));
  } catch (err) {
    hash = "";
  }
  const [tab, ...rest] = hash.split("/");
  const name = ["overview", "notifications", "users", "deadletters", "bulks"].includes(tab) ? tab : "overview";
  const arg = rest.join("/") || null;
  showError(null);
  for (const button of document.querySelectorAll("[data-tab]")) {
    const active = button.dataset.tab === name;
    button.setAttribute("aria-selected", active ? "true" : "false");
    button.classList.toggle("active", active);
  }
  for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== `tab-${name}`;
  state.tab = name;
  if (name === "overview") startRefresh();
  else stopRefresh();
  if (name === "notifications") {
    (arg ? showDetail(arg) : showResults()).catch((err) => {
      showError(err);
      if (arg) showResultsView(); // the search stays usable below the error
    });
  }
  if (name === "users") {
    if (arg) {
      $("user-id").value = arg;
      showUser(arg).catch(showError);
    }
  }
  if (name === "deadletters" && !state.dl.params) loadDeadLetters(formParams($("dl-form")), null).catch(showError);
  if (name === "bulks") {
    if (!arg) $("bulk-detail").hidden = true;
    loadBulks()
      .then(() => (arg ? showBulk(arg) : null))
      .catch(showError);
  }
}

function go(hash) {
  if (location.hash === `#${hash}`) route();
  else location.hash = hash;
}

// ---------- overview ----------

function startRefresh() {
  stopRefresh();
  refreshOverview();
  state.timer = setInterval(refreshOverview, REFRESH_MS);
}

function stopRefresh() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

function chartWidth(id) {
  return Math.max(280, $(id).clientWidth || 420);
}

// Time ticks as 24-hour UTC clock times (seconds only when the ticks need them).
function utcTicks(u, splits) {
  const seconds = splits.some((ts) => ts % 60 !== 0);
  return splits.map((ts) => new Date(ts * 1000).toISOString().slice(11, seconds ? 19 : 16));
}

function drawChart(id, series, data, opts = {}) {
  const existing = state.charts[id];
  const labels = series.map((s) => s.label).join("|");
  if (existing && existing.labels === labels) {
    existing.plot.setData(data);
    return;
  }
  if (existing) existing.plot.destroy();
  const plot = new uPlot(
    {
      width: chartWidth(id),
      height: 190,
      legend: { live: false },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"), // axes in UTC, like every time on the page
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max * 1.1, opts.minMax ?? 1)] } },
      axes: [{ values: utcTicks, space: 60 }, { size: 56 }],
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, points: { show: false } }))],
    },
    data,
    $(id),
  );
  state.charts[id] = { plot, labels };
}

function perSecond(counts, seconds) {
  return (counts || []).map((n) => n / seconds);
}

function renderOverview(ov) {
  const seconds = ov.bucket_seconds || 10;
  state.bucketSeconds = seconds;
  const x = ov.throughput.buckets.map(epoch);
  drawChart(
    "chart-accepted",
    PRIORITIES.map((p) => ({ label: p, color: COLORS[p] })),
    [x, ...PRIORITIES.map((p) => perSecond(ov.throughput.accepted[p], seconds))],
  );
  const channels = state.channels;
  drawChart(
    "chart-delivered",
    channels.map((c, i) => ({ label: c, color: channelColor(c, i) })),
    [x, ...channels.map((c) => perSecond(ov.throughput.delivered[c], seconds))],
  );
  drawChart(
    "chart-failed",
    channels.map((c, i) => ({ label: c, color: channelColor(c, i) })),
    [x, ...channels.map((c) => perSecond(ov.throughput.failed[c], seconds))],
  );
  drawChart(
    "chart-delivered-priority",
    PRIORITIES.map((p) => ({ label: p, color: COLORS[p] })),
    [x, ...PRIORITIES.map((p) => perSecond(ov.throughput.delivered_by_priority[p], seconds))],
  );
  drawChart(
    "chart-failed-priority",
    PRIORITIES.map((p) => ({ label: p, color: COLORS[p] })),
    [x, ...PRIORITIES.map((p) => perSecond(ov.throughput.failed_by_priority[p], seconds))],
  );
  drawChart(
    "chart-dead",
    [{ label: "dead letters", color: COLORS.dead }],
    [ov.dead_letters.buckets.map(epoch), ov.dead_letters.counts],
  );

  const now = epoch(ov.now);
  const lat = ov.latency_ms;
  const samples = state.latency;
  samples[0].push(now);
  samples[1].push(lat.p50);
  samples[2].push(lat.p90);
  samples[3].push(lat.p99);
  if (samples[0].length > HISTORY) for (const column of samples) column.shift();
  drawChart(
    "chart-latency",
    ["p50", "p90", "p99"].map((p) => ({ label: p, color: COLORS[p] })),
    samples.map((column) => column.slice()),
    { minMax: 10 },
  );

  const lag = state.lag;
  lag.x.push(now);
  const seen = new Set();
  for (const row of ov.consumer_lag) {
    const key = `${row.role} (${row.group})`;
    seen.add(key);
    if (!lag.roles.has(key)) lag.roles.set(key, new Array(lag.x.length - 1).fill(null));
    lag.roles.get(key).push(row.lag);
  }
  for (const [key, values] of lag.roles) if (!seen.has(key)) values.push(null);
  if (lag.x.length > HISTORY) {
    lag.x.shift();
    for (const values of lag.roles.values()) values.shift();
  }
  const roles = [...lag.roles.keys()];
  drawChart(
    "chart-lag",
    roles.map((key, i) => ({ label: key, color: LAG_COLORS[i % LAG_COLORS.length] })),
    [lag.x.slice(), ...roles.map((key) => lag.roles.get(key).slice())],
  );

  $("lag-rows").replaceChildren(
    ...ov.consumer_lag.map((row) =>
      el("tr", { class: row.lag > 0 ? "lagging" : "" }, td(row.role), td(row.group, "mono"), td(fmtNumber(row.lag), "num")),
    ),
  );
  $("ov-accepted").textContent = fmtNumber(ov.totals.accepted);
  $("ov-delivered").textContent = fmtNumber(ov.totals.delivered);
  $("ov-failed").textContent = fmtNumber(ov.totals.failed);
  $("ov-dead").textContent = fmtNumber(ov.totals.dead_letters);
  $("ov-latency").textContent = `${fmtMs(lat.p50)} / ${fmtMs(lat.p90)} / ${fmtMs(lat.p99)} (${fmtNumber(lat.count)})`;
  state.refreshes += 1;
  $("tab-overview").dataset.refreshes = String(state.refreshes);
  $("ov-broker").textContent = ov.broker_error ? `Broker figures unavailable: ${ov.broker_error}` : "";
  $("ov-updated").textContent = `updated ${shortTime(ov.now)} UTC · every ${REFRESH_MS / 1000} s · ${ov.bucket_seconds} s buckets`;
}

async function refreshOverview() {
  if (state.inFlight || !state.open || state.tab !== "overview" || document.hidden) return;
  state.inFlight = true;
  try {
    const ov = await api(`/api/admin/overview${query({ minutes: $("ov-minutes").value })}`);
    if (state.tab === "overview") renderOverview(ov);
    showError(null);
  } catch (err) {
    showError(err);
  } finally {
    state.inFlight = false;
  }
}

// ---------- notifications ----------

function statusBadge(status) {
  return badge(`status-${status}`, status);
}

async function runSearch(params, cursor) {
  const body = await api(`/api/admin/notifications${query({ ...params, cursor })}`);
  state.search.next = body.next_cursor;
  const rows = body.items.map((n) =>
    el(
      "tr",
      { class: "clickable", data: { id: n.id }, onclick: () => go(`notifications/${encodeURIComponent(n.id)}`) },
      td(shortTime(n.created_at), "nowrap"),
      td(n.user_id, "mono"),
      td(n.title),
      el("td", {}, badge(n.priority)),
      el("td", {}, statusBadge(n.status)),
      td((n.channels || []).join(", ")),
      el("td", { class: "mono" }, el("a", { href: `#notifications/${encodeURIComponent(n.id)}` }, n.id)),
    ),
  );
  $("search-rows").replaceChildren(...rows);
  $("search-empty").hidden = rows.length > 0;
  $("search-next").disabled = !body.next_cursor;
  $("search-first").disabled = state.search.cursors.length === 0;
  $("search-page").textContent = `page ${state.search.cursors.length + 1} · ${rows.length} shown`;
}

async function search(event) {
  if (event) event.preventDefault();
  state.search.params = formParams($("search-form"));
  state.search.cursors = [];
  showError(null);
  try {
    await runSearch(state.search.params, null);
  } catch (err) {
    showError(err);
  }
  if (location.hash !== "#notifications") history.replaceState(null, "", "#notifications");
  showResultsView();
}

function showResultsView() {
  $("detail").hidden = true;
  $("search-form").hidden = false;
  $("search-results").hidden = false;
}

async function showResults() {
  showResultsView();
  if (!state.search.params) await search(null);
}

function field(list, name, value) {
  list.append(el("dt", {}, name), el("dd", {}, value === null || value === undefined || value === "" ? "–" : value));
}

async function showDetail(id) {
  const body = await api(`/api/admin/notifications/${encodeURIComponent(id)}`);
  const n = body.notification;
  $("search-form").hidden = true;
  $("search-results").hidden = true;
  $("detail").hidden = false;
  $("detail").dataset.id = n.id;
  $("detail-title").textContent = n.title;
  const fields = $("detail-fields");
  fields.replaceChildren();
  field(fields, "id", n.id);
  field(fields, "user", el("a", { href: `#users/${encodeURIComponent(n.user_id)}` }, n.user_id));
  field(fields, "status", statusBadge(n.status));
  field(fields, "priority", badge(n.priority));
  field(fields, "channels", (n.channels || []).join(", "));
  field(fields, "category", n.category);
  field(fields, "body", n.body);
  // The correlation id is the bulk id of a bulk send; a single request's is its own id.
  const bulk = n.bulk_id && n.bulk_id !== n.id ? el("a", { href: `#bulks/${encodeURIComponent(n.bulk_id)}` }, n.bulk_id) : null;
  field(fields, "bulk / correlation id", bulk);
  field(fields, "created", shortTime(n.created_at));
  field(fields, "delivered", shortTime(n.delivered_at));
  field(fields, "read", shortTime(n.read_at));
  if (n.error) field(fields, "error", n.error);
  $("targets-rows").replaceChildren(
    ...body.targets.map((t) =>
      el(
        "tr",
        { data: { channel: t.channel } },
        td(t.channel),
        el("td", {}, badge(`state-${t.state}`, t.state)),
        td(t.target, "mono"),
        td(t.attempts, "num"),
        td(t.error),
        td(shortTime(t.delivered_at), "nowrap"),
      ),
    ),
  );
  $("trail-rows").replaceChildren(
    ...body.trail.map((e) =>
      el(
        "tr",
        { data: { type: e.type } },
        td(shortTime(e.time), "nowrap"),
        td(e.type, "mono"),
        td(e.partition, "num"),
        td(e.offset, "num"),
        td(e.summary),
      ),
    ),
  );
  const lines = (body.explanation || []).map((line) => el("li", {}, line));
  if (body.explanation_error) lines.push(el("li", { class: "error" }, `explanation unavailable: ${body.explanation_error}`));
  $("explanation").replaceChildren(...lines);
}

// ---------- users ----------

async function showUser(userId) {
  const body = await api(`/api/admin/users/${encodeURIComponent(userId)}`);
  $("user-view").hidden = false;
  $("user-view").dataset.user = body.user_id;
  const presence = body.presence;
  if (!presence) $("user-presence").textContent = "unknown (no presence store)";
  else
    $("user-presence").replaceChildren(
      badge(presence.online ? "online" : "offline", presence.online ? "online" : "offline"),
      ` ${presence.connections} connection${presence.connections === 1 ? "" : "s"}`,
    );
  $("user-inbox-counts").textContent = `${fmtNumber(body.inbox.unread)} unread of ${fmtNumber(body.inbox.total)}`;
  $("rate-rows").replaceChildren(
    ...PRIORITIES.filter((p) => body.rate_limits[p]).map((p) => {
      const r = body.rate_limits[p];
      const meter = el("meter", { min: 0, max: r.limit || 1, value: r.used, high: (r.limit || 1) * 0.8 });
      return el(
        "tr",
        { data: { priority: p } },
        el("td", {}, badge(p)),
        el("td", {}, meter),
        td(`${fmtNumber(r.used)} / ${fmtNumber(r.limit)}`, "num"),
        td(`${r.window_seconds} s`, "num"),
      );
    }),
  );
  $("device-rows").replaceChildren(
    ...body.devices.map((d) =>
      el(
        "tr",
        { class: d.active ? "" : "inactive" },
        td(d.device_token, "mono ellipsis"),
        td(d.platform),
        el("td", {}, badge(`device-${d.status}`, d.status)),
        td(d.active ? "yes" : "no"),
        td(d.reason),
        td(shortTime(d.registered_at), "nowrap"),
        td(shortTime(d.updated_at), "nowrap"),
        td(shortTime(d.last_notification_at), "nowrap"),
      ),
    ),
  );
  $("devices-empty").hidden = body.devices.length > 0;
  const contact = $("contact");
  contact.replaceChildren();
  if (!body.contact) field(contact, "contact", "none stored");
  else
    for (const [key, value] of Object.entries(body.contact)) {
      const text = Array.isArray(value) ? value.join(", ") : value;
      field(contact, key, typeof text === "object" && text !== null ? JSON.stringify(text) : text);
    }
  $("inbox-rows").replaceChildren(
    ...body.inbox.items.map((n) =>
      el(
        "tr",
        { class: `clickable${n.read_at ? " read" : ""}`, onclick: () => go(`notifications/${encodeURIComponent(n.id)}`) },
        td(shortTime(n.created_at), "nowrap"),
        td(n.title),
        el("td", {}, badge(n.priority)),
        el("td", {}, statusBadge(n.status)),
        td(n.read_at ? "read" : "unread"),
        el("td", { class: "mono" }, el("a", { href: `#notifications/${encodeURIComponent(n.id)}` }, n.id)),
      ),
    ),
  );
}

// ---------- dead letters ----------

function updateSelection() {
  const count = state.dl.selected.size;
  $("dl-selected").textContent = `${count} selected`;
  $("dl-redrive-selected").disabled = count === 0;
}

async function loadDeadLetters(params, before) {
  state.dl.params = params;
  const body = await api(`/api/admin/deadletters${query({ ...params, before })}`);
  state.dl.next = body.next;
  state.dl.selected.clear();
  $("dl-all").checked = false;
  const rows = body.items.map((d) => {
    const at = `${d.partition}:${d.offset}`;
    const box = el("input", {
      type: "checkbox",
      ariaLabel: `select ${at}`,
      onchange: (event) => {
        if (event.target.checked) state.dl.selected.set(at, { partition: d.partition, offset: d.offset });
        else state.dl.selected.delete(at);
        updateSelection();
      },
    });
    const preview = el("details", {}, el("summary", {}, `${fmtNumber(d.size)} B`), el("pre", {}, d.value_preview));
    return el(
      "tr",
      { class: d.redriven ? "redriven" : "", data: { at } },
      el("td", {}, box),
      td(at, "mono nowrap"),
      td(shortTime(d.timestamp), "nowrap"),
      td(d.reason, "reason"),
      td(
        `${d.source_topic ?? "?"} ${d.source_partition ?? "?"}:${d.source_offset ?? "?"}` +
          (d.channel ? ` (${d.channel})` : ""),
        "mono",
      ),
      td(d.key, "mono ellipsis"),
      td(fmtNumber(d.size), "num"),
      td(d.redriven ? "yes" : d.redriven_from ? `no (a copy of ${d.redriven_from})` : "no"),
      el("td", {}, preview),
    );
  });
  $("dl-rows").replaceChildren(...rows);
  $("dl-empty").hidden = rows.length > 0;
  $("dl-next").disabled = !body.next;
  $("dl-first").disabled = !before;
  updateSelection();
}

function showRedriveResult(result) {
  const out = $("dl-result");
  out.classList.remove("error");
  out.replaceChildren(`Re-driven: ${result.redriven}. Skipped: ${result.skipped.length}.`);
  if (result.skipped.length) {
    out.append(el("ul", {}, ...result.skipped.map((s) => el("li", {}, `${s.partition}:${s.offset} — ${s.why}`))));
  }
}

async function redrive(body) {
  const out = $("dl-result");
  out.textContent = "Re-driving…";
  try {
    const result = await api("/api/admin/deadletters/redrive", { method: "POST", body });
    showRedriveResult(result);
    await loadDeadLetters(state.dl.params || {}, null);
  } catch (err) {
    out.classList.add("error");
    out.textContent = err.message;
    if (err.status === 401 || err.status === 403) return;
  }
}

// ---------- bulk sends ----------

function statusBar(byStatus, total) {
  const bar = el("div", { class: "stack" });
  const sum = total || Object.values(byStatus).reduce((a, b) => a + b, 0) || 1;
  for (const [status, n] of Object.entries(byStatus)) {
    if (!n) continue;
    const part = el("span", { class: `part status-${status}`, title: `${status}: ${n}` });
    part.style.width = `${(100 * n) / sum}%`; // CSSOM, allowed by the CSP (no style attribute in markup)
    bar.append(part);
  }
  return bar;
}

function legend(byStatus) {
  return Object.entries(byStatus).map(([status, n]) =>
    el("li", { data: { status } }, el("span", { class: `swatch status-${status}` }), `${status}: ${fmtNumber(n)}`),
  );
}

async function loadBulks() {
  const body = await api("/api/admin/bulks?limit=50");
  const rows = body.items.map((b) =>
    el(
      "tr",
      { class: "clickable", data: { bulk: b.bulk_id }, onclick: () => go(`bulks/${encodeURIComponent(b.bulk_id)}`) },
      el("td", { class: "mono" }, el("a", { href: `#bulks/${encodeURIComponent(b.bulk_id)}` }, b.bulk_id)),
      td(shortTime(b.created_at), "nowrap"),
      td(fmtNumber(b.total), "num"),
      el("td", { class: "progress" }, statusBar(b.by_status, b.total), el("ul", { class: "legend small" }, ...legend(b.by_status))),
      td(fmtNumber(b.refused), "num"),
    ),
  );
  $("bulk-rows").replaceChildren(...rows);
  $("bulks-empty").hidden = rows.length > 0;
}

async function showBulk(bulkId) {
  const body = await api(`/api/admin/bulks/${encodeURIComponent(bulkId)}`);
  $("bulk-detail").hidden = false;
  $("bulk-detail").dataset.bulk = body.bulk_id;
  $("bulk-title").textContent = `Bulk ${body.bulk_id}`;
  $("bulk-bar").replaceWith(Object.assign(statusBar(body.by_status, 0), { id: "bulk-bar" }));
  $("bulk-status").replaceChildren(...legend(body.by_status));
  $("refused-rows").replaceChildren(...body.refused.map((r) => el("tr", {}, td(r.target, "mono"), td(r.reason))));
  $("refused-empty").hidden = body.refused.length > 0;
}

// ---------- wiring ----------

function wire() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) login(token);
  });
  $("dev-login").hidden = false;
  $("dev-login").addEventListener("click", devLogin);
  $("logout").addEventListener("click", () => logout("Logged out."));
  for (const button of document.querySelectorAll("[data-tab]")) {
    button.addEventListener("click", () => go(button.dataset.tab));
  }
  window.addEventListener("hashchange", route);
  $("ov-minutes").addEventListener("change", refreshOverview);
  window.addEventListener("resize", () => {
    for (const [id, chart] of Object.entries(state.charts)) chart.plot.setSize({ width: chartWidth(id), height: 190 });
  });

  $("search-form").addEventListener("submit", search);
  $("search-form").addEventListener("reset", () => setTimeout(() => search(null), 0));
  $("search-next").addEventListener("click", () => {
    if (!state.search.next) return;
    state.search.cursors.push(state.search.next);
    runSearch(state.search.params, state.search.next).catch(showError);
  });
  $("search-first").addEventListener("click", () => {
    state.search.cursors = [];
    runSearch(state.search.params, null).catch(showError);
  });
  $("detail-back").addEventListener("click", () => go("notifications"));

  $("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const user = $("user-id").value.trim();
    if (user) go(`users/${encodeURIComponent(user)}`);
  });

  $("dl-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadDeadLetters(formParams($("dl-form")), null).catch(showError);
  });
  $("dl-next").addEventListener("click", () => loadDeadLetters(state.dl.params, state.dl.next).catch(showError));
  $("dl-first").addEventListener("click", () => loadDeadLetters(state.dl.params, null).catch(showError));
  $("dl-all").addEventListener("change", (event) => {
    for (const box of $("dl-rows").querySelectorAll("input[type=checkbox]")) {
      if (box.checked !== event.target.checked) {
        box.checked = event.target.checked;
        box.dispatchEvent(new Event("change"));
      }
    }
  });
  $("dl-redrive-selected").addEventListener("click", () =>
    redrive({ records: [...state.dl.selected.values()], force: $("dl-force").checked }),
  );
  $("dl-redrive-filter").addEventListener("click", () => {
    const params = formParams($("dl-form"));
    const filter = {};
    if (params.source_topic) filter.source_topic = params.source_topic;
    if (params.reason) filter.reason = params.reason;
    const max = Number($("dl-max").value) || 100;
    const what = Object.entries(filter).map(([k, v]) => `${k} "${v}"`).join(" and ") || "no filter";
    if (!window.confirm(`Re-drive up to ${max} dead letters matching ${what} to their source topics?`)) return;
    redrive({ filter, max, force: $("dl-force").checked });
  });

  $("bulks-refresh").addEventListener("click", () => loadBulks().catch(showError));

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) login(saved);
}

wire();
