// The views: pure functions from the dashboard's state to HTML. Status is always a word
// (with a colour as a hint only); every action is a <button> carrying data-act.

export const PAGE_ROWS = 100;

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const h = (s) => String(s === undefined || s === null ? "" : s).replace(/[&<>"']/g, (c) => ESC[c]);

export function age(ts, now = Date.now()) {
  if (!ts) return "-";
  const s = Math.max(0, Math.floor((now - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

const GOOD = new Set(["Renewing", "Running", "Ready", "Succeeded", "Leader", "Healthy", "Serving", "Available", "Recovered", "Normal", "Complete", "Held"]);
const BAD = new Set(["Failed", "NotReady", "Unknown", "Unhealthy", "Unreachable", "Expired", "Warning", "CrashLoopBackOff", "Error", "OOMKilled", "Fault", "ImagePullBackOff", "ErrImagePull", "BackOff"]);
export function word(w) {
  const cls = GOOD.has(w) ? "good" : BAD.has(w) ? "bad" : "neutral";
  return `<span class="st st-${cls}">${h(w)}</span>`;
}

const btn = (act, label, data, extra = "") =>
  `<button type="button" data-act="${act}" ${Object.entries(data).map(([k, v]) => `data-${k}="${h(v)}"`).join(" ")} ${extra}>${h(label)}</button>`;

export function table(id, head, rows, state, empty = "none") {
  const page = Math.min(state.pages[id] || 0, Math.max(0, Math.ceil(rows.length / PAGE_ROWS) - 1));
  const shown = rows.slice(page * PAGE_ROWS, (page + 1) * PAGE_ROWS);
  const pages = Math.ceil(rows.length / PAGE_ROWS);
  const nav =
    pages > 1
      ? `<div class="pager">${btn("page", "‹ previous", { table: id, to: page - 1 }, page === 0 ? "disabled" : "")}
         <span>rows ${page * PAGE_ROWS + 1}-${page * PAGE_ROWS + shown.length} of ${rows.length}</span>
         ${btn("page", "next ›", { table: id, to: page + 1 }, page >= pages - 1 ? "disabled" : "")}</div>`
      : "";
  const body = shown.length ? shown.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("") : `<tr><td colspan="${head.length}" class="empty">${h(empty)}</td></tr>`;
  return `<div class="scroll"><table id="t-${id}"><thead><tr>${head.map((c) => `<th scope="col">${h(c)}</th>`).join("")}</tr></thead><tbody>${body}</tbody></table></div>${nav}`;
}

function loading(state, ...names) {
  const notes = [];
  for (const n of names) {
    const inf = state.inf[n];
    if (!inf) continue;
    if (inf.error) notes.push(`<p class="error" role="alert">${h(n)}: ${h(inf.error)}</p>`);
    else if (!inf.synced) notes.push(`<p class="note">loading ${h(n)}…</p>`);
  }
  return notes.join("");
}

const items = (state, name) => (state.inf[name] ? state.inf[name].list() : []);
const byName = (a, b) => ((a.metadata.namespace || "") + "/" + a.metadata.name).localeCompare((b.metadata.namespace || "") + "/" + b.metadata.name);
const nsName = (o) => (o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name);

// ---- label selectors ---------------------------------------------------------------------

// A label selector ("app=web,tier!=db,env in (a,b),!legacy") as a predicate over labels.
export function selector(text) {
  const parts = text.split(/,(?![^()]*\))/).map((s) => s.trim()).filter(Boolean);
  const tests = parts.map((p) => {
    let m;
    if ((m = /^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(p))) {
      const vals = m[3].split(",").map((s) => s.trim());
      const k = m[1];
      return m[2] === "in" ? (l) => k in l && vals.includes(l[k]) : (l) => !(k in l) || !vals.includes(l[k]);
    }
    if ((m = /^([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)$/.exec(p))) {
      const [, k, op, v] = m;
      return op === "!=" ? (l) => l[k] !== v : (l) => l[k] === v;
    }
    if ((m = /^!\s*([\w./-]+)$/.exec(p))) return (l) => !(m[1] in l);
    if ((m = /^([\w./-]+)$/.exec(p))) return (l) => m[1] in l;
    throw new Error(`label selector: cannot parse "${p}"`);
  });
  return (labels) => tests.every((t) => t(labels || {}));
}

// ---- cluster -------------------------------------------------------------------------------

const mib = (n) => (n ? `${(n / 1048576).toFixed(1)} MiB` : "-");

function storeTable(state) {
  const st = state.store;
  if (state.storeError) return `<p class="error" role="alert">store status: ${h(state.storeError)}</p>`;
  if (!st) return `<p class="note">loading store status…</p>`;
  const rows = st.members.map((m) => {
    const role = !m.memberID ? "Unreachable" : m.isLeader ? "Leader" : m.leader === "0" ? "NoLeader" : "Follower";
    return [h(m.endpoint), word(role), word(m.healthy ? "Healthy" : "Unhealthy"), h(m.raftTerm ?? "-"), h(m.raftIndex ?? "-"), h(m.raftAppliedIndex ?? "-"), mib(m.dbSize), mib(m.dbSizeInUse), h(m.error || (m.errors || []).join("; ") || "none")];
  });
  return table("store", ["endpoint", "role", "health", "raft term", "commit index", "applied", "db size", "in use", "alarms / errors"], rows, state);
}

function leaseFresh(l, now) {
  const renew = l.spec.renewTime || l.spec.acquireTime;
  if (!renew) return false;
  return now - Date.parse(renew) < (l.spec.leaseDurationSeconds || 15) * 1000;
}

const kindOf = { "kube-scheduler": "scheduler", "kube-controller-manager": "controller-manager" };

function controlPlane(state, now) {
  const leases = items(state, "leases");
  const apis = leases.filter((l) => l.metadata.name.startsWith("apiserver-")).sort(byName);
  const apiRows = apis.map((l) => {
    const host = (l.spec.holderIdentity || "").replace(/:\d+$/, "");
    const rest = (l.metadata.annotations || {})["k8semu.io/rest-port"];
    const url = rest ? `${location.protocol}//${host}:${rest}/dashboard/` : "";
    const here = url && new URL(url).host === location.host;
    return [h(l.spec.holderIdentity), word(leaseFresh(l, now) ? "Serving" : "Expired"), here ? "this page" : url ? `<a href="${h(url)}">${h(url)}</a>` : "-", h(age(l.spec.renewTime, now))];
  });
  const elected = ["kube-scheduler", "kube-controller-manager"].map((name) => {
    const l = leases.find((x) => x.metadata.name === name);
    if (!l) return [h(name), word("NoLeader"), "-", "-", "-"];
    // host_pid_random: name the process when a component table has that pid.
    const pid = String(l.spec.holderIdentity || "").split("_")[1];
    const procs = processRows(state).filter((r) => kindOf[name] === r.kind && !r.stale);
    const proc = procs.find((r) => String(r.pid) === pid);
    // A holder no running process has (it was killed): the lease stands until it expires.
    const gone = !proc && procs.length && l.spec.holderIdentity ? " (no such process now: a new one takes over once the lease expires)" : "";
    const holder = `${l.spec.holderIdentity || "-"}${proc ? ` (${proc.name})` : gone}`;
    return [h(name), word(leaseFresh(l, now) ? "Held" : "Expired"), h(holder), h(l.spec.leaseTransitions ?? 0), h(age(l.spec.renewTime, now))];
  });
  return `<h3>Store (etcd v3 Maintenance Status of each member)</h3>${storeTable(state)}
    <h3>API servers (their Leases in kube-system)</h3>${table("apis", ["address", "status", "dashboard", "renewed"], apiRows, state, "no API server leases")}
    <h3>Leader election</h3>${table("elected", ["lease", "status", "holder", "transitions", "renewed"], elected, state)}
    <h3>Processes (each host's supervisor publishes them: ConfigMaps <code>k8semu-components-HOST</code> in kube-system)</h3>${processes(state, now, leases)}`;
}

const KIND_ORDER = ["store", "apiserver", "scheduler", "controller-manager", "kubelet", "proxy"];
const STATE_WORDS = { running: "Running", backoff: "BackOff", failed: "Failed", stopped: "Stopped" };

// What a process is to the cluster: the store leader or a follower (its Maintenance Status),
// the holder of the scheduler's or controller manager's Lease (the holder identity is
// host_pid_random), an API server, the node(s) of a kubelet or proxy.
function roleOf(row, state, leases) {
  if (row.state !== "running") return "-";
  if (row.kind === "store") {
    const m = ((state.store && state.store.members) || []).find((x) => x.endpoint === row.address);
    if (!m) return "member";
    if (!m.memberID) return "unreachable";
    return m.isLeader ? `leader (term ${m.raftTerm})` : m.leader === "0" ? "follower, no leader known yet" : "follower";
  }
  const lease = { scheduler: "kube-scheduler", "controller-manager": "kube-controller-manager" }[row.kind];
  if (lease) {
    const l = leases.find((x) => x.metadata.name === lease);
    const pid = l ? String(l.spec.holderIdentity || "").split("_")[1] : "";
    return pid && Number(pid) === row.pid ? `leader (${lease} lease)` : "standby";
  }
  if (row.kind === "apiserver") return leases.some((l) => l.spec.holderIdentity === row.address) ? "serving (lease)" : "serving";
  const nodes = row.nodes || [];
  if (nodes.length) return nodes.length === 1 ? `node ${nodes[0]}` : `${nodes.length} nodes`;
  // A proxy is planned per node as proxy-<node> (its record lists no nodes).
  if (row.kind === "proxy" && row.name.startsWith("proxy-")) return `proxy of node ${row.name.slice(6)}`;
  return row.kind;
}

// How the cluster sees a running process, from what answers for it: the store member's own
// Status, the API server's Lease, the leader's Lease renewals, the kubelet's Node(s).
function healthOf(row, state, leases, now) {
  if (row.stale || row.state !== "running") return "-";
  if (row.kind === "store") {
    const m = ((state.store && state.store.members) || []).find((x) => x.endpoint === row.address);
    return !m ? "-" : word(!m.memberID ? "Unreachable" : m.healthy ? "Healthy" : "Unhealthy");
  }
  if (row.kind === "apiserver") {
    const l = leases.find((x) => x.spec.holderIdentity === row.address);
    return l ? word(leaseFresh(l, now) ? "Serving" : "Expired") : "-";
  }
  const lease = { scheduler: "kube-scheduler", "controller-manager": "kube-controller-manager" }[row.kind];
  if (lease) {
    const l = leases.find((x) => x.metadata.name === lease);
    const leads = l && Number(String(l.spec.holderIdentity || "").split("_")[1]) === row.pid;
    return leads ? word(leaseFresh(l, now) ? "Renewing" : "Expired") : "-";
  }
  const nodes = items(state, "nodes").filter((n) => (row.nodes || []).includes(n.metadata.name));
  if (!nodes.length) return "-";
  if (nodes.length === 1) return word(nodeState(nodes[0]));
  return `${nodes.filter((n) => nodeState(n) === "Ready").length}/${nodes.length} ${word("Ready")}`;
}

function lastExit(row) {
  if (!row.lastExitAt) return "none";
  const code = row.lastExitCode;
  const how = code === null || code === undefined ? "exit code unknown" : code < 0 ? `signal ${-code}` : `code ${code}`;
  return `${how}, ${age(row.lastExitAt)} ago`;
}

// A supervisor rewrites its table at least every 30 s; three missed: nobody vouches for it.
const STALE_MS = 90000;

export function processRows(state, now = Date.now()) {
  const rows = [];
  for (const cm of items(state, "components")) {
    const at = (cm.metadata.annotations || {})["k8semu.io/published-at"];
    const stale = !at || now - Date.parse(at) > STALE_MS;
    for (const [name, text] of Object.entries(cm.data || {})) {
      try {
        rows.push({ name, ...JSON.parse(text), publishedAt: at, stale });
      } catch (_) {
        rows.push({ name, kind: "?", state: "unreadable", host: cm.metadata.name, stale });
      }
    }
  }
  const rank = (k) => (KIND_ORDER.includes(k) ? KIND_ORDER.indexOf(k) : KIND_ORDER.length);
  return rows.sort((a, b) => (a.host || "").localeCompare(b.host || "") || rank(a.kind) - rank(b.kind) || a.name.localeCompare(b.name));
}

function processes(state, now, leases) {
  const all = processRows(state, now);
  const stale = [...new Set(all.filter((r) => r.stale).map((r) => r.host || "?"))];
  const note = stale.length
    ? `<p class="error" role="alert">${word("Unknown")} the supervisor of ${h(stale.join(", "))} has not published for over ${STALE_MS / 1000} s (last ${h(age(all.find((r) => r.stale).publishedAt, now))} ago): what it last said is shown; <code>k8semu status</code> on that host tells more.</p>`
    : "";
  const rows = all.map((r) => [
    `<span data-process="${h(r.name)}">${h(r.name)}</span>`,
    h(r.host || "-"),
    h(r.kind),
    r.stale ? `${word("Unknown")} <small>(last said ${h(r.state)})</small>` : word(STATE_WORDS[r.state] || r.state),
    healthOf(r, state, leases, now),
    h(r.stale ? "-" : roleOf(r, state, leases)),
    h(r.pid || "-"),
    `<span data-restarts="${h(r.name)}">${h(r.restarts ?? 0)}</span>`,
    h(r.state === "running" && r.started ? age(r.started, now) : "-"),
    h(lastExit(r)),
    h(r.address || "-"),
  ]);
  return `${loading(state, "components")}${note}${table("processes", ["process", "host", "kind", "state", "health", "role", "pid", "restarts", "uptime", "last exit", "address"], rows, state, "no component table published yet (k8semu up and k8semu supervise publish one per host)")}`;
}

export function nodeState(n) {
  const ready = (n.status.conditions || []).find((c) => c.type === "Ready");
  const w = !ready ? "Unknown" : ready.status === "True" ? "Ready" : ready.status === "False" ? "NotReady" : "Unknown";
  return w;
}

function nodeRows(state, now) {
  const perNode = new Map();
  for (const p of items(state, "pods")) {
    const n = p.spec.nodeName;
    if (n) perNode.set(n, (perNode.get(n) || 0) + 1);
  }
  return items(state, "nodes")
    .sort(byName)
    .map((n) => {
      const cap = n.status.capacity || {};
      const alloc = n.status.allocatable || {};
      const ip = ((n.status.addresses || []).find((a) => a.type === "InternalIP") || {}).address;
      const taints = (n.spec.taints || []).map((t) => `${t.key}${t.value ? `=${t.value}` : ""}:${t.effect}`).join(" ");
      const other = (n.status.conditions || []).filter((c) => c.type !== "Ready" && c.status === "True").map((c) => c.type);
      const cordoned = !!n.spec.unschedulable;
      return [
        `<span data-node="${h(n.metadata.name)}">${h(n.metadata.name)}</span>`,
        word(nodeState(n)) + (cordoned ? " " + word("SchedulingDisabled") : ""),
        h(ip || "-"),
        h(n.spec.podCIDR || "-"),
        `${h(cap.cpu || "-")} / ${h(alloc.cpu || "-")}`,
        `${h(cap.memory || "-")} / ${h(alloc.memory || "-")}`,
        `${perNode.get(n.metadata.name) || 0} / ${h(alloc.pods || cap.pods || "-")}`,
        h(taints || "none"),
        h(other.join(", ") || "none"),
        h(age(n.metadata.creationTimestamp, now)),
        btn("cordon", cordoned ? "Uncordon" : "Cordon", { name: n.metadata.name, on: cordoned ? "" : "1" }),
      ];
    });
}

export function cluster(state) {
  const now = Date.now();
  const nodes = nodeRows(state, now);
  const ready = items(state, "nodes").filter((n) => nodeState(n) === "Ready").length;
  return `<h2>Control plane</h2>${loading(state, "leases")}${controlPlane(state, now)}
    <h2>Nodes <small>${ready} of ${nodes.length} Ready</small></h2>${loading(state, "nodes", "pods")}
    ${table("nodes", ["name", "status", "IP", "podCIDR", "CPU cap / alloc", "memory cap / alloc", "pods / max", "taints", "other conditions", "age", "action"], nodes, state, "no nodes")}`;
}

// ---- workloads -----------------------------------------------------------------------------

export function podState(p) {
  if (p.metadata.deletionTimestamp) return "Terminating";
  for (const cs of p.status.containerStatuses || []) {
    const waiting = cs.state && cs.state.waiting;
    if (waiting && waiting.reason) return waiting.reason;
    const term = cs.state && cs.state.terminated;
    if (term && term.reason && p.status.phase === "Running") return term.reason;
  }
  return p.status.phase || "Pending";
}

const REVISION = "deployment.kubernetes.io/revision";
const revisionOf = (o) => Number((o.metadata.annotations || {})[REVISION] || 0);
export const ownedBy = (o, owner) => (o.metadata.ownerReferences || []).some((r) => r.uid === owner.metadata.uid);

function matches(state, o) {
  if (state.filters.ns && o.metadata.namespace !== state.filters.ns) return false;
  return state.selectorFn(o.metadata.labels);
}

function history(state, d, now) {
  const rss = items(state, "replicasets").filter((rs) => ownedBy(rs, d)).sort((a, b) => revisionOf(b) - revisionOf(a));
  const rows = rss.map((rs) => [h(revisionOf(rs) || "-"), h(rs.metadata.name), h(`${rs.status.replicas || 0}/${rs.spec.replicas ?? 0}`), h((rs.spec.template.spec.containers || []).map((c) => c.image).join(", ")), h((rs.spec.template.metadata.annotations || {})["kubectl.kubernetes.io/restartedAt"] || "-"), h(age(rs.metadata.creationTimestamp, now))]);
  return `<tr class="history"><td colspan="10"><strong>Rollout history of ${h(d.metadata.name)}</strong>${table(`hist-${nsName(d)}`, ["revision", "replicaset", "replicas", "images", "restartedAt", "age"], rows, state, "no ReplicaSets")}</td></tr>`;
}

function deployments(state, now) {
  const ds = items(state, "deployments").filter((d) => matches(state, d)).sort(byName);
  if (!ds.length) return table("deployments", ["name"], [], state, "no Deployments match");
  const body = ds.map((d) => {
    const s = d.status || {};
    const key = nsName(d);
    const data = { ns: d.metadata.namespace, name: d.metadata.name };
    const avail = (s.availableReplicas || 0) >= (d.spec.replicas ?? 1) && (s.updatedReplicas || 0) >= (d.spec.replicas ?? 1);
    const row = `<tr data-deployment="${h(key)}"><td>${h(key)}</td><td>${word(avail ? "Available" : "Progressing")}</td><td class="num" data-col="desired">${h(d.spec.replicas ?? 1)}</td><td class="num">${h(s.updatedReplicas || 0)}</td><td class="num">${h(s.readyReplicas || 0)}</td><td class="num">${h(s.availableReplicas || 0)}</td><td>${h(revisionOf(d) || "-")}</td><td>${h(age(d.metadata.creationTimestamp, now))}</td>
      <td class="actions">${btn("scale", "Scale", { ...data, replicas: d.spec.replicas ?? 1 })}${btn("restart", "Restart", data)}${btn("undo", "Undo", data)}${btn("history", state.open.has(key) ? "Hide history" : "History", { key }, `aria-expanded="${state.open.has(key)}"`)}</td></tr>`;
    return row + (state.open.has(key) ? history(state, d, now) : "");
  });
  return `<div class="scroll"><table id="t-deployments"><thead><tr>${["deployment", "status", "desired", "updated", "ready", "available", "revision", "age", "actions"].map((c) => `<th scope="col">${c}</th>`).join("")}</tr></thead><tbody>${body.join("")}</tbody></table></div>`;
}

export function workloads(state) {
  const now = Date.now();
  if (state.selectorError) return `<p class="error" role="alert">${h(state.selectorError)}</p>`;
  const rss = items(state, "replicasets").filter((rs) => matches(state, rs)).sort(byName);
  const rsRows = rss.map((rs) => {
    const owner = (rs.metadata.ownerReferences || []).find((r) => r.controller) || {};
    return [h(nsName(rs)), h(revisionOf(rs) || "-"), h(owner.name ? `${owner.kind}/${owner.name}` : "-"), h(rs.spec.replicas ?? 1), h(rs.status.replicas || 0), h(rs.status.readyReplicas || 0), h(age(rs.metadata.creationTimestamp, now))];
  });
  const pods = items(state, "pods").filter((p) => matches(state, p)).sort(byName);
  const podRows = pods.map((p) => {
    const css = p.status.containerStatuses || [];
    const ready = css.filter((c) => c.ready).length;
    const restarts = css.reduce((a, c) => a + (c.restartCount || 0), 0);
    const data = { ns: p.metadata.namespace, name: p.metadata.name };
    return [
      `<a href="#pod/${encodeURIComponent(p.metadata.namespace)}/${encodeURIComponent(p.metadata.name)}" data-pod="${h(nsName(p))}">${h(nsName(p))}</a>`,
      word(podState(p)),
      `${ready}/${(p.spec.containers || []).length}`,
      h(restarts),
      h(p.spec.nodeName || "-"),
      h(p.status.podIP || "-"),
      h(age(p.metadata.creationTimestamp, now)),
      btn("delete-pod", "Delete", data),
    ];
  });
  return `${loading(state, "deployments", "replicasets", "pods")}
    <h2>Deployments</h2>${deployments(state, now)}
    <h2>ReplicaSets <small>${rss.length}</small></h2>${table("replicasets", ["replicaset", "revision", "owner", "desired", "current", "ready", "age"], rsRows, state, "no ReplicaSets match")}
    <h2>Pods <small>${pods.length}</small></h2>${table("pods", ["pod", "status", "ready", "restarts", "node", "IP", "age", "action"], podRows, state, "no pods match")}`;
}

// ---- networking ----------------------------------------------------------------------------

function endpointsOf(ep) {
  const ready = [];
  const notReady = [];
  for (const s of (ep && ep.subsets) || []) {
    const ports = (s.ports || []).map((p) => p.port);
    const fmt = (a) => (ports.length ? ports.map((p) => `${a.ip}:${p}`) : [a.ip]);
    for (const a of s.addresses || []) ready.push(...fmt(a));
    for (const a of s.notReadyAddresses || []) notReady.push(...fmt(a));
  }
  return { ready, notReady };
}

export function networking(state) {
  const eps = state.inf.endpoints ? state.inf.endpoints.items : new Map();
  const rows = items(state, "services")
    .filter((s) => !state.filters.ns || s.metadata.namespace === state.filters.ns)
    .sort(byName)
    .map((s) => {
      const ports = (s.spec.ports || []).map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ""}/${p.protocol || "TCP"}→${p.targetPort ?? p.port}`).join(" ");
      const ext = [...(s.spec.externalIPs || []), ...(((s.status || {}).loadBalancer || {}).ingress || []).map((i) => i.ip || i.hostname)];
      const { ready, notReady } = endpointsOf(eps.get(nsName(s)));
      return [h(nsName(s)), h(s.spec.type || "ClusterIP"), h(s.spec.clusterIP || "-"), h(ports || "-"), h(ext.join(" ") || "none"), `${word(ready.length ? "Ready" : "NoEndpoints")} ${h(ready.join(" "))}`, notReady.length ? `${word("NotReady")} ${h(notReady.join(" "))}` : "none"];
    });
  return `${loading(state, "services", "endpoints")}<h2>Services <small>${rows.length}</small></h2>
    ${table("services", ["service", "type", "cluster IP", "ports (port:nodePort/proto→target)", "external IPs", "ready endpoints", "not-ready endpoints"], rows, state, "no Services")}`;
}

// ---- events --------------------------------------------------------------------------------

export const eventTime = (e) => e.lastTimestamp || e.eventTime || e.firstTimestamp || e.metadata.creationTimestamp;

export function events(state) {
  const now = Date.now();
  const text = state.filters.events.toLowerCase();
  const type = state.filters.eventType;
  const evs = items(state, "events")
    .filter((e) => (!state.filters.ns || e.metadata.namespace === state.filters.ns) && (!type || e.type === type))
    .filter((e) => !text || `${e.reason} ${e.message} ${e.involvedObject.kind}/${e.involvedObject.name} ${(e.source || {}).component}`.toLowerCase().includes(text))
    .sort((a, b) => Date.parse(eventTime(b)) - Date.parse(eventTime(a)));
  const rows = evs.map((e) => [h(age(eventTime(e), now)), word(e.type || "Normal"), h(e.reason), h(`${e.involvedObject.kind}/${e.involvedObject.namespace ? `${e.involvedObject.namespace}/` : ""}${e.involvedObject.name}`), h(e.message), h((e.source || {}).component || e.reportingComponent || "-"), h(e.count || 1)]);
  return `${loading(state, "events")}<h2>Events <small>${rows.length}</small></h2>${table("events", ["last seen", "type", "reason", "object", "message", "source", "count"], rows, state, "no events match")}`;
}

// ---- charts --------------------------------------------------------------------------------

// A small line chart: `series` [{name, points: [[t, v]...]}], time on x, values on y.
export function lineChart(series, { width = 560, height = 160, label = "" } = {}) {
  const all = series.flatMap((s) => s.points);
  if (all.length < 1) return `<p class="note">no samples yet</p>`;
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1000);
  const vmax = Math.max(1, ...all.map((p) => p[1])) * 1.1;
  const x = (t) => 40 + ((t - t0) / (t1 - t0)) * (width - 50);
  const y = (v) => height - 20 - (v / vmax) * (height - 30);
  const paths = series
    .map((s, i) => {
      const pts = s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
      // The newest sample as a dot too: a series of one point is otherwise invisible.
      const last = pts.length ? pts[pts.length - 1].split(",") : null;
      const dot = last ? `<circle class="dot dot-${i}" cx="${last[0]}" cy="${last[1]}" r="3"/>` : "";
      return `<polyline class="line line-${i}" fill="none" points="${pts.join(" ")}"><title>${h(s.name)}</title></polyline>${dot}`;
    })
    .join("");
  const legend = series.map((s, i) => `<tspan class="legend-${i}" dx="${i ? 14 : 0}">${i ? "- - " : "—— "}${h(s.name)} (now ${s.points.length ? h(s.points[s.points.length - 1][1]) : "-"})</tspan>`).join("");
  return `<svg class="chart" viewBox="0 0 ${width} ${height}" role="img" aria-label="${h(label)}">
    <line x1="40" y1="${height - 20}" x2="${width - 10}" y2="${height - 20}" class="axis"/><line x1="40" y1="10" x2="40" y2="${height - 20}" class="axis"/>
    <text x="36" y="${y(vmax / 1.1) + 4}" text-anchor="end">${h(Math.round(vmax / 1.1))}</text><text x="36" y="${height - 16}" text-anchor="end">0</text>
    <text x="${width - 10}" y="${height - 4}" text-anchor="end">${h(Math.round((t1 - t0) / 1000))} s shown</text>
    ${paths}<text x="44" y="12">${legend}</text></svg>`;
}
