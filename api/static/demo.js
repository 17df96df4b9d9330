// Herald demo page: a plain WebSocket client of /ws/notifications (protocol: docs/websocket.md).
"use strict";

const CLOSE_REASONS = {
  1000: "closed",
  1001: "server shutting down",
  1006: "connection lost",
  4008: "too many connections for this user",
  4009: "too slow: the send queue overflowed",
  4011: "replay unavailable, reconnect",
};

const $ = (id) => document.getElementById(id);
const state = {
  token: null,
  user: null,
  ws: null,
  manualClose: false,
  lastSeenId: null,
  items: new Map(), // notification id -> {data, el}
  retryDelay: 1000,
  retryTimer: null,
  pingSentAt: null,
};

function log(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  const list = $("log");
  list.prepend(li);
  while (list.children.length > 150) list.lastChild.remove();
}

function setStatus(kind, text) {
  const el = $("status");
  el.className = `status status-${kind}`;
  el.textContent = text;
  el.dataset.state = kind;
}

function setButtons() {
  const open = state.ws && state.ws.readyState === WebSocket.OPEN;
  const busy = state.ws && state.ws.readyState === WebSocket.CONNECTING;
  $("connect").disabled = !state.token || open || busy;
  $("disconnect").disabled = !(open || busy || state.retryTimer);
  $("ping").disabled = !open;
  $("send").disabled = !state.token;
  for (const button of document.querySelectorAll(".mark-read")) {
    button.disabled = !open || button.closest(".notification").classList.contains("read");
  }
}

function jwtSubject(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub || null;
  } catch (err) {
    return null;
  }
}

function useToken(token, user) {
  if (state.ws) disconnect();
  state.token = token;
  state.user = user;
  state.lastSeenId = null;
  state.items.clear();
  $("notifications").replaceChildren();
  renderCounts();
  $("who").textContent = `Logged in as ${user}.`;
  $("send-to").value = user;
  log("sys", `token for ${user}`);
  connect();
}

async function login(event) {
  event.preventDefault();
  const user = $("user-id").value.trim();
  const resp = await fetch("/api/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user_id: user }),
  });
  if (!resp.ok) {
    const problem = await resp.json().catch(() => ({}));
    $("who").textContent = resp.status === 404
      ? "Dev login is only available under `herald dev`: paste a token below."
      : `Login failed: ${problem.detail || resp.status}`;
    return;
  }
  const body = await resp.json();
  useToken(body.token, body.user_id);
}

function connect() {
  if (!state.token) return;
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  state.manualClose = false;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let url = `${scheme}://${location.host}/ws/notifications?token=${encodeURIComponent(state.token)}`;
  if (state.lastSeenId) url += `&since=${encodeURIComponent(state.lastSeenId)}`;
  const ws = new WebSocket(url);
  state.ws = ws;
  setStatus("connecting", "connecting…");
  log("sys", state.lastSeenId ? `connecting (since ${state.lastSeenId})` : "connecting");
  ws.onopen = () => {
    setStatus("connecting", "catching up…");
    setButtons();
  };
  ws.onmessage = (msg) => onFrame(JSON.parse(msg.data));
  ws.onclose = (ev) => onClose(ws, ev);
  setButtons();
}

function disconnect() {
  state.manualClose = true;
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  if (state.ws) state.ws.close(1000, "bye");
  setButtons();
}

function onClose(ws, ev) {
  if (state.ws !== ws) return;
  state.ws = null;
  const why = CLOSE_REASONS[ev.code] || ev.reason || "closed";
  log("sys", `closed ${ev.code}${ev.reason ? ` (${ev.reason})` : ""}`);
  const refused = ev.code === 4008;
  if (state.manualClose || refused || !$("auto-reconnect").checked) {
    setStatus(refused ? "error" : "offline", refused ? `refused: ${why}` : `offline (${why})`);
  } else {
    const delay = state.retryDelay;
    state.retryDelay = Math.min(state.retryDelay * 2, 15000);
    setStatus("error", `${why}; reconnecting in ${Math.round(delay / 1000)} s`);
    state.retryTimer = setTimeout(connect, delay);
  }
  setButtons();
}

