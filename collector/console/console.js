// SmartUnit console: plain DOM, no build step. Everything goes through the callback API
// with the operator's bearer token; text from the API is only ever set as textContent.
"use strict";

const LEVELS = ["district", "street", "community", "grid"];
const COLOURS = ["green", "blue", "yellow", "orange", "red"];
const ACTIVE = ["open", "dispatched", "acknowledged", "recovered", "resolved", "reopened"];
const REFRESH_MS = 5000;

const state = {
  token: sessionStorage.getItem("smartunit.token") || "",
  actor: sessionStorage.getItem("smartunit.actor") || "",
  scope: [],          // hierarchy path chosen in the tree: ["suzhou", "gusu", ...]
  alerts: [],
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
    headers: {
      "Authorization": `Bearer ${state.token}`,
      "Content-Type": "application/json",
      ...(options.headers || {}),
    },
  });
  if (response.status === 401 || response.status === 403) throw new Unauthorised();
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
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
  state.token = $("login-token").value.trim();
  state.actor = $("login-actor").value.trim();
  try {
    await api("/api/units");
  } catch (error) {
    $("login-error").textContent = error instanceof Unauthorised ? "Unknown token." : error.message;
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

function age(ms) {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${Math.round(s / 86400)} d`;
}

const time = (ms) => new Date(ms).toLocaleString();
const colourDot = (colour) => el("span", { class: `dot c-${colour}`, title: colour });
const valueText = (a) =>
  a.value === null ? "—" : a.threshold === null ? `${a.value}` : `${a.value} (limit ${a.threshold})`;

function inScope(alert) {
  const path = ["city", ...LEVELS].map((k) => alert.hierarchy[k]);
  return state.scope.every((part, i) => path[i] === part);
}

// -- unit tree ---------------------------------------------------------------------------

function worst(colours) {
  return colours.reduce((a, b) => (COLOURS.indexOf(b) > COLOURS.indexOf(a) ? b : a), "green");
}

function renderTree(units) {
  const root = { children: {}, units: [] };
  for (const unit of units) {
    let node = root;
    for (const key of ["city", ...LEVELS]) {
      const name = unit.hierarchy[key] || "(none)";
      node = node.children[name] ||= { children: {}, units: [] };
    }
    node.units.push(unit);
  }
  const everyUnit = (node) => node.units.concat(...Object.values(node.children).map(everyUnit));
  const pick = (path) => () => { state.scope = path; if (location.pathname !== "/") go("/"); else renderList(); };
  const label = (colour, name, active) =>
    [colourDot(colour), name, active ? ` (${active})` : ""];
  const list = (node, path) => {
    const ul = el("ul");
    for (const name of Object.keys(node.children).sort()) {
      const child = node.children[name];
      const here = [...path, name];
      const leaves = everyUnit(child);
      const active = leaves.reduce((n, u) => n + u.active, 0);
      const li = el("li", {}, el("span", { onclick: pick(here) },
        ...label(worst(leaves.map((u) => u.colour)), name, active)));
      if (Object.keys(child.children).length) li.append(list(child, here));
      if (child.units.length) {
        li.append(el("ul", {}, ...child.units.map((unit) =>
          el("li", { "data-unit": unit.id },
            el("span", { onclick: pick(here) }, ...label(unit.colour, unit.name, unit.active))))));
      }
      ul.append(li);
    }
    return ul;
  };
  $("tree-root").replaceChildren(...list(root, []).children);
}

// -- alert list --------------------------------------------------------------------------

function renderSummary(alerts) {
  const active = alerts.filter((a) => a.state !== "closed");
  const counts = COLOURS.slice(1).reverse().map((c) => [c, active.filter((a) => a.colour === c).length]);
  const overdue = active.filter((a) => a.overdue).length;
  $("summary").replaceChildren(
    ...counts.map(([c, n]) => el("span", { class: `count c-${c}`, title: `${c} alerts` }, `${n} ${c}`)),
    overdue ? el("span", { class: "overdue" }, `${overdue} overdue`) : "",
  );
}

function renderList() {
  const family = $("family").value;
  const rows = state.alerts
    .filter((a) => inScope(a) && (!family || a.family === family))
    .sort((a, b) => COLOURS.indexOf(b.colour) - COLOURS.indexOf(a.colour) || a.started_at_ms - b.started_at_ms);
  $("scope").textContent = state.scope.length ? state.scope.join(" / ") : "the whole city";
  $("scope-clear").hidden = !state.scope.length;
  $("empty").hidden = rows.length > 0;
  $("alerts").querySelector("tbody").replaceChildren(...rows.map((a) => {
    const ack = el("button", {
      type: "button",
      "data-ack": a.id,
      onclick: async (event) => {
        event.stopPropagation();
        await run(() => act(a.id, "ack", ""));
      },
    }, "Acknowledge");
    const canAck = ["open", "dispatched", "recovered", "reopened"].includes(a.state);
    return el("tr", { class: "alert", "data-alert": a.id, onclick: () => go(`/alerts/${a.id}`) },
      el("td", { class: `bar c-${a.colour}` }),
      el("td", {}, a.id),
      el("td", {}, a.unit),
      el("td", {}, a.device),
      el("td", {}, `${a.quantity || "silence"} · ${a.detector}`),
      el("td", {}, valueText(a)),
      el("td", { class: "state" }, a.state, a.flapping ? el("span", { class: "flapping" }, "flapping") : ""),
      el("td", {}, age(a.started_at_ms), a.overdue ? el("span", { class: "overdue" }, "OVERDUE") : ""),
      el("td", {}, canAck ? ack : ""));
  }));
}

async function loadList() {
  const query = $("states").value === "active" ? ACTIVE.map((s) => `state=${s}`).join("&") : "";
  const [alerts, units] = await Promise.all([api(`/api/alerts?${query}`), api("/api/units")]);
  state.alerts = alerts;
  renderSummary(alerts);
  renderTree(units);
  renderList();
}

// -- webhook receivers -------------------------------------------------------------------

// A receiver that does not take events means people who are not told: shown on every page.
function renderReceivers(receivers) {
  const failing = receivers.filter((r) => r.failing || r.alert);
  $("receivers").hidden = !failing.length;
  $("receivers").replaceChildren(...failing.map((r) => {
    const since = r.failing_since_ms ? `failing for ${age(r.failing_since_ms)}` : "delivering again";
    const waiting = r.pending
      ? `${r.pending} event(s) waiting, the oldest ${age(Date.now() - r.oldest_pending_age_s * 1000)}`
      : "nothing waiting";
    return el("div", { class: "receiver-failing", "data-receiver": r.name },
      colourDot(r.alert || "orange"), ` Webhook receiver ${r.name}: ${since}`,
      el("span", { class: "detail" },
        `${r.consecutive_failures} failed attempt(s) in a row; last answer: ${r.last_error || "—"}; ` +
        `${waiting}; ${r.dead} in the dead-letter list`));
  }));
}

async function loadReceivers() {
  renderReceivers(await api("/api/receivers"));
}

// -- one alert ---------------------------------------------------------------------------

function renderChart(series) {
  const figure = $("chart");
  const points = series.points;
  figure.querySelector("figcaption").textContent =
    `${series.device} ${series.quantity} from InfluxDB: ${points.length} points; ` +
    "dashed red: the alert's start, dashed orange: the limit it crossed";
  figure.querySelector("svg")?.remove();
  if (!points.length) return;
  const W = 1000, H = 260, P = 30;
  const values = points.map((p) => p[1]).concat(series.threshold ?? []);
  const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
  // the time axis spans the data and the alert's start, not the empty part of the window
  const t0 = Math.min(points[0][0], series.started_at_ms);
  const t1 = Math.max(points[points.length - 1][0], series.started_at_ms);
  const x = (t) => P + ((t - t0) / (t1 - t0 || 1)) * (W - 2 * P);
  const y = (v) => H - P - ((v - lo) / span) * (H - 2 * P);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  add("line", { x1: x(series.started_at_ms), x2: x(series.started_at_ms), y1: P, y2: H - P,
                stroke: "#e0303a", "stroke-dasharray": "4 4" });
  if (series.threshold !== null && series.threshold !== undefined) {
    add("line", { x1: P, x2: W - P, y1: y(series.threshold), y2: y(series.threshold),
                  stroke: "#f07b18", "stroke-dasharray": "8 4" });
    add("text", { x: W - P - 4, y: y(series.threshold) - 4, fill: "#f07b18", "text-anchor": "end",
                  "font-size": 14 }, `limit ${series.threshold}`);
  }
  add("polyline", { points: points.map(([t, v]) => `${x(t)},${y(v)}`).join(" "),
                    fill: "none", stroke: "#4fb3ff", "stroke-width": 2 });
  add("text", { x: 4, y: P, fill: "#8d96a3", "font-size": 13 }, hi.toPrecision(4));
  add("text", { x: 4, y: H - P, fill: "#8d96a3", "font-size": 13 }, lo.toPrecision(4));
  add("text", { x: P, y: H - 8, fill: "#8d96a3", "font-size": 13 }, time(t0));
  add("text", { x: W - P, y: H - 8, fill: "#8d96a3", "font-size": 13, "text-anchor": "end" }, time(t1));
  figure.prepend(svg);
}

async function loadAlert(id) {
  const alert = await api(`/api/alerts/${id}`);
  $("alert-title").replaceChildren(
    el("span", { class: `count c-${alert.colour}` }, alert.colour),
    `#${alert.id} ${alert.unit} · ${alert.device} · ${alert.quantity || "silence"}`,
    el("span", { class: "state", id: "alert-state" }, alert.state),
    alert.overdue ? el("span", { class: "overdue" }, "OVERDUE") : "",
  );
  const facts = [
    ["Detector", alert.detector], ["Value", valueText(alert)],
    ["Where", ["city", ...LEVELS].map((k) => alert.hierarchy[k]).filter(Boolean).join(" / ")],
    ["Started", `${time(alert.started_at_ms)} (${age(alert.started_at_ms)} ago)`],
    ["Escalation level", alert.level], ["Acknowledged", alert.acknowledged ? "yes" : "no"],
    ["Readings now", alert.condition_active ? "abnormal" : "normal"],
    ["Acknowledge by", alert.ack_due_at_ms ? time(alert.ack_due_at_ms) : "—"],
    ["Incident", alert.incident === alert.id ? "leads its unit's incident" : `part of #${alert.incident}`],
  ];
  $("alert-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("timeline").replaceChildren(...alert.events.slice().reverse().map((e) =>
    el("li", {},
      el("time", {}, time(e.at_ms)), el("span", { class: "type" }, e.type.replace("_", " ")),
      `${e.actor}${e.note ? ": " + e.note : ""}`)));
  document.title = `#${alert.id} ${alert.colour} — SmartUnit`;
  api(`/api/alerts/${id}/series`).then(renderChart).catch((error) => {
    $("chart").querySelector("figcaption").textContent = `No chart: ${error.message}`;
  });
}

