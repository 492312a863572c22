"""Site baselines: learn one network's own benign behaviour and detect what is new on it.

A :class:`SiteBaselineDetector` (kind ``site-baseline``) is fitted on a window of a site's benign
flows (docs/baseline.md). It keeps

* **host and service profiles**: the hosts seen, each host's peers and services (the edges
  ``src -> dst:port/proto``), and per service (``dst:port/proto``, falling back to ``port/proto`` and
  ``proto``) the usual flow shape: medians and spreads of log bytes / packets / duration in each
  direction plus the connection states seen;
* a site **anomaly model** (:class:`IsolationForestDetector`) fitted on the site's flows;
* optionally the **base model** it was built from (e.g. the shipped default pcap model), embedded.

Every flow gets four signals: *novelty* (a host never seen, a service never seen on a known host,
or a burst of new peers from one host -- the fan-out), *shape* (how far the flow is from its
service's usual shape), *anomaly* (isolation forest) and *base* (the base model's score). Shape,
anomaly and base are mapped through their benign distribution on the first part of the window, so
each reads "higher than this share of the site's own benign flows". The score is the maximum of
the four; the threshold is then calibrated on the **held-out, later** part of the window, so the
false-positive target holds on this site's traffic and the realised rate is recorded. Known
behaviour (known edges with usual shapes) stays below it; new hosts, new services, fan-outs and
shapes the site never showed rise above it.

Scoring is stateless (one call, one batch): the fan-out is counted within the scored batch per
source host and time window, so streaming callers with tiny batches rely on the behaviour engine
(which keeps per-host state) for slow fan-outs.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from trustmesh.detect._base import BaseDetector, calibrate_threshold, prepare_labels, read_container, register
from trustmesh.detect._drift import ScoreReference
from trustmesh.detect._protocol import BENIGN
from trustmesh.errors import InputError, ModelError

__all__ = ["BaselineReport", "SiteBaselineDetector", "baseline_attacks", "fit_site_baseline", "flows_digest"]

log = logging.getLogger(__name__)

#: Reasons a flow is flagged, in the order they win when several apply (the detector's classes).
#: Novelty kinds, by code: 0 a known edge, then the new behaviours.
_KINDS = ("known", "new-peer", "new-service", "new-host", "new-peer-fanout")
_REASONS = (*_KINDS[1:], "base-model", "unusual-flow")
_SHAPE = ("duration", "src_bytes", "dst_bytes", "src_pkts", "dst_pkts")
#: Flow-shape features of the anomaly model: the canonical ones every source fills.
ANOMALY_FEATURES = ("dst_port", "proto", "service", "conn_state", *_SHAPE)
_IDENTITY = ("ts", "src_ip", "dst_ip")
_MIN_PROFILE = 8  # flows a shape profile needs before it is trusted (else the coarser level is used)
_SCALE_FLOOR = 0.35  # log-units: a spread below this (~40 %) is not trusted (tiny samples, constant flows)
_STATE_PENALTY = 3.0  # a connection state the service never showed counts as a 3-spread deviation
_NO_PROFILE = 8.0  # shape deviation of a flow whose protocol the site never used
_EPHEMERAL = 32768  # dst ports at or above are client-side ports (Linux ip_local_port_range starts here)
_MIN_FANOUT = 8
_SEP = "|"


def _ip(series: pd.Series) -> np.ndarray:
    text = series.astype("str").to_numpy(dtype=object)
    bad = pd.isna(series).to_numpy() | np.isin(text, ["", "nan", "None", "<NA>", "-"])
    return np.where(bad, "", text)


def _col(frame: pd.DataFrame, name: str, numeric: bool) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), np.nan) if numeric else np.full(len(frame), "", dtype=object)
    if numeric:
        return cast(np.ndarray, pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64))
    return cast(np.ndarray, frame[name].astype("str").fillna("").to_numpy(dtype=object))


def _keys(*parts: np.ndarray) -> np.ndarray:
    out = parts[0].astype(str).astype(object)
    for p in parts[1:]:
        out = out + _SEP + p.astype(str).astype(object)
    return out


@dataclass
class _View:
    """The columns a baseline reads, extracted once per frame."""

    ts: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    port: np.ndarray
    proto: np.ndarray
    state: np.ndarray
    logs: np.ndarray  # (n, len(_SHAPE)) log1p of the shape features (NaN where unknown)

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _View:
        port = _col(frame, "dst_port", True)
        port_s = np.where(np.isfinite(port), np.nan_to_num(port).astype(np.int64), -1).astype(str)
        shape = np.column_stack([_col(frame, c, True) for c in _SHAPE]) if len(frame) else np.zeros((0, len(_SHAPE)))
        with np.errstate(invalid="ignore"):
            logs = np.log1p(np.where(shape >= 0, shape, np.nan))
        src = _ip(frame["src_ip"]) if "src_ip" in frame.columns else np.full(len(frame), "", dtype=object)
        dst = _ip(frame["dst_ip"]) if "dst_ip" in frame.columns else np.full(len(frame), "", dtype=object)
        return cls(ts=_col(frame, "ts", True), src=src, dst=dst, port=port_s.astype(object),
                   proto=np.char.lower(_col(frame, "proto", False).astype(str)).astype(object),
                   state=_col(frame, "conn_state", False), logs=logs)  # fmt: skip

    @property
    def known_identity(self) -> np.ndarray:
        return cast(np.ndarray, (self.src != "") & (self.dst != ""))

    def service_keys(self) -> np.ndarray:
        return _keys(self.dst, self.port, self.proto)

    def edge_keys(self) -> np.ndarray:
        return _keys(self.src, self.dst, self.port, self.proto)


@dataclass
class _ShapeStats:
    med: np.ndarray
    scale: np.ndarray
    states: frozenset[str]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"med": np.nan_to_num(self.med, nan=-1.0).tolist(), "scale": self.scale.tolist(),
                "states": sorted(self.states), "n": self.n}  # fmt: skip

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> _ShapeStats:
        med = np.asarray(doc["med"], dtype=np.float64)
        scale = np.asarray(doc["scale"], dtype=np.float64)
        if med.shape != (len(_SHAPE),) or scale.shape != (len(_SHAPE),) or np.any(scale <= 0):
            raise ModelError("site-baseline shape profile is malformed")
        return cls(np.where(med < 0, np.nan, med), scale, frozenset(str(s) for s in doc["states"]), int(doc["n"]))


def _shape_stats(logs: np.ndarray, states: np.ndarray) -> _ShapeStats:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (a source without that field)
        med = np.nanmedian(logs, axis=0)
        mad = np.nanmedian(np.abs(logs - med), axis=0)
    scale = np.maximum(np.nan_to_num(1.4826 * mad, nan=_SCALE_FLOOR), _SCALE_FLOOR)
    return _ShapeStats(med, scale, frozenset(str(s) for s in states), int(logs.shape[0]))


@dataclass
class _Profile:
    """Hosts, edges, services and per-service shapes of a site's benign flows."""

    hosts: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    edges: set[str] = field(default_factory=set)
    shapes: dict[str, _ShapeStats] = field(default_factory=dict)

    @classmethod
    def fit(cls, v: _View) -> _Profile:
        prof = cls()
        prof.absorb(v)
        levels = {"svc": v.service_keys(), "port": _keys(v.port, v.proto), "proto": v.proto}
        for tag, keys in levels.items():
            frame = pd.DataFrame({"k": keys})
            for key, idx in frame.groupby("k", sort=True).indices.items():
                if tag == "svc" and key.startswith(_SEP):
                    continue  # no destination address: the service level does not apply
                if len(idx) >= _MIN_PROFILE or tag == "proto":
                    prof.shapes[f"{tag}{_SEP}{key}"] = _shape_stats(v.logs[idx], v.state[idx])
        return prof

    def absorb(self, v: _View) -> None:
        """Add the hosts, services and edges of ``v`` (shapes are left as fitted)."""
        ok = v.known_identity
        self.hosts.update(v.src[ok].tolist())
        self.hosts.update(v.dst[ok].tolist())
        self.services.update(v.service_keys()[ok].tolist())
        self.edges.update(v.edge_keys()[ok].tolist())

    def deviation(self, v: _View) -> np.ndarray:
        """Per flow: the largest robust z of its shape features against its most specific profile."""
        n = v.src.size
        out = np.full(n, _NO_PROFILE)
        chosen = np.full(n, None, dtype=object)
        for tag, keys in (("proto", v.proto), ("port", _keys(v.port, v.proto)), ("svc", v.service_keys())):
            names = np.asarray([f"{tag}{_SEP}{k}" for k in keys.tolist()], dtype=object)
            hit = np.isin(names, list(self.shapes)) if self.shapes else np.zeros(n, dtype=bool)
            chosen[hit] = names[hit]
        for name in pd.unique(chosen[chosen != None]):  # noqa: E711 (element-wise comparison)
            idx = np.flatnonzero(chosen == name)
            st = self.shapes[str(name)]
            z = np.abs(v.logs[idx] - st.med) / st.scale
            z = np.where(np.isnan(z), 0.0, z).max(axis=1)
            z = z + np.where(np.isin(v.state[idx].astype(str), list(st.states)), 0.0, _STATE_PENALTY)
            out[idx] = z
        return out

    def novelty(self, v: _View) -> tuple[np.ndarray, np.ndarray]:
        """Return (code, new_pair) per flow: a code into ``_KINDS`` (fan-out aside) and whether the flow
        is on an edge never seen (the candidates of a fan-out)."""
        ok = v.known_identity
        src_known = np.isin(v.src, list(self.hosts))
        dst_known = np.isin(v.dst, list(self.hosts))
        svc_known = np.isin(v.service_keys(), list(self.services))
        edge_known = np.isin(v.edge_keys(), list(self.edges))
        ephemeral = np.asarray([int(p) >= _EPHEMERAL for p in v.port.tolist()], dtype=bool)
        code = np.zeros(v.src.size, dtype=np.int64)
        code[ok & ~edge_known] = 1
        code[ok & ~edge_known & dst_known & ~svc_known & ~ephemeral] = 2
        code[ok & ~src_known] = 3
        return code, ok & ~edge_known

    def to_dict(self) -> dict[str, Any]:
        return {"hosts": sorted(self.hosts), "services": sorted(self.services), "edges": sorted(self.edges),
                "shapes": {k: s.to_dict() for k, s in sorted(self.shapes.items())}}  # fmt: skip

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> _Profile:
        return cls(hosts={str(h) for h in doc["hosts"]}, services={str(s) for s in doc["services"]},
                   edges={str(e) for e in doc["edges"]},
                   shapes={str(k): _ShapeStats.from_dict(s) for k, s in dict(doc["shapes"]).items()})  # fmt: skip


