// The checkpoints tab: Flink's `GET /jobs/{id}/checkpoints` as counts, a chart of durations and
// one of sizes (Chart.js, vendor/chart.umd.min.js, the global `Chart`), the history table, the
// latest checkpoints and the summary; "checkpointing off" when the job has none.

import { api, jobPath } from './api.js';
import { badge, card, h, table } from './dom.js';
import { formatBytes, formatDuration, formatTime } from './format.js';

/** The answer of `GET /jobs/{id}/checkpoints` (Flink's shape), with defaults for what is absent. */
function checkpointReport(body) {
  const counts = body.counts || {};
  const latest = body.latest || {};
  return {
    counts: {
      total: counts.total ?? 0,
      in_progress: counts.in_progress ?? 0,
      completed: counts.completed ?? 0,
      failed: counts.failed ?? 0,
      restored: counts.restored ?? 0,
    },
    summary: body.summary || null,
    latest: {
      completed: latest.completed || null,
      savepoint: latest.savepoint || null,
      failed: latest.failed || null,
      restored: latest.restored || null,
    },
    history: body.history || [],
  };
}

function checkpointRows(history) {
  return history.map((c) => h('tr', { 'data-checkpoint-id': c.id, 'data-checkpoint-status': c.status },
    h('td', { class: 'num' }, String(c.id)),
    h('td', null, badge(c.status)),
    h('td', null, c.is_savepoint ? 'savepoint' : 'checkpoint'),
    h('td', null, formatTime(c.trigger_timestamp)),
    h('td', { class: 'num' }, formatDuration(c.end_to_end_duration)),
    h('td', { class: 'num' }, formatBytes(c.checkpointed_size)),
    h('td', { class: 'num' }, formatBytes(c.state_size)),
    h('td', null, c.num_subtasks !== undefined ? `${c.num_acknowledged_subtasks ?? 0} / ${c.num_subtasks}` : '–'),
    h('td', { class: 'small wrap' }, c.failure_message || c.external_path || '')));
}

function latestPanel(latest) {
  const line = (label, c, text) => h('div', { class: 'kv' }, h('span', { class: 'k' }, label), h('span', { class: 'v' }, c ? text(c) : 'none'));
  const done = (c) => `#${c.id} at ${formatTime(c.latest_ack_timestamp ?? c.trigger_timestamp)}, ${formatDuration(c.end_to_end_duration)}, ${formatBytes(c.state_size)}${c.external_path ? ` · ${c.external_path}` : ''}`;
  return h('section', { class: 'panel', id: 'checkpoints-latest' }, h('h2', null, 'Latest'),
    line('Completed', latest.completed, done),
    line('Savepoint', latest.savepoint, done),
    line('Failed', latest.failed, (c) => `#${c.id} at ${formatTime(c.trigger_timestamp)}: ${c.failure_message || 'no reason given'}`),
    line('Restored', latest.restored, (r) => `#${r.id} at ${formatTime(r.restore_timestamp)}${r.is_savepoint ? ' (savepoint)' : ''}${r.external_path ? ` · ${r.external_path}` : ''}`));
}

function summaryPanel(summary) {
  if (!summary) return null;
  const stats = ['min', 'avg', 'p50', 'p90', 'p99', 'max'];
  const rows = [['end_to_end_duration', 'End-to-end duration', formatDuration], ['checkpointed_size', 'Checkpointed size', formatBytes], ['state_size', 'Full state size', formatBytes]]
    .filter(([key]) => summary[key])
    .map(([key, label, format]) => h('tr', null, h('td', null, label), stats.map((s) => h('td', { class: 'num' }, format(summary[key][s])))));
  return h('section', { class: 'panel', id: 'checkpoints-summary' }, h('h2', null, 'Summary of completed checkpoints'),
    table(['', 'Minimum', 'Average', 'p50', 'p90', 'p99', 'Maximum'], rows));
}

const STATUS_COLOURS = { COMPLETED: '#3b7dd8', FAILED: '#c0392b', IN_PROGRESS: '#9aa5b1' };

