"""Kitsune-style ensemble of small autoencoders (Mirsky et al., "Kitsune: An Ensemble of Autoencoders
for Online Network Intrusion Detection", NDSS 2018), trained on benign rows only.

Structure, as in the paper's KitNET: features are grouped by hierarchical clustering on the
correlation distance ``1 - |corr|`` into clusters of at most ``max_cluster`` features; each cluster
gets a small autoencoder (hidden size ``ceil(0.75 k)``, sigmoid units, inputs min-max scaled); the
vector of their RMSE reconstruction errors feeds an output autoencoder whose RMSE is the anomaly
measure. Differences from the paper: training is batched (Adam, a few epochs) instead of one online
SGD pass, and inputs get a signed ``log1p`` first because byte counts span many orders of magnitude.

Score mapping: like Kitsune's threshold rule, the output RMSE of benign traffic is modelled as
log-normal. ``fit`` holds out ``holdout_fraction`` of the benign rows, fits the mean and standard
deviation of ``log(RMSE)`` on them, and ``score = Phi((log RMSE - mu) / sigma)`` (standard normal
CDF), so a score of 0.99 means "rarer than 99 % of benign traffic" under that model.

Training rows are capped at ``max_train_rows`` (random subsample with the seed) so fitting stays
under a minute on 2 cores (about 10 s for TON_IoT's 50k benign rows).

:class:`DenseAutoencoderDetector` is a single dense autoencoder with the same log-normal score
mapping; having no data-dependent structure, it is the model federated sites average.
"""

from __future__ import annotations

import io
import math
from typing import Any, cast

import numpy as np

from trustmesh.detect._base import BaseDetector, Preprocessor, benign_holdout, register
from trustmesh.errors import InputError, MissingDependencyError, ModelError
from trustmesh.flows._features import FeatureEncoder

__all__ = ["AutoencoderEnsembleDetector", "DenseAutoencoderDetector", "cluster_features"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "ml") from exc
    return torch


def cluster_features(X: np.ndarray, max_cluster: int) -> list[list[int]]:
    """Group feature indices by correlation (agglomerative, ``1 - |corr|``), at most ``max_cluster`` each."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = X.shape[1]
    if n <= max_cluster:
        return [list(range(n))]
    with np.errstate(all="ignore"):
        corr = np.corrcoef(X, rowvar=False)
    dist = 1.0 - np.abs(np.nan_to_num(corr, nan=0.0))
    np.fill_diagonal(dist, 0.0)
    dist = np.clip((dist + dist.T) / 2.0, 0.0, 1.0)
    tree = linkage(squareform(dist, checks=False), method="average")
    # Cut the dendrogram at the coarsest level whose clusters all fit (Kitsune's corClust rule).
    for k in range(1, n + 1):
        labels = fcluster(tree, t=k, criterion="maxclust")
        sizes = np.bincount(labels)
        if sizes.max() <= max_cluster:
            break
    groups: dict[int, list[int]] = {}
    for idx, lab in enumerate(labels):
        groups.setdefault(int(lab), []).append(idx)
    return sorted(groups.values(), key=lambda g: g[0])


def score_map(benign_rmse: np.ndarray) -> tuple[float, float]:
    """Return ``(mu, sigma)`` of ``log(RMSE)`` over benign rows (the log-normal score model)."""
    r = np.asarray(benign_rmse, dtype=np.float64)
    if r.size == 0:
        raise ModelError("the score mapping needs at least one benign row")
    logs = np.log(r + 1e-12)
    return float(np.mean(logs)), float(max(float(np.std(logs)), 1e-6))


def map_scores(rmse: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    """``Phi((log RMSE - mu) / sigma)``: the anomaly score in [0, 1]."""
    from scipy.special import ndtr

    z = (np.log(np.asarray(rmse, dtype=np.float64) + 1e-12) - mu) / sigma
    return np.asarray(ndtr(z), dtype=np.float64)


class _TrainingSettings:
    """The training settings both autoencoder detectors share, checked in one place."""

    seed: int
    epochs: int
    batch_size: int
    learning_rate: float
    max_train_rows: int
    holdout_fraction: float
    num_threads: int

    def _set_training(self, epochs: int, batch_size: int, learning_rate: float, max_train_rows: int,
                      holdout_fraction: float, num_threads: int) -> None:
        if epochs < 1 or batch_size < 1 or max_train_rows < 10 or num_threads < 1:
            raise ValueError("epochs, batch_size, num_threads must be >= 1 and max_train_rows >= 10")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if not 0.0 < holdout_fraction < 0.9:
            raise ValueError(f"holdout_fraction must be in (0, 0.9), got {holdout_fraction}")
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.max_train_rows = int(max_train_rows)
        self.holdout_fraction = float(holdout_fraction)
        self.num_threads = int(num_threads)

    def _benign_split(self, is_attack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Benign training rows (at most ``max_train_rows``) and the benign hold-out that fits the scores."""
        train_idx, hold_idx = benign_holdout(is_attack, self.holdout_fraction, self.seed)
        rng = np.random.default_rng(self.seed)
        if train_idx.size > self.max_train_rows:
            train_idx = np.sort(rng.choice(train_idx, self.max_train_rows, replace=False))
        return train_idx, hold_idx if hold_idx.size else train_idx


