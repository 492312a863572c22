"""The operator REST API over real HTTP, on the state a real pipeline run left behind."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from apisite import SCANNER, Site, run_pipeline, serving, token_for
from trustmesh.errors import InclusionProofError
from trustmesh.ledger import Checkpoint, InclusionProof, Ledger, NoteVerifier, audit, verify_inclusion


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _pending(client: httpx.Client, token: str) -> list[dict[str, object]]:
    r = client.get("/api/v1/approvals", headers=_auth(token))
    assert r.status_code == 200, r.text
    items: list[dict[str, object]] = r.json()["items"]
    return items


def test_roles_unauthenticated_401_viewer_403_responder_decides(site: Site) -> None:
    viewer = token_for(site, "viewer", "vic")
    responder = token_for(site, "responder", "rita")
    with serving(site) as srv, httpx.Client(base_url=srv.url) as c:
        assert c.get("/api/v1/alerts").status_code == 401
        bad = c.get("/api/v1/alerts", headers=_auth("tm_" + "A" * 43))
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        assert c.get("/api/v1/alerts", headers=_auth(viewer)).status_code == 200
        approval = str(_pending(c, viewer)[0]["approval_id"])
        for verb in ("approve", "reject", "rollback"):
            assert c.post(f"/api/v1/approvals/{approval}/{verb}", json={}).status_code == 401
            refused = c.post(f"/api/v1/approvals/{approval}/{verb}", json={}, headers=_auth(viewer))
            assert refused.status_code == 403 and "responder" in refused.json()["detail"]
        assert c.get("/api/v1/tokens", headers=_auth(responder)).status_code == 403
        # nothing was decided by the refused calls
        assert _pending(c, viewer)[0]["approval_id"] == approval
        ok = c.post(f"/api/v1/approvals/{approval}/reject", json={"note": "known scanner"}, headers=_auth(responder))
        assert ok.status_code == 200, ok.text
        again = c.post(f"/api/v1/approvals/{approval}/approve", json={}, headers=_auth(responder))
        assert again.status_code == 409 and "already rejected" in again.json()["detail"]
        assert c.post("/api/v1/approvals/apr-nope/approve", json={}, headers=_auth(responder)).status_code == 404


def test_approval_goes_on_the_ledger_at_once_with_the_operator_and_only_once(site: Site) -> None:
    responder = token_for(site, "responder", "rita")
    with Ledger.open(site.ledger_dir, read_only=True) as led:
        size_before = led.size
    with serving(site) as srv, httpx.Client(base_url=srv.url) as c:
        approval = str(_pending(c, responder)[0]["approval_id"])
        r = c.post(f"/api/v1/approvals/{approval}/approve", json={"note": "confirmed scan"}, headers=_auth(responder))
        assert r.status_code == 200, r.text
        out = r.json()
        # the receipt names leaves that already exist, under a checkpoint signed for the request
        assert out["operator_entry"] >= size_before and out["tree_size"] > max(x["leaf"] for x in out["records"])
        with Ledger.open(site.ledger_dir, read_only=True) as led:
            cp = led.latest_checkpoint()
            assert cp is not None and cp.size == out["tree_size"]
            op = led.entry(out["operator_entry"])
            assert op.kind == "operator.decision"
            assert op.payload["operator"] == "rita" and op.payload["role"] == "responder"
            assert op.payload["note"] == "confirmed scan" and op.payload["approval_id"] == approval
            kinds = {led.entry(x["leaf"]).kind: x["leaf"] for x in out["records"]}
            assert set(kinds) == {"decision", "action_result"}
            decision = led.entry(kinds["decision"])
            assert decision.payload["decided_by"] == "operator" and "rita" in decision.payload["reason"]
            assert out["operator_entry"] in decision.refs
            incident = next(i for i in decision.refs if led.entry(i).kind == "incident")
            assert led.entry(incident).payload["incident_id"] == op.payload["incident_id"]
            result = led.entry(kinds["action_result"])
            assert kinds["decision"] in result.refs and result.payload["status"] == "dry_run"
            for leaf in (out["operator_entry"], *kinds.values()):
                verify_inclusion(led.prove_inclusion(leaf, cp.size), cp, led.entry_bytes(leaf))
        # the console finds it on the ledger by search
        found = c.get("/api/v1/ledger/search", params={"kind": "operator.decision", "field": "operator=rita"},
                      headers=_auth(responder)).json()["items"]
        assert [e["leaf"] for e in found] == [out["operator_entry"]]
    # a later pipeline run does not append the operator's records a second time
    run_pipeline(site)
    audit(site.ledger_dir)
    with Ledger.open(site.ledger_dir, read_only=True) as led:
        approved = [i for i in range(led.size) if led.entry(i).kind == "decision"
                    and led.entry(i).payload.get("approval_id") == approval
                    and led.entry(i).payload["status"] == "taken"]
    assert len(approved) == 1


def test_rollback_of_an_approved_action_is_recorded(site: Site) -> None:
    responder = token_for(site, "responder", "rita")
    with serving(site) as srv, httpx.Client(base_url=srv.url) as c:
        approval = str(_pending(c, responder)[0]["approval_id"])
        assert c.post(f"/api/v1/approvals/{approval}/approve", json={}, headers=_auth(responder)).status_code == 200
        back = c.post(f"/api/v1/approvals/{approval}/rollback", json={"note": "false positive"}, headers=_auth(responder))
        assert back.status_code == 200, back.text
        recs = back.json()["records"]
        assert [(r["operation"], r["status"]) for r in recs] == [("rollback", "dry_run")]
        actions = c.get("/api/v1/actions", headers=_auth(responder)).json()["items"]
        assert any(a["status"] == "rolled_back" for a in actions)
        twice = c.post(f"/api/v1/approvals/{approval}/rollback", json={}, headers=_auth(responder))
        assert twice.status_code == 409


def test_ledger_entry_and_proof_verify_with_the_python_verifier_and_tampering_fails(site: Site) -> None:
    viewer = token_for(site, "viewer", "vic")
    with serving(site) as srv, httpx.Client(base_url=srv.url) as c:
        summary = c.get("/api/v1/summary", headers=_auth(viewer)).json()
        alert_leaf = c.get("/api/v1/alerts", params={"limit": 1}, headers=_auth(viewer)).json()["items"][0]["trustmesh"]["ledger_index"]
        doc = c.get(f"/api/v1/ledger/entries/{alert_leaf}", headers=_auth(viewer)).json()
        assert doc["size"] == summary["checkpoint_size"] and doc["entry"]["kind"] == "alert"
        raw = base64.b64decode(doc["entry_b64"])
        cp = Checkpoint.from_bytes(doc["checkpoint"].encode())
        cp.verify(NoteVerifier.from_vkey((site.ledger_dir / "log.pub").read_text()))  # the key on disk, not the served one
        verify_inclusion(InclusionProof.from_json(doc["proof"]), cp, raw)
        assert c.get(f"/api/v1/ledger/entries/{doc['size'] + 5}", headers=_auth(viewer)).status_code == 404
        # alter the stored entry (one digit of its score); the served proof must no longer verify
        db = sqlite3.connect(site.ledger_dir / "ledger.sqlite")
        try:
            idx = alert_leaf >> 8
            (data,) = db.execute("SELECT data FROM bundles WHERE idx=?", (idx,)).fetchone()
            pos = bytes(data).find(raw)
            assert pos >= 0
            digit = pos + raw.find(b'"score":0.') + len(b'"score":0.')
            changed = bytearray(data)
            changed[digit] = ord("1") if changed[digit] != ord("1") else ord("2")
            db.execute("UPDATE bundles SET data=? WHERE idx=?", (bytes(changed), idx))
            db.commit()
        finally:
            db.close()
        tampered = c.get(f"/api/v1/ledger/entries/{alert_leaf}", headers=_auth(viewer)).json()
        assert tampered["entry_b64"] != doc["entry_b64"]
        with pytest.raises(InclusionProofError):
            verify_inclusion(InclusionProof.from_json(tampered["proof"]), cp, base64.b64decode(tampered["entry_b64"]))


def test_alerts_are_ecs_filtered_and_paged(site: Site) -> None:
    viewer = token_for(site, "viewer", "vic")
    with serving(site) as srv, httpx.Client(base_url=srv.url) as c:
        first = c.get("/api/v1/alerts", params={"limit": 50}, headers=_auth(viewer)).json()
        assert first["matched"] > 50 and len(first["items"]) == 50
        leaves = [d["trustmesh"]["ledger_index"] for d in first["items"]]
        assert leaves == sorted(leaves, reverse=True)
        doc = first["items"][0]
        assert doc["ecs"]["version"].startswith("8.") and doc["event"]["kind"] == "alert"
        assert isinstance(doc["@timestamp"], str) and doc["@timestamp"].endswith("Z")
        page2 = c.get("/api/v1/alerts", params={"limit": 50, "before": first["next_before"]}, headers=_auth(viewer)).json()
        assert not set(leaves) & {d["trustmesh"]["ledger_index"] for d in page2["items"]}
        scanner = c.get("/api/v1/alerts", params={"host": SCANNER, "limit": 500}, headers=_auth(viewer)).json()
        assert scanner["items"] and all(SCANNER in (d["source"]["ip"], d["destination"]["ip"]) for d in scanner["items"])
        none = c.get("/api/v1/alerts", params={"host": "203.0.113.250"}, headers=_auth(viewer)).json()
        assert none["matched"] == 0
        newer = c.get("/api/v1/alerts", params={"after": first["latest_leaf"]}, headers=_auth(viewer)).json()
        assert newer["items"] == []
        assert c.get("/api/v1/alerts", params={"limit": 100000}, headers=_auth(viewer)).status_code == 422
        host = c.get(f"/api/v1/hosts/{SCANNER}", headers=_auth(viewer)).json()
        assert host["alerts"] == scanner["matched"] and host["incidents"]
        incs = c.get("/api/v1/incidents", headers=_auth(viewer)).json()["items"]
        assert incs and all(i["ledger_index"] is not None for i in incs)
        assert all(i["ecs"]["ecs"]["version"].startswith("8.") and i["ecs"]["event"]["kind"] for i in incs)
        # search: dotted ECS paths, lists element-wise, numbers by value (as `trustmesh ledger search`)
        hits = c.get("/api/v1/ledger/search", params={"kind": "alert", "field": [f"source.ip={SCANNER}", "event.category=network"],
                                                      "limit": 5}, headers=_auth(viewer)).json()["items"]
        assert len(hits) == 5 and all(h["payload"]["source"]["ip"] == SCANNER for h in hits)
        sev = max(i["severity"] for i in incs)
        by_sev = c.get("/api/v1/ledger/search", params={"kind": "incident", "field": f"severity={sev}.0"},
                       headers=_auth(viewer)).json()["items"]
        assert by_sev and all(h["payload"]["severity"] == sev for h in by_sev)
        assert c.get("/api/v1/ledger/search", params={"field": "nonsense"}, headers=_auth(viewer)).status_code == 400
        one = c.get(f"/api/v1/incidents/{incs[0]['incident_id']}", headers=_auth(viewer)).json()
        assert one["incident"]["incident_id"] == incs[0]["incident_id"]
        summary = c.get("/api/v1/summary", headers=_auth(viewer)).json()
        assert sum(summary["alerts_by_severity"].values()) == summary["alerts"] == first["matched"]
        models = c.get("/api/v1/models", headers=_auth(viewer)).json()["items"]
        assert models and models[0]["kind"] == "model" and models[0]["alerts"] > 0


def test_openapi_metrics_and_body_limit(site: Site) -> None:
    viewer = token_for(site, "viewer", "vic")
    responder = token_for(site, "responder", "rita")
    with serving(site) as srv, httpx.Client(base_url=srv.url) as c:
        spec = c.get("/api/v1/openapi.json").json()
        for path in ("/api/v1/alerts", "/api/v1/incidents", "/api/v1/approvals", "/api/v1/approvals/{approval_id}/approve",
                     "/api/v1/approvals/{approval_id}/reject", "/api/v1/approvals/{approval_id}/rollback", "/api/v1/actions",
                     "/api/v1/models", "/api/v1/fl/rounds", "/api/v1/ledger/entries/{index}", "/api/v1/ledger/search"):
            assert path in spec["paths"], path
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert c.get("/metrics").status_code == 401
        text = c.get("/metrics", headers=_auth(viewer)).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["trustmesh_ledger_entries"].samples[0].value > 1000
        assert families["trustmesh_pending_approvals"].samples[0].value >= 1
        assert any(s.labels.get("status") == "401" for s in families["trustmesh_http_requests"].samples)
        approval = str(_pending(c, viewer)[0]["approval_id"])
        big = c.post(f"/api/v1/approvals/{approval}/approve", content=b'{"note": "' + b"x" * 70000 + b'"}',
                     headers={**_auth(responder), "Content-Type": "application/json"})
        assert big.status_code == 413
        extra = c.post(f"/api/v1/approvals/{approval}/approve", json={"note": "x", "enforce": True}, headers=_auth(responder))
        assert extra.status_code == 422
        broken = c.post(f"/api/v1/approvals/{approval}/approve", content=b"{not json",
                        headers={**_auth(responder), "Content-Type": "application/json"})
        assert broken.status_code == 422
        assert _pending(c, viewer)[0]["approval_id"] == approval  # still pending after the refused bodies
        page = c.get("/")
        assert page.status_code == 200 and "js/app.js" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]


def test_public_metrics_need_no_token(site: Site) -> None:
    with serving(site, metrics_public=True) as srv:
        r = httpx.get(f"{srv.url}/metrics")
    assert r.status_code == 200 and "trustmesh_ledger_entries" in r.text


def test_revoked_token_is_refused_and_admin_manages_tokens(site: Site) -> None:
    admin = token_for(site, "admin", "ada")
    with serving(site) as srv, httpx.Client(base_url=srv.url) as c:
        made = c.post("/api/v1/tokens", json={"name": "bob", "role": "viewer"}, headers=_auth(admin))
        assert made.status_code == 201
        bob = made.json()["token"]
        assert c.get("/api/v1/whoami", headers=_auth(bob)).json()["name"] == "bob"
        listed = c.get("/api/v1/tokens", headers=_auth(admin)).json()["items"]
        assert {t["name"] for t in listed} >= {"ada", "bob"} and all("sha256" not in t for t in listed)
        assert c.delete(f"/api/v1/tokens/{made.json()['token_id']}", headers=_auth(admin)).status_code == 200
        assert c.get("/api/v1/whoami", headers=_auth(bob)).status_code == 401
        assert c.post("/api/v1/tokens", json={"name": "x y", "role": "viewer"}, headers=_auth(admin)).status_code == 400
        assert c.post("/api/v1/tokens", json={"name": "x", "role": "root"}, headers=_auth(admin)).status_code == 422
    stored = json.loads((site.state_dir / "api-tokens.json").read_text())
    assert bob not in json.dumps(stored) and admin not in json.dumps(stored)


def test_run_and_serve_read_one_file(tmp_path: Path) -> None:
    from trustmesh.api import ServeConfig
    from trustmesh.pipeline import PipelineConfig

    cfg = tmp_path / "t.toml"
    cfg.write_text('[pipeline]\nledger_dir = "l"\nstate_dir = "s"\n\n[api]\nport = 9443\nmetrics_public = true\n')
    run, serve = PipelineConfig.load(cfg), ServeConfig.load(cfg)
    assert (run.ledger_dir, run.state_dir) == (serve.ledger_dir, serve.state_dir) == (tmp_path / "l", tmp_path / "s")
    assert serve.port == 9443 and serve.metrics_public and serve.token_path == tmp_path / "s" / "api-tokens.json"


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from trustmesh.api import ServeConfig
    from trustmesh.errors import ConfigError

    cfg = tmp_path / "t.toml"
    cfg.write_text('[api]\nport = 8443\nbogus = 1\n')
    with pytest.raises(ConfigError, match="api.bogus"):
        ServeConfig.load(cfg)
    cfg.write_text('[api]\ntls_cert = "c.pem"\n')
    with pytest.raises(ConfigError, match="tls_cert and api.tls_key"):
        ServeConfig.load(cfg)


def test_claimed_records_a_crash_left_off_the_ledger_are_appended_at_start(site: Site) -> None:
    from trustmesh.records import Decision, IncidentId
    from trustmesh.respond import ApprovalQueue

    queue = ApprovalQueue(site.state_dir)
    incident = queue.incidents()[0]
    lost = Decision(decision_id="dec-crash-test", incident_id=IncidentId(incident.incident_id), incident_version=1,
                    status="rejected", reason="rejected by rita", decided_by="operator", timestamp=1.0)
    queue.add_records([lost], claimed=True)  # claimed, then the server died before its ledger append
    assert [d["decision_id"] for _, _, d in queue.unlogged_claims()] == ["dec-crash-test"]
    assert all(d.get("decision_id") != "dec-crash-test" for _, _, d in queue.outbox())  # the pipeline skips it
    with serving(site):
        pass
    assert queue.unlogged_claims() == []
    with Ledger.open(site.ledger_dir, read_only=True) as led:
        hits = [i for i in range(led.size) if led.entry(i).payload.get("decision_id") == "dec-crash-test"]
        assert len(hits) == 1 and led.latest_checkpoint().size == led.size  # type: ignore[union-attr]
    queue.close()


def test_serve_needs_the_ledger_signing_key(site: Site) -> None:
    from trustmesh.api import ServeConfig, create_app
    from trustmesh.errors import ConfigError

    (site.ledger_dir / "log.key").unlink()
    with pytest.raises(ConfigError, match="log.key"):
        create_app(ServeConfig.load(site.config))
