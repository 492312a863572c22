"""Aggregation rules: FedAvg, coordinate median, trimmed mean, Multi-Krum and FLTrust.

Each rule maps the sites' submitted models (plus the current global model) to the next global model
and reports which submissions it rejected and why. Papers:

* FedAvg — McMahan et al., AISTATS 2017; FedProx — Li et al., MLSys 2020 (same server rule, proximal
  term on the sites).
* Coordinate median and trimmed mean — Yin et al., "Byzantine-Robust Distributed Learning", ICML 2018.
* Multi-Krum — Blanchard et al., NeurIPS 2017; El Mhamdi et al., ICML 2018.
* FLTrust — Cao et al., "FLTrust: Byzantine-robust FL via Trust Bootstrapping", NDSS 2021.

Pre-aggregation defences, each a wrapper over a base rule (:func:`wrap_aggregator`):

* norm bounding — Sun et al., "Can You Really Backdoor Federated Learning?", 2019: every update is
  scaled down to at most the round's median update norm (or a fixed bound) before the base rule;
* centered clipping — Karimireddy, He & Jaggi, "Learning from History for Byzantine Robust
  Optimization", ICML 2021: starting from the base rule's aggregate, repeatedly move the centre by
  the mean of the updates' offsets clipped to radius tau;
* Bulyan — El Mhamdi, Guerraoui & Rouault, "The Hidden Vulnerability of Distributed Learning in
  Byzantium", ICML 2018: iterated Krum selects n - 2f updates, then the coordinate-wise base rule
  combines only those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFENCES",
    "SERVER_OPTIMIZERS",
    "Aggregation",
    "Aggregator",
    "Bulyan",
    "CenteredClip",
    "CoordinateMedian",
    "FLTrust",
    "FedAvg",
    "FedProx",
    "MultiKrum",
    "NormBound",
    "ServerOptimizer",
    "TrimmedMean",
    "flatten",
    "fltrust_root_set",
    "fltrust_root_steps",
    "make_aggregator",
    "unflatten",
    "wrap_aggregator",
]

DEFENCES = ("normbound", "centered-clip", "bulyan")

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
    """The next global model (flat), the indices of accepted submissions, rejected ones with reasons, and
    accepted ones a defence changed (e.g. norm-clipped) with what it did."""

    vector: Vec
    accepted: tuple[int, ...]
    rejected: dict[int, str] = field(default_factory=dict)
    clipped: dict[int, str] = field(default_factory=dict)


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

    def __init__(self, root_update: Callable[[Vec], Vec], root: dict[str, Any] | None = None) -> None:
        self.root_update = root_update
        self.root = dict(root or {})

    def config(self) -> dict[str, Any]:
        """Return the rule's settings (and the root set's size and step count, when known)."""
        return {"name": self.name, **({"root": self.root} if self.root else {})}

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


def _norms(models: Sequence[Vec], global_model: Vec) -> tuple[list[Vec], Vec]:
    deltas = [np.asarray(m, dtype=np.float64) - global_model for m in models]
    return deltas, np.array([float(np.linalg.norm(d)) for d in deltas])


class NormBound:
    """Scale every update (model - global) to at most ``bound`` in L2 norm, then apply ``base``.

    Sun et al. 2019. ``bound=None`` uses the median of this round's update norms, so at least half
    of the updates pass unchanged and no single site moves the model further than a typical one.
    Clipped sites are reported in :attr:`Aggregation.clipped` with their norm and the bound.
    """

    def __init__(self, base: Aggregator, bound: float | None = None) -> None:
        if bound is not None and not bound > 0:
            raise ValueError(f"bound must be > 0, got {bound}")
        self.base = base
        self.bound = bound
        self.name = f"normbound+{base.name}"

    def config(self) -> dict[str, Any]:
        """Return the wrapper's settings with the base rule's."""
        return {"name": self.name, "defence": "normbound", "bound": self.bound if self.bound is not None else "median",
                "base": self.base.config()}

    def aggregate(self, models: Sequence[Vec], num_examples: Sequence[int], global_model: Vec) -> Aggregation:
        """Bound each update's norm, then run the base rule on the bounded models."""
        _check(models, num_examples)
        deltas, norms = _norms(models, global_model)
        bound = self.bound if self.bound is not None else float(np.median(norms))
        bounded, clipped = [], {}
        for i, (d, nrm) in enumerate(zip(deltas, norms, strict=True)):
            if bound > 0 and nrm > bound:
                clipped[i] = f"normbound: update norm {nrm:.4g} scaled to {bound:.4g}"
                d = d * (bound / nrm)
            bounded.append(global_model + d)
        inner = self.base.aggregate(bounded, num_examples, global_model)
        return Aggregation(inner.vector, inner.accepted, inner.rejected,
                           {i: r for i, r in clipped.items() if i not in inner.rejected} | inner.clipped)