@register
class AutoencoderEnsembleDetector(_TrainingSettings, BaseDetector):
    """KitNET-style autoencoder ensemble; anomaly score from the output autoencoder's RMSE."""

    name = "autoencoder"
    supervised = False

    def __init__(
        self,
        *,
        seed: int = 0,
        multiclass: bool = False,
        max_cluster: int = 10,
        hidden_ratio: float = 0.75,
        epochs: int = 8,
        batch_size: int = 256,
        learning_rate: float = 3e-3,
        max_train_rows: int = 50_000,
        holdout_fraction: float = 0.15,
        num_threads: int = 2,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(seed=seed, threshold=threshold, multiclass=False)
        if not 1 <= max_cluster <= 64:
            raise ValueError(f"max_cluster must be in 1..64, got {max_cluster}")
        if not 0.0 < hidden_ratio <= 1.0:
            raise ValueError(f"hidden_ratio must be in (0, 1], got {hidden_ratio}")
        self.max_cluster = int(max_cluster)
        self.hidden_ratio = float(hidden_ratio)
        self._set_training(epochs, batch_size, learning_rate, max_train_rows, holdout_fraction, num_threads)
        self.clusters: list[list[int]] = []
        self.pre: Preprocessor | None = None
        self._members: list[Any] = []
        self._output: Any = None
        self._rmse_lo: np.ndarray | None = None
        self._rmse_scale: np.ndarray | None = None
        self._mu = 0.0
        self._sigma = 1.0

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {
            "seed": self.seed,
            "max_cluster": self.max_cluster,
            "hidden_ratio": self.hidden_ratio,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "max_train_rows": self.max_train_rows,
            "holdout_fraction": self.holdout_fraction,
            "num_threads": self.num_threads,
        }

    # -- network -----------------------------------------------------------------------------------
    def _autoencoder(self, k: int) -> Any:
        nn = _torch().nn
        hidden = max(1, math.ceil(self.hidden_ratio * k))
        return nn.Sequential(nn.Linear(k, hidden), nn.Sigmoid(), nn.Linear(hidden, k), nn.Sigmoid())

    def _train(self, model: Any, data: Any, generator: Any) -> None:
        torch = _torch()
        opt = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        n = data.shape[0]
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=generator)
            for start in range(0, n, self.batch_size):
                batch = data[perm[start:start + self.batch_size]]
                opt.zero_grad()
                loss = torch.mean((model(batch) - batch) ** 2)
                loss.backward()
                opt.step()

    def _member_rmse(self, Z: Any) -> Any:
        torch = _torch()
        cols = []
        for model, cluster in zip(self._members, self.clusters, strict=True):
            part = Z[:, cluster]
            cols.append(torch.sqrt(torch.mean((model(part) - part) ** 2, dim=1)))
        return torch.stack(cols, dim=1)

    def _scale_rmse(self, R: Any) -> Any:
        torch = _torch()
        assert self._rmse_lo is not None and self._rmse_scale is not None
        return (torch.log(R + 1e-9) - torch.from_numpy(self._rmse_lo)) / torch.from_numpy(self._rmse_scale)

    def _output_rmse(self, matrix: np.ndarray) -> np.ndarray:
        torch = _torch()
        assert self.pre is not None
        # Kitsune scales with the training min/max; values beyond it are clipped to keep the sigmoid
        # autoencoders in range, the clipping itself still shows up as reconstruction error.
        Z = torch.from_numpy(np.clip(self.pre.transform(matrix), -0.5, 1.5))
        old = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            with torch.no_grad():
                S = self._scale_rmse(self._member_rmse(Z))
                out = torch.sqrt(torch.mean((self._output(S) - S) ** 2, dim=1))
        finally:
            torch.set_num_threads(old)
        return cast(np.ndarray, out.numpy().astype(np.float64))

    # -- fit / score -------------------------------------------------------------------------------
    def _fit_matrix(self, X: np.ndarray, is_attack: np.ndarray, class_index: np.ndarray) -> None:
        torch = _torch()
        train_idx, hold_idx = self._benign_split(is_attack)
        train = X[train_idx]
        self.pre = Preprocessor.fit(train, mode="minmax")
        Z_np = self.pre.transform(train)
        self.clusters = cluster_features(Z_np, self.max_cluster)
        old = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                gen = torch.Generator().manual_seed(self.seed)
                Z = torch.from_numpy(Z_np)
                self._members = [self._autoencoder(len(c)) for c in self.clusters]
                for model, cluster in zip(self._members, self.clusters, strict=True):
                    self._train(model, Z[:, cluster].contiguous(), gen)
                with torch.no_grad():
                    logR = torch.log(self._member_rmse(Z) + 1e-9).numpy()
                lo = logR.min(axis=0)
                scale = logR.max(axis=0) - lo
                self._rmse_lo = lo.astype(np.float32)
                self._rmse_scale = np.where(scale > 1e-6, scale, 1.0).astype(np.float32)
                with torch.no_grad():
                    S = self._scale_rmse(self._member_rmse(Z))
                self._output = self._autoencoder(len(self.clusters))
                self._train(self._output, S.contiguous(), gen)
        finally:
            torch.set_num_threads(old)
        for m in [*self._members, self._output]:
            m.eval()
        self._mu, self._sigma = score_map(self._output_rmse(X[hold_idx]))

    def rmse(self, matrix: np.ndarray) -> np.ndarray:
        """Return the output autoencoder's RMSE for an encoded matrix (the raw anomaly measure)."""
        if self.pre is None or self._output is None:
            raise ModelError("autoencoder detector is not fitted; call fit() first")
        return self._output_rmse(matrix)

    def _score_matrix(self, X: np.ndarray) -> np.ndarray:
        return map_scores(self.rmse(X), self._mu, self._sigma)

    # -- persistence -------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        torch = _torch()
        assert self.pre is not None and self._rmse_lo is not None and self._rmse_scale is not None
        weights = {f"member{i}.{k}": v for i, m in enumerate(self._members) for k, v in m.state_dict().items()}
        weights.update({f"output.{k}": v for k, v in self._output.state_dict().items()})
        buf = io.BytesIO()
        torch.save(weights, buf)
        state = {
            "clusters": self.clusters,
            "preprocessor": self.pre.to_dict(),
            "rmse_lo": self._rmse_lo.tolist(),
            "rmse_scale": self._rmse_scale.tolist(),
            "mu": self._mu,
            "sigma": self._sigma,
        }
        return state, {"weights.pt": buf.getvalue()}

    def _restore(self, state: dict[str, Any], blobs: dict[str, bytes]) -> None:
        torch = _torch()
        n = len(self.feature_names)
        clusters = state["clusters"]
        if (
            not isinstance(clusters, list)
            or not clusters
            or sorted(i for c in clusters for i in c) != list(range(n))
        ):
            raise ModelError("autoencoder clusters must partition the feature list")
        self.clusters = [[int(i) for i in c] for c in clusters]
        self.pre = Preprocessor.from_dict(state["preprocessor"], n)
        self._rmse_lo = np.asarray(state["rmse_lo"], dtype=np.float32)
        self._rmse_scale = np.asarray(state["rmse_scale"], dtype=np.float32)
        if self._rmse_lo.shape != (len(self.clusters),) or self._rmse_scale.shape != (len(self.clusters),):
            raise ModelError("autoencoder RMSE scaling does not match the clusters")
        self._mu = float(state["mu"])
        self._sigma = float(state["sigma"])
        weights = torch.load(io.BytesIO(blobs["weights.pt"]), weights_only=True)
        self._members = [self._autoencoder(len(c)) for c in self.clusters]
        self._output = self._autoencoder(len(self.clusters))
        for i, m in enumerate(self._members):
            m.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(f"member{i}.")})
        self._output.load_state_dict({k[len("output."):]: v for k, v in weights.items() if k.startswith("output.")})
        for m in [*self._members, self._output]:
            m.eval()


