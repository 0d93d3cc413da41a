// Tailor dashboard: loads server-rendered parts, follows job events, runs the try-it box,
// and acts: cancel, clone and submit, delete, archive, move aliases.
// Auth: the API key is asked for once (on the first 401) and kept in sessionStorage; every
// request sends it as `Authorization: Bearer`. Events are read with fetch() streaming rather
// than EventSource, which cannot send that header.
'use strict';

const KEY = 'tailor.apiKey';
const FINAL = ['succeeded', 'failed', 'cancelled'];
const REFRESH_MS = 1500;        // at most one part refresh per this while events stream in
const LIST_REFRESH_MS = 10000;  // the jobs list also picks up new jobs on this period
const MAX_STREAMS = 4;          // browsers allow ~6 connections per host; leave room
const part = () => document.getElementById('part');

// ---- API key -------------------------------------------------------------------------
function askKey(message) {
  const dialog = document.getElementById('key-dialog');
  document.getElementById('key-error').textContent = message || '';
  if (!dialog.open) dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      sessionStorage.setItem(KEY, document.getElementById('key-input').value.trim());
      document.getElementById('forget-key').hidden = false;
      resolve();
    }, {once: true});
  });
}

async function errorMessage(resp) {
  try { return (await resp.json()).error.message; } catch (e) { return `HTTP ${resp.status}`; }
}

async function api(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const key = sessionStorage.getItem(KEY);
    if (key) headers.set('Authorization', `Bearer ${key}`);
    const resp = await fetch(path, {...options, headers});
    if (resp.status === 401) { await askKey(await errorMessage(resp)); continue; }
    if (!resp.ok) throw new Error(await errorMessage(resp));
    return resp;
  }
}

// ---- parts and events ----------------------------------------------------------------
let partRequests = 0;  // a slow, older response must not overwrite a newer one

async function loadPart() {
  const el = part();
  const mine = ++partRequests;
  try {
    const html = await (await api(el.dataset.part)).text();
    if (mine === partRequests) el.innerHTML = html;
  } catch (e) {
    el.innerHTML = '';
    const p = document.createElement('p');
    p.className = 'error';
    p.textContent = e.message;
    el.append(p);
  }
}

function throttled(fn, ms) {
  let timer = null;
  return () => { if (!timer) timer = setTimeout(() => { timer = null; fn(); }, ms); };
}

// Parse a text/event-stream body; calls onEvent(name, data) and returns the last event id.
async function readEvents(path, lastId, onEvent) {
  const headers = {Accept: 'text/event-stream'};
  if (lastId) headers['Last-Event-ID'] = lastId;
  const resp = await api(path, {headers});
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return {lastId, ended: false};
    buffer += value.replace(/\r\n/g, '\n');
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = 'message', data = '';
      for (const line of block.split('\n')) {
        const [field, ...rest] = line.split(':');
        const text = rest.join(':').replace(/^ /, '');
        if (field === 'event') name = text;
        else if (field === 'data') data += text;
        else if (field === 'id') lastId = text;
      }
      if (!data) continue;
      onEvent(name, JSON.parse(data));
      if (name === 'end') { reader.cancel(); return {lastId, ended: true}; }
    }
  }
}

// Follow a job's events until its `end` event, resuming after dropped connections.
async function follow(jobId, onEvent) {
  let lastId = null;
  for (let attempt = 0; attempt < 30; attempt++) {
    try {
      const result = await readEvents(`/jobs/${encodeURIComponent(jobId)}/events`, lastId, onEvent);
      if (result.ended) return;
      lastId = result.lastId;
    } catch (e) { /* network blip or server restart: retry below */ }
    await new Promise((r) => setTimeout(r, 1000 * Math.min(attempt + 1, 5)));
  }
}

// Update the live fields (state, phase, progress) inside `scope` from one event.
function showEvent(scope, ev) {
  if (!scope || !ev.state) return;
  const state = scope.querySelector('[data-field=state]');
  if (state) { state.textContent = ev.state; state.className = `state state-${ev.state}`; }
  const phase = scope.querySelector('[data-field=phase]');
  if (phase && ev.phase !== undefined) phase.textContent = ev.phase || '';
  const bar = scope.querySelector('[data-field=progress]');
  if (bar && typeof ev.progress === 'number') bar.value = ev.progress;
  const pct = scope.querySelector('[data-field=percent]');
  if (pct && typeof ev.progress === 'number') pct.textContent = `${Math.round(100 * ev.progress)}%`;
  const detail = scope.querySelector('[data-field=detail]');
  if (detail) detail.textContent = detailText(ev.data && ev.data.progress_detail);
  const live = scope.querySelector('[data-field=live]');
  const loss = ev.data && ev.data.loss;
  if (live && typeof loss === 'number') live.textContent = `loss ${loss.toFixed(4)}`;
}

