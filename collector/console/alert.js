// One alert: its facts, who handles it, what can still be done to it, its chart and timeline.
"use strict";

function renderChart(series) {
  const figure = $("chart");
  const points = series.points;
  figure.querySelector("figcaption").textContent =
    t("chart_caption", series.device, quantityName(series.quantity), points.length);
  figure.querySelector("svg")?.remove();
  if (!points.length) return;
  const W = 1000, H = 260, P = 30;
  const values = points.map((p) => p[1]).concat(series.threshold ?? []);
  const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
  // the time axis spans the data and the alert's start, not the empty part of the window
  const t0 = Math.min(points[0][0], series.started_at_ms);
  const t1 = Math.max(points[points.length - 1][0], series.started_at_ms);
  const x = (ms) => P + ((ms - t0) / (t1 - t0 || 1)) * (W - 2 * P);
  const y = (v) => H - P - ((v - lo) / span) * (H - 2 * P);
  const svg = svgNode("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  const add = (tag, attrs, text) => svg.append(svgNode(tag, attrs, text));
  add("line", { x1: x(series.started_at_ms), x2: x(series.started_at_ms), y1: P, y2: H - P,
                stroke: "#e0303a", "stroke-dasharray": "4 4" });
  if (series.threshold !== null && series.threshold !== undefined) {
    add("line", { x1: P, x2: W - P, y1: y(series.threshold), y2: y(series.threshold),
                  stroke: "#f07b18", "stroke-dasharray": "8 4" });
    add("text", { x: W - P - 4, y: y(series.threshold) - 4, fill: "#f07b18", "text-anchor": "end",
                  "font-size": 14 }, t("limit", series.threshold));
  }
  add("polyline", { points: points.map(([ms, v]) => `${x(ms)},${y(v)}`).join(" "),
                    fill: "none", stroke: "#4fb3ff", "stroke-width": 2 });
  add("text", { x: 4, y: P, fill: "#8d96a3", "font-size": 13 }, hi.toPrecision(4));
  add("text", { x: 4, y: H - P, fill: "#8d96a3", "font-size": 13 }, lo.toPrecision(4));
  add("text", { x: P, y: H - 8, fill: "#8d96a3", "font-size": 13 }, time(t0));
  add("text", { x: W - P, y: H - 8, fill: "#8d96a3", "font-size": 13, "text-anchor": "end" }, time(t1));
  figure.prepend(svg);
}

let shown = null; // the alert on the page, for its action buttons

async function loadAlert(id) {
  if (!state.units.size) {
    const units = await api("/api/units");
    state.units = new Map(units.map((u) => [u.id, u]));
  }
  const alert = await api(`/api/alerts/${id}`);
  shown = alert;
  const unit = state.units.get(alert.unit);
  $("alert-title").replaceChildren(
    el("span", { class: `count c-${alert.colour}` }, colourName(alert.colour)),
    `#${alert.id} ${unitName(alert.unit)} · ${alert.device} · ${quantityName(alert.quantity)}`,
    el("span", { class: "state", id: "alert-state", "data-state": alert.state }, stateName(alert.state)),
    alert.overdue ? el("span", { class: "overdue" }, t("overdue_badge")) : "",
  );
  const runbook = unit?.runbook
    ? el("a", { href: unit.runbook, target: "_blank", rel: "noopener noreferrer" }, unit.runbook) : null;
  const facts = [
    [t("detector"), detectorName(alert.detector)], [t("value"), valueText(alert)],
    [t("where"), wherePath(alert.hierarchy)],
    [t("started"), `${time(alert.started_at_ms)}（${t("ago", age(alert.started_at_ms))}）`],
    [t("escalation"), alert.level], [t("handler"), person(alert.acknowledged_by) || t("nobody")],
    [t("readings_now"), alert.condition_active ? t("abnormal") : t("normal")],
    [t("ack_by"), alert.ack_due_at_ms ? time(alert.ack_due_at_ms) : "—"],
    [t("incident"), alert.incident !== alert.id ? t("part_of", alert.incident)
      : alert.unregistered ? t("leads_device_incident") : t("leads_incident")],
    ...(unit?.contact ? [[t("contact"), unit.contact]] : []),
    ...(runbook ? [[t("runbook"), runbook]] : []),
  ];
  $("alert-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  // only what can still be done to it
  for (const button of document.querySelectorAll("#actions button")) {
    const action = button.dataset.action;
    button.hidden = (action === "ack" && !ACK_FROM.includes(alert.state))
      || (action === "resolve" && !RESOLVE_FROM.includes(alert.state));
  }
  $("timeline").replaceChildren(...alert.events.slice().reverse().map((e) =>
    el("li", {},
      el("time", {}, time(e.at_ms)), el("span", { class: "type", "data-type": e.type }, eventName(e.type)),
      `${e.actor}${e.note ? ": " + e.note : ""}`)));
  document.title = `#${alert.id} ${colourName(alert.colour)} — SmartUnit`;
  api(`/api/alerts/${id}/series`).then(renderChart).catch((error) => {
    $("chart").querySelector("figcaption").textContent = t("no_chart", error.message);
  });
}

async function alertAction(action) {
  if (!shown) return;
  const id = shown.id;
  // resolving while the readings are still abnormal is likely a mistake: ask first
  if (action === "resolve" && shown.condition_active && !window.confirm(t("confirm_resolve", id))) return;
  $("action-result").textContent = "";
  try {
    await act(id, action, $("note").value);
    $("note").value = "";
  } catch (error) {
    if (error instanceof Unauthorised) return signIn();
    $("action-result").textContent = error.message;
  }
  await refresh();
}
