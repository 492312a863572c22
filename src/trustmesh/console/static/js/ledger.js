// The ledger explorer: fetch an entry, verify it here (proof + signed checkpoint), walk its references.

import { call } from "./api.js";
import { card, clear, h, kv, link, pre, toast } from "./ui.js";
import { VerifyError, verifyEntry } from "./verify.js";

const PIN_KEY = "trustmesh.pinned-log-key";

// the reference chain an auditor walks: from an action back to the model that raised the alert
const NEXT = {
  action_result: ["decision"],
  decision: ["incident"],
  "operator.decision": ["incident"],
  incident: ["alert", "incident"],
  alert: ["model", "fl.model"],
  "fl.model": ["fl.round"],
};

function pinned() {
  return localStorage.getItem(PIN_KEY);
}

async function verifyServed(doc) {
  const pin = pinned();
  const report = await verifyEntry(doc, pin);
  if (!pin) {
    localStorage.setItem(PIN_KEY, doc.log_key.trim());
    report.pinnedNow = true;
  }
  return report;
}

function stepsList(report, failure) {
  const items = (report?.steps || []).map((s) => h("li", { class: "ok" }, h("b", {}, s.name), " ", s.detail));
  if (failure) items.push(h("li", { class: "bad" }, h("b", {}, failure.step || "error"), " ", failure.message));
  return h("ul", { class: "checks", id: "verify-steps" }, items);
}

function pathTable(report) {
  if (!report?.pathSteps?.length) return null;
  return h("details", {}, h("summary", {}, `audit path (${report.pathSteps.length} hashes)`),
    h("table", { class: "grid small" }, h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "sibling"), h("th", {}, "side"), h("th", {}, "node"))),
      h("tbody", {}, report.pathSteps.map((s, i) => h("tr", {}, h("td", {}, String(i)), h("td", { class: "mono" }, `${s.sibling.slice(0, 24)}…`),
        h("td", {}, s.side), h("td", { class: "mono" }, `${s.result.slice(0, 24)}…`))))));
}

function verdict(ok, text) {
  return h("div", { class: `verdict ${ok ? "verified" : "failed"}`, id: "verify-result", dataset: { status: ok ? "verified" : "failed" } },
    h("span", { class: "mark", "aria-hidden": "true" }, ok ? "✔" : "✘"), text);
}

