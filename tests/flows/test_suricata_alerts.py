"""Suricata EVE alert events: mapped to alerts (signature, category, severity, technique), ingested by
`trustmesh run` (an alert-only EVE file is no longer 0 flows and nothing), and fused with the model."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from trustmesh.detect import make_detector, save_model
from trustmesh.flows import CANONICAL_FEATURES, eve_alert, fuse_signature, iter_eve_alerts, read_flows
from trustmesh.flows import technique_for_signature
from trustmesh.ledger import Ledger
from trustmesh.pipeline import Pipeline, PipelineConfig, open_sources

EVE = "logs/suricata/test6-malicious.suricata.json.gz"

pytestmark = pytest.mark.needs_data


def _alert_lines(data_dir: Path) -> list[str]:
    with gzip.open(data_dir / EVE, "rt", encoding="utf-8") as fh:
        return [line for line in fh if json.loads(line)["event_type"] == "alert"]


def test_every_sample_alert_is_mapped(data_dir: Path) -> None:
    alerts = [a for batch in iter_eve_alerts(data_dir / EVE, 200) for a in batch]
    assert len(alerts) == 745  # the sample's signature alerts (datasets README)
    assert len({a.alert_id for a in alerts}) == 745
    mssql = [a for a in alerts if a.extra["suricata"]["signature_id"] == 2010935]
    assert len(mssql) == 131 and {a.technique_id for a in mssql} == {"T1046"}
    assert {a.destination_port for a in mssql} == {1433} and {a.severity for a in mssql} == {2}
    cins = [a for a in alerts if "CINS" in a.extra["suricata"]["signature"]]
    assert cins and {a.technique_id for a in cins} == {None}  # reputation says who, not what
    doc = mssql[0].to_ecs(created=0)
    assert doc["rule"]["id"] == "2010935" and doc["rule"]["category"] == "Potentially Bad Traffic"
    assert doc["event"]["provider"] == "suricata" and doc["@timestamp"].startswith("2021-06-0")
    assert doc["threat"]["technique"]["id"] == ["T1046"]
    assert Counter(a.detector for a in alerts) == {"suricata": 745}


def test_mapping_rules() -> None:
    assert technique_for_signature("ET SCAN Potential SSH Scan", "Attempted Information Leak") == "T1046"
    assert technique_for_signature("ET DOS Possible NTP DDoS", "Attempted Denial of Service") == "T1499"
    assert technique_for_signature("GPL SQL injection attempt", "Web Application Attack") == "T1190"
    assert technique_for_signature("ET DROP Dshield Block Listed Source group 1", "Misc Attack") is None
    assert technique_for_signature("anything", "Misc Attack", {"mitre_technique_id": ["T1110.001"]}) == "T1110.001"
    assert technique_for_signature("something new", "Detection of a Network Scan") == "T1046"
    rec = {"event_type": "alert", "timestamp": "2021-06-06T15:59:46.457984+0200", "flow_id": 7, "src_ip": "1.2.3.4",
           "src_port": 5, "dest_ip": "10.0.0.1", "dest_port": 22, "proto": "TCP",
           "alert": {"signature_id": 1, "signature": "x", "category": "c", "severity": 1,
                     "metadata": {"signature_severity": ["Critical"]}}}
    crit = eve_alert(rec, source_name="t")
    assert crit is not None and crit.severity == 4 and crit.timestamp == pytest.approx(1622987986.457984)
    assert eve_alert({**rec, "alert": {"signature": "no id"}}, source_name="t") is None
    assert eve_alert({**rec, "timestamp": "yesterday"}, source_name="t") is None


def test_fusion_raises_severity_only_when_the_model_agrees() -> None:
    rec = {"event_type": "alert", "timestamp": "2021-06-06T13:59:46Z", "flow_id": 9, "src_ip": "1.2.3.4",
           "dest_ip": "10.0.0.1", "proto": "TCP", "alert": {"signature_id": 2, "signature": "ET SCAN x",
                                                           "category": "c", "severity": 2}}
    base = eve_alert(rec, source_name="t")
    assert base is not None and base.severity == 2
    agree = fuse_signature(base, 0.99, 0.5, "m")
    assert agree.severity == 3 and agree.score == 0.99 and agree.extra["fusion"] == "corroborated"
    disagree = fuse_signature(base, 0.1, 0.5, "m")
    assert disagree.severity == 2 and disagree.extra["ml"]["agrees"] is False
    assert fuse_signature(base, None, None, None).extra["fusion"] == "signature-only"


def test_bad_alert_lines_are_skipped(tmp_path: Path, data_dir: Path) -> None:
    lines = _alert_lines(data_dir)[:3]
    path = tmp_path / "eve.json"
    path.write_text(lines[0] + "{not json\n" + '{"event_type": "alert", "alert": {}}\n' + "".join(lines[1:]))
    assert sum(len(b) for b in iter_eve_alerts(path)) == 3


@pytest.fixture(scope="module")
def eve_model(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    flows = read_flows(data_dir / EVE)
    det = make_detector("iforest", seed=0).fit(flows[list(CANONICAL_FEATURES)], None)
    path = tmp_path_factory.mktemp("evemodel") / "iforest.model"
    save_model(det, path)
    return path


def _run(tmp_path: Path, model: Path, source: Path) -> tuple[object, list]:
    cfg = PipelineConfig(ledger_dir=tmp_path / "ledger", state_dir=tmp_path / "state", model=model, batch_size=1024)
    pipeline = Pipeline.from_config(cfg)
    pipeline.run(open_sources([str(source)], cfg))
    summary = pipeline.close()
    with Ledger.open(tmp_path / "ledger", read_only=True) as ledger:
        entries = [ledger.entry(i) for i in range(ledger.size)]
    return summary, entries


def test_alert_only_eve_file_is_ingested(tmp_path: Path, data_dir: Path, eve_model: Path) -> None:
    path = tmp_path / "alerts-only.json"
    path.write_text("".join(_alert_lines(data_dir)))
    summary, entries = _run(tmp_path, eve_model, path)
    assert summary.flows == 0 and summary.alerts == 745 and summary.incidents > 0 and not summary.errors
    docs = [e.payload for e in entries if e.kind == "alert"]
    assert len(docs) == 745 and {d["event"]["provider"] for d in docs} == {"suricata"}
    assert all(d["trustmesh"]["extra"]["fusion"] == "signature-only" for d in docs)  # no flows: nothing to fuse
    incidents = [e.payload for e in entries if e.kind == "incident"]
    assert any(i["technique_id"] == "T1046" for i in incidents)


def test_mixed_eve_file_fuses_alerts_with_model_verdicts(tmp_path: Path, data_dir: Path, eve_model: Path) -> None:
    summary, entries = _run(tmp_path, eve_model, data_dir / EVE)
    docs = [e.payload for e in entries if e.kind == "alert" and e.payload["event"]["provider"] == "suricata"]
    assert len(docs) == 745 and summary.flows == 3512
    fused = [d for d in docs if "ml" in d["trustmesh"]["extra"]]
    assert len(fused) > 100  # most alerts' flows are in the same file and were scored by the model
    for d in fused:
        ml = d["trustmesh"]["extra"]["ml"]
        assert (d["trustmesh"]["extra"]["fusion"] == "corroborated") == (ml["score"] >= ml["threshold"])


def test_detect_writes_the_signature_alerts_of_an_eve_file(tmp_path: Path, data_dir: Path, eve_model: Path) -> None:
    from typer.testing import CliRunner

    from trustmesh.cli import app

    path = tmp_path / "alerts-only.json"
    path.write_text("".join(_alert_lines(data_dir)))
    out = tmp_path / "alerts.jsonl"
    result = CliRunner().invoke(app, ["detect", "--model", str(eve_model), "--input", str(path), "--out", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["flows"] == 0 and summary["signature_alerts"] == summary["alerts"] == 745
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(docs) == 745 and docs[0]["rule"]["ruleset"] == "suricata"


def test_followed_eve_log_carries_its_alerts(tmp_path: Path, data_dir: Path) -> None:
    import threading

    from trustmesh.flows import follow_suricata_eve

    with gzip.open(data_dir / EVE, "rt", encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(400)]
    want = sum(json.loads(line)["event_type"] == "alert" for line in lines)
    flows_want = sum(json.loads(line)["event_type"] == "flow" for line in lines)
    path = tmp_path / "eve.json"
    path.write_text("".join(lines))
    got: dict[str, int] = {"alerts": 0, "flows": 0}
    done = threading.Event()

    def consume() -> None:
        gen = follow_suricata_eve(path, batch_size=100, poll_s=0.05)
        for batch in gen:
            got["alerts"] += len(batch.attrs.get("suricata_alerts", ()))
            got["flows"] += len(batch)
            if got["alerts"] >= want and got["flows"] >= flows_want:
                done.set()
                return

    threading.Thread(target=consume, daemon=True).start()
    assert want > 0 and done.wait(30), got
    assert got == {"alerts": want, "flows": flows_want}


def test_alerts_riding_on_a_flow_batch_are_fused_with_it(tmp_path: Path, data_dir: Path, eve_model: Path) -> None:
    from trustmesh.flows import iter_suricata_eve

    batch = next(iter(iter_suricata_eve(data_dir / EVE, 5000)))
    uids = set(batch["uid"].astype(str))
    riding = [a for b in iter_eve_alerts(data_dir / EVE) for a in b if str(a.flow_id) in uids][:50]
    assert riding
    batch.attrs["suricata_alerts"] = riding  # as a followed EVE log delivers them
    cfg = PipelineConfig(ledger_dir=tmp_path / "ledger", state_dir=tmp_path / "state", model=eve_model)
    pipeline = Pipeline.from_config(cfg)
    outcome = pipeline.process(batch, "follow:eve.json")
    summary = pipeline.close()
    sig = [a for _, a in outcome.alerts if a.detector == "suricata"]
    assert len(sig) == len(riding) and summary.alerts >= len(riding)
    assert all("ml" in a.extra for a in sig)  # every one found its flow's score in the same batch