def _fanout(v: _View, new_pair: np.ndarray, window_s: float) -> np.ndarray:
    """Distinct new (dst, port) per source host and time window, for each flow on a new edge."""
    out = np.zeros(v.src.size, dtype=np.int64)
    new_pair = new_pair & np.isfinite(v.ts)  # without a time there is no window to count in
    if not new_pair.any():
        return out
    frame = pd.DataFrame({"src": v.src[new_pair], "win": np.floor(v.ts[new_pair] / window_s),
                          "peer": _keys(v.dst[new_pair], v.port[new_pair])})  # fmt: skip
    counts = frame.groupby(["src", "win"])["peer"].transform("nunique").to_numpy()
    out[new_pair] = counts
    return out


def _knots(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from trustmesh.detect._ensemble import _reference_knots

    return _reference_knots(values)


def _squash(z: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, z / (1.0 + z))


def _fisher(mapped: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fisher's combination ``-2 sum ln(1 - p_i)`` of benign percentiles (Fisher 1932, section 21.1)."""
    tails = [np.clip(1.0 - np.asarray(p, dtype=np.float64), 1e-9, 1.0) for p in mapped.values()]
    return cast(np.ndarray, -2.0 * np.sum(np.log(np.column_stack(tails)), axis=1))


@register
class SiteBaselineDetector(BaseDetector):
    """Profiles + anomaly model of one site's benign flows, combined with an optional base model."""

    name = "site-baseline"
    supervised = False

    def __init__(
        self,
        *,
        seed: int = 0,
        multiclass: bool = False,
        target_fpr: float = 0.01,
        folds: int = 3,
        fanout_window_s: float = 60.0,
        n_estimators: int = 100,
        combine: str = "fisher",
        threshold: float = 0.5,
    ) -> None:
        super().__init__(seed=seed, threshold=threshold, multiclass=False)
        if combine not in ("fisher", "max"):
            raise ValueError(f"combine must be 'fisher' or 'max', got {combine!r}")
        self.combine = combine
        if not 0.0 < target_fpr < 0.5:
            raise ValueError(f"target_fpr must be in (0, 0.5), got {target_fpr}")
        if not 2 <= folds <= 10:
            raise ValueError(f"folds must be in [2, 10], got {folds}")
        if not fanout_window_s > 0:
            raise ValueError(f"fanout_window_s must be > 0, got {fanout_window_s}")
        if n_estimators < 1:
            raise ValueError(f"n_estimators must be >= 1, got {n_estimators}")
        self.target_fpr = float(target_fpr)
        self.folds = int(folds)
        self.fanout_window_s = float(fanout_window_s)
        self.n_estimators = int(n_estimators)
        #: The base detector to combine with; set before :meth:`fit` (``fit_site_baseline`` does).
        self.base: BaseDetector | None = None
        self.base_model_id: str | None = None
        self.behaviour_config: dict[str, Any] | None = None
        self.anomaly: BaseDetector | None = None
        self.profile = _Profile()
        self.fanout_limit = _MIN_FANOUT
        self.kind_rates = np.ones(len(_KINDS))
        self.reference: ScoreReference | None = None
        self._knots: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._classes = (BENIGN, *_REASONS)

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments."""
        return {"seed": self.seed, "target_fpr": self.target_fpr, "folds": self.folds,
                "fanout_window_s": self.fanout_window_s, "n_estimators": self.n_estimators,
                "combine": self.combine}  # fmt: skip

    # -- fitting -----------------------------------------------------------------------------------
    def _folds(self, X: pd.DataFrame, benign: np.ndarray) -> list[np.ndarray]:
        """Split the benign rows into ``folds`` contiguous time blocks (random blocks without times)."""
        ts = _col(X, "ts", True)
        if benign.size and np.isfinite(ts[benign]).all() and np.ptp(ts[benign]) > 0:
            order = benign[np.argsort(ts[benign], kind="stable")]
        else:
            order = np.random.default_rng(self.seed).permutation(benign)
        return [np.sort(part) for part in np.array_split(order, self.folds)]

    def _fit_parts(self, rows: pd.DataFrame) -> None:
        """Fit the profiles, the anomaly model and the benign percentile maps on ``rows``."""
        from trustmesh.detect._iforest import IsolationForestDetector

        anom_cols = [c for c in ANOMALY_FEATURES if c in rows.columns]
        self.anomaly = IsolationForestDetector(seed=self.seed, n_estimators=self.n_estimators).fit(rows[anom_cols])
        v = _View.of(rows)
        self.profile = _Profile.fit(v)
        raw = self._raw(rows, v)
        self._knots = {k: _knots(val) for k, val in raw.items()}
        if self.combine == "fisher":
            mapped = {k: np.interp(raw[k], *self._knots[k]) for k in raw}
            self._knots["combined"] = _knots(_squash(_fisher(mapped) / (2 * len(raw))))

    def fit(self, X: pd.DataFrame, y: np.ndarray | pd.Series | None = None) -> SiteBaselineDetector:
        """Learn the profiles and models on the benign rows of ``X``; calibrate by cross-fitting in time.

        The benign rows are cut into ``folds`` consecutive time blocks; each block is scored by a
        baseline fitted on the other blocks. Those out-of-fold scores give the site's novelty rates,
        the fan-out limit and the threshold (at most ``target_fpr`` of them flagged), so every flow of
        the window takes part in the calibration without being scored by a model that saw it. The
        final profiles and models are then fitted on every benign row.
        """
        from trustmesh.flows._features import FeatureEncoder

        if not isinstance(X, pd.DataFrame) or len(X) == 0:
            raise InputError("cannot fit a site baseline on an empty table")
        is_attack, _, _ = prepare_labels(y, len(X), multiclass=False)
        benign = np.flatnonzero(~is_attack)
        if benign.size < 100:
            raise InputError(f"too little benign traffic for a baseline: {benign.size} flows (need at least 100)")
        base_cols = set(self.base.feature_names) if self.base is not None else set()
        present = {str(c) for c in X.columns}
        wanted = (set(_IDENTITY) | set(ANOMALY_FEATURES) | base_cols) & present
        if not set(ANOMALY_FEATURES) & present:
            raise InputError(f"the table has none of the flow features a baseline needs ({', '.join(ANOMALY_FEATURES)})")
        order = [c for c in X.columns if str(c) in wanted]
        # Addresses and times are read straight from the frame: the encoder only names them (as numeric
        # columns, so no address vocabulary ends up in the artifact's encoder or the manifest).
        named = X[order].assign(**{c: np.zeros(len(X)) for c in _IDENTITY if c in wanted})
        self.encoder = FeatureEncoder.fit(named)
        folds = self._folds(X, benign)
        parts = []  # per fold: (kind codes without fan-out, new-pair fan-out counts, combined percentile)
        for j, held in enumerate(folds):
            rest = np.sort(np.concatenate([f for i, f in enumerate(folds) if i != j]))
            self._fit_parts(X.iloc[rest])
            rows = X.iloc[held]
            v = _View.of(rows)
            code, new_pair = self.profile.novelty(v)
            parts.append((code, _fanout(v, new_pair, self.fanout_window_s), self._percentile(rows, v)[0]))
        # Fan-out: how many new peers one host reached per window in traffic its baseline had not seen.
        seen = max(int(fan.max(initial=0)) for _, fan, _ in parts)
        self.fanout_limit = max(_MIN_FANOUT, 2 * seen + 1)
        kinds = np.concatenate([np.where(fan >= self.fanout_limit, len(_KINDS) - 1, code) for code, fan, _ in parts])
        p_oof = np.concatenate([p for _, _, p in parts])
        # How often the site's own benign flows show each kind of novelty to a baseline that had not seen
        # them. A kind that never showed (typically a new host, a fan-out) gets rate 0: its flows score
        # 1.0 and always alert -- flagging it costs nothing on the traffic the threshold is calibrated on.
        counts = np.bincount(kinds, minlength=len(_KINDS)).astype(np.float64)
        self.kind_rates = counts / kinds.size
        oof = np.clip(1.0 - self.kind_rates[kinds] * (1.0 - p_oof), 0.0, 1.0)
        self.threshold = calibrate_threshold(oof, self.target_fpr)
        flagged = oof >= self.threshold
        self._fit_parts(X.iloc[benign])
        self.calibration = {
            "target_fpr": self.target_fpr,
            "split": "time" if np.isfinite(_col(X, "ts", True)[benign]).all() else "random",
            "folds": self.folds,
            "n_calibration": int(oof.size),
            "holdout_fpr": float(flagged.mean()),
            "fanout_limit": self.fanout_limit,
            "novelty_rates": {k: round(float(r), 6) for k, r in zip(_KINDS, self.kind_rates, strict=True)},
        }
        # The drift reference: the final model's scores over the whole window (what the same traffic
        # scores from now on).
        self.reference = ScoreReference.from_scores(self._score_parts(X.iloc[benign])[0])
        return self

    # -- scoring -----------------------------------------------------------------------------------
    def _raw(self, X: pd.DataFrame, v: _View) -> dict[str, np.ndarray]:
        assert self.anomaly is not None
        out = {
            "shape": _squash(self.profile.deviation(v)),
            "anomaly": self.anomaly.score(X, fill_missing=True),
        }
        if self.base is not None:
            out["base"] = self.base.score(X, fill_missing=True)
        return out

    def _percentile(self, X: pd.DataFrame, v: _View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (p, base, unusual): the combined benign percentile and its base / shape parts."""
        raw = self._raw(X, v)
        mapped = {k: np.interp(raw[k], *self._knots[k]) for k in raw}
        base = mapped.get("base", np.zeros(len(X)))
        unusual = np.maximum(mapped["shape"], mapped["anomaly"])
        if self.combine == "fisher":
            p = np.interp(_squash(_fisher(mapped) / (2 * len(mapped))), *self._knots["combined"])
        else:
            p = np.maximum(base, unusual)
        return p, base, unusual

    def _kinds(self, v: _View) -> np.ndarray:
        code, new_pair = self.profile.novelty(v)
        fan = _fanout(v, new_pair, self.fanout_window_s) >= self.fanout_limit
        return np.where(fan, len(_KINDS) - 1, code)

    def _score_parts(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Return (score, index into ``_REASONS``) per row.

        ``p`` is the flow's largest benign percentile over shape, anomaly and base; ``r`` the site's
        benign rate of the flow's novelty kind. The score ``1 - r (1 - p)`` estimates one minus the
        share of benign flows that are both this novel and this unusual (treating the two as
        independent), so a known edge needs an extreme shape to alert while a new host alerts at once.
        """
        if self.anomaly is None or not self._knots:
            raise ModelError("site-baseline detector is not fitted; call fit() first")
        v = _View.of(X)
        kinds = self._kinds(v)
        p, base, unusual = self._percentile(X, v)
        score = np.clip(1.0 - self.kind_rates[kinds] * (1.0 - p), 0.0, 1.0)
        reason = np.where(kinds > 0, kinds - 1, np.where(base >= unusual, len(_KINDS) - 1, len(_KINDS)))
        return score.astype(np.float64), reason

    def score(self, X: pd.DataFrame, *, fill_missing: bool = False) -> np.ndarray:
        """Return float64 scores in [0, 1]."""
        enc = self._require_fitted()
        if not isinstance(X, pd.DataFrame):
            raise InputError(f"X must be a pandas DataFrame, got {type(X).__name__}")
        enc.transform(X.iloc[:0], fill_missing=fill_missing)  # the same missing-column check as elsewhere
        if len(X) == 0:
            return np.zeros(0, dtype=np.float64)
        return self._score_parts(X)[0]

    def score_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Score an encoded matrix (categorical codes are decoded back to their values)."""
        return self.score(self._decode(matrix))

    def _decode(self, matrix: np.ndarray) -> pd.DataFrame:
        enc = self._require_fitted()
        frame = pd.DataFrame(matrix, columns=list(enc.columns))
        for col, vocab in enc.vocab.items():
            codes = frame[col].to_numpy()
            names = np.asarray(("",) + tuple(vocab), dtype=object)
            valid = np.isfinite(codes)
            decoded = np.full(codes.shape, None, dtype=object)
            decoded[valid] = names[codes[valid].astype(np.int64)]
            frame[col] = decoded
        return frame

    def explain(self, X: pd.DataFrame) -> np.ndarray:
        """Return the reason each row scores as it does (``"benign"`` below the threshold)."""
        self._require_fitted().transform(X.iloc[:0], fill_missing=True)
        if len(X) == 0:
            return np.zeros(0, dtype=object)
        score, reason = self._score_parts(X)
        names = np.asarray(_REASONS, dtype=object)[reason]
        return np.where(score >= self.threshold, names, BENIGN)

    def predict_class(self, X: pd.DataFrame) -> np.ndarray:
        """Return why each flagged row is flagged (one of the classes) and ``"benign"`` otherwise."""
        return self.explain(X)

    def predict_proba_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """One-hot of the winning reason, scaled by the score (benign gets ``1 - score``)."""
        frame = self._decode(matrix)
        score, reason = self._score_parts(frame)
        out = np.zeros((len(frame), len(self._classes)))
        out[:, 0] = 1.0 - score
        out[np.arange(len(frame)), 1 + reason] = score
        return out

    # -- persistence -------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        assert self.anomaly is not None and self.reference is not None
        blobs: dict[str, bytes] = {}
        with tempfile.TemporaryDirectory() as tmp:
            parts = {"anomaly": self.anomaly, **({"base": self.base} if self.base is not None else {})}
            for tag, det in parts.items():
                target = Path(tmp) / tag
                det.save(target)
                blobs[f"{tag}.zip"] = target.read_bytes()
        state = {
            "profile": self.profile.to_dict(),
            "knots": {k: {"x": x.tolist(), "y": y.tolist()} for k, (x, y) in sorted(self._knots.items())},
            "fanout_limit": self.fanout_limit,
            "kind_rates": self.kind_rates.tolist(),
            "reference": self.reference.to_dict(),
            "base_model_id": self.base_model_id,
            "behaviour_config": self.behaviour_config,
        }
        return state, blobs

    def _restore(self, state: dict[str, Any], blobs: dict[str, bytes]) -> None:
        parts: dict[str, BaseDetector] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for tag in ("anomaly", "base"):
                if f"{tag}.zip" not in blobs:
                    continue
                target = Path(tmp) / tag
                target.write_bytes(blobs[f"{tag}.zip"])
                meta, inner = read_container(target)
                if tag == "anomaly" and meta.get("kind") != "iforest":
                    raise ModelError(f"site-baseline anomaly component is {meta.get('kind')!r}, expected 'iforest'")
                parts[tag] = BaseDetector._from_parts(meta, inner, f"site-baseline {tag} component")
        if "anomaly" not in parts:
            raise ModelError("site-baseline artifact has no anomaly component")
        self.anomaly, self.base = parts["anomaly"], parts.get("base")
        self.profile = _Profile.from_dict(state["profile"])
        knots = dict(state["knots"])
        expected = ({"shape", "anomaly"} | ({"base"} if self.base is not None else set())
                    | ({"combined"} if self.combine == "fisher" else set()))
        if set(knots) != expected:
            raise ModelError(f"site-baseline reference maps must be {sorted(expected)}, got {sorted(knots)}")
        self._knots = {}
        for k, doc in knots.items():
            x = np.asarray(doc["x"], dtype=np.float64)
            y = np.asarray(doc["y"], dtype=np.float64)
            if x.shape != y.shape or x.size < 2 or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                raise ModelError("site-baseline reference maps must be monotone knot lists")
            self._knots[k] = (x, y)
        self.fanout_limit = int(state["fanout_limit"])
        if self.fanout_limit < 1:
            raise ModelError("site-baseline fanout_limit must be >= 1")
        rates = np.asarray(state["kind_rates"], dtype=np.float64)
        if rates.shape != (len(_KINDS),) or np.any(~np.isfinite(rates)) or np.any((rates < 0) | (rates > 1)):
            raise ModelError("site-baseline novelty rates must be one value in [0, 1] per kind")
        self.kind_rates = rates
        self.reference = ScoreReference.from_dict(state["reference"])
        base_id = state.get("base_model_id")
        self.base_model_id = None if base_id is None else str(base_id)
        cfg = state.get("behaviour_config")
        if cfg is not None and not isinstance(cfg, dict):
            raise ModelError("site-baseline behaviour_config must be an object")
        self.behaviour_config = cfg


# ---------------------------------------------------------------------------------------------- recipe


@dataclass(frozen=True, slots=True)
class BaselineReport:
    """What a baseline was learned from (recorded in the model manifest's ``training``)."""

    n_flows: int
    n_used: int
    n_excluded: int
    hosts: tuple[str, ...]
    start: float | None
    end: float | None
    duration_s: float
    threshold: float
    target_fpr: float
    holdout_fpr: float
    n_holdout: int
    attacks: tuple[dict[str, Any], ...]
    behaviour_checked: bool
    data_digest: str

    @property
    def warnings(self) -> list[str]:
        """One line per attack the behaviour detectors recognised in the baseline window."""
        return [f"the baseline traffic contains a {a['kind']} ({a.get('technique_id') or '-'}) from {a['host']}; "
                f"{a['flows']} flow(s) were left out of the baseline"
                + ("" if a.get("host_left_out", True) else
                   " (only the attack's: the host took part in the site's traffic throughout the window)")
                for a in self.attacks]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form."""
        return {
            "n_flows": self.n_flows, "n_used": self.n_used, "n_excluded": self.n_excluded,
            "hosts": list(self.hosts), "n_hosts": len(self.hosts), "start": self.start, "end": self.end,
            "duration_s": round(self.duration_s, 3), "threshold": self.threshold, "target_fpr": self.target_fpr,
            "holdout_fpr": self.holdout_fpr, "n_holdout": self.n_holdout, "attacks": [dict(a) for a in self.attacks],
            "warnings": self.warnings, "behaviour_checked": self.behaviour_checked, "data_digest": self.data_digest,
        }  # fmt: skip


def flows_digest(flows: pd.DataFrame) -> str:
    """Return the sha256 of a flow window's identifying columns (what the baseline was learned from)."""
    import hashlib

    cols = [c for c in ("ts", "uid", "src_ip", "src_port", "dst_ip", "dst_port", "proto") if c in flows.columns]
    hashed = pd.util.hash_pandas_object(flows[cols], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def baseline_attacks(flows: pd.DataFrame, config: Mapping[str, Any] | None = None) -> list[Any] | None:
    """Run the behaviour detectors over ``flows``; None when they are not available in this build."""
    try:
        behaviour = importlib.import_module("trustmesh.detect._behaviour")
    except ImportError:
        log.warning("behaviour detectors are not available; the baseline window is not checked for attacks")
        return None
    cfg = None if config is None else behaviour.BehaviourConfig.from_dict(dict(config))
    return list(behaviour.BehaviourEngine(cfg).detect(flows))


def fit_site_baseline(
    flows: pd.DataFrame,
    *,
    base: BaseDetector | None = None,
    base_model_id: str | None = None,
    duration_s: float | None = None,
    target_fpr: float = 0.01,
    seed: int = 0,
    min_flows: int = 200,
    check_attacks: bool = True,
) -> tuple[SiteBaselineDetector, BaselineReport]:
    """Learn a site baseline from canonical ``flows`` (the first ``duration_s`` seconds when given).

    Hosts the behaviour detectors see attacking inside the window are reported and their flows left
    out. Raises :class:`InputError` for an empty window or one with fewer than ``min_flows`` usable
    flows.
    """
    if duration_s is not None and not duration_s > 0:
        raise InputError(f"duration must be > 0 seconds, got {duration_s}")
    missing = [c for c in ("ts", "src_ip", "dst_ip", "dst_port", "proto") if c not in flows.columns]
    if missing:
        raise InputError(f"baseline flows lack column(s) {', '.join(missing)} (give canonical flows)")
    if len(flows) == 0:
        raise InputError("the baseline input has no flows")
    frame = flows.reset_index(drop=True)
    ts = pd.to_numeric(frame["ts"], errors="coerce").to_numpy(dtype=np.float64)
    if duration_s is not None and np.isfinite(ts).any():
        keep = ts < np.nanmin(ts) + duration_s
        frame, ts = frame[keep].reset_index(drop=True), ts[keep]
    attacks: list[dict[str, Any]] = []
    excluded = np.zeros(len(frame), dtype=bool)
    verdicts = baseline_attacks(frame) if check_attacks else None
    src = _ip(frame["src_ip"])
    uids = frame["uid"].astype(str).to_numpy() if "uid" in frame.columns else np.full(len(frame), "")
    dst = _ip(frame["dst_ip"])
    port = pd.to_numeric(frame["dst_port"], errors="coerce").fillna(-1).to_numpy()
    finite_ts = ts[np.isfinite(ts)]
    span = float(np.ptp(finite_ts)) if finite_ts.size else 0.0
    for verdict in verdicts or []:
        host = str(verdict.host)
        # the verdict's evidence, plus the actor's other flows to its victims' attacked ports in its time span
        ports = list(verdict.ports) if verdict.ports else None
        to_victims = (src == host) & np.isin(dst, list(verdict.victims)) & (
            np.isin(port, ports) if ports is not None else True)
        evidence = np.isin(uids, list(map(str, verdict.flow_uids))) | (
            to_victims & (ts >= verdict.first_seen - 1.0) & (ts <= verdict.last_seen + 1.0))
        mine = (src == host) | (dst == host)
        rest = ts[mine & ~evidence & np.isfinite(ts)]
        # A host that took part in the site's benign traffic all along (before, around and after the
        # verdict: an inside host that is compromised, or one whose legitimate habit the detectors
        # mistake for an attack) keeps that part; a host that appears only with its attack is left out.
        established = span > 0 and rest.size >= 3 and float(np.ptp(rest)) >= 0.5 * span
        hit = evidence | (mine if not established else np.zeros_like(mine))
        excluded |= hit
        attacks.append({"kind": str(verdict.kind), "host": host, "technique_id": verdict.technique_id,
                        "flows": int(hit.sum()), "confidence": float(verdict.confidence),
                        "host_left_out": not established})  # fmt: skip
    for a in attacks:
        log.warning("baseline window: %s (%s) from %s; %s left out", a["kind"], a["technique_id"], a["host"],
                    "its flows are" if a["host_left_out"] else "the attack's flows are")  # fmt: skip
    if "label" in frame.columns:  # labelled input: known attack rows never teach the baseline
        excluded |= frame["label"].astype(str).str.lower().isin(["attack", "malicious", "1"]).to_numpy()
    used = frame[~excluded].reset_index(drop=True)
    if len(used) < min_flows:
        raise InputError(f"too little traffic for a baseline: {len(used)} usable flow(s) in the window "
                         f"(need at least {min_flows}; capture longer)")  # fmt: skip
    used_ts = ts[~excluded]
    det = SiteBaselineDetector(seed=seed, target_fpr=target_fpr)
    det.base, det.base_model_id = base, base_model_id
    det.fit(used)
    finite = used_ts[np.isfinite(used_ts)]
    v = _View.of(used)
    hosts = sorted(set(v.src[v.src != ""].tolist()) | set(v.dst[v.dst != ""].tolist()))
    report = BaselineReport(
        n_flows=int(len(frame)), n_used=int(len(used)), n_excluded=int(excluded.sum()), hosts=tuple(hosts),
        start=float(finite.min()) if finite.size else None, end=float(finite.max()) if finite.size else None,
        duration_s=float(np.ptp(finite)) if finite.size else 0.0, threshold=det.threshold, target_fpr=target_fpr,
        holdout_fpr=float(det.calibration["holdout_fpr"]), n_holdout=int(det.calibration["n_calibration"]),
        attacks=tuple(attacks), behaviour_checked=verdicts is not None, data_digest=flows_digest(frame),
    )  # fmt: skip
    return det, report
