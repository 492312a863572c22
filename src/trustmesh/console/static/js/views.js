// Views: alerts (live), incidents (+ timeline), hosts, approvals, actions, models, reports.

import { call } from "./api.js";
import { ago, card, clear, first, fmtIso, fmtTime, get, h, kv, link, pre, sevBadge, statusBadge, table, toast } from "./ui.js";

const POLL_MS = 2000;

function hostLink(ip) {
  return ip ? link(`#/hosts/${encodeURIComponent(ip)}`, ip, { class: "host" }) : "-";
}

function leafLink(index) {
  return index === null || index === undefined ? "-" : link(`#/ledger/${index}`, `#${index}`, { class: "leaf" });
}

function alertRow(doc, fresh) {
  const tm = doc.trustmesh || {};
  const tech = first(get(doc, "threat.technique.id"));
  const techName = first(get(doc, "threat.technique.name"));
  const src = get(doc, "source.ip");
  const dst = get(doc, "destination.ip");
  const port = get(doc, "destination.port");
  return h("tr", { class: fresh ? "fresh" : "", dataset: { leaf: tm.ledger_index } },
    h("td", { class: "mono" }, fmtIso(doc["@timestamp"])),
    h("td", {}, sevBadge(get(doc, "event.severity"))),
    h("td", {}, hostLink(src)),
    h("td", {}, hostLink(dst), port !== undefined ? h("span", { class: "muted" }, `:${port}`) : null),
    h("td", {}, get(doc, "network.transport") || "-"),
    h("td", {}, tm.predicted_class || get(doc, "rule.category") || "-"),
    h("td", { title: techName || "" }, tech ? h("span", { class: "technique" }, tech) : "-"),
    h("td", { class: "num" }, typeof tm.score === "number" ? tm.score.toFixed(3) : "-"),
    h("td", {}, leafLink(tm.ledger_index)));
}

const ALERT_HEADERS = ["@timestamp", "severity", "source", "destination", "proto", "class", "ATT&CK", "score", "ledger"];

export async function alertsView(main) {
  const filters = { host: "", min_severity: "1", technique: "" };
  const tbody = h("tbody", { id: "alerts-body" });
  const counter = h("span", { id: "alert-count", class: "pill" }, "0");
  const live = h("span", { id: "live-indicator", class: "live on" }, "live");
  let latest = -1;
  let shown = 0;
  let timer = null;
  let paused = false;

  const form = h("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); reload(); } },
    h("input", { name: "host", placeholder: "host (source or destination)", oninput: (e) => { filters.host = e.target.value.trim(); } }),
    h("select", { name: "min_severity", onchange: (e) => { filters.min_severity = e.target.value; reload(); } },
      h("option", { value: "1" }, "any severity"), h("option", { value: "2" }, "medium +"), h("option", { value: "3" }, "high +"), h("option", { value: "4" }, "critical")),
    h("input", { name: "technique", placeholder: "ATT&CK id (T1046)", oninput: (e) => { filters.technique = e.target.value.trim(); } }),
    h("button", { type: "submit" }, "Apply"),
    h("button", { type: "button", class: "ghost", onclick: (e) => { paused = !paused; live.classList.toggle("on", !paused); e.target.textContent = paused ? "Resume" : "Pause"; } }, "Pause"));

  async function poll(initial) {
    const doc = await call("/alerts", { params: { ...filters, limit: initial ? 200 : 500, after: initial ? undefined : latest } });
    if (initial) {
      clear(tbody, doc.items.map((d) => alertRow(d, false)));
      shown = doc.matched;
    } else if (doc.items.length) {
      tbody.prepend(...doc.items.map((d) => alertRow(d, true)));
      shown += doc.items.length;
      while (tbody.children.length > 500) tbody.lastChild.remove();
    }
    latest = Math.max(latest, doc.latest_leaf);
    counter.textContent = String(shown);
    if (!tbody.children.length) tbody.append(h("tr", { class: "empty" }, h("td", { colspan: ALERT_HEADERS.length }, "no alerts yet — waiting for the pipeline")));
    else tbody.querySelector("tr.empty")?.remove();
  }

  async function reload() {
    latest = -1;
    await poll(true);
  }

  const kpis = h("div", { class: "kpis", id: "alert-kpis" });
  async function drawKpis() {
    const s = await call("/summary");
    const sev = s.alerts_by_severity || {};
    clear(kpis,
      [["4", "critical"], ["3", "high"], ["2", "medium"], ["1", "low"]].map(([k, label]) =>
        h("div", { class: `kpi kpi-sev-${k}` }, h("b", {}, String(sev[k] || 0)), h("span", {}, label))),
      h("div", { class: "kpi kpi-wide" }, h("span", {}, "top techniques"),
        h("div", {}, (s.top_techniques || []).map(([t, n]) => h("span", { class: "technique" }, `${t} ×${n}`)))));
  }
  clear(main,
    h("div", { class: "view-head" }, h("h1", {}, "Alerts"), live, counter, h("span", { class: "muted" }, "ECS 8 documents straight from the ledger, newest first")),
    kpis,
    form,
    h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "alerts-table" },
      h("thead", {}, h("tr", {}, ALERT_HEADERS.map((x) => h("th", {}, x)))), tbody)));
  await Promise.all([poll(true), drawKpis()]);
  let ticks = 0;
  timer = setInterval(() => {
    if (paused) return;
    poll(false).catch(() => {});
    if (++ticks % 3 === 0) drawKpis().catch(() => {});
  }, POLL_MS);
  return () => clearInterval(timer);
}

