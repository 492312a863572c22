"""Tests for the aggregation rules and their robustness to outliers."""

from __future__ import annotations

import numpy as np
import pytest

from trustmesh.federated import CoordinateMedian, FedAvg, FLTrust, MultiKrum, TrimmedMean, make_aggregator

GLOBAL = np.zeros(4)
HONEST = [np.array([1.0, 1.0, 1.0, 1.0]) + 0.01 * i for i in range(4)]
EVIL = np.array([-100.0, 100.0, -100.0, 100.0])


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
