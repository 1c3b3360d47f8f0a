// Weir's dashboard: plain JavaScript modules over the jobmanager's REST API
// (jobmanager/src/rest/mod.rs), no build step.
//
// Pages by hash route: #/ (overview), #/jobs/<id>[/checkpoints|/exceptions|/watermarks],
// #/taskmanagers, #/taskmanagers/<id>. The current page is fetched and drawn again every 2 s,
// except while a form is open. This module holds the routing and refresh, the pages and the
// forms; graph.js draws the job graph (dagre), checkpoints.js the checkpoints tab (Chart.js).

import { ApiError, TERMINAL, api, jobPath, pick, vertexPath } from './api.js';
import { checkpointsTab } from './checkpoints.js';
import { badge, card, h, table } from './dom.js';
import { formatCount, formatDuration, formatRate, formatTime, percent } from './format.js';
import { jobGraph, legend, pressureOf } from './graph.js';

const REFRESH_MS = 2000;
/** How long the answer to a savepoint or stop request is polled for. */
const SAVEPOINT_POLL_LIMIT_MS = 15 * 60 * 1000;
/** Flink's Long.MIN_VALUE watermark (no watermark yet) is below this. */
const NO_WATERMARK_BELOW = -1e15;

const view = document.getElementById('view');
const state = {
  /** Bumped by every render; a render that finds it changed after an await gives up. */
  generation: 0,
  rendering: false,
  /** A form (dialog) is open: no automatic refresh. */
  paused: false,
  /** The route whose page is on screen, and whether it is an error page. */
  shownRoute: null,
  shownError: false,
  /** Chart.js instances on screen (destroyed before the view is replaced). */
  charts: [],
  /** Per job: the previous record counts per vertex and when they were read. */
  samples: new Map(),
  /** Per job: records/s per vertex ({read, write}) between the last two samples. */
  rates: new Map(),
  /** Per job: the vertex whose subtasks are shown. */
  selectedVertex: new Map(),
};

// ---- Notices ----------------------------------------------------------------------------

const notice = document.getElementById('notice');
let noticeTimer = null;

/** Shows `message` under the top bar; errors stay until dismissed, information goes away. */
function notify(message, kind = 'error') {
  clearTimeout(noticeTimer);
  notice.className = `notice notice-${kind}`;
  notice.dataset.kind = kind;
  notice.replaceChildren(
    h('span', { class: 'notice-text' }, message),
    h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss', onclick: () => { notice.hidden = true; } }, '×'));
  notice.hidden = false;
  if (kind !== 'error') noticeTimer = setTimeout(() => { notice.hidden = true; }, 8000);
}

function clearRefreshNotice() {
  if (!notice.hidden && notice.dataset.kind === 'refresh') notice.hidden = true;
}

// ---- Routing and refresh ----------------------------------------------------------------

function parseRoute() {
  const decode = (part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  };
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decode);
  if (parts.length === 0) return { page: 'overview', key: 'overview' };
  if (parts[0] === 'jobs' && parts[1]) {
    const tab = ['checkpoints', 'exceptions', 'watermarks'].includes(parts[2]) ? parts[2] : 'graph';
    return { page: 'job', id: parts[1], tab, key: `job/${parts[1]}/${tab}` };
  }
  if (parts[0] === 'taskmanagers' && parts[1]) return { page: 'taskmanager', id: parts[1], key: `tm/${parts[1]}` };
  if (parts[0] === 'taskmanagers') return { page: 'taskmanagers', key: 'taskmanagers' };
  return { page: 'unknown', key: 'unknown' };
}

function destroyCharts() {
  for (const chart of state.charts) chart.destroy();
  state.charts = [];
}

