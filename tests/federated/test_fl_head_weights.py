"""The class-count output head (``--head-weights classes``): sites scale their output rows' update so the
server's ordinary weighted sum (plain, masked) weighs row c by each site's rows of class c."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from _fl_synth import rare_classes

from trustmesh.errors import ConfigError
from trustmesh.federated import FederatedData, FLConfig, PartitionSpec, TrainConfig, config_from_options, plan_run
from trustmesh.federated._aggregate import FedAvg, flatten, unflatten
from trustmesh.federated._bounded import BoundSpec, from_ring, quantize_update, to_ring
from trustmesh.federated._masks import MaskingServer, MaskingSite, neighbour_graph
from trustmesh.federated._site import default_head_weights, head_row_scales, scale_head_rows
from trustmesh.privacy import SecAggConfig

# three sites, four classes; class 3 is at no site (N_c = 0), class 2 only at site 2
COUNTS = np.array([[30, 10, 0, 0], [5, 40, 0, 0], [15, 0, 20, 0]], dtype=np.int64)
SHAPES = [(6, 5), (6,), (4, 6), (4,)]  # a tiny MLP: 5 -> 6 -> 4 classes


def _updates(seed: int = 0) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    base = [rng.normal(size=s) for s in SHAPES]
    deltas = [[rng.normal(scale=0.1, size=s) for s in SHAPES] for _ in COUNTS]
    return base, deltas


def _class_weighted_mean(base: list[np.ndarray], deltas: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The intended result, written out directly: n_k/N for hidden layers, n_kc/N_c for output row c."""
    n_k = COUNTS.sum(axis=1).astype(np.float64)
    row_w = n_k / n_k.sum()
    n_c = COUNTS.sum(axis=0)
    class_w = np.where(n_c > 0, COUNTS / np.maximum(n_c, 1), row_w[:, None])  # (sites, classes)
    out = [b + sum(w * d[i] for w, d in zip(row_w, deltas, strict=True)) for i, b in enumerate(base[:-2])]
    out.append(base[-2] + sum(class_w[k][:, None] * d[-2] for k, d in enumerate(deltas)))
    out.append(base[-1] + sum(class_w[k] * d[-1] for k, d in enumerate(deltas)))
    return out


def test_the_weighted_sum_of_scaled_updates_is_the_class_count_weighted_head() -> None:
    base, deltas = _updates()
    total = COUNTS.sum(axis=0)
    models = [flatten(base) + flatten(scale_head_rows(d, head_row_scales(c, total)))
              for d, c in zip(deltas, COUNTS, strict=True)]

    agg = FedAvg().aggregate(models, [int(c.sum()) for c in COUNTS], flatten(base)).vector

    got = unflatten(agg, base)
    expected = _class_weighted_mean(base, deltas)
    plain = unflatten(FedAvg().aggregate([flatten(base) + flatten(d) for d in deltas],
                                         [int(c.sum()) for c in COUNTS], flatten(base)).vector, base)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-6)  # float32 out of unflatten
    np.testing.assert_allclose(agg, flatten(expected), rtol=0, atol=1e-12)  # the float64 sum itself
    # hidden layers and the class no site has (row 3) are FedAvg's; class 2's row is site 2's own update
    for g, p in zip(got[:2], plain[:2], strict=True):
        np.testing.assert_array_equal(g, p)
    np.testing.assert_array_equal(got[-2][3], plain[-2][3])
    np.testing.assert_allclose(got[-2][2], (base[-2] + deltas[2][-2])[2], atol=1e-6)