function timeline(incidents) {
  // one bar per incident from first to last alert, coloured by severity
  const rows = incidents.slice(0, 40);
  if (!rows.length) return h("p", { class: "muted" }, "no incidents yet");
  const t0 = Math.min(...rows.map((i) => i.first_seen));
  const t1 = Math.max(...rows.map((i) => i.last_seen), t0 + 1);
  const W = 900;
  const rowH = 18;
  const left = 190;
  const svg = h("svg:svg", { viewBox: `0 0 ${W + left + 10} ${rows.length * rowH + 24}`, class: "timeline", role: "img", "aria-label": "incident timeline" });
  rows.forEach((inc, i) => {
    const x = left + ((inc.first_seen - t0) / (t1 - t0)) * W;
    const w = Math.max(3, ((inc.last_seen - inc.first_seen) / (t1 - t0)) * W);
    const y = i * rowH + 4;
    const a = h("svg:a", { href: `#/incidents/${inc.incident_id}` });
    a.append(h("svg:text", { x: 4, y: y + 12, class: "tl-label" }, `${(inc.source_ips || [])[0] || inc.incident_id.slice(0, 12)} ${inc.technique_id || ""}`));
    const rect = h("svg:rect", { x, y, width: w, height: rowH - 6, rx: 3, class: `tl-bar sev-fill-${inc.severity}` });
    rect.append(h("svg:title", {}, `${inc.incident_id} ${inc.technique_id || ""} ${inc.alert_count} alerts\n${fmtTime(inc.first_seen)} → ${fmtTime(inc.last_seen)}`));
    a.append(rect);
    svg.append(a);
  });
  svg.append(h("svg:text", { x: left, y: rows.length * rowH + 20, class: "tl-axis" }, fmtTime(t0)));
  svg.append(h("svg:text", { x: left + W, y: rows.length * rowH + 20, class: "tl-axis", "text-anchor": "end" }, fmtTime(t1)));
  return svg;
}

export async function incidentsView(main) {
  const doc = await call("/incidents", { params: { limit: 200 } });
  const rows = doc.items.map((i) => h("tr", { dataset: { incident: i.incident_id } },
    h("td", {}, link(`#/incidents/${i.incident_id}`, i.incident_id, { class: "mono" })),
    h("td", {}, sevBadge(i.severity)),
    h("td", {}, i.technique_id ? h("span", { class: "technique", title: i.technique_name || "" }, i.technique_id) : "-", " ", h("span", { class: "muted" }, i.technique_name || i.predicted_class || "")),
    h("td", {}, (i.source_ips || []).slice(0, 3).map((ip) => [hostLink(ip), " "])),
    h("td", {}, (i.destination_ips || []).slice(0, 3).map((ip) => [hostLink(ip), " "]), (i.destination_ips || []).length > 3 ? h("span", { class: "muted" }, `+${i.destination_ips.length - 3}`) : null),
    h("td", { class: "num" }, String(i.alert_count)),
    h("td", { class: "mono" }, fmtTime(i.last_seen)),
    h("td", {}, i.pending_approvals ? h("span", { class: "pill attention" }, `${i.pending_approvals} pending`) : "", i.active_actions ? h("span", { class: "pill" }, `${i.active_actions} active`) : ""),
    h("td", {}, leafLink(i.ledger_index))));
  clear(main,
    h("div", { class: "view-head" }, h("h1", {}, "Incidents"), h("span", { class: "pill" }, String(doc.matched))),
    card("Timeline", timeline(doc.items)),
    card(null, table(["incident", "severity", "technique", "sources", "destinations", "alerts", "last seen", "response", "ledger"], rows, { id: "incidents-table" })));
}