/** Fetches and draws the current route's page; keeps the page on screen when a refresh fails. */
async function render() {
  const generation = ++state.generation;
  const route = parseRoute();
  for (const link of document.querySelectorAll('[data-nav]')) {
    const active = link.dataset.nav === route.page || (link.dataset.nav === 'taskmanagers' && route.page === 'taskmanager');
    link.classList.toggle('active', active);
  }
  state.rendering = true;
  try {
    const page = await PAGES[route.page](route);
    if (generation !== state.generation) return;
    destroyCharts();
    view.replaceChildren(page.node);
    state.shownRoute = route.key;
    state.shownError = false;
    if (page.after) state.charts = page.after() || [];
    clearRefreshNotice();
    setRefreshState();
  } catch (e) {
    // Not the API's answer: a bug of this page, for the console too.
    if (!(e instanceof ApiError)) console.error(e);
    if (generation !== state.generation) return;
    if (state.shownRoute !== route.key || state.shownError) {
      destroyCharts();
      view.replaceChildren(h('section', { class: 'panel error-page', id: 'page-error' },
        h('h1', null, e.status === 404 ? 'Not found' : 'Cannot show this page'), h('p', null, e.message),
        h('p', null, h('a', { href: '#/' }, 'Back to the overview'))));
      state.shownRoute = route.key;
      state.shownError = true;
    } else {
      notify(`Refresh failed: ${e.message}`, 'error');
      notice.dataset.kind = 'refresh';
    }
  } finally {
    if (generation === state.generation) state.rendering = false;
  }
}

function setRefreshState() {
  const label = document.getElementById('refresh-state');
  label.textContent = state.paused
    ? 'Auto-refresh paused while a form is open'
    : `Auto-refresh every ${REFRESH_MS / 1000} s · updated ${formatTime(Date.now()).slice(11)}`;
}

function tick() {
  if (!state.paused && !state.rendering) render();
}

// ---- Overview ---------------------------------------------------------------------------

function jobRows(jobs) {
  const order = (job) => (TERMINAL.has(job.state) ? 1 : 0);
  return [...jobs]
    .sort((a, b) => order(a) - order(b) || (b['start-time'] || 0) - (a['start-time'] || 0))
    .map((job) => {
      const tasks = job.tasks || {};
      return h('tr', { 'data-job-id': job.jid, 'data-status': job.state },
        h('td', null, h('a', { href: `#/jobs/${encodeURIComponent(job.jid)}`, class: 'job-link' }, job.name || job.jid)),
        h('td', null, badge(job.state)),
        h('td', { class: 'mono small' }, job.jid),
        h('td', null, formatTime(job['start-time'])),
        h('td', null, formatDuration(job.duration)),
        h('td', null, `${tasks.running ?? 0} / ${tasks.total ?? 0} running`));
    });
}

function taskmanagerRows(taskmanagers) {
  return taskmanagers.map((tm) => h('tr', { 'data-taskmanager-id': tm.id },
    h('td', null, h('a', { href: `#/taskmanagers/${encodeURIComponent(tm.id)}` }, tm.id)),
    h('td', { class: 'mono small' }, pick(tm, 'path', 'data_address') ?? '–'),
    h('td', null, String(pick(tm, 'slotsNumber', 'slots') ?? '–')),
    h('td', null, String(pick(tm, 'freeSlots', 'free_slots') ?? '–')),
    h('td', null, heartbeatAge(tm))));
}

function heartbeatAge(tm) {
  const ms = pick(tm, 'timeSinceLastHeartbeat') ?? (typeof tm.seconds_since_heartbeat === 'number' ? tm.seconds_since_heartbeat * 1000 : undefined);
  return typeof ms === 'number' ? `${formatDuration(ms)} ago` : '–';
}

const TASKMANAGER_HEADERS = ['Taskmanager', 'Data address', 'Slots', 'Free slots', 'Last heartbeat'];

