// The mesh as SVG: this node in the middle, its peers on a ring (rows on a narrow screen), one link
// each with the RTT this node measured, and a dot per model a node serves (filled: hosts it; hollow:
// a split worker).

import { $, clip, fmtBytes, h, s } from "./dom.js";
import { allNodes, modelColor, nodeLabel, state } from "./state.js";

const MAX_DRAWN_PEERS = 24;
const NAME_MAX_CHARS = 14;
const MODELS_LABEL_MAX_CHARS = 24;
const SELF_RADIUS = 36;
const PEER_RADIUS = 30;
const CROWDED_RADIUS = 20;
const MARKER_RADIUS = 7;
const MARKER_STEP_RAD = 0.55;
const ROLE_LABEL_DY = 17;
const SERVING_ROLES = new Set(["solo", "split_host"]);
const VIEW = {
  ring: { x: 230, y: 135 }, narrowBelowPx: 520,
  treeSpacing2: 170, treeSpacing3: 125, treeFirstRowY: 170, treeRowGap: 135,
  minWidth: 560, minWidthNarrow: 330, minHeight: 150, pad: 10,
  labelHalfWidth: 62, labelRoom: 50, markerRoom: 14, hintRoom: 28,
};

function ringPosition(index, count) {
  // One peer sits to the right, two left and right, more around the ring: never stacked on top.
  const offset = count === 1 ? Math.PI / 2 : Math.PI / Math.max(count, 1);
  const angle = -Math.PI / 2 + offset + (2 * Math.PI * index) / Math.max(count, 1);
  return { x: VIEW.ring.x * Math.cos(angle), y: VIEW.ring.y * Math.sin(angle) };
}

// On a narrow screen this node sits on top and its peers in rows below: a ring would not fit.
function treePosition(index, count) {
  const perRow = count <= 4 ? 2 : 3;
  const row = Math.floor(index / perRow);
  const inRow = Math.min(perRow, count - row * perRow);
  const spacing = perRow === 2 ? VIEW.treeSpacing2 : VIEW.treeSpacing3;
  const col = index - row * perRow;
  return { x: (col - (inRow - 1) / 2) * spacing, y: VIEW.treeFirstRowY + row * VIEW.treeRowGap };
}

// The viewBox hugs what is drawn (labels included), never narrower than a comfortable minimum,
// so two nodes do not leave a tall empty card and one node does not blow up to full width.
function fitViewBox(svg, placed, extraBottom, narrow) {
  const minWidth = narrow ? VIEW.minWidthNarrow : VIEW.minWidth;
  let minX = Infinity; let maxX = -Infinity; let minY = Infinity; let maxY = -Infinity;
  for (const p of placed) {
    minX = Math.min(minX, p.x - Math.max(p.r, VIEW.labelHalfWidth));
    maxX = Math.max(maxX, p.x + Math.max(p.r, VIEW.labelHalfWidth));
    minY = Math.min(minY, p.y - p.r - VIEW.markerRoom);
    maxY = Math.max(maxY, p.y + p.r + VIEW.labelRoom);
  }
  maxY += extraBottom;
  const width = Math.max(maxX - minX, minWidth);
  const height = Math.max(maxY - minY, VIEW.minHeight);
  const x = (minX + maxX) / 2 - width / 2 - VIEW.pad;
  const y = (minY + maxY) / 2 - height / 2 - VIEW.pad;
  svg.setAttribute("viewBox", `${x} ${y} ${width + 2 * VIEW.pad} ${height + 2 * VIEW.pad}`);
  return { bottom: y + height + VIEW.pad, right: x + width + VIEW.pad, top: y + VIEW.pad };
}

function drawLink(p, along) {
  const unreachable = p.node.path === "unreachable";
  const label = unreachable ? "no path" : p.node.rtt_ms ? `${p.node.rtt_ms.toFixed(1)} ms` : "—";
  const mx = p.x * along;
  const my = p.y * along;
  const kind = unreachable ? "link link-down" : p.node.path === "relayed" ? "link link-relayed" : "link";
  return [
    s("line", { class: kind, x1: 0, y1: 0, x2: p.x, y2: p.y }),
    s("g", { class: "rtt" },
      s("rect", { x: mx - 27, y: my - 10, width: 54, height: 20, rx: 10 }),
      s("text", { x: mx, y: my + 4, "text-anchor": "middle", text: label })),
  ];
}

// Why a node hosts nothing: standby, or fetching a model file.
function roleLabel(node) {
  if (node.role === "fetching" || (node.fetching || []).length) {
    const [first] = node.fetching || [];
    const done = first && first.bytes_total ? Math.floor((100 * first.bytes_done) / first.bytes_total) : 0;
    return first ? `fetching ${done}%` : "fetching";
  }
  return node.standby ? "standby" : "";
}

