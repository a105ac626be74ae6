// SmartUnit console: plain DOM, no build step. Everything goes through the callback API
// with the operator's bearer token; text from the API is only ever set as textContent.
"use strict";

const LEVELS = ["city", "district", "street", "community", "grid", "micro_grid"];
const COLOURS = ["green", "blue", "yellow", "orange", "red"];
const ACTIVE = ["open", "dispatched", "acknowledged", "recovered", "resolved", "reopened"];
const ACK_FROM = ["open", "dispatched", "recovered", "reopened"];
const RESOLVE_FROM = ["open", "dispatched", "acknowledged", "recovered", "reopened"];
const REFRESH_MS = 5000;

const state = {
  token: sessionStorage.getItem("smartunit.token") || "",
  actor: sessionStorage.getItem("smartunit.actor") || "",
  scope: [],          // hierarchy path chosen in the tree: ["suzhou", "gusu", ...]
  alerts: [],
  units: new Map(),   // id -> unit from /api/units (display name, places, coordinates)
  places: new Map(),  // hierarchy id -> display name
  selected: new Set(),
  rowErrors: new Map(),
  flashing: new Set(),
  openIncidents: new Set(), // leaders whose incident is opened to its alerts
  lastOk: 0,          // when the API last answered a whole refresh
  offline: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

// -- API ---------------------------------------------------------------------------------

class Unauthorised extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    // a collector that hangs must count as a missed refresh, not keep the page waiting
    signal: AbortSignal.timeout(REFRESH_MS),
    headers: {
      "Authorization": `Bearer ${state.token}`,
      "Content-Type": "application/json",
      ...(options.headers || {}),
    },
  });
  if (response.status === 401 || response.status === 403) throw new Unauthorised();
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = Array.isArray(body.detail)
      ? body.detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ")
      : body.detail;
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return body;
}

async function act(alertId, action, note) {
  return api(`/api/alerts/${alertId}/${action}`, {
    method: "POST",
    body: JSON.stringify({ actor: state.actor, note: note || "" }),
  });
}

// -- sign in -----------------------------------------------------------------------------

function signIn() {
  const dialog = $("login");
  $("login-actor").value = state.actor;
  $("login-error").textContent = "";
  if (!dialog.open) dialog.showModal();
}

async function onSignIn(event) {
  event.preventDefault();
  unlockAudio();
  state.token = $("login-token").value.trim();
  state.actor = $("login-actor").value.trim();
  try {
    await api("/api/units");
  } catch (error) {
    $("login-error").textContent = error instanceof Unauthorised ? t("unknown_token") : error.message;
    return;
  }
  sessionStorage.setItem("smartunit.token", state.token);
  sessionStorage.setItem("smartunit.actor", state.actor);
  $("login").close();
  $("actor-name").textContent = state.actor;
  route();
}

function signOut() {
  sessionStorage.clear();
  state.token = "";
  signIn();
}

// -- formatting --------------------------------------------------------------------------

function duration(ms) {
  const s = Math.max(0, ms / 1000);
  if (s < 90) return t("s", Math.round(s));
  if (s < 5400) return t("min", Math.round(s / 60));
  if (s < 172800) return t("h", (s / 3600).toFixed(1));
  return t("d", Math.round(s / 86400));
}

const age = (ms) => duration(Date.now() - ms);
const time = (ms) => new Date(ms).toLocaleString(LANG);
const clock = (ms) => new Date(ms).toLocaleTimeString(LANG);
const colourDot = (colour) => el("span", { class: `dot c-${colour}`, title: colourName(colour) });
// the service's own pseudo-units by what they stand for; registry units by their name
const PSEUDO_UNITS = { _unregistered: "unregistered_unit", _collector: "unit_collector", "": "unit_network" };
const unitName = (id) => state.units.get(id)?.name || (id in PSEUDO_UNITS ? t(PSEUDO_UNITS[id]) : id);
const placeName = (id) => state.places.get(id) || id;
const person = (actor) => (actor || "").replace(/^[^:]*:/, ""); // "console:Li" -> "Li"
const number = (v, quantity) => `${Number(v.toPrecision(4))}${quantityUnit(quantity) ? " " + quantityUnit(quantity) : ""}`;

