// The Autoscaling, Chaos and Pod views (the rest are in views.js).

import { dump } from "./yaml.js";
import { age, eventTime, h, lineChart, podState, table, word } from "./views.js";

const items = (state, name) => (state.inf[name] ? state.inf[name].list() : []);

// ---- autoscaling ---------------------------------------------------------------------------

function metricText(spec, status) {
  const target = spec.resource ? spec.resource.target || {} : {};
  const cur = (status && status.resource && status.resource.current) || {};
  const name = spec.resource ? spec.resource.name : spec.type;
  if (target.averageUtilization !== undefined) return `${name} ${cur.averageUtilization ?? "?"}% / ${target.averageUtilization}%`;
  return `${name} ${cur.averageValue || cur.value || "?"} / ${target.averageValue || target.value || "?"}`;
}

// Records each HPA's replicas and first metric at most once a second (kept 30 min).
export function sampleHPAs(state) {
  const now = Date.now();
  for (const a of items(state, "hpas")) {
    const key = `${a.metadata.namespace}/${a.metadata.name}`;
    const hist = state.hpaHistory.get(key) || [];
    const s = a.status || {};
    const cur = ((s.currentMetrics || [])[0] || {}).resource;
    const target = (((a.spec.metrics || [])[0] || {}).resource || {}).target || {};
    const sample = [now, s.currentReplicas || 0, s.desiredReplicas || 0, cur && cur.current ? cur.current.averageUtilization ?? null : null, target.averageUtilization ?? null];
    const last = hist[hist.length - 1];
    if (last && now - last[0] < 1000) hist[hist.length - 1] = [last[0], ...sample.slice(1)];
    else hist.push(sample);
    while (hist.length && now - hist[0][0] > 1800000) hist.shift();
    state.hpaHistory.set(key, hist);
  }
}

function top(state) {
  const m = state.metrics;
  if (m.error) return `<p class="note">${h(m.error)}</p>`;
  if (!m.nodes) return `<p class="note">loading metrics.k8s.io…</p>`;
  const nodeRows = m.nodes.map((n) => [h(n.metadata.name), h(`${Math.round(quantityMilli(n.usage.cpu))}m`), h(mebibytes(n.usage.memory)), h(age(n.timestamp))]);
  const pods = [...m.pods].sort((a, b) => cpuMilli(b) - cpuMilli(a));
  const podRows = pods.map((p) => [h(`${p.metadata.namespace}/${p.metadata.name}`), h(`${cpuMilli(p)}m`), h(mebibytes(...(p.containers || []).map((c) => c.usage.memory)))]);
  return `<h3>Nodes (top)</h3>${table("top-nodes", ["node", "CPU", "memory", "sampled"], nodeRows, state, "no node metrics yet")}
    <h3>Pods by CPU (top)</h3>${table("top-pods", ["pod", "CPU", "memory"], podRows, state, "no pod metrics yet")}`;
}

const UNITS = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };

// The sum of memory quantities ("57184Ki", "64Mi", "1000") in MiB.
function mebibytes(...qs) {
  let bytes = 0;
  for (const q of qs) {
    const m = /^([\d.]+)([A-Za-z]*)$/.exec(q || "0");
    if (m) bytes += Number(m[1]) * (UNITS[m[2]] || 1);
  }
  return `${(bytes / 2 ** 20).toFixed(1)}Mi`;
}

function quantityMilli(q) {
  if (!q) return 0;
  if (q.endsWith("n")) return Number(q.slice(0, -1)) / 1e6;
  if (q.endsWith("u")) return Number(q.slice(0, -1)) / 1e3;
  if (q.endsWith("m")) return Number(q.slice(0, -1));
  return Number(q) * 1000;
}

const cpuMilli = (p) => Math.round((p.containers || []).reduce((a, c) => a + quantityMilli(c.usage.cpu), 0));

