// The agent's web UI: hash-routed pages (#/services, #/services/web, #/nodes, #/nodes/n1, #/kv/a/b,
// #/servers, #/members, #/intentions, #/intentions/web/db, #/config/service-defaults/web, and with
// ACLs on #/login, #/acl/tokens, #/acl/policies). Each page keeps one
// long-poll per dataset it shows: a blocking query whose ?index= is the last X-Consul-Index, so the
// agent answers only when the data changed. Endpoints that do not block (Raft configuration,
// members) are re-read every few seconds, only while the tab is visible. Leaving a page aborts its
// requests. All API URLs are /v1/..., so the UI works behind a proxy that forwards /ui/ and /v1/ to
// an agent. With ACLs on, the token a person logs in with is kept in this browser (localStorage) and
// sent as X-Consul-Token on every request; a 403 answer replaces the page with what the agent said.
// This is the UI of a Consul-compatible agent, not HashiCorp's Consul UI.
'use strict';

const WAIT = '55s'; // below a proxy's usual 60 s read timeout
const POLL_MS = 3000; // for endpoints without X-Consul-Index
const MAX_BACKOFF_MS = 30000;
const MIN_GAP_MS = 200; // between one watch's requests, so a flapping check cannot make a hot loop

const APP = 'agent UI (Consul-compatible)';
const TOKEN_KEY = 'agent-ui:token';
const GLOBAL_MANAGEMENT = '00000000-0000-0000-0000-000000000001';

const main = document.getElementById('main');
const live = document.getElementById('live');

// ---------- the token: kept in localStorage, sent as X-Consul-Token on every request ----------

// {SecretID, AccessorID, Description} of the token logged in with, or null.
function session() {
  try {
    const s = JSON.parse(localStorage.getItem(TOKEN_KEY) || 'null');
    return s && typeof s.SecretID === 'string' && s.SecretID ? s : null;
  } catch {
    return null;
  }
}
function saveSession(s) {
  localStorage.setItem(TOKEN_KEY, JSON.stringify(s));
}
function withToken(headers) {
  const s = session();
  return s ? { ...(headers || {}), 'X-Consul-Token': s.SecretID } : { ...(headers || {}) };
}
const tokenName = (s) => s.Description || (s.AccessorID ? s.AccessorID.slice(0, 8) : 'token');

// 'enabled', 'disabled' (the agent answers 401 on /v1/acl/*) or 'unknown' until asked.
let aclState = 'unknown';
let authProblem = ''; // the agent's answer when it refuses the stored token
let lastPage = '#/services'; // where logging in returns to

// ---------- DOM helpers: text goes in through textContent only, never as HTML ----------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

// Replaces a region's content; a focused link or button inside it keeps focus across the update.
function fill(region, ...kids) {
  const a = document.activeElement;
  const key = a && region.contains(a) ? a.getAttribute('href') || a.dataset.key : null;
  region.replaceChildren(...kids.flat(Infinity).filter((k) => k != null && k !== false));
  if (key) {
    const again = region.querySelector(`[href="${CSS.escape(key)}"],[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

// A table that turns into stacked cards on a narrow window: each cell carries its column's label.
function table(cls, columns, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h(
    'table',
    { class: 'rt ' + cls },
    h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col', class: typeof c.cls === 'function' ? c.head : c.cls }, c.label)))),
    h(
      'tbody',
      null,
      rows.map((r) =>
        h(
          'tr',
          { 'data-row': r.__key },
          columns.map((c) => {
            const cls = typeof c.cls === 'function' ? c.cls(r) : c.cls;
            return h('td', { 'data-label': c.label, class: cls, 'data-col': c.key }, c.cell(r));
          })
        )
      )
    )
  );
}

const SYMBOL = { passing: '✓', warning: '!', critical: '✕' };
function badge(status) {
  return h('span', { class: 'badge ' + status, 'data-status': status }, `${SYMBOL[status] || ''} ${status}`);
}
function worst(statuses) {
  if (statuses.includes('critical')) return 'critical';
  if (statuses.includes('warning')) return 'warning';
  return 'passing';
}
function tags(list) {
  return h('span', null, (list || []).map((t) => h('span', { class: 'tag' }, t)));
}
const encSeg = (s) => encodeURIComponent(s);
const encKey = (k) => k.split('/').map(encodeURIComponent).join('/');

function setLive(ok, text) {
  live.className = ok ? 'ok' : 'err';
  live.textContent = text;
}

// Resolves after `ms`, or at once when the page is left; either way it leaves no listener behind.
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => (clearTimeout(t), signal.removeEventListener('abort', done), resolve());
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}

function whenVisible(signal) {
  if (!document.hidden) return Promise.resolve();
  return new Promise((resolve) => {
    const go = () => {
      document.removeEventListener('visibilitychange', go);
      signal.removeEventListener('abort', go);
      resolve();
    };
    document.addEventListener('visibilitychange', go);
    signal.addEventListener('abort', go);
  });
}

// ---------- the one watch loop ----------

// Calls onData(body, index, meta) with the first answer and again whenever the data changes, until
// `signal` aborts; meta.filtered says the agent left out what the token may not see. A 404 is data
// (null) when `notFound` is set: a missing KV key can be watched. A 403 replaces the page with the
// agent's answer (naming `what` could not be seen) and a 401 says ACLs are off; neither is retried.
function watch(url, onData, signal, { notFound = false, what = 'this page' } = {}) {
  let index = 0;
  let failures = 0;
  let first = true;
  let started = 0;
  (async () => {
    while (!signal.aborted) {
      const gap = started + MIN_GAP_MS - performance.now();
      if (gap > 0) await sleep(gap, signal);
      if (signal.aborted) return;
      started = performance.now();
      const sep = url.includes('?') ? '&' : '?';
      const u = index > 0 ? `${url}${sep}index=${index}&wait=${WAIT}` : url;
      try {
        const r = await fetch(u, { signal, headers: withToken({ Accept: 'application/json' }) });
        let body;
        if (r.status === 401 || r.status === 403) {
          const text = (await r.text()).trim();
          if (signal.aborted) return;
          if (r.status === 403) showDenied(what, text);
          else showAclDisabled(text);
          return;
        }
        if (r.status === 404 && notFound) body = null;
        else if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim() || r.statusText}`);
        else body = await r.json();
        const next = Number(r.headers.get('X-Consul-Index')) || 0;
        const meta = { filtered: r.headers.get('X-Consul-Results-Filtered-By-ACLs') === 'true' };
        if (failures) setLive(true, 'Live');
        failures = 0;
        if (first || next === 0 || next !== index) onData(body, next, meta);
        first = false;
        // An index that goes backwards (a restored snapshot, another server) starts over.
        index = next > 0 ? next : 0;
        if (!index) {
          await sleep(POLL_MS, signal);
          await whenVisible(signal);
        }
      } catch (e) {
        if (signal.aborted) return;
        failures += 1;
        const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** failures) * (0.75 + Math.random() / 2);
        setLive(false, `Not live (${e.message || e}); retrying in ${Math.round(delay / 1000)} s`);
        index = 0;
        await sleep(delay, signal);
      }
    }
  })();
}

async function api(method, path, body) {
  const r = await fetch(path, { method, body, headers: withToken() });
  const text = await r.text();
  if (!r.ok) {
    const e = new Error(`${method} ${path}: ${r.status} ${text.trim()}`);
    e.status = r.status;
    throw e;
  }
  return text ? JSON.parse(text) : null;
}

// ---------- what a token may not see ----------

function logoutButton() {
  return h('button', { type: 'button', id: 'logout', onclick: logout }, 'Log out');
}

// Who the requests are made as, and the way to change it.
function whoLine() {
  const s = session();
  if (s) {
    return h('p', null, 'You are logged in with the token ', h('strong', null, tokenName(s)), '. ', h('a', { href: '#/login' }, 'Log in with another token'), ' ', logoutButton());
  }
  return h('p', null, 'You are not logged in: requests carry no token, so the agent answers as its default (or the anonymous) token allows. ', h('a', { href: '#/login', id: 'denied-login' }, 'Log in with a token'), '.');
}