async function overviewPage() {
  const [overview, tms, jobs] = await Promise.all([api('/overview'), api('/taskmanagers'), api('/jobs/overview')]);
  const taskmanagers = tms.taskmanagers || [];
  const slotsTotal = pick(overview, 'slots-total', 'slots_total') ?? 0;
  const slotsFree = pick(overview, 'slots-available', 'slots_available') ?? 0;
  const node = h('div', { class: 'page', id: 'overview-page' },
    h('h1', null, 'Cluster overview'),
    h('div', { class: 'cards' },
      card('Taskmanagers', String(pick(overview, 'taskmanagers') ?? taskmanagers.length), { id: 'count-taskmanagers' }),
      card('Task slots free / total', `${slotsFree} / ${slotsTotal}`, { id: 'count-slots' }),
      card('Jobs running', String(pick(overview, 'jobs-running', 'jobs_running') ?? 0), { id: 'count-running' }),
      card('Finished', String(pick(overview, 'jobs-finished', 'jobs_finished') ?? 0)),
      card('Canceled', String(pick(overview, 'jobs-cancelled', 'jobs_cancelled') ?? 0)),
      card('Failed', String(pick(overview, 'jobs-failed', 'jobs_failed') ?? 0))),
    h('section', { class: 'panel' }, h('h2', null, 'Jobs'),
      table(['Name', 'Status', 'Job ID', 'Started', 'Duration', 'Tasks'], jobRows(jobs.jobs || []), { id: 'jobs-table' })),
    h('section', { class: 'panel' }, h('h2', null, 'Taskmanagers'),
      table(TASKMANAGER_HEADERS, taskmanagerRows(taskmanagers), { id: 'taskmanagers-table' })),
    h('p', { class: 'muted small' }, `Weir ${pick(overview, 'weir_version', 'flink-version') ?? ''}`));
  return { node };
}

// ---- Taskmanagers -----------------------------------------------------------------------

async function taskmanagersPage() {
  const tms = await api('/taskmanagers');
  const node = h('div', { class: 'page', id: 'taskmanagers-page' },
    h('h1', null, 'Taskmanagers'),
    h('section', { class: 'panel' }, table(TASKMANAGER_HEADERS, taskmanagerRows(tms.taskmanagers || []), { id: 'taskmanagers-table' })));
  return { node };
}

async function taskmanagerPage(route) {
  const [tm, jobs] = await Promise.all([api(`/taskmanagers/${encodeURIComponent(route.id)}`), api('/jobs/overview')]);
  // The subtasks it runs: every job that has not ended, vertex by vertex.
  const live = (jobs.jobs || []).filter((job) => !TERMINAL.has(job.state));
  const details = await Promise.all(live.map((job) => api(jobPath(job.jid)).catch(() => null)));
  const rows = [];
  for (const job of details.filter(Boolean)) {
    for (const vertex of job.vertices || []) {
      for (const subtask of vertex.subtasks || []) {
        if (pick(subtask, 'taskmanager', 'taskmanager-id') !== tm.id) continue;
        rows.push(h('tr', null,
          h('td', null, h('a', { href: `#/jobs/${encodeURIComponent(job.jid)}` }, job.name)),
          h('td', null, vertex.name),
          h('td', null, `${subtask.subtask + 1} / ${vertex.parallelism}`),
          h('td', null, badge(String(pick(subtask, 'status', 'state') || '').toUpperCase())),
          h('td', null, formatCount(pick(subtask, 'records_in'))),
          h('td', null, formatCount(pick(subtask, 'records_out')))));
      }
    }
  }
  const node = h('div', { class: 'page', id: 'taskmanager-page', 'data-taskmanager-id': tm.id },
    h('p', { class: 'crumbs' }, h('a', { href: '#/taskmanagers' }, 'Taskmanagers'), ' / ', tm.id),
    h('h1', null, tm.id),
    h('p', { class: 'muted' }, 'Data address ', h('span', { class: 'mono' }, pick(tm, 'path', 'data_address') ?? '–')),
    h('div', { class: 'cards' },
      card('Slots', String(pick(tm, 'slotsNumber', 'slots') ?? '–')),
      card('Free slots', String(pick(tm, 'freeSlots', 'free_slots') ?? '–')),
      card('Last heartbeat', heartbeatAge(tm))),
    h('section', { class: 'panel' }, h('h2', null, 'Subtasks running here'),
      table(['Job', 'Vertex', 'Subtask', 'Status', 'Records in', 'Records out'], rows, { id: 'taskmanager-subtasks' })));
  return { node };
}

// ---- Job page ---------------------------------------------------------------------------

