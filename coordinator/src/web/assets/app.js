// Orca's web dashboard: one script, no framework, no build step. Every value from the API
// is shown as text (createElement + textContent), never parsed as markup.
(function () {
'use strict';

const TOKEN_KEY = 'orca-token';
const SVGNS = 'http://www.w3.org/2000/svg';
const TASK_STATES = ['waiting', 'pending', 'in_progress', 'completed', 'failed', 'cancelled'];
const FINAL = ['completed', 'failed', 'cancelled'];
const JOB_STATES = ['active', 'completed', 'failed', 'cancelled'];
const TASK_PAGE = 50;
const JOBS_PAGE = 100;
const GRAPH_MAX = 50;

// ---------------------------------------------------------------- pure helpers

const num = (n) => Number(n || 0).toLocaleString();
const enc = encodeURIComponent;
const isFinal = (s) => FINAL.includes(s);

function fmtDur(ms) {
  ms = Math.max(0, Number(ms) || 0);
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (ms < 59950) return (ms / 1000).toFixed(1) + ' s';
  const t = Math.round(ms / 1000);
  const m = Math.floor(t / 60);
  if (m < 60) return m + ' m ' + (t % 60) + ' s';
  const h = Math.floor(m / 60);
  if (h < 48) return h + ' h ' + (m % 60) + ' m';
  return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
}

function fmtAge(ms) {
  const s = Math.max(0, Math.round((Number(ms) || 0) / 1000));
  if (s < 60) return s + ' s ago';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' m ago';
  const h = Math.floor(m / 60);
  if (h < 48) return h + ' h ago';
  return Math.floor(h / 24) + ' d ago';
}

function fmtTime(ms) {
  if (!ms) return '–';
  const d = new Date(Number(ms));
  const t = d.toLocaleTimeString();
  return d.toDateString() === new Date().toDateString() ? t : d.toLocaleDateString() + ' ' + t;
}

const fmtCost = (usd) => '$' + (Number(usd) || 0).toFixed(4);

function fmtBytes(b) {
  b = Number(b) || 0;
  if (b < 1024) return b + ' B';
  const units = ['KB', 'MB', 'GB', 'TB'];
  let i = -1;
  do { b /= 1024; i++; } while (b >= 1024 && i < units.length - 1);
  return b.toFixed(b < 10 ? 1 : 0) + ' ' + units[i];
}

const fmtRate = (r) => (Number(r) || 0).toFixed(Number(r) >= 10 ? 1 : 2);
const finalOf = (s) => (Number(s.completed) || 0) + (Number(s.failed) || 0) + (Number(s.cancelled) || 0);
const pctOf = (s) => Math.max(0, Math.min(100, Number(s.progress_pct) || 0));
const progressShort = (s) => num(finalOf(s)) + '/' + num(s.total_tasks);
const progressLong = (s) => num(finalOf(s)) + ' of ' + num(s.total_tasks) + ' tasks final (' + num(s.completed) +
  ' completed, ' + num(s.failed) + ' failed, ' + num(s.cancelled) + ' cancelled)';
const clip = (s, n) => { s = String(s || ''); return s.length > n ? s.slice(0, n - 1) + '…' : s; };
const firstLine = (s) => String(s || '').split('\n').find((l) => l.trim()) || '';

// A server-sent events parser: feed it decoded text in chunks of any size; it calls
// onEvent({event, data, id}) for each event (a blank line ends one; `:` lines are comments).
function sseParser(onEvent) {
  let buf = '';
  let ev = { event: '', data: [], id: '' };
  function line(l) {
    if (l === '') {
      if (ev.data.length) onEvent({ event: ev.event || 'message', data: ev.data.join('\n'), id: ev.id });
      ev = { event: '', data: [], id: ev.id };
      return;
    }
    if (l[0] === ':') return;
    const i = l.indexOf(':');
    const field = i < 0 ? l : l.slice(0, i);
    let value = i < 0 ? '' : l.slice(i + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'event') ev.event = value;
    else if (field === 'data') ev.data.push(value);
    else if (field === 'id') ev.id = value;
  }
  return function push(chunk) {
    buf += chunk;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buf);
      if (!m) break;
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (m[0] === '\r' && m.index === buf.length - 1) break;
      line(buf.slice(0, m.index));
      buf = buf.slice(m.index + m[0].length);
    }
  };
}

// Columns of a dependency graph: depth = 1 + the deepest of a task's dependencies
// (depends_on and parent_task_id within the set), roots at 0; ids in order in a column.
function depthLayout(tasks) {
  const byId = new Map(tasks.map((t) => [Number(t.task_id), t]));
  const depsOf = (t) => {
    const d = (t.depends_on || []).map(Number);
    if (t.parent_task_id != null && t.parent_task_id !== 0) d.push(Number(t.parent_task_id));
    return d.filter((x, i) => byId.has(x) && x !== Number(t.task_id) && d.indexOf(x) === i);
  };
  const depth = new Map();
  const visiting = new Set();
  const visit = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id)) return 0; // a cycle: cut it
    visiting.add(id);
    let d = 0;
    for (const p of depsOf(byId.get(id))) d = Math.max(d, 1 + visit(p));
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  const ids = [...byId.keys()].sort((a, b) => a - b);
  ids.forEach(visit);
  const columns = [];
  for (const id of ids) (columns[depth.get(id)] = columns[depth.get(id)] || []).push(id);
  const edges = [];
  for (const id of ids) {
    const t = byId.get(id);
    for (const p of depsOf(t)) edges.push({ from: p, to: id, parent: Number(t.parent_task_id) === p });
  }
  return { depth, columns: columns.map((c) => c || []), edges };
}

function parseRoute(path) {
  path = String(path || '/').replace(/\/+$/, '') || '/';
  if (path === '/') return { name: 'overview' };
  if (path === '/jobs') return { name: 'jobs' };
  if (path === '/workers') return { name: 'workers' };
  let m = /^\/jobs\/([^/]+)$/.exec(path);
  if (m) {
    try { return { name: 'job', id: decodeURIComponent(m[1]) }; } catch (_) { return { name: 'notfound' }; }
  }
  m = /^\/tasks\/(\d+)$/.exec(path);
  if (m) return { name: 'task', id: Number(m[1]) };
  return { name: 'notfound' };
}