@register
class DenseAutoencoderDetector(_TrainingSettings, BaseDetector):
    """One dense autoencoder over all features, trained on benign rows; anomaly score from its RMSE.

    The network is ``n -> hidden... -> reversed(hidden[:-1]) -> n`` with ReLU between layers and a
    linear output, on the z-score ``Preprocessor``'s output clipped to ``±input_clip`` (rare
    categorical codes otherwise reach z of 100+ and dominate the squared error). Unlike the Kitsune
    ensemble it has no data-dependent structure (no feature clustering, no second-stage scaling), so
    its weights can be averaged across sites: this is the federated anomaly model
    (``trustmesh fl simulate --model autoencoder``, :meth:`from_weights`).

    Score mapping as in :class:`AutoencoderEnsembleDetector`: ``log(RMSE)`` of benign rows is modelled
    as normal and ``score = Phi((log RMSE - mu) / sigma)``; ``fit`` takes ``mu``/``sigma`` from a benign
    hold-out, :meth:`from_weights` from the benign rows it is given.
    """

    name = "dense-autoencoder"
    supervised = False

    def __init__(
        self,
        *,
        seed: int = 0,
        multiclass: bool = False,
        hidden: tuple[int, ...] | list[int] = (64, 32),
        input_clip: float = 10.0,
        epochs: int = 20,
        batch_size: int = 64,
        learning_rate: float = 3e-3,
        max_train_rows: int = 50_000,
        holdout_fraction: float = 0.15,
        num_threads: int = 2,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(seed=seed, threshold=threshold, multiclass=False)
        hidden_t = tuple(int(h) for h in hidden)
        if not hidden_t or any(h < 1 for h in hidden_t):
            raise ValueError(f"hidden must be a non-empty list of positive sizes, got {list(hidden)}")
        if not input_clip > 0:
            raise ValueError(f"input_clip must be > 0, got {input_clip}")
        self.hidden = hidden_t
        self.input_clip = float(input_clip)
        self._set_training(epochs, batch_size, learning_rate, max_train_rows, holdout_fraction, num_threads)
        self.pre: Preprocessor | None = None
        self.net: Any = None
        self._mu = 0.0
        self._sigma = 1.0

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {
            "seed": self.seed,
            "hidden": list(self.hidden),
            "input_clip": self.input_clip,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "max_train_rows": self.max_train_rows,
            "holdout_fraction": self.holdout_fraction,
            "num_threads": self.num_threads,
        }

    # -- network (shared with trustmesh.federated's AutoencoderModel) -------------------------------
    @staticmethod
    def network(n_features: int, hidden: tuple[int, ...], seed: int) -> Any:
        """Build the autoencoder ``n -> hidden... -> mirror -> n`` with weights initialised from ``seed``."""
        torch = _torch()
        nn = torch.nn
        widths = [*hidden, *reversed(hidden[:-1]), n_features]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers: list[Any] = []
            width = n_features
            for i, w in enumerate(widths):
                layers.append(nn.Linear(width, w))
                if i < len(widths) - 1:
                    layers.append(nn.ReLU())
                width = w
            return nn.Sequential(*layers)

    @staticmethod
    def reconstruction_rmse(net: Any, Z: np.ndarray, input_clip: float) -> np.ndarray:
        """Per-row RMSE of ``net`` on a scaled matrix ``Z`` (clipped to ``±input_clip`` first)."""
        torch = _torch()
        x = torch.from_numpy(np.clip(np.asarray(Z, dtype=np.float32), -input_clip, input_clip))
        net.eval()
        with torch.no_grad():
            out = torch.sqrt(torch.mean((net(x) - x) ** 2, dim=1))
        return cast(np.ndarray, out.numpy().astype(np.float64))

    score_map = staticmethod(score_map)
    map_scores = staticmethod(map_scores)

    @staticmethod
    def train_network(net: Any, data: Any, *, epochs: int, batch_size: int, lr: float, seed: int,
                      proximal_mu: float = 0.0) -> float:
        """Train ``net`` to reconstruct the (scaled, clipped) tensor ``data`` with Adam; return the last
        epoch's mean squared error. ``proximal_mu > 0`` adds FedProx's ``mu/2 * ||w - w_start||^2``
        (federated sites). Shared by :meth:`fit` and the federated ``AutoencoderModel``."""
        torch = _torch()
        gen = torch.Generator().manual_seed(seed)
        start = [p.detach().clone() for p in net.parameters()] if proximal_mu > 0 else []
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        net.train()
        last = 0.0
        try:
            for _ in range(epochs):
                perm = torch.randperm(data.shape[0], generator=gen)
                total = 0.0
                for s in range(0, data.shape[0], batch_size):
                    xb = data[perm[s:s + batch_size]]
                    opt.zero_grad()
                    loss = torch.mean((net(xb) - xb) ** 2)
                    total += float(loss.detach()) * len(xb)
                    if proximal_mu > 0:
                        loss = loss + 0.5 * proximal_mu * sum(((p - s0) ** 2).sum()
                                                              for p, s0 in zip(net.parameters(), start, strict=True))
                    loss.backward()
                    opt.step()
                last = total / data.shape[0]
        finally:
            net.eval()
        return last

    @classmethod
    def from_weights(cls, encoder: FeatureEncoder, preprocessor: Preprocessor, weights: list[np.ndarray],
                     benign_matrix: np.ndarray, **params: Any) -> DenseAutoencoderDetector:
        """Build a fitted detector from a fixed encoder and z-score scaling and trained weights.

        ``benign_matrix`` (encoded, unscaled benign rows, e.g. a server-held validation share) fixes
        the score mapping. This is how federated training turns aggregated weights into a detector.
        """
        det = cls(**params)
        det.encoder = encoder
        det.pre = preprocessor
        det.net = cls.network(encoder.n_features, det.hidden, det.seed)
        det.set_weights(weights)
        det._mu, det._sigma = cls.score_map(det.rmse(np.asarray(benign_matrix, dtype=np.float32)))
        return det

    def get_weights(self) -> list[np.ndarray]:
        """Return the network parameters as numpy arrays (``state_dict`` order, copies)."""
        if self.net is None:
            raise ModelError("dense-autoencoder detector is not fitted; call fit() first")
        return [v.detach().cpu().numpy().copy() for v in self.net.state_dict().values()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Load parameters produced by :meth:`get_weights` (count, shapes and finiteness checked)."""
        torch = _torch()
        if self.net is None:
            raise ModelError("dense-autoencoder detector is not fitted; call fit() first")
        current = self.net.state_dict()
        if len(weights) != len(current):
            raise InputError(f"expected {len(current)} weight arrays, got {len(weights)}")
        new = {}
        for (k, v), w in zip(current.items(), weights, strict=True):
            arr = np.asarray(w, dtype=np.float32)
            if tuple(arr.shape) != tuple(v.shape):
                raise InputError(f"weight {k!r} has shape {arr.shape}, expected {tuple(v.shape)}")
            if not np.all(np.isfinite(arr)):
                raise InputError(f"weight {k!r} contains NaN or infinity")
            new[k] = torch.from_numpy(arr.copy())
        self.net.load_state_dict(new)
        self.net.eval()

    def rmse(self, matrix: np.ndarray) -> np.ndarray:
        """Return the reconstruction RMSE of an encoded matrix (the raw anomaly measure)."""
        torch = _torch()
        if self.pre is None or self.net is None:
            raise ModelError("dense-autoencoder detector is not fitted; call fit() first")
        old = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            return self.reconstruction_rmse(self.net, self.pre.transform(matrix), self.input_clip)
        finally:
            torch.set_num_threads(old)

    # -- fit / score -------------------------------------------------------------------------------
    def _fit_matrix(self, X: np.ndarray, is_attack: np.ndarray, class_index: np.ndarray) -> None:
        torch = _torch()
        train_idx, hold_idx = self._benign_split(is_attack)
        self.pre = Preprocessor.fit(X[train_idx], mode="zscore")
        self.net = self.network(X.shape[1], self.hidden, self.seed)
        data = torch.from_numpy(np.clip(self.pre.transform(X[train_idx]), -self.input_clip, self.input_clip))
        old = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            self.train_network(self.net, data, epochs=self.epochs, batch_size=self.batch_size,
                               lr=self.learning_rate, seed=self.seed)
        finally:
            torch.set_num_threads(old)
        self._mu, self._sigma = score_map(self.rmse(X[hold_idx]))

    def _score_matrix(self, X: np.ndarray) -> np.ndarray:
        return map_scores(self.rmse(X), self._mu, self._sigma)

    # -- persistence -------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        torch = _torch()
        assert self.pre is not None and self.net is not None
        buf = io.BytesIO()
        torch.save(dict(self.net.state_dict()), buf)
        state = {"preprocessor": self.pre.to_dict(), "mu": self._mu, "sigma": self._sigma}
        return state, {"weights.pt": buf.getvalue()}

    def _restore(self, state: dict[str, Any], blobs: dict[str, bytes]) -> None:
        torch = _torch()
        n = len(self.feature_names)
        self.pre = Preprocessor.from_dict(state["preprocessor"], n)
        self._mu = float(state["mu"])
        self._sigma = float(state["sigma"])
        if not (math.isfinite(self._mu) and math.isfinite(self._sigma) and self._sigma > 0):
            raise ModelError("dense-autoencoder score mapping must have finite mu and sigma > 0")
        self.net = self.network(n, self.hidden, self.seed)
        self.net.load_state_dict(torch.load(io.BytesIO(blobs["weights.pt"]), weights_only=True))
        self.net.eval()
