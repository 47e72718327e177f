// circuitx's interactive circuit page: draws the graph carried in #circuit-data as SVG and
// re-selects the circuit live. Plain browser JavaScript, no library, no network.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const data = JSON.parse(document.getElementById("circuit-data").textContent);
const nodes = data.nodes;
const edges = data.edges;
const nNodes = nodes.name.length;
const nEdges = edges.name.length;
const fixedNodes = new Set([...data.inputs, data.logits].map((n) => nodes.name.indexOf(n)));
// transcoder features follow their MLP (nodes.mlp: the MLP's index, -1 for other nodes)
const isFeature = (i) => nodes.mlp[i] >= 0;
const featureEdge = (i) => isFeature(edges.sender[i]) || isFeature(edges.receiver[i]);

const svg = document.getElementById("circuit");
const modeBox = document.getElementById("mode");
const slider = document.getElementById("slider");
const valueBox = document.getElementById("value");
const referenceBox = document.getElementById("reference");
const statusLine = document.getElementById("status");
const infoLine = document.getElementById("info");

// the items a selection ranks, those with a non-zero score: edges for an edge-level method,
// heads and MLPs for a node-level one (features and their edges follow); as
// circuitx.drawing.places.scored_selection ranks them for a static picture
const ranked = [];
if (data.level === "edge") {
  for (let i = 0; i < nEdges; i++) {
    if (edges.score[i] && !featureEdge(i)) {
      ranked.push({ index: i, magnitude: Math.abs(edges.score[i]) });
    }
  }
} else {
  for (let i = 0; i < nNodes; i++) {
    if (!fixedNodes.has(i) && !isFeature(i) && nodes.score[i]) {
      ranked.push({ index: i, magnitude: Math.abs(nodes.score[i]) });
    }
  }
}
// by |score|, largest first, ties in graph order (Array.prototype.sort is stable)
const byMagnitude = ranked.slice().sort((a, b) => b.magnitude - a.magnitude);
const levels = Array.from(new Set(byMagnitude.map((item) => item.magnitude)));

// ---- selection: the rules of circuitx.graph.selection_by_score ------------------------

// a node-level selection's edge the method scored exactly 0 (CD-T's: no relevance flows
// there) is not drawn; as circuitx.drawing.places.silent_edges
const silent = (i) => data.level === "node" && edges.score[i] === 0 && !featureEdge(i);

function selection(mode, value) {
  const keptNodes = new Set(fixedNodes);
  const keptEdges = [];
  const held = [];  // the selection's silent edges: not drawn, counted against a reference
  const keep = (i) => (silent(i) ? held : keptEdges).push(i);
  if (mode === "circuit") {
    for (let i = 0; i < nNodes; i++) if (nodes.in_circuit[i]) keptNodes.add(i);
    for (let i = 0; i < nEdges; i++) if (edges.in_circuit[i]) keep(i);
    return { nodes: keptNodes, edges: keptEdges, held };
  }
  const chosen = new Set();
  if (mode === "top") {
    byMagnitude.slice(0, value).forEach((item) => chosen.add(item.index));
  } else {
    ranked.forEach((item) => {
      if (item.magnitude >= value) chosen.add(item.index);
    });
  }
  if (data.level === "edge") {
    chosen.forEach((i) => {
      keptNodes.add(edges.sender[i]);
      keptNodes.add(edges.receiver[i]);
    });
  } else {
    chosen.forEach((i) => keptNodes.add(i));
  }
  for (let i = 0; i < nNodes; i++) {  // by threshold a feature needs |score| >= it too
    const enough = mode === "top" || Math.abs(nodes.score[i] || 0) >= value;
    if (isFeature(i) && keptNodes.has(nodes.mlp[i]) && enough) keptNodes.add(i);
  }
  for (let i = 0; i < nEdges; i++) {
    const joins = keptNodes.has(edges.sender[i]) && keptNodes.has(edges.receiver[i]);
    const byEnds = data.level === "node" || featureEdge(i);
    if (byEnds ? joins : chosen.has(i)) keep(i);
  }
  return { nodes: keptNodes, edges: keptEdges, held };
}