function workerState(w) {
  if (!w.connected) return 'disconnected';
  return w.draining ? 'draining' : 'connected';
}

const labelsText = (labels) => Object.keys(labels || {}).sort().map((k) => k + '=' + labels[k]).join(', ');

const helpers = { fmtDur, fmtAge, fmtTime, fmtCost, fmtBytes, fmtRate, finalOf, progressShort, progressLong,
  sseParser, depthLayout, parseRoute, workerState, labelsText, clip };
if (typeof module === 'object' && module && module.exports) module.exports = helpers;
if (typeof document === 'undefined') return;

// ---------------------------------------------------------------- DOM helpers

const $ = (id) => document.getElementById(id);

function add(el, kids) {
  for (const k of kids) {
    if (k == null || k === false) continue;
    if (Array.isArray(k)) add(el, k);
    else el.append(typeof k === 'object' ? k : String(k));
  }
  return el;
}

function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  for (const k in props || {}) {
    const v = props[k];
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  return add(el, kids);
}

function sv(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  for (const k in attrs || {}) if (attrs[k] != null) el.setAttribute(k, String(attrs[k]));
  for (const k of kids) if (k != null) el.append(typeof k === 'object' ? k : String(k));
  return el;
}

const link = (href, text, cls) => h('a', { href, 'data-nav': true, class: cls }, text);
const jobHref = (id) => '/jobs/' + enc(id);
const taskLink = (id, text) => link('/tasks/' + enc(id), text == null ? String(id) : text, 'mono');
const badge = (state, id) => h('span', { class: 'badge st-' + state, id }, state);
const thead = (cols) => h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, c))));
const card = (title, cls, ...kids) => h('div', { class: 'card ' + (cls || '') }, title && h('h2', null, title), kids);
const empty = (text) => h('p', { class: 'empty' }, text);
const mono = (text) => h('span', { class: 'mono' }, text);
const emptyRow = (cols, text) => h('tr', null, h('td', { colspan: cols, class: 'empty' }, text));

function bar(pct, cls) {
  const fill = h('div', { class: 'fill' });
  fill.style.width = pct.toFixed(1) + '%';
  return h('div', { class: 'bar ' + (cls || '') }, fill);
}

function kv(rows) {
  const dl = h('dl', { class: 'kv' });
  for (const [k, v] of rows) {
    if (v == null || v === '' || (Array.isArray(v) && !v.length)) continue;
    dl.append(h('dt', null, k), h('dd', null, v));
  }
  return dl;
}

function countsBox(id, status, withTotal) {
  const box = h('div', { id, class: 'counts' });
  const items = (withTotal ? ['total'] : []).concat(TASK_STATES);
  for (const s of items) {
    box.append(h('div', { class: 'count st-' + s, 'data-state': s },
      h('span', { class: 'n' }, num(s === 'total' ? status.total_tasks : status[s])),
      h('span', { class: 'l' }, s.replace('_', ' '))));
  }
  return box;
}

function setCounts(box, status) {
  for (const el of box.querySelectorAll('[data-state]')) {
    const s = el.getAttribute('data-state');
    el.querySelector('.n').textContent = num(s === 'total' ? status.total_tasks : status[s]);
  }
}

function setBadge(el, state) {
  el.className = el.className.replace(/\bst-\S+/g, '').trim() + ' st-' + state;
  el.textContent = state;
}

// ---------------------------------------------------------------- session, errors, API

const S = { ctx: null, session: null, skew: 0 };

function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; }
}

function setToken(t) {
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) { /* storage refused: the token lives for this page only */ }
}

const CLOSED = new Error('page closed');

function headers(json) {
  const hd = {};
  const t = getToken();
  if (t) hd.Authorization = 'Bearer ' + t;
  if (json) hd['Content-Type'] = 'application/json';
  return hd;
}

async function errorOf(r) {
  let msg = 'HTTP ' + r.status + (r.statusText ? ' ' + r.statusText : '');
  let code = '';
  try {
    const j = await r.json();
    if (j && j.error) { msg = String(j.error); code = String(j.code || ''); }
  } catch (_) { /* not JSON */ }
  return Object.assign(new Error(msg), { status: r.status, code });
}

async function request(ctx, path, method, raw) {
  const post = method === 'POST';
  const r = await fetch(path, {
    method: method || 'GET', headers: headers(post), body: post ? '{}' : undefined,
    signal: ctx.ac.signal, cache: 'no-store', credentials: 'same-origin',
  });
  if (!r.ok) throw await errorOf(r);
  const v = raw ? await r.blob() : await r.json();
  if (ctx.closed) throw CLOSED;
  return v;
}

