"""The responder: incident -> playbook (or LLM-chosen steps) -> guarded actions -> records.

``Responder.handle`` is driven by calls (one per new or updated incident) and returns every record it
produced: the LLM proposal (if any), one ``Decision`` per step (taken, skipped, denied, pending
approval, failed, with the reason) and one ``ActionResult`` per action run. Each record names the
incident (and, for decisions, the alert ids) it was based on, and is also kept in the state database
outbox so records made by other processes (``trustmesh incidents approve``) reach the ledger too.

Handling is idempotent: a step runs once per incident and target, so a growing incident only adds
actions for new attackers. Steps marked ``approval: true`` are queued instead of run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trustmesh.errors import InputError
from trustmesh.records import ActionResult, Decision, Incident, IncidentId, TriageProposal
from trustmesh.respond._actions import Action, ActionRequest, Outcome, action_from_spec
from trustmesh.respond._guards import Guarded, Guards, allowlisted
from trustmesh.respond._llm import LLMTriage
from trustmesh.respond._playbook import Playbook, PlaybookSet
from trustmesh.respond._queue import ApprovalQueue, StoredAction

__all__ = ["Responder", "ResponseRecord", "approve", "expire", "reject", "rollback", "targets_for"]

log = logging.getLogger(__name__)

ResponseRecord = Decision | ActionResult | TriageProposal


def _id(prefix: str, *parts: object) -> str:
    return f"{prefix}-" + hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:16]


def targets_for(step_type: str, params: Mapping[str, Any], incident: Incident) -> tuple[str, ...]:
    """Resolve a step's ``target`` parameter to addresses (or ``SRC>DST/PROTO:PORT`` flows)."""
    if step_type not in {"nftables", "quarantine"}:
        return ()
    target = params.get("target", "source")
    if target == "flow":
        return tuple(f"{s}>{d}/{p}:{port}" for s, d, p, port in incident.flows if p in {"tcp", "udp", "sctp"})
    return incident.destination_ips if target == "destination" else incident.source_ips


def _execute(queue: ApprovalQueue, action: Action, request: ActionRequest, guards: Guards, *, enforce: bool,
             decided_by: str, reason: str, clock: Callable[[], float], proposal_id: str | None = None,
             approval_id: str | None = None, decision_id: str | None = None) -> list[ResponseRecord]:
    inc = request.incident
    now = clock()
    decision_id = decision_id or _id("dec", inc.incident_id, request.action_id, now)
    guarded = Guarded(action, guards, queue, clock)
    try:
        out = guarded.apply(request, enforce=enforce)
    except Exception as exc:  # noqa: BLE001 - a plug-in's bug must not crash the caller; it is recorded
        log.exception("action %s raised", request.action)
        out = Outcome("failed", f"{request.action} raised {type(exc).__name__}: {exc}", request.targets)
    common: dict[str, Any] = dict(incident_id=inc.incident_id, incident_version=inc.version,
                                  decided_by=decided_by,
                                  timestamp=now, alert_ids=inc.alert_ids, playbook=request.playbook,
                                  step=request.step, action=request.action, ttl_s=request.ttl_s,
                                  enforce=enforce,
                                  proposal_id=proposal_id, approval_id=approval_id)
    if out.status == "denied":
        return [Decision(decision_id=decision_id, status="denied", reason=f"guard: {out.detail}",
                         targets=request.targets, **common)]
    decision = Decision(decision_id=decision_id, status="taken", reason=reason, targets=out.targets, **common)
    expires = now + request.ttl_s if request.ttl_s and out.status in {"applied", "dry_run"} else None
    result = ActionResult(
        result_id=_id("res", decision_id, "apply"), decision_id=decision_id, incident_id=inc.incident_id,
        action=request.action, operation="apply", status=out.status if out.status != "denied" else "failed",
        detail=out.detail, timestamp=clock(), targets=out.targets, commands=out.commands, enforce=enforce,
        expires_at=expires if action.blocks else None,
    )
    if out.status in {"applied", "dry_run"}:
        queue.record_action(StoredAction(
            action_id=request.action_id, incident_id=inc.incident_id, decision_id=decision_id,
            kind=action.kind,
            blocks=action.blocks, status=out.status, spec=action.spec(), state=out.state, targets=out.targets,
            enforce=enforce, applied_at=now, expires_at=expires if action.blocks else None,
        ))
    return [decision, result]


