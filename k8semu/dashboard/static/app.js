// The dashboard: views chosen by the URL's #fragment, informers per view (a browser keeps
// at most 6 HTTP/1.1 connections per origin, so only the current view's watches are open),
// rendering batched into one animation frame, and the actions (each confirmed first).

import * as api from "./api.js";
import { autoscaling, chaos, pod, sampleHPAs } from "./panels.js";
import { cluster, events, h, networking, ownedBy, selector, workloads } from "./views.js";
import { dump, parseAll, YamlError } from "./yaml.js";

const $ = (id) => document.getElementById(id);
const LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
// Each host's supervisor publishes its processes (pid, state, restarts) in one of these.
const COMPONENTS = "/api/v1/namespaces/kube-system/configmaps?labelSelector=k8semu.io%2Fcomponents%3Dtrue";
const VIEWS = {
  cluster: { render: cluster, needs: { nodes: "/api/v1/nodes", pods: "/api/v1/pods", leases: LEASES, components: COMPONENTS }, poll: "store" },
  workloads: { render: workloads, needs: { deployments: "/apis/apps/v1/deployments", replicasets: "/apis/apps/v1/replicasets", pods: "/api/v1/pods" } },
  networking: { render: networking, needs: { services: "/api/v1/services", endpoints: "/api/v1/endpoints" } },
  events: { render: events, needs: { events: "/api/v1/events" } },
  autoscaling: { render: autoscaling, needs: { hpas: "/apis/autoscaling/v2/horizontalpodautoscalers" }, poll: "metrics" },
  chaos: { render: chaos, needs: { events: "/api/v1/events" } },
  apply: { render: () => "<h2>Apply a manifest</h2>", needs: {} },
};

const state = {
  view: "cluster",
  podKey: "",
  inf: {},
  pages: {},
  open: new Set(),
  filters: { ns: "", selector: "", events: "", eventType: "" },
  selectorFn: () => true,
  selectorError: "",
  store: null,
  storeError: "",
  metrics: { nodes: null, pods: [], error: "" },
  hpaHistory: new Map(),
  dashboards: [],
  readyAt: 0,
};

// ---- rendering -----------------------------------------------------------------------------

let frame = 0;
function schedule() {
  if (!frame) frame = requestAnimationFrame(render);
}

// What identifies a button or link across redraws: its data-* and href (none: not kept).
function focusKey(el) {
  if (!el || !$("content").contains(el)) return "";
  const key = ["act", "ns", "name", "key", "table", "pod", "index"].map((k) => el.dataset[k] || "").join("|") + (el.getAttribute("href") || "");
  return /[^|]/.test(key) ? key : "";
}

let lastHtml = "";
let lastView = "";

function render() {
  frame = 0;
  const started = performance.now();
  if (state.inf.hpas) sampleHPAs(state);
  let html;
  try {
    html = state.view === "pod" ? pod(state, state.podKey) : VIEWS[state.view].render(state);
  } catch (err) {
    html = `<p class="error" role="alert">This view failed to draw: ${h(err.message)}</p>`;
    console.error(err);
  }
  // Unchanged: leave the DOM alone (a selection, a scrolled box, the focus stay as they are).
  if (html === lastHtml) return finish(started);
  lastHtml = html;
  const key = focusKey(document.activeElement);
  // Boxes that scroll (wide tables, the manifest) keep their position across the redraw.
  const view = `${state.view}/${state.podKey}`;
  const scrolled = view !== lastView ? [] : [...$("content").querySelectorAll(".scroll, pre")].map((el) => [el.scrollTop, el.scrollLeft]);
  lastView = view;
  $("content").innerHTML = html;
  $("content").querySelectorAll(".scroll, pre").forEach((el, i) => {
    if (scrolled[i]) [el.scrollTop, el.scrollLeft] = scrolled[i];
  });
  if (key) {
    for (const el of $("content").querySelectorAll("button, a")) {
      if (focusKey(el) === key) {
        el.focus();
        break;
      }
    }
  }
  finish(started);
}

function finish(started) {
  updateNamespaces();
  connection();
  // The first frame with every informer of the view listed: the initial load time
  // (performance.now() counts from the navigation; the benchmark reads it).
  const infs = Object.values(state.inf);
  if (!state.readyAt && infs.length && infs.every((i) => i.synced)) state.readyAt = performance.now();
  document.body.dataset.rendered = String(Date.now());
  document.body.dataset.renderMs = (performance.now() - started).toFixed(1);
}

