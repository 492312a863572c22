"""The federated model is a detection-core artifact: load_model, evaluate, lineage, tamper refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from trustmesh.cli._app import app
from trustmesh.detect import MLPDetector, load_model
from trustmesh.errors import ArtifactDigestError
from trustmesh.federated import (
    FLConfig,
    MLPModel,
    RoundRecorder,
    commit_arrays,
    load_federated_data,
    open_round_ledger,
    run_inprocess,
    save_federated_model,
)
from trustmesh.flows import load_dataset

pytestmark = [pytest.mark.needs_data]

runner = CliRunner()


def _train(name: str, data_dir: Path, out: Path, ledger: Path | None = None) -> tuple[Any, Any, Any, Any]:
    data = load_federated_data(name, data_dir, max_train=3000, max_test=600, seed=0)
    cfg = FLConfig(n_sites=3, rounds=2, seed=0)
    recorder = RoundRecorder(open_round_ledger(ledger) if ledger is not None else None)
    result = run_inprocess(cfg, data, recorder=recorder)
    manifest = save_federated_model(out, result.final_weights, data, config=cfg.describe(), hidden=cfg.train.hidden,
                                    metrics=result.metrics, epsilon=result.epsilon, recorder=recorder)
    return data, cfg, result, manifest


@pytest.fixture(scope="module")
def ton_model(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Any, Any, Any, Any]:
    root = tmp_path_factory.mktemp("fl-artifact")
    out = root / "fl.model"
    data, cfg, result, manifest = _train("ton-iot-network", data_dir, out, root / "ledger")
    return out, data, cfg, result, manifest


def test_saved_federated_model_loads_and_scores_like_the_federated_model(
        ton_model: tuple[Path, Any, Any, Any, Any], data_dir: Path) -> None:
    out, data, cfg, result, _ = ton_model
    fed = MLPModel(data.n_features, len(data.classes), cfg.train.hidden, seed=cfg.train.model_seed)
    fed.set_weights(result.final_weights)
    raw = load_dataset("ton-iot-network", data_dir=data_dir).features.iloc[data.test_rows]

    det, manifest = load_model(out)
    scores = det.score(raw)

    assert isinstance(det, MLPDetector)
    assert manifest.classes == data.classes and det.classes_ == data.classes
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    np.testing.assert_allclose(scores, 1.0 - fed.predict_proba(data.X_test)[:, 0], atol=1e-5)
    assert np.array_equal(det.predict_proba_matrix(det.encode(raw)).argmax(axis=1), fed.predict(data.X_test))


def test_manifest_carries_split_calibration_and_ledger_lineage(ton_model: tuple[Path, Any, Any, Any, Any]) -> None:
    out, _, _, result, manifest = ton_model
    ledger = open_round_ledger(out.parent / "ledger")
    det, _ = load_model(out)
    fed = manifest.training["federated"]

    assert manifest.training["split"]["kind"] == "stratified"
    assert manifest.calibration["rows"].startswith("server-held validation share of the training")
    assert 0.0 < manifest.threshold <= 1.0
    assert fed["ledger"]["round_indices"] == [0, 1] and fed["ledger"]["model_entry"] == 2
    assert fed["ledger"]["origin"] == ledger.origin
    assert fed["config"]["aggregator"] == "fedavg" and fed["round_aggregates"] == [r.aggregate_sha256
                                                                                   for r in result.rounds]
    entry = ledger.entry(2)
    assert entry.kind == "fl.model" and list(entry.refs) == [0, 1]
    # the ledger commits to the weights the loaded detector actually holds
    assert entry.payload["model_sha256"] == fed["weights_sha256"] == commit_arrays(det.get_weights())


def test_trustmesh_evaluate_scores_only_the_held_out_rows(ton_model: tuple[Path, Any, Any, Any, Any],
                                                          data_dir: Path) -> None:
    out, _, _, _, manifest = ton_model

    res = runner.invoke(app, ["evaluate", "--model", str(out), "--dataset", "ton-iot-network",
                              "--data-dir", str(data_dir)])

    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    assert doc["split"] == "held-out (manifest)"
    assert doc["n_test"] == manifest.training["split"]["n_test"]
    assert 0.0 <= doc["macro_f1"] <= 1.0 and doc["f1"] > 0.5  # binary attack-vs-benign is easy here


def test_flipped_artifact_byte_is_refused(ton_model: tuple[Path, Any, Any, Any, Any], tmp_path: Path) -> None:
    out = ton_model[0]
    copy = tmp_path / "m"
    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    copy.write_bytes(bytes(raw))
    (tmp_path / "m.manifest.json").write_bytes(Path(str(out) + ".manifest.json").read_bytes())

    with pytest.raises(ArtifactDigestError):
        load_model(copy)


def test_nsl_kdd_federated_model_evaluates_on_kddtest(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "nsl.model"
    _train("nsl-kdd", data_dir, out)

    res = runner.invoke(app, ["evaluate", "--model", str(out), "--dataset", "nsl-kdd", "--split", "test",
                              "--data-dir", str(data_dir)])

    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    assert doc["split"] == "test" and doc["n_test"] == 22544
    # scored per attack category (the classes the federated model predicts), not per attack name
    assert set(doc["per_class"]) == {"benign", "dos", "probe", "r2l", "u2r"}
    assert 0.0 <= doc["macro_f1"] <= 1.0 and doc["roc_auc"] > 0.6
