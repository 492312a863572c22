"""Tests for the round logic (in-process path): learning, rejection, DP budget, CKKS, ledger lineage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _fl_synth import blobs

from trustmesh.errors import ConfigError, FederatedError
from trustmesh.federated import (
    AttackSpec,
    Coordinator,
    FedAvg,
    FLConfig,
    PartitionSpec,
    RoundRecorder,
    Submission,
    commit_arrays,
    open_round_ledger,
    run_inprocess,
)
from trustmesh.privacy import DPConfig

DATA = blobs()


def test_federated_training_learns_separable_data() -> None:
    result = run_inprocess(FLConfig(n_sites=3, rounds=3, seed=1), DATA)

    assert result.path == "in-process"
    assert len(result.rounds) == 3
    assert result.metrics["macro_f1"] > 0.9
    assert result.rounds[0].sites == ("0", "1", "2")


def test_same_seed_same_model() -> None:
    a = run_inprocess(FLConfig(n_sites=3, rounds=2, seed=4), DATA)
    b = run_inprocess(FLConfig(n_sites=3, rounds=2, seed=4), DATA)
    assert a.rounds[-1].aggregate_sha256 == b.rounds[-1].aggregate_sha256


def test_bad_updates_are_rejected_and_recorded_and_the_round_completes() -> None:
    weights = [np.zeros((2, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)]
    coord = Coordinator(weights, FedAvg())
    good = [np.ones((2, 2), dtype=np.float32), np.ones(2, dtype=np.float32)]
    nan = [w.copy() for w in good]
    nan[1][0] = np.nan

    r1 = coord.aggregate(1, [Submission("a", good, 10), Submission("b", [good[0]], 10), Submission("c", nan, 10)])
    r2 = coord.aggregate(2, [Submission("a", good, 10), Submission("d", [good[0] * 2, good[1] * 2], 10)])

    assert set(r1.rejected) == {"b", "c"} and "wrong shape" in r1.rejected["b"] and "non-finite" in r1.rejected["c"]
    assert set(r1.commitments) == {"a", "b", "c"}
    assert np.allclose(coord.weights[0], 2.0)  # round 2 kept only d's update: a's was a replay
    assert "replay" in r2.rejected["a"]


def test_dp_budget_stops_training_and_reports_epsilon() -> None:
    dp = DPConfig(noise_multiplier=1.0, clip_norm=1.0, max_epsilon=6.0)
    result = run_inprocess(FLConfig(n_sites=3, rounds=10, dp=dp), DATA)

    assert result.stopped is not None and "budget 6.0" in result.stopped
    assert 0 < len(result.rounds) < 10
    assert result.epsilon is not None and 0 < result.epsilon <= 6.0
    assert [r.epsilon for r in result.rounds] == sorted(r.epsilon for r in result.rounds)  # type: ignore[type-var]


def test_ckks_rounds_match_plain_fedavg() -> None:
    plain = run_inprocess(FLConfig(n_sites=3, rounds=2), DATA)
    he = run_inprocess(FLConfig(n_sites=3, rounds=2, he="ckks"), DATA)

    diff = max(float(np.abs(a - b).max()) for a, b in zip(plain.final_weights, he.final_weights, strict=True))
    assert diff < 1e-3
    assert he.rounds[0].secure_aggregation == "ckks" and he.rounds[0].commitments == {}


def test_central_dp_under_ckks_noises_the_encrypted_sum_and_accounts_like_plain_dp() -> None:
    dp = DPConfig(noise_multiplier=1.0, clip_norm=1.0)
    clear = run_inprocess(FLConfig(n_sites=3, rounds=2, dp=dp, seed=3), DATA)
    noiseless = run_inprocess(FLConfig(n_sites=3, rounds=2, he="ckks", seed=3), DATA)

    he = run_inprocess(FLConfig(n_sites=3, rounds=2, he="ckks", dp=dp, seed=3), DATA)

    assert [r.epsilon for r in he.rounds] == [r.epsilon for r in clear.rounds]
    assert he.epsilon is not None and he.epsilon > 0
    assert he.rounds[0].defence["dp"]["mode"] == "central"
    # noise of std z*C/n = 1/3 per coordinate moved the model away from the noiseless CKKS run
    moved = np.concatenate([(a - b).ravel() for a, b in zip(he.final_weights, noiseless.final_weights, strict=True)])
    assert 0.1 < float(np.std(moved)) < 2.0


def test_sites_without_examples_are_rejected_for_that_not_as_replays() -> None:
    weights = [np.zeros(3, dtype=np.float32)]
    coord = Coordinator(weights, FedAvg())
    unchanged = [np.zeros(3, dtype=np.float32)]

    rec = coord.aggregate(1, [Submission("a", [np.ones(3, dtype=np.float32)], 5), Submission("b", unchanged, 0),
                              Submission("c", [u.copy() for u in unchanged], 0)])

    assert rec.rejected == {"b": "num_examples must be >= 1, got 0", "c": "num_examples must be >= 1, got 0"}
    assert np.allclose(coord.weights[0], 1.0)


def test_sign_flip_hurts_fedavg_more_than_median() -> None:
    attack = AttackSpec("sign-flip", 0.3, scale=10.0)
    avg = run_inprocess(FLConfig(n_sites=5, rounds=3, attack=attack), DATA)
    med = run_inprocess(FLConfig(n_sites=5, rounds=3, attack=attack, aggregator="median"), DATA)
    assert med.metrics["macro_f1"] > avg.metrics["macro_f1"] + 0.1


def test_incompatible_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="reveal only the sum"):
        FLConfig(aggregator="median", he="ckks")
    with pytest.raises(ConfigError, match="accounted for the mean"):
        FLConfig(aggregator="multikrum", dp=DPConfig(1.0, 1.0))
    with pytest.raises(ConfigError, match="--sites"):
        FLConfig(n_sites=0)


def test_secure_aggregate_of_wrong_shape_is_refused() -> None:
    coord = Coordinator([np.zeros(3, dtype=np.float32)], FedAvg(), secure="secagg+")
    with pytest.raises(FederatedError, match="wrong shape"):
        coord.aggregate_secure(1, ["a"], [np.zeros(4)])


def test_rounds_and_model_go_on_the_ledger_with_provable_lineage(tmp_path: Path) -> None:
    from trustmesh.ledger import verify_inclusion

    ledger = open_round_ledger(tmp_path / "ledger")
    recorder = RoundRecorder(ledger)
    cfg = FLConfig(n_sites=3, rounds=2, partition=PartitionSpec.parse("dirichlet:1.0"))
    result = run_inprocess(cfg, DATA, recorder=recorder)
    # synthetic data has no detector encoding; the artifact path is covered by test_fl_artifact.py
    model_index = recorder.record_model(commit_arrays(result.final_weights), {"kind": "mlp"})

    assert result.ledger_indices == [0, 1]
    assert recorder.indices == [0, 1] and model_index == 2
    entry = ledger.entry(1)
    assert entry.kind == "fl.round"
    assert entry.payload["aggregate_sha256"] == result.rounds[1].aggregate_sha256
    assert entry.payload["commitments"] == result.rounds[1].commitments
    model_entry = ledger.entry(2)
    assert list(model_entry.refs) == [0, 1]
    for index in (0, 1, 2):
        proof = ledger.prove_inclusion(index)
        verify_inclusion(proof, ledger.root(), ledger.entry_bytes(index))


def test_local_dp_sgd_with_opacus_trains() -> None:
    from trustmesh.federated import TrainConfig

    result = run_inprocess(FLConfig(n_sites=2, rounds=2, train=TrainConfig(dp_sgd=(0.5, 1.0))), DATA)

    assert result.config["train"]["dp_sgd"] == [0.5, 1.0]
    assert result.metrics["macro_f1"] > 0.5
