"""Model artifacts: save/load round trip, tamper detection, malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trustmesh.detect import BaseDetector, load_model, make_detector, manifest_path, save_model
from trustmesh.errors import ArtifactDigestError, InputError, ModelError


def _data(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    attack = rng.random(n) < 0.4
    X = pd.DataFrame({
        "src_bytes": np.where(attack, rng.integers(0, 60, n), rng.integers(100, 5000, n)).astype(float),
        "duration": rng.exponential(1.0, n),
        "proto": rng.choice(["tcp", "udp"], n),
    })
    return X, np.where(attack, "scan", "benign")


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, pd.DataFrame, BaseDetector]:
    X, y = _data()
    det = make_detector("gbdt", seed=1, n_estimators=10).fit(X, y)
    det.calibrate(X, y != "benign", 0.05)
    path = tmp_path / "m.tm"
    save_model(det, path, data_digest="ab" * 32, metrics={"validation": {"accuracy": 1.0}})
    return path, X, det


def test_round_trip_gives_identical_scores_and_manifest(saved: tuple[Path, pd.DataFrame, BaseDetector]) -> None:
    path, X, det = saved
    loaded, manifest = load_model(path)
    assert np.array_equal(loaded.score(X), det.score(X))
    assert manifest.threshold == det.threshold
    assert manifest.kind == "gbdt" and manifest.data_digest == "ab" * 32
    assert manifest.features == det.feature_names
    assert manifest.model_id.startswith("tm-")
    assert {"lightgbm", "numpy", "scikit-learn", "trustmesh"} <= set(manifest.versions)


def test_flipped_artifact_byte_is_rejected(saved: tuple[Path, pd.DataFrame, BaseDetector]) -> None:
    path, _, _ = saved
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactDigestError, match="sha256"):
        load_model(path)


@pytest.mark.parametrize(("field", "value"), [("threshold", 0.123), ("seed", 99), ("data_digest", "cd" * 32),
                                              ("metrics", {"validation": {"accuracy": 0.5}})])
def test_edited_manifest_is_rejected(saved: tuple[Path, pd.DataFrame, BaseDetector], field: str, value: object) -> None:
    path, _, _ = saved
    doc = json.loads(manifest_path(path).read_text())
    doc[field] = value
    manifest_path(path).write_text(json.dumps(doc))
    with pytest.raises(ArtifactDigestError):
        load_model(path)


def test_garbage_and_missing_manifest(tmp_path: Path, saved: tuple[Path, pd.DataFrame, BaseDetector]) -> None:
    path, _, _ = saved
    manifest_path(path).write_text("{not json")
    with pytest.raises(ArtifactDigestError, match="JSON"):
        load_model(path)
    manifest_path(path).unlink()
    with pytest.raises(InputError, match="manifest"):
        load_model(path)
    junk = tmp_path / "junk.tm"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ModelError, match="not a trustmesh model"):
        BaseDetector.load(junk)


def test_unfitted_and_bad_arguments() -> None:
    with pytest.raises(ModelError, match="not fitted"):
        make_detector("gbdt").score(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(ValueError, match="n_estimators"):
        make_detector("gbdt", n_estimators=0)
    with pytest.raises(ValueError, match="kind"):
        make_detector("nope")
    X, y = _data()
    with pytest.raises(InputError, match="benign and attack"):
        make_detector("gbdt").fit(X, np.full(len(X), "benign"))


def test_iforest_matches_scikit_learn() -> None:
    from sklearn.ensemble import IsolationForest

    X, _ = _data(600)
    num = X[["src_bytes", "duration"]]
    det = make_detector("iforest", seed=4, n_estimators=40).fit(num)
    ref = IsolationForest(n_estimators=40, max_samples=256, random_state=4, n_jobs=1).fit(num.to_numpy(np.float32))
    np.testing.assert_allclose(det.score(num), -ref.score_samples(num.to_numpy(np.float32)), rtol=1e-9)


def test_calibrated_threshold_meets_target_fpr() -> None:
    from trustmesh.detect import calibrate_threshold

    benign = np.linspace(0.0, 1.0, 1001)
    t = calibrate_threshold(benign, 0.01)
    assert np.mean(benign >= t) <= 0.01
    assert np.mean(benign >= np.nextafter(t, 0.0) - 1e-3) > 0.01  # it is the lowest such threshold
    with pytest.raises(ValueError, match="target_fpr"):
        calibrate_threshold(benign, 1.5)


def test_mlp_weights_exchange() -> None:
    from trustmesh.detect import MLPDetector

    X, y = _data()
    a = MLPDetector(seed=0, epochs=1, hidden=(8,)).fit(X, y)
    b = MLPDetector(seed=5, epochs=0, hidden=(8,)).prepare(X, y)
    b.set_weights(a.get_weights())
    np.testing.assert_array_equal(a.score(X), b.score(X))
    before = [w.copy() for w in b.get_weights()]
    b.train_epochs(X, y, epochs=1)
    assert any(not np.array_equal(p, q) for p, q in zip(before, b.get_weights(), strict=True))
    with pytest.raises(InputError, match="shape"):
        b.set_weights([w[..., :1] for w in a.get_weights()])