/** Records read and written per vertex of `details`, and their rates since the last sample. */
function updateRates(id, details) {
  const now = typeof details.now === 'number' ? details.now : Date.now();
  const counts = new Map();
  for (const vertex of details.vertices || []) {
    const metrics = vertex.metrics || {};
    counts.set(String(vertex.id), {
      read: pick(metrics, 'read-records') ?? vertex.records_in ?? 0,
      write: pick(metrics, 'write-records') ?? vertex.records_out ?? 0,
    });
  }
  // A sample from an earlier visit to the page would give an average over that long: dropped.
  const kept = state.samples.get(id);
  const previous = kept && now - kept.at <= 4 * REFRESH_MS ? kept : undefined;
  if (!previous) state.rates.delete(id);
  if (previous && now - previous.at >= 500) {
    const seconds = (now - previous.at) / 1000;
    const rates = new Map();
    for (const [vertex, c] of counts) {
      const p = previous.counts.get(vertex);
      // A restart resets the counts: no rate for that interval.
      if (p && c.read >= p.read && c.write >= p.write) {
        rates.set(vertex, { read: (c.read - p.read) / seconds, write: (c.write - p.write) / seconds });
      }
    }
    state.rates.set(id, rates);
  }
  if (!previous || now - previous.at >= 500) state.samples.set(id, { at: now, counts });
  if (TERMINAL.has(details.state)) {
    state.rates.set(id, new Map([...counts.keys()].map((vertex) => [vertex, { read: 0, write: 0 }])));
  }
}

function selectVertex(job, vertex) {
  state.selectedVertex.set(job, state.selectedVertex.get(job) === vertex ? undefined : vertex);
  render();
}

function vertexTable(id, details, pressures) {
  const rates = state.rates.get(id);
  const rows = (details.vertices || []).map((vertex) => {
    const key = String(vertex.id);
    const pressure = pressures.get(key) || { level: 'ok', busy: 0, backpressured: 0 };
    const metrics = vertex.metrics || {};
    const tasks = vertex.tasks || {};
    const rate = rates && rates.get(key);
    return h('tr', {
      'data-vertex-id': key, class: `clickable${state.selectedVertex.get(id) === key ? ' selected' : ''}`,
      onclick: () => selectVertex(id, key),
    },
    h('td', null, vertex.name),
    h('td', null, String(vertex.parallelism)),
    h('td', null, badge(vertex.status)),
    h('td', null, `${tasks.running ?? 0} / ${tasks.total || vertex.parallelism}`),
    h('td', { class: 'num' }, formatCount(pick(metrics, 'read-records') ?? vertex.records_in)),
    h('td', { class: 'num' }, formatCount(pick(metrics, 'write-records') ?? vertex.records_out)),
    h('td', { class: 'num' }, rate ? formatRate(rate.read) : '–'),
    h('td', { class: 'num' }, rate ? formatRate(rate.write) : '–'),
    h('td', { class: 'num' }, percent(pressure.busy)),
    h('td', { class: 'num' }, percent(pressure.backpressured)),
    h('td', null, h('span', { class: `level level-${pressure.level}` }, pressure.level)));
  });
  return table(['Vertex', 'Parallelism', 'Status', 'Tasks running', 'Records in', 'Records out', 'In/s', 'Out/s', 'Busy', 'Backpressured', 'Backpressure'], rows, { id: 'vertex-table' });
}

function subtaskPanel(vertex) {
  const rows = (vertex.subtasks || []).map((s) => h('tr', { 'data-subtask': s.subtask },
    h('td', null, String(s.subtask)),
    h('td', null, badge(s.status)),
    h('td', null, s['taskmanager-id'] ? h('a', { href: `#/taskmanagers/${encodeURIComponent(s['taskmanager-id'])}` }, s['taskmanager-id']) : '–'),
    h('td', { class: 'mono small' }, s.endpoint || '–'),
    h('td', { class: 'num' }, formatCount(s.metrics?.['read-records'])),
    h('td', { class: 'num' }, formatCount(s.metrics?.['write-records'])),
    h('td', { class: 'num' }, typeof s.busy_permille === 'number' ? percent(s.busy_permille / 1000) : '–'),
    h('td', { class: 'num' }, typeof s.backpressured_permille === 'number' ? percent(s.backpressured_permille / 1000) : '–')));
  return h('section', { class: 'panel', id: 'subtasks-panel', 'data-vertex-id': vertex.id },
    h('h2', null, `Subtasks of ${vertex.name}`),
    table(['Subtask', 'Status', 'Taskmanager', 'Endpoint', 'Records in', 'Records out', 'Busy', 'Backpressured'], rows));
}