class CenteredClip:
    """Centered clipping started from a base rule's aggregate (Karimireddy, He & Jaggi, ICML 2021).

    ``v`` starts at ``base``'s aggregate; each of ``iterations`` steps sets
    ``v += mean_i clip(x_i - v, tau)`` with ``clip(z, tau) = z * min(1, tau / ||z||)``. ``tau=None``
    uses the median distance of the models to the current ``v`` at each step. Each site's pull on the
    result is bounded by ``tau / n`` per step, whatever it sent; unlike an order statistic, updates on
    one side do not drag the centre by a fixed quantile shift. Sites still farther than ``tau`` from the
    final centre are reported in :attr:`Aggregation.clipped`.
    """

    def __init__(self, base: Aggregator, tau: float | None = None, iterations: int = 3) -> None:
        if tau is not None and not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.base = base
        self.tau = tau
        self.iterations = iterations
        self.name = f"centered-clip+{base.name}"

    def config(self) -> dict[str, Any]:
        """Return the wrapper's settings with the base rule's."""
        return {"name": self.name, "defence": "centered-clip", "tau": self.tau if self.tau is not None else "median",
                "iterations": self.iterations, "base": self.base.config()}

    def aggregate(self, models: Sequence[Vec], num_examples: Sequence[int], global_model: Vec) -> Aggregation:
        """Start at the base aggregate, then refine it by clipped mean offsets."""
        _check(models, num_examples)
        inner = self.base.aggregate(models, num_examples, global_model)
        stacked = np.stack([np.asarray(m, dtype=np.float64) for m in models])
        v = np.asarray(inner.vector, dtype=np.float64)
        dist = np.zeros(len(models))
        tau = 0.0
        for _ in range(self.iterations):
            offsets = stacked - v
            dist = np.linalg.norm(offsets, axis=1)
            tau = self.tau if self.tau is not None else float(np.median(dist))
            if tau <= 0:
                break
            scale = np.minimum(1.0, tau / np.maximum(dist, 1e-300))
            v = v + (offsets * scale[:, None]).mean(axis=0)
        dist = np.linalg.norm(stacked - v, axis=1)
        clipped = {i: f"centered-clip: distance {dist[i]:.4g} to the centre clipped to tau {tau:.4g}"
                   for i in range(len(models)) if tau > 0 and dist[i] > tau}
        return Aggregation(v, tuple(range(len(models))), {}, clipped)


