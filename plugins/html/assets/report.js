// flowrun html report: renders the JSON document in #flowrun-data (built by plugins/html/src/data.rs).
//
// Layout of the document (version 1): per-job values are columns `jobs.<field>[jobIndex]`
// (name, status code, backend index, dur/cpu seconds, rss MiB, exit, reason and kind as
// indexes into `reasons`/`kinds`, attempts, native id); `attempts.<field>[attemptIndex]`
// (job, n = its number from 1, start and dur in microseconds from the run's start, dur null
// while running, lane, status code, res = index into `resourceSets`, reason = a retried
// attempt's own reason as an index into `reasons`); `logs` maps job indexes whose log is not the
// default (`logBase + name + /output.log`) to a link or null; `buckets` lists the
// failure buckets, biggest first; `contexts` maps job indexes to log lines.
//
// Everything scales with the number of jobs: the timeline and the charts are canvases that
// draw only what is in view, the job table renders only the rows in its scroll window, and
// bucket lists render their first entries until asked for more.
'use strict';
(function () {
  const started = performance.now();
  const D = JSON.parse(document.getElementById('flowrun-data').textContent);
  const $ = (id) => document.getElementById(id);
  if (D.v !== 1) {
    $('summary').textContent = 'This report was written by a newer flowrun (data layout ' + D.v + ').';
    return;
  }
  const J = D.jobs;
  const N = J.name.length;
  const A = D.attempts;
  const NA = A.job.length;
  const COLORS = {
    passed: '#2e9d4f', failed: '#d93a3a', killed: '#e08a1e', running: '#3b7dd8',
    skipped: '#a8a8a8', queued: '#c7c7c7', scheduled: '#c7c7c7', retried: '#8e6fc4', unknown: '#777777',
  };
  const statusName = (code) => D.statuses[code] || 'unknown';
  // Attempts that went back to the queue were retried.
  const attemptStatus = (a) => {
    const s = statusName(A.status[a]);
    return s === 'queued' || s === 'scheduled' ? 'retried' : s;
  };
  const runEnd = Math.max(1, (D.finished ? D.endUs : Math.max(D.endUs, D.generatedUs)) - D.startUs);
  const attemptEnd = (a) => (A.dur[a] === null ? runEnd : A.start[a] + A.dur[a]);

  // --- helpers -------------------------------------------------------------------------------
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === 'dataset') Object.assign(e.dataset, v);
        else if (k in e) e[k] = v;
        else e.setAttribute(k, v);
      }
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  function fmtSeconds(s) {
    if (s === null || s === undefined) return 'unknown';
    if (s < 1) return (s * 1000).toFixed(0) + ' ms';
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + ' s';
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = Math.floor(s % 60);
    return h > 0 ? h + 'h ' + m + 'm' : m + 'm ' + sec + 's';
  }
  const fmtMiB = (v) => (v === null || v === undefined ? 'unknown' : v >= 1024 ? (v / 1024).toFixed(2) + ' GiB' : v.toFixed(1) + ' MiB');
  const fmtCpu = (v) => (v === null || v === undefined ? 'unknown' : fmtSeconds(v));
  const fmtWhen = (us) => {
    const d = new Date(us / 1000);
    return d.toLocaleString() + ' (' + d.toISOString().replace(/\.\d+Z$/, 'Z') + ')';
  };
  function logOf(i) {
    if (Object.prototype.hasOwnProperty.call(D.logs, i)) return D.logs[i];
    if (J.attempts[i] === 0) return null;
    return D.logBase + J.name[i] + '/output.log';
  }
  const href = (path) => path.split('/').map(encodeURIComponent).join('/');
  function jobLink(i) {
    const log = logOf(i);
    if (log === null) return el('span', { className: 'mono', title: 'no log' }, J.name[i]);
    return el('a', { className: 'mono', href: href(log), title: 'log: ' + log }, J.name[i]);
  }
  const reasonOf = (i) => D.reasons[J.reason[i]];
  // Why attempt a ended: a retried attempt's own reason; the job's for its last, ended attempt;
  // none while it runs (the job's reason then is an earlier attempt's).
  const attemptReason = (a) => {
    if (attemptStatus(a) === 'retried') return D.reasons[A.reason[a]] || '';
    return A.dur[a] === null ? '' : reasonOf(A.job[a]);
  };

  // --- state kept in the URL's fragment ------------------------------------------------------
  const params = new URLSearchParams(location.hash.slice(1));
  const state = {
    q: params.get('q') || '',
    status: params.get('status') || 'all',
    sort: params.get('sort') || '',
    dir: params.get('dir') === 'desc' ? -1 : 1,
  };
  function saveState() {
    const p = new URLSearchParams();
    if (state.q) p.set('q', state.q);
    if (state.status !== 'all') p.set('status', state.status);
    if (state.sort) { p.set('sort', state.sort); if (state.dir < 0) p.set('dir', 'desc'); }
    history.replaceState(null, '', '#' + p.toString());
  }

  // --- summary -------------------------------------------------------------------------------
  function renderSummary() {
    document.title = 'flowrun: ' + D.flow;
    const h = $('summary');
    const c = (name) => D.counts[D.statuses.indexOf(name)] || 0;
    const notPassed = c('failed') + c('killed') + c('skipped');
    let state_ = ['live', 'running'];
    if (D.finished && D.interrupted) state_ = ['interrupted', 'interrupted by ' + (D.signal || 'a signal')];
    else if (D.finished) state_ = notPassed ? ['bad', 'finished: ' + notPassed + ' not passed'] : ['done', 'all passed'];
    h.append(el('h1', null, 'flowrun: ' + D.flow, el('span', { className: 'state ' + state_[0], id: 'run-state' }, state_[1])));
    const chips = el('div', { className: 'chips', id: 'counts' });
    for (const name of ['passed', 'failed', 'killed', 'skipped', 'running', 'queued', 'scheduled']) {
      const n = c(name);
      if (n === 0 && !['passed', 'failed', 'killed', 'skipped'].includes(name)) continue;
      const chip = el('span', { className: 'chip st-' + name, dataset: { status: name, count: String(n) }, title: 'show these jobs in the table' }, el('b', null, String(n)), name);
      chip.addEventListener('click', () => { setStatusFilter(name); $('jobs').scrollIntoView(); });
      chips.append(chip);
    }
    h.append(chips);
    const facts = el('dl', { className: 'facts' });
    const fact = (k, v) => facts.append(el('dt', null, k), el('dd', null, v));
    fact('Started', fmtWhen(D.startUs));
    fact(D.finished ? 'Duration' : 'Running for', fmtSeconds(runEnd / 1e6));
    fact('Jobs', String(N) + ' on ' + D.backends.join(', '));
    fact('Run directory', el('span', { className: 'mono' }, D.runDir));
    if (D.phases.length) {
      fact('Host phases', D.phases.map((p) => p[0] + ' ' + fmtSeconds((p[2] - p[1]) / 1e6)).join(', '));
    }
    fact('Report written', fmtWhen(D.generatedUs));
    h.append(facts);
    if (!D.finished) {
      const auto = el('input', { type: 'checkbox', id: 'auto-reload' });
      auto.checked = sessionStorage.getItem('flowrun-auto-reload') === '1';
      auto.addEventListener('change', () => {
        sessionStorage.setItem('flowrun-auto-reload', auto.checked ? '1' : '0');
        if (auto.checked) scheduleReload();
      });
      h.append(el('p', { className: 'hint' }, 'The run goes on: this file is rewritten every ' + D.refreshS + ' s; reload to see the latest. ', el('label', null, auto, ' reload by itself')));
      if (auto.checked) scheduleReload();
    }
  }
  function scheduleReload() {
    setTimeout(() => { if (sessionStorage.getItem('flowrun-auto-reload') === '1') location.reload(); }, D.refreshS * 1000);
  }

  // --- failure buckets -----------------------------------------------------------------------
  const BUCKETS_SHOWN = 200;
  const JOBS_SHOWN = 10;
  const JOBS_MORE = 500;
  function renderBuckets() {
    const list = $('bucket-list');
    if (!D.buckets.length) {
      list.append(el('p', { id: 'no-failures' }, D.finished ? 'No failures.' : 'No failures so far.'));
      return;
    }
    const add = (from, to) => D.buckets.slice(from, to).forEach((b, k) => list.append(bucketEl(b, from + k === 0)));
    add(0, BUCKETS_SHOWN);
    if (D.buckets.length > BUCKETS_SHOWN) {
      const more = el('button', { type: 'button' }, 'show ' + (D.buckets.length - BUCKETS_SHOWN) + ' more buckets');
      more.addEventListener('click', () => { more.remove(); add(BUCKETS_SHOWN, D.buckets.length); });
      list.append(more);
    }
    if (D.contextsOmitted) {
      list.append(el('p', { className: 'hint' }, D.contextsOmitted + ' failed jobs are listed without their log lines, to keep this file small: follow their log links.'));
    }
  }
  function bucketEl(b, open) {
    const d = el('details', { className: 'bucket st-' + b.status, dataset: { key: b.key, count: String(b.jobs.length), status: b.status } });
    d.open = open;
    d.append(el('summary', null, el('span', { className: 'count' }, String(b.jobs.length)), '× ', el('code', null, b.key || '(no reason)'), el('span', { className: 'kind' }, b.status + (b.kind ? ' · ' + b.kind : ''))));
    const ul = el('ul');
    d.append(ul);
    // The first entries at once, the rest on demand: a bucket can hold every job of the run.
    let shown = 0;
    const more = el('button', { type: 'button' });
    more.addEventListener('click', () => add(JOBS_MORE));
    const add = (count) => {
      const to = Math.min(b.jobs.length, shown + count);
      for (const i of b.jobs.slice(shown, to)) ul.append(bucketJob(i));
      shown = to;
      const left = b.jobs.length - shown;
      if (left <= 0) more.remove();
      else more.textContent = 'show ' + Math.min(left, JOBS_MORE) + ' more (' + left + ' not shown)';
    };
    d.append(more);
    add(JOBS_SHOWN);
    return d;
  }
  function bucketJob(i) {
    const li = el('li', { dataset: { job: J.name[i] } }, jobLink(i), el('span', { className: 'reason' }, reasonOf(i)));
    const c = D.contexts[i];
    if (c) {
      const pre = el('pre', { className: 'context' });
      c.lines.forEach((line, k) => {
        if (c.first_line !== null) pre.append(el('span', { className: 'ln' }, String(c.first_line + k).padStart(6) + '  '));
        pre.append(line + '\n');
      });
      li.append(pre);
    }
    return li;
  }

  // --- timeline ------------------------------------------------------------------------------
  const AXIS_H = 22;
  const HEADER_H = 18;
  const BAR_LIST_MAX = 300;
  const TL = { start: 0, end: runEnd, rows: [], laneIx: [], contentH: AXIS_H, dragging: null, frame: 0 };
  function layoutTimeline() {
    const totalLanes = D.lanes.reduce((a, b) => a + b, 0);
    TL.laneH = Math.max(4, Math.min(18, Math.floor(480 / Math.max(1, totalLanes))));
    // Attempts are listed in the order they started, so every lane's list is sorted by start
    // and, since a lane holds one attempt at a time, by end too.
    const counts = D.lanes.map((n) => new Uint32Array(n));
    for (let a = 0; a < NA; a++) counts[J.backend[A.job[a]]][A.lane[a]]++;
    TL.laneIx = counts.map((per) => Array.from(per, (n) => new Uint32Array(n)));
    const fill = counts.map((per) => new Uint32Array(per.length));
    for (let a = 0; a < NA; a++) {
      const b = J.backend[A.job[a]];
      const l = A.lane[a];
      TL.laneIx[b][l][fill[b][l]++] = a;
    }
    let y = 0;
    TL.rows = [];
    D.backends.forEach((name, b) => {
      if (!D.lanes[b]) return;
      TL.rows.push({ header: name, b, y, h: HEADER_H });
      y += HEADER_H;
      for (let l = 0; l < D.lanes[b]; l++) {
        TL.rows.push({ b, lane: l, y, h: TL.laneH });
        y += TL.laneH;
      }
    });
    TL.contentH = AXIS_H + y;
    $('timeline-spacer').style.height = TL.contentH + 'px';
  }
  const tlCanvas = $('timeline');
  const tlWrap = $('timeline-wrap');
  function tlSize() {
    const w = tlWrap.clientWidth;
    const h = Math.min(TL.contentH, 560);
    const dpr = window.devicePixelRatio || 1;
    if (tlCanvas.width !== Math.round(w * dpr) || tlCanvas.height !== Math.round(h * dpr)) {
      tlCanvas.width = Math.round(w * dpr);
      tlCanvas.height = Math.round(h * dpr);
      tlCanvas.style.height = h + 'px';
    }
    return { w, h, dpr };
  }
  const xOf = (t, w) => ((t - TL.start) / (TL.end - TL.start)) * w;
  const tOf = (x, w) => TL.start + (x / w) * (TL.end - TL.start);
  // The first attempt of a lane whose end is at or after t.
  function firstEndingAfter(ix, t) {
    let lo = 0;
    let hi = ix.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (attemptEnd(ix[mid]) < t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
  function drawTimeline() {
    TL.frame = 0;
    const { w, h, dpr } = tlSize();
    const g = tlCanvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const top = tlWrap.scrollTop;
    const listed = [];
    let drawn = 0;
    g.font = '11px system-ui, sans-serif';
    g.textBaseline = 'middle';
    for (const row of TL.rows) {
      const y = AXIS_H + row.y - top;
      if (y + row.h < AXIS_H || y > h) continue;
      if (row.header !== undefined) {
        g.fillStyle = '#f4f6f8';
        g.fillRect(0, y, w, row.h);
        g.fillStyle = '#1d232b';
        g.fillText('backend ' + row.header + ' · ' + D.lanes[row.b] + ' slots', 4, y + row.h / 2);
        continue;
      }
      if (row.lane % 2 === 1) { g.fillStyle = '#fafbfc'; g.fillRect(0, y, w, row.h); }
      const ix = TL.laneIx[row.b][row.lane];
      let lastX = -1;
      let lastColor = '';
      for (let k = firstEndingAfter(ix, TL.start); k < ix.length; k++) {
        const a = ix[k];
        if (A.start[a] > TL.end) break;
        const x0 = xOf(A.start[a], w);
        const x1 = Math.max(x0 + 1, xOf(attemptEnd(a), w));
        const st = attemptStatus(a);
        const color = COLORS[st] || COLORS.unknown;
        drawn++;
        if (listed.length < BAR_LIST_MAX) listed.push(a);
        // Bars thinner than a pixel that land on the pixel just drawn add nothing visible.
        if (Math.floor(x1) <= lastX && color === lastColor) continue;
        g.fillStyle = color;
        const bh = Math.max(1, row.h - 2);
        g.fillRect(x0, y + 1, x1 - x0, bh);
        lastX = Math.floor(x1);
        lastColor = color;
        if (x1 - x0 > 50 && row.h >= 12) {
          g.save();
          g.beginPath();
          g.rect(x0, y, x1 - x0, row.h);
          g.clip();
          g.fillStyle = '#ffffff';
          g.fillText(J.name[A.job[a]], Math.max(x0, 0) + 3, y + row.h / 2);
          g.restore();
        }
      }
    }
    drawAxis(g, w);
    tlCanvas.dataset.bars = String(drawn);
    updateBarList(listed, drawn);
  }
  function niceStep(span, px) {
    const raw = span / Math.max(1, px / 90);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
    return 10 * p;
  }
  function drawAxis(g, w) {
    g.fillStyle = '#ffffff';
    g.fillRect(0, 0, w, AXIS_H);
    g.strokeStyle = '#d9dee4';
    g.beginPath();
    g.moveTo(0, AXIS_H - 0.5);
    g.lineTo(w, AXIS_H - 0.5);
    g.stroke();
    const step = niceStep(TL.end - TL.start, w);
    g.fillStyle = '#5f6b78';
    g.textBaseline = 'middle';
    for (let t = Math.ceil(TL.start / step) * step; t <= TL.end; t += step) {
      const x = xOf(t, w);
      g.fillRect(x, AXIS_H - 6, 1, 6);
      g.fillText(fmtSeconds(t / 1e6), x + 3, AXIS_H / 2);
    }
  }
  // The canvas's fallback content: what is drawn, as text, for screen readers and tests.
  function updateBarList(listed, drawn) {
    const ol = $('timeline-bars');
    ol.replaceChildren(...listed.map((a) => {
      const i = A.job[a];
      const dur = A.dur[a] === null ? 'running' : fmtSeconds(A.dur[a] / 1e6);
      return el('li', { dataset: { job: J.name[i], status: attemptStatus(a), backend: D.backends[J.backend[i]], lane: String(A.lane[a]), attempt: String(a) } },
        J.name[i] + ': ' + attemptStatus(a) + ', ' + dur + ' on ' + D.backends[J.backend[i]] + ' slot ' + A.lane[a] +
        (attemptReason(a) ? ' (' + attemptReason(a) + ')' : ''));
    }));
    if (drawn > listed.length) ol.append(el('li', null, (drawn - listed.length) + ' more bars in view'));
  }
  function redraw() {
    if (!TL.frame) TL.frame = requestAnimationFrame(drawTimeline);
  }
  function zoom(factor, centerT) {
    const span = Math.max(1000, (TL.end - TL.start) * factor);
    const c = centerT === undefined ? (TL.start + TL.end) / 2 : centerT;
    const frac = (c - TL.start) / (TL.end - TL.start);
    TL.start = c - frac * span;
    TL.end = TL.start + span;
    clampView();
    redraw();
  }
  function clampView() {
    const margin = runEnd * 0.05;
    const span = TL.end - TL.start;
    if (span >= runEnd + 2 * margin) { TL.start = -margin; TL.end = runEnd + margin; return; }
    if (TL.start < -margin) { TL.start = -margin; TL.end = TL.start + span; }
    if (TL.end > runEnd + margin) { TL.end = runEnd + margin; TL.start = TL.end - span; }
  }
  function hit(ev) {
    const r = tlCanvas.getBoundingClientRect();
    const x = ev.clientX - r.left;
    const y = ev.clientY - r.top - AXIS_H + tlWrap.scrollTop;
    const row = TL.rows.find((rw) => rw.header === undefined && y >= rw.y && y < rw.y + rw.h);
    if (!row) return -1;
    const slack = (3 / r.width) * (TL.end - TL.start);
    const t = tOf(x, r.width);
    const ix = TL.laneIx[row.b][row.lane];
    const k = firstEndingAfter(ix, t - slack);
    return k < ix.length && A.start[ix[k]] <= t + slack ? ix[k] : -1;
  }
  function bindTimeline() {
    $('zoom-in').addEventListener('click', () => zoom(0.5));
    $('zoom-out').addEventListener('click', () => zoom(2));
    $('zoom-fit').addEventListener('click', () => { TL.start = 0; TL.end = runEnd; redraw(); });
    tlWrap.addEventListener('scroll', redraw);
    window.addEventListener('resize', redraw);
    tlCanvas.addEventListener('wheel', (ev) => {
      if (!ev.ctrlKey && !ev.metaKey) return;
      ev.preventDefault();
      const r = tlCanvas.getBoundingClientRect();
      zoom(Math.exp(ev.deltaY * 0.002), tOf(ev.clientX - r.left, r.width));
    }, { passive: false });
    tlCanvas.addEventListener('dblclick', (ev) => {
      const r = tlCanvas.getBoundingClientRect();
      zoom(ev.shiftKey ? 2 : 0.5, tOf(ev.clientX - r.left, r.width));
    });
    tlCanvas.addEventListener('mousedown', (ev) => {
      TL.dragging = { x: ev.clientX, start: TL.start, end: TL.end, moved: false };
      tlCanvas.style.cursor = 'grabbing';
    });
    window.addEventListener('mouseup', (ev) => {
      const d = TL.dragging;
      TL.dragging = null;
      tlCanvas.style.cursor = '';
      if (d && !d.moved && ev.target === tlCanvas) {
        const a = hit(ev);
        if (a >= 0) { findJob(J.name[A.job[a]]); }
      }
    });
    const tip = $('tooltip');
    window.addEventListener('mousemove', (ev) => {
      const d = TL.dragging;
      if (d) {
        const dx = ev.clientX - d.x;
        if (Math.abs(dx) > 2) d.moved = true;
        const dt = (dx / tlCanvas.clientWidth) * (d.end - d.start);
        TL.start = d.start - dt;
        TL.end = d.end - dt;
        clampView();
        redraw();
        return;
      }
      if (ev.target !== tlCanvas) { tip.hidden = true; return; }
      const a = hit(ev);
      if (a < 0) { tip.hidden = true; return; }
      const i = A.job[a];
      const dur = A.dur[a] === null ? 'running for ' + fmtSeconds((runEnd - A.start[a]) / 1e6) : fmtSeconds(A.dur[a] / 1e6);
      const lines = [J.name[i], attemptStatus(a) + ' · ' + dur + ' · attempt ' + A.n[a] + ' · ' + D.backends[J.backend[i]] + ' slot ' + A.lane[a]];
      const why = attemptReason(a);
      if (why) lines.push(why);
      tip.textContent = lines.join('\n');
      tip.hidden = false;
      tip.style.left = Math.min(ev.clientX + 12, window.innerWidth - 300) + 'px';
      tip.style.top = ev.clientY + 14 + 'px';
    });
  }
  function renderLegend() {
    const legend = $('legend');
    for (const s of ['passed', 'failed', 'killed', 'running', 'retried']) {
      const span = el('span', null, s);
      span.style.setProperty('--c', COLORS[s]);
      legend.append(span);
    }
  }

  // --- resource use --------------------------------------------------------------------------
  function topTable(title, unit, value, fmt, id) {
    const box = $(id);
    box.append(el('h3', null, title));
    const known = [];
    for (let i = 0; i < N; i++) if (value(i) !== null) known.push(i);
    if (!known.length) {
      box.append(el('p', { className: 'unknown' }, 'unknown: no backend reported it' + (D.finished ? '' : ' yet')));
      return;
    }
    known.sort((a, b) => value(b) - value(a));
    const table = el('table', { className: 'top' }, el('thead', null, el('tr', null, el('th', null, 'job'), el('th', { className: 'num' }, unit), el('th', { className: 'num' }, 'duration'), el('th', null, 'status'))));
    const body = el('tbody');
    for (const i of known.slice(0, 10)) {
      body.append(el('tr', { dataset: { job: J.name[i] } }, el('td', null, jobLink(i)), el('td', { className: 'num' }, fmt(value(i))), el('td', { className: 'num' }, fmtSeconds(J.dur[i])), el('td', { className: 'status st-' + statusName(J.status[i]) }, statusName(J.status[i]))));
    }
    table.append(body);
    box.append(table);
    if (known.length < N) box.append(el('p', { className: 'hint' }, (N - known.length) + ' jobs without a figure (not run, or not measured).'));
  }
  function parseResources(text) {
    const out = [];
    if (!text) return out;
    for (const part of text.split(',')) {
      const [k, v] = part.split('=');
      const n = Number(v);
      if (k && Number.isFinite(n) && n > 0) out.push([k.trim(), n]);
    }
    return out;
  }
  function renderUsage() {
    topTable('Top jobs by CPU time', 'CPU', (i) => J.cpu[i], fmtCpu, 'top-cpu');
    topTable('Top jobs by peak memory', 'peak memory', (i) => J.rss[i], fmtMiB, 'top-mem');
    const series = new Map();
    const add = (name, a, amount) => {
      let s = series.get(name);
      if (!s) { s = []; series.set(name, s); }
      s.push(a, amount);
    };
    const sets = D.resourceSets.map(parseResources);
    let anyResources = false;
    for (let a = 0; a < NA; a++) {
      add('jobs running on ' + D.backends[J.backend[A.job[a]]], a, 1);
      for (const [k, v] of sets[A.res[a]]) { add(k === 'cpus' ? 'CPUs held' : k + ' held', a, v); anyResources = true; }
    }
    const box = $('resource-charts');
    if (!NA) { box.append(el('p', { className: 'unknown' }, 'No job has run yet.')); return; }
    if (!anyResources) box.append(el('p', { className: 'unknown', id: 'resources-unknown' }, 'CPUs, licenses and other named resources held: unknown (the host did not report them).'));
    for (const [name, s] of series) box.append(chart(name, s));
  }
  // A step chart of how much of something is held over the run: per pixel column, the most
  // held at any moment within it.
  function chart(name, pairs) {
    const n = pairs.length / 2;
    const t = new Float64Array(2 * n);
    const dv = new Float64Array(2 * n);
    // At equal times: the ends of attempts that lasted, then starts, then the ends of attempts
    // that lasted no time at all. So back-to-back jobs do not count twice, and jobs that took
    // no measurable time still count while they were held.
    const rank = new Uint8Array(2 * n);
    for (let k = 0; k < n; k++) {
      const a = pairs[2 * k];
      t[2 * k] = A.start[a];
      dv[2 * k] = pairs[2 * k + 1];
      rank[2 * k] = 1;
      t[2 * k + 1] = attemptEnd(a);
      dv[2 * k + 1] = -pairs[2 * k + 1];
      rank[2 * k + 1] = attemptEnd(a) > A.start[a] ? 0 : 2;
    }
    const order = new Uint32Array(2 * n).map((_, k) => k);
    order.sort((x, y) => t[x] - t[y] || rank[x] - rank[y]);
    const canvas = el('canvas', { dataset: { series: name } });
    const box = el('div', { className: 'chart', dataset: { series: name } }, el('div', { className: 'label' }, name), canvas);
    requestAnimationFrame(() => {
      const w = canvas.clientWidth || 800;
      const h = 110;
      const dpr = window.devicePixelRatio || 1;
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
      const cols = new Float64Array(w);
      let level = 0;
      let k = 0;
      for (let x = 0; x < w; x++) {
        const colEnd = ((x + 1) / w) * runEnd;
        let most = level;
        while (k < order.length && t[order[k]] < colEnd) {
          level += dv[order[k]];
          if (level > most) most = level;
          k++;
        }
        cols[x] = most;
      }
      let peak = 0;
      for (const v of cols) if (v > peak) peak = v;
      const g = canvas.getContext('2d');
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.fillStyle = '#3b7dd8';
      for (let x = 0; x < w; x++) {
        const bh = peak ? (cols[x] / peak) * (h - 16) : 0;
        g.fillRect(x, h - bh, 1, bh);
      }
      g.fillStyle = '#1d232b';
      g.font = '11px system-ui, sans-serif';
      g.fillText('peak ' + peak, 4, 12);
      box.dataset.peak = String(peak);
    });
    return box;
  }

  // --- job table -----------------------------------------------------------------------------
  const ROW_H = 22;
  const COLUMNS = [
    { key: 'name', label: 'Job', text: true, get: (i) => J.name[i] },
    { key: 'status', label: 'Status', text: true, get: (i) => statusName(J.status[i]) },
    { key: 'backend', label: 'Backend', text: true, get: (i) => D.backends[J.backend[i]] },
    { key: 'dur', label: 'Duration', get: (i) => J.dur[i] },
    { key: 'cpu', label: 'CPU', get: (i) => J.cpu[i] },
    { key: 'rss', label: 'Memory', get: (i) => J.rss[i] },
    { key: 'reason', label: 'Reason', text: true, get: (i) => reasonOf(i) },
  ];
  let view = new Uint32Array(0);
  let lowerNames = null;
  let lowerReasons = null;
  let highlighted = '';
  function applyView() {
    const q = state.q.trim().toLowerCase();
    if (q && !lowerNames) {
      lowerNames = J.name.map((s) => s.toLowerCase());
      lowerReasons = D.reasons.map((s) => s.toLowerCase());
    }
    const wanted = state.status;
    const code = D.statuses.indexOf(wanted);
    const keep = [];
    for (let i = 0; i < N; i++) {
      const s = J.status[i];
      if (wanted === 'not-passed' ? !(s >= 4 && s <= 6) : wanted !== 'all' && s !== code) continue;
      if (q && !lowerNames[i].includes(q) && !lowerReasons[J.reason[i]].includes(q)) continue;
      keep.push(i);
    }
    const col = COLUMNS.find((c) => c.key === state.sort);
    if (col) {
      const dir = state.dir;
      keep.sort((a, b) => {
        const x = col.get(a);
        const y = col.get(b);
        if (x === null || y === null) return x === y ? a - b : x === null ? 1 : -1; // unknown last
        if (x < y) return -dir;
        if (x > y) return dir;
        return a - b;
      });
    }
    view = Uint32Array.from(keep);
    $('table-spacer').style.height = view.length * ROW_H + 'px';
    $('row-count').textContent = view.length === N ? N + ' jobs' : view.length + ' of ' + N + ' jobs';
    for (const span of $('table-head').children) {
      span.setAttribute('aria-sort', span.dataset.key === state.sort ? (state.dir > 0 ? 'ascending' : 'descending') : 'none');
    }
    renderRows();
    saveState();
  }
  function cell(i, col) {
    const v = col.get(i);
    const ended = J.status[i] >= 3 && J.status[i] <= 6;
    switch (col.key) {
      case 'name': return el('span', { role: 'gridcell' }, jobLink(i));
      case 'status': return el('span', { role: 'gridcell', className: 'status st-' + v }, v);
      case 'dur': return el('span', { role: 'gridcell', className: 'num' }, v === null ? '' : fmtSeconds(v));
      case 'cpu':
      case 'rss':
        if (v === null) return el('span', { role: 'gridcell', className: 'num unknown' }, ended && J.attempts[i] > 0 ? 'unknown' : '');
        return el('span', { role: 'gridcell', className: 'num' }, col.key === 'cpu' ? fmtCpu(v) : fmtMiB(v));
      case 'reason': {
        const text = J.exit[i] !== null && J.exit[i] !== 0 && !v.includes('exit code') ? v + ' (exit code ' + J.exit[i] + ')' : v;
        return el('span', { role: 'gridcell', title: text }, text);
      }
      default: return el('span', { role: 'gridcell' }, v);
    }
  }
  function renderRows() {
    const scroll = $('table-scroll');
    const first = Math.max(0, Math.floor(scroll.scrollTop / ROW_H) - 10);
    const last = Math.min(view.length, first + Math.ceil(scroll.clientHeight / ROW_H) + 20);
    const rows = $('table-rows');
    rows.style.transform = 'translateY(' + first * ROW_H + 'px)';
    const out = [];
    for (let k = first; k < last; k++) {
      const i = view[k];
      const row = el('div', { className: 'row' + (J.name[i] === highlighted ? ' found' : ''), role: 'row', dataset: { job: J.name[i], status: statusName(J.status[i]) } });
      for (const col of COLUMNS) row.append(cell(i, col));
      out.push(row);
    }
    rows.replaceChildren(...out);
  }
  function setStatusFilter(s) {
    state.status = s;
    $('status-filter').value = s;
    applyView();
  }
  function findJob(name) {
    highlighted = name;
    state.q = name;
    state.status = 'all';
    $('filter').value = name;
    $('status-filter').value = 'all';
    applyView();
    $('jobs').scrollIntoView();
  }
  function bindTable() {
    const head = $('table-head');
    for (const col of COLUMNS) {
      const span = el('span', { role: 'columnheader', dataset: { key: col.key }, title: 'sort by ' + col.label.toLowerCase() }, col.label);
      span.addEventListener('click', () => {
        if (state.sort === col.key) state.dir = -state.dir;
        else { state.sort = col.key; state.dir = col.text ? 1 : -1; }
        applyView();
      });
      head.append(span);
    }
    const select = $('status-filter');
    for (const [value, label] of [['all', 'all'], ['not-passed', 'not passed'], ['passed', 'passed'], ['failed', 'failed'], ['killed', 'killed'], ['skipped', 'skipped'], ['running', 'running'], ['queued', 'queued'], ['scheduled', 'scheduled']]) {
      select.append(el('option', { value }, label));
    }
    select.value = state.status;
    select.addEventListener('change', () => setStatusFilter(select.value));
    const filter = $('filter');
    filter.value = state.q;
    let timer = 0;
    filter.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.q = filter.value; highlighted = ''; applyView(); }, 150);
    });
    let frame = 0;
    $('table-scroll').addEventListener('scroll', () => {
      if (!frame) frame = requestAnimationFrame(() => { frame = 0; renderRows(); });
    });
  }

  // --- start ---------------------------------------------------------------------------------
  renderSummary();
  renderBuckets();
  renderLegend();
  layoutTimeline();
  bindTimeline();
  drawTimeline();
  renderUsage();
  bindTable();
  applyView();
  $('footer').textContent = 'Written by the flowrun html observer; self-contained (no network needed). Script time ' + (performance.now() - started).toFixed(0) + ' ms.';
  document.documentElement.dataset.scriptMs = (performance.now() - started).toFixed(0);
  document.documentElement.dataset.readyMs = performance.now().toFixed(0);
  document.documentElement.dataset.ready = '1';
  // After the first frame with all of the above is painted (a task queued from the frame's
  // callback runs after it): the whole load, for benches/observers.py.
  requestAnimationFrame(() => setTimeout(() => { document.documentElement.dataset.paintedMs = performance.now().toFixed(0); }, 0));
})();