def test_masked_sum_of_scaled_updates_is_the_class_count_weighted_head() -> None:
    # the SecAgg+ path: each site clips and quantises its scaled update, masks n_k * q in Z_2^64;
    # the server unmasks only the sum
    base, deltas = _updates(1)
    total = COUNTS.sum(axis=0)
    spec = BoundSpec(clip=8.0, bound=1 << 21)
    ids, weights = [1, 2, 3], [int(c.sum()) for c in COUNTS]
    graph = neighbour_graph(ids, 3)
    server = MaskingServer(1, graph, 2)
    sites = {i: MaskingSite.setup(i, 1, 2) for i in ids}
    server.public_keys = {i: (s.pk1, s.pk2) for i, s in sites.items()}
    forwarded = server.forward({i: s.share_keys({j: server.public_keys[j] for j in graph[i]})
                                for i, s in sites.items()})
    masked = np.zeros(sum(int(np.prod(s)) for s in SHAPES), dtype=np.uint64)
    rng = np.random.default_rng(2)
    for i, d, c, w in zip(ids, deltas, COUNTS, weights, strict=True):
        sites[i].receive_shares(forwarded[i])
        q = quantize_update(flatten(scale_head_rows(d, head_row_scales(c, total))), spec, rng)
        masked = masked + sites[i].mask(to_ring(q, w))

    released = {i: sites[i].unmask(graph[i], set()) for i in ids}
    summed, _ = server.unmask(masked, set(ids), released)

    mean = flatten(base) + from_ring(summed).astype(np.float64) * spec.step / sum(weights)
    assert np.abs(mean - flatten(_class_weighted_mean(base, deltas))).max() <= spec.step  # one level at most


