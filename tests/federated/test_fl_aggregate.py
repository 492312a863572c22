"""Tests for the aggregation rules and their robustness to outliers."""

from __future__ import annotations

import numpy as np
import pytest

from _fl_synth import blobs
from trustmesh.errors import ConfigError
from trustmesh.federated import (
    Bulyan,
    CenteredClip,
    CoordinateMedian,
    FedAvg,
    FLConfig,
    FLTrust,
    MultiKrum,
    NormBound,
    TrainConfig,
    TrimmedMean,
    config_from_options,
    flatten_weights as flatten,
    fltrust_root_set,
    fltrust_root_steps,
    make_aggregator,
    plan_run,
    wrap_aggregator,
)

GLOBAL = np.zeros(4)
HONEST = [np.array([1.0, 1.0, 1.0, 1.0]) + 0.01 * i for i in range(4)]
EVIL = np.array([-100.0, 100.0, -100.0, 100.0])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fedavg_weights_by_examples() -> None:
    agg = FedAvg().aggregate([np.ones(2), np.full(2, 4.0)], [3, 1], np.zeros(2))
    assert np.allclose(agg.vector, [1.75, 1.75])
    assert agg.accepted == (0, 1) and agg.rejected == {}


@pytest.mark.parametrize("rule", [CoordinateMedian(), TrimmedMean(0.2), MultiKrum(num_malicious=1)])
def test_robust_rules_ignore_one_outlier(rule: object) -> None:
    models = [*HONEST, EVIL]
    agg = rule.aggregate(models, [10] * 5, GLOBAL)  # type: ignore[attr-defined]
    assert np.all(np.abs(agg.vector - 1.0) < 0.1)
    assert np.any(np.abs(FedAvg().aggregate(models, [10] * 5, GLOBAL).vector - 1.0) > 10)


def test_multikrum_reports_the_rejected_site() -> None:
    agg = MultiKrum(num_malicious=1).aggregate([*HONEST, EVIL], [1] * 5, GLOBAL)
    assert set(agg.rejected) == {4}
    assert "multikrum score" in agg.rejected[4]


def test_fltrust_rejects_updates_against_the_root_direction() -> None:
    rule = FLTrust(root_update=lambda g: np.ones(4))
    agg = rule.aggregate([*HONEST, EVIL, -np.ones(4)], [1] * 6, GLOBAL)

    assert set(agg.rejected) == {4, 5}  # orthogonal (cosine 0) and opposite updates get no trust
    assert "cosine" in agg.rejected[5]
    assert np.linalg.norm(agg.vector) <= np.linalg.norm(np.ones(4)) + 1e-9  # norm-bounded by the root update


def test_make_aggregator_checks_names_and_needs() -> None:
    with pytest.raises(ValueError, match="aggregator must be"):
        make_aggregator("bogus")
    with pytest.raises(ValueError, match="root_update"):
        make_aggregator("fltrust")
    assert make_aggregator("fedprox").config() == {"name": "fedprox", "proximal_mu": 0.01}


# --- pre-aggregation defences (wrappers) -------------------------------------------------------------

def _sign_flip_round(seed: int = 0, n_honest: int = 8, n_evil: int = 2, dim: int = 200) -> tuple[list, np.ndarray]:
    """Honest updates = a common direction + site noise; attackers submit -4x an honest-looking update
    (the sign-flip attack), so on every coordinate they sit at one extreme."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 1, dim)
    honest = [mu + rng.normal(0, 1.0, dim) for _ in range(n_honest)]
    evil = [-4 * (mu + rng.normal(0, 1.0, dim)) for _ in range(n_evil)]
    return [*honest, *evil], np.mean(honest, axis=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_order_statistics_shrink_towards_one_sided_attackers_and_bulyan_does_not(seed: int) -> None:
    """With both attackers below the honest values on every coordinate, the median (and the trimmed
    mean) take a lower quantile of the honest values: the aggregate is shrunk along the honest
    direction. Bulyan's Krum selection drops the attackers first, so the shrink goes away."""
    models, honest_mean = _sign_flip_round(seed)
    g = np.zeros_like(honest_mean)

    def shrink(rule: object) -> float:
        v = rule.aggregate(models, [1] * 10, g).vector  # type: ignore[attr-defined]
        return float(1 - v @ honest_mean / (honest_mean @ honest_mean))

    assert shrink(CoordinateMedian()) > 0.08 and shrink(TrimmedMean(0.2)) > 0.08
    assert abs(shrink(Bulyan(CoordinateMedian(), num_malicious=2))) < 0.05
    assert abs(shrink(Bulyan(TrimmedMean(0.2), num_malicious=2))) < 0.05
    assert shrink(FedAvg()) > 0.5  # 8 honest updates against 2 at -4x: the mean loses most of the direction


