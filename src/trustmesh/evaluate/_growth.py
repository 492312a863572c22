"""Fit how a cost grows with load: power law ``y = a x^b`` or log model ``y = a + b ln x``.

Both are ordinary least squares fits (the power law in log-log space); the better one by R^2 in the
original space is reported, with the power-law exponent always given (b ~ 0: constant, ~1: linear).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GrowthFit", "fit_growth"]


@dataclass(frozen=True, slots=True)
class GrowthFit:
    """Fitted growth of ``y`` over ``x``."""

    exponent: float  # b of y = a x^b
    coefficient: float  # a of y = a x^b
    r2_power: float
    log_slope: float  # b of y = a + b ln x
    log_intercept: float
    r2_log: float
    best: str  # "power" or "log"

    def predict(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        """Evaluate the better model at ``x``."""
        xs = np.asarray(x, dtype=float)
        if self.best == "power":
            return np.asarray(self.coefficient * xs**self.exponent)
        return np.asarray(self.log_intercept + self.log_slope * np.log(xs))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "model": self.best,
            "power_law": {"a": self.coefficient, "b": self.exponent, "r2": self.r2_power},
            "log": {"a": self.log_intercept, "b": self.log_slope, "r2": self.r2_log},
        }


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)


def fit_growth(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> GrowthFit:
    """Fit power-law and log models to positive ``x``, ``y`` (at least two distinct x values)."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {xs.shape} and {ys.shape}")
    if len(np.unique(xs)) < 2:
        raise ValueError("fit_growth needs at least two distinct x values")
    if np.any(xs <= 0) or np.any(ys <= 0) or not np.all(np.isfinite(ys)):
        raise ValueError("fit_growth needs positive, finite x and y")
    lx, ly = np.log(xs), np.log(ys)
    b, log_a = np.polyfit(lx, ly, 1)
    a = math.exp(log_a)
    r2_pow = _r2(ys, a * xs**b)
    slope, intercept = np.polyfit(lx, ys, 1)
    r2_log = _r2(ys, intercept + slope * lx)
    return GrowthFit(float(b), float(a), r2_pow, float(slope), float(intercept), r2_log,
                     "power" if r2_pow >= r2_log else "log")
