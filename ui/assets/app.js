// Meshwork UI: one page per view, drawn from the agent's /v1 API with the
// token the user typed (sessionStorage only). No framework, no build.
"use strict";
(function () {
  const TOKEN_KEY = "meshwork-token";
  const REFRESH_MS = 3000; // the topology's refresh
  let config = { acl_enabled: false, metrics_provider: "agents" };
  let timer = null;
  let generation = 0; // drops answers of a page that is no longer shown

  // h builds an element; children are nodes or strings (set as text, never HTML).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v; else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  // APIError carries the API's error code: permission_denied,
  // acl_not_found, malformed_token for refusals.
  class APIError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
    get denied() { return this.status === 403 || this.code === "malformed_token"; }
  }

  async function api(path) {
    const headers = { "Accept": "application/json" };
    if (token()) headers["X-Meshwork-Token"] = token();
    let r;
    try {
      r = await fetch(path, { headers, cache: "no-store" });
    } catch (e) {
      throw new APIError(0, "unreachable", "the agent did not answer: " + e.message);
    }
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) throw new APIError(r.status, body && body.code, (body && body.error) || r.statusText);
    return body;
  }
  // optional: a secondary read whose refusal the page shows in place.
  async function optional(path) {
    try { return { value: await api(path) }; } catch (e) { return { error: e }; }
  }

  const page = () => document.getElementById("page");
  function show(...nodes) { page().replaceChildren(...nodes.filter((n) => n)); page().removeAttribute("aria-busy"); }
  function loading() { page().setAttribute("aria-busy", "true"); page().replaceChildren(h("p", { class: "state loading", role: "status" }, "Loading…")); }
  function empty(text) { return h("p", { class: "state empty" }, text); }
  function failed(err) {
    if (err.denied) {
      return h("div", { class: "state denied", role: "alert", "data-state": "denied" },
        h("strong", {}, "Not allowed. "), err.message,
        h("p", {}, token() ? "This token may not read this page. Use a token with the permission named above." : "Enter an ACL token above."));
    }
    return h("div", { class: "state error", role: "alert", "data-state": "error" }, h("strong", {}, "Could not load this page. "), err.message);
  }
  function badge(status) {
    const cls = { passing: "ok", alive: "ok", warning: "warn", suspect: "warn", maintenance: "warn" }[status] || "bad";
    return h("span", { class: "badge " + cls }, status || "unknown");
  }
  function tags(list) { return (list || []).map((t) => h("span", { class: "tag" }, t)); }
  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso), left = (d - Date.now()) / 1000;
    const rel = Math.abs(left) < 3600 ? Math.round(left / 60) + " min" : Math.abs(left) < 172800 ? Math.round(left / 3600) + " h" : Math.round(left / 86400) + " days";
    return h("time", { datetime: iso, title: d.toISOString() }, left >= 0 ? "in " + rel : rel.replace("-", "") + " ago");
  }
  function table(head, rows) {
    return h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col", class: c.narrow ? "hide-narrow" : null }, c.label || c)))),
      h("tbody", {}, rows)));
  }

  // ---- pages -----------------------------------------------------------

  const pages = {
    topology: { title: "Topology", load: topologyPage, refresh: true },
    nodes: { title: "Nodes", load: nodesPage, watch: "/v1/catalog/nodes" },
    services: { title: "Services", load: servicesPage, watch: "/v1/catalog/services" },
    intentions: { title: "Intentions", load: intentionsPage },
    policy: { title: "Policy", load: policyPage },
    ca: { title: "Certificate authority", load: caPage },
  };

  async function nodesPage() {
    const nodes = await api("/v1/catalog/nodes");
    const [peers, self, top] = await Promise.all([optional("/v1/operator/raft/peers"), optional("/v1/agent/self"), optional("/v1/ui/topology")]);
    if (!nodes.length) return [empty("No node is visible to this token.")];
    const raft = {};
    for (const p of peers.value || []) raft[p.id] = p.leader ? "leader" : p.voter ? "follower" : "non-voter";
    const leaf = {}, version = {};
    for (const src of (top.value && top.value.sources) || []) {
      if (src.leaf_expires_at) leaf[src.node || src.addr] = src.leaf_expires_at;
      if (src.version) version[src.node || src.addr] = src.version;
    }
    const rows = nodes.map((n) => h("tr", { "data-node": n.name },
      h("th", { scope: "row" }, n.name),
      h("td", {}, badge(n.status)),
      h("td", {}, n.server ? "server" : "client"),
      h("td", {}, n.server ? (raft[n.name] || (peers.error ? "not allowed" : "not a peer")) : "—"),
      h("td", {}, version[n.name] || version[n.addr] || (self.value && self.value.node === n.name ? self.value.build.version : "—")),
      h("td", {}, when(leaf[n.name] || leaf[n.addr])),
      h("td", { class: "hide-narrow" }, n.addr),
      h("td", { class: "hide-narrow" }, String(n.services))));
    const notes = [];
    if (peers.error) notes.push(h("p", { class: "muted" }, "Raft roles: " + peers.error.message));
    notes.push(h("p", { class: "muted" }, "Versions and certificate expiry come from each agent's metrics, read as the topology reads them" + (top.error ? ": " + top.error.message : ".")));
    return [table(["Node", "Status", "Kind", "Raft", "Version", "Certificate expires", { label: "Address", narrow: true }, { label: "Services", narrow: true }], rows), ...notes];
  }

  async function servicesPage() {
    const list = await api("/v1/catalog/services");
    if (!list.length) return [empty("No service is registered, or none is visible to this token.")];
    const [tunnel, checks] = await Promise.all([optional("/v1/agent/tunnel"), optional("/v1/agent/checks")]);
    const vips = {};
    for (const l of (tunnel.value && tunnel.value.listeners) || []) {
      if (l.kind === "vip") (vips[l.service] = vips[l.service] || []).push(l.addr);
    }
    const checksOf = {};
    for (const c of checks.value || []) (checksOf[c.service_id] = checksOf[c.service_id] || []).push(c);
    const out = [];
    const healths = await Promise.all(list.map((svc) => optional("/v1/health/service/" + encodeURIComponent(svc.name))));
    list.forEach((svc, i) => {
      const inst = healths[i];
      const sec = h("section", { "data-service": svc.name, "aria-labelledby": "svc-" + i },
        h("h2", { id: "svc-" + i }, svc.name, " ", h("span", { class: "muted" }, svc.passing + "/" + svc.instances + " passing")),
        h("p", {}, "VIP listeners on this agent: ", (vips[svc.name] || []).join(", ") || (tunnel.error ? "not allowed" : "none"), " ", tags(svc.tags)));
      if (inst.error) sec.append(failed(inst.error));
      else sec.append(table(["Instance", "Node", "Address", "Health", "Tags", "Checks"], inst.value.map((e) => h("tr", {},
        h("th", { scope: "row" }, e.service.id),
        h("td", {}, e.node.name),
        h("td", {}, e.service.address + (e.service.port ? ":" + e.service.port : "")),
        h("td", {}, badge(e.status)),
        h("td", {}, tags(e.service.tags)),
        h("td", {}, (checksOf[e.service.id] || []).map((c) => h("details", {}, h("summary", {}, c.name || c.id, " ", badge(c.status)), h("pre", {}, c.output || "(no output)"))),
          checksOf[e.service.id] ? null : h("span", { class: "muted" }, "on its agent"))))));
      out.push(sec);
    });
    return out;
  }

  async function policyPage() {
    const list = await api("/v1/policy");
    if (!list.documents.length) return [empty("No policy document, or none is visible to this token.")];
    return list.documents.map((d) => h("details", { open: true, "data-doc": d.kind + "/" + d.name },
      h("summary", {}, h("strong", {}, d.kind), " ", d.name, " ", h("span", { class: "muted" }, "modify index " + d.modify_index)),
      h("pre", {}, toYAML(strip(d)))));
  }
  function strip(d) { const o = Object.assign({}, d); delete o.create_index; delete o.modify_index; return o; }

  // The decision for src → dst, as docs/policy.md states it: the most
  // specific Intention source, then IntentionDefaults, then the agents'
  // own default.
  function decide(intentions, defaults, src, dst) {
    for (const [name, source] of [[dst, src], [dst, "*"], ["*", src], ["*", "*"]]) {
      const doc = intentions[name];
      const rule = doc && (doc.sources || []).find((x) => x.name === source);
      if (rule) {
        const action = rule.permissions ? "per request" : rule.action;
        return { action, why: "Intention " + name + ", source " + source };
      }
    }
    if (defaults) return { action: defaults.action, why: "IntentionDefaults" };
    return { action: "agent default", why: "no document: each agent's tunnel.default_policy" };
  }

  async function intentionsPage() {
    const [docs, services] = await Promise.all([api("/v1/policy?kind=Intention"), api("/v1/catalog/services")]);
    const defs = await optional("/v1/policy?kind=IntentionDefaults");
    const intentions = {};
    for (const d of docs.documents) intentions[d.name] = d;
    const defaults = defs.value && defs.value.documents[0];
    const names = new Set(services.map((x) => x.name));
    for (const d of docs.documents) { if (d.name !== "*") names.add(d.name); for (const src of d.sources || []) if (src.name !== "*") names.add(src.name); }
    const all = [...names].sort();
    if (!all.length) return [empty("No service and no Intention is visible to this token.")];
    const head = h("tr", {}, h("th", { scope: "col" }, "source ↓ / destination →"), all.map((d) => h("th", { scope: "col" }, d)));
    const rows = all.map((src) => h("tr", {}, h("th", { scope: "row" }, src), all.map((dst) => {
      const r = decide(intentions, defaults, src, dst);
      const cls = r.action === "allow" ? "cell-allow" : r.action === "deny" ? "cell-deny" : "cell-l7";
      return h("td", { class: cls, title: r.why, "data-src": src, "data-dst": dst }, r.action, h("br"), h("small", { class: "muted" }, r.why));
    })));
    return [
      h("p", { class: "muted" }, "Each cell is the decision for a call from the row's service to the column's, and the document that decides it (docs/policy.md). \"per request\": L7 permissions decide each request."),
      defs.error ? failed(defs.error) : null,
      h("div", { class: "scroll" }, h("table", { class: "matrix" }, h("thead", {}, head), h("tbody", {}, rows))),
    ];
  }

  async function caPage() {
    const roots = await api("/v1/ca/roots");
    const leaf = await optional("/v1/ca/leaf");
    const out = [h("p", {}, "Trust domain ", h("strong", {}, roots.trust_domain), ", generation " + roots.generation)];
    out.push(table(["Root", "Active", "Subject", "Valid until"], (roots.roots || []).map((r) => h("tr", {},
      h("th", { scope: "row" }, h("code", {}, r.fingerprint.slice(0, 23) + "…")), h("td", {}, r.active ? h("span", { class: "badge ok" }, "active") : "trusted"), h("td", {}, r.subject), h("td", {}, when(r.not_after))))));
    const rot = roots.rotation;
    out.push(h("h2", {}, "Rotation"));
    if (!rot) out.push(h("p", { class: "muted" }, "Known to servers only: this agent is a client, or the CA is external."));
    else if (!rot.in_progress) out.push(h("p", { "data-rotation": "idle" }, "No rotation under way. ", (rot.retired || []).length + " roots retired so far."));
    else out.push(h("p", { "data-rotation": "running" }, "Rotating from ", h("code", {}, (rot.from || "").slice(0, 17)), " to ", h("code", {}, (rot.to || "").slice(0, 17)), ", started ", when(rot.started_at), "; nodes still on the old root: " + ((rot.pending || []).join(", ") || "none")));
    out.push(h("h2", {}, "This agent's certificate"));
    if (leaf.error) out.push(failed(leaf.error));
    else out.push(h("p", {}, "Expires ", when(leaf.value.not_after), "; renews ", when(leaf.value.renew_at), "; identities: ", (leaf.value.ids || []).join(", ")));
    return out;
  }

  // ---- topology --------------------------------------------------------

  function health(e) {
    if (!e.rps) return "idle";
    if (e.error_rate >= 0.05) return "bad";
    if (e.error_rate >= 0.01) return "warn";
    return "ok";
  }
  function fmtNum(n, digits) { return n >= 100 ? Math.round(n).toString() : n.toFixed(digits); }
  function edgeLabel(e) {
    if (!e.rps) return "idle";
    return fmtNum(e.rps, 1) + " req/s · " + (e.error_rate * 100).toFixed(1) + "% err · p99 " + (e.p99_seconds == null ? "—" : fmtNum(e.p99_seconds * 1000, 1) + " ms");
  }

  async function topologyPage() {
    const [top, services] = await Promise.all([api("/v1/ui/topology"), optional("/v1/catalog/services")]);
    const names = new Set((services.value || []).map((x) => x.name));
    for (const e of top.edges) { names.add(e.source); names.add(e.destination); }
    const out = [];
    const srcs = top.sources.map((x) => h("li", {}, h("span", { class: x.ok ? "ok" : "bad" }, x.ok ? "✓ " : "✗ "), x.node ? x.node + ": " : "", h("code", {}, x.url), x.error ? " — " + x.error : ""));
    out.push(h("p", { class: "legend" }, h("span", { class: "ok" }, "■ healthy"), h("span", { class: "warn" }, "■ ≥1% errors"), h("span", { class: "bad" }, "■ ≥5% errors"), h("span", { class: "muted" }, "┄ idle"),
      h("span", { class: "muted" }, "refreshed every " + REFRESH_MS / 1000 + " s" + (top.window_seconds ? ", rates over " + top.window_seconds.toFixed(1) + " s" : ", rates after the next reading"))));
    if (!names.size) out.push(empty("No service, and no call seen yet."));
    else out.push(graph([...names].sort(), top.edges));
    out.push(h("h2", {}, "Calls"));
    out.push(top.edges.length ? table(["Source", "Destination", "req/s", "Errors", "p99", { label: "Total", narrow: true }], top.edges.map((e) => h("tr", { "data-edge": e.source + "->" + e.destination, "data-health": health(e) },
      h("th", { scope: "row" }, e.source), h("td", {}, e.destination), h("td", {}, fmtNum(e.rps, 2)),
      h("td", { class: health(e) === "idle" ? "" : health(e) }, (e.error_rate * 100).toFixed(1) + "%"),
      h("td", {}, e.p99_seconds == null ? "—" : fmtNum(e.p99_seconds * 1000, 1) + " ms"), h("td", { class: "hide-narrow" }, String(e.total))))) : empty("No call between services has been counted yet."));
    out.push(h("h2", {}, "Where these numbers come from"));
    out.push(h("p", { class: "muted" }, top.provider === "prometheus" ? "Queried from Prometheus:" : "This agent asked each agent for its call counters:"));
    out.push(h("ul", { class: "sources" }, srcs));
    if (top.note) out.push(h("p", { class: "muted" }, top.note));
    return out;
  }

  // graph draws services in layers (callers left of callees) and the calls
  // as curved arrows coloured by error rate.
  function graph(names, edges) {
    const layer = {};
    for (const n of names) layer[n] = 0;
    for (let i = 0; i < names.length; i++) {
      let moved = false;
      for (const e of edges) {
        if (e.source !== e.destination && layer[e.destination] < layer[e.source] + 1 && layer[e.source] + 1 < names.length) { layer[e.destination] = layer[e.source] + 1; moved = true; }
      }
      if (!moved) break;
    }
    const cols = {};
    for (const n of names) (cols[layer[n]] = cols[layer[n]] || []).push(n);
    const ncols = Math.max(...Object.keys(cols).map(Number)) + 1;
    const rows = Math.max(...Object.values(cols).map((c) => c.length));
    const W = Math.max(640, ncols * 260), H = Math.max(220, rows * 110 + 40), bw = 130, bh = 36;
    const pos = {};
    for (const [c, list] of Object.entries(cols)) {
      list.forEach((n, i) => { pos[n] = { x: 40 + (W - 80 - bw) * (ncols === 1 ? 0.5 : c / (ncols - 1)), y: (H / (list.length + 1)) * (i + 1) - bh / 2 }; });
    }
    const svg = s("svg", { class: "graph", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "Service topology: " + edges.length + " calls between " + names.length + " services" });
    const defs = s("defs");
    for (const k of ["ok", "warn", "bad", "idle"]) {
      defs.append(s("marker", { id: "arrow-" + k, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, s("path", { d: "M0,0L10,5L0,10z", class: "arrow " + k })));
    }
    svg.append(defs);
    for (const e of edges) {
      const a = pos[e.source], b = pos[e.destination];
      if (!a || !b) continue;
      const k = health(e);
      const x1 = a.x + bw, y1 = a.y + bh / 2, x2 = b.x, y2 = b.y + bh / 2;
      let d, lx, ly;
      if (e.source === e.destination) { d = `M${a.x + bw / 2},${a.y} c-40,-50 40,-50 10,0`; lx = a.x + bw / 2; ly = a.y - 34; }
      else if (x2 > x1) { const mx = (x1 + x2) / 2; d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`; lx = mx; ly = (y1 + y2) / 2 - 8; }
      else { const x1b = a.x, x2b = b.x + bw; d = `M${x1b},${y1} C${x1b - 60},${y1 + 60} ${x2b + 60},${y2 + 60} ${x2b},${y2}`; lx = (x1b + x2b) / 2; ly = Math.max(y1, y2) + 40; }
      const g = s("g", { class: "edge-group", "data-source": e.source, "data-destination": e.destination, "data-health": k });
      g.append(s("path", { d, class: "edge " + k, "marker-end": "url(#arrow-" + k + ")" }, s("title", {}, e.source + " → " + e.destination + ": " + edgeLabel(e))));
      g.append(s("text", { x: lx, y: ly, "text-anchor": "middle", class: "label " + k }, edgeLabel(e)));
      svg.append(g);
    }
    for (const n of names) {
      const p = pos[n];
      svg.append(s("g", { class: "node", "data-service": n }, s("rect", { x: p.x, y: p.y, width: bw, height: bh, rx: 6 }),
        s("text", { x: p.x + bw / 2, y: p.y + bh / 2 + 5, "text-anchor": "middle" }, n.length > 16 ? n.slice(0, 15) + "…" : n)));
    }
    return svg;
  }

  // ---- YAML ------------------------------------------------------------

  // toYAML writes a JSON value as block YAML, quoting strings that YAML
  // would read as something else.
  function toYAML(v, indent) {
    indent = indent || "";
    const scalar = (x) => {
      if (x === null) return "null";
      if (typeof x !== "string") return String(x);
      return /^$|^[\s\-?:,[\]{}#&*!|>'"%@`]|: | #|\s$|^(true|false|yes|no|on|off|null|~|[-+.\d].*)$/i.test(x) || x.includes("\n") ? JSON.stringify(x) : x;
    };
    if (Array.isArray(v)) {
      if (!v.length) return "[]";
      return v.map((x) => {
        if (x !== null && typeof x === "object" && !Array.isArray(x) && Object.keys(x).length) {
          const body = toYAML(x, indent + "  ");
          return indent + "- " + body.slice(indent.length + 2);
        }
        return indent + "- " + (typeof x === "object" && x !== null ? toYAML(x, indent + "  ").trimStart() : scalar(x));
      }).join("\n");
    }
    if (v !== null && typeof v === "object") {
      const keys = Object.keys(v);
      if (!keys.length) return "{}";
      return keys.map((k) => {
        const x = v[k];
        if (x !== null && typeof x === "object" && (Array.isArray(x) ? x.length : Object.keys(x).length)) return indent + scalar(k) + ":\n" + toYAML(x, indent + "  ");
        return indent + scalar(k) + ": " + (x !== null && typeof x === "object" ? (Array.isArray(x) ? "[]" : "{}") : scalar(x));
      }).join("\n");
    }
    return indent + scalar(v);
  }

  // ---- shell -----------------------------------------------------------

  // watch redraws the page when the catalog changes: a blocking query
  // (docs/api.md) that the agent answers when its index moves past the
  // one it gave last.
  let watcher = null;
  async function watch(path, gen) {
    const ctl = new AbortController();
    watcher = ctl;
    const headers = token() ? { "X-Meshwork-Token": token() } : {};
    let index = 0;
    try {
      for (;;) {
        const r = await fetch(path + "?wait=55s&index=" + index, { headers, signal: ctl.signal, cache: "no-store" });
        await r.text();
        if (!r.ok || gen !== generation) return;
        const next = Number(r.headers.get("X-Meshwork-Index")) || 0;
        if (index && next !== index) { route(); return; }
        index = next;
      }
    } catch (e) {
      // Aborted by another page, or the agent went away: the page stays
      // as it was drawn.
    }
  }

  async function route() {
    clearTimeout(timer);
    if (watcher) { watcher.abort(); watcher = null; }
    const name = (location.hash.replace(/^#\//, "") || "topology").split("?")[0];
    const p = pages[name] || pages.topology;
    const key = pages[name] ? name : "topology";
    const gen = ++generation;
    document.getElementById("title").textContent = p.title;
    document.title = p.title + " · Meshwork";
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.page === key) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    document.body.dataset.page = key;
    if (config.acl_enabled && !token()) {
      show(h("div", { class: "state denied", role: "alert", "data-state": "token-required" },
        h("strong", {}, "A token is needed. "), "ACLs are enabled on this agent: enter an ACL token above to see what it may read."));
      document.body.dataset.ready = key;
      document.getElementById("token-input").focus();
      return;
    }
    if (!page().childElementCount || page().dataset.page !== key) loading();
    page().dataset.page = key;
    let nodes;
    try { nodes = await p.load(); } catch (e) { nodes = [failed(e)]; }
    if (gen !== generation) return;
    show(...nodes);
    document.body.dataset.ready = key;
    if (p.refresh) timer = setTimeout(() => { if (gen === generation) route(); }, REFRESH_MS);
    if (p.watch) watch(p.watch, gen);
  }

  async function init() {
    try { config = await api("/v1/ui/config"); } catch (e) { /* shown by the pages themselves */ }
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = input.value.trim();
      if (v) sessionStorage.setItem(TOKEN_KEY, v);
      input.value = "";
      agentLine();
      route();
    });
    document.getElementById("token-clear").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); agentLine(); route(); });
    window.addEventListener("hashchange", () => { route(); document.getElementById("main").focus(); });
    agentLine();
    route();
  }

  async function agentLine() {
    const el = document.getElementById("agent");
    const bits = [config.acl_enabled ? (token() ? "ACLs on, token set for this tab" : "ACLs on, no token") : "ACLs off"];
    el.textContent = bits.join(" · ");
    if (config.acl_enabled && !token()) return;
    const self = await optional("/v1/agent/self");
    if (self.value) el.textContent = "Agent " + self.value.node + " (" + (self.value.server ? "server" : "client") + ", " + self.value.build.version + ") · " + bits.join(" · ");
  }

  document.addEventListener("DOMContentLoaded", init);
})();
