// DOM helpers. Text always goes in through textContent: nothing from the server becomes markup.

export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export function fmtTime(epoch) {
  if (epoch === null || epoch === undefined || Number.isNaN(epoch)) return "-";
  const d = new Date(epoch * 1000);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function fmtIso(iso) {
  return typeof iso === "string" ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "-";
}

export function ago(epoch) {
  const s = Math.max(0, Date.now() / 1000 - epoch);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const SEV = { 1: "low", 2: "medium", 3: "high", 4: "critical" };

export function sevBadge(sev) {
  const n = Number(sev) || 1;
  return h("span", { class: `sev sev-${n}`, title: `ECS event.severity ${n}` }, SEV[n] || String(n));
}

export function statusBadge(status) {
  return h("span", { class: `status status-${String(status).replace(/[^a-z_]/g, "")}` }, String(status));
}

export function get(doc, dotted) {
  let node = doc;
  for (const part of dotted.split(".")) {
    if (node === null || typeof node !== "object" || !(part in node)) return undefined;
    node = node[part];
  }
  return node;
}

export function first(v) {
  return Array.isArray(v) ? v[0] : v;
}

export function table(headers, rows, { id, empty = "nothing here yet" } = {}) {
  const body = h("tbody", {}, rows.length ? rows : [h("tr", { class: "empty" }, h("td", { colspan: headers.length }, empty))]);
  return h("table", { class: "grid", id }, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), body);
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...children);
}

export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v instanceof Node ? v : String(v ?? "-"))]));
}

export function link(href, text, attrs = {}) {
  return h("a", { href, ...attrs }, text);
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast toast-${kind}`, role: "status" }, message);
  box.append(el);
  setTimeout(() => el.remove(), 6000);
}

export function pre(obj) {
  return h("pre", { class: "json" }, JSON.stringify(obj, null, 2));
}