class Bulyan:
    """Bulyan (El Mhamdi et al., ICML 2018): iterated Krum keeps ``n - 2f`` models, ``base`` combines them.

    Selection repeats Krum (score: squared distances to the ``m - f - 2`` nearest others among the ``m``
    models left) and moves the best-scoring model to the selected set until ``n - 2f`` are chosen. The
    paper's second phase is a coordinate-wise trimmed mean around the median; here that is ``base``
    (median or trimmed mean), applied to the selected models only. The paper's guarantee needs
    ``n >= 4f + 3``; with fewer sites the selection still runs (at least one model is kept), and the
    config records ``min_sites_for_guarantee`` so a reader can tell.
    """

    def __init__(self, base: Aggregator, num_malicious: int = 1) -> None:
        if num_malicious < 0:
            raise ValueError(f"num_malicious must be >= 0, got {num_malicious}")
        self.base = base
        self.num_malicious = num_malicious
        self.name = f"bulyan+{base.name}"

    def config(self) -> dict[str, Any]:
        """Return the wrapper's settings with the base rule's."""
        return {"name": self.name, "defence": "bulyan", "num_malicious": self.num_malicious,
                "min_sites_for_guarantee": 4 * self.num_malicious + 3, "base": self.base.config()}

    def aggregate(self, models: Sequence[Vec], num_examples: Sequence[int], global_model: Vec) -> Aggregation:
        """Select by iterated Krum, then apply the base rule to the selected models."""
        _check(models, num_examples)
        n, f = len(models), self.num_malicious
        stacked = np.stack([np.asarray(m, dtype=np.float64) for m in models])
        sq = np.sum(stacked**2, axis=1)
        dist = np.maximum(sq[:, None] + sq[None, :] - 2 * stacked @ stacked.T, 0.0)
        keep_n = max(1, n - 2 * f)
        left = list(range(n))
        chosen: list[int] = []
        scores: dict[int, float] = {}
        while len(chosen) < keep_n:
            m = len(left)
            closest = max(1, m - f - 2)
            round_scores = {i: float(np.sort(dist[i, [j for j in left if j != i]])[:closest].sum()) if m > 1 else 0.0
                            for i in left}
            # mutual nearest neighbours tie on the Krum score; break ties by the total distance to the
            # remaining models (not by position, so the result does not depend on submission order)
            best = min(left, key=lambda i: (round_scores[i], float(dist[i, left].sum()), i))
            scores.update(round_scores)
            chosen.append(best)
            left.remove(best)
        keep = sorted(chosen)
        rejected = {i: f"bulyan: not among the {keep_n} models iterated Krum selected (last score {scores[i]:.4g})"
                    for i in left}
        inner = self.base.aggregate([models[i] for i in keep], [num_examples[i] for i in keep], global_model)
        rejected |= {keep[i]: r for i, r in inner.rejected.items()}
        clipped = {keep[i]: r for i, r in inner.clipped.items()}
        accepted = tuple(keep[i] for i in inner.accepted)
        return Aggregation(inner.vector, accepted, rejected, clipped)


def wrap_aggregator(defence: str, base: Aggregator, *, num_malicious: int = 1) -> Aggregator:
    """Put pre-aggregation defence ``defence`` (normbound|centered-clip|bulyan) in front of ``base``."""
    if defence == "normbound":
        return NormBound(base)
    if defence == "centered-clip":
        return CenteredClip(base)
    if defence == "bulyan":
        return Bulyan(base, num_malicious)
    raise ValueError(f"defence must be one of {', '.join(DEFENCES)}, got {defence!r}")


def fltrust_root_steps(site_rows: Sequence[int], local_epochs: int, batch_size: int) -> int:
    """Optimizer steps of FLTrust's server update: those of the median site's local training.

    Cao et al. (NDSS 2021) run the server's root-set update with the same local iterations as the
    clients. Every client update is rescaled to the root update's norm, so a root update with fewer
    steps (a small root set trained for the same epochs) acts as a much smaller learning rate.
    A site takes ``local_epochs * ceil(rows / batch_size)`` steps.
    """
    if local_epochs < 1 or batch_size < 1:
        raise ValueError(f"local_epochs and batch_size must be >= 1, got {local_epochs} and {batch_size}")
    rows = [int(r) for r in site_rows if r > 0]
    if not rows:
        raise ValueError("site_rows must hold at least one positive row count")
    return local_epochs * int(np.ceil(float(np.median(rows)) / batch_size))


