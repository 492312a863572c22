"""The ``/api/v1`` routes: alerts, incidents, approvals, actions, hosts, models, FL rounds, ledger.

Every route needs a bearer token; reads need ``viewer``, operator decisions ``responder``, token
management ``admin``. A missing or unknown token is 401, a token whose role is too low 403.
"""

# no `from __future__ import annotations`: FastAPI must see the local Annotated role aliases as objects
import base64
import dataclasses
import functools
import time
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from trustmesh.api._context import ApiContext
from trustmesh.api._tokens import ROLES, TokenRecord, role_rank
from trustmesh.errors import InputError, LogIntegrityError
from trustmesh.ledger import Entry
from trustmesh.records import Alert

__all__ = ["build_router"]

MAX_PAGE: Final = 500
_ALERT_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(Alert))
_bearer = HTTPBearer(auto_error=False, description="A token from `trustmesh token create`.")


class NoteBody(BaseModel):
    """Why (recorded on the ledger with the operator's name)."""

    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(None, max_length=2000)


class RollbackBody(NoteBody):
    """Roll back one action of the incident, or all of them."""

    action_id: str | None = Field(None, max_length=128)


class TokenBody(BaseModel):
    """A new token for an operator."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=64)
    role: str = Field(..., pattern="^(viewer|responder|admin)$")


def alert_document(payload: dict[str, Any], leaf: int) -> dict[str, Any]:
    """Return the ECS document of an alert entry (the entry's payload; older flat entries are converted)."""
    if "ecs" in payload:
        doc = dict(payload)
    else:
        try:
            doc = Alert(**{k: v for k, v in payload.items() if k in _ALERT_FIELDS}).to_ecs()
        except (TypeError, ValueError):
            doc = {"event": {"kind": "alert"}, "trustmesh": {"unparsed": True}}
    doc["trustmesh"] = {**doc.get("trustmesh", {}), "ledger_index": leaf}
    return doc


def build_router(ctx: ApiContext) -> APIRouter:
    """Return the ``/api/v1`` router bound to ``ctx``."""
    r = APIRouter(prefix="/api/v1")

    def need(role: str) -> Callable[..., TokenRecord]:
        rank = role_rank(role)

        def check(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> TokenRecord:
            if creds is None or creds.scheme.lower() != "bearer":
                ctx.metrics.auth_failures.labels("401").inc()
                raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
            rec = ctx.tokens.authenticate(creds.credentials)
            if rec is None:
                ctx.metrics.auth_failures.labels("401").inc()
                raise HTTPException(401, "bearer token not accepted (unknown or revoked)",
                                    headers={"WWW-Authenticate": "Bearer"})
            if role_rank(rec.role) < rank:
                ctx.metrics.auth_failures.labels("403").inc()
                raise HTTPException(403, f"this needs the {role} role; token {rec.token_id} is {rec.role}")
            return rec

        return check

    Viewer = Annotated[TokenRecord, Depends(need("viewer"))]
    Responder = Annotated[TokenRecord, Depends(need("responder"))]
    Admin = Annotated[TokenRecord, Depends(need("admin"))]
    queue = ctx.operator.queue

    def found(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except InputError as exc:
            raise HTTPException(404, str(exc)) from None

    def decided(outcome: dict[str, Any], operation: str, who: TokenRecord) -> dict[str, Any]:
        ctx.metrics.decisions.labels(operation, who.role).inc()
        return outcome

    # -- who and what ---------------------------------------------------------------------------
    @r.get("/whoami", tags=["session"])
    def whoami(who: Viewer) -> dict[str, Any]:
        """The token's operator name and role."""
        return who.public()

    @r.get("/summary", tags=["session"])
    def summary(_: Viewer) -> dict[str, Any]:
        """Counts for the console header."""
        size = ctx.index.refresh()
        cp = ctx.ledger.latest_checkpoint()
        return {"origin": ctx.ledger.origin, "ledger_entries": size, "checkpoint_size": cp.size if cp else 0,
                "alerts": len(ctx.index.alerts), "incidents": len(queue.incidents()),
                "pending_approvals": len(queue.approvals("pending")),
                "active_actions": len(queue.actions(status="applied")) + len(queue.actions(status="dry_run")),
                "damaged_entries": len(ctx.index.damaged), "kinds": {k: len(v) for k, v in ctx.index.kinds.items()},
                "alerts_by_severity": {str(k): v for k, v in sorted(Counter(a.severity for a in ctx.index.alerts).items())},
                "top_techniques": Counter(a.technique_id for a in ctx.index.alerts if a.technique_id).most_common(5),
                "server_time": time.time()}

    # -- alerts ---------------------------------------------------------------------------------
    @r.get("/alerts", tags=["alerts"])
    def alerts(
        _: Viewer,
        host: str | None = Query(None, max_length=64, description="Source or destination address."),
        source_ip: str | None = Query(None, max_length=64),
        destination_ip: str | None = Query(None, max_length=64),
        min_severity: int = Query(1, ge=1, le=4),
        technique: str | None = Query(None, max_length=32, description="ATT&CK id, e.g. T1046."),
        predicted_class: str | None = Query(None, max_length=64, alias="class"),
        model_id: str | None = Query(None, max_length=128),
        since: float | None = Query(None, description="Alert time >= (epoch s)."),
        until: float | None = Query(None, description="Alert time < (epoch s)."),
        after: int | None = Query(None, ge=-1, description="Only ledger leaves > after (live polling)."),
        before: int | None = Query(None, ge=0, description="Only leaves < before (next page)."),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> dict[str, Any]:
        """Alerts as ECS documents, newest first, filtered; ``next_before`` pages back."""
        ctx.index.refresh()
        rows = ctx.index.alerts
        picked: list[int] = []
        total = 0
        for row in reversed(rows):
            if after is not None and row.leaf <= after:
                break
            if before is not None and row.leaf >= before:
                continue
            if host and host not in (row.source_ip, row.destination_ip):
                continue
            if (source_ip and row.source_ip != source_ip) or (destination_ip and row.destination_ip != destination_ip):
                continue
            if row.severity < min_severity or (technique and row.technique_id != technique):
                continue
            if (predicted_class and row.predicted_class != predicted_class) or (model_id and row.model_id != model_id):
                continue
            if (since is not None and row.timestamp < since) or (until is not None and row.timestamp >= until):
                continue
            total += 1
            if len(picked) < limit:
                picked.append(row.leaf)
        items = []
        for leaf, entry in ctx.index.entries(picked):
            if entry is not None:
                items.append(alert_document(entry["payload"], leaf))
            else:
                items.append({"trustmesh": {"ledger_index": leaf, "damaged": True}})
        more = total > len(picked)
        return {"items": items, "matched": total, "next_before": picked[-1] if more and picked else None,
                "latest_leaf": rows[-1].leaf if rows else -1}

    # -- incidents ------------------------------------------------------------------------------
    def incident_row(inc: Any, pending: Counter[str], active: Counter[str]) -> dict[str, Any]:
        d: dict[str, Any] = inc.to_dict()
        d.pop("alert_ids", None)
        d["alert_count"] = inc.alert_count
        d["ledger_index"] = ctx.index.incident_leaf.get(inc.incident_id)
        d["pending_approvals"] = pending[inc.incident_id]
        d["active_actions"] = active[inc.incident_id]
        d["ecs"] = inc.to_ecs()  # the one ECS incident document (trustmesh._ecs), as sinks and the ledger see it
        return d

    @r.get("/incidents", tags=["incidents"])
    def incidents(
        _: Viewer,
        host: str | None = Query(None, max_length=64),
        min_severity: int = Query(1, ge=1, le=4),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        """Incidents, latest activity first, with their pending approvals and active actions."""
        ctx.index.refresh()
        pending = Counter(a.incident_id for a in queue.approvals("pending"))
        active = Counter(a.incident_id for a in queue.actions() if a.status in {"applied", "dry_run"})
        rows = [i for i in queue.incidents() if i.severity >= min_severity
                and (not host or host in i.source_ips or host in i.destination_ips)]
        return {"items": [incident_row(i, pending, active) for i in rows[offset:offset + limit]],
                "matched": len(rows)}

    @r.get("/incidents/{incident_id}", tags=["incidents"])
    def incident(_: Viewer, incident_id: str = Path(..., max_length=128)) -> dict[str, Any]:
        """One incident with its approvals, actions and the records of its response, in time order."""
        ctx.index.refresh()
        inc = found(lambda: queue.incident(incident_id))
        pending = Counter(a.incident_id for a in queue.approvals("pending"))
        active = Counter(a.incident_id for a in queue.actions() if a.status in {"applied", "dry_run"})
        records = []
        for seq, kind, doc in queue.outbox(incident_id=incident_id, include_claimed=True):
            leaf = None
            if kind == "decision":
                leaf = ctx.index.decision_leaf.get(str(doc.get("decision_id")))
            records.append({"seq": seq, "record_type": kind, "ledger_index": leaf, **doc})
        return {"incident": incident_row(inc, pending, active), "alert_ids": list(inc.alert_ids[:200]),
                "approvals": [a.to_dict() for a in queue.approvals(None, incident_id)],
                "actions": [a.to_dict() for a in queue.actions(incident_id=incident_id)], "records": records}

    @r.post("/incidents/{incident_id}/rollback", tags=["approvals"])
    def rollback_incident(who: Responder, body: RollbackBody,
                          incident_id: str = Path(..., max_length=128)) -> dict[str, Any]:
        """Undo the incident's actions (or ``action_id``); recorded on the ledger at once."""
        found(lambda: queue.incident(incident_id))
        return decided(_conflict(lambda: ctx.operator.rollback(who, incident_id, body.action_id, body.note)),
                       "rollback", who)

    # -- approvals ------------------------------------------------------------------------------
    @r.get("/approvals", tags=["approvals"])
    def approvals(_: Viewer, status: str = Query("pending", pattern="^(pending|approved|rejected|all)$"),
                  incident_id: str | None = Query(None, max_length=128)) -> dict[str, Any]:
        """The approval queue (``status=all`` for the history)."""
        items = queue.approvals(None if status == "all" else status, incident_id)
        out = []
        for a in items:
            d = a.to_dict()
            d["request"] = {k: v for k, v in d["request"].items() if k != "incident"}
            d["incident"] = {k: a.request.get("incident", {}).get(k) for k in
                             ("incident_id", "severity", "technique_id", "technique_name", "predicted_class",
                              "source_ips", "destination_ips", "confidence")}
            out.append(d)
        return {"items": out}

    @r.post("/approvals/{approval_id}/approve", tags=["approvals"])
    def approve(who: Responder, body: NoteBody, approval_id: str = Path(..., max_length=128)) -> dict[str, Any]:
        """Approve a pending step and run it now (guards apply; dry-run unless queued enforcing)."""
        found(lambda: queue.approval(approval_id))
        return decided(_conflict(lambda: ctx.operator.approve(who, approval_id, body.note)), "approve", who)

    @r.post("/approvals/{approval_id}/reject", tags=["approvals"])
    def reject(who: Responder, body: NoteBody, approval_id: str = Path(..., max_length=128)) -> dict[str, Any]:
        """Reject a pending step."""
        found(lambda: queue.approval(approval_id))
        return decided(_conflict(lambda: ctx.operator.reject(who, approval_id, body.note)), "reject", who)

    @r.post("/approvals/{approval_id}/rollback", tags=["approvals"])
    def rollback_approval(who: Responder, body: NoteBody,
                          approval_id: str = Path(..., max_length=128)) -> dict[str, Any]:
        """Undo the actions an approved step applied."""
        item = found(lambda: queue.approval(approval_id))
        decision_ids = {d.get("decision_id") for _, kind, d in queue.outbox(incident_id=item.incident_id, include_claimed=True)
                        if kind == "decision" and d.get("approval_id") == approval_id}
        live = [a for a in queue.actions(incident_id=item.incident_id)
                if a.decision_id in decision_ids and a.status in {"applied", "dry_run"}]
        if not live:
            raise HTTPException(409, f"approval {approval_id!r} has no applied action to roll back")
        outcome: dict[str, Any] = {"records": []}
        for a in live:
            action_id = a.action_id
            got = _conflict(functools.partial(ctx.operator.rollback, who, item.incident_id, action_id, body.note))
            outcome["records"] += got["records"]
            outcome.update({k: v for k, v in got.items() if k != "records"})
        return decided(outcome, "rollback", who)

    # -- actions --------------------------------------------------------------------------------
    @r.get("/actions", tags=["actions"])
    def actions(_: Viewer, status: str | None = Query(None, max_length=32),
                incident_id: str | None = Query(None, max_length=128)) -> dict[str, Any]:
        """Applied (or dry-run), rolled-back and expired actions, newest first."""
        items = [a.to_dict() for a in reversed(queue.actions(incident_id=incident_id, status=status))]
        for d in items:
            d["decision_ledger_index"] = ctx.index.decision_leaf.get(d["decision_id"])
        return {"items": items}

    @r.post("/actions/{action_id}/rollback", tags=["actions"])
    def rollback_action(who: Responder, body: NoteBody, action_id: str = Path(..., max_length=128)) -> dict[str, Any]:
        """Undo one action."""
        hit = [a for a in queue.actions() if a.action_id == action_id]
        if not hit:
            raise HTTPException(404, f"no action {action_id!r}")
        return decided(_conflict(lambda: ctx.operator.rollback(who, hit[0].incident_id, action_id, body.note)),
                       "rollback", who)

    # -- hosts ----------------------------------------------------------------------------------
    @r.get("/hosts", tags=["hosts"])
    def hosts(_: Viewer, limit: int = Query(50, ge=1, le=MAX_PAGE)) -> dict[str, Any]:
        """Hosts by the number of alerts naming them (as source or destination)."""
        ctx.index.refresh()
        src: Counter[str] = Counter()
        dst: Counter[str] = Counter()
        for row in ctx.index.alerts:
            if row.source_ip:
                src[row.source_ip] += 1
            if row.destination_ip:
                dst[row.destination_ip] += 1
        top = (src + dst).most_common(limit)
        return {"items": [{"host": h, "alerts": n, "as_source": src[h], "as_destination": dst[h]} for h, n in top]}

    @r.get("/hosts/{host}", tags=["hosts"])
    def host_view(_: Viewer, host: str = Path(..., max_length=64)) -> dict[str, Any]:
        """Everything about one address: alerts, incidents, actions aimed at it."""
        ctx.index.refresh()
        rows = [a for a in ctx.index.alerts if host in (a.source_ip, a.destination_ip)]
        recent = [r.leaf for r in rows[-50:]][::-1]
        docs = [alert_document(e["payload"], leaf) for leaf, e in ctx.index.entries(recent) if e is not None]
        incs = [i.to_dict() | {"alert_ids": None, "ledger_index": ctx.index.incident_leaf.get(i.incident_id)}
                for i in queue.incidents() if host in i.source_ips or host in i.destination_ips]
        acts = [a.to_dict() for a in queue.actions() if host in a.targets]
        peers: Counter[str] = Counter()
        for a in rows:
            other = a.destination_ip if a.source_ip == host else a.source_ip
            if other:
                peers[other] += 1
        return {"host": host, "alerts": len(rows), "as_source": sum(a.source_ip == host for a in rows),
                "first_seen": min((a.timestamp for a in rows), default=None),
                "last_seen": max((a.timestamp for a in rows), default=None),
                "techniques": dict(Counter(a.technique_id or "-" for a in rows)),
                "peers": [{"host": h, "alerts": n} for h, n in peers.most_common(20)],
                "recent_alerts": docs, "incidents": incs[:100], "actions": acts[:100]}

    # -- models, FL rounds, evaluations -----------------------------------------------------------
    def entries_of(*kinds: str, limit: int = MAX_PAGE) -> list[dict[str, Any]]:
        ctx.index.refresh()
        leaves = sorted(leaf for k in kinds for leaf in ctx.index.kinds.get(k, []))[-limit:][::-1]
        return [{"leaf": leaf, "kind": e["kind"], "time": e.get("time"), "refs": list(e.get("refs") or []),
                 "payload": e["payload"]} for leaf, e in ctx.index.entries(leaves) if e is not None]

    @r.get("/models", tags=["models"])
    def models(_: Viewer) -> dict[str, Any]:
        """Models recorded on the ledger (pipeline models and federated models) with their lineage."""
        per_model = Counter(a.model_id for a in ctx.index.alerts)
        items = []
        for doc in entries_of("model", "fl.model"):
            p = doc["payload"]
            mid = p.get("model_id") or p.get("model_sha256")
            lineage = {k: p[k] for k in ("lineage", "parent", "parents", "training", "data", "dataset", "rounds",
                                         "strategy", "dp", "federated") if k in p}
            items.append({**doc, "model_id": mid, "alerts": per_model.get(str(mid), 0), "lineage": lineage})
        return {"items": items}

    @r.get("/fl/rounds", tags=["models"])
    def fl_rounds(_: Viewer) -> dict[str, Any]:
        """Federated-learning rounds recorded on the ledger, newest first."""
        return {"items": entries_of("fl.round")}

    @r.get("/evaluations", tags=["models"])
    def evaluations(_: Viewer) -> dict[str, Any]:
        """Security-evaluation blueprint reports recorded on the ledger, and report folders on disk."""
        reports = []
        base = ctx.config.reports_dir
        if base is not None and base.is_dir():
            for p in sorted(base.glob("**/report.json"))[:100]:
                reports.append({"path": str(p.parent.relative_to(base)), "has_html": (p.parent / "report.html").is_file()})
        return {"items": entries_of("evaluation"), "report_folders": reports}

    # -- ledger ---------------------------------------------------------------------------------
    def checkpoint_doc() -> dict[str, Any]:
        cp = ctx.ledger.latest_checkpoint()
        if cp is None:
            raise HTTPException(409, "the log has not signed a checkpoint yet")
        return {"checkpoint": cp.to_bytes().decode("utf-8"), "size": cp.size, "origin": ctx.ledger.origin,
                "log_key": ctx.ledger.verifier_key}

    @r.get("/ledger/checkpoint", tags=["ledger"])
    def checkpoint(_: Viewer) -> dict[str, Any]:
        """The newest signed checkpoint (C2SP signed note) and the log's verifier key."""
        return checkpoint_doc()

    @r.get("/ledger/entries/{index}", tags=["ledger"])
    def entry(_: Viewer, index: int = Path(..., ge=0)) -> dict[str, Any]:
        """An entry's stored bytes, its inclusion proof in the newest checkpoint, and that checkpoint.

        Verify it yourself: leaf = SHA-256(0x00 || bytes), walk ``proof`` to the checkpoint's root,
        check the checkpoint's Ed25519 note signature with ``log_key``. Never trust ``root``/``leafHash``.
        """
        cp = checkpoint_doc()
        if index >= ctx.ledger.size:
            raise HTTPException(404, f"no entry {index}: the ledger has {ctx.ledger.size} entries")
        if index >= cp["size"]:
            raise HTTPException(409, f"entry {index} is not yet covered by a signed checkpoint (size {cp['size']})")
        raw = ctx.ledger.entry_bytes(index)
        parsed: dict[str, Any] | None
        problem = None
        try:
            parsed = Entry.from_bytes(raw).to_dict()
        except InputError as exc:
            parsed, problem = None, f"stored entry {index} is invalid: {exc}"
        proof = ctx.ledger.prove_inclusion(index, cp["size"]).to_json()
        return {"index": index, "entry_b64": base64.b64encode(raw).decode("ascii"), "entry": parsed,
                "parse_error": problem, "proof": proof, **cp}

    @r.get("/ledger/search", tags=["ledger"])
    def search(
        _: Viewer,
        kind: str | None = Query(None, max_length=128),
        field: list[str] = Query([], description="F=V, repeatable: payload field (dotted path) equals V."),
        before: int | None = Query(None, ge=0),
        limit: int = Query(50, ge=1, le=MAX_PAGE),
    ) -> dict[str, Any]:
        """Entries of ``kind`` whose payload fields match, newest first (``next_before`` continues)."""
        wanted: dict[str, str] = {}
        for f in field[:16]:
            name, sep, value = f.partition("=")
            if not sep or not name:
                raise HTTPException(400, f"field must look like NAME=VALUE, got {f[:80]!r}")
            wanted[name] = value
        try:
            hits, more = ctx.index.search(kind, wanted, limit=limit, before=before)
        except LogIntegrityError as exc:
            raise HTTPException(500, str(exc)) from None
        return {"items": [{"leaf": leaf, **e.to_dict()} for leaf, e in hits], "next_before": more}

    # -- tokens (admin) -------------------------------------------------------------------------
    @r.get("/tokens", tags=["tokens"])
    def tokens(_: Admin) -> dict[str, Any]:
        """Every token's id, name, role, creation and revocation time (never the token or its hash)."""
        return {"items": [t.public() for t in ctx.tokens.records()], "roles": list(ROLES)}

    @r.post("/tokens", tags=["tokens"], status_code=201)
    def create_token(who: Admin, body: TokenBody) -> dict[str, Any]:
        """Make a token; the response is the only time it is shown."""
        token, rec = ctx.tokens.create(body.name, body.role)
        ctx.ledger.append_one("operator.token", {"operation": "create", "token_id": rec.token_id,
                                                 "name": rec.name, "role": rec.role, "by": who.name})
        return {"token": token, **rec.public()}

    @r.delete("/tokens/{token_id}", tags=["tokens"])
    def revoke_token(who: Admin, token_id: str = Path(..., max_length=64)) -> dict[str, Any]:
        """Revoke a token by id."""
        if not token_id.startswith("tok-"):
            raise HTTPException(400, "token_id must look like tok-XXXXXXXX")
        revoked = found(lambda: ctx.tokens.revoke(token_id))
        ctx.ledger.append_one("operator.token", {"operation": "revoke", "token_id": token_id, "by": who.name})
        return {"revoked": [t.public() for t in revoked]}

    return r


def _conflict(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run an operator request; a decision that no longer applies (already decided) is 409."""
    try:
        return call()
    except InputError as exc:
        raise HTTPException(409, str(exc)) from None