function valueText(a) {
  if (a.value === null && (a.peak ?? null) === null) return "—";
  const now = a.value === null ? "—" : number(a.value, a.quantity);
  const shown = a.peak !== null && a.peak !== undefined && a.peak !== a.value
    ? t("peak_now", number(a.peak, a.quantity), now) : now;
  return a.threshold === null || a.threshold === undefined ? shown : t("with_limit", shown, a.threshold);
}

function wherePath(hierarchy) {
  return LEVELS.map((k) => hierarchy[k]).filter(Boolean).map(placeName).join(" / ");
}

function inScope(alert) {
  return state.scope.every((part, i) => alert.hierarchy[LEVELS[i]] === part);
}

function matchesSearch(alert, query) {
  if (!query) return true;
  const text = [alert.id, alert.unit, unitName(alert.unit), alert.device, alert.quantity,
    quantityName(alert.quantity), detectorName(alert.detector), wherePath(alert.hierarchy),
    stateName(alert.state), colourName(alert.colour), person(alert.acknowledged_by)].join(" ");
  return text.toLowerCase().includes(query.toLowerCase());
}

// -- connection: never show stale data as calm --------------------------------------------

function renderConnection() {
  $("updated").textContent = state.lastOk
    ? t("last_updated", clock(state.lastOk)) : t("never_updated");
  $("updated").classList.toggle("stale", state.offline);
  document.body.classList.toggle("offline", state.offline);
  $("offline").hidden = !state.offline;
  if (state.offline) {
    $("offline").textContent = state.lastOk
      ? t("offline", clock(state.lastOk), age(state.lastOk)) : t("offline_never");
  }
}

// -- alert list --------------------------------------------------------------------------

function renderSummary(alerts) {
  const active = alerts.filter((a) => a.state !== "closed");
  const counts = COLOURS.slice(1).reverse().map((c) => [c, active.filter((a) => a.colour === c).length]);
  const overdue = active.filter((a) => a.overdue).length;
  $("summary").replaceChildren(
    ...counts.map(([c, n]) => el("span", {
      class: n ? `count c-${c}` : "count zero", title: t("summary_title", colourName(c)), "data-colour": c,
    }, t("n_colour", n, colourName(c)))),
    el("span", { class: overdue ? "count overdue" : "count zero" }, t("n_overdue", overdue)),
  );
}

function dueCell(a) {
  if (!a.ack_due_at_ms) return el("td", { class: "due dim" }, "—");
  const left = a.ack_due_at_ms - Date.now();
  return left > 0
    ? el("td", { class: "due" }, t("due_in", duration(left)))
    : el("td", { class: "due" }, el("span", { class: "overdue" }, t("overdue", duration(-left))));
}

function visibleAlerts() {
  const family = $("family").value;
  const query = $("search").value.trim();
  return state.alerts
    .filter((a) => inScope(a) && (!family || a.family === family) && matchesSearch(a, query))
    .sort((a, b) => COLOURS.indexOf(b.colour) - COLOURS.indexOf(a.colour) || a.started_at_ms - b.started_at_ms);
}

// A leak seen by five sensors is one incident: one row, in the incident's worst colour,
// that opens to its alerts. An alert whose leader is not on the list stands on its own.
function incidents(rows) {
  const shown = new Set(rows.map((a) => a.id));
  const groups = new Map();
  for (const a of rows) {
    const leader = a.incident !== a.id && shown.has(a.incident) ? a.incident : a.id;
    if (!groups.has(leader)) groups.set(leader, []);
    groups.get(leader).push(a);
  }
  const rank = (group) => Math.max(...group.map((a) => COLOURS.indexOf(a.colour)));
  return [...groups.entries()]
    .map(([leader, group]) => ({
      leader: group.find((a) => a.id === leader),
      members: group.filter((a) => a.id !== leader),
      colour: COLOURS[rank(group)],
    }))
    .sort((x, y) => COLOURS.indexOf(y.colour) - COLOURS.indexOf(x.colour)
      || x.leader.started_at_ms - y.leader.started_at_ms);
}

