"""CROWN bounds: sound on sampled points (random ReLU nets), never looser than interval bounds."""

from __future__ import annotations

import numpy as np
import pytest

from trustmesh.assurance import crown_bounds, ibp_bounds


def _net(rng: np.random.Generator, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(rng.normal(size=(b, a)) / np.sqrt(a), rng.normal(size=b) * 0.1) for a, b in zip(sizes, sizes[1:])]


def _forward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    for k, (W, b) in enumerate(layers):
        x = x @ W.T + b
        if k < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crown_contains_every_sampled_output_and_beats_ibp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layers = _net(rng, [6, 16, 8, 3])
    center = rng.normal(size=(5, 6))
    lo, hi = center - 0.3, center + 0.3
    spec = np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    low, up = crown_bounds(layers, lo, hi, spec)
    for r in range(5):
        pts = rng.uniform(lo[r], hi[r], size=(4000, 6))
        corners = np.where(rng.random((200, 6)) < 0.5, lo[r], hi[r])
        vals = _forward(layers, np.vstack([pts, corners])) @ spec.T
        assert np.all(vals >= low[r] - 1e-9) and np.all(vals <= up[r] + 1e-9)
    i_lo, i_hi = ibp_bounds(layers, lo, hi)
    ibp_diff_lo = i_lo[:, 1:] - i_hi[:, :1]  # interval bound of l_k - l_0
    assert np.all(low >= ibp_diff_lo - 1e-6)
    assert np.mean(up - low) < np.mean((i_hi[:, 1:] - i_lo[:, :1]) - ibp_diff_lo)


def test_point_box_gives_the_exact_output() -> None:
    rng = np.random.default_rng(5)
    layers = _net(rng, [4, 8, 2])
    x = rng.normal(size=(3, 4))
    low, up = crown_bounds(layers, x, x)
    out = _forward(layers, x)
    assert np.allclose(low, out, atol=1e-6) and np.allclose(up, out, atol=1e-6)


def test_bad_boxes_are_refused() -> None:
    layers = _net(np.random.default_rng(0), [2, 2, 2])
    with pytest.raises(ValueError, match="lo must be <= hi"):
        crown_bounds(layers, np.ones((1, 2)), np.zeros((1, 2)))
