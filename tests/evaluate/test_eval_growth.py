"""Growth fits: power-law exponents and the log model."""

from __future__ import annotations

import numpy as np
import pytest

from trustmesh.evaluate import fit_growth


def test_power_law_exponent_is_recovered() -> None:
    x = np.array([1e3, 1e4, 1e5, 1e6])
    fit = fit_growth(x, 3.0 * x**1.5)
    assert fit.best == "power"
    assert fit.exponent == pytest.approx(1.5, abs=1e-9)
    assert fit.coefficient == pytest.approx(3.0, rel=1e-6)
    assert fit.predict([1e7])[0] == pytest.approx(3.0 * 1e7**1.5, rel=1e-6)


def test_logarithmic_growth_prefers_the_log_model() -> None:
    x = np.array([1e3, 1e4, 1e5, 1e6, 1e7])
    y = 2.0 + 0.5 * np.log(x)  # e.g. proof size ~ log2(n)
    fit = fit_growth(x, y)
    assert fit.best == "log"
    assert fit.log_slope == pytest.approx(0.5)
    assert fit.r2_log == pytest.approx(1.0)
    assert 0 < fit.exponent < 0.3  # nearly flat as a power law


@pytest.mark.parametrize(
    ("x", "y", "msg"),
    [([1, 1], [2, 3], "two distinct"), ([1, 2], [0, 1], "positive"), ([1, 2, 3], [1, 2], "equal length")],
)
def test_bad_inputs_are_rejected(x: list[float], y: list[float], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        fit_growth(x, y)
