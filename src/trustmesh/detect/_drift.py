"""Score drift: has a site's score distribution moved away from the one its baseline was fitted on?

A site baseline stores :class:`ScoreReference`, evenly spaced quantiles of its final scores on the
held-out benign part of the baseline window. :func:`score_drift` compares the scores of new traffic
with it by two statistics:

* the Population Stability Index over the reference deciles, ``PSI = sum (o - e) ln(o / e)``
  (Siddiqi, *Credit Risk Scorecards*, 2006; conventional reading: < 0.1 stable, 0.1-0.25 moderate,
  > 0.25 a significant shift);
* the two-sample Kolmogorov-Smirnov statistic ``D = sup |F_obs - F_ref|`` against the asymptotic
  critical value ``c(alpha) * sqrt((n + m) / (n m))`` (Smirnov 1948).

Drift is reported when the shift is both large (PSI above its limit) and significant (D above its
critical value): PSI alone is noisy on small windows, KS alone flags negligible shifts on large ones.

Both are computed on the scores **below the alert threshold** on both sides: an attack in the new
traffic raises alerts (which the detector reports anyway) but must not read as drift of the benign
traffic; a benign population that drifts upwards shifts the sub-threshold part too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trustmesh.errors import ModelError

__all__ = ["DriftReport", "ScoreReference", "model_drift", "score_drift"]

_N_QUANTILES = 1001
_EPS = 1e-4  # floor of a bin share in the PSI (an empty bin would give an infinite term)


@dataclass(frozen=True, slots=True)
class ScoreReference:
    """Quantiles (levels 0, 1/1000, ..., 1) of the benign scores a model was calibrated on."""

    quantiles: tuple[float, ...]
    n: int

    def __post_init__(self) -> None:
        q = np.asarray(self.quantiles, dtype=np.float64)
        if q.size < 2 or not np.all(np.isfinite(q)) or np.any(np.diff(q) < 0) or q[0] < 0 or q[-1] > 1:
            raise ModelError("score reference quantiles must be >= 2 non-decreasing values in [0, 1]")
        if self.n < 1:
            raise ModelError(f"score reference n must be >= 1, got {self.n}")

    @classmethod
    def from_scores(cls, scores: np.ndarray) -> ScoreReference:
        """Summarise benign scores by their quantiles."""
        s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        if s.size == 0:
            raise ValueError("scores must not be empty")
        q = np.quantile(s, np.linspace(0.0, 1.0, _N_QUANTILES))
        return cls(quantiles=tuple(float(x) for x in np.maximum.accumulate(q)), n=int(s.size))

    def sample(self, below: float | None = None) -> np.ndarray:
        """Return the quantiles (optionally only those below ``below``) as a stand-in sample."""
        q = np.asarray(self.quantiles, dtype=np.float64)
        return q if below is None else q[q < below]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form."""
        return {"quantiles": list(self.quantiles), "n": self.n}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ScoreReference:
        """Rebuild from :meth:`to_dict`, checking every field."""
        try:
            return cls(quantiles=tuple(float(x) for x in doc["quantiles"]), n=int(doc["n"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"score reference is malformed ({exc})") from None


@dataclass(frozen=True, slots=True)
class DriftReport:
    """Outcome of one drift check: ``drifted`` when the shift is both large (PSI) and significant (KS)."""

    psi: float
    ks: float
    ks_critical: float
    n: int
    reference_n: int
    psi_limit: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form."""
        return {"psi": round(self.psi, 6), "ks": round(self.ks, 6), "ks_critical": round(self.ks_critical, 6),
                "n": self.n, "reference_n": self.reference_n, "psi_limit": self.psi_limit,
                "drifted": self.drifted}  # fmt: skip


def _psi(ref: np.ndarray, obs: np.ndarray) -> float:
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, 11)[1:-1]))
    e = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    o = np.bincount(np.searchsorted(edges, obs, side="right"), minlength=edges.size + 1) / obs.size
    e, o = np.maximum(e, _EPS), np.maximum(o, _EPS)
    return float(np.sum((o - e) * np.log(o / e)))


def _ks(ref: np.ndarray, obs: np.ndarray) -> float:
    grid = np.union1d(ref, obs)
    f_ref = np.searchsorted(np.sort(ref), grid, side="right") / ref.size
    f_obs = np.searchsorted(np.sort(obs), grid, side="right") / obs.size
    return float(np.max(np.abs(f_ref - f_obs)))


def score_drift(
    reference: ScoreReference,
    scores: np.ndarray,
    *,
    threshold: float = 1.0,
    psi_limit: float = 0.25,
    alpha: float = 0.001,
    min_flows: int = 200,
) -> DriftReport | None:
    """Compare ``scores`` with ``reference`` below ``threshold``; None when fewer than ``min_flows``.

    The reference sample size for the KS critical value is the number of benign rows the quantiles
    summarise (scaled to the share below the threshold).
    """
    if psi_limit <= 0:
        raise ValueError(f"psi_limit must be > 0, got {psi_limit}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    obs = np.asarray(scores, dtype=np.float64)
    obs = obs[np.isfinite(obs) & (obs < threshold)]
    ref = reference.sample(below=threshold)
    if obs.size < min_flows or ref.size < 10:
        return None
    m = max(1, int(round(reference.n * ref.size / len(reference.quantiles))))
    n = int(obs.size)
    psi = _psi(ref, obs)
    ks = _ks(ref, obs)
    crit = math.sqrt(-0.5 * math.log(alpha / 2.0)) * math.sqrt((n + m) / (n * m))
    return DriftReport(psi=psi, ks=ks, ks_critical=crit, n=n, reference_n=m, psi_limit=psi_limit,
                       drifted=bool(psi > psi_limit and ks > crit))


def model_drift(detector: object, scores: np.ndarray) -> dict[str, Any] | None:
    """Drift of ``scores`` against a detector's stored benign reference (site baselines carry one).

    Returns None for a detector without a reference; ``{"checked": False, ...}`` when too few flows
    score below its threshold to tell.
    """
    reference = getattr(detector, "reference", None)
    if not isinstance(reference, ScoreReference):
        return None
    threshold = float(getattr(detector, "threshold", 1.0))
    report = score_drift(reference, scores, threshold=threshold)
    if report is None:
        return {"checked": False, "reason": "fewer than 200 flows below the threshold", "drifted": False}
    return {"checked": True, **report.to_dict()}