function onFrame(frame) {
  switch (frame.type) {
    case "missed_notifications":
      log("in", `missed_notifications: ${frame.notifications.length}${frame.more ? " (more coming)" : ""}`);
      frame.notifications.forEach((n) => add(n, true));
      if (!frame.more) {
        state.retryDelay = 1000;
        setStatus("connected", "live");
      }
      break;
    case "notification":
      log("in", `notification ${frame.notification.id}: ${frame.notification.title}`);
      add(frame.notification, false);
      break;
    case "read":
      log("in", `read ${frame.id}`);
      markRead(frame.id, frame.read_at);
      break;
    case "pong":
      log("in", state.pingSentAt ? `pong in ${Math.round(performance.now() - state.pingSentAt)} ms` : "pong");
      state.pingSentAt = null;
      break;
    case "error":
      log("in", `error: ${frame.error}`);
      break;
    default:
      log("in", JSON.stringify(frame).slice(0, 200));
  }
}

function send(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(frame));
    log("out", JSON.stringify(frame));
  }
}

function add(n, missed) {
  if (state.items.has(n.id)) return; // ids are stable: a notification is shown once
  state.lastSeenId = n.id;
  const li = document.createElement("li");
  const priority = ["high", "medium", "low"].includes(n.priority) ? n.priority : "low";
  li.className = `notification priority-${priority}`;
  li.dataset.id = n.id;
  li.dataset.testid = "notification";

  const title = document.createElement("div");
  title.className = "title";
  title.textContent = n.title;
  const badge = document.createElement("span");
  badge.className = `badge ${priority}`;
  badge.textContent = priority;
  title.append(badge);
  if (missed) {
    const m = document.createElement("span");
    m.className = "badge missed";
    m.textContent = "missed";
    title.append(m);
    li.classList.add("missed");
  }
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = n.body;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `${new Date(n.created_at).toLocaleString()} · ${n.category || "general"}`;
  const actions = document.createElement("div");
  actions.className = "actions";
  const read = document.createElement("button");
  read.className = "secondary mark-read";
  read.textContent = "Mark read";
  read.addEventListener("click", () => send({ type: "read", id: n.id }));
  actions.append(read);
  li.append(title, actions, body, meta);

  $("notifications").prepend(li);
  state.items.set(n.id, { data: n, el: li });
  send({ type: "ack", id: n.id });
  if (n.read_at) markRead(n.id, n.read_at);
  renderCounts();
  setButtons();
}

function markRead(id, readAt) {
  const item = state.items.get(id);
  if (!item) return;
  item.data.read_at = readAt;
  item.el.classList.add("read");
  const button = item.el.querySelector(".mark-read");
  button.textContent = "Read";
  button.disabled = true;
  renderCounts();
}

function renderCounts() {
  const unread = [...state.items.values()].filter((i) => !i.data.read_at).length;
  $("unread").textContent = `${unread} unread`;
  $("empty").hidden = state.items.size > 0;
}

async function sendNotification(event) {
  event.preventDefault();
  const result = $("send-result");
  const payload = {
    user_id: $("send-to").value.trim(),
    title: $("send-title").value,
    body: $("send-body").value,
    priority: $("send-priority").value,
    channels: ["websocket"],
  };
  const resp = await fetch("/api/notifications", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${state.token}` },
    body: JSON.stringify(payload),
  });
  const body = await resp.json().catch(() => ({}));
  result.classList.toggle("error", !resp.ok);
  result.textContent = resp.ok
    ? `Sent (${resp.status}): ${body.id || "accepted"}`
    : `Not sent (${resp.status}): ${body.detail || body.title || "error"}`;
}

$("login-form").addEventListener("submit", login);
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  const user = jwtSubject(token);
  if (!user) {
    $("who").textContent = "That does not look like a JWT.";
    return;
  }
  useToken(token, user);
});
$("connect").addEventListener("click", connect);
$("disconnect").addEventListener("click", disconnect);
$("ping").addEventListener("click", () => {
  state.pingSentAt = performance.now();
  send({ type: "ping" });
});
$("send-form").addEventListener("submit", sendNotification);
setButtons();
renderCounts();
