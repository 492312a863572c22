"""``trustmesh run`` learns a site baseline for a configured period, then detects with it (docs/baseline.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from trustmesh.detect import IsolationForestDetector, load_model, save_model
from trustmesh.errors import ConfigError
from trustmesh.flows import open_source, ton_iot_to_canonical
from trustmesh.ledger import Ledger
from trustmesh.pipeline import Pipeline, PipelineConfig

ZEEK_SITE = "logs/zeek/slips-test9-mixed/conn.log.gz"  # one host's real traffic over 253 s


@pytest.fixture(scope="module")
def base_model(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = pd.read_csv(data_dir / "ton-iot/network/train_test_network.csv.gz", encoding="utf-8-sig",
                      low_memory=False).sample(3000, random_state=3)
    flows = ton_iot_to_canonical(raw)
    cols = ["dst_port", "proto", "duration", "src_bytes", "dst_bytes", "src_pkts", "dst_pkts"]
    det = IsolationForestDetector(seed=0, n_estimators=30).fit(flows[cols])
    path = tmp_path_factory.mktemp("base") / "base.tm"
    save_model(det, path)
    return path


def test_run_learns_then_switches_and_records_it(tmp_path: Path, base_model: Path, data_dir: Path) -> None:
    cfg = PipelineConfig(ledger_dir=tmp_path / "ledger", state_dir=tmp_path / "state", model=base_model,
                         batch_size=64, baseline_s=150.0, drift_window=100)
    pipeline = Pipeline.from_config(cfg)
    first_model = pipeline.model_id
    pipeline.run([open_source(data_dir / ZEEK_SITE)])
    summary = pipeline.close()

    assert summary.flows == 576 and pipeline.model_id != first_model
    with Ledger.open(tmp_path / "ledger", read_only=True) as ledger:
        entries = [ledger.entry(i) for i in range(ledger.size)]
    models = [i for i, e in enumerate(entries) if e.kind == "model" and e.payload.get("model_id") != "behaviour-v1"]
    switch = [i for i, e in enumerate(entries) if e.kind == "model.switch"]
    assert len(models) == 2 and len(switch) == 1
    learned = entries[models[1]]
    assert learned.payload["kind"] == "site-baseline" and learned.payload["model_id"] == pipeline.model_id
    assert learned.payload["training"]["learned_in_run"] and learned.payload["training"]["duration_s"] <= 150.0
    assert entries[switch[0]].refs == (models[0], models[1])
    assert entries[switch[0]].payload["from_model_id"] == first_model
    # model alerts before the switch cite the configured model, after it the learned one
    alerts = [(i, e.refs, e.payload["trustmesh"]) for i, e in enumerate(entries) if e.kind == "alert"]
    ml = [(i, refs, doc["model_id"]) for i, refs, doc in alerts if doc["detector"] == "ml"]
    assert any(i < switch[0] for i, _, _ in ml), "the configured model scored the learning period"
    assert all(refs == (models[0],) and mid == first_model for i, refs, mid in ml if i < switch[0])
    assert all(refs == (models[1],) and mid == pipeline.model_id for i, refs, mid in ml if i > switch[0])
    det, manifest = load_model(tmp_path / "state" / "site-baseline.tm")
    assert manifest.model_id == pipeline.model_id and det.name == "site-baseline"


def test_run_records_a_learning_period_that_never_completed(tmp_path: Path, base_model: Path,
                                                            data_dir: Path) -> None:
    cfg = PipelineConfig(ledger_dir=tmp_path / "ledger", state_dir=tmp_path / "state", model=base_model,
                         baseline_s=10_000.0)
    pipeline = Pipeline.from_config(cfg)
    pipeline.run([open_source(data_dir / ZEEK_SITE)])
    pipeline.close()
    with Ledger.open(tmp_path / "ledger", read_only=True) as ledger:
        kinds = [ledger.entry(i).kind for i in range(ledger.size)]
        last = [ledger.entry(i) for i in range(ledger.size) if ledger.entry(i).kind == "model.baseline"]
    assert "model.switch" not in kinds and len(last) == 1 and last[0].payload["status"] == "incomplete"


def test_baseline_table_in_the_run_config(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('[baseline]\nduration_s = 90\ntarget_fpr = 0.005\nout = "learned.tm"\n', encoding="utf-8")
    cfg = PipelineConfig.load(toml)
    assert cfg.baseline_s == 90 and cfg.baseline_target_fpr == 0.005 and cfg.baseline_out == tmp_path / "learned.tm"
    for body, message in (("duration_s = 0", "duration_s must be > 0"), ('duration_s = "x"', "must be a number"),
                          ("seconds = 5", "unknown key baseline.seconds")):
        toml.write_text(f"[baseline]\n{body}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            PipelineConfig.load(toml)


def test_run_records_drift_of_a_site_baseline(tmp_path: Path, data_dir: Path) -> None:
    from trustmesh.detect import fit_site_baseline
    from trustmesh.flows import read_flows

    flows = read_flows(data_dir / ZEEK_SITE)
    det, report = fit_site_baseline(flows, check_attacks=False)
    save_model(det, tmp_path / "site.tm", data_digest=report.data_digest)
    same, shifted = tmp_path / "same.csv", tmp_path / "shifted.csv"
    flows.to_csv(same, index=False)
    # the same hosts and services, but every transfer 30x larger and 10x longer
    flows.assign(src_bytes=flows["src_bytes"] * 30, dst_bytes=flows["dst_bytes"] * 30,
                 duration=flows["duration"] * 10).to_csv(shifted, index=False)
    drift: dict[str, list[dict[str, object]]] = {}
    for name, source in (("same", same), ("shifted", shifted)):
        cfg = PipelineConfig(ledger_dir=tmp_path / name / "ledger", state_dir=tmp_path / name / "state",
                             model=tmp_path / "site.tm", drift_window=500)
        pipeline = Pipeline.from_config(cfg)
        pipeline.run([open_source(source)])
        pipeline.close()
        with Ledger.open(tmp_path / name / "ledger", read_only=True) as ledger:
            entries = [ledger.entry(i) for i in range(ledger.size)]
        drift[name] = [e.payload for e in entries if e.kind == "model.drift"]
        assert all(e.refs == (0,) for e in entries if e.kind == "model.drift")
    assert drift["same"] == []
    assert len(drift["shifted"]) == 1 and drift["shifted"][0]["drifted"] is True
    assert drift["shifted"][0]["model_id"] == load_model(tmp_path / "site.tm")[1].model_id
