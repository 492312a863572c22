"""One federated site: its local partition, local training, and (for evaluation) its attack."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trustmesh.federated._aggregate import flatten, unflatten
from trustmesh.federated._attacks import AttackSpec
from trustmesh.federated._model import CLASS_WEIGHTINGS, MLPModel, class_weights
from trustmesh.privacy import DPSGDConfig
from trustmesh.privacy.hazmat import clip_by_l2_norm

__all__ = ["HEAD_WEIGHTS", "Site", "TrainConfig", "default_head_weights", "default_hidden", "default_server_opt",
           "default_training", "default_weight_counts", "head_row_scales", "scale_head_rows"]

# The classifier's local training for few-round runs (chosen by measurement on TON_IoT, docs/benchmarks.md,
# "Federated defaults"): many local steps per round, sqrt class weights from each site's own counts, and
# a local lr that decays by 0.7 per round (late rounds' small steps keep the sites' models close).
# DP-SGD and the autoencoder keep 1 epoch, batch 64, no weights, constant lr: DP-SGD's accountant charges
# every local step and does not cover weights taken from label counts; the autoencoder was measured with those.
_CONVERGENT: dict[str, Any] = {"local_epochs": 10, "batch_size": 32, "class_weight": "sqrt", "lr_decay": 0.7}
_PLAIN: dict[str, Any] = {"local_epochs": 1, "batch_size": 64, "class_weight": "none", "lr_decay": 1.0}
WEIGHT_COUNTS = ("local", "global")
# How the output layer's rows are averaged: rows (FedAvg's n_k/N for every parameter) | classes (row c
# with n_kc/N_c, see head_row_scales)
HEAD_WEIGHTS = ("rows", "classes")

# The server optimiser on each round's aggregate (see ServerOptimizer) for the same runs: server lr 1.5
# (the mean update extrapolated by half; measured with the lr decay above); "none" alone is plain FedAvg.
_SERVER_OPT = "none:lr=1.5"

# The classifier's width for the same runs: 128-64 (the 64-32 of TrainConfig() lost 3-4 points more at
# 10 sites; wider networks average better across sites, while the centralized reference is the same)
_CONVERGENT_HIDDEN = (128, 64)
# Their class weights' counts: "local" (each site's own) or "global" (round 0's sum, Plan.round_zero)
_CONVERGENT_COUNTS = "local"
# Their output layer's averaging: "classes", the class-count head (docs/benchmarks.md, "round 4"). Where a
# run cannot use it (DP, robust rules, defences, the autoencoder; FLConfig refuses those) it is "rows".
_CONVERGENT_HEAD = "classes"
_WEIGHTED_MEAN_RULES = ("fedavg", "fedprox")

# Record-level DP-SGD's local training (chosen by measurement, docs/benchmarks.md, "Usable DP (issue 16
# item 3)" and "DP at larger sites"): 20 Poisson batches per epoch (sample rate 1/20 at every site, so
# the batch grows with the site: 200 rows at 4,000, 1,000 at 20,000) for 10 local epochs at Adam lr
# 0.01. A fixed batch of 256 took 790 noisy steps a round at 20,000 rows (13.5 points short of the
# non-private run at epsilon 8); batch ~n/20 keeps 200 (1.8-3.5 short). The accountant charges every
# step. No class weights (label counts are not accounted).
_DP_SGD: dict[str, Any] = {"local_epochs": 10, "batch_size": None, "batches_per_epoch": 20,
                           "class_weight": "none", "lr_decay": 1.0, "lr": 0.01}
_LR = 3e-3  # the local Adam lr of every other run


def default_server_opt(*, dp_sgd: bool = False, model: str = "mlp", he: str | None = None) -> str:
    """The default ``--server-opt`` for this kind of run (plain FedAvg under CKKS: see ``_flower.simulate``)."""
    return _SERVER_OPT if model == "mlp" and not dp_sgd and he != "ckks" else "none"


def default_hidden(*, dp_sgd: bool = False, model: str = "mlp") -> tuple[int, ...]:
    """The default hidden widths for this kind of run (DP-SGD and the autoencoder keep TrainConfig's)."""
    return _CONVERGENT_HIDDEN if model == "mlp" and not dp_sgd else (64, 32)  # TrainConfig().hidden


def default_weight_counts(*, dp_sgd: bool = False, model: str = "mlp") -> str:
    """The default source of the class weights' label counts (``TrainConfig.weight_counts``)."""
    return _CONVERGENT_COUNTS if model == "mlp" and not dp_sgd else "local"


def default_head_weights(*, dp_sgd: bool = False, model: str = "mlp", dp: bool = False,
                         aggregator: str = "fedavg", defence: str | None = None) -> str:
    """The default ``--head-weights`` for this kind of run: ``classes`` where it is sound, else ``rows``."""
    plain = model == "mlp" and not dp_sgd and not dp and aggregator in _WEIGHTED_MEAN_RULES and defence is None
    return _CONVERGENT_HEAD if plain else "rows"


def head_row_scales(site_counts: npt.ArrayLike, global_counts: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return site k's factor per output row, ``(n_kc / N_c) / (n_k / N)`` (1 where ``N_c = 0``).

    FedAvg weights every parameter of site k by ``n_k / N``; a site that multiplies row c of its output
    layer's update by this factor turns that into ``n_kc / N_c`` for the row, so the server's ordinary
    weighted sum (plain, SecAgg+ or CKKS: it only sums) is the class-count-weighted mean: the sites
    that saw class c decide its output row. ``site_counts`` is the site's label counts
    (:meth:`Site.label_counts`), ``global_counts`` round 0's sum of every site's
    (:meth:`~trustmesh.federated.Plan.round_zero`). A class no site has keeps the plain weight, and
    so does every row of a site without rows (its update is refused anyway).
    """
    own = np.asarray(site_counts, dtype=np.int64)
    total = np.asarray(global_counts, dtype=np.int64)
    if own.ndim != 1 or own.shape != total.shape:
        raise ValueError(f"site and global counts must be vectors of one length, got {own.shape} and {total.shape}")
    if (own < 0).any() or (own > total).any():
        raise ValueError("site counts must be non-negative and at most the global counts")
    n_k, n = int(own.sum()), int(total.sum())
    scale = np.ones(len(own), dtype=np.float64)
    if n_k == 0:
        return scale
    seen = total > 0
    scale[seen] = (own[seen] / total[seen]) / (n_k / n)
    return scale


def scale_head_rows(arrays: list[npt.NDArray[Any]], scale: npt.ArrayLike) -> list[npt.NDArray[np.float64]]:
    """Return ``arrays`` (a model's update, layer by layer) with the output layer's row c times ``scale[c]``.

    The output layer is the last two arrays: the last Linear's weight ``(classes, width)`` and bias
    ``(classes,)``; every other array is returned unchanged.
    """
    factors = np.asarray(scale, dtype=np.float64)
    if len(arrays) < 2:
        raise ValueError(f"a model with an output layer has >= 2 arrays, got {len(arrays)}")
    weight, bias = np.asarray(arrays[-2], dtype=np.float64), np.asarray(arrays[-1], dtype=np.float64)
    if weight.ndim != 2 or bias.shape != (weight.shape[0],) or factors.shape != bias.shape:
        raise ValueError(f"output layer {weight.shape}/{bias.shape} does not match {factors.shape[0]} class scales")
    head = [weight * factors[:, None], bias * factors]
    return [np.asarray(a, dtype=np.float64) for a in arrays[:-2]] + head


def default_training(name: str, *, dp_sgd: bool = False, model: str = "mlp") -> Any:
    """The default of the local-training option ``name`` (local_epochs, batch_size, batches_per_epoch,
    class_weight, lr_decay, lr)."""
    if dp_sgd and model == "mlp":
        return _DP_SGD[name]
    if name == "lr":
        return _LR
    if name == "batches_per_epoch":
        return None
    return (_PLAIN if dp_sgd or model != "mlp" else _CONVERGENT)[name]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Local training settings shared by every site and the coordinator's model."""

    hidden: tuple[int, ...] = (64, 32)
    local_epochs: int = 1
    batch_size: int = 64
    # when set, each site's batch is ceil(rows / batches_per_epoch) instead of batch_size (DP-SGD: the
    # same sample rate, about 1 / batches_per_epoch, at every site whatever its size)
    batches_per_epoch: int | None = None
    lr: float = 3e-3
    model_seed: int = 0
    # local record-level DP-SGD; a (noise_multiplier, clip_norm) pair is accepted and converted
    dp_sgd: DPSGDConfig | None = None
    # cross-entropy class weights from each party's own label counts: none | balanced | sqrt
    class_weight: str = "none"
    # local learning rate schedule across rounds: round r trains with lr * lr_decay ** (r - 1)
    lr_decay: float = 1.0
    # whose label counts the class weights come from: local (each site's own) | global (the sum of every
    # site's count vector, exchanged in a round 0 before training; no row leaves a site)
    weight_counts: str = "local"
    # FedRS (Li & Zhan, KDD 2021): the local loss scales the logits of classes the site has no row of
    # by this factor; 1.0 is the plain softmax
    absent_logit_scale: float = 1.0
    # the output layer's averaging: rows (FedAvg's n_k/N) | classes (row c by n_kc/N_c from round 0's
    # counts; each site scales its own update, see head_row_scales)
    head_weights: str = "rows"

    def __post_init__(self) -> None:
        if self.local_epochs < 1:
            raise ValueError(f"local_epochs must be >= 1, got {self.local_epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.batches_per_epoch is not None and self.batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {self.batches_per_epoch}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        sgd: Any = self.dp_sgd
        if isinstance(sgd, tuple):
            if len(sgd) != 2:
                raise ValueError(f"dp_sgd must be a DPSGDConfig or (noise_multiplier, clip_norm), got {sgd!r}")
            object.__setattr__(self, "dp_sgd", DPSGDConfig(noise_multiplier=float(sgd[0]), clip_norm=float(sgd[1])))
        elif sgd is not None and not isinstance(sgd, DPSGDConfig):
            raise ValueError(f"dp_sgd must be a DPSGDConfig or (noise_multiplier, clip_norm), got {sgd!r}")
        if self.weight_counts not in WEIGHT_COUNTS:
            raise ValueError(f"weight_counts must be one of {', '.join(WEIGHT_COUNTS)}, got {self.weight_counts!r}")
        if not 0 < self.absent_logit_scale <= 1:
            raise ValueError(f"absent_logit_scale must be in (0, 1], got {self.absent_logit_scale}")
        if self.class_weight not in CLASS_WEIGHTINGS:
            raise ValueError(f"class_weight must be one of {', '.join(CLASS_WEIGHTINGS)}, got {self.class_weight!r}")
        if self.head_weights not in HEAD_WEIGHTS:
            raise ValueError(f"head_weights must be one of {', '.join(HEAD_WEIGHTS)}, got {self.head_weights!r}")

    def site_batch_size(self, n_rows: int) -> int:
        """The local batch size of a site with ``n_rows`` rows."""
        if self.batches_per_epoch is None:
            return self.batch_size
        return max(1, math.ceil(n_rows / self.batches_per_epoch))


class Site:
    """Train the global model on a local partition and return the (possibly poisoned) result.

    A malicious site (``attack`` given) poisons its data once at construction (label flip, backdoor)
    or its update at every round (sign flip, scaling, Gaussian). ``model`` is the local model (default:
    an :class:`MLPModel`); one with ``benign_only = True`` (the autoencoder) keeps only the benign rows.
    """

    def __init__(
        self, site_id: int, X: npt.NDArray[np.float32], y: npt.NDArray[np.int64], n_classes: int,
        train: TrainConfig, *, attack: AttackSpec | None = None, n_sites: int = 1, seed: int = 0,
        model: Any = None, global_counts: npt.NDArray[np.int64] | None = None,
    ) -> None:
        if len(X) != len(y):
            raise ValueError(f"site {site_id}: X has {len(X)} rows but y has {len(y)}")
        self.site_id = site_id
        self.n_classes = n_classes
        self.train = train
        self.attack = attack
        self.n_sites = n_sites
        self.seed = seed
        self._rng = np.random.default_rng([seed, site_id, 17])
        if attack is not None:
            X, y = attack.poison_data(X, y, n_classes, self._rng)
        if getattr(model, "benign_only", False):
            # an anomaly model learns normal traffic: the site keeps (and counts) its benign rows only
            X, y = X[y == 0], y[y == 0]
        self.X, self.y = X, y
        # local: from the local rows only; global: from round 0's sum of every site's counts
        self.class_weights = class_weights(y, n_classes, train.class_weight)
        if global_counts is not None:
            self.use_global_counts(global_counts)
        present = self.label_counts() > 0
        # --head-weights classes: the factor per output row from round 0's counts (use_head_counts)
        self.head_scale: npt.NDArray[np.float64] | None = None
        self.logit_scale = None
        if train.absent_logit_scale < 1 and not present.all() and not getattr(model, "benign_only", False):
            self.logit_scale = np.where(present, 1.0, train.absent_logit_scale).astype(np.float32)
        self.model: Any = model if model is not None else MLPModel(X.shape[1], n_classes, train.hidden,
                                                                   seed=train.model_seed)
        # DP-SGD: this site's (noise multiplier, sample rate, steps per round) from its own row count
        # (with epsilon=E the site calibrates its own noise); the coordinator recomputes the same
        self.dp_sgd_mechanism = None if train.dp_sgd is None or not len(y) else train.dp_sgd.site_mechanism(
            self.num_examples, train.site_batch_size(self.num_examples), train.local_epochs)

    def label_counts(self) -> npt.NDArray[np.int64]:
        """This site's round-0 message: its row count per class (no row, no feature value)."""
        return np.bincount(np.asarray(self.y, dtype=np.int64), minlength=self.n_classes).astype(np.int64)

    def use_global_counts(self, counts: npt.ArrayLike) -> None:
        """Take class weights from round 0's summed label counts instead of the local ones."""
        total = np.asarray(counts, dtype=np.int64)
        if total.shape != (self.n_classes,) or (total < 0).any():
            raise ValueError(f"site {self.site_id}: global counts must be {self.n_classes} non-negative integers")
        self.class_weights = class_weights(np.repeat(np.arange(self.n_classes), total), self.n_classes,
                                           self.train.class_weight)

    def use_head_counts(self, counts: npt.ArrayLike) -> None:
        """Scale this site's output-row updates by :func:`head_row_scales` of round 0's summed counts."""
        try:
            self.head_scale = head_row_scales(self.label_counts(), counts)
        except ValueError as exc:
            raise ValueError(f"site {self.site_id}: {exc}") from None

    @property
    def num_examples(self) -> int:
        """Rows in the local partition (after any poisoning)."""
        return int(len(self.y))

    def fit(
        self, global_weights: list[npt.NDArray[Any]], round_no: int, *, proximal_mu: float = 0.0,
        clip_norm: float | None = None,
    ) -> tuple[list[npt.NDArray[np.float32]], int, dict[str, float]]:
        """Run local epochs from ``global_weights``; return new weights, example count, metrics.

        ``clip_norm`` clips the update (new - global) on the site, for central DP under secure
        aggregation where the server cannot clip individual updates.
        """
        self.model.set_weights(global_weights)
        dp = None
        if self.train.dp_sgd is not None and self.dp_sgd_mechanism is not None:
            dp = {"noise_multiplier": self.dp_sgd_mechanism[0], "max_grad_norm": self.train.dp_sgd.clip_norm}
        loss = self.model.train_epochs(
            self.X, self.y, self.train.local_epochs, batch_size=self.train.site_batch_size(self.num_examples),
            lr=self.train.lr * self.train.lr_decay ** max(0, round_no - 1),
            seed=self.seed * 100_003 + round_no * 101 + self.site_id, proximal_mu=proximal_mu, dp_sgd=dp,
            class_weights=self.class_weights, **({} if self.logit_scale is None else {"logit_scale": self.logit_scale}),
        )
        new = flatten(self.model.get_weights())
        base = flatten(global_weights)
        if self.head_scale is not None:
            # before the attack and any clip: what a site sends (and SecAgg+ clips, bounds and masks)
            # is the scaled update; the server's n_k-weighted sum then weighs output row c by n_kc
            ones = [np.ones(np.shape(w)) for w in global_weights]
            new = base + flatten(scale_head_rows(ones, self.head_scale)) * (new - base)
        if self.attack is not None:
            new = self.attack.poison_update(new, base, self.n_sites, self._rng)
        elif clip_norm is not None:
            (delta,), _ = clip_by_l2_norm([new - base], clip_norm)
            new = base + delta
        return unflatten(new, global_weights), self.num_examples, {"loss": float(loss)}
