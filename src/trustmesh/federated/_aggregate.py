"""Aggregation rules: FedAvg, coordinate median, trimmed mean, Multi-Krum and FLTrust.

Each rule maps the sites' submitted models (plus the current global model) to the next global model
and reports which submissions it rejected and why. Papers:

* FedAvg — McMahan et al., AISTATS 2017; FedProx — Li et al., MLSys 2020 (same server rule, proximal
  term on the sites).
* Coordinate median and trimmed mean — Yin et al., "Byzantine-Robust Distributed Learning", ICML 2018.
* Multi-Krum — Blanchard et al., NeurIPS 2017; El Mhamdi et al., ICML 2018.
* FLTrust — Cao et al., "FLTrust: Byzantine-robust FL via Trust Bootstrapping", NDSS 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "Aggregation",
    "Aggregator",
    "CoordinateMedian",
    "FLTrust",
    "FedAvg",
    "FedProx",
    "MultiKrum",
    "TrimmedMean",
    "flatten",
    "make_aggregator",
    "unflatten",
]

Arrays = list[npt.NDArray[Any]]
Vec = npt.NDArray[np.float64]


def flatten(arrays: Sequence[npt.ArrayLike]) -> Vec:
    """Concatenate arrays into one float64 vector."""
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]) if arrays else np.zeros(0)


def unflatten(vector: Vec, like: Sequence[npt.NDArray[Any]]) -> list[npt.NDArray[np.float32]]:
    """Split ``vector`` back into float32 arrays shaped like ``like``."""
    out, pos = [], 0
    for a in like:
        n = int(np.prod(a.shape))
        out.append(vector[pos:pos + n].reshape(a.shape).astype(np.float32))
        pos += n
    if pos != len(vector):
        raise ValueError(f"vector has {len(vector)} values, shapes need {pos}")
    return out


@dataclass(frozen=True, slots=True)
class Aggregation:
    """The next global model (flat), the indices of accepted submissions, and rejected ones with reasons."""

    vector: Vec
    accepted: tuple[int, ...]
    rejected: dict[int, str] = field(default_factory=dict)


class Aggregator(Protocol):
    """A server-side aggregation rule (plug-in point)."""

    name: str

    def config(self) -> dict[str, Any]:
        """Return the rule's settings, for the ledger."""
        ...

    def aggregate(self, models: Sequence[Vec], num_examples: Sequence[int], global_model: Vec) -> Aggregation:
        """Combine flat site models into the next flat global model."""
        ...


def _check(models: Sequence[Vec], num_examples: Sequence[int]) -> None:
    if not models:
        raise ValueError("models must not be empty")
    if len(models) != len(num_examples):
        raise ValueError(f"got {len(models)} models but {len(num_examples)} example counts")


class FedAvg:
    """Example-weighted mean of the site models."""

    name = "fedavg"

    def config(self) -> dict[str, Any]:
        """Return the rule's settings."""
        return {"name": self.name}

    def aggregate(self, models: Sequence[Vec], num_examples: Sequence[int], global_model: Vec) -> Aggregation:
        """Weighted mean by example count."""
        _check(models, num_examples)
        w = np.asarray(num_examples, dtype=np.float64)
        w = w / w.sum() if w.sum() > 0 else np.full(len(models), 1.0 / len(models))
        return Aggregation(np.tensordot(w, np.stack(models), axes=1), tuple(range(len(models))))


class FedProx(FedAvg):
    """FedAvg on the server; sites add the proximal term ``mu`` (sent in the fit config)."""

    name = "fedprox"

    def __init__(self, proximal_mu: float = 0.01) -> None:
        if not proximal_mu > 0:
            raise ValueError(f"proximal_mu must be > 0, got {proximal_mu}")
        self.proximal_mu = proximal_mu

    def config(self) -> dict[str, Any]:
        """Return the rule's settings."""
        return {"name": self.name, "proximal_mu": self.proximal_mu}


class CoordinateMedian:
    """Coordinate-wise median (ignores example counts, as the analysis assumes)."""

    name = "median"

    def config(self) -> dict[str, Any]:
        """Return the rule's settings."""
        return {"name": self.name}

    def aggregate(self, models: Sequence[Vec], num_examples: Sequence[int], global_model: Vec) -> Aggregation:
        """Median per coordinate."""
        _check(models, num_examples)
        return Aggregation(np.median(np.stack(models), axis=0), tuple(range(len(models))))


class TrimmedMean:
    """Coordinate-wise mean after dropping the ``beta`` fraction of largest and smallest values."""

    name = "trimmed-mean"

    def __init__(self, beta: float = 0.2) -> None:
        if not 0 <= beta < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {beta}")
        self.beta = beta

    def config(self) -> dict[str, Any]:
        """Return the rule's settings."""
        return {"name": self.name, "beta": self.beta}

    def aggregate(self, models: Sequence[Vec], num_examples: Sequence[int], global_model: Vec) -> Aggregation:
        """Sort each coordinate, cut ``floor(beta * n)`` from each end, average the rest."""
        _check(models, num_examples)
        n = len(models)
        k = int(np.floor(self.beta * n))
        if n - 2 * k < 1:
            k = (n - 1) // 2
        stacked = np.sort(np.stack(models), axis=0)
        return Aggregation(stacked[k:n - k].mean(axis=0), tuple(range(n)))


