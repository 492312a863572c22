"""Usable record-level DP-SGD (issue 16 item 3): rare-class recall, the DP defaults, exact accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustmesh.cli._app import app
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
        rate, steps = dp_sgd_sampling(site["rows"], train["batch_size"])
        assert (site["sample_rate"], site["steps_per_round"]) == (rate, steps * train["local_epochs"])
        assert site["rounds"] == 2
        theirs = RDPAccountant()
        theirs.history = [(site["noise_multiplier"], rate, 2 * steps * train["local_epochs"])]
        worst = max(worst, theirs.get_epsilon(1e-5))
    assert doc["epsilon"] == pytest.approx(worst, rel=0.02) and doc["epsilon"] <= 8.0


def test_dp_sgd_defaults_are_few_large_batches_at_a_higher_lr_and_explicit_options_win() -> None:
    # measured (docs/benchmarks.md, "Usable DP (issue 16 item 3)"): batch 256 x 10 local epochs, Adam lr 0.01
    cfg = config_from_options(sites=5, rounds=5, dp_sgd="epsilon=8,clip=1.0,delta=1e-5")
    plain = config_from_options(sites=5, rounds=5)
    mine = config_from_options(sites=5, rounds=5, dp_sgd="epsilon=8,clip=1.0", lr=0.002, batch_size=64,
                               local_epochs=1)

    t = cfg.train
    assert (t.local_epochs, t.batch_size, t.lr, t.class_weight, t.lr_decay) == (10, 256, 0.01, "none", 1.0)
    assert cfg.server_opt == "none"
    assert plain.train.lr == 3e-3  # runs without DP-SGD keep their lr
    assert (mine.train.lr, mine.train.batch_size, mine.train.local_epochs) == (0.002, 64, 1)