// ---- drawing ---------------------------------------------------------------------------

const unitX = Math.max(34, Math.min(64, 900 / (data.n_heads + 4)));
const unitY = 74;
const margin = 24;
const radius = data.n_heads <= 6 ? 10 : 8;
const leftmost = -2.2;
const topmost = Math.max(...nodes.y) + 0.6;  // the logits, lifted over positions' headers
const px = (x) => margin + (x - leftmost) * unitX;
const py = (y) => margin + (topmost - y) * unitY;
const rightmost = Math.max(data.n_heads + 0.5, ...nodes.x);
svg.setAttribute("width", String(Math.round(px(rightmost + 1.0) + margin)));
svg.setAttribute("height", String(Math.round(py(-0.6) + margin)));

function element(tag, attributes, parent, tooltip) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (tooltip !== undefined) {
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = tooltip;
    node.appendChild(title);
  }
  parent.appendChild(node);
  return node;
}

// "1 node", "2 nodes" (circuitx.progress.counted)
function counted(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function formatScore(score) {
  return score === null ? "no score" : "score " + String(Number(Number(score).toPrecision(4)));
}

// a diverging colour for a signed score (blue negative, white zero, red positive)
// the colour scale of the heads, MLPs and features: the input and logits, in every circuit,
// are drawn white (a file's input may carry the total of its edges as its score)
const nodeBound = Math.max(
  1e-30, ...nodes.score.map((s, i) => (s === null || fixedNodes.has(i) ? 0 : Math.abs(s))),
);
function diverging(score) {
  if (score === null) return "#ffffff";
  const t = Math.max(-1, Math.min(1, score / nodeBound));
  const end = t < 0 ? [33, 102, 172] : [178, 24, 43];
  const mid = [247, 247, 247];
  const a = Math.abs(t);
  const rgb = mid.map((m, i) => Math.round(m + (end[i] - m) * a));
  return `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
}

// the key's ends: the scale's bounds; a node-level method's edges have no scores
if (nodeBound > 1e-30) {
  document.getElementById("scale-low").textContent = String(-Number(nodeBound.toPrecision(3)));
  document.getElementById("scale-high").textContent = "+" + String(Number(nodeBound.toPrecision(3)));
}
if (data.level === "node") {
  const scored = edges.score.some((score) => score !== null);
  document.getElementById("edge-key").textContent = scored
    ? "edges: those among the selected nodes, width |score| (those scored 0 not drawn)"
    : "edges: those among the selected nodes (unscored)";
}

const backdrop = element("g", { id: "model" }, svg);
const edgeLayer = element("g", { id: "edges" }, svg);
const nodeLayer = element("g", { id: "nodes" }, svg);
for (let layer = 0; layer < data.n_layers; layer++) {
  const label = element("text", {
    x: px(-0.9), y: py(layer + 1) + 4, "text-anchor": "end", "font-size": 11, fill: "#777777",
    "font-family": "sans-serif",
  }, backdrop);
  label.textContent = `layer ${layer}`;
}
const headers = [];
for (const [group, start] of data.panels) {  // a panel per position group, each named
  headers.push([group ? `heads @${group}` : "heads", start + (data.n_heads - 1) / 2]);
  if (data.has_mlp) headers.push(["MLP", start + data.n_heads + 0.5]);
}
if (data.panels.length === 1 && rightmost > data.n_heads + 1) {
  headers.push(["features", (data.n_heads + 1.4 + rightmost) / 2]);
}
for (const [text, x] of headers) {
  const header = element("text", {
    x: px(x), y: py(data.n_layers + 0.62), "text-anchor": "middle", "font-size": 11,
    fill: "#777777", "font-family": "sans-serif",
  }, backdrop);
  header.textContent = text;
}
for (let i = 0; i < nNodes; i++) {
  if (fixedNodes.has(i)) continue;
  element("circle", { class: "slot", cx: px(nodes.x[i]), cy: py(nodes.y[i]), r: 3, fill: "#dddddd" },
    backdrop, nodes.name[i]);
}

// roles go by short names, keyed in the legend, where two labels of a row (of the saved
// circuit's and the reference's nodes) would overlap at full length (a 10px label's
// character is about 6px wide); Python's labels_fit
const shortRoles = (() => {
  const rows = new Map();
  for (let i = 0; i < nNodes; i++) {
    if (!nodes.in_circuit[i] && !nodes.in_reference[i]) continue;
    const width = 6 * Math.max(nodes.short[i].length, (nodes.role[i] || "").length);
    if (!rows.has(nodes.y[i])) rows.set(nodes.y[i], []);
    rows.get(nodes.y[i]).push([nodes.x[i], width, Boolean(nodes.role[i])]);
  }
  for (const row of rows.values()) {
    row.sort((a, b) => a[0] - b[0]);
    for (let j = 1; j < row.length; j++) {
      const [[xa, wa, ra], [xb, wb, rb]] = [row[j - 1], row[j]];
      if ((ra || rb) && (wa + wb) / 2 > (xb - xa) * unitX) return true;
    }
  }
  return false;
})();
function roleText(i) {
  return shortRoles ? data.role_short[nodes.role[i]] || nodes.role[i] : nodes.role[i];
}

let selected = selection("circuit", 0);
let focus = null; // the clicked node's index, or null

function edgeColour(i) {
  if (referenceBox.checked) {
    return edges.in_reference[i] ? data.agreement["both"] : data.agreement["circuit only"];
  }
  return data.feeds_colours[edges.feeds[i]];
}

function nodeStroke(i) {
  if (referenceBox.checked) {
    return nodes.in_reference[i] ? data.agreement["both"] : data.agreement["circuit only"];
  }
  return "#222222";
}

// an edge's SVG path: a straight line; a curve bent sideways where the line would run
// through nodes between its ends (edges.bend, in columns); within one row (a head into
// its layer's MLP) a curve below the row, so that it does not run through the heads between
function edgePath(i) {
  const s = edges.sender[i];
  const r = edges.receiver[i];
  const shift = data.offsets[edges.feeds[i]] || 0;
  const [x1, y1, x2, y2] = [px(nodes.x[s]), py(nodes.y[s]), px(nodes.x[r] + shift), py(nodes.y[r])];
  const bend = edges.bend[i];
  if (nodes.y[s] !== nodes.y[r] && !bend) return `M ${x1} ${y1} L ${x2} ${y2}`;
  const [cx, cy] = nodes.y[s] !== nodes.y[r]
    ? [px((nodes.x[s] + nodes.x[r] + shift) / 2 + bend), (y1 + y2) / 2]
    : [(x1 + x2) / 2, py(nodes.y[s] - data.row_bow)];
  return `M ${x1} ${y1} Q ${cx} ${cy} ${x2} ${y2}`;
}

// "; node precision P, recall R, edge ...": the selected heads and MLPs and the drawn
// edges against the reference, a feature counted as its MLP (as the static caption)
function agreement(drawnComponents) {
  const kept = new Map();  // component -> whether the reference has it
  const drawnEdges = new Map();
  for (const i of selected.nodes) {
    if (!fixedNodes.has(i)) kept.set(nodes.component[i], nodes.in_reference[i]);
  }
  for (let i = 0; i < nEdges; i++) {
    if (drawnComponents.has(edges.component[i])) drawnEdges.set(edges.component[i], edges.in_reference[i]);
  }
  const share = (hits, n) => (n ? (hits / n).toFixed(2) : "-");
  const level = (name, found, size) => {
    const hits = [...found.values()].filter(Boolean).length;
    return `${name} precision ${share(hits, found.size)}, recall ${share(hits, size)}`;
  };
  const size = data.reference_size;
  return "; " + level("node", kept, size.nodes) + (size.edges ? ", " + level("edge", drawnEdges, size.edges) : "");
}

function render() {
  edgeLayer.replaceChildren();
  nodeLayer.replaceChildren();
  // the largest data.max_drawn by weight (|score|, or the weaker end's |node score|),
  // smallest first so the largest lie on top
  const drawn = selected.edges.slice().sort((a, b) => edges.weight[b] - edges.weight[a])
    .slice(0, data.max_drawn).reverse();
  const largest = Math.max(0, ...drawn.map((i) => Math.abs(edges.score[i] || 0)));
  for (const i of drawn) {
    const width = 0.8 + 3.4 * (largest > 0 ? Math.abs(edges.score[i] || 0) / largest : 0);
    const line = element("path", {
      class: "edge", "data-name": edges.name[i], "data-index": i, d: edgePath(i), fill: "none",
      stroke: edgeColour(i),
      "stroke-width": width.toFixed(2), "stroke-linecap": "round", "stroke-opacity": 0.7,
    }, edgeLayer, `${edges.name[i]}: ${formatScore(edges.score[i])}`);
    line.addEventListener("mouseover", () => {
      infoLine.textContent = `edge ${edges.name[i]}, ${formatScore(edges.score[i])}`;
    });
  }
  // the edges between components drawn (a feature's edge stands for its MLP's)
  // and the selection's silent edges, which score counts as the circuit's
  const drawnComponents = new Set([...drawn, ...selected.held].map((i) => edges.component[i]));
  if (referenceBox.checked) {  // the reference's edges no drawn edge is or stands for
    for (let i = 0; i < nEdges; i++) {
      const own = edges.name[i] === edges.component[i];
      if (!edges.in_reference[i] || !own || drawnComponents.has(edges.component[i])) continue;
      element("path", {
        class: "missed-edge", "data-name": edges.name[i], "data-index": i, d: edgePath(i),
        fill: "none",
        stroke: data.agreement["reference only"], "stroke-width": 1, "stroke-dasharray": "4 3",
      }, edgeLayer, `${edges.name[i]}: in the reference only`);
    }
  }
  for (let i = 0; i < nNodes; i++) {
    const kept = selected.nodes.has(i);
    const missed = !kept && referenceBox.checked && nodes.in_reference[i];
    if (!kept && !missed) continue;
    const cx = px(nodes.x[i]);
    const cy = py(nodes.y[i]);
    const size = isFeature(i) ? radius * 0.55 : radius;
    const circle = element("circle", {
      class: kept ? "node" : "missed-node", "data-name": nodes.name[i], cx, cy, r: size,
      fill: kept ? diverging(fixedNodes.has(i) ? null : nodes.score[i]) : "none",
      stroke: kept ? nodeStroke(i) : data.agreement["reference only"],
      "stroke-width": 1.8, "stroke-dasharray": kept ? "none" : "4 3",
    }, nodeLayer, `${nodes.name[i]}: ${formatScore(nodes.score[i])}`);
    circle.style.cursor = "pointer";
    circle.addEventListener("mouseover", () => {
      infoLine.textContent = `node ${nodes.name[i]}, ${formatScore(nodes.score[i])}`;
    });
    circle.addEventListener("click", (event) => {
      event.stopPropagation();
      focus = focus === i ? null : i;
      highlight();
    });
    const below = data.inputs.includes(nodes.name[i]) || isFeature(i);
    const label = element("text", {
      x: cx, y: below ? cy + size + 10 : cy - size - 4, "text-anchor": "middle",
      "font-size": isFeature(i) ? 8 : 10, "font-family": "sans-serif",
      fill: kept ? "#222222" : data.agreement["reference only"],
      // a white halo keeps a label legible over the edges that run under it
      stroke: "#ffffff", "stroke-width": 3, "stroke-linejoin": "round", "paint-order": "stroke",
    }, nodeLayer);
    const name = isFeature(i) ? nodes.name[i].split(".").pop() : nodes.short[i];
    if (referenceBox.checked && nodes.role[i] && !below) {  // the role on a line above the name
      element("tspan", { x: cx, dy: -11 }, label).textContent = roleText(i);
      element("tspan", { x: cx, dy: 11 }, label).textContent = name;
    } else {
      label.textContent = name;
    }
  }
  const components = [...selected.nodes].filter((i) => !fixedNodes.has(i)).length;
  const capped = selected.edges.length > drawn.length ? ` (the ${drawn.length} largest drawn)` : "";
  const held = selected.held.length
    ? ` (${counted(selected.held.length, "edge")} among the nodes scored 0 not drawn)` : "";
  statusLine.textContent = `${counted(components, "node")}, ${counted(selected.edges.length, "edge")}${capped}${held}`
    + (referenceBox.checked ? agreement(drawnComponents) : "");
  svg.setAttribute("data-nodes", String(selected.nodes.size));
  svg.setAttribute("data-edges", String(selected.edges.length));
  highlight();
}

// a clicked node keeps its own edges and neighbours bright, the rest faint
function highlight() {
  const name = focus === null ? null : nodes.name[focus];
  const near = new Set(name === null ? [] : [name]);
  edgeLayer.querySelectorAll("path").forEach((line) => {
    const i = Number(line.getAttribute("data-index"));
    const touches = focus !== null && (edges.sender[i] === focus || edges.receiver[i] === focus);
    if (!line.classList.contains("edge")) {
      line.setAttribute("opacity", focus === null || touches ? "1" : "0.15");
      return;
    }
    if (touches) {
      near.add(nodes.name[edges.sender[i]]);
      near.add(nodes.name[edges.receiver[i]]);
    }
    line.setAttribute("stroke-opacity", focus === null || touches ? "0.7" : "0.06");
    line.classList.toggle("highlighted", touches);
  });
  nodeLayer.querySelectorAll("circle").forEach((circle) => {
    const dim = focus !== null && !near.has(circle.getAttribute("data-name"));
    circle.setAttribute("opacity", dim ? "0.25" : "1");
  });
  if (focus !== null) {
    const into = selected.edges.filter((i) => edges.receiver[i] === focus).length;
    const out = selected.edges.filter((i) => edges.sender[i] === focus).length;
    infoLine.textContent = `node ${name}: ${into} edges in, ${out} out (click it again to clear)`;
  }
}

// ---- controls --------------------------------------------------------------------------

function configureSlider() {
  const mode = modeBox.value;
  slider.disabled = valueBox.disabled = mode === "circuit";
  if (mode === "top") {
    slider.min = "0";
    slider.max = String(byMagnitude.length);
    slider.step = "1";
    valueBox.step = "1";
  } else if (mode === "threshold") {
    slider.min = "0";
    slider.max = String(Math.max(0, levels.length - 1));
    slider.step = "1";
    valueBox.step = "any";
  }
}

// the threshold slider runs over the distinct |scores|, largest first
function sliderToValue() {
  const position = Number(slider.value);
  return modeBox.value === "top" ? position : (levels.length ? levels[position] : 0);
}

function valueToSlider(value) {
  if (modeBox.value === "top") return Math.max(0, Math.min(byMagnitude.length, Math.round(value)));
  let position = 0; // the last level still >= the threshold keeps the same selection
  while (position + 1 < levels.length && levels[position + 1] >= value) position++;
  return position;
}

function apply(value) {
  selected = selection(modeBox.value, value);
  render();
}

modeBox.addEventListener("change", () => {
  configureSlider();
  if (modeBox.value === "circuit") {
    apply(0);
    return;
  }
  const start = modeBox.value === "top" ? data.initial.top : data.initial.threshold;
  slider.value = String(valueToSlider(start));
  valueBox.value = String(start);
  apply(start);
});
slider.addEventListener("input", () => {
  const value = sliderToValue();
  valueBox.value = String(value);
  apply(value);
});
valueBox.addEventListener("change", () => {
  const value = Number(valueBox.value);
  if (!Number.isFinite(value) || value < 0) return;
  slider.value = String(valueToSlider(value));
  apply(value);
});
referenceBox.disabled = !data.has_reference;
referenceBox.checked = data.has_reference;  // drawn with a reference: opens against it
referenceBox.addEventListener("change", render);
svg.addEventListener("click", () => {
  focus = null;
  highlight();
  infoLine.textContent = "";
});

// what a downloaded SVG carries above the drawing, so that it explains itself when shared:
// the title, what is selected, the edge colours' key (in its colours) and the node scale
const SCALE_COLOURS = ["rgb(33,102,172)", "rgb(247,247,247)", "rgb(178,24,43)"];  // as the page's
const KEY = Symbol("key"), SCALE = Symbol("scale");  // the caption's drawn lines

function captioned(copy) {
  const lines = [[data.title, 14], [statusLine.textContent, 11], [KEY, 11], [SCALE, 10]];
  const height = 8 + lines.length * 18;
  const drawing = element("g", { transform: `translate(0, ${height})` }, copy);
  while (copy.firstChild !== drawing) drawing.appendChild(copy.firstChild);
  const text = (x, y, size, words, anchor = "start") => {
    const line = element("text", {
      x, y, "font-size": size, fill: "#333333", "font-family": "sans-serif", "text-anchor": anchor,
    }, copy);
    line.textContent = words;
    return line;
  };
  lines.forEach(([words, size], i) => {
    const y = 18 + i * 18;
    if (words === KEY) {  // the edges' key: each entry in its colour
      const line = text(margin, y, size, "");
      legendEntries().forEach(([name, colour], k) => {
        element("tspan", { fill: colour }, line).textContent = (k ? "   " : "edges: ") + name;
      });
    } else if (words === SCALE) {  // the node scale: its bounds either side of its colours
      const gradient = element("linearGradient", { id: "node-scale" }, element("defs", {}, copy));
      SCALE_COLOURS.forEach((colour, k) => {
        element("stop", { offset: `${k * 50}%`, "stop-color": colour }, gradient);
      });
      text(margin, y, size, "node score");
      text(margin + 130, y, size, document.getElementById("scale-low").textContent, "end");
      element("rect", {
        x: margin + 135, y: y - 9, width: 120, height: 10, fill: "url(#node-scale)",
        stroke: "#cccccc",
      }, copy);
      text(margin + 260, y, size,
        `${document.getElementById("scale-high").textContent};  `
        + document.getElementById("edge-key").textContent);
    } else {
      text(margin, y, size, words);
    }
  });
  copy.setAttribute("height", String(Number(svg.getAttribute("height")) + height));
  return copy;
}

document.getElementById("download").addEventListener("click", () => {
  const copy = captioned(svg.cloneNode(true));
  copy.setAttribute("xmlns", SVG_NS);
  const text = new XMLSerializer().serializeToString(copy);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
  link.download = (data.file_stem || "circuit") + ".svg";
  link.click();
  URL.revokeObjectURL(link.href);
});

// the legend: what edge colours mean, in the current colouring
function legendEntries() {
  return referenceBox.checked
    ? Object.entries(data.agreement)
    : Object.entries(data.feeds_colours).filter(([k]) => edges.feeds.includes(k))
        .map(([k, c]) => [`into ${k}`, c]);
}

function legend() {
  const box = document.getElementById("legend");
  box.replaceChildren();
  for (const [name, colour] of legendEntries()) {
    const item = document.createElement("span");
    item.className = "key";
    const swatch = document.createElement("i");
    swatch.style.background = colour;
    item.append(swatch, name);
    box.appendChild(item);
  }
  const keyed = Object.entries(data.role_short).filter(([role, short]) => role !== short);
  if (referenceBox.checked && shortRoles && keyed.length) {
    const roles = document.createElement("span");
    roles.className = "key";
    roles.id = "roles";
    roles.textContent = "roles: " + keyed.sort((a, b) => (a[1] < b[1] ? -1 : 1))
      .map(([role, short]) => `${short} ${role}`).join("; "); // a tracr role has commas
    box.appendChild(roles);
  }
}
referenceBox.addEventListener("change", legend);

modeBox.value = data.initial.mode;
configureSlider();
if (data.initial.mode === "circuit") {
  apply(0);
} else {
  const start = data.initial.mode === "top" ? data.initial.top : data.initial.threshold;
  slider.value = String(valueToSlider(start));
  valueBox.value = String(start);
  apply(start);
}
legend();
// a drawing wider than the window (a circuit over positions) opens where its circuit is,
// not on the empty panels left of it
const canvas = document.getElementById("canvas");
const shownAt = [...selected.nodes].filter((i) => !fixedNodes.has(i)).map((i) => px(nodes.x[i]));
if (shownAt.length && Math.max(...shownAt) > canvas.clientWidth - 20) {
  canvas.scrollLeft = Math.max(0, Math.min(...shownAt) - 60);
}
