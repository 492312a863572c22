"""Tests for the evaluation attacks."""

from __future__ import annotations

import numpy as np
import pytest

from _fl_synth import blobs
from trustmesh.federated import AttackSpec, FLConfig, MLPModel, apply_trigger, choose_trigger, malicious_sites, plan_run

RNG = np.random.default_rng(0)
G = np.zeros(3)
LOCAL = np.array([1.0, -2.0, 0.5])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


# --- the backdoor trigger ------------------------------------------------------------------------------

def _tails() -> tuple[np.ndarray, np.ndarray]:
    """Column 0: high values only in attack rows; column 1: high values only in benign rows; column 2:
    constant; column 3: a milder attack-leaning tail."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 600 + [1] * 400)
    X = rng.normal(size=(1000, 4)).astype(np.float32)
    X[600:700, 0] += 8.0  # attack-only tail
    X[:100, 1] += 8.0  # benign-only tail
    X[:, 2] = -1.0
    X[550:650, 3] += 8.0  # half benign, half attack
    return X, y


def test_choose_trigger_picks_the_most_attack_typical_tails() -> None:
    X, y = _tails()

    one = choose_trigger(X, y, k=1)
    two = choose_trigger(X, y, k=2)

    assert one[0] == (0,) and one[1][0] == pytest.approx(float(np.quantile(X[:, 0], 0.99)), rel=1e-5)
    assert two[0] == (0, 3)  # the benign tail (1) and the constant column (2) are never chosen
    with pytest.raises(ValueError, match="upper tail"):
        choose_trigger(X, y, k=4)


def test_with_trigger_for_resolves_only_unset_backdoor_triggers() -> None:
    X, y = _tails()
    explicit = AttackSpec("backdoor", 0.2, trigger_features=(1,), trigger_value=2.0)

    resolved = AttackSpec("backdoor", 0.2).with_trigger_for(X, y)

    assert explicit.with_trigger_for(X, y) is explicit
    assert AttackSpec("sign-flip", 0.2).with_trigger_for(X, y).trigger_features is None
    assert (resolved.trigger_features, resolved.trigger_value) == choose_trigger(X, y)
    Xp, yp = AttackSpec("backdoor", 0.2, poison_rate=1.0).poison_data(X, y, 2, np.random.default_rng(0))
    assert len(Xp) == 1400 and (yp[1000:] == 0).all()  # every attack row duplicated, stamped, labelled benign
    assert np.allclose(Xp[1000:][:, list(resolved.trigger_features)], resolved.trigger_value)


def test_apply_trigger_takes_per_feature_values_and_refuses_unresolved_or_out_of_range() -> None:
    X = np.zeros((3, 4), dtype=np.float32)
    out = apply_trigger(X, (0, 2), (1.5, -2.0))
    assert (out[:, 0] == 1.5).all() and (out[:, 2] == -2.0).all() and (X == 0).all()
    with pytest.raises(ValueError, match="resolve"):
        apply_trigger(X, None, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        apply_trigger(X, (4,), 1.0)
    with pytest.raises(ValueError, match="values"):
        AttackSpec("backdoor", 0.2, trigger_features=(0, 1), trigger_value=(1.0,))


def test_chosen_trigger_is_not_already_an_evasion_of_a_clean_model() -> None:
    """The backdoor success of a model trained WITHOUT any poisoned row must be low, else the
    measurement shows evasion, not a backdoor."""
    data = blobs(n_train=2000, n_test=600, n_classes=3, seed=4)
    features, values = choose_trigger(data.X_train, data.y_train)
    model = MLPModel(data.n_features, 3, (32,), seed=0)
    model.train_epochs(data.X_train, data.y_train, 3, batch_size=64, lr=3e-3, seed=0)

    attack_rows = data.X_test[data.y_test != 0]
    success = float(np.mean(model.predict(apply_trigger(attack_rows, features, values)) == 0))

    assert np.mean(model.predict(data.X_test) == data.y_test) > 0.9
    assert success < 0.1


def test_plan_run_resolves_one_trigger_for_attack_and_baseline() -> None:
    data = blobs(n_train=1200, n_test=200, seed=1)

    attacked = plan_run(FLConfig(n_sites=5, rounds=1, attack=AttackSpec.parse("backdoor:0.2")), data)
    baseline = plan_run(FLConfig(n_sites=5, rounds=1, attack=AttackSpec.parse("backdoor:0.0")), data)

    assert attacked.config.attack is not None and baseline.config.attack is not None
    assert attacked.config.attack.trigger_features is not None
    assert attacked.config.attack.trigger_features == baseline.config.attack.trigger_features
    assert attacked.config.attack.trigger_value == baseline.config.attack.trigger_value
    assert len(attacked.malicious) == 1 and not baseline.malicious
