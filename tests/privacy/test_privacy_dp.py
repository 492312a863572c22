"""Tests for trustmesh.privacy DP: accountant, budget, calibration, the Gaussian mechanism."""

from __future__ import annotations

import numpy as np
import pytest

from trustmesh.errors import PrivacyBudgetExceeded
from trustmesh.privacy import Accountant, DPConfig, noise_multiplier_for_epsilon, privatize_mean
from trustmesh.privacy.hazmat import clip_by_l2_norm, global_l2_norm, os_generator


def test_epsilon_grows_with_rounds_and_shrinks_with_noise() -> None:
    low = Accountant(DPConfig(noise_multiplier=1.0, clip_norm=1.0))
    high = Accountant(DPConfig(noise_multiplier=4.0, clip_norm=1.0))

    eps_low = [low.spend() for _ in range(3)]
    eps_high = high.spend(3)

    assert eps_low[0] < eps_low[1] < eps_low[2]
    assert eps_high < eps_low[2]
    assert low.rounds == 3 and low.epsilon == eps_low[2]


def test_budget_stops_before_the_round_that_would_exceed_it() -> None:
    acc = Accountant(DPConfig(noise_multiplier=1.0, clip_norm=1.0, max_epsilon=8.0))
    spent = []
    with pytest.raises(PrivacyBudgetExceeded, match="budget 8.0"):
        for _ in range(100):
            spent.append(acc.spend())

    assert spent and all(e <= 8.0 for e in spent)
    assert acc.rounds == len(spent)  # the refused round was not counted
    assert acc.epsilon == spent[-1]


def test_pld_is_not_looser_than_rdp() -> None:
    rdp = Accountant(DPConfig(noise_multiplier=1.5, clip_norm=1.0, method="rdp")).epsilon_after(20)
    pld = Accountant(DPConfig(noise_multiplier=1.5, clip_norm=1.0, method="pld")).epsilon_after(20)

    assert 0 < pld <= rdp * 1.01


@pytest.mark.parametrize("target", [1.0, 3.0, 8.0])
def test_noise_multiplier_for_epsilon_meets_the_target(target: float) -> None:
    z = noise_multiplier_for_epsilon(target, 1e-5, rounds=10)

    eps = Accountant(DPConfig(noise_multiplier=z, clip_norm=1.0)).epsilon_after(10)
    looser = Accountant(DPConfig(noise_multiplier=z * 0.97, clip_norm=1.0)).epsilon_after(10)
    assert eps <= target
    assert looser > target * 0.99  # and it is not far more noise than needed


def test_clip_scales_jointly_and_leaves_input_untouched() -> None:
    arrays = [np.array([3.0, 0.0]), np.array([[4.0]])]

    clipped, norm = clip_by_l2_norm(arrays, 1.0)

    assert norm == pytest.approx(5.0)
    assert global_l2_norm(clipped) == pytest.approx(1.0)
    assert clipped[0][0] == pytest.approx(0.6)
    assert arrays[0][0] == 3.0


def test_privatize_mean_noise_has_the_calibrated_std() -> None:
    cfg = DPConfig(noise_multiplier=2.0, clip_norm=0.5)
    updates = [[np.zeros(20000)] for _ in range(4)]

    noisy, norms = privatize_mean(updates, cfg, rng=np.random.default_rng(1))

    assert norms == [0.0] * 4
    assert np.std(noisy[0]) == pytest.approx(2.0 * 0.5 / 4, rel=0.03)


def test_os_generator_is_not_reproducible() -> None:
    a = os_generator().normal(size=8)
    b = os_generator().normal(size=8)
    assert not np.allclose(a, b)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("noise=1", "clip"), ("clip=1", "noise"), ("noise=1,clip=1,foo=2", "key=value"), ("noise=-1,clip=1", "noise_multiplier")],
)
def test_dp_spec_errors_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DPConfig.parse(spec)


def test_dp_spec_parses() -> None:
    cfg = DPConfig.parse("noise=1.1,clip=0.5,delta=1e-6,budget=3")
    assert (cfg.noise_multiplier, cfg.clip_norm, cfg.delta, cfg.max_epsilon) == (1.1, 0.5, 1e-6, 3.0)