export async function incidentView(main, id) {
  const doc = await call(`/incidents/${encodeURIComponent(id)}`);
  const inc = doc.incident;
  const events = [
    { t: inc.first_seen, what: "first alert", detail: `${inc.alert_count} alerts in all` },
    ...doc.records.map((r) => ({ t: r.timestamp, what: `${r.record_type}: ${r.status}`, detail: r.reason || r.detail || "", leaf: r.ledger_index, by: r.decided_by })),
    ...doc.approvals.map((a) => ({ t: a.created, what: `approval ${a.status}`, detail: `${a.request.action} ${a.request.targets.join(", ")}` })),
    { t: inc.last_seen, what: "last alert", detail: "" },
  ].filter((e) => typeof e.t === "number").sort((a, b) => a.t - b.t);
  clear(main,
    h("div", { class: "view-head" }, h("h1", {}, "Incident ", h("span", { class: "mono" }, inc.incident_id)), sevBadge(inc.severity)),
    h("div", { class: "cols" },
      card("Summary", kv([
        ["technique", `${inc.technique_id || "-"} ${inc.technique_name || ""}`],
        ["class", inc.predicted_class || "-"],
        ["confidence", Number(inc.confidence).toFixed(3)],
        ["sources", h("span", {}, (inc.source_ips || []).map((ip) => [hostLink(ip), " "]))],
        ["destinations", `${(inc.destination_ips || []).slice(0, 8).join(", ")}${(inc.destination_ips || []).length > 8 ? " ..." : ""}`],
        ["alerts", String(inc.alert_count)],
        ["first / last", `${fmtTime(inc.first_seen)} → ${fmtTime(inc.last_seen)}`],
        ["ledger (latest version)", leafLink(inc.ledger_index)],
      ])),
      card("Response timeline", h("ol", { class: "events", id: "incident-events" }, events.map((e) => h("li", {},
        h("span", { class: "mono muted" }, fmtTime(e.t)), " ", h("b", {}, e.what), " ", e.detail, e.leaf !== undefined && e.leaf !== null ? [" ", leafLink(e.leaf)] : null))))),
    card("Actions", table(["action", "kind", "status", "targets", "applied", "expires"], doc.actions.map((a) => h("tr", {},
      h("td", { class: "mono" }, a.action_id), h("td", {}, a.kind), h("td", {}, statusBadge(a.status)), h("td", {}, a.targets.join(", ")),
      h("td", { class: "mono" }, fmtTime(a.applied_at)), h("td", { class: "mono" }, a.expires_at ? fmtTime(a.expires_at) : "-"))))));
}

export async function hostsView(main) {
  const doc = await call("/hosts", { params: { limit: 100 } });
  const max = Math.max(1, ...doc.items.map((x) => x.alerts));
  const rows = doc.items.map((x) => {
    const bar = h("span", { class: "bar" });
    bar.style.width = `${(100 * x.alerts) / max}%`;
    return h("tr", {}, h("td", {}, hostLink(x.host)), h("td", { class: "num" }, String(x.alerts)), h("td", { class: "num" }, String(x.as_source)),
      h("td", { class: "num" }, String(x.as_destination)), h("td", { class: "barcell" }, bar));
  });
  clear(main, h("div", { class: "view-head" }, h("h1", {}, "Hosts")),
    card(null, table(["host", "alerts", "as source", "as destination", ""], rows, { id: "hosts-table" })));
}

export async function hostView(main, ip) {
  const doc = await call(`/hosts/${encodeURIComponent(ip)}`);
  clear(main,
    h("div", { class: "view-head" }, h("h1", {}, "Host ", h("span", { class: "mono", id: "host-title" }, doc.host))),
    h("div", { class: "cols" },
      card("Activity", kv([["alerts", String(doc.alerts)], ["as source", String(doc.as_source)],
        ["first seen", fmtTime(doc.first_seen)], ["last seen", fmtTime(doc.last_seen)],
        ["techniques", Object.entries(doc.techniques).map(([k, v]) => `${k} ×${v}`).join(", ") || "-"]])),
      card("Talks to", table(["peer", "alerts"], doc.peers.map((p) => h("tr", {}, h("td", {}, hostLink(p.host)), h("td", { class: "num" }, String(p.alerts))))))),
    card("Incidents", table(["incident", "severity", "technique", "alerts", "ledger"], doc.incidents.map((i) => h("tr", {},
      h("td", {}, link(`#/incidents/${i.incident_id}`, i.incident_id, { class: "mono" })), h("td", {}, sevBadge(i.severity)),
      h("td", {}, i.technique_id || "-"), h("td", { class: "num" }, String(i.alert_count)), h("td", {}, leafLink(i.ledger_index)))))),
    card("Actions aimed at it", table(["action", "kind", "status", "applied"], doc.actions.map((a) => h("tr", {},
      h("td", { class: "mono" }, a.action_id), h("td", {}, a.kind), h("td", {}, statusBadge(a.status)), h("td", { class: "mono" }, fmtTime(a.applied_at)))))),
    card("Recent alerts", h("div", { class: "table-wrap" }, table(ALERT_HEADERS, doc.recent_alerts.map((d) => alertRow(d, false))))));
}