def fltrust_root_set(y: npt.ArrayLike, size: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Draw ``size`` row indices stratified by label (each present class gets >= 1 row), sorted."""
    labels = np.asarray(y)
    if not 0 < size <= len(labels):
        raise ValueError(f"root set size must be in [1, {len(labels)}], got {size}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts * size / len(labels)).astype(np.int64))
    # hand out what flooring left over to the classes with the largest remainders, then trim if the
    # one-row minimum overshot
    rem = counts * size / len(labels) - np.floor(counts * size / len(labels))
    for i in np.argsort(-rem, kind="stable"):
        if quota.sum() >= size:
            break
        if quota[i] < counts[i]:
            quota[i] += 1
    for i in np.argsort(-quota, kind="stable"):
        while quota.sum() > size and quota[i] > 1:
            quota[i] -= 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False) for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def make_aggregator(
    name: str, *, num_malicious: int = 1, beta: float = 0.2, proximal_mu: float = 0.01,
    root_update: Callable[[Vec], Vec] | None = None, root: dict[str, Any] | None = None,
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
        return FLTrust(root_update, root)
    raise ValueError(f"aggregator must be fedavg|fedprox|median|trimmed-mean|multikrum|fltrust, got {name!r}")


SERVER_OPTIMIZERS = ("none", "fedavgm", "fedadam", "fedyogi")


class ServerOptimizer:
    """A server-side optimiser over the aggregated update (the "pseudo-gradient").

    With ``delta = aggregate - global`` of a round:

    * ``fedavgm`` (Hsu, Qi & Brown 2019): ``m = momentum * m + delta``; ``global += lr * m``.
    * ``fedadam`` / ``fedyogi`` (Reddi et al., "Adaptive Federated Optimization", ICLR 2021):
      ``m = b1 * m + (1 - b1) * delta``; Adam: ``v = b2 * v + (1 - b2) * delta**2``; Yogi:
      ``v = v - (1 - b2) * delta**2 * sign(v - delta**2)``; ``global += lr * m / (sqrt(v) + tau)``,
      with ``v`` starting at ``tau**2`` and no bias correction, as in the paper.
    * ``none``: ``global += lr * delta`` (``lr = 1`` is plain FedAvg).

    It only post-processes the aggregate (after any central-DP noise), so it works under secure
    aggregation and does not change a DP guarantee. State persists across rounds.
    """

    def __init__(self, kind: str = "none", *, lr: float = 1.0, momentum: float = 0.9, beta1: float = 0.9,
                 beta2: float = 0.99, tau: float = 1e-3) -> None:
        if kind not in SERVER_OPTIMIZERS:
            raise ValueError(f"server optimiser must be one of {', '.join(SERVER_OPTIMIZERS)}, got {kind!r}")
        if not lr > 0:
            raise ValueError(f"server lr must be > 0, got {lr}")
        for name, value in (("momentum", momentum), ("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"server {name} must be in [0, 1), got {value}")
        if not tau > 0:
            raise ValueError(f"server tau must be > 0, got {tau}")
        self.kind, self.lr, self.momentum, self.beta1, self.beta2, self.tau = kind, lr, momentum, beta1, beta2, tau
        self._m: Vec | None = None
        self._v: Vec | None = None

    @classmethod
    def parse(cls, spec: str) -> ServerOptimizer:
        """``KIND[:key=value,...]``, e.g. ``fedavgm:lr=1.0,momentum=0.5`` or ``fedadam:lr=0.01,tau=0.001``."""
        kind, _, rest = spec.strip().partition(":")
        opts: dict[str, float] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in ("lr", "momentum", "beta1", "beta2", "tau"):
                raise ValueError(f"server optimiser option must be lr|momentum|beta1|beta2|tau=VALUE, got {item!r}")
            try:
                opts[key] = float(value)
            except ValueError:
                raise ValueError(f"server optimiser option {key} must be a number, got {value!r}") from None
        return cls(kind.strip(), **opts)

    def config(self) -> dict[str, Any]:
        """Return the optimiser's settings, for the ledger."""
        out: dict[str, Any] = {"name": self.kind, "lr": self.lr}
        if self.kind == "fedavgm":
            out["momentum"] = self.momentum
        elif self.kind in ("fedadam", "fedyogi"):
            out.update(beta1=self.beta1, beta2=self.beta2, tau=self.tau)
        return out

    def step(self, global_model: Vec, aggregate: Vec) -> Vec:
        """Return the next global model from the current one and the round's aggregate."""
        g = np.asarray(global_model, dtype=np.float64)
        delta = np.asarray(aggregate, dtype=np.float64) - g
        if delta.shape != g.shape:
            raise ValueError(f"aggregate has shape {delta.shape}, the global model {g.shape}")
        if self.kind == "none":
            return g + self.lr * delta
        if self.kind == "fedavgm":
            self._m = delta.copy() if self._m is None else self.momentum * self._m + delta
            return g + self.lr * self._m
        m = np.zeros_like(g) if self._m is None else self._m
        v = np.full_like(g, self.tau ** 2) if self._v is None else self._v
        self._m = self.beta1 * m + (1.0 - self.beta1) * delta
        sq = delta * delta
        self._v = (self.beta2 * v + (1.0 - self.beta2) * sq if self.kind == "fedadam"
                   else v - (1.0 - self.beta2) * sq * np.sign(v - sq))
        return g + self.lr * self._m / (np.sqrt(self._v) + self.tau)