// The page for a 403: what could not be seen, and the agent's own words.
function showDenied(what, text) {
  if (active) active.abort(); // the page's other requests would only be refused too
  document.title = `Permission denied · ${APP}`;
  const notFound = /^ACL not found/.test(text);
  fill(
    main,
    h('h1', { tabindex: '-1', id: 'denied-title' }, 'Permission denied'),
    h(
      'section',
      { class: 'card', id: 'denied', role: 'alert' },
      h('p', { id: 'denied-what' }, `This token may not see ${what}.`),
      notFound ? h('p', null, 'The agent knows no such token: it may have been deleted, or it expired.') : null,
      h('p', null, 'The agent answered 403:'),
      h('pre', { class: 'value', id: 'denied-text' }, text || 'Forbidden'),
      whoLine()
    )
  );
}

function showAclDisabled(text) {
  if (active) active.abort();
  aclState = 'disabled';
  renderAuth();
  document.title = `ACLs disabled · ${APP}`;
  fill(
    main,
    h('h1', { tabindex: '-1' }, 'ACLs are disabled'),
    h('p', { class: 'msg warn', id: 'acl-disabled' }, 'This agent does not enforce ACLs (acl.enabled is off), so there are no tokens or policies to show, and no token is needed.'),
    h('pre', { class: 'value' }, text)
  );
}

// Shown with a list the agent filtered: with nothing left, say so instead of "none registered".
function filteredNote(meta, empty, what) {
  if (!meta || !meta.filtered) return null;
  return h(
    'p',
    { class: 'msg warn', id: 'filtered' },
    empty ? `This token may not see any ${what}. ` : `Some ${what} are hidden: this token may not see them. `,
    session() ? null : h('a', { href: '#/login' }, 'Log in with a token')
  );
}

// ---------- pages ----------

function page(title, signal, ...kids) {
  document.title = `${title} · ${APP}`;
  const h1 = h('h1', { tabindex: '-1' }, title);
  fill(main, h1, ...kids);
  return h1;
}

function servicesPage(signal) {
  const filter = h('input', { type: 'search', placeholder: 'Filter by name or tag', 'aria-label': 'Filter services' });
  const summary = h('p', { class: 'sub', id: 'summary' });
  const region = h('div', { id: 'services' });
  const note = h('div');
  const h1 = page('Services', signal, summary, note, h('div', { class: 'tools' }, filter), region);
  let data = [];
  let hidden = false;
  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = data.filter((s) => !q || s.Name.toLowerCase().includes(q) || (s.Tags || []).some((t) => t.toLowerCase().includes(q)));
    const count = (n, cls) => ({ head: 'num', cls: (s) => 'num ' + (s[n] ? cls : 'zero'), cell: (s) => s[n] });
    fill(
      region,
      table(
        'services',
        [
          { label: 'Service', key: 'name', cell: (s) => h('a', { href: `#/services/${encSeg(s.Name)}` }, s.Name) },
          {
            label: 'Health',
            key: 'health',
            cell: (s) => badge(s.ChecksCritical ? 'critical' : s.ChecksWarning ? 'warning' : 'passing'),
          },
          { label: 'Instances', key: 'instances', cls: 'num', cell: (s) => s.InstanceCount },
          { label: 'Passing', key: 'passing', ...count('ChecksPassing', 'passing') },
          { label: 'Warning', key: 'warning', ...count('ChecksWarning', 'warning') },
          { label: 'Critical', key: 'critical', ...count('ChecksCritical', 'critical') },
          { label: 'Tags', key: 'tags', cell: (s) => tags(s.Tags) },
        ],
        rows.map((s) => ({ ...s, __key: s.Name })),
        q ? 'No service matches the filter.' : hidden ? 'No services visible with this token.' : 'No services registered.'
      )
    );
  };
  filter.addEventListener('input', render);
  watch(
    '/v1/internal/ui/services',
    (list, _index, meta) => {
      data = list || [];
      hidden = meta.filtered;
      fill(note, filteredNote(meta, !data.length, 'services'));
      const crit = data.filter((s) => s.ChecksCritical).length;
      summary.textContent = `${data.length} service${data.length === 1 ? '' : 's'}` + (crit ? `, ${crit} with critical checks` : ', none critical');
      render();
      performance.mark('ui:services-rendered');
    },
    signal,
    { what: 'the services' }
  );
  return h1;
}

function checksTable(checks, showService) {
  const cols = [
    { label: 'Status', key: 'status', cell: (c) => badge(c.Status) },
    { label: 'Check', key: 'name', cell: (c) => [c.Name, h('br'), h('small', { class: 'empty' }, c.CheckID)] },
  ];
  if (showService) cols.push({ label: 'Service', key: 'service', cell: (c) => (c.ServiceName ? h('a', { href: `#/services/${encSeg(c.ServiceName)}` }, c.ServiceName) : 'node') });
  cols.push(
    { label: 'Type', key: 'type', cell: (c) => c.Type || (c.CheckID === 'serfHealth' ? 'serf' : '') },
    { label: 'Output', key: 'output', cls: 'wide', cell: (c) => h('pre', null, c.Output || c.Notes || '') }
  );
  return table('checks', cols, checks.map((c) => ({ ...c, __key: `${c.Node}/${c.CheckID}` })), 'No checks.');
}

function servicePage(signal, name) {
  const summary = h('p', { class: 'sub', id: 'summary' });
  const region = h('div', { id: 'instances' });
  const h1 = page(name, signal, h('p', { class: 'crumbs' }, h('a', { href: '#/services' }, 'Services'), ' / ', name), summary, region);
  watch(
    `/v1/health/service/${encSeg(name)}`,
    (entries, _index, meta) => {
      entries = entries || [];
      const all = entries.flatMap((e) => e.Checks.map((c) => c.Status));
      const n = (s) => all.filter((x) => x === s).length;
      summary.textContent = entries.length
        ? `${entries.length} instance${entries.length === 1 ? '' : 's'} · ${n('passing')} passing, ${n('warning')} warning, ${n('critical')} critical checks`
        : '';
      fill(
        region,
        entries.length
          ? entries.map((e) => {
              const s = e.Service;
              const addr = `${s.Address || e.Node.Address}:${s.Port}`;
              return h(
                'section',
                { class: 'card instance', 'data-instance': s.ID, 'aria-label': `Instance ${s.ID}` },
                h('h3', null, badge(worst(e.Checks.map((c) => c.Status))), ' ', s.ID),
                h(
                  'dl',
                  null,
                  h('dt', null, 'Node'),
                  h('dd', null, h('a', { href: `#/nodes/${encSeg(e.Node.Node)}` }, e.Node.Node)),
                  h('dt', null, 'Address'),
                  h('dd', null, addr),
                  (s.Tags || []).length ? [h('dt', null, 'Tags'), h('dd', null, tags(s.Tags))] : null
                ),
                checksTable(e.Checks, false)
              );
            })
          : meta.filtered
            ? h('p', { class: 'msg warn', id: 'filtered' }, `This token may not see service ${name} or its instances. `, session() ? null : h('a', { href: '#/login' }, 'Log in with a token'))
            : h('p', { class: 'empty' }, `No instances of ${name} are registered.`)
      );
    },
    signal,
    { what: `service ${name}` }
  );
  return h1;
}

function counts(checks) {
  const n = (s) => checks.filter((c) => c.Status === s).length;
  return h(
    'span',
    null,
    ['passing', 'warning', 'critical'].filter((s) => n(s)).map((s) => [h('span', { class: 'badge ' + s }, `${n(s)} ${s}`), ' '])
  );
}

function nodesPage(signal) {
  const summary = h('p', { class: 'sub', id: 'summary' });
  const region = h('div', { id: 'nodes' });
  const note = h('div');
  const h1 = page('Nodes', signal, summary, note, region);
  watch(
    '/v1/internal/ui/nodes',
    (nodes, _index, meta) => {
      nodes = nodes || [];
      fill(note, filteredNote(meta, !nodes.length, 'nodes'));
      const serf = (n) => n.Checks.find((c) => c.CheckID === 'serfHealth');
      const failing = nodes.filter((n) => (serf(n) || {}).Status !== 'passing').length;
      summary.textContent = `${nodes.length} node${nodes.length === 1 ? '' : 's'}` + (failing ? `, ${failing} not healthy` : ', all healthy');
      fill(
        region,
        table(
          'nodes',
          [
            { label: 'Node', key: 'name', cell: (n) => h('a', { href: `#/nodes/${encSeg(n.Node)}` }, n.Node) },
            { label: 'Address', key: 'address', cell: (n) => n.Address },
            { label: 'serfHealth', key: 'serf', cell: (n) => (serf(n) ? badge(serf(n).Status) : h('span', { class: 'badge muted' }, 'none')) },
            { label: 'Services', key: 'services', cls: 'num', cell: (n) => n.Services.length },
            { label: 'Checks', key: 'checks', cell: (n) => counts(n.Checks) },
          ],
          nodes.map((n) => ({ ...n, __key: n.Node })),
          'No nodes.'
        )
      );
    },
    signal,
    { what: 'the nodes' }
  );
  return h1;
}

