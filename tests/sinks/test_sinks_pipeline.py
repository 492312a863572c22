"""Sinks wired into `trustmesh run`: [[sinks]] config, every sink active in dry-run, a failing sink
counted and recorded without stopping the run, the same ECS documents as the ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trustmesh.detect import make_detector, save_model
from trustmesh.errors import ConfigError
from trustmesh.flows import CANONICAL_FEATURES, open_source, read_flows
from trustmesh.ledger import Ledger
from trustmesh.pipeline import Pipeline, PipelineConfig

SYNSCAN = "pcaps/practical-packet-analysis/synscan.pcapng"


@pytest.fixture(scope="module")
def small_model(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An isolation forest fitted on the capture's own flows: quick, real, and it flags the scan's outliers."""
    flows = read_flows(data_dir / SYNSCAN)
    det = make_detector("iforest", seed=0).fit(flows[list(CANONICAL_FEATURES)], None)
    path = tmp_path_factory.mktemp("sinkmodel") / "iforest.model"
    save_model(det, path)
    return path


def _write_config(tmp_path: Path, model: Path, sinks: str) -> Path:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
[pipeline]
ledger_dir = "ledger"
state_dir = "state"
model = "{model}"
batch_size = 512
{sinks}
""")
    return cfg


@pytest.mark.needs_data
def test_run_feeds_every_sink_and_survives_a_dead_one(tmp_path: Path, small_model: Path, data_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TM_TEST_HOOK_SECRET", "s3cret-value")
    cfg_path = _write_config(tmp_path, small_model, """
[[sinks]]
type = "jsonl"
path = "out/alerts.jsonl"

[[sinks]]
type = "bulk"
path = "out/bulk.ndjson"
kinds = ["incident"]

[[sinks]]
type = "webhook"
url = "http://127.0.0.1:9/hook"
secret_env = "TM_TEST_HOOK_SECRET"
retries = 0
timeout_s = 1
""")
    cfg = PipelineConfig.load(cfg_path)
    assert not cfg.enforce  # dry-run, and still every sink is active
    assert "s3cret-value" not in json.dumps(cfg.summary())
    pipeline = Pipeline.from_config(cfg)
    pipeline.run([open_source(data_dir / SYNSCAN)])
    summary = pipeline.close()

    assert summary.alerts > 0 and not summary.errors  # the dead webhook did not stop or fail the run
    lines = [json.loads(x) for x in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    alerts = [d for d in lines if d["event"]["dataset"] == "trustmesh.alert"]
    assert len(alerts) == summary.alerts
    assert any(d["event"]["dataset"] == "trustmesh.incident" for d in lines)
    bulk = (tmp_path / "out" / "bulk.ndjson").read_text().splitlines()
    assert bulk and all(json.loads(x)["event"]["dataset"] == "trustmesh.incident" for x in bulk[1::2])
    stats = summary.sinks
    assert stats["webhook http://127.0.0.1:9/…"]["failed"] == summary.alerts + stats[
        "bulk " + str(tmp_path / "out" / "bulk.ndjson")]["sent"]
    assert stats["jsonl " + str(tmp_path / "out" / "alerts.jsonl")]["failed"] == 0
    with Ledger.open(tmp_path / "ledger", read_only=True) as ledger:
        entries = [ledger.entry(i) for i in range(ledger.size)]
    ledger_alerts = [e.payload for e in entries if e.kind == "alert"]
    assert ledger_alerts == alerts  # the ledger holds the very documents the sinks got
    errors = [e.payload["message"] for e in entries if e.kind == "sink.error"]
    assert errors and all("webhook" in m and "s3cret" not in m and "/hook" not in m for m in errors)
    assert "/hook" not in json.dumps(entries[1].payload)  # pipeline.start: the webhook path (often a token) is hidden
    assert entries[-1].payload["sinks"] == stats
    deliveries = (tmp_path / "state" / "webhook-deliveries.jsonl").read_text().splitlines()
    assert {json.loads(d)["status"] for d in deliveries} <= {"failed", "skipped"}


def test_sink_config_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.model"
    cases = {
        '[[sinks]]\ntype = "kafka"\n': "type must be one of",
        '[[sinks]]\ntype = "jsonl"\npath = "a"\ncolour = "red"\n': "unknown key(s) colour",
        '[[sinks]]\ntype = "jsonl"\n': "needs path",
        '[[sinks]]\ntype = "syslog"\nhost = "127.0.0.1"\nprotocol = "sctp"\n': "protocol must be udp or tcp",
        '[[sinks]]\ntype = "jsonl"\npath = "a"\nkinds = ["decision"]\n': "kinds must be",
        '[[sinks]]\ntype = "webhook"\nurl = "http://127.0.0.1:9/"\nsecret_env = "TM_UNSET_SECRET"\n': "TM_UNSET_SECRET",
        '[sinks]\nx = 1\n': "array of tables",
    }
    monkeypatch.delenv("TM_UNSET_SECRET", raising=False)
    for text, message in cases.items():
        cfg = _write_config(tmp_path, model, text)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
            PipelineConfig.load(cfg)
        assert str(cfg) in str(info.value)


def test_redis_password_is_redacted_in_the_ledger_summary(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path, tmp_path / "m.model", '[[sinks]]\ntype = "redis"\nurl = "redis://:hunter2@127.0.0.1:6379/0"\n')
    summary = PipelineConfig.load(cfg).summary()
    assert summary["sinks"][0]["url"] == "redis://:***@127.0.0.1:6379/0"