function updateNamespaces() {
  const seen = new Set();
  for (const inf of Object.values(state.inf)) for (const o of inf.items.values()) if (o.metadata.namespace) seen.add(o.metadata.namespace);
  const select = $("ns");
  const have = new Set([...select.options].map((o) => o.value));
  for (const ns of [...seen].sort()) {
    if (!have.has(ns)) select.add(new Option(ns, ns));
  }
}

function connection() {
  const errors = Object.entries(state.inf).filter(([, i]) => i.error);
  const down = errors.some(([, i]) => /NetworkError|Failed to fetch|network/i.test(i.error));
  const others = state.dashboards.filter((u) => new URL(u).host !== location.host);
  let html = "";
  if (down) {
    html = `<strong>API server ${h(location.host)} is not answering</strong>; watches retry by themselves.`;
    if (others.length) html += ` Other API servers: ${others.map((u) => `<a href="${h(u)}">${h(new URL(u).host)}</a>`).join(" ")}`;
  } else if (errors.some(([, i]) => /Unauthorized|Forbidden/i.test(i.error))) {
    html = "The API server refused the request: enter a bearer token above.";
  }
  $("banner").innerHTML = html;
  $("banner").hidden = !html;
  $("conn").textContent = down ? "disconnected" : "live";
}

// ---- views and informers -------------------------------------------------------------------

let poller = 0;

function needs() {
  if (state.view === "pod") {
    const [ns, name] = state.podKey.split("/");
    return { pod: `/api/v1/namespaces/${encodeURIComponent(ns)}/pods?fieldSelector=${encodeURIComponent(`metadata.name=${name}`)}`, leases: LEASES };
  }
  return { ...VIEWS[state.view].needs, leases: LEASES };
}

function ensureInformers() {
  const want = needs();
  for (const [name, inf] of Object.entries(state.inf)) {
    if (want[name] !== inf.path) {
      inf.stop();
      delete state.inf[name];
    }
  }
  for (const [name, path] of Object.entries(want)) {
    if (!state.inf[name]) state.inf[name] = new api.Informer(path, onChange);
  }
}

function onChange(inf) {
  if (inf === state.inf.leases) {
    state.dashboards = inf
      .list()
      .filter((l) => l.metadata.name.startsWith("apiserver-") && (l.metadata.annotations || {})["k8semu.io/rest-port"])
      .map((l) => `${location.protocol}//${(l.spec.holderIdentity || "").replace(/:\d+$/, "")}:${l.metadata.annotations["k8semu.io/rest-port"]}/dashboard/`);
  }
  schedule();
}

async function pollStore() {
  try {
    state.store = await api.get("/dashboard/api/store");
    state.storeError = "";
  } catch (err) {
    state.storeError = err.message;
  }
  schedule();
}

async function pollMetrics() {
  try {
    const [nodes, pods] = await Promise.all([api.get("/apis/metrics.k8s.io/v1beta1/nodes"), api.get("/apis/metrics.k8s.io/v1beta1/pods")]);
    state.metrics = { nodes: nodes.items || [], pods: pods.items || [], error: "" };
  } catch (err) {
    state.metrics = { nodes: null, pods: [], error: err.code === 404 ? "metrics.k8s.io is not served by this cluster (apiServer metricResolution 0)" : `metrics.k8s.io: ${err.message}` };
  }
  schedule();
}

