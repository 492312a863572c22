"""Robustness certificates: certified accuracy against an L-infinity budget, in the flow schema's space.

The perturbation space is the one the empirical attacks use (``evaluate/_sec_adversarial.py``):
numeric flow features move in ``u = minmax(signed_log(x))`` units, ``u`` stays in [0, 1]; categorical
fields are fixed. For each row and budget ``eps`` the certified region is the box of raw values
``[unscale(max(0, u0 - eps)), unscale(min(1, u0 + eps))]`` per numeric feature, widened to the
rounded ends for count features (non-negative integers at fit time: rounded as the attack rounds,
clipped at 0) and to the row's own raw value, so every point the attack can reach after its projection
(rounding counts, clipping at 0) lies inside it. A row is *certified* when the model's decision on
every point of that box equals the row's true label.

* GBDT (LightGBM, binary): exact, with ``dtai-veritas`` (L. Devos, W. Meert, J. Davis, "Versatile
  Verification of Tree Ensembles", ICML 2021): the minimum (attack rows) or maximum (benign rows) of
  the raw ensemble output over the box, searched to optimality. LightGBM's categorical ``==`` splits
  are not supported by veritas's converter; since categorical fields are fixed, they are resolved
  while the ensemble is converted, once per distinct combination of categorical values.
* MLP: sound (not complete) CROWN bounds (:mod:`._bounds`) on the class-logit differences
  ``l_k - l_benign``; the decision ``1 - P(benign) >= t`` is certified from them.

Certified accuracy is a lower bound on the accuracy under *any* attack inside the budget, so it
can never exceed what an empirical attack leaves (certified rows must resist every attack).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trustmesh.errors import InputError, ModelError

__all__ = [
    "Certificate",
    "certify",
    "schema_boxes",
]

_FORMAT = "trustmesh.robustness-certificate/1"
_VERITAS_ROW_SECONDS = 5.0  # a row whose exact search does not finish in this time counts as not certified


@dataclass(frozen=True, slots=True)
class Certificate:
    """Certified accuracy of one model against each budget over one sample (valid once built)."""

    model_id: str
    artifact_sha256: str
    kind: str
    method: str
    epsilons: tuple[float, ...]
    rows: int
    attack_rows: int
    clean_correct: tuple[bool, ...]
    certified: tuple[tuple[bool, ...], ...]  # [epsilon][row]
    seconds: tuple[float, ...]
    sample: dict[str, Any] = field(default_factory=dict)
    unfinished: tuple[int, ...] = ()  # per epsilon: rows whose exact search timed out (not certified)

    def certified_accuracy(self) -> list[float]:
        """Return the certified accuracy per budget."""
        return [float(np.mean(c)) if c else 0.0 for c in self.certified]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON document (what goes into a passport)."""
        labels = np.asarray(self.sample.get("is_attack", []), dtype=bool)
        results = []
        for k, eps in enumerate(self.epsilons):
            cert = np.asarray(self.certified[k], dtype=bool)
            det = float(cert[labels].mean()) if labels.size and labels.any() else None
            results.append({
                "epsilon": eps,
                "certified_accuracy": float(cert.mean()) if cert.size else 0.0,
                "certified_attack_detection": det,
                "certified_rows": [int(i) for i in np.flatnonzero(cert)],
                "unfinished_rows": self.unfinished[k] if self.unfinished else 0,
                "seconds": round(self.seconds[k], 4),
            })
        return {
            "format": _FORMAT,
            "model_id": self.model_id,
            "artifact_sha256": self.artifact_sha256,
            "kind": self.kind,
            "method": self.method,
            "space": "L-inf in u = minmax(signed_log(x)) units of numeric features, u in [0, 1]; categorical "
                     "fields fixed; count features rounded as the attack rounds them (non-negative integers)",
            "rows": self.rows,
            "attack_rows": self.attack_rows,
            "clean_accuracy": float(np.mean(self.clean_correct)) if self.clean_correct else 0.0,
            "sample": {k: v for k, v in self.sample.items() if k != "is_attack"},
            "results": results,
        }