def test_bulyan_and_centered_clip_report_what_they_did_to_the_attackers() -> None:
    models, _ = _sign_flip_round()
    g = np.zeros(len(models[0]))

    bulyan = Bulyan(CoordinateMedian(), num_malicious=2).aggregate(models, [1] * 10, g)
    cclip = CenteredClip(CoordinateMedian()).aggregate(models, [1] * 10, g)

    assert len(bulyan.rejected) == 4 and {8, 9} <= set(bulyan.rejected)  # n - 2f = 6 are kept
    assert all(r.startswith("bulyan: not among the 6") for r in bulyan.rejected.values())
    assert set(bulyan.accepted) == set(range(10)) - set(bulyan.rejected)
    assert {8, 9} <= set(cclip.clipped) and not cclip.rejected and "tau" in cclip.clipped[8]


def test_normbound_scales_large_updates_to_the_median_norm_and_reports_them() -> None:
    models, _ = _sign_flip_round()
    g = np.full(len(models[0]), 0.5)
    shifted = [g + m for m in models]
    norms = [float(np.linalg.norm(m)) for m in models]

    captured: list[list[np.ndarray]] = []

    class Spy(FedAvg):
        def aggregate(self, models, num_examples, global_model):  # type: ignore[no-untyped-def]
            captured.append(list(models))
            return super().aggregate(models, num_examples, global_model)

    agg = NormBound(Spy()).aggregate(shifted, [1] * 10, g)

    bound = float(np.median(norms))
    seen = [float(np.linalg.norm(m - g)) for m in captured[0]]
    assert max(seen) <= bound + 1e-9
    assert set(agg.clipped) == {i for i, n in enumerate(norms) if n > bound} and {8, 9} <= set(agg.clipped)
    assert "scaled to" in agg.clipped[8] and agg.rejected == {}
    for i, n in enumerate(norms):  # updates under the bound pass unchanged
        if n <= bound:
            assert np.allclose(captured[0][i], shifted[i])


@pytest.mark.parametrize("make", [
    lambda: NormBound(CoordinateMedian()),
    lambda: CenteredClip(TrimmedMean(0.2)),
    lambda: Bulyan(TrimmedMean(0.2), num_malicious=2),
    lambda: Bulyan(CoordinateMedian(), num_malicious=2),
])
def test_wrappers_are_permutation_invariant(make: object) -> None:
    models, _ = _sign_flip_round(seed=3)
    g = np.zeros(len(models[0]))
    perm = np.random.default_rng(1).permutation(len(models))

    a = make().aggregate(models, [1] * 10, g)  # type: ignore[operator]
    b = make().aggregate([models[i] for i in perm], [1] * 10, g)  # type: ignore[operator]

    assert np.allclose(a.vector, b.vector, atol=1e-9)
    assert {int(perm[i]) for i in b.rejected} == set(a.rejected)
    assert {int(perm[i]) for i in b.clipped} == set(a.clipped)


