"""The federated autoencoder: benign-only sites, anomaly metrics, the same round machinery, the artifact."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _fl_synth import blobs
from typer.testing import CliRunner

from trustmesh.cli._app import app
from trustmesh.detect import DenseAutoencoderDetector, load_model
from trustmesh.detect.checks import check_detector
from trustmesh.errors import ConfigError
from trustmesh.federated import (
    AnomalyScorer,
    AttackSpec,
    AutoencoderModel,
    FLConfig,
    PartitionSpec,
    RoundRecorder,
    TrainConfig,
    commit_arrays,
    config_from_options,
    load_federated_data,
    open_round_ledger,
    plan_run,
    run_inprocess,
    save_federated_model,
    simulate,
    train_centralized,
)
from trustmesh.privacy import SecAggConfig

runner = CliRunner()
DATA = blobs(n_train=1200, n_test=400)


def _ae(**kw: Any) -> FLConfig:
    return FLConfig(model="autoencoder", **{"n_sites": 3, "rounds": 3, "seed": 0, **kw})


# -- the model ---------------------------------------------------------------------------------------


def test_autoencoder_trains_on_benign_rows_only() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=300)
    a, b = AutoencoderModel(6, (8, 4), seed=1), AutoencoderModel(6, (8, 4), seed=1)

    loss_a = a.train_epochs(X, y, 2, batch_size=32, lr=1e-2, seed=5)
    loss_b = b.train_epochs(X[y == 0], None, 2, batch_size=32, lr=1e-2, seed=5)

    assert loss_a == pytest.approx(loss_b) and loss_a > 0
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)  # attack rows had no influence


def test_autoencoder_without_benign_rows_does_not_train() -> None:
    model = AutoencoderModel(5, (4, 2), seed=0)
    before = model.get_weights()
    X = np.ones((10, 5), dtype=np.float32)

    loss = model.train_epochs(X, np.ones(10, dtype=np.int64), 3)

    assert loss == 0.0
    assert commit_arrays(model.get_weights()) == commit_arrays(before)


def test_autoencoder_weights_load_into_the_detection_core_network() -> None:
    model = AutoencoderModel(7, (6, 3), seed=4)
    rng = np.random.default_rng(1)
    model.train_epochs(rng.normal(size=(64, 7)), None, 1)
    net = DenseAutoencoderDetector.network(7, (6, 3), 0)
    keys = list(net.state_dict())

    net.load_state_dict({k: torch.from_numpy(w) for k, w in zip(keys, model.get_weights(), strict=True)})

    Z = rng.normal(size=(20, 7)).astype(np.float32)
    np.testing.assert_allclose(DenseAutoencoderDetector.reconstruction_rmse(net, Z, 10.0), model.rmse(Z), rtol=1e-6)


def test_config_refuses_unknown_model_and_dp_sgd_for_the_autoencoder() -> None:
    with pytest.raises(ConfigError, match="--model"):
        FLConfig(model="cnn")
    with pytest.raises(ConfigError, match="--target-fpr"):
        FLConfig(model="autoencoder", target_fpr=1.0)
    with pytest.raises(ConfigError, match="dp-sgd"):
        config_from_options(sites=3, rounds=1, model="autoencoder", dp_sgd="noise=1.0,clip=1.0")
    assert config_from_options(sites=3, rounds=1, model="autoencoder").describe()["model"] == "autoencoder"


# -- federated runs on synthetic data -----------------------------------------------------------------


def test_sites_keep_and_count_their_benign_rows_only() -> None:
    plan = plan_run(_ae(), DATA)

    for k in range(3):
        site = plan.site(k)
        assert isinstance(site.model, AutoencoderModel)
        assert set(site.y.tolist()) <= {0}
        assert site.num_examples == int(np.sum(DATA.y_train[plan.parts[k]] == 0)) > 0


def test_inprocess_run_learns_and_reports_anomaly_metrics(tmp_path: Path) -> None:
    ledger = open_round_ledger(tmp_path / "ledger")

    result = run_inprocess(_ae(), DATA, recorder=RoundRecorder(ledger))

    m = result.metrics
    assert m["roc_auc"] > 0.9 and m["f1"] > 0.5
    assert "macro_f1" not in m  # a binary anomaly model; F1 is attack-vs-benign
    assert set(m["per_class_recall"]) == {"attack1", "attack2"}
    assert m["target_fpr"] == 0.01 and m["fpr"] <= 0.05
    assert result.rounds[-1].metrics["roc_auc"] > result.rounds[0].metrics["roc_auc"]
    payload = ledger.entry(result.ledger_indices[-1]).payload
    assert payload["metrics"]["roc_auc"] == m["roc_auc"]
    assert result.config["model"] == "autoencoder"


def test_federated_autoencoder_is_close_to_the_centralized_one() -> None:
    cfg = _ae(rounds=4)

    fed = run_inprocess(cfg, DATA).metrics["roc_auc"]
    central = train_centralized(cfg, DATA)["metrics"]["roc_auc"]

    assert central > 0.95 and fed > central - 0.05


def test_site_without_benign_rows_contributes_nothing_and_is_recorded(tmp_path: Path) -> None:
    # device partition: site 2's group holds attack rows only
    groups = np.where(DATA.y_train == 0, np.array(["dev0", "dev1"])[np.arange(len(DATA.y_train)) % 2], "dev2")
    data = dataclasses.replace(DATA, groups_train=groups)
    cfg = _ae(partition=PartitionSpec.parse("device"))
    ledger = open_round_ledger(tmp_path / "ledger")

    result = run_inprocess(cfg, data, recorder=RoundRecorder(ledger))

    assert plan_run(cfg, data).site(2).num_examples == 0
    for rec in result.rounds:
        assert set(rec.rejected) == {"2"} and "num_examples" in rec.rejected["2"]
        assert set(rec.sites) == {"0", "1", "2"}
    assert ledger.entry(result.ledger_indices[0]).payload["rejected"] == result.rounds[0].rejected
    assert result.metrics["roc_auc"] > 0.9  # the two benign sites still trained the model


def test_robust_aggregation_and_ckks_run_the_autoencoder() -> None:
    attacked = run_inprocess(_ae(n_sites=5, aggregator="multikrum", attack=AttackSpec("sign-flip", 0.2)), DATA)
    ckks = run_inprocess(_ae(he="ckks"), DATA)
    plain = run_inprocess(_ae(), DATA)

    bad = str(attacked.malicious_sites[0])
    assert all(bad in r.rejected for r in attacked.rounds)  # Multi-Krum drops the sign-flipping site
    assert attacked.metrics["roc_auc"] > 0.9
    assert ckks.rounds[0].secure_aggregation == "ckks"
    assert ckks.metrics["roc_auc"] == pytest.approx(plain.metrics["roc_auc"], abs=0.01)


def test_label_flip_site_trains_on_attack_rows() -> None:
    cfg = _ae(attack=AttackSpec("label-flip", 0.34))
    plan = plan_run(cfg, DATA)
    (bad,) = plan.malicious
    site = plan.site(bad)

    # the poisoned site calls its attack rows "normal": it keeps those and drops its real benign rows
    assert site.num_examples == int(np.sum(DATA.y_train[plan.parts[bad]] != 0))


def test_backdoor_success_uses_the_calibrated_threshold() -> None:
    cfg = _ae(attack=AttackSpec("backdoor", 0.0))
    result = run_inprocess(cfg, DATA)
    plan = plan_run(cfg, DATA)
    model = plan.new_model()
    model.set_weights(result.final_weights)
    scorer = AnomalyScorer.calibrate(model, plan.benign_calibration_rows(), cfg.target_fpr)

    assert result.backdoor_success is not None and 0.0 <= result.backdoor_success <= 1.0
    assert result.metrics["threshold"] == pytest.approx(scorer.threshold, abs=1e-6)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning:ray.*")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_flower_simulation_with_secagg_runs_the_autoencoder_like_the_inprocess_loop() -> None:
    cfg = _ae(rounds=2, secagg=SecAggConfig.for_sites(3))

    result, run = simulate(cfg, DATA)
    local = run_inprocess(dataclasses.replace(cfg, secagg=None), DATA)

    assert result.path == "flower-simulation" and len(result.rounds) == 2
    assert all(r.secure_aggregation == "secagg+" and r.commitments == {} for r in result.rounds)
    assert len(run.masked_observations) == 2  # the server saw masked vectors only
    assert result.metrics["roc_auc"] > 0.85
    # the same sites and seeds as the plain in-process loop, up to SecAgg+'s quantization
    assert result.metrics["roc_auc"] == pytest.approx(local.metrics["roc_auc"], abs=0.01)


# -- the detection-core artifact (real data) -----------------------------------------------------------


@pytest.mark.slow  # 15-30 s: fits the detector several times
@pytest.mark.needs_data
def test_dense_autoencoder_detector_conforms(data_dir: Path) -> None:
    from trustmesh.flows import load_dataset

    table = load_dataset("ton-iot-network", data_dir=data_dir)
    sub = table.subset(np.sort(np.random.default_rng(0).choice(len(table), 3000, replace=False)))

    check_detector(lambda: DenseAutoencoderDetector(seed=3, epochs=2), sub.features, sub.labels.to_numpy())


@pytest.fixture(scope="module")
def ton_ae(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Any, Any, Any, Any]:
    root = tmp_path_factory.mktemp("fl-ae")
    data = load_federated_data("ton-iot-network", data_dir, max_train=3000, max_test=600, seed=0)
    cfg = FLConfig(n_sites=3, rounds=8, seed=0, model="autoencoder", train=TrainConfig(local_epochs=5))
    recorder = RoundRecorder(open_round_ledger(root / "ledger"))
    result = run_inprocess(cfg, data, recorder=recorder)
    out = root / "ae.model"
    manifest = save_federated_model(out, result.final_weights, data, config=cfg.describe(), hidden=cfg.train.hidden,
                                    metrics=result.metrics, recorder=recorder, model="autoencoder")
    return out, data, cfg, result, manifest


@pytest.mark.needs_data
def test_saved_autoencoder_loads_and_scores_like_the_federated_model(
        ton_ae: tuple[Path, Any, Any, Any, Any], data_dir: Path) -> None:
    from trustmesh.flows import load_dataset

    out, data, cfg, result, manifest = ton_ae
    plan = plan_run(cfg, data)
    model = plan.new_model()
    model.set_weights(result.final_weights)
    scorer = AnomalyScorer.calibrate(model, plan.benign_calibration_rows(), cfg.target_fpr)
    raw = load_dataset("ton-iot-network", data_dir=data_dir).features.iloc[data.test_rows]

    det, loaded = load_model(out)

    assert isinstance(det, DenseAutoencoderDetector) and loaded.kind == "dense-autoencoder"
    assert det.classes_ == ("benign", "attack")
    np.testing.assert_allclose(det.score(raw), scorer.scores(model, data.X_test), atol=1e-6)
    assert det.threshold == pytest.approx(scorer.threshold, abs=1e-9)
    assert det.threshold == pytest.approx(result.metrics["threshold"], abs=1e-6)
    fed = loaded.training["federated"]
    assert fed["config"]["model"] == "autoencoder"
    assert fed["weights_sha256"] == commit_arrays(det.get_weights()) == commit_arrays(result.final_weights)
    assert fed["ledger"]["round_indices"] == list(range(8)) and fed["ledger"]["model_entry"] == 8
    assert loaded.calibration["validation_fpr"] <= 0.02


@pytest.mark.needs_data
def test_trustmesh_evaluate_scores_the_federated_autoencoder(ton_ae: tuple[Path, Any, Any, Any, Any],
                                                            data_dir: Path) -> None:
    out, _, _, _, manifest = ton_ae

    res = runner.invoke(app, ["evaluate", "--model", str(out), "--dataset", "ton-iot-network",
                              "--data-dir", str(data_dir)])

    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    assert doc["split"] == "held-out (manifest)" and doc["n_test"] == manifest.training["split"]["n_test"]
    assert doc["roc_auc"] > 0.75  # 0.87 on the in-run test rows with this small set-up; a floor


@pytest.mark.needs_data
def test_cli_simulate_autoencoder_in_process_writes_a_model(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "m"

    res = runner.invoke(app, ["fl", "simulate", "--dataset", "ton-iot-network", "--sites", "3", "--rounds", "4",
                              "--local-epochs", "5", "--model", "autoencoder", "--max-rows", "3000", "--max-test",
                              "600", "--in-process",
                              "--centralized", "--out", str(out), "--data-dir", str(data_dir), "--json"])

    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    assert doc["config"]["model"] == "autoencoder"
    assert doc["metrics"]["roc_auc"] > 0.7 and doc["centralized"]["metrics"]["roc_auc"] > 0.7
    assert doc["rounds"][0]["metrics"]["target_fpr"] == 0.01
    det, _ = load_model(out)
    assert det.name == "dense-autoencoder" and doc["model"]["threshold"] == det.threshold