async function graphTab(id, details) {
  const vertices = details.vertices || [];
  const selected = state.selectedVertex.get(id);
  const [plan, answers, subtasks] = await Promise.all([
    api(`${jobPath(id)}/plan`),
    Promise.all(vertices.map((v) => api(`${vertexPath(id, v.id)}/backpressure`).catch(() => null))),
    selected !== undefined ? api(vertexPath(id, selected)).catch(() => null) : null,
  ]);
  const pressures = new Map(vertices.map((v, i) => [String(v.id), pressureOf(v, answers[i])]));
  return [
    h('section', { class: 'panel graph-panel' },
      h('h2', null, 'Job graph'),
      h('div', { class: 'graph-scroll' }, jobGraph(plan, details, pressures, {
        rates: state.rates.get(id), selected, onSelect: (vertex) => selectVertex(id, vertex),
      })),
      legend()),
    h('section', { class: 'panel' }, h('h2', null, 'Vertices'), vertexTable(id, details, pressures),
      h('p', { class: 'muted small' }, 'Select a vertex to see its subtasks.')),
    subtasks ? subtaskPanel(subtasks) : null,
  ];
}

// ---- Exceptions and watermarks ----------------------------------------------------------

async function exceptionsTab(id) {
  const body = await api(`${jobPath(id)}/exceptions`);
  const entries = (body.exceptionHistory && body.exceptionHistory.entries) || [];
  const rows = entries.map((e) => h('tr', { class: 'exception' },
    h('td', null, formatTime(e.timestamp)),
    h('td', null, e.taskName || '–'),
    h('td', null, e.taskManagerId ? h('a', { href: `#/taskmanagers/${encodeURIComponent(e.taskManagerId)}` }, e.taskManagerId) : '–'),
    h('td', null, h('pre', { class: 'stacktrace' }, e.stacktrace || e.exceptionName || ''))));
  return {
    nodes: [h('section', { class: 'panel', id: 'exceptions' }, h('h2', null, 'Exceptions'),
      body['root-exception'] ? h('p', null, h('strong', null, 'Root cause: '), body['root-exception']) : h('p', { class: 'muted' }, 'No failures.'),
      table(['Time', 'Task', 'Taskmanager', 'Message'], rows, { id: 'exceptions-table' }))],
  };
}

async function watermarksTab(id, details) {
  const vertices = details.vertices || [];
  const answers = await Promise.all(vertices.map((v) => api(`${vertexPath(id, v.id)}/watermarks`).catch(() => [])));
  const rows = [];
  vertices.forEach((vertex, i) => {
    for (const mark of answers[i] || []) {
      const value = Number(mark.value);
      const has = Number.isFinite(value) && value > NO_WATERMARK_BELOW;
      rows.push(h('tr', { 'data-vertex-id': vertex.id },
        h('td', null, vertex.name),
        h('td', null, String(mark.id).split('.')[0]),
        h('td', null, has ? formatTime(value) : 'no watermark yet'),
        h('td', { class: 'mono small' }, has ? String(value) : '')));
    }
  });
  return {
    nodes: [h('section', { class: 'panel', id: 'watermarks' }, h('h2', null, 'Input watermarks'),
      h('p', { class: 'muted small' }, 'Each subtask\'s input watermark (event time) as of its taskmanager\'s last heartbeat.'),
      table(['Vertex', 'Subtask', 'Watermark', 'Value (ms)'], rows, { id: 'watermarks-table' }))],
  };
}

// ---- Job page and its actions -----------------------------------------------------------

