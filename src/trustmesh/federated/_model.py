"""The federated model: a small torch MLP classifier behind ``get_weights``/``set_weights``.

This mirrors the interface of the detection core's MLP so sites and the coordinator exchange plain
numpy arrays; the final model is written with the detection core's artifact format when available.
"""

from __future__ import annotations

import contextlib
import secrets
import warnings
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

__all__ = ["CLASS_WEIGHTINGS", "MLPModel", "class_weights"]

CLASS_WEIGHTINGS = ("none", "balanced", "sqrt")

FloatArrays = list[npt.NDArray[np.float32]]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on extras
        from trustmesh.errors import MissingDependencyError

        raise MissingDependencyError("torch", "ml") from exc
    return torch


def class_weights(y: npt.ArrayLike, n_classes: int, mode: str = "balanced") -> npt.NDArray[np.float32] | None:
    """Return per-class cross-entropy weights from the label counts in ``y`` (None for ``mode="none"``).

    ``balanced`` is ``n / (k * n_c)`` (King & Zeng 2001; scikit-learn's "balanced"), ``sqrt`` its square
    root (a milder re-weighting), over the ``k`` classes present in ``y``; absent classes get weight 1
    (no row of theirs is in the loss). Only counts of ``y`` are used, so a site computes its weights
    from its own rows and no label statistics leave it.
    """
    if mode not in CLASS_WEIGHTINGS:
        raise ValueError(f"class weighting must be one of {', '.join(CLASS_WEIGHTINGS)}, got {mode!r}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if mode == "none":
        return None
    labels = np.asarray(y, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.ones(n_classes, dtype=np.float64)
    if present.any():
        w[present] = counts.sum() / (present.sum() * counts[present])
        if mode == "sqrt":
            w[present] = np.sqrt(w[present])
    return w.astype(np.float32)


class TorchWeights:
    """The weights interface sites and the coordinator exchange: plain float32 arrays of ``self.net``."""

    net: Any

    def get_weights(self) -> FloatArrays:
        """Return the parameters as float32 numpy arrays (copies)."""
        return [p.detach().cpu().numpy().astype(np.float32, copy=True) for p in self.net.parameters()]

    def set_weights(self, weights: Sequence[npt.ArrayLike]) -> None:
        """Load parameters from arrays shaped like :meth:`get_weights`."""
        torch = _torch()
        params = list(self.net.parameters())
        if len(weights) != len(params):
            raise ValueError(f"expected {len(params)} arrays, got {len(weights)}")
        with torch.no_grad():
            for p, w in zip(params, weights, strict=True):
                arr = np.asarray(w, dtype=np.float32)
                if tuple(arr.shape) != tuple(p.shape):
                    raise ValueError(f"weight shape {arr.shape} does not match {tuple(p.shape)}")
                p.copy_(torch.from_numpy(arr.copy()))


class MLPModel(TorchWeights):
    """A ReLU MLP classifier ``n_features -> hidden... -> n_classes`` trained with Adam.

    ``seed`` fixes the initial weights, so every site and the coordinator start from the same model.
    """

    def __init__(self, n_features: int, n_classes: int, hidden: Sequence[int] = (64, 32), seed: int = 0) -> None:
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        torch = _torch()
        self.n_features = n_features
        self.n_classes = n_classes
        self.hidden = tuple(int(h) for h in hidden)
        self.seed = seed
        gen = torch.Generator().manual_seed(seed)
        layers: list[Any] = []
        width = n_features
        for h in self.hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        layers.append(torch.nn.Linear(width, n_classes))
        self.net = torch.nn.Sequential(*layers)
        with torch.no_grad():
            for p in self.net.parameters():
                # deterministic init from our own generator (torch's default init uses the global RNG)
                bound = 1.0 / np.sqrt(p.shape[-1] if p.dim() > 1 else max(p.shape[0], 1))
                p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))

    def train_epochs(
        self, X: npt.ArrayLike, y: npt.ArrayLike, epochs: int = 1, *, batch_size: int = 64, lr: float = 1e-3,
        seed: int = 0, proximal_mu: float = 0.0, class_weights: npt.ArrayLike | None = None,
        dp_sgd: dict[str, float] | None = None, logit_scale: npt.ArrayLike | None = None,
    ) -> float:
        """Train in place for ``epochs``; returns the last epoch's mean loss.

        ``logit_scale`` multiplies each class's logit inside the training loss only (FedRS's restricted
        softmax, Li & Zhan, KDD 2021: a site scales the logits of classes it has no row of by
        ``alpha < 1``, so its local steps do not push those classes' output weights down unopposed).

        ``proximal_mu > 0`` adds FedProx's ``mu/2 * ||w - w_start||^2`` (Li et al., MLSys 2020).
        ``dp_sgd`` (keys noise_multiplier, max_grad_norm) runs local DP-SGD with opacus (Abadi et al.,
        CCS 2016): Poisson-sampled batches at rate ``1 / ceil(n / batch_size)`` for
        ``ceil(n / batch_size)`` steps per epoch, as :func:`trustmesh.privacy.dp_sgd_sampling` accounts.
        The sampling and the noise are drawn from OS-seeded generators, not from ``seed``.
        """
        torch = _torch()
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        Xt = torch.from_numpy(np.array(X, dtype=np.float32, copy=True))
        yt = torch.from_numpy(np.array(y, dtype=np.int64, copy=True))
        if len(Xt) == 0:
            return 0.0
        gen = torch.Generator().manual_seed(seed)
        start = [p.detach().clone() for p in self.net.parameters()]
        weight = None if class_weights is None else torch.as_tensor(np.asarray(class_weights, dtype=np.float32))
        base_loss = torch.nn.CrossEntropyLoss(weight=weight)
        loss_fn: Any = base_loss
        if logit_scale is not None:
            scale = torch.as_tensor(np.asarray(logit_scale, dtype=np.float32))
            if tuple(scale.shape) != (self.n_classes,):
                raise ValueError(f"logit_scale must have {self.n_classes} entries, got {tuple(scale.shape)}")

            def loss_fn(out: Any, target: Any) -> Any:
                return base_loss(out * scale, target)
        net: Any = self.net
        opt: Any = torch.optim.Adam(self.net.parameters(), lr=lr)
        data = torch.utils.data.TensorDataset(Xt, yt)
        loader: Any = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen)
        if dp_sgd:
            try:
                from opacus import PrivacyEngine
            except ImportError as exc:  # pragma: no cover
                from trustmesh.errors import MissingDependencyError

                raise MissingDependencyError("opacus", "fl") from exc
            with warnings.catch_warnings():
                # opacus' secure_mode needs torchcsprng (not installable here); we pass our own noise
                # generator seeded from the OS CSPRNG instead, so its "secure RNG off" notice is moot
                warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
                engine = PrivacyEngine(secure_mode=False)
            noise_gen = torch.Generator().manual_seed(secrets.randbits(63))
            # opacus' Poisson sampler draws from the loader's generator; subsampling amplification holds
            # only if nobody can predict which records a step used, so it must not be the public seed
            sample_gen = torch.Generator().manual_seed(secrets.randbits(63))
            loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, generator=sample_gen)
            net, opt, loader = engine.make_private(
                module=self.net, optimizer=opt, data_loader=loader, noise_generator=noise_gen,
                noise_multiplier=float(dp_sgd["noise_multiplier"]), max_grad_norm=float(dp_sgd["max_grad_norm"]),
                poisson_sampling=True,
            )
        net.train()
        quiet: Any = warnings.catch_warnings() if dp_sgd else contextlib.nullcontext()
        with quiet:
            if dp_sgd:
                # opacus' per-sample-gradient hooks fire on the first layer, whose input needs no grad;
                # torch notes this on every backward pass - expected with opacus, nothing to fix here
                warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            last = self._epochs(net, opt, loader, loss_fn, epochs, proximal_mu, start, step_on_empty=bool(dp_sgd))
        if dp_sgd:
            # opacus wraps the module; copy the trained weights back into the plain network
            inner = net._module if hasattr(net, "_module") else net
            if hasattr(net, "remove_hooks"):
                net.remove_hooks()  # the next round wraps the same network again
            self.net.load_state_dict(inner.state_dict())
        return last

    def _epochs(self, net: Any, opt: Any, loader: Any, loss_fn: Any, epochs: int, proximal_mu: float,
                start: list[Any], *, step_on_empty: bool = False) -> float:
        last = 0.0
        for _ in range(epochs):
            total, count = 0.0, 0
            for xb, yb in loader:
                if len(xb) == 0 and not step_on_empty:
                    continue
                opt.zero_grad()
                out = net(xb)
                # DP-SGD: a Poisson batch can be empty; the step still runs (noise only), since
                # skipping it would reveal that no record was drawn, which the accountant does not cover
                loss = loss_fn(out, yb) if len(xb) else out.sum() * 0.0
                if proximal_mu > 0:
                    prox = sum(((p - s) ** 2).sum() for p, s in zip(self.net.parameters(), start, strict=True))
                    loss = loss + 0.5 * proximal_mu * prox
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(xb)
                count += len(xb)
            last = total / max(count, 1)
        return last

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Return class probabilities, one row per input row."""
        torch = _torch()
        self.net.eval()
        with torch.no_grad():
            logits = self.net(torch.from_numpy(np.array(X, dtype=np.float32, copy=True)))
            return cast(npt.NDArray[np.float32], torch.softmax(logits, dim=1).numpy().astype(np.float32))

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Return the most likely class index per row."""
        return cast(npt.NDArray[np.int64], np.argmax(self.predict_proba(X), axis=1).astype(np.int64))