function route() {
  const hash = decodeURIComponent(location.hash.slice(1)) || "cluster";
  if (hash.startsWith("pod/")) {
    state.view = "pod";
    state.podKey = hash.slice(4);
  } else {
    state.view = VIEWS[hash] ? hash : "cluster";
  }
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === `#${state.view}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const el of document.querySelectorAll("[data-views]")) el.hidden = !el.dataset.views.split(" ").includes(state.view);
  clearInterval(poller);
  const poll = state.view === "pod" ? "" : VIEWS[state.view].poll;
  if (poll === "store") {
    pollStore();
    poller = setInterval(pollStore, 2000);
  } else if (poll === "metrics") {
    pollMetrics();
    poller = setInterval(pollMetrics, 5000);
  }
  ensureInformers();
  logs.stop();
  if (state.view === "pod") logs.start(state.podKey);
  schedule();
}

// ---- logs ----------------------------------------------------------------------------------

const logs = {
  abort: null,
  stop() {
    if (this.abort) this.abort.abort();
    this.abort = null;
  },
  async start(key) {
    const [ns, name] = key.split("/");
    const out = $("log-text");
    out.textContent = "";
    $("log-note").textContent = "connecting…";
    this.abort = new AbortController();
    const container = $("log-container").value.trim();
    const q = `follow=true&tailLines=500${container ? `&container=${encodeURIComponent(container)}` : ""}`;
    const path = `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}/log?${q}`;
    try {
      const resp = await fetch(path, { headers: api.headers({ Accept: "text/plain, application/json" }), signal: this.abort.signal });
      if (!resp.ok) {
        // The API's own words (a metav1.Status): no such pod or container, not running yet,
        // the kubelet unreachable...
        const st = await api.statusOf(resp);
        $("log-note").textContent = `logs: ${st.code || resp.status} ${st.reason || ""}: ${st.message || ""}`;
        $("log-note").classList.add("error");
        return;
      }
      $("log-note").classList.remove("error");
      $("log-note").textContent = "following";
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        out.textContent = (out.textContent + decoder.decode(value, { stream: true })).slice(-200000);
        out.scrollTop = out.scrollHeight;
      }
      $("log-note").textContent = "the log stream ended (Follow again to reconnect)";
    } catch (err) {
      if (err.name !== "AbortError") $("log-note").textContent = `logs: ${err.message}`;
    }
  },
};

// ---- dialogs and notices -------------------------------------------------------------------

function confirmAction(text, input) {
  const dlg = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-field").hidden = !input;
  if (input) $("confirm-input").value = input.value;
  return new Promise((resolve) => {
    dlg.onclose = () => resolve(dlg.returnValue === "ok" ? (input ? $("confirm-input").value : true) : null);
    dlg.returnValue = "";
    dlg.showModal();
    (input ? $("confirm-input") : $("confirm-ok")).focus();
  });
}

function notify(text, error = false) {
  const el = document.createElement("div");
  el.className = error ? "toast toast-error" : "toast";
  el.setAttribute("role", error ? "alert" : "status");
  el.textContent = text;
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "dismiss";
  close.onclick = () => el.remove();
  el.append(" ", close);
  $("toasts").prepend(el);
  setTimeout(() => el.remove(), error ? 15000 : 5000);
}

function describe(err) {
  const causes = err.causes && err.causes.length ? `: ${err.causes.map((c) => `${c.field}: ${c.message}`).join("; ")}` : "";
  return `${err.reason ? `${err.reason}: ` : ""}${err.message}${causes && !err.message.includes(err.causes[0].message) ? causes : ""}`;
}

async function run(text, fn) {
  try {
    await fn();
    notify(text);
  } catch (err) {
    notify(err instanceof api.ApiError ? describe(err) : err.message, true);
  }
}

// ---- actions -------------------------------------------------------------------------------

const deploymentPath = (ns, name) => `/apis/apps/v1/namespaces/${encodeURIComponent(ns)}/deployments/${encodeURIComponent(name)}`;

const ACTIONS = {
  async scale({ ns, name, replicas }) {
    const n = await confirmAction(`Scale Deployment ${ns}/${name} to how many replicas?`, { value: replicas });
    if (n === null) return;
    if (!/^\d+$/.test(String(n).trim())) return notify(`replicas: "${n}" is not a whole number >= 0`, true);
    await run(`scaled ${ns}/${name} to ${n}`, () => api.mergePatch(`${deploymentPath(ns, name)}/scale`, { spec: { replicas: Number(n) } }));
  },
  async restart({ ns, name }) {
    if (!(await confirmAction(`Restart the rollout of Deployment ${ns}/${name}? Every pod is replaced.`))) return;
    const at = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    await run(`restarted ${ns}/${name}`, () => api.mergePatch(deploymentPath(ns, name), { spec: { template: { metadata: { annotations: { "kubectl.kubernetes.io/restartedAt": at } } } } }));
  },
  async undo({ ns, name }) {
    let d;
    let previous;
    try {
      d = await api.get(deploymentPath(ns, name));
      const list = await api.get(`/apis/apps/v1/namespaces/${encodeURIComponent(ns)}/replicasets`);
      const rev = (o) => Number((o.metadata.annotations || {})["deployment.kubernetes.io/revision"] || 0);
      const current = rev(d);
      previous = list.items.filter((rs) => ownedBy(rs, d) && rev(rs) < current).sort((a, b) => rev(b) - rev(a))[0];
      if (!previous) return notify(`${ns}/${name}: no previous revision to roll back to`, true);
      if (!(await confirmAction(`Roll Deployment ${ns}/${name} back from revision ${current} to revision ${rev(previous)}?`))) return;
    } catch (err) {
      return notify(describe(err), true);
    }
    const template = JSON.parse(JSON.stringify(previous.spec.template));
    if (template.metadata && template.metadata.labels) delete template.metadata.labels["pod-template-hash"];
    // A rollout in progress rewrites the Deployment's status all the time: a PUT that lost
    // that race (409) is made again on the newest version, the same template.
    await run(`rolled ${ns}/${name} back`, async () => {
      for (let attempt = 1; ; attempt++) {
        d.spec.template = template;
        try {
          return await api.request("PUT", deploymentPath(ns, name), d);
        } catch (err) {
          if (err.code !== 409 || attempt >= 5) throw err;
          d = await api.get(deploymentPath(ns, name));
        }
      }
    });
  },
  async "delete-pod"({ ns, name }) {
    if (!(await confirmAction(`Delete pod ${ns}/${name}?`))) return;
    await run(`deleted pod ${ns}/${name}`, () => api.request("DELETE", `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}`));
  },
  async cordon({ name, on }) {
    const verb = on ? "Cordon" : "Uncordon";
    if (!(await confirmAction(`${verb} node ${name}? ${on ? "No new pods will be scheduled on it." : "It takes new pods again."}`))) return;
    await run(`${verb.toLowerCase()}ed ${name}`, () => api.mergePatch(`/api/v1/nodes/${encodeURIComponent(name)}`, { spec: { unschedulable: on ? true : null } }));
  },
  "force-apply"({ index }) {
    return forceApply(index);
  },
  history({ key }) {
    if (state.open.has(key)) state.open.delete(key);
    else state.open.add(key);
    schedule();
  },
  page({ table, to }) {
    state.pages[table] = Math.max(0, Number(to));
    schedule();
  },
};

// ---- apply ---------------------------------------------------------------------------------

function lineOf(text, field) {
  const key = field.split(".").pop().replace(/\[.*\]$/, "");
  const lines = text.split("\n");
  const i = lines.findIndex((l) => new RegExp(`^\\s*-?\\s*"?${key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}"?\\s*:`).test(l));
  return i >= 0 ? i + 1 : 0;
}

const MANAGER = "k8semu-dashboard";

// Server-side apply (kubectl apply --server-side): one PATCH of the object as pasted, owned by
// the field manager "k8semu-dashboard"; the server merges it, creates what does not exist and
// refuses (409) to change fields another manager owns unless forced. The GET before it only
// says created / configured / unchanged.
async function applyOne(doc, force) {
  const m = doc.metadata || {};
  if (!m.name) {
    // An apply names its object (generateName cannot be applied): refused here, nothing sent.
    throw new api.ApiError({ code: 422, reason: "Invalid", message: "metadata.name: Required value: an applied object needs a name", details: { causes: [{ field: "metadata.name", message: "Required value" }] } });
  }
  const where = await api.resourceFor(doc.apiVersion, doc.kind);
  const ns = where.namespaced ? m.namespace || $("ns").value || "default" : "";
  if (where.namespaced && !m.namespace) doc.metadata = { ...m, namespace: ns };
  const named = api.objectPath(where.base, where.resource, ns, m.name);
  let before = "";
  try {
    before = (await api.get(named)).metadata.resourceVersion;
  } catch (err) {
    if (err.code !== 404) throw err;
  }
  const q = `fieldManager=${MANAGER}&fieldValidation=Strict${force ? "&force=true" : ""}`;
  const after = await api.request("PATCH", `${named}?${q}`, doc, "application/apply-patch+yaml");
  if (!before) return "created";
  return after.metadata.resourceVersion === before ? "unchanged" : "configured";
}

const pendingForce = new Map(); // index in the results -> the document a conflict refused

function failure(label, err, text, index) {
  const causes = (err.causes || []).map((c) => {
    const line = lineOf(text, c.field || "");
    return `<li class="cause"><code class="field">${h(c.field)}</code>: ${h(c.message)}${line ? ` <a href="#apply" data-line="${line}">(line ${line})</a>` : ""}</li>`;
  });
  const conflict = err.code === 409 && (err.causes || []).some((c) => c.reason === "FieldManagerConflict");
  const force = conflict
    ? `<p>Other field managers own these fields. ${btn("force-apply", "Apply with force…", { index })} takes them over (<code>force=true</code>), as <code>kubectl apply --server-side --force-conflicts</code> does.</p>`
    : "";
  return `<li class="error" role="alert" data-result="${index}">${h(label)}: ${h(err.reason || "Error")}: ${h(err.message)}${causes.length ? `<ul>${causes.join("")}</ul>` : ""}${force}</li>`;
}

const btn = (act, label, data) => `<button type="button" data-act="${act}" ${Object.entries(data).map(([k, v]) => `data-${k}="${h(v)}"`).join(" ")}>${h(label)}</button>`;

async function applyDocs(docs, text, force) {
  const results = [];
  for (const [i, doc] of docs) {
    const label = `${doc.kind}/${(doc.metadata || {}).name || "(no name)"}`;
    try {
      results.push(`<li data-result="${i}">${h(label)} ${h(await applyOne(doc, force))}${force ? " (forced)" : ""}</li>`);
      pendingForce.delete(i);
    } catch (err) {
      if (err.code === 409) pendingForce.set(i, doc);
      results.push(failure(label, err, text, i));
    }
  }
  return results;
}

async function apply() {
  const text = $("manifest").value;
  const out = $("apply-results");
  out.innerHTML = "";
  pendingForce.clear();
  let docs;
  try {
    docs = parseAll(text);
  } catch (err) {
    out.innerHTML = `<p class="error" role="alert">YAML: ${h(err.message)}</p>`;
    if (err instanceof YamlError) markLine(err.line);
    return;
  }
  if (!docs.length) return (out.innerHTML = '<p class="error" role="alert">The manifest is empty.</p>');
  const names = docs.map((d) => `${d.kind || "?"} ${((d && d.metadata) || {}).name || "?"}`).join(", ");
  if (!(await confirmAction(`Apply ${docs.length} object(s): ${names}?`))) return;
  const results = await applyDocs(docs.map((d, i) => [String(i), d]), text, false);
  out.innerHTML = `<ul>${results.join("")}</ul>`;
}

// "Apply with force…" on a conflict: that one document again, with force=true.
async function forceApply(index) {
  const doc = pendingForce.get(index);
  if (!doc) return;
  const label = `${doc.kind}/${(doc.metadata || {}).name || "(no name)"}`;
  if (!(await confirmAction(`Apply ${label} with force? The fields other managers own take the pasted values and become k8semu-dashboard's.`))) return;
  const [result] = await applyDocs([[index, doc]], $("manifest").value, true);
  const li = $("apply-results").querySelector(`li[data-result="${index}"]`);
  if (!li) return;
  li.outerHTML = result;
  // The button pressed is gone: keyboard focus goes to its result, not back to the page's top.
  const shown = $("apply-results").querySelector(`li[data-result="${index}"]`);
  shown.tabIndex = -1;
  shown.focus();
}

