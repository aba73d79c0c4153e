// beaker-dev live-reload client, injected by the dev server into every HTML
// page it serves. Protocol (JSON over one websocket a tab, see
// devserver/hub.go): the server says "welcome" with its version, "update"
// with what changed, "ping", "error"/"clear" for the overlay; the client says
// "hello" with the version and file it shows, "painted" when an update is on
// screen, "pong", and "violation" for Content-Security-Policy violations.
(function () {
  'use strict';
  if (window.top !== window || window.__beakerDev) return; // top frame, one socket per tab
  var script = document.currentScript;
  if (!script) return;
  var data = script.dataset;
  var state = (window.__beakerDev = { version: data.version || '', ws: null, tries: 0, queue: [] });
  var KEY = 'beaker-dev:' + location.pathname;
  var fixed = data.fixed === '1'; // an archive version: never changes

  // A reload we caused: restore the scroll position, then report the paint.
  var pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    sessionStorage.removeItem(KEY);
  } catch (e) {}
  if (pending) {
    var restore = function () { window.scrollTo(pending.x, pending.y); };
    if ('scrollRestoration' in history) history.scrollRestoration = 'manual';
    restore();
    document.addEventListener('DOMContentLoaded', restore);
    window.addEventListener('load', function () {
      restore();
      afterPaint(function () { painted(pending.id, pending.rcv); });
    });
  }

  function afterPaint(fn) {
    requestAnimationFrame(function () { requestAnimationFrame(fn); });
  }

  function painted(id, rcv) {
    if (id) send({ type: 'painted', id: id, ms: Date.now() - rcv });
  }

  function send(msg) {
    var ws = state.ws;
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg));
    else state.queue.push(msg);
  }

  var lastMessage = Date.now();
  function connect() {
    if (state.ws && state.ws.readyState <= 1) return;
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host +
      '/.beaker-dev/ws?token=' + encodeURIComponent(data.token || '');
    var ws;
    try { ws = new WebSocket(url); } catch (e) { return retry(); }
    state.ws = ws;
    ws.onopen = function () {
      state.tries = 0;
      lastMessage = Date.now();
      ws.send(JSON.stringify({ type: 'hello', version: state.version, file: data.file || '', path: location.pathname, fixed: fixed }));
      var q = state.queue;
      state.queue = [];
      q.forEach(send);
    };
    ws.onmessage = function (ev) {
      lastMessage = Date.now();
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      handle(msg);
    };
    ws.onclose = function () {
      if (state.ws === ws) state.ws = null;
      restarted(function (yes) {
        // A new server run has a new token: the page must be fetched again
        // (which also catches up with what changed while it was down).
        if (yes) reload(null);
        else retry();
      });
    };
  }

  // restarted asks the server, if it is up, whether it is still the run
  // that served this page.
  function restarted(cb) {
    if (!window.fetch || !data.run) return cb(false);
    fetch('/.beaker-dev/ping', { cache: 'no-store' }).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (j) { cb(!!j && j.run !== data.run); }, function () { cb(false); });
  }

  var timer = null;
  function retry() {
    if (timer) return;
    // Back off to one try every 5 s; a hidden tab waits longer, and
    // becoming visible again retries at once.
    var cap = document.visibilityState === 'hidden' ? 30000 : 5000;
    var delay = Math.min(100 * Math.pow(2, state.tries++), cap);
    timer = setTimeout(function () { timer = null; connect(); }, delay);
  }
  function now() {
    if (timer) { clearTimeout(timer); timer = null; }
    state.tries = 0;
    connect();
  }
  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'visible') now();
  });
  window.addEventListener('pageshow', now);
  window.addEventListener('online', now);
  // Heartbeat: the server pings every few seconds; silence means the socket
  // died without a close (a phone that slept, a dropped Wi-Fi).
  setInterval(function () {
    if (state.ws && state.ws.readyState === 1 && Date.now() - lastMessage > 20000) state.ws.close();
  }, 5000);

  function handle(msg) {
    switch (msg.type) {
      case 'ping':
        send({ type: 'pong', t: msg.t });
        break;
      case 'welcome':
        // The server moved on while this page was away: catch up.
        if (!fixed && msg.version !== state.version) reload(null);
        break;
      case 'update':
        if (!fixed) apply(msg, Date.now());
        break;
      case 'error':
        overlay(msg.title || 'Publishing failed', msg.message);
        break;
      case 'clear':
        overlay(null);
        break;
    }
  }

  function reload(msg, rcv) {
    try {
      sessionStorage.setItem(KEY, JSON.stringify({
        id: msg && msg.id, rcv: rcv || Date.now(), x: window.scrollX, y: window.scrollY,
      }));
    } catch (e) {}
    location.reload();
  }

  // refresh shows a changed page. A page that runs no scripts of its own is
  // replaced in place: the new HTML is fetched and its head and body swapped
  // in, which looks exactly like a reload without the cost of a navigation
  // (and keeps the scroll position by itself). A page with scripts gets a
  // real reload, so they run again.
  function refresh(msg, rcv) {
    if (!window.fetch || !window.DOMParser || runsScripts(document)) return reload(msg, rcv);
    fetch(location.href, { cache: 'no-store', credentials: 'same-origin' }).then(function (r) {
      var type = r.headers.get('Content-Type') || '';
      if (!r.ok || type.indexOf('text/html') < 0 || r.redirected) throw new Error('not a page');
      return r.text();
    }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, 'text/html');
      if (runsScripts(doc)) return reload(msg, rcv);
      return swapDocument(doc).then(function () {
        afterPaint(function () { painted(msg.id, rcv); });
      });
    }).catch(function () { reload(msg, rcv); });
  }

  function isOurs(el) {
    return el.tagName === 'SCRIPT' && pathOf(el.getAttribute('src') || '') === '/.beaker-dev/client.js';
  }

  // runsScripts reports whether a document has code of its own: scripts,
  // inline event handlers, a meta refresh, or <noscript> (which a parser
  // without scripting reads differently).
  function runsScripts(doc) {
    var all = doc.getElementsByTagName('*');
    for (var i = 0; i < all.length; i++) {
      var el = all[i], tag = el.tagName;
      if ((tag === 'SCRIPT' && !isOurs(el)) || tag === 'NOSCRIPT') return true;
      if (tag === 'META' && /refresh/i.test(el.getAttribute('http-equiv') || '')) return true;
      for (var j = 0; j < el.attributes.length; j++) {
        if (/^on/i.test(el.attributes[j].name)) return true;
      }
    }
    return false;
  }

  // swapDocument replaces the head's elements (keeping those that did not
  // change, so styles are not refetched) and the body. New stylesheets load
  // before the body changes, so nothing shows unstyled.
  function swapDocument(doc) {
    var root = document.documentElement;
    Array.prototype.slice.call(root.attributes).forEach(function (a) {
      if (!doc.documentElement.hasAttribute(a.name)) root.removeAttribute(a.name);
    });
    Array.prototype.slice.call(doc.documentElement.attributes).forEach(function (a) {
      root.setAttribute(a.name, a.value);
    });
    var old = new Map();
    Array.prototype.slice.call(document.head.children).forEach(function (el) {
      if (!isOurs(el)) old.set(el.outerHTML, el);
    });
    var waits = [], added = [];
    Array.prototype.slice.call(doc.head.children).forEach(function (el) {
      var key = el.outerHTML;
      if (old.has(key)) { old.delete(key); return; }
      var node = document.importNode(el, true);
      if (node.tagName === 'LINK' && /stylesheet/i.test(node.rel)) waits.push(loaded(node));
      document.head.appendChild(node);
      added.push(node);
    });
    var x = window.scrollX, y = window.scrollY;
    return Promise.all(waits).then(function () {
      old.forEach(function (el) { el.remove(); });
      document.body.replaceWith(document.importNode(doc.body, true));
      window.scrollTo(x, y);
    });
  }

  function apply(msg, rcv) {
    state.version = msg.version;
    overlay(null);
    var css = [], images = [], full = data.dashboard === '1';
    (msg.changes || []).forEach(function (c) {
      if (c.kind === 'css') css.push(c.path);
      else if (c.kind === 'image') images.push(c.path);
      else if (c.kind === 'page') { if (c.path === data.file) full = true; }
      else full = true;
    });
    if (full) return data.dashboard === '1' ? reload(msg, rcv) : refresh(msg, rcv);
    var waits = [];
    if (css.length) waits = waits.concat(swapCSS(css, msg.version));
    for (var i = 0; i < images.length; i++) {
      var w = swapImage(images[i], msg.version);
      if (w === null) return reload(msg, rcv); // not in the page: maybe a CSS background
      waits = waits.concat(w);
    }
    if (!waits.length) return painted(msg.id, rcv);
    Promise.all(waits).then(function () { afterPaint(function () { painted(msg.id, rcv); }); });
  }

  function pathOf(url) {
    try { return new URL(url, location.href).pathname; } catch (e) { return ''; }
  }
  function bust(url, version) {
    var u = new URL(url, location.href);
    u.searchParams.set('beaker-dev', version);
    return u.href;
  }
  function loaded(el) {
    return new Promise(function (resolve) {
      el.addEventListener('load', resolve, { once: true });
      el.addEventListener('error', resolve, { once: true });
    });
  }

  // Stylesheets are replaced by a clone loaded next to the old one, which is
  // removed only once the new one applies: no flash of unstyled content.
  function swapCSS(paths, version) {
    var links = Array.prototype.slice.call(document.querySelectorAll('link[rel~="stylesheet"][href]'));
    var direct = links.filter(function (l) { return paths.indexOf(pathOf(l.href)) >= 0; });
    if (!direct.length) direct = links; // an @import or a sheet we cannot see: refresh them all
    return direct.map(function (old) {
      var link = old.cloneNode();
      link.href = bust(old.href, version);
      var done = loaded(link).then(function () { old.remove(); });
      old.after(link);
      return done;
    });
  }

  // Images are swapped by URL; null means the page shows no such image.
  function swapImage(path, version) {
    var waits = [], found = false;
    document.querySelectorAll('img, source, link[rel~="icon"], image').forEach(function (el) {
      ['src', 'href'].forEach(function (attr) {
        var v = el.getAttribute(attr);
        if (v && pathOf(v) === path) {
          found = true;
          el.setAttribute(attr, bust(v, version));
          if (el.tagName === 'IMG') waits.push(loaded(el));
        }
      });
      var set = el.getAttribute('srcset');
      if (set && set.indexOf(path.split('/').pop()) >= 0) {
        var parts = set.split(',').map(function (s) {
          var p = s.trim().split(/\s+/);
          if (pathOf(p[0]) === path) { found = true; p[0] = bust(p[0], version); }
          return p.join(' ');
        });
        el.setAttribute('srcset', parts.join(', '));
      }
    });
    document.querySelectorAll('[style*="url("]').forEach(function (el) {
      var s = el.getAttribute('style');
      var changed = s.replace(/url\((['"]?)([^'")]+)\1\)/g, function (m, q, u) {
        if (pathOf(u) !== path) return m;
        found = true;
        return 'url(' + q + bust(u, version) + q + ')';
      });
      if (changed !== s) el.setAttribute('style', changed);
    });
    return found ? waits : null;
  }

  // Content-Security-Policy violations: what Beaker would block. Reported
  // to the terminal and shown here.
  document.addEventListener('securitypolicyviolation', function (e) {
    send({
      type: 'violation', directive: e.effectiveDirective || e.violatedDirective, blocked: e.blockedURI,
      source: e.sourceFile, line: e.lineNumber, sample: e.sample, page: location.pathname,
    });
    overlay('Blocked by the site\'s sandbox', (e.effectiveDirective || e.violatedDirective) + ' blocked ' +
      (e.blockedURI || 'inline code') + '. Beaker would block this for visitors too.');
  });

  var box = null;
  function overlay(title, text) {
    if (!title) {
      if (box) { box.remove(); box = null; }
      return;
    }
    if (!box) {
      box = document.createElement('beaker-dev-overlay');
      var root = box.attachShadow({ mode: 'closed' });
      root.innerHTML = '<style>div{position:fixed;z-index:2147483647;left:1rem;right:1rem;bottom:1rem;' +
        'font:14px/1.4 system-ui,sans-serif;background:#1d1d1f;color:#fff;border-left:6px solid #e5484d;' +
        'padding:.8rem 2.5rem .8rem 1rem;border-radius:6px;box-shadow:0 4px 24px #0006;white-space:pre-wrap}' +
        'b{display:block}button{position:absolute;top:.4rem;right:.5rem;background:none;border:0;color:#fff;' +
        'font-size:1.2rem;cursor:pointer}</style><div role="alert"><b></b><span></span><button aria-label="Close">×</button></div>';
      root.querySelector('button').onclick = function () { overlay(null); };
      box._root = root;
      (document.body || document.documentElement).appendChild(box);
    }
    box._root.querySelector('b').textContent = title;
    box._root.querySelector('span').textContent = text || '';
  }

  connect();
})();