def schema_boxes(space: Any, matrix: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Return raw-feature boxes ``(lo, hi)`` (rows x columns) of the budget ``eps`` around each row.

    ``space`` is a :class:`~trustmesh.detect.snn.SpikeEncoding`; numeric columns move (see the module
    docstring), every other column keeps the row's value (NaN numeric values take the encoding's fill,
    as the attack does).
    """
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"epsilon must be a finite number >= 0, got {eps}")
    numeric = np.asarray(space.numeric, dtype=np.int64)
    integer = np.asarray(space.integer, dtype=bool)
    raw = np.asarray(matrix, dtype=np.float64)[:, numeric]
    raw = np.where(np.isnan(raw), np.asarray(space.fill), raw)
    u0 = space.scale_numeric(raw).astype(np.float64)
    lo_raw = space.unscale_numeric(np.clip(u0 - eps, 0.0, 1.0))
    hi_raw = space.unscale_numeric(np.clip(u0 + eps, 0.0, 1.0))
    # the attack starts from the row projected into [0, 1]; include the row itself as well
    lo_raw = np.minimum(np.minimum(lo_raw, hi_raw), raw)
    hi_raw = np.maximum(np.maximum(lo_raw, hi_raw), raw)
    # float round trips through log/exp can move a value by an ulp: widen by a relative 1e-9
    lo_raw = lo_raw - 1e-9 * (1 + np.abs(lo_raw))
    hi_raw = hi_raw + 1e-9 * (1 + np.abs(hi_raw))
    # the attack rounds counts (np.round, clipped at 0); rounding is monotone, so the rounded ends bound it
    lo_raw[:, integer] = np.maximum(np.round(lo_raw[:, integer]), 0.0)
    hi_raw[:, integer] = np.maximum(np.round(hi_raw[:, integer]), 0.0)
    lo = np.array(matrix, dtype=np.float64, copy=True)
    hi = lo.copy()
    lo[:, numeric] = lo_raw
    hi[:, numeric] = hi_raw
    return lo, hi


def _logit(p: float) -> float:
    p = min(max(p, 1e-300), 1 - 1e-16)
    return math.log(p / (1 - p))


# -- GBDT: exact (veritas) -----------------------------------------------------------------------

def _veritas() -> Any:
    try:
        import veritas
    except ImportError as exc:
        from trustmesh.errors import MissingDependencyError

        raise MissingDependencyError("dtai-veritas", "eval") from exc
    return veritas


def _goes_left(js: dict[str, Any], value: float) -> bool:
    """Return LightGBM's routing of a fixed ``value`` at split ``js`` (NaN and categorical rules)."""
    missing = js.get("missing_type", "None")
    if js["decision_type"] == "==":
        if not math.isfinite(value) or value < 0 or int(value) != value:
            return False  # missing or negative categories go right
        return int(value) in {int(c) for c in str(js["threshold"]).split("||")}
    if math.isnan(value):
        if missing == "NaN":
            return bool(js.get("default_left", True))
        value = 0.0
    if missing == "Zero" and value == 0.0:
        return bool(js.get("default_left", True))
    return bool(value <= float(js["threshold"]))


def _addtree(veritas: Any, dump: dict[str, Any], fixed: dict[int, float]) -> Any:
    """Convert a LightGBM dump to a veritas AddTree, resolving every split on a ``fixed`` feature.

    Fixed (categorical) fields never move, so their splits (LightGBM's categorical ``==`` splits,
    which veritas's converter rejects, included) are decided here with LightGBM's own rules.
    """
    at = veritas.AddTree(1, veritas.AddTreeType.REGR)
    for info in dump["tree_info"]:
        tree = at.add_tree()
        stack = [(tree.root(), info["tree_structure"])]
        while stack:
            node, js = stack.pop()
            while "split_feature" in js and int(js["split_feature"]) in fixed:
                js = js["left_child"] if _goes_left(js, fixed[int(js["split_feature"])]) else js["right_child"]
            if "split_feature" not in js:
                tree.set_leaf_value(node, 0, float(js["leaf_value"]))
                continue
            if js["decision_type"] != "<=":
                raise ModelError(f"gbdt split type {js['decision_type']!r} on a numeric feature is not supported")
            # LightGBM sends x <= t left; veritas sends x < s left: s is the next double above t
            tree.split(node, int(js["split_feature"]), float(np.nextafter(float(js["threshold"]), math.inf)))
            stack.append((tree.right(node), js["right_child"]))
            stack.append((tree.left(node), js["left_child"]))
    return at


def _extreme(veritas: Any, at: Any, box: list[Any], minimise: bool) -> tuple[float, bool]:
    """Return (exact min or max of the ensemble over the box, finished)."""
    heur = veritas.HeuristicType.MIN_OUTPUT if minimise else veritas.HeuristicType.MAX_OUTPUT
    config = veritas.Config(heur)
    config.stop_when_optimal = True
    search = config.get_search(at, box)
    t0 = time.perf_counter()
    while not search.is_optimal():
        if search.steps(100) == veritas.StopReason.NO_MORE_OPEN or time.perf_counter() - t0 > _VERITAS_ROW_SECONDS:
            break
    if search.num_solutions() == 0:
        return (math.inf if minimise else -math.inf), search.is_optimal()
    return float(search.get_solution(0).output), bool(search.is_optimal())