// A running stage's counts, as app/ui/templates/_progress.html renders them:
// "120/900 texts · 2.40/s · ETA 5m 25s"; '' outside a counted stage.
function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const s = Math.max(0, Math.round(seconds));
  const pad = (n) => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
}

function detailText(d) {
  if (!d) return '';
  const rate = d.rate_per_s === null ? '—' : d.rate_per_s.toFixed(2);
  return `${d.done.toLocaleString('en-US')}/${d.total.toLocaleString('en-US')} ${d.unit} · ` +
    `${rate}/s · ETA ${duration(d.eta_s)}`;
}

// ---- pages ---------------------------------------------------------------------------
async function jobsPage() {
  const streaming = new Set();
  const refresh = async () => {
    await loadPart();
    const rows = part().querySelectorAll('tr[data-final=false]');
    for (const row of rows) {
      const id = row.dataset.jobId;
      if (streaming.has(id) || streaming.size >= MAX_STREAMS) continue;
      streaming.add(id);
      follow(id, (name, ev) => {
        showEvent(part().querySelector(`tr[data-job-id="${id}"]`), ev);
      }).finally(() => { streaming.delete(id); refresh(); });
    }
  };
  await refresh();
  setInterval(refresh, LIST_REFRESH_MS);
}

async function jobPage() {
  const jobId = document.body.dataset.job;
  const refresh = throttled(() => loadPart(), REFRESH_MS);
  await loadPart();
  part().addEventListener('click', async (e) => {
    const button = e.target.closest('[data-cancel]');
    if (!button) return;
    button.disabled = true;
    try { await api(`/jobs/${encodeURIComponent(button.dataset.cancel)}/cancel`, {method: 'POST'}); } catch (err) {
      button.textContent = err.message;
    }
  });
  // A finished job replays its whole history at once: the throttle folds it into one load.
  await follow(jobId, (name, ev) => {
    showEvent(document.getElementById('status'), ev);
    refresh();
  });
  await loadPart();
  document.body.dataset.followed = 'done';
}

function renderScores(container, body, texts) {
  container.innerHTML = '';
  body.results.forEach((result, i) => {
    const item = document.createElement('div');
    item.className = 'result';
    const head = document.createElement('p');
    const label = Array.isArray(result.label) ? result.label.join(', ') : result.label;
    head.innerHTML = '<strong class="label"></strong> <span class="muted"></span>';
    head.querySelector('.label').textContent = label;
    head.querySelector('.muted').textContent = `— ${texts[i]}`;
    item.append(head);
    const table = document.createElement('table');
    table.className = 'scores';
    Object.entries(result.scores).sort((a, b) => b[1] - a[1]).forEach(([name, p]) => {
      const row = table.insertRow();
      row.dataset.label = name;
      row.insertCell().textContent = name;
      const meter = document.createElement('meter');
      meter.min = 0; meter.max = 1; meter.value = p;
      row.insertCell().append(meter);
      row.insertCell().textContent = p.toFixed(3);
    });
    item.append(table);
    if (result.explanation) item.append(renderExplanation(result.explanation, texts[i]));
    container.append(item);
  });
  container.dataset.version = body.version;
}

// The text as sent, each token highlighted by its attribution to the explained label.
// Offsets count code points (the server's string indices), so slice an array of them.
function renderExplanation(explanation, text) {
  const chars = Array.from(text);
  const top = Math.max(1e-12, ...explanation.tokens.map((t) => Math.abs(t.attribution)));
  const out = document.createElement('p');
  out.className = 'explained';
  out.title = `Why "${explanation.label}": blue words support it, orange ones speak against it`;
  let at = 0;
  explanation.tokens.forEach((t) => {
    if (t.start < at) return;  // sub-tokens sharing characters: the first one shows
    if (t.start > at) out.append(chars.slice(at, t.start).join(''));
    const mark = document.createElement('mark');
    mark.textContent = chars.slice(t.start, t.end).join('');
    mark.dataset.attribution = t.attribution;
    mark.style.setProperty('--a', (Math.abs(t.attribution) / top * 0.8).toFixed(3));
    if (t.attribution < 0) mark.className = 'against';
    mark.title = `${t.token}: ${t.attribution.toFixed(4)}`;
    out.append(mark);
    at = t.end;
  });
  if (at < chars.length) out.append(chars.slice(at).join(''));
  return out;
}

