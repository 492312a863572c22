"""Tests for the evaluation attacks."""

from __future__ import annotations

import numpy as np
import pytest

from trustmesh.federated import AttackSpec, apply_trigger, malicious_sites

RNG = np.random.default_rng(0)
G = np.zeros(3)
LOCAL = np.array([1.0, -2.0, 0.5])


def test_sign_flip_reverses_and_scaling_boosts() -> None:
    flipped = AttackSpec("sign-flip", 0.2).poison_update(LOCAL, G, 10, RNG)
    scaled = AttackSpec("scaling", 0.2).poison_update(LOCAL, G, 10, RNG)
    assert np.allclose(flipped, -4 * LOCAL)
    assert np.allclose(scaled, 10 * LOCAL)


def test_label_flip_swaps_benign_and_attack() -> None:
    X = np.zeros((4, 2), dtype=np.float32)
    y = np.array([0, 1, 2, 0])
    _, y2 = AttackSpec("label-flip", 0.2).poison_data(X, y, 3, RNG)
    assert y2.tolist() == [1, 0, 0, 1]


def test_backdoor_adds_triggered_rows_labelled_benign() -> None:
    X = np.ones((10, 4), dtype=np.float32)
    y = np.array([0] * 4 + [1] * 6)
    spec = AttackSpec("backdoor", 0.2, trigger_features=(0, 3), trigger_value=6.0, poison_rate=0.5)
    X2, y2 = spec.poison_data(X, y, 2, np.random.default_rng(0))
    assert len(X2) == 13 and (y2[10:] == 0).all()
    assert (X2[10:, [0, 3]] == 6.0).all() and (X2[10:, [1, 2]] == 1.0).all()
    assert (apply_trigger(X, (1,), 2.0)[:, 1] == 2.0).all() and (X[:, 1] == 1.0).all()


def test_malicious_sites_count_and_seed() -> None:
    assert len(malicious_sites(10, 0.2, 0)) == 2
    assert len(malicious_sites(3, 0.1, 0)) == 1
    assert malicious_sites(10, 0.0, 0) == frozenset()
    assert malicious_sites(10, 0.3, 5) == malicious_sites(10, 0.3, 5)


@pytest.mark.parametrize("text", ["sign-flip", "teleport:0.2", "scaling:1.5"])
def test_parse_rejects_bad_specs(text: str) -> None:
    with pytest.raises(ValueError):
        AttackSpec.parse(text)