def _certify_gbdt(det: Any, lo: np.ndarray, hi: np.ndarray, is_attack: np.ndarray, matrix: np.ndarray,
                  cat_cols: list[int], cache: dict[tuple[str, ...], Any]) -> tuple[np.ndarray, int]:
    veritas = _veritas()
    if len(det.classes_) != 2:
        raise InputError("exact certification covers binary GBDT models; this one is multi-class")
    dump = det.booster.dump_model()
    cut = _logit(float(det.threshold))
    out = np.zeros(len(lo), dtype=bool)
    unfinished = 0
    fixed_set = set(cat_cols)
    for i in range(len(lo)):
        key = tuple(repr(float(matrix[i, j])) for j in cat_cols)
        if key not in cache:
            cache[key] = _addtree(veritas, dump, {j: float(matrix[i, j]) for j in cat_cols})
        at = cache[key]
        # one interval per feature id: numeric features span their box; fixed fields were resolved
        # while converting (text columns with many values are ordinal "<=" splits in LightGBM)
        full = [veritas.Interval(float(lo[i, j]), float(np.nextafter(hi[i, j], math.inf)))
                if j not in fixed_set else veritas.Interval(-1e300, 1e300) for j in range(lo.shape[1])]
        value, done = _extreme(veritas, at, full, minimise=bool(is_attack[i]))
        if not done:
            unfinished += 1
            continue
        out[i] = value >= cut + 1e-12 if is_attack[i] else value < cut - 1e-12
    return out, unfinished


# -- MLP: CROWN ----------------------------------------------------------------------------------

def _certify_mlp(det: Any, lo: np.ndarray, hi: np.ndarray, is_attack: np.ndarray) -> np.ndarray:
    from trustmesh.assurance._bounds import crown_bounds, linear_layers

    pre = det.pre
    z_lo = pre.transform(lo.astype(np.float32)).astype(np.float64)
    z_hi = pre.transform(hi.astype(np.float32)).astype(np.float64)
    # float32 transform: widen by its rounding (signed log and z-score are monotone increasing)
    z_lo, z_hi = np.minimum(z_lo, z_hi) - 1e-5 * (1 + np.abs(z_lo)), np.maximum(z_lo, z_hi) + 1e-5 * (1 + np.abs(z_hi))
    layers = linear_layers(det.net)
    n_out = layers[-1][0].shape[0]
    spec = np.zeros((n_out - 1, n_out))
    spec[:, 0] = -1.0
    spec[np.arange(n_out - 1), np.arange(1, n_out)] = 1.0
    low, up = crown_bounds(layers, z_lo, z_hi, spec)
    t = float(det.threshold)
    odds = t / (1 - t) if t < 1 else math.inf  # 1 - P(benign) >= t  <=>  sum_k exp(l_k - l_0) >= t / (1 - t)
    with np.errstate(over="ignore"):
        least = np.exp(np.clip(low, -700, 700)).sum(axis=1)
        most = np.exp(np.clip(up, -700, 700)).sum(axis=1)
    return np.asarray(np.where(is_attack, least >= odds * (1 + 1e-9), most < odds * (1 - 1e-9)), dtype=bool)


def certify(det: Any, manifest: Any, matrix: np.ndarray, is_attack: np.ndarray, epsilons: list[float],
            space: Any, *, sample: dict[str, Any] | None = None) -> Certificate:
    """Certify ``det`` on the encoded rows ``matrix`` (labels ``is_attack``) for each budget.

    ``space`` is the :class:`~trustmesh.detect.snn.SpikeEncoding` that defines the budget's units (fit
    it on the training matrix, as the empirical attacks do).
    """
    if det.name not in ("gbdt", "mlp"):
        raise InputError(f"certificates cover gbdt (exact) and mlp (CROWN) models, not {det.name!r}")
    if not epsilons or any(not (math.isfinite(e) and e >= 0) for e in epsilons):
        raise InputError(f"--epsilons must be finite numbers >= 0, got {epsilons}")
    matrix = np.asarray(matrix, dtype=np.float64)
    y = np.asarray(is_attack, dtype=bool)
    if len(matrix) == 0 or len(matrix) != len(y):
        raise InputError("certificates need a non-empty sample with one label per row")
    flagged = det.score_matrix(matrix.astype(np.float32)) >= det.threshold
    clean = flagged == y
    cats = sorted(set(range(matrix.shape[1])) - {int(j) for j in space.numeric})
    certified: list[tuple[bool, ...]] = []
    seconds: list[float] = []
    unfinished: list[int] = []
    cache: dict[tuple[str, ...], Any] = {}
    for eps in epsilons:
        t0 = time.perf_counter()
        lo, hi = schema_boxes(space, matrix, float(eps))
        if det.name == "gbdt":
            ok, late = _certify_gbdt(det, lo, hi, y, matrix, cats, cache)
        else:
            ok, late = _certify_mlp(det, lo, hi, y), 0
        certified.append(tuple(bool(v) for v in (ok & clean)))
        seconds.append(time.perf_counter() - t0)
        unfinished.append(late)
    doc = dict(sample or {})
    doc["is_attack"] = [bool(v) for v in y]
    doc.setdefault("rows_sha256", hashlib.sha256(np.ascontiguousarray(matrix).tobytes()).hexdigest())
    return Certificate(
        model_id=manifest.model_id, artifact_sha256=str(manifest.artifact_sha256), kind=det.name,
        method="veritas-exact" if det.name == "gbdt" else "crown",
        epsilons=tuple(float(e) for e in epsilons), rows=len(y), attack_rows=int(y.sum()),
        clean_correct=tuple(bool(v) for v in clean), certified=tuple(certified), seconds=tuple(seconds),
        sample=doc, unfinished=tuple(unfinished),
    )