// -- routing and refresh -----------------------------------------------------------------

function go(path) {
  history.pushState({}, "", path);
  route();
}

async function run(job) {
  $("action-result").textContent = "";
  try {
    await job();
  } catch (error) {
    if (error instanceof Unauthorised) return signIn();
    $("action-result").textContent = error.message;
  }
  await refresh();
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  const match = location.pathname.match(/^\/alerts\/(\d+)$/);
  try {
    await Promise.all([match ? loadAlert(match[1]) : loadList(), loadReceivers()]);
  } catch (error) {
    if (error instanceof Unauthorised) return signIn();
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function route() {
  const detail = /^\/alerts\/\d+$/.test(location.pathname);
  $("list-view").hidden = detail;
  $("alert-view").hidden = !detail;
  if (!state.token) return signIn();
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", onSignIn);
  $("logout").addEventListener("click", signOut);
  $("family").addEventListener("change", renderList);
  $("states").addEventListener("change", refresh);
  $("scope-clear").addEventListener("click", () => { state.scope = []; renderList(); });
  $("back").addEventListener("click", (event) => { event.preventDefault(); go("/"); });
  for (const button of document.querySelectorAll("#actions button")) {
    button.addEventListener("click", () => {
      const id = location.pathname.split("/").pop();
      const note = $("note").value;
      run(async () => {
        await act(id, button.dataset.action, note);
        $("note").value = "";
      });
    });
  }
  window.addEventListener("popstate", route);
  $("actor-name").textContent = state.actor;
  route();
});