function markLine(line) {
  const ta = $("manifest");
  const lines = ta.value.split("\n");
  const start = lines.slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
  ta.focus();
  ta.setSelectionRange(start, start + (lines[line - 1] || "").length);
}

// ---- wiring --------------------------------------------------------------------------------

function wire() {
  document.addEventListener("click", (ev) => {
    const el = ev.target.closest("button[data-act]");
    if (el && ACTIONS[el.dataset.act]) ACTIONS[el.dataset.act]({ ...el.dataset });
    const line = ev.target.closest("a[data-line]");
    if (line) {
      ev.preventDefault();
      markLine(Number(line.dataset.line));
    }
  });
  window.addEventListener("hashchange", route);
  $("ns").addEventListener("change", () => {
    state.filters.ns = $("ns").value;
    state.pages = {};
    schedule();
  });
  $("selector").addEventListener("input", () => {
    try {
      state.selectorFn = selector($("selector").value);
      state.selectorError = "";
    } catch (err) {
      state.selectorError = err.message;
    }
    state.pages = {};
    schedule();
  });
  $("event-filter").addEventListener("input", () => {
    state.filters.events = $("event-filter").value;
    schedule();
  });
  $("event-type").addEventListener("change", () => {
    state.filters.eventType = $("event-type").value;
    schedule();
  });
  $("apply-button").addEventListener("click", apply);
  const follow = () => {
    logs.stop();
    logs.start(state.podKey);
  };
  $("log-restart").addEventListener("click", follow);
  $("log-container").addEventListener("change", follow);
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    api.setToken($("token").value.trim());
    $("token").value = "";
    tokenNote();
    for (const inf of Object.values(state.inf)) inf.stop();
    state.inf = {};
    route();
  });
  $("logout").addEventListener("click", () => {
    api.setToken("");
    tokenNote();
    for (const inf of Object.values(state.inf)) inf.stop();
    state.inf = {};
    route();
  });
  setInterval(schedule, 5000); // ages move on
  // A page left for another (or kept in the back/forward cache) must not keep its watches:
  // they would hold the origin's six connections and stall the next page's requests.
  window.addEventListener("pagehide", () => {
    for (const inf of Object.values(state.inf)) inf.stop();
    state.inf = {};
    logs.stop();
  });
  window.addEventListener("pageshow", (ev) => {
    if (ev.persisted) route();
  });
}

function tokenNote() {
  $("token-note").textContent = api.token() ? "token set" : "no token";
}

wire();
tokenNote();
route();
window.k8semuDashboard = { state, dump };
