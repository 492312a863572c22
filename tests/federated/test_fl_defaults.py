"""The defaults of `fl simulate`/`fl serve`: local training that converges in few rounds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.federated._fl_synth import rare_classes
from trustmesh.federated import FederatedData, config_from_options, run_inprocess, train_centralized
from trustmesh.federated._model import MLPModel
from trustmesh.federated._run import plan_run
from trustmesh.federated._site import default_training


def test_classifier_defaults_train_ten_local_epochs_with_sqrt_weights() -> None:
    cfg = config_from_options(sites=5, rounds=5)

    assert (cfg.train.local_epochs, cfg.train.batch_size, cfg.train.class_weight) == (10, 32, "sqrt")
    assert default_training("local_epochs") == 10
    # chosen by measurement (docs/benchmarks.md, "round 3"): server lr 1.5 and a local lr decay of 0.7
    assert cfg.server_opt == "none:lr=1.5" and cfg.train.lr_decay == 0.7
    assert cfg.describe()["server_opt"] == {"name": "none", "lr": 1.5}
    assert cfg.describe()["train"]["lr_decay"] == 0.7
    assert cfg.train.hidden == (128, 64) and plan_run(cfg, _skewed()).new_model().hidden == (128, 64)


def test_the_default_schedule_and_server_lr_reach_every_site_and_the_coordinator(one_torch_thread: None) -> None:
    # what the defaults do, not only what they say: round r trains with lr * 0.7^(r-1) on every site and
    # the coordinator moves the model 1.5x the mean update
    data = _skewed()
    cfg = config_from_options(sites=3, rounds=2, local_epochs=1)
    seen: list[tuple[int, float]] = []
    real = MLPModel.train_epochs

    def spy(self: MLPModel, *args: Any, **kwargs: Any) -> float:
        seen.append((kwargs["seed"], kwargs["lr"]))
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MLPModel, "train_epochs", spy)
        result = run_inprocess(cfg, data)

    assert sorted({round(lr, 8) for _, lr in seen}) == [round(cfg.train.lr * 0.7, 8), round(cfg.train.lr, 8)]
    assert len(seen) == 6
    assert result.rounds[-1].strategy["server_optimizer"] == {"name": "none", "lr": 1.5}


@pytest.mark.parametrize("options", [{"dp_sgd": "noise=1.0,clip=1.0"}, {"model": "autoencoder"}])
def test_dp_sgd_and_the_autoencoder_keep_plain_fedavg_and_a_constant_lr(options: dict[str, Any]) -> None:
    cfg = config_from_options(sites=3, rounds=2, **options)

    assert cfg.server_opt == "none" and cfg.train.lr_decay == 1.0 and cfg.train.hidden == (64, 32)


@pytest.mark.parametrize("options", [{"model": "autoencoder"}])  # DP-SGD's: tests/federated/test_fl_dp_usable.py
def test_dp_sgd_and_the_autoencoder_keep_one_unweighted_epoch(options: dict[str, Any]) -> None:
    # DP-SGD's accountant charges every local step and refuses label-count weights
    cfg = config_from_options(sites=3, rounds=2, **options)

    assert (cfg.train.local_epochs, cfg.train.batch_size, cfg.train.class_weight) == (1, 64, "none")


def test_explicit_options_override_the_defaults() -> None:
    cfg = config_from_options(sites=3, rounds=2, local_epochs=2, batch_size=128, class_weight="none")

    assert (cfg.train.local_epochs, cfg.train.batch_size, cfg.train.class_weight) == (2, 128, "none")


def _skewed(seed: int = 0) -> FederatedData:
    # 6 overlapping classes, two of them rare: one local epoch per round leaves them unlearnt
    return rare_classes(2000, 1000, 6, 6, common=4, keep_rare=0.15, seed=seed)


def test_default_training_converges_in_few_rounds_under_label_skew(one_torch_thread: None) -> None:
    data = _skewed()
    fast = config_from_options(sites=5, rounds=3, partition="dirichlet:0.5")
    old = config_from_options(sites=5, rounds=3, partition="dirichlet:0.5", local_epochs=1, batch_size=64,
                              class_weight="none")

    got = run_inprocess(fast, data).metrics["macro_f1"]
    before = run_inprocess(old, data).metrics["macro_f1"]
    central = train_centralized(fast, data)["metrics"]["macro_f1"]

    # close to centralized training after 3 rounds, well ahead of 1 epoch per round
    assert got >= central - 0.1, (got, central)
    assert got >= before + 0.2, (got, before)