export function autoscaling(state) {
  const hpas = items(state, "hpas").filter((a) => !state.filters.ns || a.metadata.namespace === state.filters.ns);
  const blocks = hpas.map((a) => {
    const key = `${a.metadata.namespace}/${a.metadata.name}`;
    const s = a.status || {};
    const hist = state.hpaHistory.get(key) || [];
    const metrics = (a.spec.metrics || []).map((m, i) => metricText(m, (s.currentMetrics || [])[i])).join("; ");
    const replicas = lineChart(
      [
        { name: "current replicas", points: hist.map((x) => [x[0], x[1]]) },
        { name: "desired replicas", points: hist.map((x) => [x[0], x[2]]) },
      ],
      { label: `${key} replicas over time` },
    );
    const metric = lineChart(
      [
        { name: "utilization %", points: hist.filter((x) => x[3] !== null).map((x) => [x[0], x[3]]) },
        { name: "target %", points: hist.filter((x) => x[4] !== null).map((x) => [x[0], x[4]]) },
      ],
      { label: `${key} metric against target` },
    );
    const ref = a.spec.scaleTargetRef || {};
    return `<section class="hpa"><h3>${h(key)} → ${h(ref.kind)}/${h(ref.name)}</h3>
      <p>replicas ${h(s.currentReplicas ?? "-")} (desired ${h(s.desiredReplicas ?? "-")}, min ${h(a.spec.minReplicas ?? 1)}, max ${h(a.spec.maxReplicas)}); ${h(metrics || "no metrics")}</p>
      <div class="charts">${replicas}${metric}</div></section>`;
  });
  return `<h2>HorizontalPodAutoscalers <small>${hpas.length}</small></h2>${blocks.join("") || '<p class="note">no HorizontalPodAutoscalers</p>'}
    <h2>Resource usage (metrics.k8s.io)</h2>${top(state)}`;
}

// ---- chaos ---------------------------------------------------------------------------------

const FAULT_ANNOTATION = "k8semu.io/chaos-fault";
const AT_ANNOTATION = "k8semu.io/chaos-at";
const AFTER_ANNOTATION = "k8semu.io/recovered-after";

// The faults of chaos runs, from the Events `k8semu chaos` writes (docs/chaos.md).
export function chaosFaults(state) {
  const faults = new Map();
  for (const e of items(state, "events")) {
    if (!e.reason || !e.reason.startsWith("Chaos")) continue;
    const ann = e.metadata.annotations || {};
    const id = ann[FAULT_ANNOTATION] || e.metadata.name;
    const f = faults.get(id) || { id, target: e.involvedObject.name, kind: e.involvedObject.kind };
    const at = Date.parse(ann[AT_ANNOTATION] || eventTime(e));
    if (e.reason === "ChaosFault") Object.assign(f, { at, message: e.message });
    else if (e.reason === "ChaosRecovered") Object.assign(f, { recovered: at, after: Number(ann[AFTER_ANNOTATION]) });
    else Object.assign(f, { unrecovered: at, note: e.message });
    faults.set(id, f);
  }
  return [...faults.values()].filter((f) => f.at).sort((a, b) => a.at - b.at);
}

function timeline(faults) {
  const now = Date.now();
  const t0 = Math.min(...faults.map((f) => f.at));
  const t1 = Math.max(...faults.map((f) => f.recovered || f.unrecovered || now), t0 + 1000);
  const W = 720;
  const row = 22;
  const x = (t) => 180 + ((t - t0) / (t1 - t0)) * (W - 200);
  const bars = faults
    .map((f, i) => {
      const end = f.recovered || f.unrecovered || now;
      const state = f.recovered ? "recovered" : f.unrecovered ? "failed" : "open";
      const label = f.recovered ? `recovered after ${f.after.toFixed(2)} s` : f.unrecovered ? "not recovered" : "recovering…";
      return `<g class="fault fault-${state}"><text x="4" y="${i * row + 15}">${h((f.message || f.target).replace(/^chaos: /, "").slice(0, 32))}</text>
        <rect x="${x(f.at).toFixed(1)}" y="${i * row + 4}" width="${Math.max(2, x(end) - x(f.at)).toFixed(1)}" height="${row - 8}"><title>${h(f.message)}: ${h(label)}</title></rect>
        <text x="${Math.min(W - 150, x(end) + 4).toFixed(1)}" y="${i * row + 15}">${h(label)}</text></g>`;
    })
    .join("");
  const height = faults.length * row + 24;
  return `<svg class="chart timeline" viewBox="0 0 ${W} ${height}" role="img" aria-label="chaos faults on a timeline">${bars}
    <text x="180" y="${height - 4}">0 s</text><text x="${W - 10}" y="${height - 4}" text-anchor="end">${((t1 - t0) / 1000).toFixed(1)} s</text></svg>`;
}