class Responder:
    """Turn incidents into guarded actions, decided by playbooks (and optionally an LLM).

    Parameters
    ----------
    playbooks:
        The ordered playbooks; the first whose match holds decides.
    actions:
        The configured action for each step type (``{"nftables": NftablesAction(...), ...}``).
    guards:
        Guard settings applied to every action.
    state_dir:
        Where the approval queue and response state live (SQLite).
    enforce:
        False (default) = dry-run: decide and record, touch nothing.
    llm:
        Optional LLM triage; its proposal is used only when accepted.
    clock:
        Time source (seconds since the epoch); a parameter so tests control TTLs.
    """

    def __init__(self, playbooks: PlaybookSet | Sequence[Playbook], actions: Mapping[str, Action],
                 guards: Guards | None = None, state_dir: Path | str = "trustmesh-state", *,
                 enforce: bool = False,
                 llm: LLMTriage | None = None, clock: Callable[[], float] = time.time) -> None:
        self.playbooks = playbooks if isinstance(playbooks, PlaybookSet) else PlaybookSet(playbooks)
        for kind, action in actions.items():
            if getattr(action, "kind", None) != kind:
                got = getattr(action, "kind", type(action).__name__)
                raise ValueError(f"actions[{kind!r}] is a {got!r} action")
        self.actions = dict(actions)
        self.guards = guards or Guards()
        self.queue = ApprovalQueue(state_dir)
        self.enforce, self.llm, self.clock = enforce, llm, clock

    def _decision(self, inc: Incident, status: str, reason: str, key: str, **kw: Any) -> Decision:
        return Decision(decision_id=_id("dec", inc.incident_id, key, inc.version),
                        incident_id=inc.incident_id,
                        incident_version=inc.version, status=status, reason=reason,
                        decided_by=kw.pop("decided_by", "playbook"), timestamp=self.clock(),
                        alert_ids=inc.alert_ids, enforce=self.enforce, **kw)

    def _choose(self, inc: Incident, matching: list[Playbook]) -> tuple[list[tuple[Playbook, int]], str,
                                                                      str | None, list[ResponseRecord]]:
        """Return the steps to run, who chose them, the proposal id and any new records."""
        default = [(matching[0], i) for i in range(len(matching[0].actions))]
        if self.llm is None:
            return default, "playbook", None, []
        key = "__llm__|" + ",".join(pb.name for pb in matching)
        prior = self.queue.handled(inc.incident_id, key)
        if prior:  # asked before for this set of playbooks: keep that answer
            pid = next((p[9:] for p in prior if p.startswith("proposal:")), None)
            if "accepted" in prior:
                chosen = {p[5:] for p in prior if p.startswith("step:")}
                steps = [(pb, i) for pb in matching for i in range(len(pb.actions))
                         if pb.step_id(i) in chosen]
                return steps, "llm", pid, []
            return default, "playbook", pid, []
        allowed: list[dict[str, Any]] = [{"id": pb.step_id(i), "playbook": pb.name, "type": st.type,
                    "params": st.params.model_dump(),
                    "ttl_s": st.ttl_s, "needs_approval": st.approval}
                   for pb in matching for i, st in enumerate(pb.actions)]
        try:
            proposal = self.llm.triage(inc, allowed)
        except Exception as exc:  # noqa: BLE001 - triage is optional; any failure falls back to the playbook
            log.exception("LLM triage raised")
            proposal = TriageProposal(proposal_id=_id("tri", inc.incident_id, inc.version, "error"),
                                      incident_id=inc.incident_id, incident_version=inc.version,
                                      model=getattr(self.llm, "model", "?"), status="rejected",
                                      reason=f"triage raised {type(exc).__name__}: {exc}",
                                      allowed_actions=tuple(a["id"] for a in allowed), timestamp=self.clock())
        marks = [f"proposal:{proposal.proposal_id}", proposal.status]
        records: list[ResponseRecord] = [proposal]
        if proposal.status == "accepted":
            marks += [f"step:{s}" for s in proposal.proposed_actions]
            chosen = set(proposal.proposed_actions)
            steps = [(pb, i) for pb in matching for i in range(len(pb.actions)) if pb.step_id(i) in chosen]
            for pb, i in default:
                if pb.step_id(i) not in chosen:
                    records.append(self._decision(inc, "skipped", f"not selected by LLM triage "
                                                  f"({proposal.proposal_id}): {proposal.rationale[:200]}",
                                                  f"skip|{pb.step_id(i)}", decided_by="llm", playbook=pb.name,
                                                  step=i, action=pb.actions[i].type,
                                                  proposal_id=proposal.proposal_id))
            self.queue.mark_handled(inc.incident_id, key, marks)
            return steps, "llm", proposal.proposal_id, records
        self.queue.mark_handled(inc.incident_id, key, marks)
        return default, "playbook", proposal.proposal_id, records

    def handle(self, incident: Incident) -> list[ResponseRecord]:
        """Decide and (dry-)run the response to a new or updated incident; return the records made."""
        inc = incident
        self.queue.save_incident(inc)
        matching = self.playbooks.matching(inc)
        records: list[ResponseRecord] = []
        if not matching:
            if not self.queue.handled(inc.incident_id, "__nomatch__"):
                self.queue.mark_handled(inc.incident_id, "__nomatch__", [])
                records.append(self._decision(inc, "skipped", "no playbook matches the incident", "nomatch"))
            return self._persist(records)
        steps, decided_by, proposal_id, triage_records = self._choose(inc, matching)
        records += triage_records
        for pb, i in steps:
            step = pb.actions[i]
            step_key = pb.step_id(i)
            params = step.params.model_dump()
            targets = targets_for(step.type, params, inc)
            done = self.queue.handled(inc.incident_id, step_key)
            new = [t for t in targets if t not in done]
            if (targets and not new) or (not targets and done):
                continue  # already decided for every target
            if step.type in {"nftables", "quarantine"} and not targets:
                if "" not in done:
                    self.queue.mark_handled(inc.incident_id, step_key, [])
                    records.append(self._decision(inc, "skipped",
                                                  f"no {params.get('target')} address to act on",
                                                  f"notarget|{step_key}", playbook=pb.name, step=i,
                                                  action=step.type, decided_by=decided_by,
                                                  proposal_id=proposal_id))
                continue
            # a guard denial is retried when the incident changes (confidence, severity) or a minute
            # later (rate limit), but is recorded at most once per such state
            denied_mark = f"denied|{inc.confidence:.3f}|{inc.severity}|{int(self.clock() // 60)}"
            if targets and denied_mark in done:
                continue
            self.queue.mark_handled(inc.incident_id, step_key, new)
            action_id = _id("act", inc.incident_id, step_key, ",".join(sorted(new)))
            request = ActionRequest(action_id=action_id, incident=inc, action=step.type, targets=tuple(new),
                                    params=params, ttl_s=step.ttl_s, playbook=pb.name, step=i)
            action = self.actions.get(step.type)
            if action is None:
                records.append(self._decision(inc, "failed", f"no {step.type!r} action is configured",
                                              f"noaction|{action_id}", playbook=pb.name, step=i,
                                              action=step.type, targets=tuple(new), decided_by=decided_by,
                                              proposal_id=proposal_id))
                continue
            reason = f"playbook {pb.name} step {i}" + (" chosen by LLM triage" if decided_by == "llm" else "")
            if step.approval and action.blocks:  # an allowlisted asset is never queued (the guards deny it)
                nets = self.guards.networks()
                barred = tuple(t for t in new if allowlisted(t, nets) is not None)
                if barred:
                    records.append(self._decision(inc, "denied", f"{reason}: allowlisted, not queued for "
                                                  f"approval: {', '.join(barred[:5])}", f"allowlisted|{action_id}",
                                                  playbook=pb.name, step=i, action=step.type, targets=barred,
                                                  decided_by=decided_by, proposal_id=proposal_id))
                    new = [t for t in new if t not in barred]
                    if not new:
                        continue
                    request = dataclasses.replace(request, targets=tuple(new))
            if step.approval:
                approval_id = _id("apr", action_id)
                decision = self._decision(inc, "pending_approval", f"{reason} needs human approval",
                                          f"approval|{action_id}", playbook=pb.name, step=i, action=step.type,
                                          targets=tuple(new), ttl_s=step.ttl_s, decided_by=decided_by,
                                          proposal_id=proposal_id, approval_id=approval_id)
                self.queue.enqueue(approval_id, inc.incident_id, _request_doc(request), action.spec(),
                                   self.guards.to_dict(), self.enforce, decision.decision_id)
                records.append(decision)
                continue
            made = _execute(self.queue, action, request, self.guards, enforce=self.enforce,
                            decided_by=decided_by, reason=reason, clock=self.clock, proposal_id=proposal_id)
            if targets and made and made[0].to_dict()["status"] == "denied":
                self.queue.unmark_handled(inc.incident_id, step_key, new)
                self.queue.mark_handled(inc.incident_id, step_key, [denied_mark])
            records += made
        return self._persist(records)

    def _persist(self, records: list[ResponseRecord]) -> list[ResponseRecord]:
        if records:
            self.queue.add_records(records)
        return records

    def approve(self, approval_id: str, note: str | None = None) -> list[ResponseRecord]:
        """Approve a queued step and run it with the configured action (guards still apply)."""
        return approve(self.queue, approval_id, note, actions=self.actions, clock=self.clock)

    def reject(self, approval_id: str, note: str | None = None) -> list[ResponseRecord]:
        """Reject a queued step."""
        return reject(self.queue, approval_id, note, clock=self.clock)

    def rollback(self, incident_id: str, action_id: str | None = None) -> list[ResponseRecord]:
        """Undo an incident's applied actions (or one of them)."""
        return rollback(self.queue, incident_id, action_id, actions=self.actions, clock=self.clock)

    def expire(self, now: float | None = None) -> list[ResponseRecord]:
        """Close actions whose TTL ended (the kernel drops nft elements; quarantine publishes release)."""
        return expire(self.queue, now, actions=self.actions, clock=self.clock)