def test_wrapper_configs_name_the_defence_and_base_rule() -> None:
    base = TrimmedMean(0.2)
    assert wrap_aggregator("normbound", base).config() == {
        "name": "normbound+trimmed-mean", "defence": "normbound", "bound": "median", "base": base.config()}
    bul = wrap_aggregator("bulyan", base, num_malicious=2).config()
    assert bul["base"] == base.config() and bul["num_malicious"] == 2 and bul["min_sites_for_guarantee"] == 11
    assert wrap_aggregator("centered-clip", base).config()["iterations"] == 3
    with pytest.raises(ValueError, match="defence must be one of"):
        wrap_aggregator("magic", base)
    with pytest.raises(ValueError, match="tau"):
        CenteredClip(base, tau=0)


def test_wrappers_leave_honest_rounds_close_to_the_mean() -> None:
    rng = np.random.default_rng(5)
    honest = [np.ones(50) + 0.05 * rng.normal(size=50) for _ in range(10)]
    mean = np.mean(honest, axis=0)
    for rule in (NormBound(FedAvg()), CenteredClip(CoordinateMedian()), Bulyan(TrimmedMean(0.2), 2)):
        assert np.allclose(rule.aggregate(honest, [1] * 10, np.zeros(50)).vector, mean, atol=0.05)


# --- FLTrust root update -------------------------------------------------------------------------------

def test_fltrust_root_steps_follow_the_median_site() -> None:
    assert fltrust_root_steps([1800, 2000, 2000, 5000], local_epochs=2, batch_size=64) == 2 * 32
    assert fltrust_root_steps([10], local_epochs=1, batch_size=64) == 1
    with pytest.raises(ValueError):
        fltrust_root_steps([], 1, 64)


def test_fltrust_root_set_is_stratified_and_exact() -> None:
    y = np.array([0] * 700 + [1] * 290 + [2] * 10)
    idx = fltrust_root_set(y, 100, np.random.default_rng(0))
    counts = np.bincount(y[idx], minlength=3)
    assert len(idx) == 100 == len(set(idx.tolist()))
    assert counts.tolist() == [70, 29, 1]
    with pytest.raises(ValueError):
        fltrust_root_set(y, 0, np.random.default_rng(0))


def test_fltrust_root_update_is_as_large_as_a_site_update() -> None:
    """Every site update is rescaled to the root update's norm, so the root update must take a site's
    number of optimizer steps (Cao et al. 2021); with the old epoch-based loop on a root set a tenth of
    a site's size its norm was a fraction of a site's."""
    data = blobs(n_train=1500, n_test=100, seed=2)
    cfg = FLConfig(n_sites=3, rounds=1, aggregator="fltrust", seed=0, train=TrainConfig(local_epochs=2))
    plan = plan_run(cfg, data)
    g = flatten(plan.new_model().get_weights())

    root = plan.root_update()(g)
    weights, _, _ = plan.site(0).fit(plan.new_model().get_weights(), 1)
    site = flatten(weights) - g

    assert len(plan.root_idx) == 150 and plan.root_steps() == 2 * int(np.ceil(len(plan.parts[0]) / 64))
    assert 0.5 < np.linalg.norm(root) / np.linalg.norm(site) < 2.0
    assert plan.aggregator().config()["root"] == {"rows": 150, "steps": plan.root_steps(), "stratified": True}


def test_defence_option_wraps_the_configured_rule_and_refuses_hidden_updates() -> None:
    cfg = config_from_options(sites=10, rounds=1, aggregator="median", defence="bulyan", assumed_malicious=2)
    rule = plan_run(cfg, blobs(n_train=600, n_test=60)).aggregator()

    assert rule.config() == {"name": "bulyan+median", "defence": "bulyan", "num_malicious": 2,
                             "min_sites_for_guarantee": 11, "base": {"name": "median"}}
    with pytest.raises(ConfigError, match="--defence must be one of"):
        config_from_options(sites=3, rounds=1, defence="magic")
    with pytest.raises(ConfigError, match="in the clear"):
        config_from_options(sites=3, rounds=1, defence="normbound", secagg=True)
    with pytest.raises(ConfigError, match="assumed-malicious"):
        config_from_options(sites=3, rounds=1, assumed_malicious=-1)
    with pytest.raises(ConfigError, match="in the clear"):  # a config built directly is refused too
        FLConfig(n_sites=3, defence="bulyan", he="ckks")
