"""Tests for update validation and commitments."""

from __future__ import annotations

import numpy as np

from trustmesh.federated import UpdateValidator, commit_arrays

SHAPES = [(2, 3), (3,)]


def _ok() -> list[np.ndarray]:
    return [np.ones((2, 3), dtype=np.float32), np.zeros(3, dtype=np.float32)]


def test_commitment_changes_with_any_bit_shape_or_dtype() -> None:
    base = commit_arrays(_ok())
    bumped = _ok()
    bumped[1][2] = np.nextafter(np.float32(0), np.float32(1))
    assert commit_arrays(bumped) != base
    assert commit_arrays([a.reshape(-1) for a in _ok()]) != base
    assert commit_arrays([a.astype(np.float64) for a in _ok()]) != base
    assert commit_arrays(_ok()) == base


def test_valid_update_passes_then_its_replay_is_caught() -> None:
    v = UpdateValidator(SHAPES)
    c = commit_arrays(_ok())
    assert v.check(_ok(), c, 1, "a") is None
    reason = v.check(_ok(), c, 2, "b")
    assert reason is not None and "replay" in reason and "round 1" in reason


def test_wrong_shape_and_nan_are_rejected() -> None:
    v = UpdateValidator(SHAPES)
    wrong = [np.ones((3, 2)), np.zeros(3)]
    nan = _ok()
    nan[0][0, 0] = np.nan
    assert "wrong shape" in (v.check(wrong, commit_arrays(wrong), 1, "a") or "")
    assert "wrong shape" in (v.check(wrong[:1], commit_arrays(wrong[:1]), 1, "a") or "")
    assert "non-finite" in (v.check(nan, commit_arrays(nan), 1, "a") or "")