async function modelPage() {
  await loadPart();
  part().addEventListener('submit', async (e) => {
    if (e.target.id !== 'try-form') return;
    e.preventDefault();
    const texts = document.getElementById('try-texts').value.split('\n')
      .map((t) => t.trim()).filter(Boolean);
    const out = document.getElementById('try-results');
    out.textContent = 'Classifying…';
    try {
      const resp = await api('/classify', {
        method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({model: e.target.dataset.model, texts,
                              explain: document.getElementById('try-explain').checked}),
      });
      renderScores(out, await resp.json(), texts);
    } catch (err) {
      out.innerHTML = '<p class="error"></p>';
      out.firstChild.textContent = err.message;
    }
  });
}

// ---- actions: delete, archive, aliases, submit ---------------------------------------
// Each is the JSON API's own route, sent by api() with the Bearer key: the same scopes and
// ownership as curl, and no cookie for another site to ride on.
function showError(message) {
  const el = document.getElementById('action-error');
  el.textContent = message || '';
  el.hidden = !message;
}

function confirmDialog(message) {
  const dialog = document.getElementById('confirm-dialog');
  document.getElementById('confirm-message').textContent = message;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), {once: true});
  });
}

async function act(button) {
  showError('');
  if (button.dataset.confirm && !(await confirmDialog(button.dataset.confirm))) return;
  button.disabled = true;
  const options = {method: button.dataset.method};
  if (button.dataset.body) {
    options.headers = {'Content-Type': 'application/json'};
    options.body = button.dataset.body;
  }
  try {
    await api(button.dataset.action, options);
  } catch (err) {
    showError(err.message);
    button.disabled = false;
    return;
  }
  if (button.dataset.next) location.assign(button.dataset.next);
  else await loadPart();
}

async function moveAlias(form) {
  const alias = document.getElementById('alias-name').value.trim();
  const force = document.getElementById('alias-force');
  const body = {version: Number(form.dataset.version)};
  if (force) body.force = force.checked;  // only shown (and required) for a warned version
  await api(`/models/${encodeURIComponent(form.dataset.model)}/aliases/${encodeURIComponent(alias)}`, {
    method: 'PUT', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body),
  });
  await loadPart();
}

function randomKey() {  // crypto.randomUUID needs a secure context; this does not
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return 'ui-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

let lastSubmit = null;  // the same body sent twice (a double click, a retry) is one job

async function submitSpec() {
  const text = document.getElementById('spec-json').value;
  try { JSON.parse(text); } catch (err) { throw new Error(`the spec is not valid JSON: ${err.message}`); }
  if (!lastSubmit || lastSubmit.text !== text) lastSubmit = {text, key: randomKey()};
  const resp = await api('/jobs', {
    method: 'POST', body: text,
    headers: {'Content-Type': 'application/json', 'Idempotency-Key': lastSubmit.key},
  });
  location.assign(`/ui/jobs/${encodeURIComponent((await resp.json()).id)}`);
}

function installActions() {
  document.addEventListener('click', (e) => {
    const button = e.target.closest('button[data-action]');
    if (button) act(button);
  });
  const forms = {'alias-form': moveAlias, 'spec-form': submitSpec};
  document.addEventListener('submit', async (e) => {
    const handler = forms[e.target.id];
    if (!handler) return;
    e.preventDefault();
    showError('');
    const button = e.target.querySelector('button[type=submit]');
    button.disabled = true;
    try { await handler(e.target); } catch (err) { showError(err.message); }
    button.disabled = false;
  });
}

document.addEventListener('DOMContentLoaded', () => {
  installActions();
  const forget = document.getElementById('forget-key');
  forget.hidden = !sessionStorage.getItem(KEY);
  forget.addEventListener('click', () => { sessionStorage.removeItem(KEY); location.reload(); });
  const pages = {jobs: jobsPage, job: jobPage, models: () => loadPart(), model: modelPage};
  (pages[document.body.dataset.page] || loadPart)();
});
