"""The runner: time-based checkpoints, micro-batches, and stops that never wait on a quiet source."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.flows import open_source
from trustmesh.ledger import Entry, Ledger, audit
from trustmesh.pipeline import Pipeline, PipelineConfig, open_sources

from _ton_models import ton_gbdt  # type: ignore[import-not-found]

ZEEK = "logs/zeek/slips-test10-mixed/conn.log.gz"


@pytest.fixture(scope="module")
def model_path(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ton_gbdt(data_dir, tmp_path_factory.mktemp("model"), 4000, 2)


def _zeek_log(data_dir: Path, folder: Path, rows: int) -> int:
    raw = gzip.open(data_dir / ZEEK, "rt", encoding="utf-8").read()
    lines = [ln + "\n" for ln in raw.splitlines() if not ln.startswith("#close")]
    header = [ln for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if not ln.startswith("#")][:rows]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conn.log").write_text("".join(header) + "".join(body), encoding="utf-8")
    return sum(len(b) for b in open_source(folder).iter_batches(1000))  # rows the reader accepts


def test_quiet_source_gets_a_time_based_checkpoint_and_stops_at_once(tmp_path: Path, model_path: Path,
                                                                    data_dir: Path) -> None:
    rows = _zeek_log(data_dir, tmp_path / "zeek", 20)
    cfg = PipelineConfig(ledger_dir=tmp_path / "ledger", state_dir=tmp_path / "state", model=model_path,
                         checkpoint_interval_s=0.5, checkpoint_every=1_000_000)
    pipeline = Pipeline.from_config(cfg)
    stop = threading.Event()
    signed: list[bool] = []

    def watch() -> None:  # while the log stays quiet, the unsigned tail must be signed within the interval
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and pipeline.summary.flows < rows:
            time.sleep(0.05)
        time.sleep(1.5)
        cp = pipeline.ledger.latest_checkpoint()
        signed.append(cp is not None and cp.size == pipeline.ledger.size)
        stop.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    pipeline.run(open_sources([f"follow:{tmp_path / 'zeek'}"]), stop=stop)
    stopped_after = time.monotonic()
    watcher.join()
    summary = pipeline.close()
    assert summary.flows == rows and summary.interrupted
    assert signed == [True], "entries stayed unsigned past checkpoint_interval_s"
    assert time.monotonic() - stopped_after < 5
    assert audit(tmp_path / "ledger").size == summary.last_index + 1


class _Bursts:
    """A streaming source (``streaming`` attribute): one-row frames in bursts, then quiet until stopped."""

    streaming = True

    def __init__(self, flows: pd.DataFrame, bursts: int, stop: threading.Event) -> None:
        self.flows, self.bursts, self.stop = flows, bursts, stop

    @property
    def name(self) -> str:
        return "bursts"

    def iter_batches(self, batch_size: int = 1024) -> Iterator[pd.DataFrame]:
        per = len(self.flows) // self.bursts
        for b in range(self.bursts):
            for i in range(b * per, (b + 1) * per):
                yield self.flows.iloc[i:i + 1].reset_index(drop=True)
            time.sleep(0.3)
        self.stop.wait(30)


def test_streaming_flows_are_scored_in_micro_batches(tmp_path: Path, model_path: Path, data_dir: Path) -> None:
    flows = next(open_source(data_dir / ZEEK).iter_batches(120))
    cfg = PipelineConfig(ledger_dir=tmp_path / "ledger", state_dir=tmp_path / "state", model=model_path,
                         micro_batch_s=0.05)
    pipeline = Pipeline.from_config(cfg)
    stop = threading.Event()
    sizes: list[int] = []

    def seen(_name: str, outcome: object) -> None:
        sizes.append(int(getattr(outcome, "flows")))
        if sum(sizes) >= len(flows):
            stop.set()

    threading.Timer(30, stop.set).start()
    pipeline.run([_Bursts(flows, 3, stop)], stop=stop, on_batch=seen)
    pipeline.close()
    assert sum(sizes) == len(flows)
    # 120 one-row frames in 3 bursts: far fewer batches than flows (each burst is cut by time, not per flow)
    assert len(sizes) <= 12, sizes
    assert max(sizes) >= 20


def _unsigned_tail_ledger(path: Path) -> None:
    with Ledger.create(path, "test.trustmesh/tail") as led:
        led.append([Entry("note", {"i": i}, time=1.0) for i in range(3)])
        led.checkpoint()
        led.append([Entry("note", {"i": i}, time=2.0) for i in range(2)])


def test_verify_reports_the_unsigned_tail_and_can_require_a_checkpoint(tmp_path: Path) -> None:
    _unsigned_tail_ledger(tmp_path / "log")
    runner = CliRunner()
    plain = runner.invoke(app, ["ledger", "verify", str(tmp_path / "log")])
    assert plain.exit_code == 0, plain.output
    assert "2 entries past the last checkpoint" in " ".join(plain.output.split())
    doc = json.loads(runner.invoke(app, ["ledger", "verify", str(tmp_path / "log"), "--json"]).output)
    assert doc["unsigned_entries"] == 2
    strict = runner.invoke(app, ["ledger", "verify", str(tmp_path / "log"), "--require-checkpoint"])
    assert strict.exit_code == 1
    assert "2 entries lie past the last signed checkpoint" in " ".join(strict.output.split())
    with Ledger.open(tmp_path / "log") as led:
        led.checkpoint()
    assert runner.invoke(app, ["ledger", "verify", str(tmp_path / "log"), "--require-checkpoint"]).exit_code == 0


@pytest.mark.slow
def test_sigterm_ends_a_quiet_follow_run_within_5_s_with_a_signed_checkpoint(tmp_path: Path, model_path: Path,
                                                                            data_dir: Path) -> None:
    rows = _zeek_log(data_dir, tmp_path / "zeek", 10)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[pipeline]\nmodel = "{model_path}"\nsources = ["follow:{tmp_path / "zeek"}"]\n'
                   "checkpoint_interval_s = 60\n", encoding="utf-8")
    exe = Path(sys.executable).with_name("trustmesh")
    proc = subprocess.Popen([str(exe), "run", "--config", str(cfg), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ledger_dir = tmp_path / "trustmesh-ledger"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (ledger_dir / "ledger.sqlite").exists():
        time.sleep(0.2)
    time.sleep(4.0)  # model loaded, the log's rows scored; from here on the log is quiet
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert took < 5, f"SIGTERM took {took:.1f} s"
    doc = json.loads(out)
    assert doc["interrupted"] and doc["flows"] == rows
    verify = CliRunner().invoke(app, ["ledger", "verify", str(ledger_dir), "--require-checkpoint"])
    assert verify.exit_code == 0, verify.output


def test_runner_settings_are_checked_by_name(tmp_path: Path) -> None:
    from trustmesh.errors import ConfigError

    cfg = tmp_path / "run.toml"
    cfg.write_text('[pipeline]\ncheckpoint_interval_s = 2.5\nmicro_batch_s = 0.01\nledger_url = "http://127.0.0.1:9"\n'
                   'ledger_key = "w.key"\nsources = ["redis://127.0.0.1:6379/eve?group=g"]\n', encoding="utf-8")
    loaded = PipelineConfig.load(cfg)
    assert loaded.checkpoint_interval_s == 2.5 and loaded.micro_batch_s == 0.01
    assert loaded.ledger_key == tmp_path / "w.key"
    assert loaded.sources == ("redis://127.0.0.1:6379/eve?group=g",), "a stream spec is not a path"
    for bad, needle in (("checkpoint_interval_s = 0", "checkpoint_interval_s"), ("micro_batch_s = 9", "micro_batch_s"),
                        ('ledger_url = "http://h:1"', "ledger_key"), ('ledger_url = "ftp://h"\nledger_key = "k"',
                                                                      "ledger_url")):
        cfg.write_text(f"[pipeline]\n{bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=needle):
            PipelineConfig.load(cfg)


def test_early_packets_is_a_checked_pipeline_key_that_reaches_the_live_source(tmp_path: Path) -> None:
    from trustmesh.errors import ConfigError
    from trustmesh.flows._sources import InterfaceSource

    cfg = tmp_path / "run.toml"
    cfg.write_text("[pipeline]\nearly_packets = 64\n", encoding="utf-8")
    loaded = PipelineConfig.load(cfg)
    assert loaded.early_packets == 64 and PipelineConfig(tmp_path, tmp_path).early_packets == 1000
    (source,) = open_sources(["iface:lo"], loaded)
    assert getattr(source, "early_packets") == 64
    assert InterfaceSource("lo", early_packets=64).early_packets == 64
    for bad, needle in (("early_packets = 1", "early_packets must be in"), ("early_packets = true", "early_packets"),
                        ('early_packets = "9"', "early_packets")):
        cfg.write_text(f"[pipeline]\n{bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=needle):
            PipelineConfig.load(cfg)
