"""The server optimiser (FedAvgM, FedAdam, FedYogi) on each round's aggregate, alone and in the coordinator."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from typer.testing import CliRunner

from trustmesh.cli._app import app
from trustmesh.errors import ConfigError
from trustmesh.federated import config_from_options
from trustmesh.federated._aggregate import FedAvg, ServerOptimizer
from trustmesh.federated._coordinator import Coordinator, Submission


def _vec(*values: float) -> npt.NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


def test_fedavgm_accumulates_momentum_across_rounds() -> None:
    opt = ServerOptimizer("fedavgm", lr=0.5, momentum=0.9)

    # round 1: global 0, aggregate 2 -> delta 2, m = 2, w = 0 + 0.5 * 2 = 1
    w1 = opt.step(_vec(0.0, 0.0), _vec(2.0, -4.0))
    # round 2: global w1, aggregate w1 + 1 -> delta 1, m = 0.9 * 2 + 1 = 2.8, w = 1 + 0.5 * 2.8 = 2.4
    w2 = opt.step(w1, w1 + _vec(1.0, 0.0))

    np.testing.assert_allclose(w1, [1.0, -2.0])
    np.testing.assert_allclose(w2, [2.4, -2.0 + 0.5 * (0.9 * -4.0)])


def test_fedadam_and_fedyogi_follow_reddi_et_al() -> None:
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 0.1
    d = _vec(1.0, -2.0)
    adam = ServerOptimizer("fedadam", lr=lr, beta1=b1, beta2=b2, tau=tau)
    yogi = ServerOptimizer("fedyogi", lr=lr, beta1=b1, beta2=b2, tau=tau)

    got_adam = adam.step(_vec(0.0, 0.0), d)
    got_yogi = yogi.step(_vec(0.0, 0.0), d)

    for i, di in enumerate((1.0, -2.0)):
        m = (1 - b1) * di
        v_adam = b2 * tau**2 + (1 - b2) * di**2
        # v0 = tau^2 < d^2, so Yogi's sign term is -1 and v grows by (1 - b2) d^2 without the b2 decay
        v_yogi = tau**2 + (1 - b2) * di**2
        assert got_adam[i] == pytest.approx(lr * m / (math.sqrt(v_adam) + tau))
        assert got_yogi[i] == pytest.approx(lr * m / (math.sqrt(v_yogi) + tau))


def test_none_with_lr_one_is_plain_fedavg() -> None:
    g, agg = _vec(0.5, -1.0), _vec(1.5, 2.0)

    np.testing.assert_allclose(ServerOptimizer("none").step(g, agg), agg)
    np.testing.assert_allclose(ServerOptimizer("none", lr=2.0).step(g, agg), [2.5, 5.0])


def test_coordinator_moves_the_global_model_through_the_server_optimiser() -> None:
    coord = Coordinator([np.zeros(2, dtype=np.float32)], FedAvg(),
                        server_opt=ServerOptimizer.parse("fedavgm:lr=1.0,momentum=0.5"))

    # FedAvg of (1, 1) and (3, -1) with 1 and 3 examples is (2.5, -0.5); m = that; w = m
    rec1 = coord.aggregate(1, [Submission("a", [np.array([1.0, 1.0])], 1), Submission("b", [np.array([3.0, -1.0])], 3)])
    np.testing.assert_allclose(coord.weights[0], [2.5, -0.5])
    # both sites now return w + (1, 0): delta (1, 0), m = 0.5 * (2.5, -0.5) + (1, 0) = (2.25, -0.25)
    w = coord.weights[0].astype(np.float64)
    coord.aggregate(2, [Submission("a", [w + [1.0, 0.0]], 1), Submission("b", [w + [1.0, 0.0]], 3)])
    np.testing.assert_allclose(coord.weights[0], [4.75, -0.75], rtol=1e-6)
    assert rec1.strategy["server_optimizer"] == {"name": "fedavgm", "lr": 1.0, "momentum": 0.5}


def test_a_round_with_every_update_rejected_leaves_model_and_momentum_alone() -> None:
    coord = Coordinator([np.zeros(1, dtype=np.float32)], FedAvg(), server_opt=ServerOptimizer("fedavgm", momentum=0.5))
    coord.aggregate(1, [Submission("a", [np.array([2.0])], 5)])

    coord.aggregate(2, [Submission("a", [np.array([np.nan])], 5)])  # rejected: not finite
    assert coord.weights[0][0] == pytest.approx(2.0)
    coord.aggregate(3, [Submission("a", [np.array([3.0])], 5)])  # delta 1, m = 0.5 * 2 + 1 = 2
    assert coord.weights[0][0] == pytest.approx(4.0)


@pytest.mark.parametrize(("spec", "message"), [
    ("adagrad", "must be one of"), ("fedavgm:lr=0", "lr must be > 0"), ("fedavgm:momentum=1", "[0, 1)"),
    ("fedadam:eta=1", "lr|momentum"), ("fedadam:lr=fast", "must be a number"),
])
def test_bad_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("|", r"\|").replace(")", r"\)")):
        config_from_options(sites=3, rounds=2, server_opt=spec)


def test_cli_refuses_a_bad_server_optimiser_with_one_line() -> None:
    result = CliRunner().invoke(app, ["fl", "simulate", "--in-process", "--server-opt", "fedadam:tau=-1"])

    assert result.exit_code == 2
    assert "--server-opt" in result.output and "tau must be > 0" in result.output
    assert "Traceback" not in result.output


def test_the_configured_optimiser_is_recorded_and_fresh_per_run() -> None:
    cfg = config_from_options(sites=3, rounds=2, server_opt="fedyogi:lr=0.02")

    assert cfg.describe()["server_opt"] == {"name": "fedyogi", "lr": 0.02, "beta1": 0.9, "beta2": 0.99, "tau": 0.001}
    first = cfg.server_optimizer()
    first.step(_vec(0.0), _vec(1.0))
    assert cfg.server_optimizer().step(_vec(0.0), _vec(0.0))[0] == 0.0  # no state carried over


def test_lr_decay_scales_each_rounds_local_learning_rate() -> None:
    from tests.federated._fl_synth import blobs
    from trustmesh.federated._site import Site, TrainConfig

    data = blobs(n_train=300, n_test=10, n_features=4, n_classes=3, seed=0)
    start = Site(0, data.X_train, data.y_train, 3, TrainConfig(hidden=(8,))).model.get_weights()

    def fit(train: TrainConfig, round_no: int) -> list[npt.NDArray[np.float32]]:
        return Site(0, data.X_train, data.y_train, 3, train).fit(start, round_no)[0]

    decayed = fit(TrainConfig(hidden=(8,), lr=0.01, lr_decay=0.5), 3)
    same = fit(TrainConfig(hidden=(8,), lr=0.0025), 3)  # 0.01 * 0.5 ** 2
    undecayed = fit(TrainConfig(hidden=(8,), lr=0.01), 3)

    for a, b in zip(decayed, same, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not all(np.allclose(a, b) for a, b in zip(decayed, undecayed, strict=True))
    with pytest.raises(ConfigError, match="lr_decay"):
        config_from_options(sites=3, rounds=2, lr_decay=1.5)