/** Charts of the finished checkpoints, oldest first: durations (failed ones in red) and sizes. */
function checkpointCharts(history) {
  const points = [...history].filter((c) => c.status !== 'IN_PROGRESS').reverse();
  const completed = points.filter((c) => c.status === 'COMPLETED');
  const holder = (name, title, count) => h('div', { class: 'chart', 'data-chart': name, 'data-points': count },
    h('h3', null, title), h('div', { class: 'chart-canvas' }, h('canvas', { 'aria-label': title, role: 'img' })));
  const durations = holder('durations', 'End-to-end duration (failed in red)', points.length);
  const sizes = holder('sizes', 'Size of completed checkpoints', completed.length);
  const node = h('section', { class: 'panel charts' }, durations, sizes);
  /** Draws the charts once `node` is in the page; returns them (to be destroyed with the page). */
  const after = () => {
    if (typeof Chart === 'undefined' || points.length === 0) return [];
    const charts = [];
    const labels = points.map((c) => `#${c.id}`);
    const completedLabels = completed.map((c) => `#${c.id}`);
    const common = {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      scales: { x: { grid: { display: false } }, y: { beginAtZero: true } },
    };
    charts.push(new Chart(durations.querySelector('canvas'), {
      type: 'bar',
      data: {
        labels,
        datasets: [{
          label: 'Duration',
          data: points.map((c) => c.end_to_end_duration ?? null),
          backgroundColor: points.map((c) => STATUS_COLOURS[c.status] || STATUS_COLOURS.IN_PROGRESS),
        }],
      },
      options: {
        ...common,
        plugins: { legend: { display: false }, tooltip: { callbacks: { label: (item) => `${formatDuration(item.parsed.y)} (${points[item.dataIndex].status})` } } },
        scales: { ...common.scales, y: { beginAtZero: true, ticks: { callback: (v) => formatDuration(Number(v)) } } },
      },
    }));
    charts.push(new Chart(sizes.querySelector('canvas'), {
      type: 'bar',
      data: {
        labels: completedLabels,
        datasets: [
          { type: 'bar', label: 'Checkpointed size', data: completed.map((c) => c.checkpointed_size ?? null), backgroundColor: '#7fb3e6' },
          { type: 'line', label: 'Full state size', data: completed.map((c) => c.state_size ?? null), borderColor: '#1f3a5f', backgroundColor: '#1f3a5f', pointRadius: 2 },
        ],
      },
      options: {
        ...common,
        plugins: { legend: { position: 'bottom' }, tooltip: { callbacks: { label: (item) => `${item.dataset.label}: ${formatBytes(item.parsed.y)}` } } },
        scales: { ...common.scales, y: { beginAtZero: true, ticks: { callback: (v) => formatBytes(Number(v)) } } },
      },
    }));
    return charts;
  };
  return { node, after };
}

export async function checkpointsTab(id) {
  let report;
  try {
    report = checkpointReport(await api(`${jobPath(id)}/checkpoints`));
  } catch (e) {
    // The job exists (its details were read): a 404 here means checkpointing is off.
    if (e.status === 404) {
      return { nodes: [h('section', { class: 'panel', id: 'checkpointing-off' }, h('h2', null, 'Checkpointing off'),
        h('p', { class: 'muted' }, e.message))] };
    }
    throw e;
  }
  const { counts } = report;
  const charts = checkpointCharts(report.history);
  return {
    nodes: [
      h('div', { class: 'cards', id: 'checkpoint-counts' },
        card('Triggered', String(counts.total), { 'data-count': 'total' }),
        card('In progress', String(counts.in_progress), { 'data-count': 'in_progress' }),
        card('Completed', String(counts.completed), { 'data-count': 'completed' }),
        card('Failed', String(counts.failed), { 'data-count': 'failed' }),
        card('Restored', String(counts.restored), { 'data-count': 'restored' })),
      charts.node,
      h('section', { class: 'panel' }, h('h2', null, 'History (newest first)'),
        table(['ID', 'Status', 'Type', 'Triggered', 'Duration', 'Checkpointed', 'State size', 'Acknowledged', 'Failure or path'],
          checkpointRows(report.history), { id: 'checkpoint-history' })),
      latestPanel(report.latest),
      summaryPanel(report.summary),
    ],
    after: charts.after,
  };
}
