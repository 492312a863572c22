"""The trust loop on real data: pcap -> alerts -> incidents -> decisions -> ledger, provably linked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from trustmesh.detect import load_model
from trustmesh.errors import ConfigError, InputError
from trustmesh.flows import open_source
from trustmesh.ledger import Ledger, audit, verify_inclusion
from trustmesh.pipeline import Pipeline, PipelineConfig, alerts_from_scores, open_sources

from _ton_models import ton_gbdt  # type: ignore[import-not-found]

SYNSCAN = "pcaps/practical-packet-analysis/synscan.pcapng"
SCANNER = "172.16.0.8"


@pytest.fixture(scope="module")
def model_path(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small multi-class GBDT trained on real TON_IoT flows mapped to the canonical schema."""
    return ton_gbdt(data_dir, tmp_path_factory.mktemp("model"), 8000, 1, multiclass=True)


def _config(tmp_path: Path, model: Path, **kw: object) -> PipelineConfig:
    return PipelineConfig(ledger_dir=tmp_path / "ledger", state_dir=tmp_path / "state", model=model,
                          batch_size=512, **kw)  # type: ignore[arg-type]


def test_pcap_run_links_every_step_in_the_ledger(tmp_path: Path, model_path: Path, data_dir: Path) -> None:
    pipeline = Pipeline.from_config(_config(tmp_path, model_path))
    pipeline.run([open_source(data_dir / SYNSCAN)])
    summary = pipeline.close()

    assert summary.flows > 1900 and summary.alerts > 0 and summary.incidents >= 1
    assert summary.decisions >= 1 and not summary.errors
    report = audit(tmp_path / "ledger")
    assert report.size == summary.last_index + 1
    with Ledger.open(tmp_path / "ledger", read_only=True) as ledger:
        entries = [ledger.entry(i) for i in range(ledger.size)]
        kinds = [e.kind for e in entries]
        assert kinds[0] == "model" and kinds[1] == "pipeline.start" and kinds[-1] == "pipeline.stop"
        results = [i for i, e in enumerate(entries) if e.kind == "action_result"]
        assert results, "the scan must lead to at least one (dry-run) action"
        # walk the references from an action back to the packet evidence
        start = results[0]
        proof = ledger.prove_inclusion(start, ledger.size)
        verify_inclusion(proof, ledger.latest_checkpoint(), ledger.entry_bytes(start))
        assert entries[start].payload["status"] == "dry_run"
        decision = entries[start].refs[-1]
        assert entries[decision].kind == "decision"
        incident = next(r for r in entries[decision].refs if entries[r].kind == "incident")
        alert_refs = [r for r in entries[incident].refs if entries[r].kind == "alert"]
        assert alert_refs and all(r < incident for r in entries[incident].refs)
        assert any(entries[r].payload["source"]["ip"] == SCANNER for r in alert_refs)
        # model alerts cite the model entry (0); behaviour alerts the behaviour engine's entry (2)
        assert all(entries[r].refs in ((0,), (2,)) for r in alert_refs), "alerts cite a model entry"
        assert entries[2].kind == "model" and entries[2].payload["kind"] == "behaviour"

    # the auditor's view: one command proves the action and everything it was based on
    from typer.testing import CliRunner

    from trustmesh.cli import app

    out = CliRunner().invoke(app, ["ledger", "prove", str(tmp_path / "ledger"), "--index", str(start),
                                   "--with-refs", "--max-refs", "100000", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    kinds = [item["kind"] for item in doc["lineage"]]
    assert set(kinds[:2]) == {"decision", "incident"} and "alert" in kinds and "model" in kinds
    assert all(item["proof"]["treeSize"] == doc["treeSize"] for item in doc["lineage"])


def test_alerts_only_above_threshold_with_ecs_fields() -> None:
    flows = pd.DataFrame({"ts": [1.0, 2.0, 3.0], "uid": ["a", "b", "c"], "src_ip": ["10.0.0.1"] * 3,
                          "src_port": [1, 2, 3], "dst_ip": ["10.0.0.2"] * 3, "dst_port": [22, 23, 80],
                          "proto": ["tcp"] * 3, "service": ["-", "ssh", "http"]})
    alerts = alerts_from_scores(flows, pd.Series([0.2, 0.9, 0.99]).to_numpy(), threshold=0.5, model_id="m",
                                source_name="x.pcap")
    assert [a.flow_id for a in alerts] == ["b", "c"]
    ecs = alerts[1].to_ecs()
    assert ecs["destination"]["port"] == 80 and ecs["event"]["severity"] == 3 and ecs["network"]["protocol"] == "http"
    assert "service" not in ecs and alerts[0].application == "ssh"


class _Vanishing:
    """A source that yields one real batch and then disappears (as a deleted log file would)."""

    name = "vanishing"

    def __init__(self, batch: pd.DataFrame) -> None:
        self.batch = batch

    def iter_batches(self, batch_size: int = 1024) -> Iterator[pd.DataFrame]:
        yield self.batch
        raise InputError("vanishing: file disappeared mid-run")


def test_source_failure_is_recorded_and_the_run_goes_on(tmp_path: Path, model_path: Path,
                                                        data_dir: Path) -> None:
    batch = next(open_source(data_dir / SYNSCAN).iter_batches(300))
    pipeline = Pipeline.from_config(_config(tmp_path, model_path))
    sources = [_Vanishing(batch), *open_sources([str(tmp_path / "missing.pcap"),
                                                 str(data_dir / "pcaps/stratosphere-slips/test12-icmp-portscan.pcap")])]
    pipeline.run(sources)
    summary = pipeline.close()
    assert len(summary.errors) == 2
    assert "disappeared" in summary.errors[0] and "not found" in summary.errors[1]
    assert summary.flows > 300  # the first batch and the last source were both scored
    with Ledger.open(tmp_path / "ledger", read_only=True) as ledger:
        errors = [ledger.entry(i) for i in range(ledger.size) if ledger.entry(i).kind == "pipeline.error"]
        assert len(errors) == 2
        alerts_before_error = [i for i in range(ledger.size) if ledger.entry(i).kind == "alert"]
        assert alerts_before_error, "alerts scored before the failure are kept"
    audit(tmp_path / "ledger")


def test_reopening_the_ledger_continues_the_same_log(tmp_path: Path, model_path: Path, data_dir: Path) -> None:
    cfg = _config(tmp_path, model_path)
    for _ in range(2):
        p = Pipeline.from_config(cfg)
        p.run([open_source(data_dir / "pcaps/stratosphere-slips/test12-icmp-portscan.pcap")])
        p.close()
    with Ledger.open(tmp_path / "ledger", read_only=True) as ledger:
        assert [ledger.entry(i).kind for i in range(ledger.size)].count("pipeline.start") == 2
    audit(tmp_path / "ledger")
    with pytest.raises(ConfigError, match="origin"):
        Pipeline.from_config(_config(tmp_path, model_path, origin="another.example/log"))


def test_config_file_is_checked_key_by_key(tmp_path: Path) -> None:
    good = tmp_path / "ok.toml"
    good.write_text('[pipeline]\norigin = "a.example/log"\nsources = ["x.pcap"]\n[guards]\nallowlist = ["10.0.0.1"]\n'
                    '[response]\nenforce = false\n', encoding="utf-8")
    cfg = PipelineConfig.load(good)
    assert cfg.sources == (str(tmp_path / "x.pcap"),) and cfg.guards.allowlist == ("10.0.0.1",)
    assert cfg.enforce is False and cfg.ledger_dir == tmp_path / "trustmesh-ledger"
    bad = tmp_path / "bad.toml"
    bad.write_text("[pipeline]\nbatchsize = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.toml: unknown key pipeline.batchsize"):
        PipelineConfig.load(bad)
    bad.write_text('[guards]\nallowlist = ["not-an-ip"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not-an-ip"):
        PipelineConfig.load(bad)


@pytest.mark.slow
def test_sigterm_finishes_the_batch_and_checkpoints(tmp_path: Path, model_path: Path, data_dir: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[pipeline]\nmodel = "{model_path}"\nsources = ["{data_dir / "pcaps/stratosphere-slips/test7-malicious.pcap"}"]\n'
        'replay = "recorded"\nreplay_speed = 4.0\nbatch_size = 64\n', encoding="utf-8")
    exe = Path(sys.executable).with_name("trustmesh")
    proc = subprocess.Popen([str(exe), "run", "--config", str(cfg), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ledger_dir = tmp_path / "trustmesh-ledger"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (ledger_dir / "ledger.sqlite").exists():
        time.sleep(0.2)
    time.sleep(3)  # the capture lasts 642 s of recorded time: the run is mid-stream now
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert '"interrupted": true' in out
    report = audit(ledger_dir)
    with Ledger.open(ledger_dir, read_only=True) as ledger:
        assert ledger.entry(ledger.size - 1).kind == "pipeline.stop"
        assert ledger.latest_checkpoint().size == ledger.size == report.size


def test_loaded_model_scores_canonical_flows_from_any_source(model_path: Path, data_dir: Path) -> None:
    detector, _ = load_model(model_path)
    for rel in ("logs/zeek/slips-test10-mixed/conn.log.gz", "logs/suricata/test6-malicious.suricata.json.gz", SYNSCAN):
        batch = next(open_source(data_dir / rel).iter_batches(200))
        scores = detector.score(batch, fill_missing=True)
        assert len(scores) == len(batch) and ((scores >= 0) & (scores <= 1)).all(), rel


def test_following_a_zeek_log_scores_rows_as_they_arrive(tmp_path: Path, model_path: Path, data_dir: Path) -> None:
    import gzip
    import threading

    raw = gzip.open(data_dir / "logs/zeek/slips-test10-mixed/conn.log.gz", "rt", encoding="utf-8").read()
    lines = [ln + "\n" for ln in raw.splitlines() if not ln.startswith("#close")]
    header = [ln for ln in lines if ln.lstrip(" \t").startswith("#")]
    body = [ln for ln in lines if not ln.lstrip(" \t").startswith("#")]
    zeek = tmp_path / "zeek"
    zeek.mkdir()
    (zeek / "conn.log").write_text("".join(header) + "".join(body[:5]), encoding="utf-8")
    pipeline = Pipeline.from_config(_config(tmp_path, model_path))
    stop = threading.Event()

    def grow() -> None:
        time.sleep(0.5)
        with (zeek / "conn.log").open("a", encoding="utf-8") as fh:
            fh.writelines(body[5:])

    def seen(_name: str, _batch: object) -> None:
        if pipeline.summary.flows >= len(body):
            stop.set()

    writer = threading.Thread(target=grow)
    writer.start()
    timer = threading.Timer(60, stop.set)  # bound the test even if rows went missing
    timer.start()
    pipeline.run(open_sources([f"follow:{zeek}"]), stop=stop, on_batch=seen)
    timer.cancel()
    writer.join()
    summary = pipeline.close()
    assert summary.flows == len(body) and summary.interrupted
    audit(tmp_path / "ledger")


def test_run_command_reports_bad_config_and_bad_sources_in_one_line(tmp_path: Path, model_path: Path,
                                                                    data_dir: Path) -> None:
    exe = str(Path(sys.executable).with_name("trustmesh"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[pipeline]\nreplay = \"sometimes\"\n", encoding="utf-8")
    run = subprocess.run([exe, "run", "--config", str(bad)], capture_output=True, text=True, check=False)
    assert run.returncode == 2 and "replay must be 'fast' or 'recorded'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr

    good = tmp_path / "run.toml"
    good.write_text(f'[pipeline]\nmodel = "{model_path}"\n', encoding="utf-8")
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"\x00\x01not a capture at all" * 10)
    run = subprocess.run([exe, "run", "--config", str(good), "--json", "--source", str(garbage),
                          "--source", str(data_dir / "pcaps/stratosphere-slips/test12-icmp-portscan.pcap")],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 2, run.stderr
    doc = json.loads(run.stdout)
    assert doc["flows"] > 0 and len(doc["errors"]) == 1 and "garbage.pcap" in doc["errors"][0]
    audit(tmp_path / "trustmesh-ledger")
