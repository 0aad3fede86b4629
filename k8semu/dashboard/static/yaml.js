// A small YAML reader and writer for Kubernetes manifests (block maps and lists, plain,
// quoted and block scalars, simple flow collections, several documents): enough to paste a
// manifest and see one. Errors name the line. Anchors, tags and complex keys are refused.

export class YamlError extends Error {
  constructor(line, message) {
    super(`line ${line}: ${message}`);
    this.line = line;
  }
}

// The index of the first character outside quotes for which found(c, i) holds, or -1; a
// quote opens a string only where a token starts (so "it's" is plain text).
function outsideQuotes(text, found) {
  let quote = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = "";
    } else if ((c === '"' || c === "'") && (i === 0 || /[\s,[{:]/.test(text[i - 1]))) quote = c;
    else if (found(c, i)) return i;
  }
  return -1;
}

function stripComment(text) {
  const i = outsideQuotes(text, (c, at) => c === "#" && (at === 0 || /\s/.test(text[at - 1])));
  return i < 0 ? text : text.slice(0, i);
}

function plain(text, line) {
  const t = text.trim();
  if (t === "" || t === "~" || t === "null" || t === "Null" || t === "NULL") return null;
  if (/^(true|True|TRUE)$/.test(t)) return true;
  if (/^(false|False|FALSE)$/.test(t)) return false;
  if (/^[-+]?\d+$/.test(t)) return Number(t);
  if (/^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$/.test(t)) return Number(t);
  if (t.startsWith('"')) {
    try {
      return JSON.parse(t);
    } catch (_) {
      throw new YamlError(line, `bad double-quoted string ${t}`);
    }
  }
  if (t.startsWith("'")) {
    if (!t.endsWith("'") || t.length < 2) throw new YamlError(line, `unterminated string ${t}`);
    return t.slice(1, -1).replace(/''/g, "'");
  }
  if (t.startsWith("[") || t.startsWith("{")) return flow(t, line);
  if (/^[&*!|>%@`]/.test(t)) throw new YamlError(line, `unsupported YAML: ${t}`);
  return t;
}

// Flow collections: [a, b], {a: 1, b: [x]}; nested, with quoted items.
function flow(text, line) {
  let i = 0;
  const fail = (m) => {
    throw new YamlError(line, m);
  };
  const ws = () => {
    while (i < text.length && /\s/.test(text[i])) i++;
  };
  const scalar = (stops) => {
    ws();
    if (text[i] === '"' || text[i] === "'") {
      const q = text[i];
      let j = i + 1;
      while (j < text.length && (text[j] !== q || (q === '"' && text[j - 1] === "\\"))) j++;
      const raw = text.slice(i, j + 1);
      i = j + 1;
      return plain(raw, line);
    }
    let j = i;
    while (j < text.length && !stops.includes(text[j])) j++;
    const raw = text.slice(i, j);
    i = j;
    return plain(raw, line);
  };
  const value = (stops) => {
    ws();
    if (text[i] === "[") return seq();
    if (text[i] === "{") return map();
    return scalar(stops);
  };
  const seq = () => {
    i++;
    const out = [];
    for (ws(); text[i] !== "]"; ws()) {
      if (i >= text.length) fail("unterminated [");
      out.push(value(",]"));
      ws();
      if (text[i] === ",") i++;
    }
    i++;
    return out;
  };
  const map = () => {
    i++;
    const out = {};
    for (ws(); text[i] !== "}"; ws()) {
      if (i >= text.length) fail("unterminated {");
      const key = scalar(":,}");
      ws();
      if (text[i] !== ":") fail(`expected ':' after ${key}`);
      i++;
      out[String(key)] = value(",}");
      ws();
      if (text[i] === ",") i++;
    }
    i++;
    return out;
  };
  const out = value("");
  ws();
  if (i < text.length) fail(`unexpected ${text.slice(i)}`);
  return out;
}

// A key: value split at the first ': ' (or a trailing ':') outside quotes; null when none.
function splitKey(text) {
  if (text[0] === "[" || text[0] === "{") return null;
  const i = outsideQuotes(text, (c, at) => c === ":" && (at + 1 === text.length || text[at + 1] === " "));
  return i < 0 ? null : [text.slice(0, i).trim(), text.slice(i + 1)];
}

class Reader {
  constructor(lines, first) {
    this.raw = lines;
    this.first = first; // line number of lines[0]
    this.i = 0;
  }

  // The next meaningful line: {indent, text, no} (comments and blank lines skipped).
  peek() {
    while (this.i < this.raw.length) {
      const text = stripComment(this.raw[this.i]).replace(/\s+$/, "");
      if (text.trim()) {
        if (/^\t/.test(text)) throw new YamlError(this.first + this.i, "tabs are not allowed for indentation");
        const indent = text.length - text.trimStart().length;
        return { indent, text: text.trimStart(), no: this.first + this.i };
      }
      this.i++;
    }
    return null;
  }

  block(indent) {
    const line = this.peek();
    if (!line || line.indent < indent) return null;
    if (line.text === "-" || line.text.startsWith("- ")) return this.seq(line.indent);
    return this.map(line.indent);
  }

  map(indent) {
    const out = {};
    for (let line = this.peek(); line && line.indent === indent; line = this.peek()) {
      if (line.text === "-" || line.text.startsWith("- ")) break;
      const kv = splitKey(line.text);
      if (!kv) throw new YamlError(line.no, `expected "key: value", got ${line.text}`);
      const key = String(plain(kv[0], line.no));
      if (key in out) throw new YamlError(line.no, `duplicate key ${key}`);
      this.i++;
      out[key] = this.value(kv[1], indent, line.no, true);
    }
    const next = this.peek();
    if (next && next.indent > indent) throw new YamlError(next.no, "bad indentation");
    return out;
  }

  value(rest, indent, no, inMap) {
    const t = rest.trim();
    if (/^[|>][-+]?$/.test(t)) return this.scalarBlock(t, indent);
    if (t) return plain(t, no);
    const next = this.peek();
    if (!next) return null;
    if (next.indent > indent) return this.block(next.indent);
    // Kubernetes style: a list under a key at the key's own indentation.
    if (inMap && next.indent === indent && (next.text === "-" || next.text.startsWith("- "))) {
      return this.seq(indent);
    }
    return null;
  }

  seq(indent) {
    const out = [];
    for (let line = this.peek(); line && line.indent === indent; line = this.peek()) {
      if (!(line.text === "-" || line.text.startsWith("- "))) break;
      const rest = line.text.slice(1);
      const body = rest.trimStart();
      if (body && !body.startsWith('"') && !body.startsWith("'") && splitKey(body)) {
        // "- key: v" starts a map indented at the key's column: reread this line as such.
        const col = indent + 1 + (rest.length - body.length);
        this.raw[this.i] = " ".repeat(col) + body;
        out.push(this.map(col));
      } else {
        this.i++;
        out.push(this.value(body, indent, line.no, false));
      }
    }
    return out;
  }

  scalarBlock(header, indent) {
    const lines = [];
    let blockIndent = -1;
    while (this.i < this.raw.length) {
      const raw = this.raw[this.i];
      if (raw.trim() === "") {
        lines.push("");
        this.i++;
        continue;
      }
      const ind = raw.length - raw.trimStart().length;
      if (ind <= indent) break;
      if (blockIndent < 0) blockIndent = ind;
      if (ind < blockIndent) break;
      lines.push(raw.slice(blockIndent));
      this.i++;
    }
    while (lines.length && lines[lines.length - 1] === "") lines.pop();
    let text = header[0] === "|" ? lines.join("\n") : lines.join(" ").replace(/ ?\n ?/g, "\n");
    if (!header.endsWith("-")) text += "\n";
    return text;
  }
}

// Every document of `text` (separated by ---), empty ones dropped.
export function parseAll(text) {
  const docs = [];
  const lines = text.replace(/\r\n/g, "\n").split("\n");
  let start = 0;
  const flush = (end) => {
    const reader = new Reader(lines.slice(start, end), start + 1);
    const first = reader.peek();
    if (first) {
      const doc = reader.block(first.indent);
      const extra = reader.peek();
      if (extra) throw new YamlError(extra.no, `unexpected ${extra.text}`);
      docs.push(doc);
    }
  };
  for (let i = 0; i < lines.length; i++) {
    if (/^---(\s|$)/.test(lines[i]) || /^\.\.\.\s*$/.test(lines[i])) {
      flush(i);
      start = i + 1;
    }
  }
  flush(lines.length);
  return docs;
}

const PLAIN_OK = /^[A-Za-z0-9_./][A-Za-z0-9_./:= -]*$/;

function scalarText(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v !== "string") return String(v);
  const looksOther = plain(v, 0) !== v;
  if (!looksOther && PLAIN_OK.test(v) && !v.endsWith(" ") && !v.includes(": ") && !v.endsWith(":")) return v;
  return JSON.stringify(v);
}

// YAML text of a JSON value (what `kubectl get -o yaml` prints, in key order).
export function dump(value, indent = "") {
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return value
      .map((v) => {
        if (v && typeof v === "object" && Object.keys(v).length) {
          const inner = dump(v, `${indent}  `);
          return `${indent}- ${inner.slice(indent.length + 2)}`;
        }
        return `${indent}- ${v && typeof v === "object" ? dump(v) : scalarText(v)}`;
      })
      .join("\n");
  }
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) return "{}";
    return keys
      .map((k) => {
        const v = value[k];
        const key = `${indent}${scalarText(k)}:`;
        if (v && typeof v === "object" && Object.keys(v).length) {
          return Array.isArray(v) ? `${key}\n${dump(v, indent)}` : `${key}\n${dump(v, `${indent}  `)}`;
        }
        return `${key} ${v && typeof v === "object" ? dump(v) : scalarText(v)}`;
      })
      .join("\n");
  }
  return scalarText(value);
}
