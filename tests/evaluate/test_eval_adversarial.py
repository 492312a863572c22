"""Constrained evasion: gradient attacks keep counts integral and categoricals valid; rare-class recall."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trustmesh.detect import MLPDetector
from trustmesh.detect.snn import SpikingDetector
from trustmesh.evaluate._sec_adversarial import ConstrainedSpace, _gradient_attack
from trustmesh.evaluate._sec_spiking import rare_class_recall


def _data(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    attack = rng.random(n) < 0.5
    X = pd.DataFrame({
        "src_pkts": np.where(attack, rng.integers(50, 500, n), rng.integers(1, 30, n)),
        "dst_bytes": rng.integers(0, 10_000, n),
        "duration": rng.exponential(1.0, n),
        "proto": rng.choice(["tcp", "udp"], size=n),
    })
    return X, attack


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "snn"])
def test_pgd_respects_feature_constraints(kind: str) -> None:
    # Arrange
    X, y = _data()
    det = (MLPDetector(hidden=(16,), epochs=8, seed=0) if kind == "mlp"
           else SpikingDetector(hidden=(16,), steps=4, epochs=3, batch_size=32, seed=0)).fit(X, y)
    base = det.encode(X)
    space = ConstrainedSpace(det, base)
    # Act
    adv = _gradient_attack(det, space, base, y, eps=0.3, steps=3)
    # Assert: categoricals untouched, counts non-negative integers, something moved
    cat = [j for j, c in enumerate(det.encoder.columns) if c in det.encoder.vocab]
    assert np.array_equal(adv[:, cat], base[:, cat])
    ints = space.numeric[space.integer]
    assert len(ints) >= 2  # src_pkts and dst_bytes are counts
    assert np.all(adv[:, ints] >= 0) and np.array_equal(adv[:, ints], np.round(adv[:, ints]))
    assert not np.array_equal(adv, base)
    # the budget is honoured in the attack space (up to the rounding projection)
    u0, u1 = space.to_u(base), space.to_u(adv)
    assert np.max(np.abs(u1 - u0)) <= 0.3 + 0.05
    # and the attack does not help the detector
    clean = np.mean((det.score_matrix(base) >= det.threshold) == y)
    attacked = np.mean((det.score_matrix(adv) >= det.threshold) == y)
    assert attacked <= clean + 0.02


def test_zero_budget_only_projects() -> None:
    X, y = _data()
    det = MLPDetector(hidden=(8,), epochs=2, seed=0).fit(X, y)
    base = det.encode(X)
    space = ConstrainedSpace(det, base)
    adv = _gradient_attack(det, space, base, y, eps=0.0, steps=5)
    assert np.allclose(adv[:, space.numeric[space.integer]], base[:, space.numeric[space.integer]])


def test_rare_class_recall_uses_training_share_and_ignores_novel_classes() -> None:
    train = np.array(["benign"] * 990 + ["dos"] * 5 + ["u2r"] * 5)
    test = np.array(["benign", "dos", "dos", "u2r", "novel"])
    flagged = np.array([False, True, False, True, True])
    recall, names = rare_class_recall(train, test, flagged)
    assert names == ["dos", "u2r"]
    assert recall == pytest.approx((0.5 + 1.0) / 2)
    assert rare_class_recall(np.array(["benign", "dos"]), test, flagged) == (None, [])
