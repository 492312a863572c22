// The console shell: sign-in, navigation, the status bar, and a hash router over the views.

import { ApiError, call, setToken, token } from "./api.js";
import { ledgerView } from "./ledger.js";
import { clear, h, toast } from "./ui.js";
import {
  actionsView,
  alertsView,
  approvalsView,
  hostView,
  hostsView,
  incidentView,
  incidentsView,
  modelsView,
  reportsView,
} from "./views.js";

const NAV = [
  ["alerts", "Alerts", "Live alert stream"],
  ["incidents", "Incidents", "Correlated incidents and their timeline"],
  ["hosts", "Hosts", "Addresses by alert volume"],
  ["approvals", "Approvals", "Steps waiting for an operator"],
  ["actions", "Actions", "Applied, dry-run and rolled-back actions"],
  ["ledger", "Ledger", "Entries, proofs verified in this browser"],
  ["models", "Models", "Model registry, lineage, federated rounds"],
  ["reports", "Reports", "Security-evaluation blueprint reports"],
];

const state = { who: null, stop: null, summaryTimer: null };

function route() {
  const parts = (location.hash.replace(/^#\/?/, "") || "alerts").split("/").map(decodeURIComponent);
  return { name: parts[0], arg: parts.slice(1).join("/") || null };
}

async function render() {
  if (!state.who) return;
  if (state.stop) {
    state.stop();
    state.stop = null;
  }
  const { name, arg } = route();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === name);
  const main = document.getElementById("main");
  clear(main, h("div", { class: "loading" }, "loading..."));
  const views = {
    alerts: () => alertsView(main),
    incidents: () => (arg ? incidentView(main, arg) : incidentsView(main)),
    hosts: () => (arg ? hostView(main, arg) : hostsView(main)),
    approvals: () => approvalsView(main, state.who),
    actions: () => actionsView(main, state.who),
    ledger: () => ledgerView(main, arg),
    models: () => modelsView(main),
    reports: () => reportsView(main),
  };
  try {
    state.stop = (await (views[name] || views.alerts)()) || null;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return signOut("your token is no longer accepted");
    clear(main, h("div", { class: "error-box" }, `could not load this view: ${err.message}`));
  }
}

async function refreshSummary() {
  try {
    const s = await call("/summary");
    const bar = document.getElementById("statusbar");
    clear(bar,
      h("span", { class: "origin", title: "log origin" }, s.origin),
      h("span", {}, h("b", { id: "sum-entries" }, String(s.ledger_entries)), " entries"),
      h("span", {}, "checkpoint ", h("b", {}, String(s.checkpoint_size))),
      h("span", {}, h("b", {}, String(s.alerts)), " alerts"),
      h("span", {}, h("b", {}, String(s.incidents)), " incidents"),
      h("span", { class: s.pending_approvals ? "attention" : "" }, h("b", { id: "sum-pending" }, String(s.pending_approvals)), " pending"),
      s.damaged_entries ? h("span", { class: "danger" }, `${s.damaged_entries} damaged entries`) : null,
    );
    const badge = document.querySelector('#nav a[data-view="approvals"] .count');
    if (badge) badge.textContent = s.pending_approvals ? String(s.pending_approvals) : "";
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut("your token is no longer accepted");
  }
}

function shell() {
  const who = state.who;
  clear(document.getElementById("app"),
    h("header", { class: "topbar" },
      h("div", { class: "brand" }, h("span", { class: "logo", "aria-hidden": "true" }), "trustmesh", h("small", {}, "operator console")),
      h("div", { id: "statusbar", class: "statusbar" }),
      h("div", { class: "user" },
        h("span", { id: "whoami", class: `role role-${who.role}` }, `${who.name} · ${who.role}`),
        h("button", { id: "signout-button", class: "ghost", onclick: () => signOut() }, "Sign out"))),
    h("nav", { id: "nav" }, NAV.map(([view, label, title]) =>
      h("a", { href: `#/${view}`, title, dataset: { view } }, h("span", { class: `ico ico-${view}`, "aria-hidden": "true" }), label,
        view === "approvals" ? h("span", { class: "count" }) : null))),
    h("main", { id: "main" }));
  refreshSummary();
  state.summaryTimer = setInterval(refreshSummary, 3000);
}

function signInScreen(message) {
  const input = h("input", { id: "token-input", type: "password", autocomplete: "off", spellcheck: "false", placeholder: "tm_...", "aria-label": "API token" });
  const note = h("p", { id: "signin-error", class: "error" }, message || "");
  const form = h("form", { class: "signin", onsubmit: async (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
    try {
      await start();
    } catch (err) {
      setToken(null);
      note.textContent = err instanceof ApiError && err.status === 401 ? "token not accepted" : `cannot sign in: ${err.message}`;
    }
  } },
    h("div", { class: "brand big" }, h("span", { class: "logo", "aria-hidden": "true" }), "trustmesh"),
    h("p", { class: "muted" }, "Operator console. Sign in with a token from ", h("code", {}, "trustmesh token create"), "."),
    input,
    h("button", { id: "signin-button", type: "submit", class: "primary" }, "Sign in"),
    note);
  clear(document.getElementById("app"), h("div", { class: "signin-wrap" }, form));
  input.focus();
}

function signOut(message) {
  setToken(null);
  state.who = null;
  if (state.stop) state.stop();
  clearInterval(state.summaryTimer);
  signInScreen(message);
}

async function start() {
  state.who = await call("/whoami");
  shell();
  await render();
}

window.addEventListener("hashchange", render);
window.addEventListener("trustmesh:changed", refreshSummary);
window.addEventListener("unhandledrejection", (ev) => toast(String(ev.reason?.message || ev.reason), "error"));

// `trustmesh demo --serve` prints a URL with the one-time token in the fragment (never sent to the server)
const fromUrl = /^#token=(tm_[A-Za-z0-9_-]+)$/.exec(location.hash);
if (fromUrl) {
  setToken(fromUrl[1]);
  history.replaceState(null, "", location.pathname + "#/alerts");
}

if (token()) start().catch(() => signInScreen("please sign in again"));
else signInScreen();