function nodePage(signal, name) {
  const region = h('div', { id: 'node' });
  const h1 = page(name, signal, h('p', { class: 'crumbs' }, h('a', { href: '#/nodes' }, 'Nodes'), ' / ', name), region);
  watch(
    `/v1/internal/ui/node/${encSeg(name)}`,
    (n) => {
      if (!n) return fill(region, h('p', { class: 'msg warn' }, `Node ${name} is not in the catalog.`));
      const byService = (id) => n.Checks.filter((c) => c.ServiceID === id);
      const nodeChecks = n.Checks.filter((c) => !c.ServiceID);
      fill(
        region,
        h(
          'dl',
          null,
          h('dt', null, 'Address'),
          h('dd', null, n.Address),
          h('dt', null, 'Datacenter'),
          h('dd', null, n.Datacenter),
          h('dt', null, 'Node health'),
          h('dd', null, nodeChecks.length ? badge(worst(nodeChecks.map((c) => c.Status))) : 'no node checks')
        ),
        h('h2', null, 'Services'),
        table(
          'services',
          [
            { label: 'Service', key: 'name', cell: (s) => h('a', { href: `#/services/${encSeg(s.Service)}` }, s.Service) },
            { label: 'ID', key: 'id', cell: (s) => s.ID },
            { label: 'Port', key: 'port', cls: 'num', cell: (s) => s.Port },
            { label: 'Health', key: 'health', cell: (s) => (byService(s.ID).length ? badge(worst(byService(s.ID).map((c) => c.Status))) : '') },
            { label: 'Tags', key: 'tags', cell: (s) => tags(s.Tags) },
          ],
          n.Services.map((s) => ({ ...s, __key: s.ID })),
          'No services on this node.'
        ),
        h('h2', null, 'Checks'),
        checksTable([...nodeChecks, ...n.Checks.filter((c) => c.ServiceID)], true)
      );
    },
    signal,
    { what: `node ${name}` }
  );
  return h1;
}

// ---------- KV ----------

// Small line icons drawn inline (no icon font, no image request).
const ICONS = {
  folder: 'M1.5 3.5h4l1.5 1.5h7.5v8h-13z',
  file: 'M3.5 1.5h6l3 3v10h-9z M9.5 1.5v3h3',
};
function icon(name) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

function kvCrumbs(path) {
  const parts = path.split('/');
  const out = [h('a', { href: '#/kv/' }, 'Key/Value')];
  let acc = '';
  parts.forEach((p, i) => {
    if (!p && i === parts.length - 1) return;
    acc += p + (i < parts.length - 1 ? '/' : '');
    out.push(' / ', i < parts.length - 1 ? h('a', { href: `#/kv/${encKey(acc)}` }, p) : p);
  });
  return h('nav', { class: 'crumbs', 'aria-label': 'Folder' }, out);
}

function kvParent(key) {
  const trimmed = key.endsWith('/') ? key.slice(0, -1) : key;
  const i = trimmed.lastIndexOf('/');
  return i < 0 ? '' : trimmed.slice(0, i + 1);
}

// A button that asks once more, inline (no window.confirm, so keyboards and tests can answer it).
function confirmButton(label, question, action) {
  const box = h('span', { class: 'tools' });
  const ask = () => {
    const yes = h('button', { type: 'button', class: 'danger', onclick: action }, `Yes, ${label.toLowerCase()}`);
    fill(box, h('span', null, question), yes, h('button', { type: 'button', onclick: reset }, 'Cancel'));
    yes.focus();
  };
  const reset = () => fill(box, h('button', { type: 'button', class: 'danger', onclick: ask }, label));
  reset();
  return box;
}

function kvFolderPage(signal, prefix) {
  const region = h('div', { id: 'kv-list' });
  const msg = h('div', { class: 'msg', role: 'alert', id: 'kv-msg' });
  const name = h('input', { type: 'text', id: 'kv-new-key', required: true, autocomplete: 'off', placeholder: 'name, or name/ for a folder' });
  const value = h('textarea', { id: 'kv-new-value' });
  const create = async (ev) => {
    ev.preventDefault();
    const key = prefix + name.value.trim();
    if (!name.value.trim()) return;
    try {
      const folder = key.endsWith('/');
      const ok = await api('PUT', `/v1/kv/${encKey(key)}?cas=0`, folder ? undefined : value.value);
      if (!ok) {
        msg.className = 'msg error';
        msg.textContent = `Not created: ${key} already exists. Open it to edit it.`;
        return;
      }
      location.hash = `#/kv/${encKey(key)}`;
    } catch (e) {
      msg.className = 'msg error';
      msg.textContent = String(e.message || e);
    }
  };
  const form = h(
    'form',
    { class: 'card', id: 'kv-create', onsubmit: create },
    h('h2', { style: 'margin-top:0' }, prefix ? `Create in ${prefix}` : 'Create'),
    h('label', { for: 'kv-new-key' }, 'Key or folder'),
    name,
    h('label', { for: 'kv-new-value' }, 'Value'),
    value,
    h('div', { class: 'tools' }, h('button', { type: 'submit', class: 'primary' }, 'Save'))
  );
  const remove = async () => {
    try {
      await api('DELETE', `/v1/kv/${encKey(prefix)}?recurse`);
      location.hash = `#/kv/${encKey(kvParent(prefix))}`;
    } catch (e) {
      msg.className = 'msg error';
      msg.textContent = String(e.message || e);
    }
  };
  const h1 = page(prefix ? prefix : 'Key/Value', signal, kvCrumbs(prefix), msg, region, form, prefix ? confirmButton('Delete folder', `Delete ${prefix} and every key under it?`, remove) : null);
  watch(
    `/v1/kv/${encKey(prefix)}?keys&separator=/`,
    (keys, _index, meta) => {
      keys = (keys || []).filter((k) => k !== prefix).sort();
      fill(
        region,
        filteredNote(meta, !keys.length, 'keys here'),
        keys.length
          ? h(
              'ul',
              { class: 'kv-list', style: 'list-style:none;padding:0;margin:0 0 1rem' },
              keys.map((k) => {
                const folder = k.endsWith('/');
                return h(
                  'li',
                  { style: 'padding:.35rem 0;border-bottom:1px solid var(--line)', 'data-key-row': k },
                  icon(folder ? 'folder' : 'file'),
                  h('a', { href: `#/kv/${encKey(k)}` }, k.slice(prefix.length)),
                  folder ? h('span', { class: 'empty' }, ' folder') : null
                );
              })
            )
          : h('p', { class: 'empty' }, prefix ? 'This folder is empty.' : 'No keys yet.')
      );
    },
    signal,
    { notFound: true, what: prefix ? `the keys under ${prefix}` : 'the keys' }
  );
  return h1;
}

function decodeValue(b64) {
  if (b64 == null) return { text: '', binary: false };
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  try {
    return { text: new TextDecoder('utf-8', { fatal: true }).decode(bytes), binary: false };
  } catch {
    return { text: b64, binary: true, size: bytes.length };
  }
}

