"""Round 0 and the per-site view of the inputs: one global scaler, global label counts, FedRS logit scaling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _fl_synth import rare_classes

from trustmesh.federated import FederatedData, FLConfig, PartitionSpec, TrainConfig, load_federated_data
from trustmesh.federated._model import MLPModel, class_weights
from trustmesh.federated._run import plan_run


def _skewed(seed: int = 0) -> FederatedData:
    return rare_classes(1500, 200, 5, 4, common=2, keep_rare=0.2, seed=seed)


def _plan(**train: Any) -> Any:
    cfg = FLConfig(n_sites=5, rounds=1, partition=PartitionSpec(kind="dirichlet", alpha=0.3),
                   train=TrainConfig(class_weight="sqrt", **train))
    return plan_run(cfg, _skewed())


def test_round_zero_sums_the_sites_count_vectors_and_only_counts() -> None:
    plan = _plan(weight_counts="global")

    total = plan.round_zero()

    per_site = [plan.site(k).label_counts() for k in range(5)]
    np.testing.assert_array_equal(total, np.sum(per_site, axis=0))
    np.testing.assert_array_equal(total, np.bincount(plan.data.y_train, minlength=4))
    # the message a site sends is one integer per class, nothing row-shaped
    assert all(c.shape == (4,) and c.dtype == np.int64 for c in per_site)


def test_global_counts_give_every_site_the_pooled_weights() -> None:
    local, pooled = _plan(), _plan(weight_counts="global")
    expected = class_weights(pooled.data.y_train, 4, "sqrt")

    local_w = [local.site(k).class_weights for k in range(5)]
    global_w = [pooled.site(k).class_weights for k in range(5)]

    for w in global_w:
        np.testing.assert_allclose(w, expected, rtol=1e-6)
    # under label skew the local weights differ from site to site (the inconsistency round 0 removes)
    assert len({tuple(np.round(w, 4)) for w in local_w}) > 1


def test_fedrs_scales_only_the_logits_of_classes_a_site_lacks() -> None:
    plan = _plan(absent_logit_scale=0.5)
    sites = [plan.site(k) for k in range(5)]
    lacking = [s for s in sites if (s.label_counts() == 0).any()]
    full = [s for s in sites if not (s.label_counts() == 0).any()]
    assert lacking, "the skewed split should leave some site without a class"

    for s in lacking:
        assert s.logit_scale is not None
        np.testing.assert_array_equal(s.logit_scale, np.where(s.label_counts() > 0, 1.0, 0.5))
    assert all(s.logit_scale is None for s in full)
    assert all(s.logit_scale is None for s in (_plan().site(k) for k in range(5)))  # off by default


def test_logit_scale_changes_the_local_loss_and_is_checked(one_torch_thread: None) -> None:
    data = _skewed()
    X, y = data.X_train[:200], data.y_train[:200]
    plain, scaled = MLPModel(5, 4, seed=0), MLPModel(5, 4, seed=0)

    plain.train_epochs(X, y, 1, seed=1)
    scaled.train_epochs(X, y, 1, seed=1, logit_scale=[1.0, 1.0, 0.1, 0.1])

    assert any(not np.allclose(a, b) for a, b in zip(plain.get_weights(), scaled.get_weights(), strict=True))
    with pytest.raises(ValueError, match="logit_scale must have 4 entries"):
        MLPModel(5, 4).train_epochs(X, y, 1, logit_scale=[1.0, 0.5])


@pytest.mark.parametrize("bad", [{"weight_counts": "site"}, {"absent_logit_scale": 0.0},
                                 {"absent_logit_scale": 1.5}])
def test_train_config_checks_the_round_zero_options(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_every_site_reads_inputs_scaled_with_one_global_scaler(data_dir: Path) -> None:
    # the encoder and z-score are fitted once on the pooled training rows, so the same flow means the
    # same input at every site even under label skew (no per-site standardisation)
    data = load_federated_data("ton-iot-network", data_dir, max_train=3000, max_test=300, seed=0)
    plan = plan_run(FLConfig(n_sites=5, rounds=1, partition=PartitionSpec(kind="dirichlet", alpha=0.5)), data)
    pre = data.preprocessor
    assert pre is not None

    pooled = np.concatenate([plan.site(k).X for k in range(5)])
    site_means = np.array([plan.site(k).X.mean(axis=0) for k in range(5)])

    varying = pooled.std(axis=0) > 0.1
    assert varying.sum() >= 5
    # the pooled site rows are standardised (the scaler's statistics are the pooled ones)
    np.testing.assert_allclose(pooled[:, varying].mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(pooled[:, varying].std(axis=0), 1.0, atol=0.05)
    # a skewed site's own mean is far from 0: it did not standardise on its own rows
    assert np.abs(site_means[:, varying]).max() > 0.3


def test_options_reach_the_config_and_bad_ones_are_refused() -> None:
    from typer.testing import CliRunner

    from trustmesh.cli._app import app
    from trustmesh.federated import config_from_options

    cfg = config_from_options(sites=3, rounds=1, hidden="32,16", weight_counts="global", fedrs=0.5)
    assert (cfg.train.hidden, cfg.train.weight_counts, cfg.train.absent_logit_scale) == ((32, 16), "global", 0.5)
    assert config_from_options(sites=3, rounds=1).train.weight_counts == "local"

    for args, message in ((["--hidden", "64,x"], "--hidden must be comma-separated integers"),
                          (["--hidden", "0"], "--hidden widths must be >= 1"),
                          (["--weight-counts", "site"], "weight_counts must be one of local, global"),
                          (["--fedrs", "2"], "absent_logit_scale must be in (0, 1]")):
        result = CliRunner().invoke(app, ["fl", "simulate", "--sites", "3", "--rounds", "1", *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
