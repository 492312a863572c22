"""Local record-level DP-SGD in federated runs: opacus sampling, per-round epsilon, budget stop, combinations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _fl_synth import blobs

from trustmesh.errors import ConfigError
from trustmesh.federated import FLConfig, MLPModel, TrainConfig, config_from_options, run_inprocess
from trustmesh.privacy import DPSGDAccountant, DPSGDConfig, dp_sgd_sampling

DATA = blobs(n_train=900, n_test=300)


@pytest.mark.parametrize(("n", "batch"), [(1000, 50), (1001, 50), (389, 64), (30, 64), (3, 1)])
def test_accounted_sampling_is_what_opacus_does(n: int, batch: int) -> None:
    import torch
    from opacus.data_loader import DPDataLoader

    data = torch.utils.data.TensorDataset(torch.zeros(n, 2), torch.zeros(n, dtype=torch.long))
    loader = DPDataLoader.from_data_loader(torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True))

    rate, steps = dp_sgd_sampling(n, batch)

    assert loader.batch_sampler.sample_rate == rate
    assert len(loader) == steps


def test_our_epsilon_agrees_with_opacus_own_rdp_accountant() -> None:
    from opacus.accountants import RDPAccountant

    acc = DPSGDAccountant(DPSGDConfig(noise_multiplier=1.1, clip_norm=1.0), {"0": 389}, batch_size=64,
                          local_epochs=2)
    for _ in range(3):
        acc.spend()
    site = acc.site("0")
    theirs = RDPAccountant()
    theirs.history = [(1.1, site.config.sample_rate, 3 * site.steps_per_round)]

    # both are RDP bounds of the same mechanism, over slightly different sets of orders
    assert acc.epsilon == pytest.approx(theirs.get_epsilon(1e-5), rel=0.02)


def test_dp_sgd_steps_on_empty_poisson_batches() -> None:
    # 3 rows at rate 1/3: about 30 % of the steps draw no row, and they must still step (noise only)
    model = MLPModel(2, 2, (4,), seed=0)
    before = np.concatenate([w.ravel() for w in model.get_weights()])
    X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=np.float32)

    loss = model.train_epochs(X, np.array([0, 1, 1]), 6, batch_size=1, lr=0.01,
                              dp_sgd={"noise_multiplier": 1.0, "max_grad_norm": 1.0})

    after = np.concatenate([w.ravel() for w in model.get_weights()])
    assert np.isfinite(loss) and np.all(np.isfinite(after))
    assert not np.allclose(before, after)


def test_inprocess_run_reports_epsilon_per_round_within_the_calibrated_target() -> None:
    cfg = config_from_options(sites=3, rounds=3, dp_sgd="epsilon=4,clip=1.0,delta=1e-5", seed=1)

    result = run_inprocess(cfg, DATA)

    eps = [r.epsilon for r in result.rounds if r.epsilon is not None]
    assert len(eps) == len(result.rounds) == 3 and result.stopped is None
    assert 0 < eps[0] < eps[1] < eps[2] <= 4.0
    assert eps[2] >= 4.0 * 0.97  # calibrated to spend (almost) all of the target over the 3 rounds
    assert result.epsilon == eps[2] and result.to_dict()["epsilon"] == eps[2]
    dp = result.rounds[-1].defence["dp"]
    assert (dp["mode"], dp["clip_norm"], dp["delta"], dp["max_epsilon"], dp["accountant"]) == \
        ("dp-sgd", 1.0, 1e-5, 4.0, "rdp")
    assert set(dp["sites"]) == {"0", "1", "2"}
    site0 = dp["sites"]["0"]
    rate, steps = dp_sgd_sampling(300, cfg.train.site_batch_size(300))
    assert site0["sample_rate"] == pytest.approx(rate) and site0["rounds"] == 3
    assert site0["steps_per_round"] == steps * cfg.train.local_epochs  # every local step is charged
    assert site0["noise_multiplier"] > 0
    assert result.rounds[-1].delta == 1e-5
    assert result.privacy is not None and result.privacy["epsilon"] == eps[2]
    assert result.config["dp_sgd"]["target_epsilon"] == 4.0
    assert result.metrics["macro_f1"] > 0.5  # separable blobs still train under this much noise


def test_budget_stops_the_run_before_any_site_overspends() -> None:
    rows = {"0": 300, "1": 300, "2": 300}
    train = config_from_options(sites=3, rounds=5, dp_sgd="noise=1.0,clip=1.0").train  # the DP-SGD defaults
    probe = DPSGDAccountant(DPSGDConfig(noise_multiplier=1.0, clip_norm=1.0), rows,
                            batch_size=train.site_batch_size(300), local_epochs=train.local_epochs)
    e2, e3 = probe.site("0").epsilon_after(2), probe.site("0").epsilon_after(3)
    budget = (e2 + e3) / 2
    cfg = config_from_options(sites=3, rounds=5, dp_sgd=f"noise=1.0,clip=1.0,budget={budget}", seed=1)

    result = run_inprocess(cfg, DATA)

    assert len(result.rounds) == 2
    assert result.stopped is not None and "budget" in result.stopped and "DP-SGD site" in result.stopped
    assert result.epsilon is not None and result.epsilon == pytest.approx(e2) and result.epsilon <= budget


def test_dp_sgd_combines_with_ckks() -> None:
    cfg = config_from_options(sites=3, rounds=2, he="ckks", dp_sgd="noise=1.0,clip=1.0", seed=1)

    result = run_inprocess(cfg, DATA)

    assert all(r.secure_aggregation == "ckks" for r in result.rounds)
    eps = [r.epsilon for r in result.rounds if r.epsilon is not None]
    assert len(eps) == 2 and 0 < eps[0] < eps[1] == result.epsilon
    assert result.rounds[0].defence["dp"]["mode"] == "dp-sgd"


def test_dp_sgd_combines_with_a_robust_aggregator() -> None:
    # purely local noise: the server may inspect single updates (Multi-Krum) without changing the guarantee
    cfg = config_from_options(sites=4, rounds=1, aggregator="multikrum", dp_sgd="noise=1.0,clip=1.0", seed=1)

    result = run_inprocess(cfg, DATA)

    assert result.rounds[0].epsilon == result.epsilon and result.epsilon is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [({"dp_sgd": "noise=1"}, "--dp-sgd: clip"), ({"dp_sgd": "noise=a,clip=1"}, "--dp-sgd: noise must be a number"),
     ({"dp_sgd": "noise=1,clip=1", "dp": "noise=1,clip=1"}, "alternatives"),
     ({"dp_sgd": "noise=1,clip=1", "class_weight": "balanced"}, "--class-weight with --dp-sgd")],
)
def test_bad_dp_sgd_options_fail_with_a_config_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_options(sites=3, rounds=2, **options)


def test_a_noise_clip_pair_is_still_accepted() -> None:
    train = TrainConfig(dp_sgd=(0.5, 1.0))  # type: ignore[arg-type]  # the legacy pair form, converted

    assert train.dp_sgd == DPSGDConfig(noise_multiplier=0.5, clip_norm=1.0)
    assert FLConfig(train=train).describe()["train"]["dp_sgd"] == [0.5, 1.0]
    with pytest.raises(ValueError, match="dp_sgd must be"):
        TrainConfig(dp_sgd=(0.5, 1.0, 2.0))  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning:ray.*")  # Ray's GPU env-var notice; not ours to fix
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize(("options", "mode"), [({"secagg": True}, "secagg+"), ({"he": "ckks"}, "ckks")])
def test_flower_secure_aggregation_with_dp_sgd_accounts_each_round(options: dict[str, Any], mode: str) -> None:
    from trustmesh.federated import simulate

    cfg = config_from_options(sites=3, rounds=2, dp_sgd="noise=1.0,clip=1.0", seed=2, **options)

    result, _ = simulate(cfg, DATA)

    assert [r.secure_aggregation for r in result.rounds] == [mode, mode]
    eps = [r.epsilon for r in result.rounds if r.epsilon is not None]
    assert len(eps) == 2 and 0 < eps[0] < eps[1] == result.epsilon
    assert result.rounds[1].defence["dp"]["sites"]["0"]["rounds"] == 2


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning:ray.*")  # Ray's GPU env-var notice; not ours to fix
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_flower_ckks_with_central_dp_noises_the_encrypted_sum_and_accounts() -> None:
    from trustmesh.federated import simulate

    cfg = config_from_options(sites=3, rounds=2, dp="noise=1.0,clip=1.0,delta=1e-5", he="ckks", seed=2)

    result, run = simulate(cfg, DATA)

    eps = [r.epsilon for r in result.rounds]
    assert [r.secure_aggregation for r in result.rounds] == ["ckks", "ckks"]
    assert eps[0] is not None and eps[1] is not None and 0 < eps[0] < eps[1] == result.epsilon
    assert result.rounds[0].defence["dp"]["mode"] == "central" and run.ckks_total == 3.0  # equal weights