function alertRow(a, { ackable, colour, members, member, open }) {
  const canAck = ackable.has(a.id);
  const stop = (event) => event.stopPropagation();
  const box = canAck ? el("input", { type: "checkbox", "data-select": a.id, onclick: stop,
    onchange: (event) => { event.target.checked ? state.selected.add(a.id) : state.selected.delete(a.id); renderBulk(); } }) : "";
  if (box) box.checked = state.selected.has(a.id);
  const ack = canAck ? el("button", { type: "button", "data-ack": a.id,
    onclick: (event) => { stop(event); runRow(a.id, () => act(a.id, "ack", "")); } }, t("ack")) : "";
  const toggle = members.length ? el("button", {
    type: "button", class: "expand", "data-incident": a.id, title: t("incident_alerts", members.length + 1),
    onclick: (event) => {
      stop(event);
      if (state.openIncidents.has(a.id)) state.openIncidents.delete(a.id); else state.openIncidents.add(a.id);
      renderList();
    },
  }, `${open ? "▾" : "▸"} ${members.length + 1}`) : "";
  const flashing = [a, ...members].some((m) => state.flashing.has(m.id) && !m.acknowledged);
  const error = state.rowErrors.get(a.id);
  const row = el("tr", {
    class: `alert${member ? " member" : ""}${flashing ? " flash" : ""}`,
    "data-alert": a.id, "data-colour": a.colour, "data-incident": a.incident,
    onclick: () => go(`/alerts/${a.id}`),
  },
    el("td", { class: `bar c-${colour}` }),
    el("td", { onclick: stop }, box),
    el("td", { class: "id" }, member ? "↳ " : "", a.id, toggle),
    el("td", { class: "unit" }, el("strong", {}, unitName(a.unit)), el("small", {}, a.device)),
    el("td", {}, quantityName(a.quantity), el("small", {}, detectorName(a.detector))),
    el("td", { class: "value" }, valueText(a)),
    el("td", { class: "state", "data-state": a.state }, stateName(a.state),
      a.flapping ? el("span", { class: "flapping" }, t("flapping")) : ""),
    el("td", { class: a.acknowledged_by ? "handler" : "handler dim" }, person(a.acknowledged_by) || t("nobody")),
    dueCell(a),
    el("td", {}, age(a.started_at_ms)),
    el("td", { class: "act" }, ack, error ? el("span", { class: "error row-error" }, error) : ""));
  if (member && !open) row.hidden = true;
  return row;
}

function renderList() {
  const rows = visibleAlerts();
  $("scope").textContent = state.scope.length ? state.scope.map(placeName).join(" / ") : t("whole_city");
  $("scope-clear").hidden = !state.scope.length;
  $("empty").hidden = rows.length > 0;
  $("empty").textContent = $("search").value.trim() ? t("none_matching") : t("no_alerts");
  const ackable = new Set(rows.filter((a) => ACK_FROM.includes(a.state)).map((a) => a.id));
  for (const id of state.selected) if (!ackable.has(id)) state.selected.delete(id);
  // a search names alerts, not incidents: every match is shown
  const searching = Boolean($("search").value.trim());
  $("alerts").querySelector("tbody").replaceChildren(...incidents(rows).flatMap(({ leader, members, colour }) => {
    const open = searching || state.openIncidents.has(leader.id);
    return [
      alertRow(leader, { ackable, colour, members, member: false, open }),
      ...members.map((m) => alertRow(m, { ackable, colour: m.colour, members: [], member: true, open })),
    ];
  }));
  const boxes = [...document.querySelectorAll("#alerts tbody tr:not([hidden]) input[data-select]")];
  $("select-all").checked = boxes.length > 0 && boxes.every((box) => box.checked);
  renderBulk();
}

function renderBulk() {
  $("bulk").hidden = state.selected.size === 0;
  $("bulk-ack").textContent = t("ack_selected", state.selected.size);
}

async function bulkAcknowledge() {
  const note = $("bulk-note").value.trim();
  const ids = [...state.selected];
  $("list-error").textContent = "";
  const failures = [];
  for (const id of ids) {
    try {
      await act(id, "ack", note);
      state.selected.delete(id);
    } catch (error) {
      if (error instanceof Unauthorised) return signIn();
      failures.push(`#${id}: ${error.message}`);
    }
  }
  $("list-error").textContent = failures.join("; ");
  if (!failures.length) $("bulk-note").value = "";
  await refresh();
}

