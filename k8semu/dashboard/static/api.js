// The dashboard's REST client: requests with an optional bearer token, and informers
// (list + watch resumed from resourceVersion, relist on 410 Expired) over fetch() streams.
// It uses only the Kubernetes REST API of the API server that served the page.

const TOKEN_KEY = "k8semu.dashboard.token";
const PAGE = 500; // list page size (limit/continue), as client-go's pager
const WATCH_SECONDS = 240; // a watch ends itself and resumes, so dead connections surface

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function headers(extra) {
  const out = { Accept: "application/json", ...extra };
  const t = token();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

// An API error: the metav1.Status the server answered (or one made up for a network error).
export class ApiError extends Error {
  constructor(status) {
    super(status.message || status.reason || "request failed");
    this.status = status;
    this.code = status.code || 0;
    this.reason = status.reason || "";
    this.causes = (status.details && status.details.causes) || [];
  }
}

export async function statusOf(resp) {
  const text = await resp.text();
  try {
    const doc = JSON.parse(text);
    if (doc && doc.kind === "Status") return doc;
  } catch (_) {
    /* not JSON: fall through */
  }
  return { code: resp.status, reason: resp.statusText, message: `${resp.status} ${text.slice(0, 200)}` };
}

export async function request(method, path, body, contentType) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": contentType || "application/json" }) };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError({ code: 0, reason: "NetworkError", message: `${method} ${path}: ${err.message} (is the API server up?)` });
  }
  if (!resp.ok) throw new ApiError(await statusOf(resp));
  const text = await resp.text();
  return text ? JSON.parse(text) : {};
}

export const get = (path) => request("GET", path);
export const mergePatch = (path, body) => request("PATCH", path, body, "application/merge-patch+json");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The API leaves empty parts out (a pod just created has no status at all): the views read
// obj.spec.x and obj.status.x, so every cached object has the three.
function filled(obj) {
  for (const part of ["metadata", "spec", "status"]) if (!obj[part] || typeof obj[part] !== "object") obj[part] = {};
  return obj;
}

// Keeps `items` (key "ns/name" -> object) equal to the server's collection at `path`
// (e.g. /api/v1/pods): list, then watch from the list's resourceVersion; a 410 Expired
// (the watch cache moved past it) relists, any other failure retries with back-off.
export class Informer {
  constructor(path, onChange) {
    this.path = path;
    this.onChange = onChange;
    this.items = new Map();
    this.rv = "";
    this.synced = false;
    this.error = "";
    this.stopped = false;
    this.abort = null;
    this.run();
  }

  static key(obj) {
    const m = obj.metadata || {};
    return m.namespace ? `${m.namespace}/${m.name}` : m.name;
  }

  list() {
    return [...this.items.values()];
  }

  stop() {
    this.stopped = true;
    if (this.abort) this.abort.abort();
  }

  async run() {
    let backoff = 250;
    while (!this.stopped) {
      try {
        if (!this.rv) await this.relist();
        // stop() during the list: no watch (it would go out with the old credentials).
        if (this.stopped) return;
        await this.watch();
        backoff = 250;
      } catch (err) {
        if (this.stopped) return;
        this.error = err.message;
        if (err.code === 410) this.rv = "";
        this.onChange(this);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }

  async relist() {
    const items = new Map();
    let cont = "";
    let rv = "";
    for (let page = 0; page < 1000 && !this.stopped; page++) {
      const sep = this.path.includes("?") ? "&" : "?";
      const q = `${sep}limit=${PAGE}${cont ? `&continue=${encodeURIComponent(cont)}` : ""}`;
      const doc = await get(this.path + q);
      for (const obj of doc.items || []) items.set(Informer.key(obj), filled(obj));
      rv = rv || doc.metadata.resourceVersion;
      cont = doc.metadata.continue || "";
      if (!cont) break;
    }
    this.items = items;
    this.rv = rv;
    this.synced = true;
    this.error = "";
    this.onChange(this);
  }

  async watch() {
    const sep = this.path.includes("?") ? "&" : "?";
    const url = `${this.path}${sep}watch=1&allowWatchBookmarks=true&timeoutSeconds=${WATCH_SECONDS}&resourceVersion=${this.rv}`;
    this.abort = new AbortController();
    let resp;
    try {
      resp = await fetch(url, { headers: headers({}), signal: this.abort.signal });
    } catch (err) {
      throw new ApiError({ code: 0, reason: "NetworkError", message: `watch ${this.path}: ${err.message}` });
    }
    if (!resp.ok) throw new ApiError(await statusOf(resp));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += decoder.decode(value, { stream: true });
      const lines = buffered.split("\n");
      buffered = lines.pop();
      let changed = false;
      for (const line of lines) if (line.trim()) changed = this.apply(JSON.parse(line)) || changed;
      if (changed) {
        this.error = "";
        this.onChange(this);
      }
    }
  }

  apply(event) {
    const obj = event.object || {};
    if (event.type === "ERROR") {
      throw new ApiError(obj);
    }
    if (obj.metadata && obj.metadata.resourceVersion) this.rv = obj.metadata.resourceVersion;
    if (event.type === "BOOKMARK") return false;
    if (event.type === "DELETED") this.items.delete(Informer.key(obj));
    else this.items.set(Informer.key(obj), filled(obj));
    return true;
  }
}

// The REST path of a kind's collection, from discovery (cached per group/version).
const discovered = new Map();

export async function resourceFor(apiVersion, kind) {
  if (!apiVersion || !kind) throw new ApiError({ code: 400, reason: "BadRequest", message: "apiVersion and kind are required" });
  const base = apiVersion.includes("/") ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  if (!discovered.has(base)) discovered.set(base, get(base));
  let list;
  try {
    list = await discovered.get(base);
  } catch (err) {
    discovered.delete(base);
    throw err;
  }
  const found = (list.resources || []).find((r) => r.kind === kind && !r.name.includes("/"));
  if (!found) throw new ApiError({ code: 404, reason: "NotFound", message: `no kind ${kind} in ${apiVersion}` });
  return { base, resource: found.name, namespaced: found.namespaced };
}

export function objectPath(base, resource, namespace, name) {
  const ns = namespace ? `/namespaces/${encodeURIComponent(namespace)}` : "";
  return `${base}${ns}/${resource}${name ? `/${encodeURIComponent(name)}` : ""}`;
}
