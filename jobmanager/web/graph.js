// The job graph: dagre (vendor/dagre.min.js, the global `dagre`) lays out the plan's vertices and
// edges; they are drawn here as SVG elements with stable data attributes (data-vertex-id,
// data-backpressure-level, data-busy-ratio, data-records-per-second) for users' tools and tests.

import { h, svg } from './dom.js';
import { formatCount, formatRate, percent } from './format.js';

/** Flink's levels of a share of time backpressured (as the REST API computes them). */
function levelOf(ratio) {
  if (ratio <= 0.1) return 'ok';
  if (ratio <= 0.5) return 'low';
  return 'high';
}

/** A vertex's pressure: the backpressure route's answer, else the job details' time shares. */
export function pressureOf(vertex, answer) {
  if (answer && Array.isArray(answer.subtasks)) {
    const max = (key) => answer.subtasks.reduce((m, s) => Math.max(m, Number(s[key]) || 0), 0);
    return { level: answer['backpressure-level'] || levelOf(max('ratio')), busy: max('busyRatio'), backpressured: max('ratio') };
  }
  const shares = (vertex.subtasks || []).map((s) => s.time || {});
  const max = (key) => shares.reduce((m, t) => Math.max(m, (Number(t[key]) || 0) / 1000), 0);
  const backpressured = max('backpressured_permille');
  return { level: levelOf(backpressured), busy: max('busy_permille'), backpressured };
}

function vertexColours(pressure, running) {
  if (!running) return { fill: '#eceff3', stroke: '#9aa5b1' };
  if (pressure.level === 'high') return { fill: '#f7c6c0', stroke: '#b3261e' };
  if (pressure.level === 'low') return { fill: '#fbe2b8', stroke: '#b86e00' };
  // Not backpressured: from idle (light blue) to busy (orange), in proportion.
  const t = Math.min(1, Math.max(0, pressure.busy || 0));
  return { fill: mix([230, 240, 250], [243, 178, 122], t), stroke: mix([74, 127, 181], [184, 101, 42], t) };
}

function mix(from, to, t) {
  const channel = (i) => Math.round(from[i] + (to[i] - from[i]) * t);
  return `rgb(${channel(0)}, ${channel(1)}, ${channel(2)})`;
}

let measure = null;

/** The width of `text` in the vertex name's font (app.css: .vertex-name), in pixels. */
function nameWidth(text) {
  if (!measure) {
    measure = document.createElement('canvas').getContext('2d');
    measure.font = `600 13px ${getComputedStyle(document.documentElement).fontFamily}`;
  }
  return measure.measureText(text).width;
}

/** Splits a vertex name into at most two lines that fit `width` pixels, with … where cut. */
function nameLines(name, width) {
  const fit = (text) => {
    let cut = text;
    while (cut.length > 1 && nameWidth(`${cut}…`) > width) cut = cut.slice(0, -1);
    return `${cut.trimEnd()}…`;
  };
  const words = String(name).split(/(?<=[ >])/);
  const lines = [''];
  for (const [i, word] of words.entries()) {
    const last = lines.length - 1;
    if (nameWidth((lines[last] + word).trimEnd()) <= width) {
      lines[last] += word;
    } else if (lines[last] === '') {
      lines[last] = fit(word);
    } else if (lines.length < 2) {
      lines.push(nameWidth(word.trimEnd()) <= width ? word : fit(word));
    } else {
      lines[last] = fit(lines[last] + words.slice(i).join(''));
      break;
    }
  }
  return lines.map((line) => line.trimEnd());
}

/** The rate on edge source → target: what the target reads, or what the source writes. */
function edgeRate(edge, inputsOf, outputsOf, rates) {
  if (!rates) return undefined;
  if (inputsOf.get(edge.target) === 1) return rates.get(edge.target)?.read;
  if (outputsOf.get(edge.source) === 1) return rates.get(edge.source)?.write;
  return undefined;
}

