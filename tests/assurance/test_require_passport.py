"""`run` (require_passport = true) and `detect --require-passport` refuse a model without a verifying passport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trustmesh.assurance import build_passport, passport_path, require_passport
from trustmesh.errors import ConfigError, PassportError
from trustmesh.ledger import NoteSigner


def test_missing_changed_and_good_passports(gbdt: Any) -> None:
    target = passport_path(gbdt.path)
    target.unlink(missing_ok=True)
    with pytest.raises(PassportError, match="no passport"):
        require_passport(gbdt.path)
    build_passport(gbdt.path, NoteSigner.generate("p")).write(target)
    try:
        assert require_passport(gbdt.path).model_id == gbdt.manifest.model_id
        doc = json.loads(target.read_text())
        doc["lineage"]["seed"] = 12345
        target.write_text(json.dumps(doc))
        with pytest.raises(PassportError, match="lineage.seed"):
            require_passport(gbdt.path)
    finally:
        target.unlink()
    with pytest.raises(PassportError, match="default"):
        require_passport(None)


def test_run_refuses_the_model(gbdt: Any, tmp_path: Path) -> None:
    from trustmesh.pipeline import Pipeline, PipelineConfig

    cfg = PipelineConfig(ledger_dir=tmp_path / "led", state_dir=tmp_path / "state", model=gbdt.path,
                         require_passport=True)
    with pytest.raises(PassportError, match="no passport"):
        Pipeline.from_config(cfg)
    assert not (tmp_path / "led").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="prove_sample_rate"):
        PipelineConfig(ledger_dir=tmp_path, state_dir=tmp_path, prove_sample_rate=1.5)


def test_detect_refuses_the_model(gbdt: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trustmesh.cli import app

    passport_path(gbdt.path).unlink(missing_ok=True)
    res = CliRunner().invoke(app, ["detect", "--input", str(tmp_path / "x.csv"), "--out", str(tmp_path / "a.jsonl"),
                                   "--model", str(gbdt.path), "--require-passport"])
    assert res.exit_code == 1 and "no passport" in res.output


def test_pipeline_alert_entries_commit_their_features_and_queue_proofs(gbdt: Any, tmp_path: Path) -> None:
    import numpy as np

    from trustmesh.assurance import feature_commitments
    from trustmesh.flows import CANONICAL_COLUMNS
    from trustmesh.ledger import Ledger
    from trustmesh.pipeline import Pipeline, PipelineConfig

    flows = gbdt.test_features.iloc[:300].reset_index(drop=True).copy()
    for col in CANONICAL_COLUMNS:
        if col not in flows.columns:
            flows[col] = np.nan
    flows["uid"] = [f"C{i}" for i in range(len(flows))]
    flows["ts"] = 1_700_000_000.0 + np.arange(len(flows))
    flows["src_ip"], flows["dst_ip"] = "192.0.2.10", "192.0.2.20"
    cfg = PipelineConfig(ledger_dir=tmp_path / "led", state_dir=tmp_path / "state", model=gbdt.path,
                         prove_sample_rate=1.0)
    pipe = Pipeline.from_config(cfg)
    try:
        pipe.process(flows, "table")
    finally:
        pipe.close()
    with Ledger.open(tmp_path / "led", read_only=True) as led:
        alerts = [led.entry(i) for i in range(led.size) if led.entry(i).kind == "alert"]
        ml = [e for e in alerts if e.payload["trustmesh"].get("model_id") == gbdt.manifest.model_id]
        assert ml, "the model raised no alert on 300 TON_IoT rows"
        tm = ml[0].payload["trustmesh"]
        blob = json.loads(led.get_blob(tm["features_blob"]))
        row = blob["rows"][tm["features_sha256"]]
        digest, _ = feature_commitments(blob["features"], np.asarray([[np.nan if v is None else v for v in row]]))
        assert digest[0] == tm["features_sha256"]
    queued = [json.loads(line) for line in (tmp_path / "state" / "prove-queue.jsonl").read_text().splitlines()]
    assert len(queued) == len(ml) and {q["model_id"] for q in queued} == {gbdt.manifest.model_id}