def test_scales_are_one_for_absent_classes_and_empty_sites_and_checked() -> None:
    total = COUNTS.sum(axis=0)

    s2 = head_row_scales(COUNTS[2], total)

    n_share = COUNTS[2].sum() / total.sum()
    np.testing.assert_allclose(s2, [15 / 50 / n_share, 0.0, 1 / n_share, 1.0])
    np.testing.assert_array_equal(head_row_scales([0, 0, 0, 0], total), np.ones(4))
    with pytest.raises(ValueError, match="at most the global counts"):
        head_row_scales([31, 0, 0, 0], [30, 0, 0, 0])
    with pytest.raises(ValueError, match="one length"):
        head_row_scales([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="does not match 3 class scales"):
        scale_head_rows([np.zeros((4, 2)), np.zeros(4)], np.ones(3))


def _skewed() -> FederatedData:
    return rare_classes(900, 200, 5, 4, common=2, keep_rare=0.3, seed=0)


def _cfg(head: str, **extra: Any) -> FLConfig:
    return FLConfig(n_sites=3, rounds=2, partition=PartitionSpec(kind="dirichlet", alpha=0.5), seed=2,
                    train=TrainConfig(hidden=(8,), head_weights=head, local_epochs=2), **extra)


def test_a_site_scales_only_its_output_rows_by_round_zeros_counts(one_torch_thread: None) -> None:
    data = _skewed()
    rows, classes = plan_run(_cfg("rows"), data), plan_run(_cfg("classes"), data)
    start = rows.new_model().get_weights()

    for k in range(3):
        site = classes.site(k)
        w_rows, n, _ = rows.site(k).fit(start, 1)
        w_cls, n_cls, _ = site.fit(start, 1)

        assert n == n_cls and site.head_scale is not None
        np.testing.assert_allclose(site.head_scale, head_row_scales(site.label_counts(), classes.round_zero()))
        for a, b in zip(w_rows[:-2], w_cls[:-2], strict=True):
            np.testing.assert_array_equal(a, b)  # same seeded training; hidden layers untouched
        expected = scale_head_rows([a - s for a, s in zip(w_rows[-2:], start[-2:], strict=True)], site.head_scale)
        for a, e, s in zip(w_cls[-2:], expected, start[-2:], strict=True):
            np.testing.assert_allclose(a, s + e, atol=1e-5)
    assert rows.site(0).head_scale is None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning:ray.*")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_the_flower_simulation_and_the_in_process_run_agree() -> None:
    from trustmesh.federated import run_inprocess, simulate

    data = _skewed()
    cfg = _cfg("classes")

    local = run_inprocess(cfg, data)
    flower, _ = simulate(cfg, data)
    rows = run_inprocess(_cfg("rows"), data)

    np.testing.assert_allclose(flatten(flower.final_weights), flatten(local.final_weights), atol=1e-5)
    assert flower.config["train"]["head_weights"] == "classes"
    # and the head made a difference: the run is not the plain FedAvg one
    assert np.abs(flatten(local.final_weights[-2:]) - flatten(rows.final_weights[-2:])).max() > 1e-3


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning:ray.*")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_secagg_with_a_zk_bound_sums_the_scaled_updates_clipped_after_scaling() -> None:
    from trustmesh.federated import simulate

    data = _skewed()
    clip = 0.01  # small enough that some scaled coordinates exceed it
    secagg = SecAggConfig(num_shares=3, reconstruction_threshold=2, zk_bound=15, zk_clip=clip)
    cfg = dataclasses.replace(_cfg("classes", secagg=secagg), rounds=1, train=TrainConfig(hidden=(4,),
                              head_weights="classes"))
    plan = plan_run(cfg, data)
    start = plan.new_model().get_weights()
    fits = [plan.site(k).fit(start, 1) for k in range(3)]
    base = flatten(start)
    # what the sites send: the scaled update, clipped to the proven bound afterwards
    raw = [flatten(w) - base for w, _, _ in fits]
    assert max(np.abs(d).max() for d in raw) > clip
    deltas = [np.clip(d, -clip, clip) for d in raw]
    expected = base + sum(d * n for d, (_, n, _) in zip(deltas, fits, strict=True)) / sum(n for _, n, _ in fits)

    result, run = simulate(cfg, data)

    (r1,) = result.rounds
    assert sorted(r1.sites) == ["0", "1", "2"] and not r1.rejected  # every proof of the clipped update holds
    assert np.abs(flatten(result.final_weights) - expected).max() <= clip / 15 + 1e-6
    assert run.bound_stats and not run.bound_stats[-1].rejected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dp": "noise=1.0,clip=1.0,delta=1e-5"}, "--dp averages clipped updates with equal weights"),
        ({"dp_sgd": "noise=1.0,clip=1.0"}, "the --dp-sgd accountant does not cover"),
        ({"aggregator": "median"}, "--aggregator median is not an example-weighted mean"),
        ({"aggregator": "trimmed-mean"}, "--aggregator trimmed-mean"),
        ({"aggregator": "multikrum"}, "--aggregator multikrum"),
        ({"aggregator": "fltrust"}, "--aggregator fltrust"),
        ({"defence": "normbound"}, "--defence normbound"),
        ({"model": "autoencoder"}, "has no class output layer"),
    ],
)
def test_classes_is_refused_where_unsound_and_rows_is_their_default(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_options(sites=5, rounds=2, head_weights="classes", **options)

    assert config_from_options(sites=5, rounds=2, **options).train.head_weights == "rows"


def test_the_plain_default_is_classes_and_bad_values_give_one_line() -> None:
    from typer.testing import CliRunner

    from trustmesh.cli._app import app

    assert config_from_options(sites=5, rounds=5).train.head_weights == default_head_weights() == "classes"
    assert config_from_options(sites=5, rounds=5, aggregator="fedprox", secagg=True).train.head_weights == "classes"
    assert config_from_options(sites=5, rounds=5, head_weights="rows").train.head_weights == "rows"
    for args, msg in ((["--head-weights", "cls"], "head_weights must be one of rows, classes"),
                      (["--head-weights", "classes", "--aggregator", "median"], "--head-weights classes:")):
        result = CliRunner().invoke(app, ["fl", "simulate", "--sites", "3", "--rounds", "1", *args])
        assert result.exit_code == 2, result.output
        assert msg in result.output and "Traceback" not in result.output