async function jobPage(route) {
  const id = route.id;
  const details = await api(jobPath(id));
  updateRates(id, details);
  let content;
  if (route.tab === 'checkpoints') content = await checkpointsTab(id);
  else if (route.tab === 'exceptions') content = await exceptionsTab(id);
  else if (route.tab === 'watermarks') content = await watermarksTab(id, details);
  else content = { nodes: await graphTab(id, details) };

  const status = details.state;
  const ended = TERMINAL.has(status);
  const exceptions = (details.exceptions || []).length;
  const base = `#/jobs/${encodeURIComponent(id)}`;
  const tabLink = (tab, label) => h('a', {
    href: tab === 'graph' ? base : `${base}/${tab}`, 'data-tab': tab, class: route.tab === tab ? 'active' : null,
  }, label);
  const tabs = [
    tabLink('graph', 'Graph'),
    tabLink('checkpoints', 'Checkpoints'),
    tabLink('exceptions', exceptions ? `Exceptions (${exceptions})` : 'Exceptions'),
    tabLink('watermarks', 'Watermarks'),
  ];
  const action = (name, label, title, handler, danger) => h('button', {
    type: 'button', id: `job-${name}`, 'data-action': name, class: danger ? 'danger' : null, title, disabled: ended, onclick: handler,
  }, label);
  const node = h('div', { class: 'page', id: 'job-page', 'data-job-id': id, 'data-status': status },
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Jobs'), ' / ', details.name),
    h('div', { class: 'job-head' },
      h('div', null,
        h('h1', { id: 'job-name' }, details.name),
        h('div', { class: 'job-meta' },
          h('span', { id: 'job-status', 'data-status': status, class: `badge status-${String(status).toLowerCase()}` }, status),
          h('span', null, 'ID ', h('span', { class: 'mono' }, details.jid)),
          h('span', null, `Started ${formatTime(pick(details, 'start-time', 'start_time'))}`),
          h('span', { id: 'job-duration' }, `Duration ${formatDuration(pick(details, 'duration', 'duration_ms'))}`),
          details.restarts ? h('span', null, `Restarts ${details.restarts}`) : null,
          details.state_backend ? h('span', null, `State ${details.state_backend}`) : null)),
      h('div', { class: 'actions' },
        action('savepoint', 'Savepoint', 'Take a savepoint; the job goes on', () => openSavepoint(id, 'savepoint')),
        action('stop', 'Stop', 'Stop the job with a savepoint', () => openSavepoint(id, 'stop')),
        action('cancel', 'Cancel', 'Cancel the job (no savepoint)', () => cancelJob(id, details.name), true))),
    details.failure ? h('p', { class: 'failure' }, h('strong', null, 'Failure: '), details.failure) : null,
    (details.warnings || []).length ? h('ul', { class: 'warnings' }, details.warnings.map((w) => h('li', null, w))) : null,
    h('nav', { class: 'tabs' }, tabs),
    content.nodes);
  return { node, after: content.after };
}

async function cancelJob(id, name) {
  if (!window.confirm(`Cancel job "${name}"? Its tasks stop without a savepoint.`)) return;
  try {
    await api(`${jobPath(id)}?mode=cancel`, { method: 'PATCH' });
    notify(`Cancellation of "${name}" requested.`, 'info');
  } catch (e) {
    notify(`Cancel failed: ${e.message}`);
  }
  render();
}

// ---- Dialogs (refresh pauses while one is open) -----------------------------------------

function openDialog(dialog) {
  for (const error of dialog.querySelectorAll('.form-error, .form-status')) error.hidden = true;
  state.paused = true;
  setRefreshState();
  dialog.showModal();
}

function formMessage(dialog, selector, message) {
  const element = dialog.querySelector(selector);
  element.textContent = message;
  element.hidden = !message;
}

for (const dialog of document.querySelectorAll('dialog')) {
  dialog.addEventListener('close', () => {
    state.paused = [...document.querySelectorAll('dialog')].some((d) => d.open);
    if (!state.paused) render();
  });
  for (const button of dialog.querySelectorAll('[data-close]')) button.addEventListener('click', () => dialog.close());
}

const submitDialog = document.getElementById('submit-dialog');
document.getElementById('submit-job').addEventListener('click', () => openDialog(submitDialog));