function decisionResult(out) {
  const leaves = out.records.map((r) => r.leaf);
  return h("div", { class: "receipt", id: "decision-receipt" },
    h("b", {}, "recorded on the ledger: "), "operator entry ", leafLink(out.operator_entry),
    ", records ", leaves.map((l) => [leafLink(l), " "]), h("span", { class: "muted" }, ` (checkpoint ${out.tree_size} signed)`));
}

export async function approvalsView(main, who) {
  const canDecide = who.role !== "viewer";
  const receipt = h("div", { id: "receipt-slot" });
  async function decide(id, verb, note) {
    try {
      const out = await call(`/approvals/${encodeURIComponent(id)}/${verb}`, { method: "POST", body: { note: note || null } });
      toast(`${verb}d ${id}; on the ledger at #${out.operator_entry}`, "ok");
      window.dispatchEvent(new Event("trustmesh:changed"));
      await draw();
      clear(receipt, decisionResult(out));
    } catch (err) {
      toast(`${verb} failed: ${err.message}`, "error");
    }
  }
  async function draw() {
    const [pending, history] = await Promise.all([call("/approvals"), call("/approvals", { params: { status: "all" } })]);
    const rows = pending.items.map((a) => {
      const note = h("input", { class: "note", placeholder: "note (recorded)", "aria-label": "note" });
      return h("tr", { dataset: { approval: a.approval_id } },
        h("td", { class: "mono" }, a.approval_id),
        h("td", {}, link(`#/incidents/${a.incident_id}`, a.incident_id, { class: "mono" })),
        h("td", {}, sevBadge(a.incident.severity)),
        h("td", {}, a.incident.technique_id || "-", " ", h("span", { class: "muted" }, a.incident.technique_name || "")),
        h("td", {}, h("b", {}, a.request.action), " ", a.request.targets.map((t) => [hostLink(t), " "])),
        h("td", {}, a.enforce ? h("span", { class: "pill danger" }, "enforcing") : h("span", { class: "pill" }, "dry-run")),
        h("td", { class: "mono" }, ago(a.created)),
        h("td", { class: "actions" }, canDecide ? h("div", { class: "btns" }, note,
          h("button", { class: "primary approve-btn", dataset: { approval: a.approval_id }, onclick: () => decide(a.approval_id, "approve", note.value) }, "Approve"),
          h("button", { class: "danger reject-btn", dataset: { approval: a.approval_id }, onclick: () => decide(a.approval_id, "reject", note.value) }, "Reject"))
          : h("span", { class: "muted" }, "viewer: read only")));
    });
    const done = history.items.filter((a) => a.status !== "pending").reverse().map((a) => h("tr", {},
      h("td", { class: "mono" }, a.approval_id), h("td", {}, statusBadge(a.status)), h("td", {}, a.request.action),
      h("td", {}, a.request.targets.join(", ")), h("td", { class: "mono" }, a.decided_at ? fmtTime(a.decided_at) : "-"), h("td", {}, a.note || "")));
    clear(main,
      h("div", { class: "view-head" }, h("h1", {}, "Approval queue"), h("span", { class: "pill attention" }, `${pending.items.length} pending`),
        h("span", { class: "muted" }, "every decision goes on the ledger at once, with your name")),
      receipt,
      card("Pending", table(["approval", "incident", "severity", "technique", "action", "mode", "queued", ""], rows, { id: "approvals-table", empty: "nothing waiting" })),
      card("Decided", table(["approval", "status", "action", "targets", "decided", "note"], done, { id: "approvals-history" })));
  }
  await draw();
  const timer = setInterval(() => { if (!document.activeElement?.classList.contains("note")) draw().catch(() => {}); }, 5000);
  return () => clearInterval(timer);
}

