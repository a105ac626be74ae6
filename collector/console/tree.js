// The unit tree: city -> district -> ... -> unit, each in its worst active colour; apart
// from it, each device the registry does not know (an incident of its own), and the
// service's own alarms. Uses the state and helpers of console.js.
"use strict";

function worst(colours) {
  return colours.reduce((a, b) => (COLOURS.indexOf(b) > COLOURS.indexOf(a) ? b : a), "green");
}

const registered = (unit) => !unit.id.startsWith("_") && Object.keys(unit.hierarchy).length > 0;

function pickScope(path) {
  return () => {
    state.scope = path;
    if (location.pathname !== "/") go("/");
    else renderList();
  };
}

function treeLabel(colour, name, active) {
  return [colourDot(colour), name, active ? el("span", { class: "n" }, ` (${active})`) : ""];
}

// Each device the registry does not know is an incident of its own, apart from the tree:
// picking one shows its alerts.
function pickDevice(device) {
  return () => {
    state.scope = [];
    $("search").value = device;
    if (location.pathname !== "/") go("/");
    else renderList();
  };
}

function renderTree(units, unregistered) {
  const root = { children: {}, units: [] };
  for (const unit of units.filter(registered)) {
    let node = root;
    for (const level of LEVELS.slice(0, 5)) {
      const id = unit.hierarchy[level];
      if (!id) break;
      node = node.children[id] ||= { children: {}, units: [] };
    }
    node.units.push(unit);
  }
  const everyUnit = (node) => node.units.concat(...Object.values(node.children).map(everyUnit));
  const unitItem = (unit, path) => el("li", { "data-unit": unit.id },
    el("span", { onclick: pickScope(path) }, ...treeLabel(unit.colour, unit.name, unit.active)));
  const list = (node, path) => {
    const ul = el("ul");
    const children = Object.keys(node.children).sort((a, b) => placeName(a).localeCompare(placeName(b), LANG));
    for (const id of children) {
      const child = node.children[id];
      const here = [...path, id];
      const leaves = everyUnit(child);
      const active = leaves.reduce((n, u) => n + u.active, 0);
      const li = el("li", { "data-place": id }, el("span", { onclick: pickScope(here) },
        ...treeLabel(worst(leaves.map((u) => u.colour)), placeName(id), active)));
      if (Object.keys(child.children).length) li.append(list(child, here));
      if (child.units.length) li.append(el("ul", {}, ...child.units.map((u) => unitItem(u, here))));
      ul.append(li);
    }
    return ul;
  };
  $("tree-root").replaceChildren(...list(root, []).children);
  $("unregistered-title").hidden = !unregistered.length;
  $("tree-unregistered").replaceChildren(...unregistered.map((d) =>
    el("li", { "data-device": d.device, "data-incident": d.incidents.join(" ") },
      el("span", { onclick: pickDevice(d.device) }, ...treeLabel(d.colour, d.device, d.active),
        d.family ? el("small", { class: "n" }, ` ${familyName(d.family)}`) : ""))));
  // the service's own alarms (the collector, gateways, the network) under what they are
  const loose = units.filter((u) => !registered(u) && u.active);
  $("system-title").hidden = !loose.length;
  $("tree-system").replaceChildren(...loose.map((u) =>
    el("li", { "data-unit": u.id }, el("span", {}, ...treeLabel(u.colour, unitName(u.id), u.active)))));
}
