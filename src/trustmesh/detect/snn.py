"""Spiking neural network detector: rate/latency-coded flow features through LIF layers.

The network is a small fully connected spiking net of snntorch leaky integrate-and-fire neurons
(``snn.Leaky``), trained with surrogate gradients (fast-sigmoid surrogate; F. Zenke & S. Ganguli,
"SuperSpike", Neural Computation 2018; E. O. Neftci, H. Mostafa & F. Zenke, "Surrogate Gradient
Learning in Spiking Neural Networks", IEEE Signal Processing Magazine 2019). Flow features are
encoded by the shared :class:`~trustmesh.flows.FeatureEncoder`, numerics scaled to [0, 1] (signed log,
min-max) and categorical codes one-hot expanded; each value then becomes either a Bernoulli spike
train (rate coding) or one spike that fires earlier for larger values (latency coding). The readout
integrates the last hidden layer's spikes through a linear layer.

It is a :class:`~trustmesh.detect.BaseDetector` (kind ``"snn"``): same protocol, artifact format and
conformance suite as every other detector. Every scoring call also records :class:`SpikeStats` —
spikes per layer and synaptic operations (SOPs: one accumulate per arriving spike per fan-out
synapse) per inference — which the energy model turns into picojoules.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import numpy as np

from trustmesh.detect._base import BaseDetector, Preprocessor, npy_bytes, npy_load, register
from trustmesh.errors import MissingDependencyError, ModelError

__all__ = ["SpikeEncoding", "SpikeStats", "SpikingDetector"]

logger = logging.getLogger(__name__)

# categorical codes beyond this many one-hot slots share one "other" slot (code 0 = unknown)
_MAX_ONEHOT = 32


def _torch() -> Any:
    try:
        import snntorch  # noqa: F401
        import torch
    except ImportError as exc:  # pragma: no cover - only without the ml extra
        raise MissingDependencyError(exc.name or "torch", "ml") from exc
    return torch


def _signed_log(x: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, np.sign(x) * np.log1p(np.abs(x)))


@dataclass(frozen=True, slots=True)
class SpikeEncoding:
    """Map an encoded flow matrix to the [0, 1] values the spike encoder fires from.

    ``numeric`` are the matrix columns scaled (signed log, min-max with ``lo``/``span``, NaN ->
    ``fill``); ``onehot`` gives, per categorical matrix column, how many one-hot slots it expands to.
    ``integer`` marks numeric columns that held only non-negative integers at fit time (counts), so
    adversarial projections can keep them valid.
    """

    numeric: tuple[int, ...]
    fill: tuple[float, ...]
    lo: tuple[float, ...]
    span: tuple[float, ...]
    integer: tuple[bool, ...]
    onehot: tuple[tuple[int, int], ...]  # (matrix column, slots)

    @classmethod
    def fit(cls, matrix: np.ndarray, categorical: Sequence[int]) -> SpikeEncoding:
        """Learn scaling from a training matrix whose ``categorical`` columns hold codes."""
        cats = sorted(int(c) for c in categorical)
        numeric = [j for j in range(matrix.shape[1]) if j not in set(cats)]
        sub = matrix[:, numeric].astype(np.float64)
        pre = Preprocessor.fit(sub.astype(np.float32), mode="minmax")
        filled = np.where(np.isnan(sub), pre.fill, sub)
        integer = [bool(np.all(filled[:, k] >= 0) and np.all(filled[:, k] == np.round(filled[:, k])))
                   for k in range(len(numeric))]
        onehot = []
        for j in cats:
            codes = matrix[:, j]
            top = int(np.nanmax(codes)) if np.isfinite(codes).any() else 0
            onehot.append((j, min(top, _MAX_ONEHOT) + 1))
        return cls(tuple(numeric), tuple(map(float, pre.fill)), tuple(map(float, pre.lo)),
                   tuple(map(float, pre.scale)), tuple(integer), tuple(onehot))

    @property
    def width(self) -> int:
        """Return the number of [0, 1] inputs (neurons of the input layer)."""
        return len(self.numeric) + sum(s for _, s in self.onehot)

    def scale_numeric(self, raw: np.ndarray) -> np.ndarray:
        """Scale raw numeric values (``numeric`` column order) to [0, 1]."""
        v = np.asarray(raw, dtype=np.float64)
        v = np.where(np.isnan(v), np.asarray(self.fill), v)
        u = (_signed_log(v) - np.asarray(self.lo)) / np.asarray(self.span)
        return cast(np.ndarray, np.clip(u, 0.0, 1.0).astype(np.float32))

    def unscale_numeric(self, u: np.ndarray) -> np.ndarray:
        """Invert :meth:`scale_numeric` on [0, 1] values."""
        t = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0) * np.asarray(self.span) + np.asarray(self.lo)
        return cast(np.ndarray, np.sign(t) * np.expm1(np.abs(t)))

    def transform(self, matrix: np.ndarray) -> np.ndarray:
        """Return float32 inputs in [0, 1], shape (rows, width)."""
        out = np.zeros((matrix.shape[0], self.width), dtype=np.float32)
        n = len(self.numeric)
        if n:
            out[:, :n] = self.scale_numeric(matrix[:, list(self.numeric)])
        k = n
        for j, slots in self.onehot:
            codes = np.nan_to_num(matrix[:, j], nan=0.0).astype(np.int64)
            codes = np.where((codes >= 0) & (codes < slots), codes, 0)
            out[np.arange(len(codes)), k + codes] = 1.0
            k += slots
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready state."""
        d = asdict(self)
        d["onehot"] = [list(p) for p in self.onehot]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], n_columns: int) -> SpikeEncoding:
        """Rebuild from :meth:`to_dict`, checking lengths and column indices."""
        try:
            enc = cls(
                tuple(int(x) for x in d["numeric"]),
                tuple(float(x) for x in d["fill"]),
                tuple(float(x) for x in d["lo"]),
                tuple(float(x) for x in d["span"]),
                tuple(bool(x) for x in d["integer"]),
                tuple((int(j), int(s)) for j, s in d["onehot"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"snn spike encoding is malformed ({exc})") from None
        n = len(enc.numeric)
        if not n == len(enc.fill) == len(enc.lo) == len(enc.span) == len(enc.integer):
            raise ModelError("snn spike encoding: per-column arrays differ in length")
        cols = list(enc.numeric) + [j for j, _ in enc.onehot]
        if sorted(cols) != list(range(n_columns)) or any(s < 1 for _, s in enc.onehot):
            raise ModelError("snn spike encoding does not match the feature encoder")
        return enc


@dataclass(frozen=True, slots=True)
class SpikeStats:
    """Spiking activity per inference (one flow), averaged over the scored flows.

    ``sops``: every spike arriving at a layer costs one accumulate per outgoing synapse (fan-out),
    summed over layers and time steps. ``equivalent_macs``: multiply-accumulates of a non-spiking
    network with the same layer sizes, for comparison. ``neuron_updates``: membrane updates
    (hidden neurons x steps), reported separately because per-SOP energy figures exclude them.
    """

    flows: int
    steps: int
    layer_sizes: tuple[int, ...]
    spikes_per_layer: tuple[float, ...]
    sops: float
    neuron_updates: float
    equivalent_macs: int

    @property
    def spikes(self) -> float:
        """Return the total spikes per inference, input encoding included."""
        return float(sum(self.spikes_per_layer))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form."""
        d = asdict(self)
        d["layer_sizes"] = list(self.layer_sizes)
        d["spikes_per_layer"] = list(self.spikes_per_layer)
        d["spikes"] = self.spikes
        return d


def _build_net(sizes: Sequence[int], n_classes: int, beta: float, seed: int) -> Any:
    """Build the LIF network; ``sizes`` = (inputs, hidden...). Weights are seeded."""
    torch = _torch()
    import snntorch as snn
    from snntorch import surrogate

    class SpikingNet(torch.nn.Module):  # type: ignore[misc,name-defined]
        """LIF layers then a linear readout integrated over time."""

        def __init__(self) -> None:
            super().__init__()
            pairs = zip(sizes[:-1], sizes[1:], strict=True)
            self.fcs = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in pairs)
            grad = surrogate.fast_sigmoid(slope=25)
            self.lifs = torch.nn.ModuleList(snn.Leaky(beta=beta, spike_grad=grad) for _ in sizes[1:])
            self.readout = torch.nn.Linear(sizes[-1], n_classes)

        def forward(self, spikes_in: Any) -> tuple[Any, list[Any]]:
            """Run spikes [T, B, F]; return logits [B, C] and spike counts per layer, each [B]."""
            batch = spikes_in.shape[1]
            mems = [lif.init_leaky() for lif in self.lifs]
            counts = [spikes_in.detach().sum(dim=(0, 2))] + [torch.zeros(batch) for _ in self.lifs]
            acc = torch.zeros(batch, self.readout.out_features)
            for t in range(spikes_in.shape[0]):
                x = spikes_in[t]
                for k, (fc, lif) in enumerate(zip(self.fcs, self.lifs, strict=True)):
                    x, mems[k] = lif(fc(x), mems[k])
                    counts[k + 1] = counts[k + 1] + x.detach().sum(dim=1)
                acc = acc + self.readout(x)
            return acc / spikes_in.shape[0], counts

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SpikingNet()


@register
class SpikingDetector(BaseDetector):
    """Detect attacks with a leaky integrate-and-fire spiking network (snntorch).

    Parameters
    ----------
    hidden:
        Widths of the hidden LIF layers.
    steps:
        Simulation time steps per inference.
    encoding:
        ``"rate"`` (Bernoulli spikes, probability = scaled value) or ``"latency"`` (one spike, earlier
        for larger values; zeros never fire).
    beta:
        Membrane decay per step, in (0, 1].
    epochs, batch_size, learning_rate:
        Training schedule (Adam, cross-entropy with inverse-sqrt-frequency class weights).
    seed:
        Seeds weights, shuffling and the rate encoder: same seed and data, same scores.
    """

    name = "snn"
    supervised = True

    def __init__(
        self,
        *,
        seed: int = 0,
        multiclass: bool = True,
        hidden: Sequence[int] = (64, 32),
        steps: int = 16,
        encoding: Literal["rate", "latency"] = "rate",
        beta: float = 0.9,
        epochs: int = 6,
        batch_size: int = 256,
        learning_rate: float = 2e-3,
        num_threads: int = 1,  # small nets: one thread beats two on a shared, busy machine
        threshold: float = 0.5,
    ) -> None:
        super().__init__(seed=seed, threshold=threshold, multiclass=multiclass)
        hidden_t = tuple(int(h) for h in hidden)
        if not hidden_t or any(h < 1 for h in hidden_t):
            raise ValueError(f"hidden must be a non-empty list of widths >= 1, got {list(hidden)}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if encoding not in ("rate", "latency"):
            raise ValueError(f"encoding must be 'rate' or 'latency', got {encoding!r}")
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.hidden = hidden_t
        self.steps = int(steps)
        self.encoding: Literal["rate", "latency"] = encoding
        self.beta = float(beta)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.num_threads = int(num_threads)
        self.spike_encoding: SpikeEncoding | None = None
        self.net: Any = None
        self.last_spike_stats: SpikeStats | None = None

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {
            **super().get_params(),
            "hidden": list(self.hidden),
            "steps": self.steps,
            "encoding": self.encoding,
            "beta": self.beta,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "num_threads": self.num_threads,
        }

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Return (inputs, hidden..., classes) of the fitted network."""
        if self.spike_encoding is None:
            raise ModelError("snn detector is not fitted; call fit() first")
        return (self.spike_encoding.width, *self.hidden, len(self.classes_))

    # -- encoding -----------------------------------------------------------------------------------
    def _spikes(self, x: Any, generator: Any) -> Any:
        """Turn [0, 1] inputs [B, F] into spikes [T, B, F]."""
        torch = _torch()
        if self.encoding == "rate":
            return torch.bernoulli(x.unsqueeze(0).expand(self.steps, *x.shape).contiguous(),
                                   generator=generator)
        t_fire = torch.round((1.0 - x) * (self.steps - 1)).long()
        spikes = torch.zeros(self.steps, *x.shape)
        spikes.scatter_(0, t_fire.unsqueeze(0), 1.0)
        return spikes * (x > 0).float().unsqueeze(0)

    def spike_inputs(self, matrix: np.ndarray) -> np.ndarray:
        """Return the [0, 1] inputs the spike encoder fires from, for an encoded matrix."""
        if self.spike_encoding is None:
            raise ModelError("snn detector is not fitted; call fit() first")
        return self.spike_encoding.transform(matrix)

    # -- BaseDetector hooks -------------------------------------------------------------------------
    def _fit_matrix(self, X: np.ndarray, is_attack: np.ndarray, class_index: np.ndarray) -> None:
        torch = _torch()
        assert self.encoder is not None
        cats = [j for j, c in enumerate(self.encoder.columns) if c in self.encoder.vocab]
        self.spike_encoding = SpikeEncoding.fit(X, cats)
        feats = torch.from_numpy(self.spike_encoding.transform(X))
        target = torch.from_numpy(np.asarray(class_index, dtype=np.int64))
        n_classes = len(self.classes_)
        freq = np.bincount(class_index, minlength=n_classes).astype(np.float64)
        # inverse-sqrt-frequency weights lift rare classes without swamping the common ones
        weights = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1.0)), 0.0)
        weights = weights / weights[freq > 0].mean()
        self.net = _build_net((self.spike_encoding.width, *self.hidden), n_classes, self.beta, self.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.learning_rate)
        loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
        gen = torch.Generator().manual_seed(self.seed)
        old = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        self.net.train()
        try:
            for epoch in range(self.epochs):
                perm = torch.randperm(len(feats), generator=gen)
                total = 0.0
                for s in range(0, len(feats), self.batch_size):
                    idx = perm[s : s + self.batch_size]
                    logits, _ = self.net(self._spikes(feats[idx], gen))
                    loss = loss_fn(logits, target[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                logger.debug("snn epoch %d loss %.4f", epoch, total / len(feats))
        finally:
            torch.set_num_threads(old)
            self.net.eval()

    def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Return class probabilities (``classes_`` order) and record :attr:`last_spike_stats`."""
        torch = _torch()
        if self.net is None or self.spike_encoding is None:
            raise ModelError("snn detector is not fitted; call fit() first")
        feats = torch.from_numpy(self.spike_encoding.transform(matrix))
        gen = torch.Generator().manual_seed(self.seed)  # fixed per call: same input, same scores
        out: list[np.ndarray] = []
        totals = np.zeros(len(self.hidden) + 1)
        old = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            with torch.no_grad():
                for s in range(0, len(feats), 4096):
                    logits, counts = self.net(self._spikes(feats[s : s + 4096], gen))
                    out.append(torch.softmax(logits.double(), dim=1).numpy())
                    totals += np.array([float(c.sum()) for c in counts])
        finally:
            torch.set_num_threads(old)
        sizes = self.layer_sizes
        per_layer = totals / max(len(feats), 1)
        self.last_spike_stats = SpikeStats(
            flows=len(feats),
            steps=self.steps,
            layer_sizes=sizes,
            spikes_per_layer=tuple(float(v) for v in per_layer),
            sops=float((per_layer * np.asarray(sizes[1:], dtype=np.float64)).sum()),
            neuron_updates=float(self.steps * sum(self.hidden)),
            equivalent_macs=int(sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))),
        )
        if not out:
            return np.zeros((0, len(self.classes_)))
        return np.asarray(np.concatenate(out), dtype=np.float64)

    def _score_matrix(self, X: np.ndarray) -> np.ndarray:
        return 1.0 - self.predict_proba_matrix(X)[:, 0]

    def _state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        assert self.spike_encoding is not None and self.net is not None
        state = {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        return (
            {"spike_encoding": self.spike_encoding.to_dict(), "tensors": sorted(state)},
            {f"{k}.npy": npy_bytes(v) for k, v in state.items()},
        )

    def _restore(self, state: dict[str, Any], blobs: dict[str, bytes]) -> None:
        torch = _torch()
        self.spike_encoding = SpikeEncoding.from_dict(state["spike_encoding"], len(self.feature_names))
        names = state["tensors"]
        if not isinstance(names, list):
            raise ModelError("snn state: 'tensors' must be a list")
        weights = {str(k): torch.from_numpy(npy_load(blobs[f"{k}.npy"], f"{k}.npy").copy()) for k in names}
        self.net = _build_net((self.spike_encoding.width, *self.hidden), len(self.classes_), self.beta,
                              self.seed)
        try:
            self.net.load_state_dict(weights)
        except RuntimeError as exc:
            raise ModelError(f"snn weights do not fit the network ({exc})") from None
        self.net.eval()

    # -- analysis hooks -----------------------------------------------------------------------------
    def logit_module(self) -> Any:
        """Return a torch module mapping [0, 1] spike inputs to class logits, differentiable end to end.

        The forward pass uses real spikes; the backward pass treats encoding as the identity
        (straight-through estimator), which gradient-based evasion attacks need.
        """
        torch = _torch()
        if self.net is None:
            raise ModelError("snn detector is not fitted; call fit() first")
        det = self
        net = self.net

        class SpikingLogits(torch.nn.Module):  # type: ignore[misc,name-defined]
            """Straight-through spike encoding then the LIF network."""

            def __init__(self) -> None:
                super().__init__()
                self.net = net
                self.gen = torch.Generator().manual_seed(det.seed)

            def forward(self, x: Any) -> Any:
                spikes = det._spikes(x.detach().clamp(0.0, 1.0), self.gen)
                spikes = spikes + (x.unsqueeze(0) - x.unsqueeze(0).detach())
                logits, _ = self.net(spikes)
                return logits

        return SpikingLogits()