export function chaos(state) {
  const faults = chaosFaults(state);
  if (!faults.length) {
    return `<h2>Chaos</h2><p class="note">No chaos run recorded: <code>k8semu chaos</code> records each fault and recovery as an Event (reason ChaosFault / ChaosRecovered).</p>`;
  }
  const rows = faults.map((f) => [h(new Date(f.at).toLocaleTimeString()), h(f.message), word(f.recovered ? "Recovered" : f.unrecovered ? "Unrecovered" : "Fault"), h(f.recovered ? `${f.after.toFixed(2)} s` : "-")]);
  const rec = faults.filter((f) => f.recovered).map((f) => f.after).sort((a, b) => a - b);
  const summary = rec.length ? `recovery p50 ${rec[Math.floor(rec.length / 2)].toFixed(2)} s, max ${rec[rec.length - 1].toFixed(2)} s` : "";
  return `<h2>Chaos <small>${faults.length} faults ${h(summary)}</small></h2>${timeline(faults)}${table("chaos", ["injected", "fault", "status", "recovery"], rows, state)}`;
}

// ---- pod details ---------------------------------------------------------------------------

function probe(p) {
  if (!p) return "none";
  const how = p.httpGet ? `http GET :${p.httpGet.port}${p.httpGet.path || "/"}` : p.tcpSocket ? `tcp :${p.tcpSocket.port}` : p.exec ? `exec ${(p.exec.command || []).join(" ")}` : "?";
  return `${how} every ${p.periodSeconds || 10}s, delay ${p.initialDelaySeconds || 0}s, timeout ${p.timeoutSeconds || 1}s, failure ${p.failureThreshold || 3}`;
}

function withoutManagedFields(obj) {
  const { managedFields: _, ...metadata } = obj.metadata;
  return { ...obj, metadata };
}

export function pod(state, key) {
  const p = state.inf.pod && state.inf.pod.items.get(key);
  if (!p) return `<h2>Pod ${h(key)}</h2>${state.inf.pod && state.inf.pod.synced ? word("Deleted") + " <p>this pod is gone.</p>" : '<p class="note">loading…</p>'}`;
  const statuses = new Map((p.status.containerStatuses || []).map((c) => [c.name, c]));
  const rows = (p.spec.containers || []).map((c) => {
    const st = statuses.get(c.name) || {};
    const state = st.state ? Object.keys(st.state)[0] || "-" : "-";
    return [h(c.name), h(c.image), word(st.ready ? "Ready" : "NotReady"), h(state), h(st.restartCount || 0), h((c.ports || []).map((x) => `${x.containerPort}/${x.protocol || "TCP"}`).join(" ") || "-"), h(probe(c.readinessProbe)), h(probe(c.livenessProbe))];
  });
  const conds = (p.status.conditions || []).map((c) => `${c.type}=${c.status}`).join(", ");
  return `<h2>Pod ${h(key)} ${word(podState(p))}</h2>
    <p>node ${h(p.spec.nodeName || "-")}, IP ${h(p.status.podIP || "-")}, age ${h(age(p.metadata.creationTimestamp))}; conditions: ${h(conds || "none")}</p>
    <h3>Containers</h3>${table("containers", ["name", "image", "ready", "state", "restarts", "ports", "readiness probe", "liveness probe"], rows, state)}
    <h3>Manifest <small>(managedFields left out, as kubectl get -o yaml does)</small></h3><pre class="manifest" tabindex="0">${h(dump(withoutManagedFields(p)))}</pre>`;
}