function drawNode({ node, x, y, r }) {
  const classes = ["node", node.isSelf ? "self" : "", node.is_client ? "client" : "",
    node.standby ? "standby" : ""].join(" ").replace(/ +/g, " ").trim();
  const served = (node.served || []).filter((m) => m.role !== "standby");
  const group = s("g", { class: classes, "data-node-id": node.node_id },
    s("title", { text: `${nodeLabel(node)} ${node.node_id}` }),
    s("circle", { class: "node-ring", cx: x, cy: y, r }),
    s("text", { class: "node-vram", x, y: y + 4, "text-anchor": "middle",
      text: node.is_client ? "client" : fmtBytes(node.vram_bytes) }),
    s("text", { class: "node-name", x, y: y + r + 16, "text-anchor": "middle",
      text: clip(nodeLabel(node), NAME_MAX_CHARS) }),
    s("text", { class: "node-id", x, y: y + r + 29, "text-anchor": "middle", text: node.short_id }));
  const hosted = served.map((m) => m.model).join(", ");
  if (hosted) {
    group.append(s("text", { class: "node-models", x, y: y + r + 43, "text-anchor": "middle",
      text: clip(hosted, MODELS_LABEL_MAX_CHARS) }));
  }
  // Inside the ring, under the VRAM: the labels below are crowded by links already.
  const role = hosted ? "" : roleLabel(node);
  if (role) {
    group.append(s("text", { class: "node-role", x, y: y + ROLE_LABEL_DY, "text-anchor": "middle", text: role }));
  }
  served.forEach((m, i) => {
    const angle = -Math.PI / 4 + i * MARKER_STEP_RAD;
    const kind = SERVING_ROLES.has(m.role) ? "host" : "worker";
    group.append(s("circle", {
      class: `marker marker-${kind} marker-${m.state}`, "data-model": m.model, r: MARKER_RADIUS,
      cx: x + r * Math.cos(angle), cy: y - r * Math.sin(angle),
      fill: kind === "host" ? modelColor(m.model) : null, stroke: modelColor(m.model),
    }, s("title", { text: `${m.model}: ${m.role.replace("_", " ")}, ${m.state}` })));
  });
  return group;
}

function renderLegend() {
  const items = [...state.models.keys()].map((name) => {
    const swatch = h("span", { class: "swatch" });
    swatch.style.background = modelColor(name);
    return h("span", { class: "legend-item", "data-model": name }, swatch, name);
  });
  if (items.length) {
    items.push(h("span", { class: "legend-item muted" }, h("span", { class: "swatch swatch-ring" }),
      "hollow = split worker"));
  }
  $("legend").replaceChildren(...items);
}

export function renderTopology() {
  const svg = $("topology");
  const nodes = allNodes();
  const narrow = svg.clientWidth > 0 && svg.clientWidth < VIEW.narrowBelowPx;
  const peers = nodes.filter((n) => !n.isSelf).slice(0, MAX_DRAWN_PEERS);
  const crowded = peers.length > 12 || (narrow && peers.length > 4);
  const position = narrow ? treePosition : ringPosition;
  const placed = peers.map((node, i) => ({
    node, r: crowded ? CROWDED_RADIUS : PEER_RADIUS, ...position(i, peers.length),
  }));
  // Along a diagonal link the RTT label sits nearer the peer, clear of this node's own labels.
  const along = narrow ? 0.6 : 0.5;
  const links = s("g", { class: "links" }, ...placed.flatMap((p) => drawLink(p, along)));
  const drawn = state.self ? [{ node: nodes[0], r: SELF_RADIUS, x: 0, y: 0 }, ...placed] : placed;
  const circles = s("g", { class: "nodes" }, ...drawn.map(drawNode));
  const lonely = Boolean(state.self) && peers.length === 0;
  const outline = drawn.length ? drawn : [{ x: 0, y: 0, r: SELF_RADIUS }];
  const box = fitViewBox(svg, outline, lonely ? VIEW.hintRoom : 0, narrow);
  const children = [links, circles];
  if (lonely) {
    children.push(s("text", { class: "hint", x: 0, y: box.bottom - 12, "text-anchor": "middle",
      text: "No peers yet — share the invite token to grow the mesh" }));
  }
  if (nodes.length - 1 > MAX_DRAWN_PEERS) {
    children.push(s("text", { class: "hint", x: box.right - 4, y: box.top + 14, "text-anchor": "end",
      text: `+${nodes.length - 1 - MAX_DRAWN_PEERS} more` }));
  }
  svg.replaceChildren(...children);
  renderLegend();
}