/** The job graph: dagre lays it out; vertices and edges are SVG elements with data attributes. */
export function jobGraph(plan, details, pressures, { rates, selected, onSelect }) {
  const nodes = (plan.plan && plan.plan.nodes) || [];
  const byId = new Map((details.vertices || []).map((v) => [String(v.id), v]));
  const edges = [];
  for (const node of nodes) {
    for (const input of node.inputs || []) {
      if (input.id !== null && input.id !== undefined) {
        edges.push({ source: String(input.id), target: String(node.id), strategy: input.ship_strategy || '' });
      }
    }
  }
  const inputsOf = new Map();
  const outputsOf = new Map();
  for (const edge of edges) {
    inputsOf.set(edge.target, (inputsOf.get(edge.target) || 0) + 1);
    outputsOf.set(edge.source, (outputsOf.get(edge.source) || 0) + 1);
  }

  const NODE_WIDTH = 250;
  const LINE = 16;
  const names = new Map(nodes.map((node) => {
    const name = node.description || byId.get(String(node.id))?.name || `vertex ${node.id}`;
    return [String(node.id), { name, lines: nameLines(name, NODE_WIDTH - 24) }];
  }));
  /** Name lines, a gap, two lines of figures. */
  const heightOf = (key) => 24 + LINE * (names.get(key).lines.length + 2);
  const graph = new dagre.graphlib.Graph({ multigraph: true });
  graph.setGraph({ rankdir: 'LR', nodesep: 36, ranksep: 110, edgesep: 20, marginx: 16, marginy: 16 });
  graph.setDefaultEdgeLabel(() => ({}));
  for (const node of nodes) graph.setNode(String(node.id), { width: NODE_WIDTH, height: heightOf(String(node.id)) });
  edges.forEach((edge, i) => {
    edge.rate = edgeRate(edge, inputsOf, outputsOf, rates);
    edge.label = `${edge.strategy} · ${formatRate(edge.rate)}`;
    graph.setEdge(edge.source, edge.target, { width: 7 * edge.label.length + 16, height: 22, labelpos: 'c' }, `e${i}`);
  });
  dagre.layout(graph);

  const layout = graph.graph();
  const width = Math.ceil(layout.width || NODE_WIDTH);
  const height = Math.ceil(layout.height || 100);
  const root = svg('svg', {
    class: 'job-graph', id: 'job-graph', viewBox: `0 0 ${width} ${height}`, width, height,
    role: 'img', 'aria-label': `Job graph of ${details.name}`, 'data-vertex-count': nodes.length,
  });
  root.append(svg('defs', null, svg('marker', {
    id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
  }, svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow-head' }))));

  edges.forEach((edge, i) => {
    const laid = graph.edge({ v: edge.source, w: edge.target, name: `e${i}` });
    const points = laid.points || [];
    let d = `M ${points[0].x} ${points[0].y}`;
    for (let p = 1; p < points.length - 1; p += 1) {
      const mid = { x: (points[p].x + points[p + 1].x) / 2, y: (points[p].y + points[p + 1].y) / 2 };
      d += ` Q ${points[p].x} ${points[p].y} ${p === points.length - 2 ? `${points[p + 1].x} ${points[p + 1].y}` : `${mid.x} ${mid.y}`}`;
    }
    if (points.length === 2) d += ` L ${points[1].x} ${points[1].y}`;
    const labelWidth = 7 * edge.label.length + 12;
    root.append(svg('g', {
      class: 'edge', 'data-edge-source': edge.source, 'data-edge-target': edge.target,
      'data-ship-strategy': edge.strategy,
      'data-records-per-second': typeof edge.rate === 'number' ? edge.rate.toFixed(1) : null,
    },
    svg('path', { d, 'marker-end': 'url(#arrow)' }),
    svg('rect', { class: 'edge-label-bg', x: laid.x - labelWidth / 2, y: laid.y - 11, width: labelWidth, height: 22, rx: 11 }),
    svg('text', { class: 'edge-label', x: laid.x, y: laid.y + 4, 'text-anchor': 'middle' }, edge.label)));
  });

  for (const node of nodes) {
    const key = String(node.id);
    const laid = graph.node(key);
    const vertex = byId.get(key) || {};
    const pressure = pressures.get(key) || { level: 'ok', busy: 0, backpressured: 0 };
    const status = vertex.status || '';
    const running = status === 'RUNNING';
    const colours = vertexColours(pressure, running);
    const { name, lines } = names.get(key);
    const nodeHeight = heightOf(key);
    const figures = 22 + LINE * lines.length + 4;
    const group = svg('g', {
      class: `vertex level-${pressure.level}${selected === key ? ' selected' : ''}`,
      transform: `translate(${laid.x - NODE_WIDTH / 2}, ${laid.y - nodeHeight / 2})`,
      'data-vertex-id': key,
      'data-vertex-name': name,
      'data-backpressure-level': pressure.level,
      'data-busy-ratio': pressure.busy.toFixed(3),
      'data-backpressured-ratio': pressure.backpressured.toFixed(3),
      'data-status': status,
      tabindex: 0,
      onclick: () => onSelect(key),
      onkeydown: (e) => { if (e.key === 'Enter') onSelect(key); },
    },
    svg('title', null, `${name}\nparallelism ${node.parallelism}, ${status || 'not deployed'}\nbusy ${percent(pressure.busy)}, backpressured ${percent(pressure.backpressured)} (${pressure.level})`),
    svg('rect', { width: NODE_WIDTH, height: nodeHeight, rx: 8, fill: colours.fill, stroke: colours.stroke, class: 'vertex-box' }),
    lines.map((line, i) => svg('text', { class: 'vertex-name', x: 12, y: 22 + LINE * i }, line)),
    svg('text', { class: 'vertex-meta', x: 12, y: figures }, `Parallelism ${node.parallelism} · ${status || '–'}`),
    svg('text', { class: 'vertex-meta', x: 12, y: figures + LINE }, running
      ? `Busy ${percent(pressure.busy)} · Backpressured ${percent(pressure.backpressured)}`
      : `Records in ${formatCount(vertex.metrics?.['read-records'] ?? vertex.records_in)} · out ${formatCount(vertex.metrics?.['write-records'] ?? vertex.records_out)}`));
    root.append(group);
  }
  return root;
}

export function legend() {
  const swatch = (colours, text) => h('span', { class: 'legend-item' },
    h('span', { class: 'swatch', style: `background:${colours.fill};border-color:${colours.stroke}` }), text);
  return h('div', { class: 'legend' },
    swatch(vertexColours({ level: 'ok', busy: 0 }, true), 'idle'),
    swatch(vertexColours({ level: 'ok', busy: 0.5 }, true), 'busy 50%'),
    swatch(vertexColours({ level: 'ok', busy: 1 }, true), 'busy 100%'),
    swatch(vertexColours({ level: 'low' }, true), 'backpressured 10–50% (low)'),
    swatch(vertexColours({ level: 'high' }, true), 'backpressured > 50% (high)'),
    swatch(vertexColours({}, false), 'not running'),
    h('span', { class: 'muted' }, 'Shares of time of the vertex\'s busiest and most backpressured subtask; edges: partitioning · records/s between refreshes'));
}
