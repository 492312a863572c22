"""Tests for the federated training data and loss: class weights, same loss centrally and on sites, hold-out view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _fl_synth import blobs

from trustmesh.errors import ConfigError, DatasetError
from trustmesh.federated import (
    FederatedData,
    FLConfig,
    PartitionSpec,
    TrainConfig,
    load_federated_data,
    run_inprocess,
    train_centralized,
)
from trustmesh.federated._model import MLPModel, class_weights
from trustmesh.federated._run import plan_run
from trustmesh.federated._spec import config_from_options


def test_balanced_weights_are_n_over_k_times_count() -> None:
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)

    w = class_weights(y, 3, "balanced")

    assert w is not None
    np.testing.assert_allclose(w, [10 / 18, 10 / 9, 10 / 3], rtol=1e-6)
    # every class then carries the same total weight
    np.testing.assert_allclose(w * np.bincount(y), [10 / 3] * 3, rtol=1e-6)


def test_sqrt_weights_are_the_root_of_balanced() -> None:
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)

    w = class_weights(y, 3, "sqrt")

    assert w is not None
    np.testing.assert_allclose(w, np.sqrt([10 / 18, 10 / 9, 10 / 3]), rtol=1e-6)


def test_absent_classes_get_weight_one_and_none_means_unweighted() -> None:
    y = np.array([0, 0, 0, 2])

    w = class_weights(y, 4, "balanced")

    assert w is not None
    np.testing.assert_allclose(w, [4 / 6, 1.0, 4 / 2, 1.0], rtol=1e-6)
    assert class_weights(y, 4, "none") is None


@pytest.mark.parametrize(("y", "mode", "match"), [
    ([0, 1], "inverse", "class weighting must be one of"),
    ([0, 3], "balanced", "labels must lie in"),
    ([0, -1], "balanced", "labels must lie in"),
])
def test_bad_weighting_input_is_rejected(y: list[int], mode: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        class_weights(np.array(y), 3, mode)


def test_train_config_and_cli_options_check_the_weighting() -> None:
    with pytest.raises(ValueError, match="class_weight must be one of"):
        TrainConfig(class_weight="inverse")
    with pytest.raises(ConfigError, match="class_weight must be one of"):
        config_from_options(sites=2, rounds=1, class_weight="inverse")

    cfg = config_from_options(sites=2, rounds=1, class_weight="balanced")

    assert cfg.train.class_weight == "balanced"


def _imbalanced(seed: int = 0) -> FederatedData:
    # a rare class (3 % of rows) overlapping two common ones: unweighted training mostly predicts it away
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0, 0.0, 0.0], [2.5, 0.0, 0.0, 0.0], [1.25, 1.0, 0.0, 0.0]])

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(3, size=n, p=[0.6, 0.37, 0.03])
        return (centers[y] + rng.normal(size=(n, 4))).astype(np.float32), y.astype(np.int64)

    X_tr, y_tr = draw(1500)
    X_te, y_te = draw(1500)
    return FederatedData("imbalanced", X_tr, y_tr, X_te, y_te, ("benign", "attack1", "attack2"),
                         ("f0", "f1", "f2", "f3"), None, "synthetic")


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    real = MLPModel.train_epochs

    def recording(self: MLPModel, X: Any, y: Any, *args: Any, **kwargs: Any) -> float:
        seen.append(kwargs.get("class_weights"))
        return real(self, X, y, *args, **kwargs)

    monkeypatch.setattr(MLPModel, "train_epochs", recording)
    return seen


def test_centralized_and_a_site_holding_all_rows_use_the_same_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _imbalanced()
    cfg = FLConfig(n_sites=1, rounds=1, train=TrainConfig(class_weight="balanced"))
    seen = _spy(monkeypatch)

    train_centralized(cfg, data)
    run_inprocess(cfg, data)

    expected = class_weights(data.y_train, 3, "balanced")
    assert len(seen) == 2
    for w in seen:
        np.testing.assert_array_equal(w, expected)


def test_sites_weight_with_their_own_label_counts() -> None:
    data = _imbalanced()
    cfg = FLConfig(n_sites=4, rounds=1, partition=PartitionSpec(kind="dirichlet", alpha=0.5),
                   train=TrainConfig(class_weight="balanced"))
    plan = plan_run(cfg, data)

    sites = [plan.site(k) for k in range(4)]

    for s in sites:
        np.testing.assert_array_equal(s.class_weights, class_weights(s.y, 3, "balanced"))
    # label skew: the sites' weights differ, none is the pooled one
    assert len({tuple(np.round(s.class_weights, 4)) for s in sites}) > 1  # type: ignore[arg-type]


def test_unweighted_runs_pass_no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy(monkeypatch)

    run_inprocess(FLConfig(n_sites=2, rounds=1), _imbalanced())

    assert seen == [None, None]


@pytest.mark.parametrize("federated", [False, True])
def test_balanced_weights_raise_rare_class_recall(federated: bool) -> None:
    data = _imbalanced(seed=3)

    def rare_recall(mode: str) -> float:
        cfg = FLConfig(n_sites=3, rounds=4, seed=1, train=TrainConfig(class_weight=mode, local_epochs=2))
        m = run_inprocess(cfg, data).metrics if federated else train_centralized(cfg, data)["metrics"]
        return float(m["per_class_recall"]["attack2"])

    plain, weighted = rare_recall("none"), rare_recall("balanced")

    assert weighted > plain + 0.1


@pytest.mark.needs_data
def test_nsl_kdd_holdout_view_scores_training_distribution_rows(data_dir: Path) -> None:
    official = load_federated_data("nsl-kdd", data_dir, max_train=2000, max_test=500, seed=0)
    held = load_federated_data("nsl-kdd", data_dir, max_train=2000, seed=0, holdout=True)

    assert official.provenance["split"]["kind"] == "official"
    split = held.provenance["split"]
    assert split["kind"] == "holdout" and split["of"] == "KDDTrain+"
    assert split["n_test"] == pytest.approx(0.2 * split["n_rows"], abs=1)
    # every category is stratified into the hold-out share, u2r included
    assert set(np.unique(held.y_test)) == set(range(len(held.classes)))
    assert held.test_rows is not None and len(held.test_rows) == split["n_test"]
    assert len(official.y_test) <= 500  # KDDTest+ rows of classes absent from the 2000 training rows drop


@pytest.mark.needs_data
def test_holdout_is_only_for_nsl_kdd(data_dir: Path) -> None:
    with pytest.raises(DatasetError, match="holdout applies to nsl-kdd only"):
        load_federated_data("ton-iot-network", data_dir, holdout=True)


def test_cli_rejects_an_unknown_class_weighting() -> None:
    from typer.testing import CliRunner

    from trustmesh.cli._app import app

    result = CliRunner().invoke(app, ["fl", "simulate", "--dataset", "nsl-kdd", "--class-weight", "inverse",
                                      "--in-process", "--json"])

    assert result.exit_code == 2
    assert "class_weight must be one of none, balanced, sqrt" in result.output


@pytest.mark.needs_data
def test_cli_holdout_run_scores_kddtrain_rows_with_class_weights(data_dir: Path) -> None:
    import json

    from typer.testing import CliRunner

    from trustmesh.cli._app import app

    result = CliRunner().invoke(app, [
        "fl", "simulate", "--dataset", "nsl-kdd", "--sites", "2", "--rounds", "1", "--max-rows", "1000",
        "--max-test", "0", "--holdout", "--class-weight", "sqrt", "--in-process", "--centralized",
        "--data-dir", str(data_dir), "--json",
    ])

    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout[result.stdout.index("{"):])
    # the whole 20 % hold-out of KDDTrain+ (125,973 rows), not KDDTest+ (22,544), minus unseen classes
    assert 24_000 < doc["dataset"]["test_rows"] <= 25_195
    assert doc["metrics"]["macro_f1"] > 0.3 and doc["centralized"]["metrics"]["macro_f1"] > 0.3