export async function ledgerView(main, arg) {
  const summary = await call("/ledger/checkpoint");
  const indexInput = h("input", { id: "ledger-index", type: "number", min: "0", value: arg ?? String(Math.max(0, summary.size - 1)), "aria-label": "entry index" });
  const out = h("div", { id: "entry-slot" });
  const chainOut = h("div", { id: "chain-slot" });
  const searchOut = h("div", { id: "search-slot" });

  async function show(index) {
    clear(out, h("div", { class: "loading" }, `verifying entry ${index} ...`));
    clear(chainOut);
    let doc;
    try {
      doc = await call(`/ledger/entries/${index}`);
    } catch (err) {
      clear(out, h("div", { class: "error-box" }, err.message));
      return;
    }
    let report = null;
    let failure = null;
    try {
      report = await verifyServed(doc);
    } catch (err) {
      failure = err instanceof VerifyError ? err : new VerifyError("error", err.message);
      report = err.report || null;
    }
    const entry = doc.entry;
    const refs = entry ? entry.refs : [];
    clear(out,
      card(`Entry #${doc.index}`,
        failure ? verdict(false, `NOT verified: ${failure.message}`) : verdict(true, `verified in this browser against the signed checkpoint of size ${doc.size}`),
        report?.pinnedNow ? h("p", { class: "muted" }, "log key pinned on first use: ", h("code", {}, doc.log_key)) : null,
        stepsList(report, failure),
        kv([["kind", entry ? entry.kind : h("span", { class: "danger" }, doc.parse_error || "unparseable")],
          ["time", entry ? new Date(entry.time * 1000).toISOString() : "-"],
          ["leaf hash (computed)", report?.leafHash || "-"],
          ["root (computed)", report?.computedRoot || "-"],
          ["root (signed)", report?.checkpointRoot || "-"],
          ["refs", refs.length ? h("span", { id: "entry-refs" }, refs.slice(-40).map((r) => [link(`#/ledger/${r}`, `#${r}`, { class: "leaf" }), " "]), refs.length > 40 ? `(+${refs.length - 40} more)` : "") : "none"]]),
        pathTable(report),
        h("div", { class: "row" },
          h("button", { id: "chain-button", class: "primary", onclick: () => walk(doc.index) }, "Walk the chain ↓"),
          h("span", { class: "muted" }, "action → decision → incident → alert → model, each verified")),
        h("details", { open: true }, h("summary", {}, "payload"), entry ? pre(entry.payload) : h("code", {}, atob(doc.entry_b64).slice(0, 2000))),
        h("details", {}, h("summary", {}, "signed checkpoint"), h("pre", { class: "note" }, doc.checkpoint))));
  }

  async function walk(start) {
    const chain = [];
    let index = start;
    const seen = new Set();
    clear(chainOut, card("Reference chain", h("div", { class: "loading" }, "walking ...")));
    for (let hop = 0; hop < 12 && index !== null && !seen.has(index); hop++) {
      seen.add(index);
      const doc = await call(`/ledger/entries/${index}`);
      let ok = true;
      let why = "";
      try {
        await verifyServed(doc);
      } catch (err) {
        ok = false;
        why = err.message;
      }
      const kind = doc.entry ? doc.entry.kind : "?";
      chain.push({ index, kind, ok, why, doc });
      if (!ok || !doc.entry) break;
      const wanted = NEXT[kind];
      if (!wanted) break;
      // refs are sorted; look from the newest (the batch's own alerts, the decision) backwards
      let next = null;
      const candidates = [...doc.entry.refs].reverse().slice(0, 12);
      for (const want of wanted) {
        for (const r of candidates) {
          const peek = chain.find((c) => c.index === r)?.doc || (await call(`/ledger/entries/${r}`));
          if (peek.entry && peek.entry.kind === want) {
            next = r;
            break;
          }
        }
        if (next !== null) break;
      }
      index = next;
    }
    const allOk = chain.every((c) => c.ok);
    clear(chainOut, card("Reference chain",
      h("div", { class: `verdict ${allOk ? "verified" : "failed"}`, id: "chain-result", dataset: { status: allOk ? "verified" : "failed", kinds: chain.map((c) => c.kind).join(",") } },
        h("span", { class: "mark" }, allOk ? "✔" : "✘"), allOk ? `${chain.length} entries, each verified` : "a link in the chain does not verify"),
      h("ol", { class: "chain" }, chain.map((c) => h("li", { class: c.ok ? "ok" : "bad" },
        link(`#/ledger/${c.index}`, `#${c.index}`, { class: "leaf" }), " ", h("b", {}, c.kind), " ", describe(c.doc), c.ok ? "" : h("span", { class: "danger" }, ` — ${c.why}`))))));
  }

  function describe(doc) {
    const p = doc.entry?.payload || {};
    if (doc.entry?.kind === "alert") return `${p.source?.ip || p.source_ip || "?"} → ${p.destination?.ip || p.destination_ip || "?"} ${p.rule?.name || p.predicted_class || ""}`;
    if (doc.entry?.kind === "decision") return `${p.status} ${p.action || ""} by ${p.decided_by}: ${p.reason || ""}`;
    if (doc.entry?.kind === "action_result") return `${p.operation} ${p.action} ${p.status}`;
    if (doc.entry?.kind === "incident") return `${p.incident_id} v${p.version} ${p.technique_id || ""}`;
    if (doc.entry?.kind === "model") return `${p.model_id || ""} ${p.detector || p.kind || ""}`;
    if (doc.entry?.kind === "operator.decision") return `${p.operation} by ${p.operator} (${p.role})`;
    return "";
  }

  const kindSel = h("select", { id: "search-kind" }, ["", "alert", "incident", "decision", "action_result", "operator.decision", "model", "fl.round", "evaluation"].map((k) => h("option", { value: k }, k || "any kind")));
  const fieldIn = h("input", { id: "search-field", placeholder: "field=value, e.g. decided_by=operator" });
  async function search(ev) {
    ev.preventDefault();
    try {
      const doc = await call("/ledger/search", { params: { kind: kindSel.value || undefined, field: fieldIn.value ? [fieldIn.value] : [], limit: 50 } });
      clear(searchOut, card(`Search: ${doc.items.length} entries`, h("table", { class: "grid", id: "search-table" },
        h("thead", {}, h("tr", {}, ["leaf", "kind", "time", "summary"].map((x) => h("th", {}, x)))),
        h("tbody", {}, doc.items.map((e) => h("tr", {}, h("td", {}, link(`#/ledger/${e.leaf}`, `#${e.leaf}`, { class: "leaf" })), h("td", {}, e.kind),
          h("td", { class: "mono" }, new Date(e.time * 1000).toISOString()), h("td", {}, describe({ entry: e }))))))));
    } catch (err) {
      toast(err.message, "error");
    }
  }

  clear(main,
    h("div", { class: "view-head" }, h("h1", {}, "Ledger explorer"),
      h("span", { class: "muted" }, `${summary.origin} · signed size ${summary.size}`)),
    h("div", { class: "cols" },
      card("Verify an entry",
        h("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); location.hash = `#/ledger/${indexInput.value}`; } },
          indexInput, h("button", { id: "verify-button", type: "submit", class: "primary" }, "Fetch & verify")),
        h("p", { class: "muted small" }, "Leaf = SHA-256(0x00 ‖ entry) (RFC 9162), audit path to the root, root equal to a checkpoint whose Ed25519 signature (C2SP signed note) verifies under the pinned log key — all computed here with WebCrypto."),
        kv([["log key", h("code", { id: "log-key" }, summary.log_key)], ["pinned", pinned() ? (pinned() === summary.log_key.trim() ? "yes, matches" : h("span", { class: "danger" }, "DIFFERENT key pinned")) : "not yet (first verification pins it)"]]),
        h("button", { class: "ghost", onclick: () => { localStorage.removeItem(PIN_KEY); toast("pinned log key cleared"); } }, "Forget pinned key")),
      card("Search", h("form", { class: "filters", onsubmit: search }, kindSel, fieldIn, h("button", { type: "submit", id: "search-button" }, "Search")))),
    out, chainOut, searchOut);
  if (arg !== null) await show(Number(arg));
}
