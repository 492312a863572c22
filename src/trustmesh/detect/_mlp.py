"""Multi-layer perceptron classifier (torch), binary or multi-class, built for federated training.

Besides the :class:`~trustmesh.detect.Detector` protocol it exposes the hooks a Flower client needs:
:meth:`MLPDetector.prepare` fixes the feature encoder, input scaling and class list (every site
must share them, so a coordinator prepares once on a reference sample and ships the saved model);
:meth:`get_weights`/:meth:`set_weights` exchange the network parameters as numpy arrays (in
``state_dict`` order); :meth:`train_epochs` runs local epochs from the current weights.
"""

from __future__ import annotations

import io
from typing import Any, Self, cast

import numpy as np
import pandas as pd

from trustmesh.detect._base import BaseDetector, Preprocessor, prepare_labels, register
from trustmesh.errors import InputError, MissingDependencyError, ModelError
from trustmesh.flows._features import FeatureEncoder

__all__ = ["MLPDetector"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "ml") from exc
    return torch


@register
class MLPDetector(BaseDetector):
    """Feed-forward ReLU network; ``score = 1 - P(benign)`` from its softmax output."""

    name = "mlp"
    supervised = True

    def __init__(
        self,
        *,
        seed: int = 0,
        multiclass: bool = False,
        hidden: tuple[int, ...] | list[int] = (64, 32),
        epochs: int = 5,
        batch_size: int = 512,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        num_threads: int = 2,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(seed=seed, threshold=threshold, multiclass=multiclass)
        hidden_t = tuple(int(h) for h in hidden)
        if not hidden_t or any(h < 1 for h in hidden_t):
            raise ValueError(f"hidden must be a non-empty list of positive sizes, got {list(hidden)}")
        if epochs < 0 or batch_size < 1 or num_threads < 1:
            raise ValueError("epochs must be >= 0, batch_size and num_threads >= 1")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.hidden = hidden_t
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.num_threads = int(num_threads)
        self.pre: Preprocessor | None = None
        self.net: Any = None
        self._round = 0

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {
            **super().get_params(),
            "hidden": list(self.hidden),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "num_threads": self.num_threads,
        }

    def _build(self, n_in: int, n_out: int) -> Any:
        torch = _torch()
        nn = torch.nn
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            layers: list[Any] = []
            width = n_in
            for h in self.hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, n_out))
            return nn.Sequential(*layers)

    # -- federated hooks ---------------------------------------------------------------------------
    def prepare(self, X: pd.DataFrame, y: np.ndarray | pd.Series | None = None,
                classes: tuple[str, ...] | None = None) -> Self:
        """Fix encoder, scaling, classes and fresh weights from a reference sample, without training."""
        if not isinstance(X, pd.DataFrame) or len(X) == 0:
            raise InputError("prepare needs a non-empty feature DataFrame")
        self.encoder = FeatureEncoder.fit(X)
        matrix = self.encoder.transform(X)
        if classes is not None:
            if len(classes) < 2 or classes[0] != "benign":
                raise ValueError(f"classes must start with 'benign' and have >= 2 entries, got {classes}")
            self._classes = tuple(classes)
        elif y is not None:
            _, _, self._classes = prepare_labels(y, len(X), multiclass=self.multiclass)
        self.pre = Preprocessor.fit(matrix, mode="zscore")
        self.net = self._build(matrix.shape[1], len(self._classes))
        self._round = 0
        return self

    @classmethod
    def from_weights(cls, encoder: FeatureEncoder, preprocessor: Preprocessor, classes: tuple[str, ...],
                     weights: list[np.ndarray], **params: Any) -> Self:
        """Build a fitted detector from a fixed encoder, scaling, class list and trained weights.

        This is how federated training turns its aggregated weights into a detector: the encoder and
        scaling are the ones every site encoded its rows with.
        """
        if len(classes) < 2 or classes[0] != "benign":
            raise ValueError(f"classes must start with 'benign' and have >= 2 entries, got {classes}")
        det = cls(**params)
        det.encoder = encoder
        det.pre = preprocessor
        det._classes = tuple(classes)
        det.net = det._build(encoder.n_features, len(det._classes))
        det.set_weights(weights)
        det.net.eval()
        return det

    def get_weights(self) -> list[np.ndarray]:
        """Return the network parameters as numpy arrays (``state_dict`` order, copies)."""
        if self.net is None:
            raise ModelError("mlp detector is not prepared; call fit() or prepare() first")
        return [v.detach().cpu().numpy().copy() for v in self.net.state_dict().values()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Load parameters produced by :meth:`get_weights` (shapes must match)."""
        torch = _torch()
        if self.net is None:
            raise ModelError("mlp detector is not prepared; call fit() or prepare() first")
        keys = list(self.net.state_dict().keys())
        current = self.net.state_dict()
        if len(weights) != len(keys):
            raise InputError(f"expected {len(keys)} weight arrays, got {len(weights)}")
        new = {}
        for k, w in zip(keys, weights, strict=True):
            arr = np.asarray(w, dtype=np.float32)
            if tuple(arr.shape) != tuple(current[k].shape):
                raise InputError(f"weight {k!r} has shape {arr.shape}, expected {tuple(current[k].shape)}")
            if not np.all(np.isfinite(arr)):
                raise InputError(f"weight {k!r} contains NaN or infinity")
            new[k] = torch.from_numpy(arr.copy())
        self.net.load_state_dict(new)

    def _targets(self, y: np.ndarray | pd.Series, n: int) -> np.ndarray:
        arr: np.ndarray = np.asarray(y)
        if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer) and len(self._classes) == 2:
            return arr.astype(np.int64)
        names: np.ndarray = pd.Series(arr).astype(str).to_numpy()
        if len(self._classes) == 2:
            return cast(np.ndarray, (names != "benign").astype(np.int64))
        index = pd.Index(self._classes).get_indexer(names)
        if (index < 0).any():
            unknown = sorted(set(names[index < 0]))[:5]
            raise InputError(f"labels not in the model's classes: {unknown}")
        return cast(np.ndarray, index.astype(np.int64))

    def train_epochs(
        self,
        X: pd.DataFrame | np.ndarray,
        y: np.ndarray | pd.Series,
        epochs: int = 1,
        *,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        proximal_mu: float = 0.0,
    ) -> dict[str, float]:
        """Train ``epochs`` passes from the current weights; return ``{"loss": mean last-epoch loss}``.

        ``X`` is a feature DataFrame (encoded with this model's encoder) or an already encoded
        float32 matrix. ``proximal_mu > 0`` adds FedProx's ``mu/2 ||w - w_start||^2`` term
        (Li et al., MLSys 2020). The data order is shuffled with ``seed`` and the round counter.
        """
        torch = _torch()
        if self.net is None or self.pre is None:
            raise ModelError("mlp detector is not prepared; call fit() or prepare() first")
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        matrix = self.encode(X) if isinstance(X, pd.DataFrame) else np.asarray(X, dtype=np.float32)
        target = torch.from_numpy(self._targets(y, matrix.shape[0]))
        data = torch.from_numpy(self.pre.transform(matrix))
        if data.shape[0] != target.shape[0]:
            raise InputError(f"X has {data.shape[0]} rows but y has {target.shape[0]}")
        bs = batch_size or self.batch_size
        opt = torch.optim.Adam(self.net.parameters(), lr=learning_rate or self.learning_rate,
                               weight_decay=self.weight_decay)
        start = [p.detach().clone() for p in self.net.parameters()]
        loss_fn = torch.nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._round)
        old = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        last = 0.0
        self.net.train()
        try:
            for _ in range(epochs):
                perm = torch.randperm(data.shape[0], generator=gen)
                total, batches = 0.0, 0
                for s in range(0, data.shape[0], bs):
                    idx = perm[s:s + bs]
                    opt.zero_grad()
                    loss = loss_fn(self.net(data[idx]), target[idx])
                    if proximal_mu > 0:
                        loss = loss + proximal_mu / 2 * sum(
                            torch.sum((p - p0) ** 2) for p, p0 in zip(self.net.parameters(), start, strict=True)
                        )
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                    batches += 1
                last = total / max(batches, 1)
        finally:
            torch.set_num_threads(old)
            self.net.eval()
        self._round += 1
        return {"loss": last}

    # -- detector hooks ----------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: np.ndarray | pd.Series | None = None) -> Self:
        """Prepare on ``X`` and train ``epochs`` epochs on it."""
        if y is None:
            raise InputError("mlp needs labels (benign and attack rows) to fit")
        is_attack, _, _ = prepare_labels(y, len(X), multiclass=self.multiclass)
        if is_attack.all() or not is_attack.any():
            raise InputError("mlp needs both benign and attack rows to fit")
        self.prepare(X, y)
        self.train_epochs(X, y, self.epochs)
        return self

    def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Softmax class probabilities in ``classes_`` order."""
        torch = _torch()
        if self.net is None or self.pre is None:
            raise ModelError("mlp detector is not fitted; call fit() first")
        old = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            with torch.no_grad():
                logits = self.net(torch.from_numpy(self.pre.transform(matrix)))
                proba = torch.softmax(logits.double(), dim=1).numpy()
        finally:
            torch.set_num_threads(old)
        return np.asarray(proba, dtype=np.float64)

    def _score_matrix(self, X: np.ndarray) -> np.ndarray:
        return 1.0 - self.predict_proba_matrix(X)[:, 0]

    def _state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        torch = _torch()
        assert self.pre is not None
        buf = io.BytesIO()
        torch.save(dict(self.net.state_dict()), buf)
        return {"preprocessor": self.pre.to_dict(), "round": self._round}, {"weights.pt": buf.getvalue()}

    def _restore(self, state: dict[str, Any], blobs: dict[str, bytes]) -> None:
        torch = _torch()
        n = len(self.feature_names)
        self.pre = Preprocessor.from_dict(state["preprocessor"], n)
        self._round = int(state.get("round", 0))
        self.net = self._build(n, len(self._classes))
        weights = torch.load(io.BytesIO(blobs["weights.pt"]), weights_only=True)
        self.net.load_state_dict(weights)
        self.net.eval()
