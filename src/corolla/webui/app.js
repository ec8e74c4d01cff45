// Corolla's web page: classify photos with a served model and watch the server's metrics.
// It uses only the server's public REST API (POST /v2/repository/index, POST
// /v1/models/NAME[/versions/N]:predict with multipart/form-data, GET /metrics), with the API key
// the person typed (kept in sessionStorage, for this tab only). No library, no build step.
(() => {
  'use strict';

  const KEY_STORE = 'corolla.apiKey';
  const PARALLEL = 4;             // uploads in flight at once
  const POLL_MS = 5000;           // models and metrics
  const MAX_CARDS = 60;           // older results are dropped (and their previews freed)
  const METRIC_PATHS = ['/metrics', '/monitoring/prometheus/metrics'];

  const $ = (id) => document.getElementById(id);
  const state = {
    key: readKey(),
    keyAsked: false,      // the server answered 401 once: it requires keys
    keyRefused: false,    // ...and refused the key in use
    index: [],
    indexText: '',
    listed: false,        // the last model list request succeeded (with the key in use)
    metricsPath: METRIC_PATHS[0],
    scrape: null,
    paused: false,
  };
  const queue = [];
  let active = 0;

  function readKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ''; } catch (e) { return ''; }
  }

  function writeKey(key) {
    state.key = key;
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
    } catch (e) { /* storage off: the key lives until the page closes */ }
  }

  // ---- DOM helpers ---------------------------------------------------------------------------

  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) el.append(c);
    return el;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function fmtMs(ms) {
    if (ms === null || !Number.isFinite(ms)) return '—';
    if (ms < 1) return ms.toFixed(2) + ' ms';
    if (ms < 100) return ms.toFixed(1) + ' ms';
    return Math.round(ms) + ' ms';
  }

  function fmtRate(r) {
    if (r === null || !Number.isFinite(r)) return '—';
    return r < 10 ? r.toFixed(2) : r.toFixed(1);
  }

  function fmtBytes(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1).replace(/\.0$/, '') + ' MiB';
    if (n >= 1024) return (n / 1024).toFixed(1).replace(/\.0$/, '') + ' KiB';
    return n + ' bytes';
  }

  // ---- the REST API --------------------------------------------------------------------------

  async function api(path, init) {
    const headers = new Headers((init && init.headers) || {});
    if (state.key) headers.set('Authorization', 'Bearer ' + state.key);
    let res;
    try {
      res = await fetch(path, Object.assign({}, init, {headers, cache: 'no-store',
                                                       credentials: 'same-origin'}));
    } catch (err) {
      const e = new Error('Could not reach the server (' + err.message + ').');
      e.status = 0;
      throw e;
    }
    if (res.status === 401) unauthorized();
    else if (res.ok && state.key && state.keyRefused) { state.keyRefused = false; renderKey(); }
    return res;
  }

  async function errorText(res) {
    const text = await res.text().catch(() => '');
    try {
      const doc = JSON.parse(text);
      if (doc && typeof doc.error === 'string') return doc.error;
    } catch (e) { /* not JSON */ }
    return text.trim().slice(0, 300) || res.statusText;
  }

  // ---- API key -------------------------------------------------------------------------------

  function unauthorized() {
    const first = !state.keyAsked;
    state.keyAsked = true;
    state.keyRefused = Boolean(state.key);
    renderKey();
    const focus = document.activeElement;
    if (first && (!focus || focus === document.body)) $('key-input').focus();
  }

  function renderKey() {
    $('key-section').hidden = !state.keyAsked && !state.key;
    $('key-forget').hidden = !state.key;
    let msg = '';
    if (state.keyRefused) msg = 'The server did not accept this API key. Check it and enter it again.';
    else if (state.keyAsked && !state.key) msg = 'This server requires an API key: enter it to use the page.';
    else if (state.key) msg = 'An API key is in use for this tab.';
    const el = $('key-error');
    setText(el, msg);  // a live region: said again only when it changes
    el.className = state.keyRefused || !state.key ? 'error' : 'note';
    renderServerState();
  }

  function useKey(event) {
    event.preventDefault();
    const key = $('key-input').value.trim();
    if (!key) {
      $('key-error').textContent = 'Enter a key first.';
      $('key-input').focus();
      return;
    }
    writeKey(key);
    state.keyRefused = false;
    state.listed = false;
    $('key-input').value = '';
    renderKey();
    refresh(true);
  }

  function forgetKey() {
    writeKey('');
    state.keyRefused = false;
    renderKey();
    $('key-input').focus();
    refresh(true);
  }

  // ---- models --------------------------------------------------------------------------------

  async function loadIndex() {
    let res;
    try {
      res = await api('/v2/repository/index', {method: 'POST', body: '{}',
                                               headers: {'Content-Type': 'application/json'}});
    } catch (err) {
      setServerState(err.message, true);
      return false;
    }
    if (!res.ok) {
      state.listed = false;
      const msg = await errorText(res);
      if (res.status !== 401) setServerState(`The model list failed (HTTP ${res.status}): ${msg}`, true);
      return false;
    }
    const entries = await res.json();
    state.listed = true;
    const text = JSON.stringify(entries);
    state.index = entries;
    if (text !== state.indexText) {
      state.indexText = text;
      renderModels();
    }
    renderServerState();
    return true;
  }

  function models() {
    const out = new Map();
    for (const e of state.index) {
      if (!out.has(e.name)) out.set(e.name, []);
      if (e.version !== undefined) out.get(e.name).push(e);
      else out.get(e.name).push(Object.assign({version: ''}, e));
    }
    return out;
  }

  function modelSummary(entries) {
    if (entries.some((e) => e.state === 'READY')) return 'ready';
    if (entries.some((e) => e.state === 'LOADING')) return 'loading';
    return 'unavailable';
  }

  function renderModels() {
    const all = models();
    const select = $('model');
    const chosen = select.value;
    select.replaceChildren();
    for (const [name, entries] of all) {
      select.append(h('option', {value: name, text: `${name} (${modelSummary(entries)})`}));
    }
    if (!all.size) select.append(h('option', {value: '', text: '(no model)'}));
    const ready = [...all.keys()].find((n) => modelSummary(all.get(n)) === 'ready');
    select.value = all.has(chosen) ? chosen : (ready || select.options[0].value);
    renderVersions();
    const body = $('models').tBodies[0];
    body.replaceChildren();
    for (const [name, entries] of all) {
      for (const e of entries) {
        body.append(h('tr', {},
          h('td', {text: name}), h('td', {text: e.version || '—'}),
          h('td', {class: 'state-' + e.state.toLowerCase(), text: e.state}),
          h('td', {text: e.reason || ''})));
      }
    }
    if (!all.size) body.append(h('tr', {}, h('td', {colspan: 4, text: 'No model is configured.'})));
  }

  function renderVersions() {
    const select = $('version');
    const chosen = select.value;
    const entries = models().get($('model').value) || [];
    select.replaceChildren(h('option', {value: '', text: 'latest'}));
    for (const e of entries) {
      if (e.state === 'READY') select.append(h('option', {value: e.version, text: e.version}));
    }
    select.value = [...select.options].some((o) => o.value === chosen) ? chosen : '';
  }

  function modelState(name, version) {
    const entries = (models().get(name) || []).filter((e) => !version || e.version === version);
    return entries.length ? modelSummary(entries) : 'unknown';
  }

  let serverNote = null;
  function setServerState(text, bad) {
    serverNote = text ? {text, bad} : null;
    renderServerState();
  }

  function renderServerState() {
    const el = $('server-state');
    let text;
    let bad = false;
    if (serverNote) ({text, bad} = serverNote);
    else if (state.keyAsked && (!state.key || state.keyRefused)) {
      text = 'This server requires an API key.';
      bad = true;
    } else if (!state.listed) {
      text = state.key ? 'Checking the API key…' : 'Connecting to the server…';
    } else {
      const all = models();
      const ready = [...all.values()].filter((e) => modelSummary(e) === 'ready').length;
      text = `Connected: ${ready} of ${all.size} model${all.size === 1 ? '' : 's'} ready.`;
    }
    setText(el, text);
    el.className = bad ? 'error' : '';
  }

  // ---- uploads -------------------------------------------------------------------------------

  function topK() {
    const n = Math.round(Number($('top-k').value));
    const k = Number.isFinite(n) ? Math.min(100, Math.max(1, n)) : 5;
    $('top-k').value = String(k);
    return k;
  }

  function predictPath(model, version) {
    return '/v1/models/' + encodeURIComponent(model) +
      (version ? '/versions/' + encodeURIComponent(version) : '') + ':predict';
  }

  function shellQuote(s) {
    return "'" + s.replace(/'/g, "'\\''") + "'";
  }

  function curlCommand(job) {
    let name = job.file.name || 'photo.jpg';
    if (/[;,"\\]/.test(name)) name = '"' + name.replace(/["\\]/g, '\\$&') + '"';
    const parts = ['curl', '-F', shellQuote('image=@' + name), '-F', shellQuote('top_k=' + job.topK)];
    if (state.key) parts.push('-H', '"Authorization: Bearer $COROLLA_API_KEY"');
    parts.push(shellQuote(location.origin + predictPath(job.model, job.version)));
    return parts.join(' ');
  }

  function takeFiles(list) {
    const files = Array.from(list || []);
    if (!files.length) return;
    const model = $('model').value;
    if (!model) {
      note('There is no model to ask yet.');
      return;
    }
    const batch = document.createDocumentFragment();
    for (const file of files) {
      const job = {file, model, version: $('version').value, topK: topK(), card: null, url: null};
      job.card = card(job);
      batch.append(job.card);
      queue.push(job);
    }
    $('results').prepend(batch);
    const cards = $('results').children;
    while (cards.length > MAX_CARDS) dropCard(cards[cards.length - 1]);
    $('clear').hidden = false;
    pump();
    summary();
  }

  function dropCard(el) {
    if (el.dataset.url) URL.revokeObjectURL(el.dataset.url);
    el.remove();
  }

  function card(job) {
    const name = job.file.name || 'pasted photo';
    let preview;
    if (job.file.type.startsWith('image/')) {
      job.url = URL.createObjectURL(job.file);
      preview = h('img', {class: 'thumb', src: job.url, alt: 'Photo: ' + name});
    } else {
      preview = h('div', {class: 'thumb none', 'aria-hidden': 'true', text: 'no preview'});
    }
    const el = h('article', {class: 'card', 'data-state': 'waiting'}, preview,
      h('div', {class: 'body'},
        h('h3', {class: 'name', text: name}),
        h('p', {class: 'meta', text: `Waiting… (${fmtBytes(job.file.size)})`}),
        h('div', {class: 'out'})));
    if (job.url) el.dataset.url = job.url;
    return el;
  }

  function pump() {
    while (active < PARALLEL && queue.length) {
      const job = queue.shift();
      active += 1;
      send(job).finally(() => {
        active -= 1;
        pump();
        summary();
      });
    }
  }

  async function send(job) {
    const el = job.card;
    el.dataset.state = 'sending';
    el.querySelector('.meta').textContent = `Asking ${job.model}…`;
    const form = new FormData();
    form.append('image', job.file, job.file.name || 'photo');
    form.append('top_k', String(job.topK));
    const start = performance.now();
    let res;
    let doc;
    try {
      res = await api(predictPath(job.model, job.version), {method: 'POST', body: form});
      if (res.ok) doc = await res.json();
    } catch (err) {
      showError(job, {text: err.message, detail: '', status: err.status || 0});
      return;
    }
    const ms = performance.now() - start;
    if (!res.ok) {
      showError(job, await explain(res, job));
      return;
    }
    showResult(job, doc, ms);
  }

  async function explain(res, job) {
    const msg = await errorText(res);
    const s = res.status;
    const name = job.file.name ? `“${job.file.name}”` : 'This file';
    const which = job.version ? `${job.model} version ${job.version}` : job.model;
    let text;
    if (s === 400 && /not an image|cannot decode|decode image|no image/i.test(msg)) {
      text = `${name} is not a photo the server can read. Send a JPEG, PNG, WebP, GIF, BMP or TIFF image.`;
    } else if (s === 400) {
      text = 'The server refused this request.';
    } else if (s === 401) {
      text = state.key ? 'The server did not accept the API key.' : 'This server requires an API key: enter it above, then retry.';
    } else if (s === 403) {
      text = `The API key in use may not call model ${job.model}.`;
    } else if (s === 404 && /Servable not found|Could not find/i.test(msg)) {
      await loadIndex();
      const st = modelState(job.model, job.version);
      text = st === 'loading' ? `Model ${which} is still loading. Retry in a few seconds.`
        : `Model ${which} has no version that can answer now.`;
    } else if (s === 413) {
      const limit = /limit of (\d+) bytes/.exec(msg);
      text = `${name} is larger than this server accepts` +
        (limit ? ` (at most ${fmtBytes(Number(limit[1]))} per request)` : '') + '. Send a smaller photo.';
    } else if (s === 429) {
      text = 'The server is busy: too many requests at once. Wait a moment, then retry.';
    } else if (s === 503) {
      const after = res.headers.get('Retry-After');
      text = 'The server cannot take this request now (starting, stopping or short of memory).' +
        (after ? ` Retry in ${after} s.` : ' Retry in a moment.');
    } else if (s === 504) {
      text = 'The server did not answer in time.';
    } else if (s >= 500) {
      text = 'The server failed on this request; its log has the details.';
    } else {
      text = `The server answered HTTP ${s}.`;
    }
    // The same bytes would fail again: no retry for a bad file or one over the size limit.
    return {text, detail: msg, status: s, retry: s !== 400 && s !== 413};
  }

  function curlBlock(job) {
    const cmd = curlCommand(job);
    const code = h('code', {text: cmd});
    const copy = h('button', {type: 'button', class: 'secondary', text: 'Copy',
      onclick: () => copyText(cmd, code, copy)});
    return h('details', {class: 'curl'}, h('summary', {text: 'The same request with curl'}),
      h('pre', {}, code), copy,
      state.key ? h('p', {class: 'note', text: 'Set COROLLA_API_KEY to your key first.'}) : null);
  }

  async function copyText(text, code, button) {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = 'Copied';
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      button.textContent = 'Selected: copy with Ctrl+C';
    }
  }

  function showResult(job, doc, ms) {
    const el = job.card;
    el.dataset.state = 'done';
    const version = doc.model_version ? `version ${doc.model_version}` : 'version ?';
    el.querySelector('.meta').textContent = `${job.model}, ${version}, ${fmtMs(ms)} round trip`;
    const out = el.querySelector('.out');
    out.replaceChildren();
    const preds = Array.isArray(doc.predictions) ? doc.predictions : [];
    for (const p of preds) {
      if (p && Array.isArray(p.top_k)) {
        const list = h('ol', {class: 'labels'});
        for (const [i, t] of p.top_k.entries()) {
          const pct = Math.max(0, Math.min(100, 100 * Number(t.score)));
          const fill = h('span', {class: 'fill'});
          fill.style.width = pct.toFixed(1) + '%';
          list.append(h('li', {class: i === 0 ? 'top' : ''},
            h('span', {class: 'label', text: t.label}),
            h('span', {class: 'pct', text: pct.toFixed(1) + '%'}),
            h('span', {class: 'bar', 'aria-hidden': 'true'}, fill)));
        }
        out.append(list);
      } else {
        const raw = JSON.stringify(p);
        out.append(h('p', {class: 'note', text: 'This model has no labels; its outputs:'}),
          h('pre', {class: 'raw', text: raw.length > 2000 ? raw.slice(0, 2000) + '…' : raw}));
      }
    }
    out.append(curlBlock(job));
  }

  function showError(job, err) {
    const el = job.card;
    el.dataset.state = 'error';
    el.querySelector('.meta').textContent = err.status ? `Failed (HTTP ${err.status})` : 'Failed';
    const out = el.querySelector('.out');
    out.replaceChildren(h('p', {class: 'error', text: err.text}));
    if (err.detail) out.append(h('p', {class: 'note detail', text: 'The server said: ' + err.detail}));
    if (err.retry !== false) {
      out.append(h('button', {type: 'button', class: 'secondary', text: 'Retry',
        onclick: () => { out.replaceChildren(); queue.push(job); pump(); summary(); }}));
    }
    out.append(curlBlock(job));
  }

  function note(text) {
    setText($('upload-note'), text);
  }

  function summary() {
    const cards = [...$('results').children];
    const count = (s) => cards.filter((c) => c.dataset.state === s).length;
    const pending = count('waiting') + count('sending');
    const done = count('done');
    const failed = count('error');
    const parts = [];
    if (pending) parts.push(`${pending} in progress`);
    if (done) parts.push(`${done} classified`);
    if (failed) parts.push(`${failed} failed`);
    note(parts.length ? 'Photos: ' + parts.join(', ') + '.' : '');
  }

  function clearResults() {
    for (const c of [...$('results').children]) dropCard(c);
    queue.length = 0;
    $('clear').hidden = true;
    summary();
    $('files').focus();
  }

  // ---- metrics -------------------------------------------------------------------------------

  // Prometheus text format: one sample per line, `name{label="value",...} value [timestamp]`.
  const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

  function parseValue(v) {
    if (v === '+Inf' || v === 'Inf') return Infinity;
    if (v === '-Inf') return -Infinity;
    return Number(v);
  }

  function parseMetrics(text) {
    const out = [];
    for (const line of text.split('\n')) {
      if (!line || line[0] === '#') continue;
      const m = SAMPLE.exec(line);
      if (!m) continue;
      const labels = {};
      if (m[2]) {
        for (const l of m[2].matchAll(LABEL)) {
          labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
        }
      }
      out.push({name: m[1], labels, value: parseValue(m[3])});
    }
    return out;
  }

  function perModel(samples) {
    const out = new Map();
    const get = (name) => {
      if (!out.has(name)) out.set(name, {req: 0, err: 0, buckets: new Map(), queue: 0, ready: null});
      return out.get(name);
    };
    const server = {inflight: 0, ready: null, processes: null, memory: null};
    for (const s of samples) {
      const model = s.labels.model_name;
      switch (s.name) {
        case ':tensorflow:serving:request_count':
          if (model === undefined || model === '_unknown') break;
          get(model).req += s.value;
          if (s.labels.status !== 'OK') get(model).err += s.value;
          break;
        case ':tensorflow:serving:request_latency_bucket': {
          if (model === undefined || model === '_unknown') break;
          const b = get(model).buckets;
          const le = parseValue(s.labels.le);
          b.set(le, (b.get(le) || 0) + s.value);
          break;
        }
        case 'corolla_batch_queue_depth': if (model !== undefined) get(model).queue = s.value; break;
        case 'corolla_model_ready': if (model !== undefined) get(model).ready = s.value; break;
        case 'corolla_inflight_requests': server.inflight += s.value; break;
        case 'corolla_server_ready': server.ready = s.value; break;
        case 'corolla_rest_processes': server.processes = s.value; break;
        case 'process_resident_memory_bytes': server.memory = s.value; break;
        default: break;
      }
    }
    return {models: out, server};
  }

  // The q-quantile of a cumulative histogram ([[upper bound, count], ...] ascending), as
  // Prometheus's histogram_quantile estimates it: linear within the bucket holding the rank.
  function quantile(q, buckets) {
    if (!buckets.length) return null;
    const total = buckets[buckets.length - 1][1];
    if (!(total > 0)) return null;
    const rank = q * total;
    let lower = 0;
    let below = 0;
    for (const [le, count] of buckets) {
      if (count >= rank) {
        if (le === Infinity) return lower;
        return count === below ? lower : lower + (le - lower) * (rank - below) / (count - below);
      }
      lower = le;
      below = count;
    }
    return lower;
  }

  function delta(cur, prev) {
    const d = cur - prev;
    return d >= 0 ? d : cur;  // a counter that went down was reset (a restarted process)
  }

  function windowBuckets(cur, prev) {
    const les = [...cur.keys()].sort((a, b) => a - b);
    let run = 0;
    return les.map((le) => {
      run = Math.max(run, delta(cur.get(le), prev ? prev.get(le) || 0 : 0));
      return [le, run];
    });
  }

  let reading = null;  // the read in flight
  function scrape() {
    if (state.paused) return Promise.resolve();
    if (!reading) reading = readMetrics().finally(() => { reading = null; });
    return reading;
  }

  async function readMetrics() {
    let res;
    try {
      res = await api(state.metricsPath);
      if (res.status === 404 && state.metricsPath === METRIC_PATHS[0]) {
        res = await api(METRIC_PATHS[1]);
        if (res.ok) state.metricsPath = METRIC_PATHS[1];
      }
    } catch (err) {
      opsState(err.message, true);
      return;
    }
    if (!res.ok) {
      const msg = await errorText(res);
      if (res.status === 404) opsState('Metrics are turned off on this server.', true);
      else if (res.status === 401) opsState('Reading metrics requires an API key: enter it above.', true);
      else if (res.status === 403) opsState('The API key in use may not read metrics.', true);
      else opsState(`Reading metrics failed (HTTP ${res.status}): ${msg}`, true);
      return;
    }
    const snap = {t: performance.now(), data: perModel(parseMetrics(await res.text()))};
    const prev = state.scrape;
    state.scrape = snap;
    renderOps(prev, snap);
  }

  const OPS_COLUMNS = ['Requests/s', 'Errors/s', 'Error rate', 'p50 latency', 'p99 latency',
    'Queue', 'Ready'];

  function renderOps(prev, cur) {
    const table = $('ops');
    const body = table.tBodies[0];
    body.replaceChildren();
    const dt = prev ? (cur.t - prev.t) / 1000 : 0;
    table.dataset.reads = String(Number(table.dataset.reads || 0) + 1);
    table.dataset.window = String(dt);
    const names = [...cur.data.models.keys()].sort();
    for (const name of names) {
      const m = cur.data.models.get(name);
      const p = prev && prev.data.models.get(name);
      let rate = null;
      let errs = null;
      let errPct = null;
      let p50 = null;
      let p99 = null;
      if (prev && dt > 0) {
        const dReq = delta(m.req, p ? p.req : 0);
        const dErr = delta(m.err, p ? p.err : 0);
        rate = dReq / dt;
        errs = dErr / dt;
        errPct = dReq > 0 ? 100 * dErr / dReq : null;
        const buckets = windowBuckets(m.buckets, p && p.buckets);
        const q50 = quantile(0.5, buckets);
        const q99 = quantile(0.99, buckets);
        p50 = q50 === null ? null : q50 / 1000;  // microseconds (TF Serving's unit) -> ms
        p99 = q99 === null ? null : q99 / 1000;
      }
      const values = [fmtRate(rate), fmtRate(errs), errPct === null ? '—' : errPct.toFixed(1) + '%',
        fmtMs(p50), fmtMs(p99), String(m.queue), m.ready === null ? '—' : (m.ready ? 'yes' : 'no')];
      // data-label: the column's name, shown beside the value where rows stack (phones).
      body.append(h('tr', {'data-model': name}, h('th', {scope: 'row', text: name}),
        ...values.map((v, i) => h('td', {class: 'num', 'data-label': OPS_COLUMNS[i], text: v}))));
    }
    if (!names.length) body.append(h('tr', {}, h('td', {colspan: 8, text: 'No model yet.'})));
    const s = cur.data.server;
    const bits = [`Requests in flight: ${s.inflight}`];
    if (s.ready !== null) bits.push(`server ready: ${s.ready ? 'yes' : 'no'}`);
    if (s.processes !== null) bits.push(`processes: ${s.processes}`);
    if (s.memory !== null) bits.push(`memory: ${fmtBytes(s.memory)}`);
    $('ops-server').textContent = bits.join(' · ') + '.';
    const when = new Date().toLocaleTimeString();
    opsState(prev ? `Read at ${when}; rates over the last ${dt.toFixed(1)} s.`
      : `Read at ${when}; rates appear after the next read.`, false);
  }

  function opsState(text, bad) {
    const el = $('ops-state');
    el.textContent = text;
    el.className = bad ? 'error' : 'note';
  }

  async function togglePause() {
    state.paused = !state.paused;
    const b = $('ops-pause');
    b.setAttribute('aria-pressed', String(state.paused));
    b.textContent = state.paused ? 'Resume' : 'Pause';
    if (!state.paused) {
      scrape();
      return;
    }
    await reading;  // a read already under way still lands before the pause shows
    if (state.paused) opsState('Paused.', false);
  }

  // ---- wiring --------------------------------------------------------------------------------

  async function refresh(metricsToo) {
    setServerState(null);
    await loadIndex();
    if (metricsToo) await scrape();
  }

  function wireDrop() {
    const zone = $('drop');
    let depth = 0;
    document.addEventListener('dragenter', (e) => {
      e.preventDefault();
      depth += 1;
      zone.classList.add('over');
    });
    document.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.classList.remove('over');
    });
    document.addEventListener('dragover', (e) => e.preventDefault());
    document.addEventListener('drop', (e) => {
      e.preventDefault();  // a photo dropped anywhere on the page is an upload, not a navigation
      depth = 0;
      zone.classList.remove('over');
      if (e.dataTransfer) takeFiles(e.dataTransfer.files);
    });
    document.addEventListener('paste', (e) => {
      const files = [...((e.clipboardData && e.clipboardData.files) || [])];
      if (!files.length) return;
      e.preventDefault();
      takeFiles(files);
    });
  }

  function start() {
    $('key-form').addEventListener('submit', useKey);
    $('key-forget').addEventListener('click', forgetKey);
    $('model').addEventListener('change', renderVersions);
    for (const id of ['files', 'camera']) {
      $(id).addEventListener('change', (e) => {
        takeFiles(e.target.files);
        e.target.value = '';  // choosing the same photo again sends it again
      });
    }
    $('clear').addEventListener('click', clearResults);
    $('ops-refresh').addEventListener('click', () => { if (state.paused) togglePause(); else scrape(); });
    $('ops-pause').addEventListener('click', togglePause);
    wireDrop();
    renderKey();
    refresh(true);
    setInterval(() => { if (!document.hidden) refresh(true); }, POLL_MS);
  }

  start();
})();