function kvKeyPage(signal, key) {
  const info = h('div', { id: 'kv-info' });
  const msg = h('div', { class: 'msg', role: 'alert', id: 'kv-msg' });
  const editor = h('textarea', { id: 'kv-value' });
  const tools = h('div', { class: 'tools' });
  let current = null; // the KvPair last read
  // The ModifyIndex the editor's text is based on: undefined before the first read, null right
  // after this page's own save (whose index the PUT does not return) until the watch shows it.
  let base;
  let loaded = ''; // the text the editor was loaded with or saved, to tell an edit from no edit
  let lastCas = 0; // the index this page's last save was based on
  let saving = false;
  const say = (cls, text, ...extra) => {
    msg.className = 'msg ' + cls;
    fill(msg, h('span', null, text), extra.length ? h('div', { class: 'tools', style: 'margin:.5rem 0 0' }, extra) : null);
  };
  const load = () => {
    const v = decodeValue(current && current.Value);
    editor.value = loaded = v.text;
    editor.disabled = v.binary;
    base = current ? current.ModifyIndex : 0;
  };
  // After a new read: the editor follows the store unless it holds the person's own edit, which
  // is kept (and its save will be refused by the CAS, with a message saying why).
  const follow = () => {
    const now = current ? current.ModifyIndex : 0;
    if (base === undefined) return load();
    if (base === null) {
      if (current && decodeValue(current.Value).text === loaded) {
        base = now; // our own write
        return;
      }
      base = lastCas; // someone wrote after our save: what the editor holds is stale
    }
    if (now === base) return;
    if (editor.value === loaded) return load();
    say(
      'warn',
      current
        ? `${key} changed while you were editing (now index ${now}). Saving will report a conflict.`
        : `${key} was deleted while you were editing. Saving will report a conflict.`
    );
  };
  const save = async (cas) => {
    saving = true;
    try {
      const ok = await api('PUT', `/v1/kv/${encKey(key)}?cas=${cas}`, editor.value);
      if (ok) {
        say('ok', `Saved ${key}.`);
        loaded = editor.value;
        lastCas = cas;
        base = null;
        // The watch may have shown the write (or a later one) while the PUT was answering.
        if (current && current.ModifyIndex > cas) follow();
      } else {
        const theirs = current ? `it is now at index ${current.ModifyIndex}` : 'it has been deleted';
        say(
          'error',
          `Conflict: not saved. Someone else changed ${key} after you opened it (you edited index ${cas}; ${theirs}). Your text is still in the editor.`,
          h('button', { type: 'button', class: 'danger', onclick: () => save(current ? current.ModifyIndex : 0) }, 'Overwrite with my text'),
          h('button', { type: 'button', onclick: () => (load(), say('ok', 'Loaded the current value.')) }, 'Discard my edit')
        );
      }
    } catch (e) {
      say('error', String(e.message || e));
    } finally {
      saving = false;
    }
  };
  const remove = async () => {
    try {
      const ok = await api('DELETE', `/v1/kv/${encKey(key)}?cas=${current ? current.ModifyIndex : 0}`);
      if (ok) location.hash = `#/kv/${encKey(kvParent(key))}`;
      else say('error', `Conflict: not deleted. ${key} changed since this page showed it; look again.`);
    } catch (e) {
      say('error', String(e.message || e));
    }
  };
  // Built once: a live update changes their state, never replaces them under a person's focus.
  const saveButton = h('button', { type: 'submit', class: 'primary' }, 'Save');
  const deleteBox = confirmButton('Delete', `Delete ${key}?`, remove);
  tools.append(saveButton, deleteBox);
  const form = h(
    'form',
    { id: 'kv-edit', onsubmit: (ev) => (ev.preventDefault(), save(base != null ? base : current ? current.ModifyIndex : 0)) },
    h('label', { for: 'kv-value' }, 'Edit value'),
    editor,
    tools
  );
  const h1 = page(key, signal, kvCrumbs(key), msg, info, form);
  watch(
    `/v1/kv/${encKey(key)}`,
    (list) => {
      current = list && list[0] ? list[0] : null;
      if (!current) {
        fill(info, h('p', { class: 'msg warn' }, `${key} does not exist (it may have been deleted).`));
        saveButton.textContent = 'Create';
        saveButton.disabled = false;
        deleteBox.hidden = true;
        if (!saving) follow();
        return;
      }
      const v = decodeValue(current.Value);
      fill(
        info,
        h(
          'dl',
          null,
          h('dt', null, 'Current value'),
          h('dd', null, v.binary ? h('span', null, `binary, ${v.size} bytes (base64 below)`) : null, h('pre', { class: 'value', id: 'kv-current' }, v.text || '(empty)')),
          h('dt', null, 'Flags'),
          h('dd', null, current.Flags),
          h('dt', null, 'ModifyIndex'),
          h('dd', { id: 'kv-modify-index' }, current.ModifyIndex),
          h('dt', null, 'CreateIndex'),
          h('dd', null, current.CreateIndex),
          current.Session ? [h('dt', null, 'Locked by session'), h('dd', null, current.Session)] : null
        )
      );
      saveButton.textContent = 'Save';
      saveButton.disabled = v.binary;
      deleteBox.hidden = false;
      if (!saving) follow();
    },
    signal,
    { notFound: true, what: `key ${key}` }
  );
  return h1;
}

