/* wakegate dashboard: sessions, the live event feed and the wake latency
 * histogram, read from this admin listener only (/v1/sessions, /v1/events,
 * /metrics). No library, nothing loaded from elsewhere; every value from the
 * server goes into the page as text, never as HTML. */
'use strict';

(function () {
  const TOKEN_KEY = 'wakegate.admin_token';
  const REFRESH_MS = 2000;
  const EVENTS_MAX = 300;             /* items kept in the feed */
  const REPLAY_MS = 60 * 60 * 1000;   /* first connect replays the last hour */
  const STREAM_SILENCE_MS = 45000;    /* the server pings every 15 s */
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 15000;
  const HISTORY_MAX = 90;             /* trend points: 3 min at REFRESH_MS */
  const METRIC = 'wakegate_wake_duration_seconds';
  const COLORS = { bar: '#1f6feb', axis: '#8c959f', text: '#57606a', grid: '#eaeef2',
                   p50: '#1f6feb', p90: '#bf8700', p99: '#cf222e' };

  const $ = (id) => document.getElementById(id);
  const st = {
    token: null,
    lastEventId: null,     /* the SSE id of the newest event seen */
    seenIds: new Set(),
    stream: null,          /* AbortController of the open /v1/events fetch */
    retryMs: RETRY_MIN_MS,
    retryTimer: null,
    sessionsTimer: null,
    metricsTimer: null,
    metricsText: null,
    history: [],           /* {t, count, p50, p90, p99} of the chosen phase */
    phase: 'total',
    apiMissing: false,
  };

  /* ---- small helpers ---------------------------------------------------- */

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function duration(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return '—';
    if (ms < 0) ms = 0;
    if (ms < 1000) return Math.round(ms) + ' ms';
    const s = ms / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + Math.floor(s % 60) + ' s';
    const h = Math.floor(m / 60);
    if (h < 48) return h + ' h ' + (m % 60) + ' min';
    return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
  }

  function ago(ms) {
    return ms ? duration(Date.now() - ms) + ' ago' : '—';
  }

  function clockTime(ms) {
    const d = new Date(ms);
    const p = (n, w) => String(n).padStart(w || 2, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds()) + '.' + p(d.getMilliseconds(), 3);
  }

  function secondsText(s) {
    if (!isFinite(s)) return '> ' + secondsText(120);
    return s < 1 ? Math.round(s * 1000) + ' ms' : (+s.toFixed(2)) + ' s';
  }

  function setConn(state, text) {
    const c = $('conn');
    c.dataset.state = state;
    c.textContent = text || state;
  }

  /* ---- the token -------------------------------------------------------- */

  /* #token=... is read once and dropped from the address bar and history:
   * the fragment never reaches the server, and now not a bookmark either. */
  function takeTokenFromFragment() {
    const frag = location.hash.replace(/^#/, '');
    if (!frag) return;
    const t = new URLSearchParams(frag).get('token');
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    history.replaceState(null, '', location.pathname + location.search);
  }

  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    if (st.token) h.Authorization = 'Bearer ' + st.token;
    return h;
  }

  function showLogin(message) {
    stopStream();
    clearTimeout(st.sessionsTimer);
    $('login').hidden = false;
    $('forget').hidden = true;
    $('login-error').hidden = !message;
    $('login-error').textContent = message || '';
    setConn('token', 'token needed');
  }

  function forgetToken(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    st.token = null;
    showLogin(message);
  }

  function useToken(t) {
    st.token = t;
    $('login').hidden = true;
    $('forget').hidden = false;
    st.apiMissing = false;
    refreshSessions();
    openStream();
  }

  /* An answer from /v1 that means no data will come with this token;
   * true when it handled it. */
  async function apiRefused(resp, where) {
    if (resp.status === 401) {
      forgetToken('The admin API refused the token (401). Enter it again.');
      return true;
    }
    if (resp.status === 503) {
      let msg = '';
      try { msg = (await resp.json()).error || ''; } catch (e) { /* not JSON */ }
      if (msg === 'admin token not configured') {
        showLogin('This wakegate has no admin token configured, so /v1 is closed (set admin.token_file).');
        return true;
      }
    }
    if (resp.status === 404) {
      /* role proxy: the API lives on the orchestrators' admin listeners. */
      st.apiMissing = true;
      $(where).hidden = false;
      $(where).textContent = 'No admin API on this process (role proxy?): open the dashboard of an orchestrator.';
      setConn('error', 'no admin API');
      return true;
    }
    return false;
  }

  /* ---- sessions --------------------------------------------------------- */

  function saveCell(save) {
    const td = el('td');
    if (!save) {
      td.textContent = 'never';
      td.className = 'muted';
      return td;
    }
    const mark = el('span', save.ok ? 'save-ok' : 'save-failed',
                    save.ok ? 'ok' : 'failed (exit ' + save.exit_code + ')');
    td.appendChild(mark);
    if (save.commit) td.appendChild(el('code', null, ' ' + String(save.commit).slice(0, 10)));
    td.appendChild(el('span', 'muted', ' ' + ago(save.at)));
    if (save.output) td.title = save.output;
    td.dataset.ok = save.ok ? '1' : '0';
    return td;
  }

  function sessionRow(s, now) {
    const tr = el('tr');
    tr.dataset.id = s.id;
    tr.dataset.state = s.state;
    tr.appendChild(el('td', 'mono', s.id));
    const stateTd = el('td');
    stateTd.appendChild(el('span', 'state state-' + s.state, s.state));
    stateTd.className = 'state-cell';
    tr.appendChild(stateTd);
    tr.appendChild(el('td', 'muted', s.state_since ? duration(now - s.state_since) : '—'));
    const idle = el('td', 'idle', s.last_active ? duration(now - s.last_active) : '—');
    if (s.last_active) idle.title = 'last active ' + new Date(s.last_active).toLocaleString();
    tr.appendChild(idle);
    tr.appendChild(saveCell(s.last_save));
    tr.appendChild(el('td', null, s.host || '—'));
    tr.appendChild(el('td', 'mono', s.ip ? s.ip + ':' + (s.port || '') : '—'));
    tr.appendChild(el('td', 'error-text', s.error || ''));
    return tr;
  }

  function renderSessions(list) {
    const now = Date.now();
    list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const body = $('sessions').tBodies[0];
    const rows = document.createDocumentFragment();
    for (const s of list) rows.appendChild(sessionRow(s, now));
    body.replaceChildren(rows);
    $('sessions-count').textContent = '(' + list.length + ')';
    $('sessions-empty').hidden = list.length > 0;
  }

  async function refreshSessions() {
    clearTimeout(st.sessionsTimer);
    if (!st.token || st.apiMissing) return;
    const err = $('sessions-error');
    try {
      const resp = await fetch('/v1/sessions', { headers: authHeaders(), cache: 'no-store' });
      if (await apiRefused(resp, 'sessions-error')) return;
      if (!resp.ok) throw new Error('HTTP ' + resp.status);
      renderSessions(await resp.json());
      err.hidden = true;
      $('sessions').dataset.updated = String(Date.now());
    } catch (e) {
      err.hidden = false;
      err.textContent = 'Cannot read /v1/sessions: ' + e.message + '. Retrying.';
    }
    if (st.token) st.sessionsTimer = setTimeout(refreshSessions, REFRESH_MS);
  }

  /* ---- the event feed: server-sent events over fetch() --------------------
   * EventSource cannot send an Authorization header, so the stream is read
   * with fetch() and parsed here, per the HTML standard's rules: lines end
   * at CRLF, LF or CR; a blank line dispatches; ':' starts a comment; the
   * last "id:" is what a reconnect sends back as Last-Event-ID. */

  class SseParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buf = '';
      this.data = [];
      this.type = '';
      this.id = null;
    }

    push(text) {
      this.buf += text;
      for (;;) {
        const i = this.buf.search(/[\r\n]/);
        if (i < 0) return;
        /* A CR at the very end may be the first half of a CRLF. */
        if (this.buf[i] === '\r' && i === this.buf.length - 1) return;
        const eol = this.buf[i] === '\r' && this.buf[i + 1] === '\n' ? 2 : 1;
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + eol);
        this.line(line);
      }
    }

    line(line) {
      if (line === '') return this.dispatch();
      if (line[0] === ':') return;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? '' : line.slice(c + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'data') this.data.push(value);
      else if (field === 'event') this.type = value;
      else if (field === 'id' && value.indexOf('\0') < 0) this.id = value;
    }

    dispatch() {
      const ev = { id: this.id, type: this.type || 'message', data: this.data.join('\n') };
      const has = this.data.length > 0;
      this.data = [];
      this.type = '';
      if (has) this.onEvent(ev);
      else if (this.id !== null) this.onEvent({ id: this.id, type: null, data: null });
    }
  }

  function eventText(type, d) {
    if (type === 'transition') {
      const from = d.from ? d.from : 'new';
      return from + ' → ' + d.to;
    }
    let text = type;
    if (d.detail !== undefined && d.detail !== null) {
      const det = typeof d.detail === 'string' ? d.detail : JSON.stringify(d.detail);
      text += ' ' + (det.length > 200 ? det.slice(0, 200) + '…' : det);
    }
    return text;
  }

  function addEvent(ev) {
    if (ev.id) st.lastEventId = ev.id;
    if (ev.type === null) return;
    if (ev.id && st.seenIds.has(ev.id)) return;
    if (ev.id) st.seenIds.add(ev.id);
    let d;
    try { d = JSON.parse(ev.data); } catch (e) { d = { detail: ev.data }; }
    if (typeof d !== 'object' || d === null) d = { detail: String(d) };
    const li = el('li', 'fresh');
    li.dataset.eventId = ev.id || '';
    li.dataset.type = ev.type;
    li.dataset.session = d.id || '';
    if (ev.type === 'transition') {
      li.dataset.from = d.from || '';
      li.dataset.to = d.to || '';
    }
    li.appendChild(el('span', 'when', d.at ? clockTime(d.at) : ''));
    li.appendChild(el('span', 'sid', d.id || '—'));
    li.appendChild(el('span', 'what', eventText(ev.type, d)));
    if (d.detail !== undefined && ev.type === 'transition') li.title = JSON.stringify(d.detail);
    const list = $('events');
    list.insertBefore(li, list.firstChild);
    while (list.children.length > EVENTS_MAX) {
      const old = list.lastChild;
      st.seenIds.delete(old.dataset.eventId);
      list.removeChild(old);
    }
    $('events-empty').hidden = true;
    $('events-count').textContent = '(' + list.children.length + ')';
  }

  function stopStream() {
    clearTimeout(st.retryTimer);
    st.retryTimer = null;
    if (st.stream) st.stream.abort();
    st.stream = null;
  }

  function scheduleReconnect(ctrl) {
    if (st.stream !== ctrl || !st.token) return; /* replaced or stopped meanwhile */
    st.stream = null;
    setConn('reconnecting', 'reconnecting in ' + Math.round(st.retryMs / 1000) + ' s');
    st.retryTimer = setTimeout(openStream, st.retryMs);
    st.retryMs = Math.min(st.retryMs * 2, RETRY_MAX_MS);
  }

  async function openStream() {
    stopStream();
    if (!st.token || st.apiMissing) return;
    const ctrl = new AbortController();
    st.stream = ctrl;
    const headers = authHeaders({ Accept: 'text/event-stream' });
    let url = '/v1/events';
    if (st.lastEventId) headers['Last-Event-ID'] = st.lastEventId;
    else url += '?since=' + Math.max(0, Date.now() - REPLAY_MS);
    setConn('connecting', 'connecting');
    let silence = null;
    const watch = () => {
      clearTimeout(silence);
      silence = setTimeout(() => ctrl.abort(), STREAM_SILENCE_MS);
    };
    try {
      const resp = await fetch(url, { headers, cache: 'no-store', signal: ctrl.signal });
      if (await apiRefused(resp, 'sessions-error')) return;
      if (!resp.ok || !resp.body) throw new Error('HTTP ' + resp.status);
      setConn('live', 'live');
      st.retryMs = RETRY_MIN_MS;
      watch();
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser(addEvent);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        watch();
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch (e) {
      /* aborted, reset or refused: reconnect below */
    } finally {
      clearTimeout(silence);
    }
    scheduleReconnect(ctrl);
  }

  /* ---- wake latency: Prometheus text of the histogram -------------------- */

  function parseLabels(s) {
    const out = {};
    const re = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    let m;
    while ((m = re.exec(s)) !== null)
      out[m[1]] = m[2].replace(/\\n/g, '\n').replace(/\\(["\\])/g, '$1');
    return out;
  }

  /* phase -> {buckets: [{le, cum}] sorted by le, sum, count}. */
  function parseHistogram(text, name) {
    const phases = {};
    const re = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
    for (const line of text.split('\n')) {
      if (!line.startsWith(name)) continue;
      const m = re.exec(line);
      if (!m) continue;
      const labels = parseLabels(m[2] || '');
      const v = parseFloat(m[3]);
      const key = labels.phase || '';
      const p = phases[key] || (phases[key] = { buckets: [], sum: 0, count: 0 });
      if (m[1] === name + '_bucket') {
        const le = labels.le === '+Inf' ? Infinity : parseFloat(labels.le);
        if (!isNaN(le)) p.buckets.push({ le, cum: v });
      } else if (m[1] === name + '_sum') {
        p.sum = v;
      } else if (m[1] === name + '_count') {
        p.count = v;
      }
    }
    for (const k of Object.keys(phases)) phases[k].buckets.sort((a, b) => a.le - b.le);
    return phases;
  }

  /* As PromQL's histogram_quantile: linear within the bucket that holds the
   * rank; the +Inf bucket answers its lower bound. */
  function quantile(q, buckets) {
    if (!buckets.length) return NaN;
    const total = buckets[buckets.length - 1].cum;
    if (!(total > 0)) return NaN;
    const rank = q * total;
    let prevLe = 0;
    let prevCum = 0;
    for (const b of buckets) {
      if (b.cum >= rank) {
        if (b.le === Infinity) return prevLe;
        const inBucket = b.cum - prevCum;
        return inBucket > 0 ? prevLe + (b.le - prevLe) * ((rank - prevCum) / inBucket) : b.le;
      }
      prevLe = b.le;
      prevCum = b.cum;
    }
    return prevLe;
  }

  function bucketLabel(le, prev) {
    if (le === Infinity) return '> ' + secondsText(prev);
    return '≤ ' + secondsText(le);
  }

  /* The canvas at the device's pixel ratio, cleared; returns its context and
   * size in CSS pixels. */
  function prepare(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = '11px system-ui, sans-serif';
    return { g, w, h };
  }

  function drawMessage(canvas, text) {
    const { g, w, h } = prepare(canvas);
    g.fillStyle = COLORS.text;
    g.textAlign = 'center';
    g.fillText(text, w / 2, h / 2);
  }

  /* Wakes per bucket (not cumulative), one bar per bucket. */
  function drawBars(canvas, buckets) {
    const counts = buckets.map((b, i) => b.cum - (i ? buckets[i - 1].cum : 0));
    /* Whole-number ticks: the axis tops at 4 steps of a whole step. */
    const step = Math.max(1, Math.ceil(Math.max(...counts) / 4));
    const max = step * 4;
    const { g, w, h } = prepare(canvas);
    const left = 34, right = 8, top = 10, bottom = 38;
    const plotW = w - left - right, plotH = h - top - bottom;
    g.strokeStyle = COLORS.grid;
    g.fillStyle = COLORS.text;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (let k = 0; k <= 4; k++) {
      const y = top + plotH - (plotH * k) / 4;
      g.beginPath();
      g.moveTo(left, y + 0.5);
      g.lineTo(w - right, y + 0.5);
      g.stroke();
      g.fillText(String(step * k), left - 4, y);
    }
    const slot = plotW / counts.length;
    let drawn = 0;
    g.textAlign = 'center';
    g.textBaseline = 'top';
    counts.forEach((c, i) => {
      const x = left + i * slot;
      if (c > 0) {
        const bh = Math.max(2, (plotH * c) / max);
        g.fillStyle = COLORS.bar;
        g.fillRect(x + slot * 0.15, top + plotH - bh, slot * 0.7, bh);
        drawn++;
      }
      g.save();
      g.translate(x + slot / 2, top + plotH + 4);
      g.rotate(-Math.PI / 6);
      g.fillStyle = COLORS.text;
      g.textAlign = 'right';
      g.fillText(bucketLabel(buckets[i].le, i ? buckets[i - 1].le : 0), 0, 0);
      g.restore();
    });
    g.strokeStyle = COLORS.axis;
    g.beginPath();
    g.moveTo(left, top + plotH + 0.5);
    g.lineTo(w - right, top + plotH + 0.5);
    g.stroke();
    return drawn;
  }

  /* p50/p90/p99 of the chosen phase at each poll, oldest on the left. */
  function drawTrend(canvas, points) {
    const pts = points.filter((p) => isFinite(p.p50));
    if (pts.length === 0) {
      drawMessage(canvas, 'no wakes yet');
      return 0;
    }
    const { g, w, h } = prepare(canvas);
    const left = 48, right = 8, top = 8, bottom = 16;
    const plotW = w - left - right, plotH = h - top - bottom;
    const finite = pts.flatMap((p) => [p.p50, p.p90, p.p99]).filter(isFinite);
    const max = Math.max(0.001, ...finite) * 1.1;
    const x = (i) => left + (plotW * i) / (HISTORY_MAX - 1);
    const y = (v) => top + plotH - (plotH * Math.min(v, max)) / max;
    g.fillStyle = COLORS.text;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    g.strokeStyle = COLORS.grid;
    for (let k = 0; k <= 2; k++) {
      const v = (max * k) / 2;
      g.beginPath();
      g.moveTo(left, y(v) + 0.5);
      g.lineTo(w - right, y(v) + 0.5);
      g.stroke();
      g.fillText(secondsText(v), left - 4, y(v));
    }
    const offset = HISTORY_MAX - points.length;
    for (const q of ['p99', 'p90', 'p50']) {
      g.strokeStyle = COLORS[q];
      g.fillStyle = COLORS[q];
      g.lineWidth = 2;
      g.beginPath();
      let started = false;
      points.forEach((p, i) => {
        if (!isFinite(p[q])) return;
        const px = x(i + offset), py = y(p[q]);
        if (started) g.lineTo(px, py);
        else g.moveTo(px, py);
        started = true;
      });
      g.stroke();
      const last = points[points.length - 1];
      if (isFinite(last[q])) g.fillRect(x(points.length - 1 + offset) - 2, y(last[q]) - 2, 4, 4);
    }
    g.lineWidth = 1;
    return pts.length;
  }

  function renderChart() {
    const chart = $('chart');
    const summary = $('chart-summary');
    const phases = st.metricsText === null ? null : parseHistogram(st.metricsText, METRIC);
    const p = phases && phases[st.phase];
    if (!p || !p.buckets.length) {
      drawMessage(chart, phases ? 'no ' + METRIC + ' here (role proxy?)' : 'waiting for /metrics');
      drawMessage($('trend'), '');
      summary.textContent = phases ? 'this process exports no wake histogram' : 'waiting for /metrics';
      chart.dataset.samples = '0';
      chart.dataset.bars = '0';
      return;
    }
    const bars = drawBars(chart, p.buckets);
    const points = drawTrend($('trend'), st.history);
    const count = p.buckets[p.buckets.length - 1].cum;
    chart.dataset.samples = String(count);
    chart.dataset.bars = String(bars);
    $('trend').dataset.points = String(points);
    summary.textContent = count > 0
      ? count + ' wakes, mean ' + secondsText(p.sum / count) + ', p50 ' +
        secondsText(quantile(0.5, p.buckets)) + ', p90 ' + secondsText(quantile(0.9, p.buckets))
      : 'no wakes yet';
  }

  function recordHistory() {
    const phases = parseHistogram(st.metricsText, METRIC);
    const p = phases[st.phase];
    if (!p || !p.buckets.length) return;
    st.history.push({
      t: Date.now(),
      count: p.buckets[p.buckets.length - 1].cum,
      p50: quantile(0.5, p.buckets),
      p90: quantile(0.9, p.buckets),
      p99: quantile(0.99, p.buckets),
    });
    if (st.history.length > HISTORY_MAX) st.history.splice(0, st.history.length - HISTORY_MAX);
  }

  async function refreshMetrics() {
    clearTimeout(st.metricsTimer);
    try {
      const resp = await fetch('/metrics', { cache: 'no-store' });
      if (!resp.ok) throw new Error('HTTP ' + resp.status);
      st.metricsText = await resp.text();
      recordHistory();
      renderChart();
    } catch (e) {
      $('chart-summary').textContent = 'cannot read /metrics: ' + e.message;
    }
    st.metricsTimer = setTimeout(refreshMetrics, REFRESH_MS);
  }

  /* ---- start ------------------------------------------------------------ */

  function tick() {
    $('clock').textContent = new Date().toLocaleTimeString();
  }

  function start() {
    takeTokenFromFragment();
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const t = $('token-input').value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      $('token-input').value = '';
      useToken(t);
    });
    $('forget').addEventListener('click', () => forgetToken(''));
    $('phase').addEventListener('change', (e) => {
      st.phase = e.target.value;
      st.history = [];
      if (st.metricsText !== null) {
        recordHistory();
        renderChart();
      }
    });
    window.addEventListener('resize', () => { if (st.metricsText !== null) renderChart(); });
    tick();
    setInterval(tick, 1000);
    refreshMetrics();
    const t = sessionStorage.getItem(TOKEN_KEY);
    if (t) useToken(t);
    else showLogin('');
    document.body.dataset.started = '1';
  }

  start();
})();
