// The map: each unit with registry coordinates, in the colour of its worst active alert.
// Works with no network at all (command centres are often air-gapped): the units' own
// bounding box, in Web Mercator, drawn as SVG. With a tile URL set, the map tiles of the
// same projection are laid underneath.
"use strict";

const TILE = 256;
const SVG_NS = "http://www.w3.org/2000/svg";

// Web Mercator at zoom z: world pixel coordinates.
function project(lat, lon, z) {
  const scale = TILE * 2 ** z;
  const sin = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
  return [((lon + 180) / 360) * scale, (0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)) * scale];
}

function svgNode(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderMap(units, { onPick }) {
  const box = document.getElementById("map");
  const placed = units.filter((u) => typeof u.lat === "number" && typeof u.lon === "number");
  const unplaced = units.length - placed.length;
  document.getElementById("map-note").textContent =
    !placed.length ? t("map_no_coords") : unplaced ? t("map_unplaced", unplaced) : "";
  if (!placed.length) return box.replaceChildren();
  const W = box.clientWidth || 1000;
  const H = Math.max(360, Math.min(window.innerHeight - 260, W * 0.65));
  const pad = 40;
  // the highest zoom at which every unit fits, so tiles (if any) come at their native size
  let z = 18;
  const extent = (zoom) => {
    const xy = placed.map((u) => project(u.lat, u.lon, zoom));
    const xs = xy.map((p) => p[0]), ys = xy.map((p) => p[1]);
    return [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
  };
  let [x0, y0, x1, y1] = extent(z);
  while (z > 1 && (x1 - x0 > W - 2 * pad || y1 - y0 > H - 2 * pad)) [x0, y0, x1, y1] = extent(--z);
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const left = cx - W / 2, top = cy - H / 2;
  const svg = svgNode("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  svg.append(svgNode("rect", { x: 0, y: 0, width: W, height: H, class: "map-bg" }));
  const tiles = localStorage.getItem("smartunit.tile_url") || "";
  if (tiles) {
    const n = 2 ** z;
    for (let tx = Math.floor(left / TILE); tx <= Math.floor((left + W) / TILE); tx++) {
      for (let ty = Math.max(0, Math.floor(top / TILE)); ty <= Math.min(n - 1, Math.floor((top + H) / TILE)); ty++) {
        const href = tiles.replace("{z}", z).replace("{x}", ((tx % n) + n) % n).replace("{y}", ty);
        svg.append(svgNode("image", { href, x: tx * TILE - left, y: ty * TILE - top, width: TILE, height: TILE }));
      }
    }
  }
  // worst last, so a red is never hidden under a green
  const order = ["green", "blue", "yellow", "orange", "red"];
  for (const unit of placed.slice().sort((a, b) => order.indexOf(a.colour) - order.indexOf(b.colour))) {
    const [px, py] = project(unit.lat, unit.lon, z);
    const x = px - left, y = py - top;
    const group = svgNode("g", { class: `map-unit m-${unit.colour}`, "data-unit": unit.id });
    group.addEventListener("click", () => onPick(unit));
    group.append(svgNode("title", {}, `${unit.name}: ${colourName(unit.colour)}`));
    group.append(svgNode("circle", { cx: x, cy: y, r: unit.colour === "green" ? 9 : 14 }));
    group.append(svgNode("text", { x: x + 18, y: y + 6 }, unit.active ? `${unit.name} (${unit.active})` : unit.name));
    svg.append(group);
  }
  box.replaceChildren(svg);
}
