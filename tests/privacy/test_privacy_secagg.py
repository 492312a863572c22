"""Tests for SecAgg+ settings validation."""

from __future__ import annotations

import pytest

from trustmesh.privacy import SecAggConfig


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_shares": 1}, "num_shares"),
        ({"num_shares": 3, "reconstruction_threshold": 4}, "reconstruction_threshold"),
        ({"clipping_range": 0}, "clipping_range"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SecAggConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [3, 4, 10, 100])
def test_for_sites_picks_odd_shares_and_a_majority_threshold(n: int) -> None:
    cfg = SecAggConfig.for_sites(n)
    assert cfg.num_shares <= n and cfg.num_shares % 2 == 1
    assert cfg.num_shares / 2 < cfg.reconstruction_threshold <= cfg.num_shares