function kvPage(signal, rest) {
  const path = (rest || '').replace(/^\//, '');
  const key = path.split('/').map(decodeURIComponent).join('/');
  return key === '' || key.endsWith('/') ? kvFolderPage(signal, key) : kvKeyPage(signal, key);
}

// ---------- servers and members (not blocking endpoints: re-read every few seconds) ----------

function serversPage(signal) {
  const leaderLine = h('p', { class: 'sub', id: 'leader' });
  const region = h('div', { id: 'servers' });
  const h1 = page('Servers', signal, leaderLine, region);
  let config = null;
  let health = {};
  const render = () => {
    if (!config) return;
    const leader = config.Servers.find((s) => s.Leader);
    fill(leaderLine, leader ? ['Leader: ', h('strong', null, leader.Node), ` (${leader.Address})`] : h('span', { class: 'badge critical' }, 'No leader'));
    fill(
      region,
      table(
        'servers',
        [
          { label: 'Server', key: 'name', cell: (s) => [h('a', { href: `#/nodes/${encSeg(s.Node)}` }, s.Node), s.Leader ? [' ', h('span', { class: 'badge leader', title: 'Raft leader' }, '★ leader')] : null] },
          { label: 'Address', key: 'address', cell: (s) => s.Address },
          { label: 'Raft state', key: 'state', cell: (s) => (s.Leader ? 'leader' : s.Voter ? 'follower' : 'non-voter') },
          { label: 'Voter', key: 'voter', cell: (s) => (s.Voter ? 'yes' : 'no') },
          { label: 'Health', key: 'health', cell: (s) => (health[s.ID] ? badge(health[s.ID].Healthy ? 'passing' : 'critical') : '') },
          { label: 'Last index', key: 'index', cls: 'num', cell: (s) => s.LastIndex },
          { label: 'Term', key: 'term', cls: 'num', cell: (s) => (health[s.ID] ? health[s.ID].LastTerm : '') },
          { label: 'Last contact', key: 'contact', cell: (s) => (health[s.ID] ? health[s.ID].LastContact : '') },
        ],
        config.Servers.map((s) => ({ ...s, __key: s.ID })),
        'No Raft servers.'
      ),
      h('p', { class: 'empty' }, `Raft configuration index ${config.Index}.`)
    );
  };
  watch('/v1/operator/raft/configuration', (c) => ((config = c), render()), signal, { what: 'the Raft servers' });
  watch(
    '/v1/operator/autopilot/health',
    (a) => {
      health = Object.fromEntries(((a && a.Servers) || []).map((s) => [s.ID, s]));
      render();
    },
    signal,
    { what: 'the Raft servers' }
  );
  return h1;
}

const MEMBER_STATUS = ['none', 'alive', 'leaving', 'left', 'failed'];
function membersPage(signal) {
  const region = h('div', { id: 'members' });
  const summary = h('p', { class: 'sub', id: 'summary' });
  const note = h('div');
  const h1 = page('Members', signal, summary, note, region);
  watch(
    '/v1/agent/members',
    (list, _index, meta) => {
      list = (list || []).slice().sort((a, b) => a.Name.localeCompare(b.Name));
      fill(note, filteredNote(meta, !list.length, 'members'));
      const status = (m) => MEMBER_STATUS[m.Status] || String(m.Status);
      summary.textContent = `${list.length} member${list.length === 1 ? '' : 's'} in this agent's LAN gossip pool`;
      fill(
        region,
        table(
          'members',
          [
            { label: 'Name', key: 'name', cell: (m) => h('a', { href: `#/nodes/${encSeg(m.Name)}` }, m.Name) },
            { label: 'Address', key: 'address', cell: (m) => `${m.Addr}:${m.Port}` },
            { label: 'Status', key: 'status', cell: (m) => h('span', { class: 'badge ' + (status(m) === 'alive' ? 'passing' : status(m) === 'failed' ? 'critical' : 'warning'), 'data-status': status(m) }, status(m)) },
            { label: 'Type', key: 'type', cell: (m) => ((m.Tags || {}).role === 'consul' ? 'server' : 'client') },
            { label: 'Datacenter', key: 'dc', cell: (m) => (m.Tags || {}).dc || '' },
            { label: 'Build', key: 'build', cell: (m) => (m.Tags || {}).build || '' },
          ],
          list.map((m) => ({ ...m, __key: m.Name })),
          'No members.'
        )
      );
    },
    signal,
    { what: "the cluster's members" }
  );
  return h1;
}

// ---------- logging in ----------

// The header's corner: who the requests are made as, and the way in or out.
function renderAuth() {
  for (const li of document.querySelectorAll('[data-acl]')) li.hidden = aclState !== 'enabled';
  const box = document.getElementById('auth');
  const s = session();
  if (aclState === 'disabled') return fill(box);
  if (s) {
    return fill(
      box,
      h('span', { id: 'who', class: authProblem ? 'bad' : null, title: authProblem ? `Refused: ${authProblem}` : `AccessorID ${s.AccessorID || '?'}` }, authProblem ? `${tokenName(s)} (refused)` : tokenName(s)),
      logoutButton()
    );
  }
  fill(box, h('a', { href: '#/login', id: 'login-link' }, 'Log in'));
}

// Asks the agent who the stored token is (and whether it has ACLs at all).
async function checkAuth() {
  try {
    const r = await fetch('/v1/acl/token/self', { headers: withToken() });
    const text = await r.text();
    authProblem = '';
    if (r.status === 401) {
      aclState = 'disabled';
    } else {
      aclState = 'enabled';
      const s = session();
      if (s && r.ok) {
        const t = JSON.parse(text);
        saveSession({ ...s, AccessorID: t.AccessorID, Description: t.Description });
      } else if (s) {
        authProblem = text.trim() || `${r.status}`;
      }
    }
  } catch {
    // Not reachable now; the pages say so.
  }
  renderAuth();
}

function logout() {
  localStorage.removeItem(TOKEN_KEY);
  authProblem = '';
  renderAuth();
  route();
}

function loginPage(signal) {
  const input = h('input', { type: 'password', id: 'login-token', autocomplete: 'off', spellcheck: 'false', required: true });
  const msg = h('div', { class: 'msg', role: 'alert', id: 'login-msg' });
  const say = (cls, text) => ((msg.className = 'msg ' + cls), (msg.textContent = text));
  const submit = async (ev) => {
    ev.preventDefault();
    const secret = input.value.trim();
    if (!secret) return;
    try {
      const r = await fetch('/v1/acl/token/self', { headers: { 'X-Consul-Token': secret } });
      const text = await r.text();
      if (r.ok) {
        const t = JSON.parse(text);
        saveSession({ SecretID: secret, AccessorID: t.AccessorID, Description: t.Description });
        aclState = 'enabled';
        authProblem = '';
        renderAuth();
        location.hash = lastPage;
      } else if (r.status === 401) {
        say('warn', `This agent does not enforce ACLs, so it needs no token (${text.trim()}).`);
      } else {
        say('error', `Not logged in: the agent refused this token (${r.status} ${text.trim()}).`);
      }
    } catch (e) {
      say('error', `Not logged in: ${e.message || e}`);
    }
  };
  const s = session();
  return page(
    'Log in',
    signal,
    h(
      'form',
      { class: 'card', id: 'login-form', onsubmit: submit },
      h('h2', { style: 'margin-top:0' }, 'Log in with a token'),
      h('p', null, 'With ACLs on, the agent shows and changes only what a request\'s token allows. Paste the SecretID of your token. This browser keeps it (in localStorage) and sends it as X-Consul-Token with every request until you log out.'),
      h('label', { for: 'login-token' }, 'Token SecretID'),
      input,
      msg,
      h('div', { class: 'tools' }, h('button', { type: 'submit', class: 'primary', id: 'login-submit' }, 'Log in'))
    ),
    s ? whoLine() : null
  );
}

// ---------- ACL tokens and policies ----------

const when = (t) => (t ? t.replace('T', ' ').replace(/(\.\d+)?Z$/, ' UTC') : '');
function aclLinks(links, kind) {
  if (!(links || []).length) return h('span', { class: 'empty' }, 'none');
  return links.map((l, i) => [i ? ', ' : '', h('a', { href: `#/acl/${kind}/${encSeg(l.ID)}` }, l.Name || l.ID)]);
}

// Checkboxes for the policies the agent has; `set` loads a choice, `selected` reads it.
function policyPicker(id, signal) {
  const box = h('fieldset', { class: 'picker', id });
  let policies = [];
  let chosen = new Set();
  const render = () =>
    fill(
      box,
      h('legend', null, 'Policies'),
      policies.length
        ? policies.map((p) => {
            const cb = h('input', { type: 'checkbox', value: p.ID, 'data-policy': p.Name, checked: chosen.has(p.ID) });
            cb.addEventListener('change', () => (cb.checked ? chosen.add(p.ID) : chosen.delete(p.ID)));
            return h('label', { class: 'check' }, cb, ' ', p.Name);
          })
        : h('span', { class: 'empty' }, 'No policies yet.')
    );
  watch('/v1/acl/policies', (list) => ((policies = (list || []).slice().sort((a, b) => a.Name.localeCompare(b.Name))), render()), signal, { what: 'the ACL policies' });
  render();
  return {
    el: box,
    set: (ids) => ((chosen = new Set(ids)), render()),
    selected: () => [...chosen],
  };
}

function tokensPage(signal) {
  const summary = h('p', { class: 'sub', id: 'summary' });
  const region = h('div', { id: 'tokens' });
  const msg = h('div', { class: 'msg', role: 'alert', id: 'token-msg' });
  const description = h('input', { type: 'text', id: 'token-new-description', autocomplete: 'off' });
  const picker = policyPicker('token-new-policies', signal);
  const create = async (ev) => {
    ev.preventDefault();
    try {
      const t = await api('PUT', '/v1/acl/token', JSON.stringify({ Description: description.value, Policies: picker.selected().map((ID) => ({ ID })) }));
      location.hash = `#/acl/tokens/${encSeg(t.AccessorID)}`;
    } catch (e) {
      msg.className = 'msg error';
      msg.textContent = String(e.message || e);
    }
  };
  const form = h(
    'form',
    { class: 'card', id: 'token-create', onsubmit: create },
    h('h2', { style: 'margin-top:0' }, 'Create a token'),
    h('label', { for: 'token-new-description' }, 'Description'),
    description,
    picker.el,
    h('div', { class: 'tools' }, h('button', { type: 'submit', class: 'primary' }, 'Create token'))
  );
  const h1 = page('ACL tokens', signal, summary, msg, region, form);
  watch(
    '/v1/acl/tokens',
    (list) => {
      list = list || [];
      const me = (session() || {}).AccessorID;
      summary.textContent = `${list.length} token${list.length === 1 ? '' : 's'}`;
      fill(
        region,
        table(
          'tokens',
          [
            { label: 'AccessorID', key: 'accessor', cell: (t) => [h('a', { href: `#/acl/tokens/${encSeg(t.AccessorID)}` }, h('code', null, t.AccessorID)), t.AccessorID === me ? [' ', h('span', { class: 'badge muted' }, 'yours')] : null] },
            { label: 'Description', key: 'description', cell: (t) => t.Description },
            { label: 'Policies', key: 'policies', cell: (t) => aclLinks(t.Policies, 'policies') },
            { label: 'Local', key: 'local', cell: (t) => (t.Local ? 'yes' : 'no') },
            { label: 'Created', key: 'created', cell: (t) => when(t.CreateTime) },
          ],
          list.map((t) => ({ ...t, __key: t.AccessorID })),
          'No tokens.'
        )
      );
    },
    signal,
    { what: 'the ACL tokens' }
  );
  return h1;
}

function tokenPage(signal, accessor) {
  const info = h('div', { id: 'token-info' });
  const msg = h('div', { class: 'msg', role: 'alert', id: 'token-msg' });
  const description = h('input', { type: 'text', id: 'token-description', autocomplete: 'off' });
  const picker = policyPicker('token-policies', signal);
  let current = null;
  let edited = false; // the form holds the person's edit: live updates leave it alone
  const mark = () => (edited = true);
  description.addEventListener('input', mark);
  picker.el.addEventListener('change', mark);
  const say = (cls, text) => ((msg.className = 'msg ' + cls), (msg.textContent = text));
  const save = async (ev) => {
    ev.preventDefault();
    if (!current) return;
    try {
      await api(
        'PUT',
        `/v1/acl/token/${encSeg(accessor)}`,
        JSON.stringify({
          AccessorID: current.AccessorID,
          Description: description.value,
          Policies: picker.selected().map((ID) => ({ ID })),
          Roles: current.Roles || [],
          ServiceIdentities: current.ServiceIdentities || [],
          NodeIdentities: current.NodeIdentities || [],
          TemplatedPolicies: current.TemplatedPolicies || [],
          Local: current.Local,
        })
      );
      edited = false;
      say('ok', 'Saved.');
    } catch (e) {
      say('error', String(e.message || e));
    }
  };
  const remove = async () => {
    try {
      await api('DELETE', `/v1/acl/token/${encSeg(accessor)}`);
      location.hash = '#/acl/tokens';
    } catch (e) {
      say('error', String(e.message || e));
    }
  };
  const form = h(
    'form',
    { class: 'card', id: 'token-edit', onsubmit: save },
    h('h2', { style: 'margin-top:0' }, 'Edit'),
    h('label', { for: 'token-description' }, 'Description'),
    description,
    picker.el,
    h('div', { class: 'tools' }, h('button', { type: 'submit', class: 'primary', id: 'token-save' }, 'Save'), confirmButton('Delete token', `Delete token ${accessor}?`, remove))
  );
  const h1 = page(`Token ${accessor.slice(0, 8)}`, signal, h('p', { class: 'crumbs' }, h('a', { href: '#/acl/tokens' }, 'ACL tokens'), ' / ', accessor), msg, info, form);
  let shown = false;
  const secretCell = h('span', { id: 'token-secret' });
  const showSecret = () => {
    if (!current) return;
    const hidden = current.SecretID === '<hidden>';
    fill(
      secretCell,
      h('code', null, shown || hidden ? current.SecretID : '••••••••'),
      hidden ? null : [' ', h('button', { type: 'button', id: 'token-secret-toggle', onclick: () => ((shown = !shown), showSecret()) }, shown ? 'Hide' : 'Show')]
    );
  };
  watch(
    `/v1/acl/token/${encSeg(accessor)}`,
    (t) => {
      current = t;
      showSecret();
      fill(
        info,
        h(
          'dl',
          null,
          h('dt', null, 'AccessorID'),
          h('dd', { id: 'token-accessor' }, h('code', null, t.AccessorID)),
          h('dt', null, 'SecretID'),
          h('dd', null, secretCell),
          h('dt', null, 'Description'),
          h('dd', { id: 'token-current-description' }, t.Description || h('span', { class: 'empty' }, 'none')),
          h('dt', null, 'Policies'),
          h('dd', { id: 'token-current-policies' }, aclLinks(t.Policies, 'policies')),
          (t.Roles || []).length ? [h('dt', null, 'Roles'), h('dd', null, t.Roles.map((r) => r.Name).join(', '))] : null,
          (t.ServiceIdentities || []).length ? [h('dt', null, 'Service identities'), h('dd', null, t.ServiceIdentities.map((x) => x.ServiceName + (x.Datacenters && x.Datacenters.length ? ` (${x.Datacenters.join(', ')})` : '')).join(', '))] : null,
          (t.NodeIdentities || []).length ? [h('dt', null, 'Node identities'), h('dd', null, t.NodeIdentities.map((x) => `${x.NodeName} (${x.Datacenter})`).join(', '))] : null,
          h('dt', null, 'Local'),
          h('dd', null, t.Local ? 'yes' : 'no'),
          h('dt', null, 'Created'),
          h('dd', null, when(t.CreateTime)),
          t.ExpirationTime ? [h('dt', null, 'Expires'), h('dd', null, when(t.ExpirationTime))] : null
        )
      );
      if (!edited) {
        description.value = t.Description || '';
        picker.set((t.Policies || []).map((l) => l.ID));
      }
    },
    signal,
    { what: `token ${accessor}` }
  );
  return h1;
}

function policiesPage(signal) {
  const region = h('div', { id: 'policies' });
  const msg = h('div', { class: 'msg', role: 'alert', id: 'policy-msg' });
  const name = h('input', { type: 'text', id: 'policy-new-name', required: true, autocomplete: 'off' });
  const description = h('input', { type: 'text', id: 'policy-new-description', autocomplete: 'off' });
  const rules = h('textarea', { id: 'policy-new-rules', placeholder: 'key_prefix "app/" { policy = "read" }' });
  const create = async (ev) => {
    ev.preventDefault();
    try {
      const p = await api('PUT', '/v1/acl/policy', JSON.stringify({ Name: name.value.trim(), Description: description.value, Rules: rules.value }));
      location.hash = `#/acl/policies/${encSeg(p.ID)}`;
    } catch (e) {
      msg.className = 'msg error';
      msg.textContent = String(e.message || e);
    }
  };
  const form = h(
    'form',
    { class: 'card', id: 'policy-create', onsubmit: create },
    h('h2', { style: 'margin-top:0' }, 'Create a policy'),
    h('label', { for: 'policy-new-name' }, 'Name'),
    name,
    h('label', { for: 'policy-new-description' }, 'Description'),
    description,
    h('label', { for: 'policy-new-rules' }, 'Rules (HCL or JSON)'),
    rules,
    h('div', { class: 'tools' }, h('button', { type: 'submit', class: 'primary' }, 'Create policy'))
  );
  const h1 = page('ACL policies', signal, msg, region, form);
  watch(
    '/v1/acl/policies',
    (list) => {
      list = (list || []).slice().sort((a, b) => a.Name.localeCompare(b.Name));
      fill(
        region,
        table(
          'policies',
          [
            { label: 'Name', key: 'name', cell: (p) => h('a', { href: `#/acl/policies/${encSeg(p.ID)}` }, p.Name) },
            { label: 'Description', key: 'description', cell: (p) => p.Description },
            { label: 'Datacenters', key: 'dcs', cell: (p) => ((p.Datacenters || []).length ? p.Datacenters.join(', ') : 'all') },
          ],
          list.map((p) => ({ ...p, __key: p.Name })),
          'No policies.'
        )
      );
    },
    signal,
    { what: 'the ACL policies' }
  );
  return h1;
}

function policyPage(signal, id) {
  const info = h('div', { id: 'policy-info' });
  const msg = h('div', { class: 'msg', role: 'alert', id: 'policy-msg' });
  const name = h('input', { type: 'text', id: 'policy-name', required: true, autocomplete: 'off' });
  const description = h('input', { type: 'text', id: 'policy-description', autocomplete: 'off' });
  const rules = h('textarea', { id: 'policy-rules' });
  let current = null;
  let edited = false;
  for (const el of [name, description, rules]) el.addEventListener('input', () => (edited = true));
  const say = (cls, text) => ((msg.className = 'msg ' + cls), (msg.textContent = text));
  const save = async (ev) => {
    ev.preventDefault();
    try {
      await api(
        'PUT',
        `/v1/acl/policy/${encSeg(id)}`,
        JSON.stringify({ ID: id, Name: name.value.trim(), Description: description.value, Rules: rules.value, Datacenters: (current && current.Datacenters) || [] })
      );
      edited = false;
      say('ok', 'Saved.');
    } catch (e) {
      say('error', String(e.message || e));
    }
  };
  const remove = async () => {
    try {
      await api('DELETE', `/v1/acl/policy/${encSeg(id)}`);
      location.hash = '#/acl/policies';
    } catch (e) {
      say('error', String(e.message || e));
    }
  };
  const form = h(
    'form',
    { class: 'card', id: 'policy-edit', onsubmit: save },
    h('h2', { style: 'margin-top:0' }, 'Edit'),
    h('label', { for: 'policy-name' }, 'Name'),
    name,
    h('label', { for: 'policy-description' }, 'Description'),
    description,
    h('label', { for: 'policy-rules' }, 'Rules'),
    rules,
    h('div', { class: 'tools' }, h('button', { type: 'submit', class: 'primary', id: 'policy-save' }, 'Save'), id === GLOBAL_MANAGEMENT ? null : confirmButton('Delete policy', 'Delete this policy? Tokens and roles that link it lose it.', remove))
  );
  const title = h('span', null, 'Policy');
  const h1 = page('Policy', signal, h('p', { class: 'crumbs' }, h('a', { href: '#/acl/policies' }, 'ACL policies'), ' / ', title), msg, info, form);
  watch(
    `/v1/acl/policy/${encSeg(id)}`,
    (p) => {
      if (!p) return fill(info, h('p', { class: 'msg warn' }, `Policy ${id} does not exist (it may have been deleted).`));
      current = p;
      h1.textContent = p.Name;
      title.textContent = p.Name;
      document.title = `${p.Name} · ${APP}`;
      fill(
        info,
        h(
          'dl',
          null,
          h('dt', null, 'ID'),
          h('dd', { id: 'policy-id' }, h('code', null, p.ID)),
          h('dt', null, 'Description'),
          h('dd', { id: 'policy-current-description' }, p.Description || h('span', { class: 'empty' }, 'none')),
          h('dt', null, 'Datacenters'),
          h('dd', null, (p.Datacenters || []).length ? p.Datacenters.join(', ') : 'all'),
          h('dt', null, 'Rules'),
          h('dd', null, h('pre', { class: 'value', id: 'policy-current-rules' }, p.Rules || '(none)'))
        )
      );
      if (!edited) {
        name.value = p.Name;
        description.value = p.Description || '';
        rules.value = p.Rules || '';
      }
    },
    signal,
    { notFound: true, what: `policy ${id}` }
  );
  return h1;
}

// ---------- intentions and config entries ----------

// The intention's page, addressed as Consul >= 1.9 addresses intentions: by source and destination.
const intentionHref = (i) => `#/intentions/${encSeg(i.SourceName)}/${encSeg(i.DestinationName)}`;
const exactQuery = (source, destination) => `source=${encodeURIComponent(source)}&destination=${encodeURIComponent(destination)}`;

function actionBadge(i) {
  const perms = (i.Permissions || []).length;
  if (perms) return h('span', { class: 'badge muted', 'data-action': 'l7' }, perms === 1 ? '1 permission' : `${perms} permissions`);
  const allow = i.Action === 'allow';
  return h('span', { class: 'badge ' + (allow ? 'passing' : 'critical'), 'data-action': i.Action }, allow ? '✓ allow' : '✕ deny');
}

function actionChoice(name, checked) {
  return h(
    'fieldset',
    { class: 'picker', id: name },
    h('legend', null, 'Action'),
    ['allow', 'deny'].map((a) =>
      h('label', { class: 'check' }, h('input', { type: 'radio', name, value: a, checked: a === checked }), ' ', a === 'allow' ? 'Allow' : 'Deny')
    )
  );
}
const chosen = (name) => (document.querySelector(`input[name="${name}"]:checked`) || { value: 'allow' }).value;

function intentionsPage(signal) {
  const region = h('div', { id: 'intentions' });
  const msg = h('div', { class: 'msg', role: 'alert', id: 'intention-msg' });
  const source = h('input', { type: 'text', id: 'intention-new-source', required: true, autocomplete: 'off', placeholder: 'web, or * for any service' });
  const destination = h('input', { type: 'text', id: 'intention-new-destination', required: true, autocomplete: 'off', placeholder: 'db, or * for any service' });
  const description = h('input', { type: 'text', id: 'intention-new-description', autocomplete: 'off' });
  const create = async (ev) => {
    ev.preventDefault();
    const [s, d] = [source.value.trim(), destination.value.trim()];
    try {
      // As `intention create` does: an intention that exists for the pair is not overwritten.
      const r = await fetch(`/v1/connect/intentions/exact?${exactQuery(s, d)}`, { headers: withToken() });
      if (r.ok) {
        msg.className = 'msg error';
        fill(msg, `An intention from ${s} to ${d} already exists. `, h('a', { href: intentionHref({ SourceName: s, DestinationName: d }) }, 'Edit it'), '.');
        return;
      }
      await api('PUT', `/v1/connect/intentions/exact?${exactQuery(s, d)}`, JSON.stringify({ SourceType: 'consul', Action: chosen('intention-new-action'), Description: description.value }));
      location.hash = intentionHref({ SourceName: s, DestinationName: d });
    } catch (e) {
      msg.className = 'msg error';
      msg.textContent = String(e.message || e);
    }
  };
  const form = h(
    'form',
    { class: 'card', id: 'intention-create', onsubmit: create },
    h('h2', { style: 'margin-top:0' }, 'Create an intention'),
    h('label', { for: 'intention-new-source' }, 'Source service'),
    source,
    h('label', { for: 'intention-new-destination' }, 'Destination service'),
    destination,
    actionChoice('intention-new-action', 'allow'),
    h('label', { for: 'intention-new-description' }, 'Description'),
    description,
    h('div', { class: 'tools' }, h('button', { type: 'submit', class: 'primary' }, 'Create intention'))
  );
  const h1 = page('Intentions', signal, h('p', { class: 'sub' }, 'Which services may connect to which, in the order they are evaluated: the most precise first.'), msg, region, form);
  watch(
    '/v1/connect/intentions',
    (list, _index, meta) => {
      list = (list || []).slice().sort((a, b) => b.Precedence - a.Precedence || a.DestinationName.localeCompare(b.DestinationName) || a.SourceName.localeCompare(b.SourceName));
      fill(
        region,
        filteredNote(meta, !list.length, 'intentions'),
        table(
          'intentions',
          [
            { label: 'Source', key: 'source', cell: (i) => h('a', { href: intentionHref(i) }, i.SourceName) },
            { label: 'Destination', key: 'destination', cell: (i) => i.DestinationName },
            { label: 'Action', key: 'action', cell: actionBadge },
            { label: 'Description', key: 'description', cell: (i) => i.Description || '' },
            { label: 'Precedence', key: 'precedence', cls: 'num', cell: (i) => String(i.Precedence) },
          ],
          list.map((i) => ({ ...i, __key: `${i.SourceName} => ${i.DestinationName}` })),
          'No intentions: connections are allowed or denied by the default ACL policy.'
        )
      );
    },
    signal,
    { what: 'the intentions' }
  );
  return h1;
}

function intentionPage(signal, source, destination) {
  const info = h('div', { id: 'intention-info' });
  const msg = h('div', { class: 'msg', role: 'alert', id: 'intention-msg' });
  const description = h('input', { type: 'text', id: 'intention-description', autocomplete: 'off' });
  const actions = actionChoice('intention-action', 'allow');
  let current = null;
  let edited = false;
  for (const el of [description, actions]) el.addEventListener('input', () => (edited = true));
  const say = (cls, text) => ((msg.className = 'msg ' + cls), (msg.textContent = text));
  const q = exactQuery(source, destination);
  const save = async (ev) => {
    ev.preventDefault();
    try {
      const body = { SourceType: 'consul', Description: description.value, Meta: (current && current.Meta) || {} };
      // An L7 intention has permissions instead of an action: keep them as they are.
      const perms = (current && current.Permissions) || [];
      if (perms.length) body.Permissions = perms;
      else body.Action = chosen('intention-action');
      await api('PUT', `/v1/connect/intentions/exact?${q}`, JSON.stringify(body));
      edited = false;
      say('ok', 'Saved.');
    } catch (e) {
      say('error', String(e.message || e));
    }
  };
  const remove = async () => {
    try {
      await api('DELETE', `/v1/connect/intentions/exact?${q}`);
      location.hash = '#/intentions';
    } catch (e) {
      say('error', String(e.message || e));
    }
  };
  const form = h(
    'form',
    { class: 'card', id: 'intention-edit', onsubmit: save },
    h('h2', { style: 'margin-top:0' }, 'Edit'),
    actions,
    h('label', { for: 'intention-description' }, 'Description'),
    description,
    h('div', { class: 'tools' }, h('button', { type: 'submit', class: 'primary', id: 'intention-save' }, 'Save'), confirmButton('Delete intention', 'Delete this intention? Connections then follow the other intentions and the default policy.', remove))
  );
  const title = `${source} → ${destination}`;
  const h1 = page(title, signal, h('p', { class: 'crumbs' }, h('a', { href: '#/intentions' }, 'Intentions'), ' / ', title), msg, info, form);
  watch(
    `/v1/connect/intentions/exact?${q}`,
    (i) => {
      if (!i) {
        form.hidden = true;
        return fill(info, h('p', { class: 'msg warn' }, `There is no intention from ${source} to ${destination} (it may have been deleted).`));
      }
      form.hidden = false;
      current = i;
      const meta = Object.entries(i.Meta || {});
      fill(
        info,
        h(
          'dl',
          null,
          h('dt', null, 'Source'),
          h('dd', null, i.SourceName),
          h('dt', null, 'Destination'),
          h('dd', null, h('a', { href: `#/services/${encSeg(i.DestinationName)}` }, i.DestinationName)),
          h('dt', null, 'Action'),
          h('dd', { id: 'intention-current-action' }, actionBadge(i)),
          h('dt', null, 'Description'),
          h('dd', { id: 'intention-current-description' }, i.Description || h('span', { class: 'empty' }, 'none')),
          h('dt', null, 'Precedence'),
          h('dd', null, String(i.Precedence)),
          meta.length ? [h('dt', null, 'Meta'), h('dd', null, meta.map(([k, v]) => h('span', { class: 'tag' }, `${k}=${v}`)))] : null,
          (i.Permissions || []).length ? [h('dt', null, 'Permissions'), h('dd', null, h('pre', { class: 'value' }, JSON.stringify(i.Permissions, null, 2)))] : null
        )
      );
      // Layer 7 permissions are edited as a service-intentions config entry, as in Consul's UI.
      actions.hidden = (i.Permissions || []).length > 0;
      if (!edited) {
        description.value = i.Description || '';
        for (const r of actions.querySelectorAll('input')) r.checked = r.value === i.Action;
      }
    },
    signal,
    { notFound: true, what: `the intention from ${source} to ${destination}` }
  );
  return h1;
}

const CONFIG_KINDS = ['service-defaults', 'proxy-defaults', 'service-router', 'service-splitter', 'service-resolver', 'service-intentions', 'ingress-gateway', 'terminating-gateway', 'mesh', 'exported-services'];

// One kind at a time: a long poll per kind would use up the browser's connections to the agent.
function configPage(signal, kind) {
  kind = kind || 'service-defaults';
  const kinds = h(
    'nav',
    { 'aria-label': 'Kinds', class: 'tools', id: 'config-kinds' },
    CONFIG_KINDS.map((k) => h('a', { href: `#/config/${k}`, 'aria-current': k === kind ? 'page' : null, 'data-kind': k }, k))
  );
  const region = h('div', { id: 'config-list' });
  const h1 = page(
    'Config entries',
    signal,
    h('p', { class: 'sub' }, 'Centralized configuration of services and the service mesh. Write entries with ', h('code', null, 'agent config write FILE'), '; intentions are edited on the ', h('a', { href: '#/intentions' }, 'Intentions'), ' page.'),
    kinds,
    h('h2', null, kind),
    region
  );
  watch(
    `/v1/config/${encSeg(kind)}`,
    (list, _index, meta) => {
      list = (list || []).slice().sort((a, b) => a.Name.localeCompare(b.Name));
      fill(
        region,
        filteredNote(meta, !list.length, `${kind} entries`),
        table(
          'config',
          [
            { label: 'Name', key: 'name', cell: (e) => h('a', { href: `#/config/${encSeg(kind)}/${encSeg(e.Name)}` }, e.Name) },
            { label: 'Protocol', key: 'protocol', cell: (e) => e.Protocol || (e.Config && e.Config.protocol) || '' },
            { label: 'Modify index', key: 'index', cls: 'num', cell: (e) => String(e.ModifyIndex) },
          ],
          list.map((e) => ({ ...e, __key: e.Name })),
          `No ${kind} entries.`
        )
      );
    },
    signal,
    { what: `the ${kind} config entries` }
  );
  return h1;
}

function configEntryPage(signal, kind, name) {
  const region = h('div', { id: 'config-entry' });
  const title = `${kind}/${name}`;
  const h1 = page(
    name,
    signal,
    h('p', { class: 'crumbs' }, h('a', { href: '#/config' }, 'Config entries'), ' / ', h('a', { href: `#/config/${encSeg(kind)}` }, kind), ' / ', name),
    region
  );
  watch(
    `/v1/config/${encSeg(kind)}/${encSeg(name)}`,
    (e) => {
      if (!e) return fill(region, h('p', { class: 'msg warn' }, `There is no config entry ${title} (it may have been deleted).`));
      fill(
        region,
        h('p', { class: 'sub' }, 'Change it with ', h('code', null, 'agent config write'), ', delete it with ', h('code', null, `agent config delete -kind ${kind} -name ${name}`), '.'),
        h('pre', { class: 'value', id: 'config-json' }, JSON.stringify(e, null, 2))
      );
    },
    signal,
    { notFound: true, what: `config entry ${title}` }
  );
  return h1;
}

// ---------- routing ----------

const ROUTES = [
  [/^\/services\/?$/, 'services', servicesPage],
  [/^\/services\/([^/]+)\/?$/, 'services', servicePage],
  [/^\/nodes\/?$/, 'nodes', nodesPage],
  [/^\/nodes\/([^/]+)\/?$/, 'nodes', nodePage],
  [/^\/kv(\/.*)?$/, 'kv', kvPage, true],
  [/^\/servers\/?$/, 'servers', serversPage],
  [/^\/members\/?$/, 'members', membersPage],
  [/^\/intentions\/?$/, 'intentions', intentionsPage],
  [/^\/intentions\/([^/]+)\/([^/]+)\/?$/, 'intentions', intentionPage],
  [/^\/config\/?$/, 'config', configPage],
  [/^\/config\/([^/]+)\/?$/, 'config', configPage],
  [/^\/config\/([^/]+)\/([^/]+)\/?$/, 'config', configEntryPage],
  [/^\/login\/?$/, 'login', loginPage],
  [/^\/acl\/tokens\/?$/, 'acl-tokens', tokensPage],
  [/^\/acl\/tokens\/([^/]+)\/?$/, 'acl-tokens', tokenPage],
  [/^\/acl\/policies\/?$/, 'acl-policies', policiesPage],
  [/^\/acl\/policies\/([^/]+)\/?$/, 'acl-policies', policyPage],
];

let active = null;
let firstRoute = true;
function route() {
  const path = location.hash.replace(/^#/, '') || '/services';
  if (!path.startsWith('/login')) lastPage = `#${path}`;
  if (active) active.abort();
  active = new AbortController();
  let h1 = null;
  let section = '';
  for (const [re, name, fn, raw] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    section = name;
    const args = m.slice(1).map((a) => (raw || a == null ? a : decodeURIComponent(a)));
    h1 = fn(active.signal, ...args);
    break;
  }
  if (!h1) h1 = page('Not found', active.signal, h('p', null, 'No page here. ', h('a', { href: '#/services' }, 'Go to services.')));
  for (const a of document.querySelectorAll('nav a[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  // After a click, move focus to the new page's heading so keyboards and screen readers follow.
  if (!firstRoute) h1.focus();
  firstRoute = false;
}

window.addEventListener('hashchange', route);
// Logging in or out in another tab changes what this one may see.
window.addEventListener('storage', (ev) => {
  if (ev.key === TOKEN_KEY || ev.key === null) {
    authProblem = '';
    renderAuth();
    route();
  }
});
// The skip link moves focus without touching the hash, which is the router's.
document.getElementById('skip').addEventListener('click', (ev) => (ev.preventDefault(), main.focus()));
setLive(true, 'Live');
renderAuth();
route();
checkAuth();
fetch('/v1/agent/self', { headers: withToken() })
  .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
  .then((s) => (document.getElementById('dc').textContent = `${s.Config.Datacenter} · ${s.Config.NodeName}`))
  .catch(() => {});