document.getElementById('submit-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.target;
  const button = document.getElementById('submit-confirm');
  const file = document.getElementById('submit-plugin').files[0];
  if (!file) {
    formMessage(submitDialog, '.form-error', 'Choose the job\'s plugin (.so) file.');
    return;
  }
  const body = new FormData();
  body.append('plugin', file, file.name);
  const args = form.args.value.trim();
  if (args) body.append('args', args);
  if (form.parallelism.value.trim()) body.append('parallelism', form.parallelism.value.trim());
  if (form.checkpoint_interval.value.trim()) body.append('checkpoint_interval', form.checkpoint_interval.value.trim());
  button.disabled = true;
  formMessage(submitDialog, '.form-error', '');
  try {
    const answer = await api('/jobs', { method: 'POST', body });
    submitDialog.close();
    form.reset();
    const warnings = answer.warnings || [];
    notify(`Job ${answer.jobid} submitted.${warnings.length ? ` Warnings: ${warnings.join('; ')}` : ''}`, warnings.length ? 'warning' : 'info');
    location.hash = `#/jobs/${encodeURIComponent(answer.jobid)}`;
  } catch (e) {
    formMessage(submitDialog, '.form-error', e.message);
  } finally {
    button.disabled = false;
  }
});

const savepointDialog = document.getElementById('savepoint-dialog');
/** The job and kind (savepoint or stop) the savepoint dialog is open for. */
let savepointTarget = null;

function openSavepoint(id, kind) {
  savepointTarget = { id, kind };
  savepointDialog.dataset.kind = kind;
  savepointDialog.querySelector('[data-title]').textContent = kind === 'stop' ? 'Stop with a savepoint' : 'Trigger a savepoint';
  savepointDialog.querySelector('[data-help]').textContent = kind === 'stop'
    ? 'The sources stop after the savepoint\'s barrier; the job then finishes.'
    : 'The job goes on running; the savepoint can start the job again later.';
  savepointDialog.querySelector('[data-drain-row]').hidden = kind !== 'stop';
  document.getElementById('savepoint-confirm').disabled = false;
  openDialog(savepointDialog);
}

document.getElementById('savepoint-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  if (!savepointTarget) return;
  const { id, kind } = savepointTarget;
  const button = document.getElementById('savepoint-confirm');
  const target = document.getElementById('savepoint-target').value.trim();
  const drain = document.getElementById('savepoint-drain').checked;
  // Flink's bodies: kebab case for savepoints, camel case for stop.
  const request = kind === 'stop'
    ? { ...(target ? { targetDirectory: target } : {}), drain }
    : { ...(target ? { 'target-directory': target } : {}), 'cancel-job': false };
  button.disabled = true;
  formMessage(savepointDialog, '.form-error', '');
  try {
    const answer = await api(`${jobPath(id)}/${kind === 'stop' ? 'stop' : 'savepoints'}`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json' }, body: JSON.stringify(request),
    });
    const requestId = answer['request-id'];
    formMessage(savepointDialog, '.form-status', `Request ${requestId}: in progress…`);
    const deadline = Date.now() + SAVEPOINT_POLL_LIMIT_MS;
    while (savepointDialog.open && Date.now() < deadline) {
      const status = await api(`${jobPath(id)}/savepoints/${encodeURIComponent(requestId)}`);
      if (status.status && status.status.id === 'COMPLETED') {
        const operation = status.operation || {};
        if (operation['failure-cause']) {
          formMessage(savepointDialog, '.form-status', '');
          formMessage(savepointDialog, '.form-error', `The savepoint failed: ${operation['failure-cause']['stack-trace'] || operation['failure-cause'].class}`);
        } else {
          const done = kind === 'stop' ? 'Stopped with the savepoint' : 'Savepoint completed';
          formMessage(savepointDialog, '.form-status', `${done}: ${operation.location}`);
          notify(`${done}: ${operation.location}`, 'info');
        }
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } catch (e) {
    formMessage(savepointDialog, '.form-status', '');
    formMessage(savepointDialog, '.form-error', e.message);
    button.disabled = false;
  }
});

// ---- Start ------------------------------------------------------------------------------

async function unknownPage() {
  return { node: h('section', { class: 'panel error-page' }, h('h1', null, 'Not found'), h('p', null, `No page at ${location.hash}.`), h('p', null, h('a', { href: '#/' }, 'Back to the overview'))) };
}

const PAGES = {
  overview: overviewPage,
  taskmanagers: taskmanagersPage,
  taskmanager: taskmanagerPage,
  job: jobPage,
  unknown: unknownPage,
};

window.addEventListener('hashchange', () => {
  window.scrollTo(0, 0);
  render();
});
setInterval(tick, REFRESH_MS);
render();
