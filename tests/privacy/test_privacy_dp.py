"""Tests for trustmesh.privacy DP: accountant, budget, calibration, the Gaussian mechanism."""

from __future__ import annotations

import numpy as np
import pytest

from trustmesh.errors import PrivacyBudgetExceeded
from trustmesh.privacy import (
    Accountant,
    DPConfig,
    DPSGDAccountant,
    DPSGDConfig,
    dp_sgd_sampling,
    noise_multiplier_for_epsilon,
    privatize_mean,
)
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


# --- record-level DP-SGD accounting -------------------------------------------------------------


def _direct_epsilon(z: float, q: float, steps: int, delta: float) -> float:
    from dp_accounting import dp_event, rdp

    acc = rdp.RdpAccountant()
    acc.compose(dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), steps))
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize(("n", "batch", "rate", "steps"), [(1000, 50, 1 / 20, 20), (1001, 50, 1 / 21, 21),
                                                           (30, 64, 1.0, 1), (129, 64, 1 / 3, 3)])
def test_dp_sgd_sampling_is_one_over_the_number_of_batches(n: int, batch: int, rate: float, steps: int) -> None:
    got_rate, got_steps = dp_sgd_sampling(n, batch)
    assert got_rate == pytest.approx(rate) and got_steps == steps


def test_steps_per_round_composes_like_that_many_rounds() -> None:
    mech = DPConfig(noise_multiplier=1.2, clip_norm=1.0, sample_rate=0.05)

    per_round = Accountant(mech, steps_per_round=30).epsilon_after(4)

    assert per_round == pytest.approx(Accountant(mech).epsilon_after(120))


def test_dp_sgd_epsilon_grows_with_rounds_and_matches_dp_accounting() -> None:
    # two sites of different sizes: the small one samples more of its records per step and spends more
    acc = DPSGDAccountant(DPSGDConfig(noise_multiplier=1.1, clip_norm=1.0, delta=1e-5), {"big": 1000, "small": 250},
                          batch_size=50, local_epochs=2)

    spent = [acc.spend() for _ in range(3)]

    assert spent[0] < spent[1] < spent[2] == acc.epsilon
    small, big = acc.site("small"), acc.site("big")
    assert small.config.sample_rate == pytest.approx(0.2) and small.steps_per_round == 10
    assert big.config.sample_rate == pytest.approx(0.05) and big.steps_per_round == 40
    assert small.epsilon == pytest.approx(_direct_epsilon(1.1, 0.2, 30, 1e-5), rel=1e-9)
    assert big.epsilon == pytest.approx(_direct_epsilon(1.1, 0.05, 120, 1e-5), rel=1e-9)
    assert acc.epsilon == small.epsilon > big.epsilon
    sites = acc.describe()["sites"]
    assert sites["small"]["rounds"] == 3 and sites["small"]["epsilon"] == small.epsilon


def test_dp_sgd_accounts_only_the_sites_that_trained() -> None:
    acc = DPSGDAccountant(DPSGDConfig(noise_multiplier=1.0, clip_norm=1.0), {"0": 500, "1": 500},
                          batch_size=50, local_epochs=1)

    acc.spend(["0"])
    acc.spend(["0", "unknown-site"])

    assert acc.site("0").rounds == 2 and acc.site("1").rounds == 0
    assert acc.epsilon == acc.site("0").epsilon


@pytest.mark.parametrize("target", [1.0, 3.0, 8.0])
def test_dp_sgd_calibration_hits_the_target_epsilon(target: float) -> None:
    cfg = DPSGDConfig(target_epsilon=target, rounds=5, clip_norm=1.0, delta=1e-5)

    z, q, steps = cfg.site_mechanism(900, 64, 2)

    assert q == pytest.approx(1 / 15) and steps == 30
    assert cfg.max_epsilon == target  # the target is also the hard budget
    eps = _direct_epsilon(z, q, 5 * steps, 1e-5)
    assert target * 0.97 <= eps <= target
    assert _direct_epsilon(z * 0.97, q, 5 * steps, 1e-5) > target  # not much more noise than needed


def test_dp_sgd_budget_stops_before_overspending() -> None:
    acc = DPSGDAccountant(DPSGDConfig(noise_multiplier=1.0, clip_norm=1.0, max_epsilon=4.0), {"0": 2000, "1": 400},
                          batch_size=40, local_epochs=1)
    spent = []

    with pytest.raises(PrivacyBudgetExceeded, match=r"DP-SGD site 1: .*budget 4\.0"):
        for _ in range(200):
            acc.check(1)
            spent.append(acc.spend())

    assert spent and max(spent) <= 4.0
    assert acc.site("1").rounds == len(spent)  # the refused round was not counted
    assert acc.site("1").epsilon_after(len(spent) + 1) > 4.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [("noise=1", "clip=... is required"), ("clip=1", "exactly one of noise"), ("noise=1,clip=1,epsilon=2", "exactly one"),
     ("noise=x,clip=1", "noise must be a number"), ("noise=1,clip=0", "clip: clip_norm must be > 0"),
     ("epsilon=-1,clip=1", "epsilon: target_epsilon must be > 0"), ("noise=1,clip=1,delta=1", "delta: delta"),
     ("noise=1,clip=1,budget=0", "budget: max_epsilon"), ("noise=1,clip=1,seed=3", "key=value"),
     ("noise=1,noise=2,clip=1", "noise given twice"), ("noise=1,clip=inf", "clip must be finite")],
)
def test_dp_sgd_spec_errors_name_the_field(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        DPSGDConfig.parse(spec, rounds=10)
    assert str(info.value).startswith("--dp-sgd: ")


def test_dp_sgd_spec_parses_both_forms() -> None:
    fixed = DPSGDConfig.parse("noise=1.1, clip=0.5, delta=1e-6, budget=3, method=pld")
    target = DPSGDConfig.parse("epsilon=2,clip=1", rounds=7)

    assert (fixed.noise_multiplier, fixed.clip_norm, fixed.delta, fixed.max_epsilon, fixed.method) == \
        (1.1, 0.5, 1e-6, 3.0, "pld")
    assert (target.target_epsilon, target.rounds, target.max_epsilon, target.noise_multiplier) == (2.0, 7, 2.0, None)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        DPSGDConfig.parse("epsilon=2,clip=1")  # nothing to calibrate over


@pytest.mark.parametrize(("spec", "message"), [
    ("noise=abc,clip=1", "--dp: noise must be a number, got 'abc'"),
    ("noise=1,clip=inf", "--dp: clip must be finite"),
    ("noise=1,noise=2,clip=1", "--dp: noise given twice"),
])
def test_central_dp_spec_errors_name_the_key(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DPConfig.parse(spec)
