"""Usable record-level DP-SGD (issue 16 item 3): rare-class recall, the DP defaults, exact accounting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from trustmesh.cli._app import app
from trustmesh.errors import ConfigError
from trustmesh.federated import classification_metrics, config_from_options, rare_class_recall
from trustmesh.privacy import dp_sgd_sampling

CLASSES = ("benign", "a", "b", "c")


def test_rare_class_recall_names_the_attack_classes_with_fewest_training_rows() -> None:
    y_train = [0] * 50 + [1] * 30 + [2] * 5 + [3] * 12
    y_true = [0, 0, 1, 1, 2, 2, 3, 3]
    y_pred = [0, 0, 1, 0, 2, 0, 0, 0]  # b found once of twice, c never
    metrics = classification_metrics(y_true, y_pred, CLASSES)

    rare = rare_class_recall(metrics, y_train, CLASSES)

    assert rare["classes"] == {"b": {"train_rows": 5, "recall": 0.5}, "c": {"train_rows": 12, "recall": 0.0}}
    assert rare["worst_class"] == {"class": "c", "recall": 0.0}


def test_rare_class_recall_skips_classes_absent_from_the_test_rows_and_never_picks_benign() -> None:
    y_train = [0] * 3 + [1] * 30 + [2] * 5 + [3] * 12
    metrics = classification_metrics([0, 1, 3], [0, 1, 3], CLASSES)  # no test row of b

    rare = rare_class_recall(metrics, y_train, CLASSES, k=3)

    assert list(rare["classes"]) == ["c", "a"] and rare["worst_class"]["recall"] == 1.0


def test_rare_class_recall_rejects_anomaly_metrics_and_a_bad_k() -> None:
    with pytest.raises(ValueError, match="per_class_recall"):
        rare_class_recall({"roc_auc": 0.9}, [0, 1], CLASSES)
    with pytest.raises(ValueError, match="k must be >= 1"):
        rare_class_recall(classification_metrics([0], [0], CLASSES), [0], CLASSES, k=0)


@pytest.mark.needs_data
def test_fl_simulate_json_reports_rare_class_recall_and_the_accountant_epsilon(data_dir: Path) -> None:
    from opacus.accountants import RDPAccountant

    result = CliRunner().invoke(app, [
        "fl", "simulate", "--dataset", "ton-iot-network", "--sites", "3", "--rounds", "2", "--max-rows", "1500",
        "--max-test", "600", "--in-process", "--dp-sgd", "epsilon=8,clip=1.0,delta=1e-5",
        "--data-dir", str(data_dir), "--json",
    ])

    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout[result.stdout.index("{"):])
    rare = doc["rare_class_recall"]
    assert "mitm" in rare["classes"]  # TON_IoT's rarest class (about 0.5 % of the rows)
    assert rare["classes"]["mitm"]["recall"] == doc["metrics"]["per_class_recall"]["mitm"]
    assert rare["worst_class"]["recall"] == min(doc["metrics"]["per_class_recall"].values())
    # every site's every local step is accounted: opacus' own RDP accountant over the same mechanism
    dp = doc["privacy"]
    train = doc["config"]["train"]
    worst = 0.0
    for site in dp["sites"].values():
        rate, steps = dp_sgd_sampling(site["rows"], -(-site["rows"] // train["batches_per_epoch"]))
        assert (site["sample_rate"], site["steps_per_round"]) == (rate, steps * train["local_epochs"])
        assert site["rounds"] == 2
        theirs = RDPAccountant()
        theirs.history = [(site["noise_multiplier"], rate, 2 * steps * train["local_epochs"])]
        worst = max(worst, theirs.get_epsilon(1e-5))
    assert doc["epsilon"] == pytest.approx(worst, rel=0.02) and doc["epsilon"] <= 8.0


def test_dp_sgd_defaults_are_few_large_batches_at_a_higher_lr_and_explicit_options_win() -> None:
    # measured (docs/benchmarks.md, "Usable DP" and "DP at larger sites"): 20 batches an epoch (the batch
    # follows the site) x 10 local epochs, Adam lr 0.01
    cfg = config_from_options(sites=5, rounds=5, dp_sgd="epsilon=8,clip=1.0,delta=1e-5")
    plain = config_from_options(sites=5, rounds=5)
    mine = config_from_options(sites=5, rounds=5, dp_sgd="epsilon=8,clip=1.0", lr=0.002, batch_size=64,
                               local_epochs=1)

    t = cfg.train
    assert (t.local_epochs, t.batches_per_epoch, t.lr, t.class_weight, t.lr_decay) == (10, 20, 0.01, "none", 1.0)
    assert (t.site_batch_size(4000), t.site_batch_size(20_000), t.site_batch_size(30_390)) == (200, 1000, 1520)
    assert cfg.server_opt == "none"
    assert plain.train.lr == 3e-3 and plain.train.batches_per_epoch is None  # runs without DP-SGD keep theirs
    assert (mine.train.lr, mine.train.batch_size, mine.train.local_epochs) == (0.002, 64, 1)
    assert mine.train.batches_per_epoch is None and mine.train.site_batch_size(20_000) == 64


def test_batches_per_epoch_gives_every_site_the_same_sample_rate_and_the_accountant_agrees() -> None:
    from trustmesh.privacy import DPSGDAccountant, DPSGDConfig

    sgd = DPSGDConfig.parse("epsilon=8,clip=1.0,delta=1e-5", rounds=5)
    cfg = config_from_options(sites=3, rounds=5, dp_sgd="epsilon=8,clip=1.0,delta=1e-5")
    rows = {"0": 4_000, "1": 20_000, "2": 30_391}
    acc = DPSGDAccountant(sgd, rows, batch_size={s: cfg.train.site_batch_size(n) for s, n in rows.items()},
                          local_epochs=cfg.train.local_epochs)

    sites = acc.describe()["sites"]
    assert {s["sample_rate"] for s in sites.values()} == {1 / 20}  # the same q whatever the site's size
    assert {s["steps_per_round"] for s in sites.values()} == {200}
    assert len({s["noise_multiplier"] for s in sites.values()}) == 1  # so the same calibrated noise
    # a fixed batch gives the larger sites more steps, hence more noise per step for the same epsilon
    fixed = DPSGDAccountant(sgd, rows, batch_size=256, local_epochs=10).describe()["sites"]
    assert fixed["2"]["steps_per_round"] > fixed["0"]["steps_per_round"]
    assert fixed["2"]["noise_multiplier"] < sites["2"]["noise_multiplier"]
    assert acc.check(5) <= 8.0


def test_batch_size_and_batches_per_epoch_are_exclusive_and_checked() -> None:
    with pytest.raises(ConfigError, match="one of --batch-size and --batches-per-epoch"):
        config_from_options(sites=3, rounds=2, batch_size=64, batches_per_epoch=10)
    with pytest.raises(ConfigError, match="batches_per_epoch must be >= 1"):
        config_from_options(sites=3, rounds=2, batches_per_epoch=0)


@pytest.fixture(scope="module")
def ton(data_dir: Path) -> Any:
    from trustmesh.federated import load_federated_data

    return load_federated_data("ton-iot-network", data_dir, max_train=1000, max_test=400, seed=0)


@pytest.mark.needs_data
def test_public_rows_are_unsw_rows_only_mapped_through_the_private_encoder(ton: Any, data_dir: Path) -> None:
    from trustmesh.federated import public_rows
    from trustmesh.flows import load_dataset

    unsw = load_dataset("unsw-nb15", data_dir=data_dir)

    public = public_rows("unsw-nb15", ton, data_dir)

    assert public.X.shape == (len(unsw.labels), ton.n_features) and public.info["rows"] == len(unsw.labels)
    assert public.info["data_digest"] == unsw.digest and public.info["dataset"] == "unsw-nb15"
    cols = list(ton.feature_names)
    shared = [cols.index(c) for c in public.info["shared_columns"]]
    assert set(public.info["shared_columns"]) >= {"duration", "src_bytes", "dst_bytes"}
    others = np.ones(len(cols), dtype=bool)
    others[shared] = False
    assert not public.X[:, others].any()  # nothing the public data does not record
    dur = cols.index("duration")
    raw = np.full((5, len(cols)), np.nan)
    raw[:, dur] = unsw.features["dur"].to_numpy()[:5]
    expected = ton.preprocessor.transform(raw)[:, dur]
    assert np.allclose(public.X[:5, dur], expected, atol=1e-5)
    # no private row (training or test) is among the public ones
    private = {r.tobytes() for r in np.vstack([ton.X_train, ton.X_test]).astype(np.float32)}
    assert not private & {r.tobytes() for r in public.X}
    assert public.classes == tuple(sorted(set(np.asarray(unsw.labels).astype(str))))


@pytest.mark.needs_data
def test_pretrained_weights_transfer_the_hidden_layers_only(ton: Any, data_dir: Path) -> None:
    from trustmesh.federated import MLPModel, PublicRows, pretrained_weights, public_rows

    full = public_rows("unsw-nb15", ton, data_dir)
    small = PublicRows(full.X[::40], full.y[::40], full.classes, full.info)  # every 40th row: a fast test
    seeded = MLPModel(ton.n_features, len(ton.classes), (64, 32), seed=3).get_weights()

    weights = pretrained_weights(small, ton.n_features, len(ton.classes), (64, 32), seed=3)

    assert [w.shape for w in weights] == [w.shape for w in seeded]
    assert all(not np.array_equal(a, b) for a, b in zip(weights[:-2], seeded[:-2], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(weights[-2:], seeded[-2:], strict=True))  # fresh head


@pytest.mark.parametrize(("name", "message"), [("ton-iot-network", "another dataset"), ("nope", "must be one of")])
@pytest.mark.needs_data
def test_public_rows_refuse_the_private_dataset_and_unknown_names(ton: Any, name: str, message: str) -> None:
    from trustmesh.federated import public_rows

    with pytest.raises(ConfigError, match=message):
        public_rows(name, ton)


@pytest.mark.needs_data
def test_fl_simulate_dp_pretrain_records_the_public_data_and_costs_no_epsilon(data_dir: Path) -> None:
    args = ["fl", "simulate", "--dataset", "ton-iot-network", "--sites", "3", "--rounds", "1", "--max-rows", "900",
            "--max-test", "300", "--dp-sgd", "noise=1.0,clip=1.0", "--data-dir", str(data_dir), "--json"]

    plain = CliRunner().invoke(app, [*args, "--in-process"])
    pre = CliRunner().invoke(app, [*args, "--in-process", "--dp-pretrain", "unsw-nb15"])
    refused = CliRunner().invoke(app, [*args, "--dp-pretrain", "unsw-nb15"])

    assert plain.exit_code == 0 and pre.exit_code == 0, pre.output
    a, b = (json.loads(r.stdout[r.stdout.index("{"):]) for r in (plain, pre))
    assert "pretrain" not in a and b["pretrain"]["dataset"] == "unsw-nb15" and b["pretrain"]["rows"] > 80_000
    assert b["epsilon"] == a["epsilon"] > 0  # the same private steps, the same accountant
    assert refused.exit_code == 2 and "--in-process" in refused.output and "Traceback" not in refused.output


def test_run_inprocess_starts_from_the_given_initial_weights() -> None:
    from _fl_synth import blobs

    from trustmesh.federated import MLPModel, run_inprocess

    data = blobs(n_train=600, n_test=300)
    cfg = config_from_options(sites=3, rounds=1, dp_sgd="noise=1.0,clip=1.0", lr=1e-7, local_epochs=1, seed=1)
    trained = MLPModel(data.n_features, len(data.classes), cfg.train.hidden, seed=0)
    trained.train_epochs(data.X_train, data.y_train, 5, lr=1e-2)
    good = trained.get_weights()

    seeded = run_inprocess(cfg, data)
    started = run_inprocess(cfg, data, initial_weights=good)

    # lr 1e-7 leaves the model where it started: the trained one scores high, the seeded one does not
    assert started.metrics["macro_f1"] > 0.9 > seeded.metrics["macro_f1"]
    assert all(np.allclose(a, b, atol=1e-3) for a, b in zip(started.final_weights, good, strict=True))
    with pytest.raises(ValueError, match="expected"):
        run_inprocess(cfg, data, initial_weights=good[:-1])


def test_fl_simulate_dp_pretrain_refusals_name_the_reason_before_loading_data(tmp_path: Path) -> None:
    # an empty --data-dir: each refusal must come before the data would be read
    args = ["fl", "simulate", "--dataset", "ton-iot-network", "--sites", "3", "--rounds", "1",
            "--dp-pretrain", "unsw-nb15", "--data-dir", str(tmp_path)]

    flower = CliRunner().invoke(app, args)
    autoencoder = CliRunner().invoke(app, [*args, "--in-process", "--model", "autoencoder"])

    assert flower.exit_code == 2 and "Flower simulation" in flower.output and "add --in-process" in flower.output
    assert autoencoder.exit_code == 2 and "--model autoencoder" in autoencoder.output
    assert "Traceback" not in flower.output + autoencoder.output