export async function actionsView(main, who) {
  async function draw() {
    const doc = await call("/actions");
    const rows = doc.items.map((a) => h("tr", { dataset: { action: a.action_id } },
      h("td", { class: "mono" }, a.action_id), h("td", {}, link(`#/incidents/${a.incident_id}`, a.incident_id, { class: "mono" })),
      h("td", {}, a.kind), h("td", {}, statusBadge(a.status)), h("td", {}, a.targets.map((t) => [hostLink(t), " "])),
      h("td", {}, a.enforce ? "enforced" : "dry-run"), h("td", { class: "mono" }, fmtTime(a.applied_at)),
      h("td", {}, leafLink(a.decision_ledger_index)),
      h("td", {}, who.role !== "viewer" && ["applied", "dry_run"].includes(a.status)
        ? h("button", { class: "ghost rollback-btn", onclick: async () => {
          try {
            const out = await call(`/actions/${encodeURIComponent(a.action_id)}/rollback`, { method: "POST", body: { note: null } });
            toast(`rolled back ${a.action_id}; ledger #${out.operator_entry}`, "ok");
            await draw();
          } catch (err) { toast(`rollback failed: ${err.message}`, "error"); }
        } }, "Roll back") : "")));
    clear(main, h("div", { class: "view-head" }, h("h1", {}, "Actions")),
      card(null, table(["action", "incident", "kind", "status", "targets", "mode", "applied", "decision", ""], rows, { id: "actions-table" })));
  }
  await draw();
}

export async function modelsView(main) {
  const [models, rounds] = await Promise.all([call("/models"), call("/fl/rounds")]);
  const cards = models.items.map((m) => card(null,
    h("div", { class: "model-head" }, h("h3", { class: "mono" }, String(m.model_id || "model")), h("span", { class: "pill" }, m.kind), leafLink(m.leaf)),
    kv([["recorded", fmtTime(m.time)], ["detector", m.payload.detector || m.payload.kind || m.payload.name || "-"],
      ["threshold", m.payload.threshold ?? "-"], ["alerts attributed", String(m.alerts)],
      ["training data", m.payload.dataset || m.payload.data_sha256 || m.payload.training_data || "-"],
      ["lineage refs", m.refs.length ? h("span", {}, m.refs.slice(0, 20).map((r) => [leafLink(r), " "])) : "-"]]),
    Object.keys(m.lineage).length ? h("details", {}, h("summary", {}, "lineage"), pre(m.lineage)) : null,
    h("details", {}, h("summary", {}, "manifest"), pre(m.payload))));
  const rrows = rounds.items.map((r) => h("tr", {}, h("td", {}, leafLink(r.leaf)), h("td", { class: "num" }, String(r.payload.round ?? "-")),
    h("td", {}, (r.payload.sites || []).length ? String(r.payload.sites.length) : "-"), h("td", {}, r.payload.strategy || "-"),
    h("td", { class: "num" }, r.payload.epsilon !== undefined ? String(r.payload.epsilon) : "-"), h("td", { class: "mono" }, fmtTime(r.time))));
  clear(main, h("div", { class: "view-head" }, h("h1", {}, "Model registry"), h("span", { class: "pill" }, String(models.items.length))),
    h("div", { class: "model-grid", id: "models-list" }, cards.length ? cards : h("p", { class: "muted" }, "no models on the ledger")),
    card("Federated rounds", table(["ledger", "round", "sites", "strategy", "epsilon", "recorded"], rrows, { empty: "no federated rounds on this ledger" })));
}

export async function reportsView(main) {
  const doc = await call("/evaluations");
  const rows = doc.items.map((e) => h("tr", {}, h("td", {}, leafLink(e.leaf)), h("td", {}, e.payload.profile || "-"),
    h("td", { class: "mono" }, String(e.payload.report_sha256 || "").slice(0, 16)),
    h("td", {}, Object.entries(e.payload.statuses || {}).map(([k, v]) => h("span", { class: `pill status-${v}` }, `${k}: ${v}`))),
    h("td", { class: "mono" }, fmtTime(e.time))));
  const heads = doc.items.slice(0, 1).map((e) => card("Headline figures of the newest report", kv(Object.entries(e.payload.headline || {}).slice(0, 30).map(([k, v]) => [k, typeof v === "number" ? String(Math.round(v * 1000) / 1000) : String(v)]))));
  clear(main, h("div", { class: "view-head" }, h("h1", {}, "Blueprint reports")),
    card(null, table(["ledger", "profile", "report sha256", "sections", "recorded"], rows, { empty: "no evaluation on this ledger (trustmesh evaluate blueprint --ledger DIR)" })),
    ...heads,
    doc.report_folders.length ? card("Report folders", h("ul", {}, doc.report_folders.map((r) => h("li", { class: "mono" }, r.path)))) : null);
}