async function loadList() {
  const query = $("states").value === "active" ? ACTIVE.map((s) => `state=${s}`).join("&") : "";
  const [alerts, units, unregistered] = await Promise.all(
    [api(`/api/alerts?${query}`), api("/api/units"), api("/api/unregistered")]);
  state.units = new Map(units.map((u) => [u.id, u]));
  state.places = new Map(units.flatMap((u) =>
    Object.entries(u.hierarchy).map(([level, id]) => [id, u.hierarchy_names?.[level] || id])));
  state.alerts = alerts;
  for (const id of announceNewReds(alerts)) state.flashing.add(id);
  flashWhileUnacknowledged(alerts, state.flashing);
  renderSummary(alerts);
  renderTree(units, unregistered);
  renderSilenceUnits(units);
  renderList();
  if (currentView() === "map") {
    renderMap(units, { onPick: (unit) => { pickScope(LEVELS.map((k) => unit.hierarchy[k]).filter(Boolean))(); showView("list"); } });
  }
  if (currentView() === "silences") await loadSilences();
}

// -- views: the list, the map, the silences -----------------------------------------------

const currentView = () => (["map", "silences", "cluster"].includes(location.hash.slice(1)) ? location.hash.slice(1) : "list");

function showView(view) {
  if (view !== currentView()) history.replaceState({}, "", view === "list" ? "/" : `/#${view}`);
  for (const name of ["list", "map", "silences", "cluster"]) $(`pane-${name}`).hidden = name !== view;
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.classList.toggle("on", tab.dataset.view === view);
  }
  $("filters").classList.toggle("dim-filters", view !== "list");
}

// -- routing and refresh -----------------------------------------------------------------

function go(path) {
  history.pushState({}, "", path);
  route();
}

// An action from a list row: its error is shown in that row, where the operator looks.
async function runRow(alertId, job) {
  state.rowErrors.delete(alertId);
  try {
    await job();
  } catch (error) {
    if (error instanceof Unauthorised) return signIn();
    state.rowErrors.set(alertId, error.message);
  }
  await refresh();
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  const match = location.pathname.match(/^\/alerts\/(\d+)$/);
  try {
    await Promise.all([match ? loadAlert(match[1]) : loadList(), loadReceivers(), loadCluster()]);
    state.lastOk = Date.now();
    state.offline = false;
  } catch (error) {
    if (error instanceof Unauthorised) return signIn();
    // one refresh missed is enough: a dead collector must not look like a quiet city
    state.offline = true;
  }
  renderConnection();
  timer = setTimeout(refresh, REFRESH_MS);
}

function route() {
  const detail = /^\/alerts\/\d+$/.test(location.pathname);
  $("list-view").hidden = detail;
  $("alert-view").hidden = !detail;
  if (!detail) showView(currentView());
  if (!state.token) return signIn();
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  translatePage();
  document.title = t("title");
  $("lang").replaceChildren(...Object.entries(LANGUAGES).map(([code, name]) => el("option", { value: code }, name)));
  $("lang").value = LANG;
  $("lang").addEventListener("change", () => setLanguage($("lang").value));
  renderMute();
  $("mute").addEventListener("click", toggleMute);
  $("login-form").addEventListener("submit", onSignIn);
  $("logout").addEventListener("click", signOut);
  $("family").addEventListener("change", renderList);
  $("search").addEventListener("input", renderList);
  $("states").addEventListener("change", refresh);
  $("scope-clear").addEventListener("click", () => { state.scope = []; renderList(); });
  $("back").addEventListener("click", (event) => { event.preventDefault(); go("/"); });
  $("bulk-ack").addEventListener("click", bulkAcknowledge);
  $("select-all").addEventListener("change", (event) => {
    const boxes = document.querySelectorAll("#alerts tbody tr:not([hidden]) input[data-select]");
    for (const box of boxes) {
      const id = Number(box.dataset.select);
      if (event.target.checked) state.selected.add(id); else state.selected.delete(id);
    }
    renderList();
  });
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.addEventListener("click", () => { showView(tab.dataset.view); refresh(); });
  }
  $("tile-url").value = localStorage.getItem("smartunit.tile_url") || "";
  $("tile-url").addEventListener("change", () => {
    localStorage.setItem("smartunit.tile_url", $("tile-url").value.trim());
    refresh();
  });
  $("silence-form").addEventListener("submit", createSilence);
  for (const button of document.querySelectorAll("#actions button")) {
    button.addEventListener("click", () => alertAction(button.dataset.action));
  }
  window.addEventListener("popstate", route);
  // ages, deadlines and "n s ago" keep moving between refreshes, and visibly stop being
  // current when the collector is gone
  setInterval(renderConnection, 1000);
  $("actor-name").textContent = state.actor;
  route();
});