function showError(msg) {
  const el = $('error');
  if (!el) return;
  el.replaceChildren(h('span', null, msg),
    h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss', onclick: clearError }, '×'));
  el.hidden = false;
}

function clearError() {
  const el = $('error');
  if (el) { el.hidden = true; el.replaceChildren(); }
}

function fail(err) {
  if (!err || err === CLOSED || err.name === 'AbortError') return;
  if (err.status === 401) { needLogin(err.message); return; }
  showError(err.message || String(err));
}

function setLive(ctx, up) {
  if (ctx && ctx.closed) return;
  const el = $('live');
  if (!el) return;
  el.textContent = up ? 'live' : 'reconnecting';
  el.setAttribute('data-state', up ? 'live' : 'down');
}

function showSession() {
  const s = S.session;
  const note = $('auth-note');
  if (note) {
    note.textContent = 'Open: no tokens are configured on this coordinator; anyone who reaches this port can read and act.';
    note.hidden = !(s && s.auth === false);
  }
  const who = $('who');
  if (who) who.textContent = s && s.auth ? s.name + ' (' + s.role + ')' : '';
  let out = $('logout');
  if (getToken() && !out) {
    out = h('a', { id: 'logout', href: '/', class: 'logout', onclick: logout }, 'Log out');
    $('top').append(out);
  } else if (!getToken() && out) out.remove();
}

function logout(e) {
  e.preventDefault();
  setToken('');
  S.session = null;
  showSession();
  route();
}

function needLogin(message) {
  const rejected = !!getToken();
  if (S.ctx) S.ctx.close();
  setToken('');
  S.session = null;
  showSession();
  setLive(null, false);
  const main = $('main');
  if (main.querySelector('#login')) return;
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', { id: 'login', class: 'card login' },
    h('h1', null, 'Sign in'),
    h('p', null, rejected ? 'The token was refused (' + message + '). Enter a valid token.'
      : 'This coordinator needs a token: enter one of the tokens of its auth file.'),
    h('label', { for: 'token' }, 'Token'), input,
    h('button', { id: 'login-submit', type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const t = input.value.trim();
    if (!t) return;
    setToken(t);
    S.session = null;
    route();
  });
  main.replaceChildren(form);
  input.focus();
}

// One context per page shown: navigating away aborts its requests, streams and timers.
function newCtx() {
  if (S.ctx) S.ctx.close();
  const ctx = {
    closed: false,
    ac: new AbortController(),
    timers: new Set(),
    close() {
      this.closed = true;
      this.ac.abort();
      for (const t of this.timers) { clearTimeout(t); clearInterval(t); }
      this.timers.clear();
    },
    after(fn, ms) {
      const t = setTimeout(() => { this.timers.delete(t); if (!this.closed) fn(); }, ms);
      this.timers.add(t);
    },
    every(fn, ms) {
      const t = setInterval(() => { if (!this.closed) fn(); }, ms);
      this.timers.add(t);
    },
    get(path) { return request(this, path, 'GET'); },
    post(path) { return request(this, path, 'POST'); },
    blob(path) { return request(this, path, 'GET', true); },
  };
  S.ctx = ctx;
  return ctx;
}

// fn runs at most once every ms (never twice at once); calls in between are merged.
function throttle(ctx, ms, fn) {
  let last = 0;
  let queued = false;
  let running = false;
  let again = false;
  const run = async () => {
    queued = false;
    if (running) { again = true; return; }
    running = true;
    last = Date.now();
    try { await fn(); } catch (e) { fail(e); } finally { running = false; }
    if (again && !ctx.closed) { again = false; kick(); }
  };
  function kick() {
    if (ctx.closed) return;
    if (running) { again = true; return; }
    if (queued) return;
    queued = true;
    ctx.after(run, Math.max(0, last + ms - Date.now()));
  }
  return kick;
}

// Follows an SSE stream over fetch (EventSource cannot send the Authorization header),
// reconnecting with backoff (0.5 s doubling to 5 s) until the page closes.
function stream(ctx, pathOf, onEvent) {
  let delay = 500;
  const sleep = (ms) => new Promise((res) => ctx.after(res, ms));
  (async () => {
    while (!ctx.closed) {
      try {
        const r = await fetch(pathOf(), { headers: headers(false), signal: ctx.ac.signal, cache: 'no-store' });
        if (r.status === 401) { fail(await errorOf(r)); return; }
        if (!r.ok) {
          const e = await errorOf(r);
          if (!ctx.closed) showError(e.message);
          if ([400, 403, 404].includes(r.status)) { setLive(ctx, false); return; }
        } else {
          setLive(ctx, true);
          const reader = r.body.getReader();
          const dec = new TextDecoder();
          const push = sseParser((ev) => {
            if (ctx.closed) return;
            delay = 500;
            let data;
            try { data = JSON.parse(ev.data); } catch (_) { return; }
            if (ev.event === 'error') {
              if (data && data.error && !/unavailable|exhausted/i.test(data.code || '')) showError(data.error);
              return;
            }
            try { onEvent(ev.event, data); } catch (e) { fail(e); }
          });
          for (;;) {
            const { value, done } = await reader.read();
            if (done || ctx.closed) break;
            push(dec.decode(value, { stream: true }));
          }
        }
      } catch (e) {
        if (ctx.closed) return;
      }
      if (ctx.closed) return;
      setLive(ctx, false);
      await sleep(delay);
      delay = Math.min(delay * 2, 5000);
    }
  })();
}

function fleetStream(ctx, onFleet) {
  stream(ctx, () => '/api/events', (name, d) => {
    if (name !== 'fleet') return;
    if (d.time_ms) S.skew = Number(d.time_ms) - Date.now();
    onFleet(d);
  });
}

function jobStream(ctx, jobId, onJob) {
  let seq = 0;
  stream(ctx, () => '/api/events?job=' + enc(jobId) + '&after_seq=' + seq, (name, d) => {
    if (name !== 'job') return;
    if (d.seq) seq = Math.max(seq, Number(d.seq));
    onJob(d);
  });
}

async function act(ctx, question, path, after) {
  if (!window.confirm(question)) return;
  try {
    await ctx.post(path);
    clearError();
    if (after) await after();
  } catch (e) { fail(e); }
}

function button(id, text, onclick, cls) {
  return h('button', { id, type: 'button', class: cls, onclick }, text);
}

async function download(ctx, taskId, path) {
  try {
    const blob = await ctx.blob('/api/tasks/' + enc(taskId) + '/artifact?path=' + enc(path));
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: path.split('/').pop() || 'artifact', class: 'hidden' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (e) { fail(e); }
}

// ---------------------------------------------------------------- overview

function drawThroughput(svg, st) {
  const W = 600, H = 160, L = 46, R = 8, T = 26, B = 20;
  const buckets = (st.throughput || []).slice(-60);
  const n = Math.max(buckets.length, 60);
  const max = Math.max(1, ...buckets.map((b) => (Number(b.completed) || 0) + (Number(b.failed) || 0)));
  const bw = (W - L - R) / n;
  const ph = H - T - B;
  const txt = (x, y, text, anchor, cls) => sv('text', { x, y, 'text-anchor': anchor, class: cls || 'axis' }, text);
  const kids = [
    txt(L, 14, fmtRate(st.tasks_per_second) + ' tasks/s now', null, 'now'),
    txt(W - R, 14, 'tasks/s per 10 s bucket', 'end'),
    txt(L - 6, T + 4, fmtRate(max / 10), 'end'), txt(L - 6, H - B, '0', 'end'), txt(4, T + ph / 2, 'tasks/s'),
    sv('line', { x1: L, y1: T, x2: W - R, y2: T, class: 'grid' }),
    sv('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'base' }),
    txt(L, H - 4, '−10 m'), txt(L + (W - L - R) / 2, H - 4, '−5 m', 'middle'), txt(W - R, H - 4, 'now', 'end'),
  ];
  const off = n - buckets.length;
  const rect = (x, y, hgt, cls) => sv('rect', { x: x.toFixed(1), y: y.toFixed(1), width: Math.max(1, bw - 1).toFixed(1), height: hgt.toFixed(1), class: cls });
  buckets.forEach((b, i) => {
    const c = Number(b.completed) || 0, f = Number(b.failed) || 0;
    if (!c && !f) return;
    const x = L + (off + i) * bw + 0.5;
    const hc = (c / max) * ph, hf = (f / max) * ph;
    kids.push(sv('g', null,
      sv('title', null, fmtTime(b.start_ms) + ': ' + num(c) + ' completed, ' + num(f) + ' failed'),
      rect(x, H - B - hc, hc, 'ok'), f ? rect(x, H - B - hc - hf, hf, 'bad') : null));
  });
  svg.replaceChildren(...kids);
}

function activeJobRow(j) {
  return h('div', { class: 'job-row', 'data-job-id': j.job_id },
    link(jobHref(j.job_id), j.job_id, 'mono'),
    h('span', { class: 'desc', title: j.description }, j.description || ''),
    bar(pctOf(j)),
    h('span', { class: 'progress' }, progressShort(j)),
    h('span', { class: 'muted small' }, num(j.in_progress) + ' running'));
}

async function allJobs(ctx, maxPages) {
  let token = '';
  const jobs = [];
  for (let i = 0; i < maxPages; i++) {
    const r = await ctx.get('/api/jobs?page_size=1000&page_token=' + enc(token));
    jobs.push(...(r.jobs || []));
    token = r.next_page_token || '';
    if (!token) break;
  }
  return jobs;
}

async function overviewPage(ctx, main) {
  const counts = countsBox('counts', {}, true);
  const chart = sv('svg', { id: 'throughput', viewBox: '0 0 600 160', role: 'img', 'aria-label': 'Throughput' });
  const queue = h('table', { id: 'queue', class: 'grid' });
  const summary = h('p', { id: 'workers-summary' }, '…');
  const active = h('div', { id: 'active-jobs' });
  const failures = h('ul', { id: 'failures', class: 'list' });
  main.append(h('section', { id: 'overview', class: 'cards' },
    card('Tasks', 'wide', counts),
    card('Throughput, last 10 minutes', 'chart', chart),
    card('Fleet', 'side', summary, h('h3', null, 'Queue by priority'), queue),
    card('Active jobs', 'wide', active),
    card('Recent failures', 'wide', failures)));

  const loadJobs = throttle(ctx, 1000, async () => {
    const jobs = (await allJobs(ctx, 5)).filter((j) => j.state === 'active');
    active.replaceChildren(...(jobs.length ? jobs.slice(0, 200).map(activeJobRow) : [empty('No active jobs.')]));
    if (jobs.length > 200) active.append(empty('and ' + num(jobs.length - 200) + ' more (see Jobs)'));
  });
  const loadFailures = throttle(ctx, 1000, async () => {
    const r = await ctx.get('/api/failures');
    const items = (r.tasks || []).map((t) => h('li', null,
      taskLink(t.task_id, 'task ' + t.task_id), ' in job ', link(jobHref(t.job_id), t.job_id, 'mono'),
      h('span', { class: 'reason' }, t.reason || 'failed'),
      h('span', { class: 'muted small' }, fmtTime(t.updated_at_ms))));
    failures.replaceChildren(...(items.length ? items : [h('li', { class: 'empty' }, 'No recent failures.')]));
  });

  let sig = '';
  let fetched = 0;
  function onStats(st) {
    setCounts(counts, st.tasks || {});
    drawThroughput(chart, st);
    const q = (st.queue || []).filter((x) => Number(x.pending) > 0);
    queue.replaceChildren(thead(['Priority', 'Pending']), h('tbody', null,
      q.length ? q.map((x) => h('tr', null, h('td', null, String(x.priority)), h('td', { class: 'num' }, num(x.pending))))
        : emptyRow(2, 'Queue empty')));
    const w = Number(st.workers_connected) || 0;
    summary.textContent = num(w) + (w === 1 ? ' worker' : ' workers') + ' connected, ' + num(st.slots_free) +
      ' of ' + num(st.slots) + ' slots free';
    // The lists change only when some count does; look again at least every 10 s anyway.
    const s = JSON.stringify([st.tasks, st.jobs]);
    if (s !== sig || Date.now() - fetched > 10000) {
      sig = s;
      fetched = Date.now();
      loadJobs();
      loadFailures();
    }
  }

  onStats(await ctx.get('/api/stats'));
  fleetStream(ctx, (d) => { if (d.stats) onStats(d.stats); });
}

// ---------------------------------------------------------------- jobs

function jobCounts(j) {
  const parts = [];
  for (const s of TASK_STATES) if (Number(j[s])) parts.push(num(j[s]) + ' ' + s.replace('_', ' '));
  return parts.join(' · ') || 'no tasks';
}

async function jobsPage(ctx, main) {
  const filter = h('select', { id: 'job-filter' }, ['all'].concat(JOB_STATES).map((s) => h('option', { value: s }, s)));
  const tbody = h('tbody');
  const note = h('span', { class: 'muted' });
  const more = button('jobs-more', 'Load more');
  main.append(h('section', { id: 'jobs-page' },
    h('div', { class: 'toolbar' }, h('h1', null, 'Jobs'), h('label', null, 'State ', filter), note),
    h('div', { class: 'card' }, h('table', { id: 'jobs', class: 'grid' },
      thead(['Job', 'Description', 'State', 'Progress', 'Tasks', 'Created']), tbody),
    h('div', { class: 'pager' }, more))));

  let pages = [];
  const loadPage = async (token) => {
    const r = await ctx.get('/api/jobs?page_size=' + JOBS_PAGE + '&page_token=' + enc(token));
    return { token, jobs: r.jobs || [], next: r.next_page_token || '' };
  };
  function render() {
    const all = pages.flatMap((p) => p.jobs);
    const f = filter.value;
    const shown = f === 'all' ? all : all.filter((j) => j.state === f);
    tbody.replaceChildren(...shown.map((j) => h('tr', { 'data-job-id': j.job_id },
      h('td', { class: 'id' }, link(jobHref(j.job_id), j.job_id, 'mono')),
      h('td', { class: 'desc' }, clip(j.description, 120)),
      h('td', { class: 'state' }, badge(j.state)),
      h('td', { class: 'prog' }, bar(pctOf(j)), h('span', { class: 'progress' }, progressShort(j))),
      h('td', { class: 'counts-cell small' }, jobCounts(j)),
      h('td', { class: 'time' }, fmtTime(j.created_at_ms)))));
    if (!shown.length) tbody.append(emptyRow(6, all.length ? 'No ' + f + ' jobs loaded.' : 'No jobs yet.'));
    const last = pages[pages.length - 1];
    more.hidden = !(last && last.next);
    note.textContent = num(shown.length) + ' shown of ' + num(all.length) + ' loaded' + (more.hidden ? '' : ' (more to load)');
  }
  more.addEventListener('click', async () => {
    const last = pages[pages.length - 1];
    if (!last || !last.next) return;
    more.disabled = true;
    try { pages.push(await loadPage(last.next)); render(); } catch (e) { fail(e); } finally { more.disabled = false; }
  });
  filter.addEventListener('change', render);

  pages = [await loadPage('')];
  render();

  let sig = '';
  let fetched = Date.now();
  const refresh = throttle(ctx, 2000, async () => {
    const had = pages.slice();
    const fresh = await Promise.all(had.map((p) => loadPage(p.token)));
    pages = fresh.concat(pages.slice(had.length));
    render();
  });
  fleetStream(ctx, (d) => {
    if (!d.stats) return;
    const s = JSON.stringify([d.stats.tasks, d.stats.jobs]);
    if (s !== sig || Date.now() - fetched > 10000) {
      if (sig) refresh();
      sig = s;
      fetched = Date.now();
    }
  });
}

// ---------------------------------------------------------------- one job

function drawGraph(wrap, tasks, nodes) {
  nodes.clear();
  if (!tasks.length) { wrap.replaceChildren(); return; }
  const { columns, edges } = depthLayout(tasks);
  const byId = new Map(tasks.map((t) => [Number(t.task_id), t]));
  const BW = 150, BH = 24, GX = 44, GY = 8, P = 6;
  const pos = new Map();
  columns.forEach((col, c) => col.forEach((id, r) => pos.set(id, { x: P + c * (BW + GX), y: P + r * (BH + GY) })));
  const rows = Math.max(...columns.map((c) => c.length));
  const W = P * 2 + columns.length * (BW + GX) - GX;
  const H = P * 2 + rows * (BH + GY) - GY;
  const svg = sv('svg', { id: 'graph', width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'Dependencies' });
  for (const e of edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    const x1 = a.x + BW, y1 = a.y + BH / 2, x2 = b.x, y2 = b.y + BH / 2;
    svg.append(sv('path', { d: `M${x1} ${y1} C${x1 + GX / 2} ${y1} ${x2 - GX / 2} ${y2} ${x2} ${y2}`, class: e.parent ? 'edge parent' : 'edge' }));
  }
  for (const [id, p] of pos) {
    const t = byId.get(id);
    const label = (t.name || firstLine(t.prompt));
    const node = sv('a', { href: '/tasks/' + id, 'data-nav': '', 'data-node': id, class: 'node st-' + t.state },
      sv('title', null, id + ' · ' + t.state + ' · ' + clip(label, 200)),
      sv('rect', { x: p.x, y: p.y, width: BW, height: BH, rx: 4 }),
      sv('text', { x: p.x + 6, y: p.y + 16 }, clip(id + ' ' + label, 22)));
    nodes.set(id, node);
    svg.append(node);
  }
  wrap.replaceChildren(h('h2', null, 'Dependencies'), h('div', { class: 'scroll' }, svg));
}

function taskRow(t) {
  return h('tr', { 'data-task-id': t.task_id },
    h('td', { class: 'id' }, taskLink(t.task_id)),
    h('td', { class: 'name', title: t.name ? '' : clip(t.prompt, 200) }, clip(t.name || firstLine(t.prompt), 90)),
    h('td', { class: 'state', title: t.reason || null }, badge(t.state)),
    h('td', { class: 'priority num' }, String(t.priority)),
    h('td', { class: 'worker mono' }, t.worker_id || ''),
    h('td', { class: 'attempts num' }, String(t.attempts || 0)),
    h('td', { class: 'duration num' }, t.duration_ms ? fmtDur(t.duration_ms) : ''),
    h('td', { class: 'cost num' }, t.cost_usd ? fmtCost(t.cost_usd) : ''));
}

async function jobPage(ctx, main, r) {
  const id = r.id;
  const base = '/api/jobs/' + enc(id);
  const job = await ctx.get(base);
  let status = job;
  let jobState = job.state;

  const stateEl = badge(jobState, 'job-state');
  const progress = h('div', { id: 'job-progress' });
  const barBox = h('div', { class: 'barbox' });
  const counts = countsBox('job-counts', job, true);
  const actions = h('div', { class: 'actions' });
  const filter = h('select', { id: 'task-filter' },
    [['', 'all'], ['waiting,pending,in_progress', 'unfinished']].concat(TASK_STATES.map((s) => [s, s]))
      .map(([v, t]) => h('option', { value: v }, t)));
  const tbody = h('tbody');
  const prev = button('tasks-prev', '‹ Prev');
  const next = button('tasks-next', 'Next ›');
  const pageLabel = h('span', { id: 'tasks-page' }, 'page 1');
  const graphWrap = h('div', { class: 'card graph' });
  graphWrap.hidden = true;

  main.append(h('section', { id: 'job-page' },
    h('div', { class: 'card' },
      h('div', { class: 'title' }, h('h1', null, 'Job ', mono(id)), stateEl, actions),
      job.description ? h('p', { class: 'desc' }, job.description) : null,
      kv([['Owner', job.owner], ['Created', fmtTime(job.created_at_ms)], ['Updated', fmtTime(job.updated_at_ms)],
        ['Cost', Number(job.cost_usd) > 0 ? '$' + Number(job.cost_usd).toFixed(4) : null],
        ['Weight', Number(job.weight) > 1 ? String(job.weight) : null],
        ['Max running', Number(job.max_running) > 0 ? String(job.max_running) : null],
        ['Budget', Number(job.budget_usd) > 0 ? '$' + Number(job.budget_usd).toFixed(2) : null],
        ['Blocked', job.blocked_reason || null]]),
      progress, barBox, counts),
    h('div', { class: 'card' },
      h('div', { class: 'toolbar' }, h('h2', null, 'Tasks'), h('label', null, 'State ', filter)),
      h('table', { id: 'tasks', class: 'grid' },
        thead(['ID', 'Name', 'State', 'Priority', 'Worker', 'Attempts', 'Duration', 'Cost']), tbody),
      h('div', { class: 'pager' }, prev, pageLabel, next)),
    graphWrap));

  function showStatus() {
    setBadge(stateEl, jobState);
    progress.textContent = progressLong(status);
    barBox.replaceChildren(bar(pctOf(status)));
    setCounts(counts, status);
    const want = [jobState === 'active' ? 'cancel-job' : null, Number(status.failed) > 0 ? 'retry-job' : null].filter(Boolean);
    const have = [...actions.children].map((b) => b.id);
    if (want.join() === have.join()) return;
    actions.replaceChildren(...want.map((b) => b === 'cancel-job'
      ? button('cancel-job', 'Cancel job', () => act(ctx, 'Cancel job ' + id + '?', base + '/cancel', refreshAll), 'danger')
      : button('retry-job', 'Retry failed tasks', () => act(ctx, 'Retry the failed tasks of job ' + id + '?', base + '/retry', refreshAll))));
  }
  showStatus();

  // The current page of tasks only: a job may have 100,000.
  const stack = [''];
  let k = 0;
  let nextToken = '';
  let gen = 0;
  const rows = new Map();
  async function loadTasks() {
    const mine = ++gen;
    const st = filter.value;
    const res = await ctx.get(base + '/tasks?page_size=' + TASK_PAGE + '&page_token=' + enc(stack[k]) + (st ? '&state=' + enc(st) : ''));
    if (mine !== gen) return;
    nextToken = res.next_page_token || '';
    rows.clear();
    const trs = (res.tasks || []).map((t) => { const tr = taskRow(t); rows.set(Number(t.task_id), tr); return tr; });
    tbody.replaceChildren(...(trs.length ? trs : [emptyRow(8, 'No tasks' + (st ? ' in this state' : '') + '.')]));
    pageLabel.textContent = 'page ' + (k + 1);
    prev.disabled = k === 0;
    next.disabled = !nextToken;
  }
  const reloadTasks = throttle(ctx, 1000, loadTasks);
  prev.addEventListener('click', () => { if (k > 0) { k--; loadTasks().catch(fail); } });
  next.addEventListener('click', () => {
    if (!nextToken) return;
    stack[k + 1] = nextToken;
    stack.length = k + 2;
    k++;
    loadTasks().catch(fail);
  });
  filter.addEventListener('change', () => { stack.length = 1; k = 0; loadTasks().catch(fail); });

  const nodes = new Map();
  const loadGraph = throttle(ctx, 1000, async () => {
    if (Number(status.total_tasks) > GRAPH_MAX || !Number(status.total_tasks)) { graphWrap.hidden = true; graphWrap.replaceChildren(); nodes.clear(); return; }
    const res = await ctx.get(base + '/tasks?page_size=' + GRAPH_MAX);
    drawGraph(graphWrap, res.tasks || [], nodes);
    graphWrap.hidden = false;
  });

  async function refreshAll() {
    const j = await ctx.get(base);
    status = j;
    jobState = j.state;
    showStatus();
    await loadTasks();
    loadGraph();
  }

  await loadTasks();
  loadGraph();

  const flush = throttle(ctx, 200, async () => showStatus());
  let first = true;
  jobStream(ctx, id, (d) => {
    const before = Number(status.total_tasks);
    if (d.status) status = d.status;
    if (JOB_STATES.includes(d.job_state)) jobState = d.job_state;
    flush();
    const grew = Number(status.total_tasks) !== before;
    if (d.kind === 'snapshot') {
      if (!first) { reloadTasks(); loadGraph(); }
      first = false;
      return;
    }
    if (d.kind === 'task_state' && d.task_id) {
      const tid = Number(d.task_id);
      const tr = rows.get(tid);
      if (tr) {
        const cell = tr.querySelector('.state .badge');
        if (cell && d.state) setBadge(cell, d.state);
        reloadTasks();
      } else if (filter.value && filter.value.split(',').includes(d.state)) reloadTasks();
      const node = nodes.get(tid);
      if (node && d.state) node.setAttribute('class', 'node st-' + d.state);
    }
    if (d.kind === 'job_cancelled') reloadTasks();
    if (grew) {
      if (rows.size < TASK_PAGE || !nextToken) reloadTasks();
      if (Number(status.total_tasks) <= GRAPH_MAX || nodes.size) loadGraph();
    }
  });
}

// ---------------------------------------------------------------- one task

function taskView(ctx, t, liveOut, refetch) {
  const id = t.task_id;
  const jobLink = link(jobHref(t.job_id), t.job_id, 'mono');
  const action = (what, cls) => button(what + '-task', what[0].toUpperCase() + what.slice(1) + ' task',
    () => act(ctx, what[0].toUpperCase() + what.slice(1) + ' task ' + id + '?', '/api/tasks/' + id + '/' + what, refetch), cls);
  const acts = [!isFinal(t.state) && action('cancel', 'danger'), (t.state === 'failed' || t.state === 'cancelled') && action('retry')];
  const joinLinks = (ids) => (ids || []).flatMap((d, i) => (i ? [', ', taskLink(d)] : [taskLink(d)]));
  const g = t.git;
  const gitSource = g ? Object.keys(g).filter((k) => g[k] !== '' && g[k] !== false && g[k] !== 0 && g[k] != null)
    .map((k) => k.replace('_', ' ') + ' ' + (g[k] === true ? 'yes' : g[k])).join(' · ') : null;

  const spec = kv([
    ['Job', jobLink], ['Name', t.name], ['Priority', String(t.priority)],
    ['Depends on', joinLinks(t.depends_on)],
    ['Parent task', t.parent_task_id ? taskLink(t.parent_task_id) : null],
    ['Retries', num(t.retries_used) + ' used of ' + num(t.max_retries)],
    ['Attempts', num(t.attempts)], ['Worker', t.worker_id ? mono(t.worker_id) : null],
    ['Working dir', t.working_dir ? mono(t.working_dir) : null],
    ['Expected outputs', (t.expected_outputs || []).length ? mono(t.expected_outputs.join(', ')) : null],
    ['Git source', gitSource], ['In place', t.in_place ? 'yes' : null],
    ['Created', fmtTime(t.created_at_ms)], ['Updated', fmtTime(t.updated_at_ms)],
  ]);

  const hist = (t.history || []).map((a) => h('tr', null,
    h('td', { class: 'num' }, String(a.attempt)), h('td', { class: 'mono' }, a.worker_id || ''),
    h('td', null, fmtTime(a.started_ms)), h('td', null, fmtTime(a.ended_ms)),
    h('td', { class: 'num' }, fmtDur(a.duration_ms || (a.ended_ms && a.started_ms ? a.ended_ms - a.started_ms : 0))),
    h('td', null, badge(a.outcome || '?')),
    h('td', { class: 'reason' }, a.reason || '',
      a.output_tail ? h('details', null, h('summary', null, 'output tail'), h('pre', null, a.output_tail)) : null)));
  if (t.state === 'in_progress') {
    hist.push(h('tr', null, h('td', { class: 'num' }, String(t.attempts)), h('td', { class: 'mono' }, t.worker_id || ''),
      h('td', null, '–'), h('td', null, '–'), h('td', null, ''), h('td', null, badge('in_progress')), h('td', null, 'running')));
  }
  if (!hist.length) hist.push(emptyRow(7, 'No attempt has ended yet.'));

  const out = h('pre', { id: 'task-output', class: 'out' }, (t.output || '') + (t.state === 'in_progress' ? liveOut : ''));
  const err = h('pre', { id: 'task-error', class: 'out err' }, t.error || '');
  const arts = h('div', { id: 'artifacts', class: 'artifacts' },
    (t.artifacts || []).length ? t.artifacts.map((p, i) => button(null, p + ' (' + fmtBytes((t.artifact_bytes || [])[i]) + ')',
      () => download(ctx, id, p), 'artifact')) : h('span', { class: 'muted' }, 'none'));
  const ver = (t.verification || []).map((v) => h('tr', null,
    h('td', null, mono(v.command), v.description ? h('div', { class: 'muted small' }, v.description) : null),
    h('td', null, h('span', { class: 'badge ' + (v.passed ? 'st-completed' : 'st-failed') }, v.passed ? 'passed' : 'failed')),
    h('td', { class: 'num' }, String(v.exit_code)),
    h('td', null, v.output ? h('pre', { class: 'out small' }, v.output) : '')));
  const u = t.usage || {};
  const gr = t.git_result;
  const result = kv([
    ['Cost', h('span', { id: 'cost' }, fmtCost(t.cost_usd))],
    ['Tokens', h('span', { id: 'tokens' }, 'in ' + num(u.input_tokens) + ' / out ' + num(u.output_tokens) + ' / cache read ' +
      num(u.cache_read_input_tokens) + ' / cache write ' + num(u.cache_creation_input_tokens) + ' · ' + num(t.num_turns) + ' turns')],
    ['Duration', t.duration_ms ? fmtDur(t.duration_ms) : null],
    ['Exit code', isFinal(t.state) && t.state !== 'cancelled' ? String(t.exit_code) : null],
  ]);

  return [
    h('div', { class: 'card' },
      h('div', { class: 'title' }, h('h1', null, 'Task ', mono(String(id)), t.name ? ' · ' + t.name : ''),
        badge(t.state, 'task-state'), h('div', { class: 'actions' }, acts)),
      t.reason ? h('p', { class: 'reason' }, t.reason) : null),
    h('div', { class: 'cols' },
      h('div', { class: 'card' }, h('h2', null, 'Prompt'), h('pre', { id: 'task-prompt', class: 'out' }, t.prompt || '')),
      h('div', { class: 'card' }, h('h2', null, 'Spec'), spec)),
    h('div', { class: 'card' }, h('h2', null, 'Result'), result,
      h('h3', null, t.state === 'in_progress' ? 'Output (live)' : 'Output'), out,
      h('div', { class: t.error ? '' : 'hidden' }, h('h3', null, 'Error'), err),
      h('h3', null, 'Artifacts'), arts,
      h('h3', null, 'Verification'),
      h('table', { id: 'verification', class: 'grid' }, thead(['Command', 'Passed', 'Exit code', 'Output']),
        h('tbody', null, ver.length ? ver : emptyRow(4, 'No verification commands.'))),
      gr ? [h('h3', null, 'Git result'), kv([
        ['Commit', mono(gr.commit || '(none)')], ['Base', mono(gr.base_commit || '')],
        ['Branch', gr.branch], ['Pushed', gr.pushed ? 'yes' : 'no'], ['Empty', gr.empty ? 'yes: no changes' : null],
        ['Changes', num(gr.files_changed) + ' files, +' + num(gr.insertions) + ' −' + num(gr.deletions)],
        ['Patch', fmtBytes(gr.patch_bytes)]])] : null),
    h('div', { class: 'card' }, h('h2', null, 'Attempts'),
      h('table', { id: 'attempts', class: 'grid' },
        thead(['Attempt', 'Worker', 'Started', 'Ended', 'Duration', 'Outcome', 'Reason']), h('tbody', null, hist))),
  ];
}

async function taskPage(ctx, main, r) {
  const id = r.id;
  let task = await ctx.get('/api/tasks/' + id);
  let live = '';
  let liveAttempt = null;
  const sec = h('section', { id: 'task-page' });
  main.append(sec);
  const refetch = async () => {
    task = await ctx.get('/api/tasks/' + id);
    // Output the coordinator has holds what was streamed so far.
    if (task.output) live = '';
    sec.replaceChildren(...taskView(ctx, task, live, refetch));
  };
  sec.append(...taskView(ctx, task, live, refetch));
  const again = throttle(ctx, 500, refetch);
  let first = true;
  jobStream(ctx, task.job_id, (d) => {
    if (Number(d.task_id) !== id) {
      // A snapshot after a reconnect may hide changes; the first one is what was just read.
      if ((d.kind === 'snapshot' && !first) || d.kind === 'job_cancelled') again();
      if (d.kind === 'snapshot') first = false;
      return;
    }
    if (d.kind === 'task_progress') {
      if (d.attempt !== liveAttempt) { live = ''; liveAttempt = d.attempt; }
      const chunk = (d.message || '') + '\n';
      live += chunk;
      const out = $('task-output');
      if (out && task.state === 'in_progress') {
        const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
        out.append(chunk);
        if (atEnd) out.scrollTop = out.scrollHeight;
      }
    } else if (d.kind === 'task_state') {
      const st = $('task-state');
      if (st && d.state) setBadge(st, d.state);
      if (d.state === 'in_progress' && d.previous_state !== 'in_progress') { live = ''; liveAttempt = null; }
      again();
    }
  });
}

// ---------------------------------------------------------------- workers

async function workersPage(ctx, main) {
  const tbody = h('tbody');
  const summary = h('span', { class: 'muted' });
  main.append(h('section', { id: 'workers-page' },
    h('div', { class: 'toolbar' }, h('h1', null, 'Workers'), summary),
    h('div', { class: 'card' }, h('table', { id: 'workers', class: 'grid' },
      thead(['Name', 'Hostname', 'Labels', 'Slots', 'Running', 'Last heartbeat', 'Version', 'State']), tbody))));
  const byId = new Map();
  const ageText = (ms) => (ms ? fmtAge(Date.now() + S.skew - Number(ms)) : 'never');
  function render() {
    const ws = [...byId.values()].sort((a, b) => String(a.name || a.worker_id).localeCompare(String(b.name || b.worker_id)));
    tbody.replaceChildren(...ws.map((w) => {
      const running = Array.isArray(w.running_tasks) ? w.running_tasks : [];
      const count = Array.isArray(w.running_tasks) ? running.length : Number(w.running_tasks) || 0;
      const links = running.slice(0, 5).flatMap((t, i) => [i ? ', ' : ' · ', taskLink(t)]);
      const state = workerState(w);
      return h('tr', { 'data-worker-id': w.worker_id },
        h('td', { class: 'name' }, w.name || w.worker_id, h('div', { class: 'mono muted small' }, w.worker_id)),
        h('td', { class: 'host' }, w.hostname || ''),
        h('td', { class: 'labels small' }, labelsText(w.labels)),
        h('td', { class: 'slots num' }, num(w.slots)),
        h('td', { class: 'running' }, num(count), links, running.length > 5 ? ' …' : ''),
        h('td', { class: 'age', 'data-ms': w.last_seen_ms || 0 }, ageText(w.last_seen_ms)),
        h('td', { class: 'version mono' }, w.version || ''),
        h('td', { class: 'state' }, badge(state)));
    }));
    if (!ws.length) tbody.append(emptyRow(8, 'No workers.'));
    const connected = ws.filter((w) => w.connected).length;
    summary.textContent = num(ws.length) + ' known, ' + num(connected) + ' connected';
  }
  const load = async () => {
    const r = await ctx.get('/api/workers');
    byId.clear();
    for (const w of r.workers || []) byId.set(w.worker_id, w);
    render();
  };
  await load();
  fleetStream(ctx, (d) => {
    const ws = d.workers || [];
    if (d.kind === 'snapshot') byId.clear();
    if (d.kind === 'worker_left') for (const w of ws) byId.delete(w.worker_id);
    else for (const w of ws) byId.set(w.worker_id, w);
    if (d.kind !== 'stats') render();
  });
  ctx.every(() => {
    for (const td of tbody.querySelectorAll('td.age')) td.textContent = ageText(Number(td.getAttribute('data-ms')));
  }, 1000);
  // Heartbeats alone send no fleet event: read the list again now and then for their times.
  ctx.every(() => load().catch(fail), 5000);
}

// ---------------------------------------------------------------- routing

async function notFound(ctx, main) {
  main.append(h('section', { class: 'card' }, h('h1', null, 'Not found'),
    h('p', null, 'No such page. Go to the ', link('/', 'overview'), '.')));
}

const PAGES = { overview: overviewPage, jobs: jobsPage, job: jobPage, task: taskPage, workers: workersPage, notfound: notFound };

function markNav() {
  const path = location.pathname;
  for (const a of document.querySelectorAll('header nav a')) {
    const href = a.getAttribute('href');
    const on = href === '/' ? path === '/' : path === href || path.startsWith(href + '/') ||
      (href === '/jobs' && path.startsWith('/tasks/'));
    if (on) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function route() {
  const ctx = newCtx();
  clearError();
  markNav();
  setLive(ctx, false);
  const main = $('main');
  main.replaceChildren();
  const r = parseRoute(location.pathname);
  document.title = 'Orca · ' + ({ overview: 'Overview', jobs: 'Jobs', job: 'Job ' + r.id, task: 'Task ' + r.id, workers: 'Workers' }[r.name] || 'Not found');
  try {
    if (!S.session) {
      S.session = await ctx.get('/api/session');
      showSession();
    }
    await PAGES[r.name](ctx, main, r);
  } catch (e) {
    fail(e);
    if (!ctx.closed && e && e.status && e.status !== 401 && !main.firstChild) {
      main.append(h('section', { class: 'card' }, h('h1', null, e.status === 404 ? 'Not found' : 'Could not load this page'),
        h('p', null, e.message)));
    }
  }
}

function go(href) {
  if (href !== location.pathname + location.search) history.pushState(null, '', href);
  route();
  window.scrollTo(0, 0);
}

function boot() {
  document.addEventListener('click', (e) => {
    const a = e.target && e.target.closest ? e.target.closest('a[data-nav]') : null;
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const href = a.getAttribute('href');
    if (!href || href[0] !== '/' || href[1] === '/') return;
    e.preventDefault();
    go(href);
  });
  window.addEventListener('popstate', route);
  // Abort the streams before the page goes: a cancelled load may keep its connection busy.
  window.addEventListener('pagehide', () => { if (S.ctx) S.ctx.close(); });
  window.addEventListener('pageshow', (e) => { if (e.persisted) route(); });
  showSession();
  route();
}

if ($('main')) boot();
})();
