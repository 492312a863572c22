"""The random-forest detector (pickle-free arrays) and `train --model auto` (issue 11, item 5)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.cli.models import _fit_auto
from trustmesh.detect import BaseDetector, RandomForestDetector, load_model, make_detector
from trustmesh.detect._base import npy_bytes, write_container
from trustmesh.detect._forest import export_forest, forest_proba
from trustmesh.detect.checks import check_detector
from trustmesh.errors import ModelError
from trustmesh.flows import load_dataset


def _subsample(name: str, part: str | None, n: int, data_dir: Path) -> Any:
    table = load_dataset(name, split=part, data_dir=data_dir)
    rng = np.random.default_rng(0)
    return table.subset(np.sort(rng.choice(len(table), n, replace=False)))


def test_traversal_equals_sklearn_predict_proba() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2500, 5)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values seen in training for columns 0-3 ...
    X[:, 4] = rng.normal(size=2500)  # ... but never for column 4
    y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) > 0).astype(int) + (X[:, 4] > 1)
    rf = RandomForestClassifier(n_estimators=25, max_leaf_nodes=150, random_state=0, n_jobs=2).fit(X, y)
    trees = export_forest(rf, 3)
    X_test = rng.normal(size=(3000, 5)).astype(np.float32)
    X_test[rng.random(X_test.shape) < 0.2] = np.nan
    rf.n_jobs = 1  # sequential accumulation: the same float sums, tree by tree
    np.testing.assert_array_equal(forest_proba(trees, X_test), rf.predict_proba(X_test))
    # Class columns follow the integer labels even when the forest saw only some of them.
    rf2 = RandomForestClassifier(n_estimators=5, random_state=0).fit(X[:, :4], np.where(y == 0, 0, 2))
    proba = forest_proba(export_forest(rf2, 3), X_test[:, :4])
    assert np.all(proba[:, 1] == 0.0)
    np.testing.assert_array_equal(proba[:, [0, 2]], rf2.predict_proba(X_test[:, :4]))


@pytest.mark.needs_data
def test_conformance_and_round_trip(tmp_path: Path, data_dir: Path) -> None:
    sub = _subsample("ton-iot-network", None, 3000, data_dir)
    X, y = sub.features, sub.labels.to_numpy()
    check_detector(lambda: make_detector("forest", seed=3, n_estimators=10), X, y)
    check_detector(lambda: make_detector("forest", seed=3, n_estimators=10, multiclass=True), X, y)
    det = RandomForestDetector(seed=0, n_estimators=30, max_leaf_nodes=64, multiclass=True).fit(X, y)
    assert det.fit_report["leaves"] <= 30 * 64
    det.calibrate(X, sub.is_attack, 0.01)
    path = tmp_path / "forest.tm"
    det.save(path)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    assert names == {"detector.json", *(f"{k}.npy" for k in
                     ("left", "right", "feature", "split", "missing_left", "leaf", "value", "roots"))}
    back = BaseDetector.load(path)
    assert isinstance(back, RandomForestDetector) and back.classes_ == det.classes_
    matrix = det.encode(X)
    np.testing.assert_array_equal(back.predict_proba_matrix(matrix), det.predict_proba_matrix(matrix))
    np.testing.assert_array_equal(back.predict_class(X), det.predict_class(X))
    assert back.threshold == det.threshold
    # A forged structure (a child pointing backwards: a cycle) is refused, not traversed forever.
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    left = np.load(io.BytesIO(members["left.npy"]))
    internal = np.flatnonzero(left != np.arange(left.size))
    left[internal[-1]] = 0
    members["left.npy"] = npy_bytes(left)
    meta = json.loads(members.pop("detector.json"))
    write_container(tmp_path / "forged.tm", meta, members)
    with pytest.raises(ModelError, match="not a forest"):
        BaseDetector.load(tmp_path / "forged.tm")


@pytest.mark.needs_data
def test_train_auto_picks_forest_on_memorising_table(tmp_path: Path, data_dir: Path) -> None:
    # Two raw GPS readings per row: boosting memorises exact values, bagged trees generalise better.
    sub = _subsample("ton-iot-telemetry", "gps_tracker", 4000, data_dir)
    csv = tmp_path / "gps.csv"
    pd.DataFrame({"latitude": sub.features["latitude"], "longitude": sub.features["longitude"],
                  "type": sub.labels.to_numpy()}).to_csv(csv, index=False)  # fmt: skip
    out = tmp_path / "m.tm"
    res = CliRunner().invoke(app, ["train", "--input", str(csv), "--label-column", "type", "--benign-label",
                                   "benign", "--multiclass", "--out", str(out), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    choice = doc["model_choice"]
    assert choice["chosen"] == "forest" == doc["kind"]
    assert choice["validation_macro_f1"]["forest"] > choice["validation_macro_f1"]["gbdt"]
    det, manifest = load_model(out)
    assert isinstance(det, RandomForestDetector)
    assert manifest.training["model_choice"] == choice
    assert det.predict_class(sub.features.iloc[:50]).shape == (50,)


@pytest.mark.needs_data
def test_auto_keeps_gbdt_where_it_wins(data_dir: Path) -> None:
    sub = _subsample("unsw-nb15", None, 4000, data_dir)
    det, _, record = _fit_auto({"seed": 0, "multiclass": True}, sub, 0.01, 0)
    assert record["chosen"] == "gbdt" == det.name
    assert record["validation_macro_f1"]["gbdt"] >= record["validation_macro_f1"]["forest"]
    assert record["refit_all_rows"] is False
