// The agent's web UI: hash-routed pages (#/services, #/services/web, #/nodes, #/nodes/n1, #/kv/a/b,
// #/servers, #/members). Each page keeps one long-poll per dataset it shows: a blocking query whose
// ?index= is the last X-Consul-Index, so the agent answers only when the data changed. Endpoints that
// do not block (Raft configuration, members) are re-read every few seconds, only while the tab is
// visible. Leaving a page aborts its requests. All API URLs are /v1/..., so the UI works behind a
// proxy that forwards /ui/ and /v1/ to an agent.
'use strict';

const WAIT = '55s'; // below a proxy's usual 60 s read timeout
const POLL_MS = 3000; // for endpoints without X-Consul-Index
const MAX_BACKOFF_MS = 30000;
const MIN_GAP_MS = 200; // between one watch's requests, so a flapping check cannot make a hot loop

const main = document.getElementById('main');
const live = document.getElementById('live');

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

// Calls onData(body, index) with the first answer and again whenever the data changes, until
// `signal` aborts. A 404 is data (null) when `notFound` is set: a missing KV key can be watched.
function watch(url, onData, signal, { notFound = false } = {}) {
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
        const r = await fetch(u, { signal, headers: { Accept: 'application/json' } });
        let body;
        if (r.status === 404 && notFound) body = null;
        else if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim() || r.statusText}`);
        else body = await r.json();
        const next = Number(r.headers.get('X-Consul-Index')) || 0;
        if (failures) setLive(true, 'Live');
        failures = 0;
        if (first || next === 0 || next !== index) onData(body, next);
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
  const r = await fetch(path, { method, body });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text.trim()}`);
  return text ? JSON.parse(text) : null;
}

// ---------- pages ----------

function page(title, signal, ...kids) {
  document.title = `${title} · Consul`;
  const h1 = h('h1', { tabindex: '-1' }, title);
  fill(main, h1, ...kids);
  return h1;
}

function servicesPage(signal) {
  const filter = h('input', { type: 'search', placeholder: 'Filter by name or tag', 'aria-label': 'Filter services' });
  const summary = h('p', { class: 'sub', id: 'summary' });
  const region = h('div', { id: 'services' });
  const h1 = page('Services', signal, summary, h('div', { class: 'tools' }, filter), region);
  let data = [];
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
        q ? 'No service matches the filter.' : 'No services registered.'
      )
    );
  };
  filter.addEventListener('input', render);
  watch(
    '/v1/internal/ui/services',
    (list) => {
      data = list || [];
      const crit = data.filter((s) => s.ChecksCritical).length;
      summary.textContent = `${data.length} service${data.length === 1 ? '' : 's'}` + (crit ? `, ${crit} with critical checks` : ', none critical');
      render();
      performance.mark('ui:services-rendered');
    },
    signal
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
    (entries) => {
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
          : h('p', { class: 'empty' }, `No instances of ${name} are registered.`)
      );
    },
    signal
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
  const h1 = page('Nodes', signal, summary, region);
  watch(
    '/v1/internal/ui/nodes',
    (nodes) => {
      nodes = nodes || [];
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
    signal
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
    signal
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
    (keys) => {
      keys = (keys || []).filter((k) => k !== prefix).sort();
      fill(
        region,
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
    { notFound: true }
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
    { notFound: true }
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
  watch('/v1/operator/raft/configuration', (c) => ((config = c), render()), signal);
  watch(
    '/v1/operator/autopilot/health',
    (a) => {
      health = Object.fromEntries(((a && a.Servers) || []).map((s) => [s.ID, s]));
      render();
    },
    signal
  );
  return h1;
}

const MEMBER_STATUS = ['none', 'alive', 'leaving', 'left', 'failed'];
function membersPage(signal) {
  const region = h('div', { id: 'members' });
  const summary = h('p', { class: 'sub', id: 'summary' });
  const h1 = page('Members', signal, summary, region);
  watch(
    '/v1/agent/members',
    (list) => {
      list = (list || []).slice().sort((a, b) => a.Name.localeCompare(b.Name));
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
    signal
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
];

let active = null;
let firstRoute = true;
function route() {
  const path = location.hash.replace(/^#/, '') || '/services';
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
// The skip link moves focus without touching the hash, which is the router's.
document.getElementById('skip').addEventListener('click', (ev) => (ev.preventDefault(), main.focus()));
setLive(true, 'Live');
route();
fetch('/v1/agent/self')
  .then((r) => r.json())
  .then((s) => (document.getElementById('dc').textContent = `${s.Config.Datacenter} · ${s.Config.NodeName}`))
  .catch(() => {});