def _request_doc(request: ActionRequest) -> dict[str, Any]:
    return {"action_id": request.action_id, "incident": request.incident.to_dict(), "action": request.action,
            "targets": list(request.targets), "params": request.params, "ttl_s": request.ttl_s,
            "playbook": request.playbook, "step": request.step}


def _request_from_doc(doc: dict[str, Any]) -> ActionRequest:
    try:
        return ActionRequest(action_id=str(doc["action_id"]), incident=Incident.from_dict(doc["incident"]),
                             action=str(doc["action"]), targets=tuple(doc["targets"]),
                             params=dict(doc["params"]),
                             ttl_s=doc["ttl_s"], playbook=doc["playbook"], step=doc["step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"stored approval request is invalid: {exc}") from None


def _action_for(spec: dict[str, Any], actions: Mapping[str, Action] | None) -> Action:
    # prefer the live action (it may hold secrets such as webhook headers that are never stored)
    live = (actions or {}).get(str(spec.get("kind")))
    if live is not None and live.spec() == spec:
        return live
    return action_from_spec(spec)


def _queue(state: ApprovalQueue | Path | str) -> ApprovalQueue:
    return state if isinstance(state, ApprovalQueue) else ApprovalQueue(state)


def approve(state: ApprovalQueue | Path | str, approval_id: str, note: str | None = None, *,
            actions: Mapping[str, Action] | None = None,
            clock: Callable[[], float] = time.time, operator: str | None = None) -> list[ResponseRecord]:
    """Approve a queued step (in any process) and run it; return the records made.

    ``operator`` names the person (recorded in the decision's reason); default ``operator``.
    """
    queue = _queue(state)
    item = queue.resolve(approval_id, "approved", note)
    request = _request_from_doc(item.request)
    action = _action_for(item.action_spec, actions)
    who = operator or "operator"
    records = _execute(queue, action, request, Guards.from_dict(item.guards), enforce=item.enforce,
                       decided_by="operator", reason=f"approved by {who}{': ' + note if note else ''}",
                       clock=clock, approval_id=approval_id,
                       decision_id=_id("dec", approval_id, "approved"))
    queue.add_records(records)
    return records


def reject(state: ApprovalQueue | Path | str, approval_id: str, note: str | None = None, *,
           clock: Callable[[], float] = time.time, operator: str | None = None) -> list[ResponseRecord]:
    """Reject a queued step; return the decision record (``operator`` names the person)."""
    queue = _queue(state)
    item = queue.resolve(approval_id, "rejected", note)
    request = _request_from_doc(item.request)
    inc = request.incident
    decision = Decision(decision_id=_id("dec", approval_id, "rejected"), incident_id=inc.incident_id,
                        incident_version=inc.version, status="rejected",
                        reason=f"rejected by {operator or 'operator'}{': ' + note if note else ''}",
                        decided_by="operator",
                        timestamp=clock(), alert_ids=inc.alert_ids, playbook=request.playbook,
                        step=request.step,
                        action=request.action, targets=request.targets, ttl_s=request.ttl_s,
                        enforce=item.enforce,
                        approval_id=approval_id)
    queue.add_records([decision])
    return [decision]


def rollback(state: ApprovalQueue | Path | str, incident_id: str, action_id: str | None = None, *,
             actions: Mapping[str, Action] | None = None,
             clock: Callable[[], float] = time.time) -> list[ResponseRecord]:
    """Undo the applied (or dry-run) actions of an incident; return one ActionResult each."""
    queue = _queue(state)
    stored = [a for a in queue.actions(incident_id=incident_id)
              if a.status in {"applied", "dry_run"} and (action_id is None or a.action_id == action_id)]
    if not stored:
        what = f"action {action_id!r} of " if action_id else ""
        raise InputError(f"nothing to roll back for {what}incident {incident_id!r}")
    results: list[ResponseRecord] = []
    for item in stored:
        enforce = item.enforce and item.status == "applied"
        try:
            out = _action_for(item.spec, actions).rollback(item.state, enforce=enforce)
        except Exception as exc:  # noqa: BLE001 - recorded as a failed rollback, never crashes the caller
            out = Outcome("failed", f"rollback raised {type(exc).__name__}: {exc}")
        if out.status in {"rolled_back", "noop", "dry_run"}:
            queue.set_action_status(item.action_id, "rolled_back")
        results.append(ActionResult(
            result_id=_id("res", item.decision_id, "rollback", clock()), decision_id=item.decision_id,
            incident_id=IncidentId(item.incident_id), action=item.kind, operation="rollback",
            status=out.status,
            detail=out.detail, timestamp=clock(), targets=item.targets, commands=out.commands,
            enforce=enforce))
    queue.add_records(results)
    return results


def expire(state: ApprovalQueue | Path | str, now: float | None = None, *,
           actions: Mapping[str, Action] | None = None,
           clock: Callable[[], float] = time.time) -> list[ResponseRecord]:
    """Record the end of every applied action whose TTL passed (and run its user-space expiry)."""
    queue = _queue(state)
    now = clock() if now is None else now
    results: list[ResponseRecord] = []
    for item in queue.due(now):
        try:
            out = _action_for(item.spec, actions).expire(item.state,
                                                         enforce=item.enforce and item.status == "applied")
        except Exception as exc:  # noqa: BLE001 - recorded as a failed expiry
            out = Outcome("failed", f"expire raised {type(exc).__name__}: {exc}")
        queue.set_action_status(item.action_id, "expired")
        results.append(ActionResult(
            result_id=_id("res", item.decision_id, "expire"), decision_id=item.decision_id,
            incident_id=IncidentId(item.incident_id), action=item.kind, operation="expire",
            status=out.status if out.status != "noop" else "expired", detail=out.detail, timestamp=clock(),
            targets=item.targets, commands=out.commands, enforce=item.enforce, expires_at=item.expires_at))
    queue.add_records(results)
    return results
