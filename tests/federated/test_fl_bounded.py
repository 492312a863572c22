"""Enforced update bounds under secure aggregation: quantisation, ZK L-infinity proofs checked before
the masked sum, the commitment-sum link, and a Flower round that drops a site with a forged proof."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _fl_synth import blobs

from trustmesh.errors import FederatedError, ProofError
from trustmesh.federated import FLConfig, RoundRecorder, TrainConfig, flatten_weights, open_round_ledger, plan_run, simulate
from trustmesh.federated._bounded import (
    BoundSpec,
    check_commitment_sum,
    from_ring,
    prove_update,
    quantize_update,
    to_ring,
    verify_update,
)
from trustmesh.privacy import SecAggConfig
from trustmesh.privacy.zk import ProofContext
from trustmesh.privacy.zk.hazmat._group import L


def test_quantisation_is_bounded_unbiased_and_signed_sums_survive_the_ring() -> None:
    spec = BoundSpec(clip=0.5, bound=15)
    rng = np.random.default_rng(0)
    delta = np.concatenate([np.full(20_000, 0.01), [3.0, -3.0]])
    q = quantize_update(delta, spec, rng)
    assert q.max() <= 15 and q.min() >= -15 and q[-2] == 15 and q[-1] == -15
    assert abs(q[:-2].mean() * spec.step - 0.01) < 1e-3  # stochastic rounding keeps the mean
    a, b = np.array([-5, 7, 0], dtype=np.int64), np.array([-3, -9, 2], dtype=np.int64)
    assert from_ring(to_ring(a, 3) + to_ring(b, 2)).tolist() == [-21, 3, 4]


def _ctx(site: str, rnd: int = 1) -> ProofContext:
    return ProofContext("test.trustmesh", rnd, site, b"n" * 32)


def test_proofs_verify_only_in_their_context_and_the_commitment_sum_ties_inputs_to_proofs() -> None:
    spec = BoundSpec(clip=1.0, bound=7, prove=True)
    q1, q2 = np.array([7, -7, 0, 3], dtype=np.int64), np.array([-1, 2, 5, -6], dtype=np.int64)
    p1, p2 = prove_update(q1, spec, _ctx("1")), prove_update(q2, spec, _ctx("2"))
    c1 = verify_update(p1.commitments, p1.proof, 4, spec, _ctx("1"))
    c2 = verify_update(p2.commitments, p2.proof, 4, spec, _ctx("2"))
    with pytest.raises(ProofError):
        verify_update(p1.commitments, p1.proof, 4, spec, _ctx("1", rnd=2))  # replayed into another round
    with pytest.raises(ProofError):
        verify_update(p2.commitments, p1.proof, 4, spec, _ctx("1"))  # a proof for other commitments
    tampered = bytearray(p1.proof)
    tampered[-5] ^= 1
    with pytest.raises(ProofError):
        verify_update(p1.commitments, bytes(tampered), 4, spec, _ctx("1"))
    total = from_ring(to_ring(q1, 3) + to_ring(q2, 2))
    blinds = [(3 * r1 + 2 * r2) % L for r1, r2 in zip(p1.blinds, p2.blinds, strict=True)]
    check_commitment_sum({1: c1, 2: c2}, {1: 3, 2: 2}, total, blinds)
    cheat = total.copy()
    cheat[1] += 2  # a site masked a value other than the one it proved
    with pytest.raises(FederatedError, match="does not open"):
        check_commitment_sum({1: c1, 2: c2}, {1: 3, 2: 2}, cheat, blinds)


def test_an_honest_site_cannot_prove_an_unclipped_update() -> None:
    with pytest.raises(ValueError, match="exceed the bound"):
        prove_update(np.array([8], dtype=np.int64), BoundSpec(1.0, 7, True), _ctx("1"))


DATA = blobs(n_train=600, n_test=150)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning:ray.*")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_flower_round_drops_a_site_with_a_forged_proof_and_a_dropout_and_sums_the_rest(tmp_path: Path) -> None:
    secagg = SecAggConfig(num_shares=5, reconstruction_threshold=3, zk_bound=15, zk_clip=0.5)
    cfg = FLConfig(n_sites=5, rounds=1, secagg=secagg, seed=4, train=TrainConfig(hidden=(4,)))
    plan = plan_run(cfg, DATA)
    initial = plan.new_model().get_weights()
    honest = [0, 1, 2]
    fits = [plan.site(k).fit(initial, 1) for k in honest]
    base = flatten_weights(initial)
    deltas = [np.clip(flatten_weights(w) - base, -0.5, 0.5) for w, _, _ in fits]
    expected = base + sum(d * n for d, (_, n, _) in zip(deltas, fits, strict=True)) / sum(n for _, n, _ in fits)
    ledger = open_round_ledger(tmp_path / "ledger")

    result, run = simulate(cfg, DATA, recorder=RoundRecorder(ledger), faults={3: "bad-proof", 4: "drop"})

    (r1,) = result.rounds
    assert sorted(r1.sites) == ["0", "1", "2"]
    assert set(r1.rejected) == {"3"} and "proof failed" in r1.rejected["3"]
    got = flatten_weights(result.final_weights)
    assert np.abs(got - expected).max() <= 0.5 / 15 + 1e-6  # within one quantisation step of the honest mean
    payload = ledger.entry(result.ledger_indices[0]).payload
    assert payload["rejected"] == {"3": r1.rejected["3"]}
    (stats,) = run.bound_stats
    assert set(stats.verify_s) == {"0", "1", "2", "3"} and set(stats.prove_s) == {"0", "1", "2", "3"}
    (obs,) = run.masked_observations
    assert len(obs["vectors"]) == 3 and r1.masked_commitment == obs["commitment"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zk-bound", "127"], "add --secagg"),
        (["--secagg", "--zk-bound", "0", "--sites", "3"], "zk_bound must be in"),
        (["--secagg", "--zk-bound", "7", "--zk-clip", "-1", "--sites", "3"], "zk_clip must be > 0"),
    ],
)
def test_bad_bound_options_give_one_line_and_exit_2(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from trustmesh.cli._app import app

    result = CliRunner().invoke(app, ["fl", "simulate", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning:ray.*")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_later_rounds_reuse_keys_dealt_while_unmasking_and_match_the_plain_mean() -> None:
    from trustmesh.federated import run_inprocess

    cfg = FLConfig(n_sites=3, rounds=3, secagg=SecAggConfig.for_sites(3), seed=5, train=TrainConfig(hidden=(8,)))

    result, run = simulate(cfg, DATA)

    assert [s.setup for s in run.bound_stats] == [True, False, False]  # rounds 2-3: 2 messages per site
    plain = run_inprocess(FLConfig(n_sites=3, rounds=3, seed=5, train=TrainConfig(hidden=(8,))), DATA)
    # the same training, aggregated under masks: equal up to quantisation (8/2^21 per level)
    assert np.abs(flatten_weights(result.final_weights) - flatten_weights(plain.final_weights)).max() < 1e-3
    assert len({o["commitment"] for o in run.masked_observations}) == 3