class MultiKrum:
    """Average the ``m`` models with the lowest Krum score, tolerating ``f`` Byzantine sites.

    Krum score: the sum of squared distances to the ``n - f - 2`` nearest other models.
    ``m=None`` keeps ``n - f`` models.
    """

    name = "multikrum"

    def __init__(self, num_malicious: int = 1, num_keep: int | None = None) -> None:
        if num_malicious < 0:
            raise ValueError(f"num_malicious must be >= 0, got {num_malicious}")
        if num_keep is not None and num_keep < 1:
            raise ValueError(f"num_keep must be >= 1, got {num_keep}")
        self.num_malicious = num_malicious
        self.num_keep = num_keep

    def config(self) -> dict[str, Any]:
        """Return the rule's settings."""
        return {"name": self.name, "num_malicious": self.num_malicious, "num_keep": self.num_keep}

    def aggregate(self, models: Sequence[Vec], num_examples: Sequence[int], global_model: Vec) -> Aggregation:
        """Score, select, average (weighted by examples)."""
        _check(models, num_examples)
        n = len(models)
        stacked = np.stack(models)
        sq = np.sum(stacked**2, axis=1)
        dist = np.maximum(sq[:, None] + sq[None, :] - 2 * stacked @ stacked.T, 0.0)
        closest = max(1, n - self.num_malicious - 2)
        scores = np.array([np.sort(np.delete(dist[i], i))[:closest].sum() if n > 1 else 0.0 for i in range(n)])
        keep_n = min(n, self.num_keep if self.num_keep is not None else max(1, n - self.num_malicious))
        order = np.argsort(scores, kind="stable")
        keep = sorted(order[:keep_n].tolist())
        rejected = {int(i): f"multikrum score {scores[i]:.4g} not among the {keep_n} lowest" for i in order[keep_n:]}
        inner = FedAvg().aggregate([models[i] for i in keep], [num_examples[i] for i in keep], global_model)
        return Aggregation(inner.vector, tuple(keep), rejected)


class FLTrust:
    """Trust bootstrapping: weight each site's update by ReLU(cosine) to the server's root update.

    ``root_update(global_model) -> flat update`` trains on the server's small clean root set. Each site
    update is rescaled to the root update's norm before the trust-weighted average.
    """

    name = "fltrust"

    def __init__(self, root_update: Callable[[Vec], Vec]) -> None:
        self.root_update = root_update

    def config(self) -> dict[str, Any]:
        """Return the rule's settings."""
        return {"name": self.name}

    def aggregate(self, models: Sequence[Vec], num_examples: Sequence[int], global_model: Vec) -> Aggregation:
        """Trust-weighted, norm-matched average of site updates, added to the global model."""
        _check(models, num_examples)
        g0 = np.asarray(self.root_update(global_model), dtype=np.float64)
        n0 = float(np.linalg.norm(g0))
        accepted, rejected = [], {}
        total = np.zeros_like(global_model)
        weight_sum = 0.0
        for i, m in enumerate(models):
            g = m - global_model
            # cosine similarity; a zero update carries no direction and gets no trust
            ng = float(np.linalg.norm(g))
            cos = float(g @ g0 / (ng * n0)) if ng > 0 and n0 > 0 else 0.0
            trust = max(cos, 0.0)
            if trust <= 0:
                rejected[i] = f"fltrust cosine to root update {cos:.3f} <= 0"
                continue
            accepted.append(i)
            total += trust * g * (n0 / ng)
            weight_sum += trust
        if weight_sum == 0:
            return Aggregation(global_model.copy(), (), rejected)
        return Aggregation(global_model + total / weight_sum, tuple(accepted), rejected)


def make_aggregator(
    name: str, *, num_malicious: int = 1, beta: float = 0.2, proximal_mu: float = 0.01,
    root_update: Callable[[Vec], Vec] | None = None,
) -> Aggregator:
    """Build an aggregator by CLI name: fedavg|fedprox|median|trimmed-mean|multikrum|fltrust."""
    if name == "fedavg":
        return FedAvg()
    if name == "fedprox":
        return FedProx(proximal_mu)
    if name == "median":
        return CoordinateMedian()
    if name == "trimmed-mean":
        return TrimmedMean(beta)
    if name == "multikrum":
        return MultiKrum(num_malicious)
    if name == "fltrust":
        if root_update is None:
            raise ValueError("fltrust needs a root_update function (the server's clean root set)")
        return FLTrust(root_update)
    raise ValueError(f"aggregator must be fedavg|fedprox|median|trimmed-mean|multikrum|fltrust, got {name!r}")
