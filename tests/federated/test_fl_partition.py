"""Tests for the partitioners: coverage, determinism, skew, groups, hidden attack families."""

from __future__ import annotations

import numpy as np
import pytest

from trustmesh.federated import (
    PartitionSpec,
    partition,
    partition_attack_family,
    partition_dirichlet,
    partition_groups,
    partition_iid,
)

Y = np.repeat(np.arange(4), 250)


def test_iid_is_a_disjoint_cover_and_seeded() -> None:
    parts = partition_iid(len(Y), 5, seed=1)

    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(Y)))
    assert [len(p) for p in parts] == [200] * 5
    assert all(np.array_equal(a, b) for a, b in zip(parts, partition_iid(len(Y), 5, seed=1), strict=True))
    assert not np.array_equal(parts[0], partition_iid(len(Y), 5, seed=2)[0])


def _skew(parts: list[np.ndarray]) -> float:
    # mean over sites of the largest class share: 0.25 for perfectly balanced 4-class sites
    return float(np.mean([np.bincount(Y[p], minlength=4).max() / len(p) for p in parts]))


def test_dirichlet_small_alpha_is_more_skewed() -> None:
    skewed = partition_dirichlet(Y, 5, alpha=0.1, seed=0)
    mild = partition_dirichlet(Y, 5, alpha=100.0, seed=0)

    assert sorted(np.concatenate(skewed).tolist()) == list(range(len(Y)))
    assert _skew(skewed) > _skew(mild) + 0.2
    assert _skew(mild) < 0.35


def test_groups_give_one_site_per_group() -> None:
    groups = np.array(["fridge", "gps", "modbus"] * 10)

    parts = partition_groups(groups, 3)

    assert [set(groups[p].tolist()) for p in parts] == [{"fridge"}, {"gps"}, {"modbus"}]
    with pytest.raises(ValueError, match="n_sites must be in 1..3"):
        partition_groups(groups, 4)


def test_attack_family_hides_a_class_from_each_site_but_not_from_all() -> None:
    parts = partition_attack_family(Y, 3, seed=0, benign=0)

    seen = [set(Y[p].tolist()) for p in parts]
    assert all(0 in s for s in seen)
    assert all(len(s) == 3 for s in seen)  # one of the three attack classes hidden per site
    assert set().union(*seen) == {0, 1, 2, 3}


@pytest.mark.parametrize("text", ["iid", "dirichlet:0.5", "device", "attack-family", "attack-family:2"])
def test_spec_parse_roundtrips(text: str) -> None:
    spec = PartitionSpec.parse(text)
    assert PartitionSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text", ["dirichlet:-1", "random", "iid:3", "dirichlet:x"])
def test_spec_parse_rejects_bad_values(text: str) -> None:
    with pytest.raises(ValueError):
        PartitionSpec.parse(text)


def test_device_partition_needs_groups() -> None:
    with pytest.raises(ValueError, match="groups"):
        partition(PartitionSpec("device"), Y, 3, seed=0)
