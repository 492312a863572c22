"""`trustmesh ledger get DIR INDEX` and `trustmesh ledger search DIR --kind K --field F=V`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.ledger import Entry, Ledger
from trustmesh.records import Alert, FlowId, ModelId


def _alert(i: int, src: str, technique: str | None) -> Alert:
    return Alert(alert_id=f"alr-{i}", timestamp=1622987986.0 + i, flow_id=FlowId(f"f{i}"), model_id=ModelId("m"),
                 score=0.9, threshold=0.5, source_ip=src, destination_ip="10.0.0.1", destination_port=22,
                 source_port=40000 + i, transport="tcp", severity=2, technique_id=technique)


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ledger"
    led = Ledger.create(d, "test.example/log")
    big = "x" * 60_000
    digest = led.put_blob(json.dumps({"incident_id": "inc-big", "alert_ids": [big]}, sort_keys=True,
                                     separators=(",", ":")).encode())
    led.append([Entry("model", {"model_id": "m"}, time=1.0)]
               + [Entry("alert", _alert(i, "203.0.113.7" if i % 2 else "198.51.100.9", "T1046" if i < 3 else None)
                        .to_ecs(created=1.7e9), time=2.0, refs=(0,)) for i in range(6)]
               + [Entry("incident", {"incident_id": "inc-big", "full_document_sha256": str(digest),
                                     "omitted_fields": ["alert_ids"]}, time=3.0, refs=(1, 2))])
    led.checkpoint()
    led.close()
    return d


def test_get_prints_the_entry_and_a_verified_proof(ledger_dir: Path) -> None:
    result = CliRunner().invoke(app, ["ledger", "get", str(ledger_dir), "2", "--prove"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["index"] == 2 and doc["kind"] == "alert" and doc["refs"] == [0]
    assert doc["payload"]["event"]["id"] == "alr-1" and doc["payload"]["source"]["ip"] == "203.0.113.7"
    assert doc["inclusion"]["leafIdx"] == 2 and len(doc["leaf_hash"]) == 64
    full = json.loads(CliRunner().invoke(app, ["ledger", "get", str(ledger_dir), "7", "--full"]).stdout)
    assert len(full["payload"]["alert_ids"][0]) == 60_000  # the blob, checked against the entry's sha256


def test_get_out_of_range_is_one_line(ledger_dir: Path) -> None:
    result = CliRunner().invoke(app, ["ledger", "get", str(ledger_dir), "99"])
    assert result.exit_code == 2 and "index must be in 0..7" in result.output and "Traceback" not in result.output


def test_search_by_kind_and_dotted_fields(ledger_dir: Path) -> None:
    run = CliRunner().invoke(app, ["ledger", "search", str(ledger_dir), "--kind", "alert",
                                   "--field", "source.ip=203.0.113.7", "--field", "threat.technique.id=T1046"])
    assert run.exit_code == 0, run.output
    hits = [json.loads(line) for line in run.stdout.splitlines()]
    assert [h["payload"]["event"]["id"] for h in hits] == ["alr-1"]
    everything = CliRunner().invoke(app, ["ledger", "search", str(ledger_dir), "--kind", "alert", "--limit", "0"])
    assert len(everything.stdout.splitlines()) == 6
    numeric = CliRunner().invoke(app, ["ledger", "search", str(ledger_dir), "--field", "destination.port=22",
                                       "--limit", "2"])
    assert len(numeric.stdout.splitlines()) == 2
    inc = CliRunner().invoke(app, ["ledger", "search", str(ledger_dir), "--kind", "incident",
                                   "--field", "incident_id=inc-big"])
    assert len(inc.stdout.splitlines()) == 1
    bad = CliRunner().invoke(app, ["ledger", "search", str(ledger_dir), "--field", "nonsense"])
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output
