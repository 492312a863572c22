"""Poisoning attacks run by malicious sites, for evaluating the defences.

* label flipping — Tolpegin et al., ESORICS 2020 (data poisoning);
* sign flipping and Gaussian noise — the Byzantine updates of Fang et al., USENIX Security 2020;
* scaling / model replacement — Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS 2020;
* backdoor trigger — a feature pattern stamped on attack rows relabelled as benign (BadNets-style,
  Gu et al. 2017). By default the pattern is chosen from the attacker's own training rows by
  :func:`choose_trigger` (an attack-typical tail), so a clean model does not already call it benign.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

__all__ = ["ATTACK_KINDS", "AttackSpec", "apply_trigger", "choose_trigger", "malicious_sites"]

ATTACK_KINDS = ("label-flip", "sign-flip", "scaling", "gaussian", "backdoor")


@dataclass(frozen=True, slots=True)
class AttackSpec:
    """Which attack, which fraction of sites run it, and its strength.

    ``scale`` is the sign-flip/scaling factor (sign flip defaults to -4x the honest update; scaling
    defaults to boosting by the number of sites, as in model replacement, when ``scale`` is 0);
    ``noise_std`` the Gaussian attack's standard deviation; ``trigger_features``/``trigger_value`` the
    backdoor pattern (one value for all features, or one per feature; ``trigger_features=None``, the
    default, means "choose it from the attacker's data" with :func:`choose_trigger`, see
    :meth:`with_trigger_for`); ``poison_rate`` the share of a backdoor site's attack rows that get the
    trigger.
    """

    kind: str
    fraction: float
    scale: float = 0.0
    noise_std: float = 1.0
    trigger_features: tuple[int, ...] | None = None
    trigger_value: float | tuple[float, ...] = 0.0
    poison_rate: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"attack kind must be one of {', '.join(ATTACK_KINDS)}, got {self.kind!r}")
        if not 0 <= self.fraction < 1:
            raise ValueError(f"attack fraction must be in [0, 1), got {self.fraction}")
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0, got {self.scale}")
        if not self.noise_std > 0:
            raise ValueError(f"noise_std must be > 0, got {self.noise_std}")
        if not 0 < self.poison_rate <= 1:
            raise ValueError(f"poison_rate must be in (0, 1], got {self.poison_rate}")
        if self.trigger_features is not None:
            if not self.trigger_features or min(self.trigger_features) < 0:
                raise ValueError(f"trigger_features must be non-empty column indices, got {self.trigger_features}")
            if isinstance(self.trigger_value, tuple) and len(self.trigger_value) != len(self.trigger_features):
                raise ValueError(f"trigger_value has {len(self.trigger_value)} values for "
                                 f"{len(self.trigger_features)} trigger_features")

    def with_trigger_for(
        self, X: npt.NDArray[np.float32], y: npt.NDArray[np.int64], benign: int = 0,
    ) -> AttackSpec:
        """Return this spec with a concrete trigger: unchanged if one is set or the kind is not a backdoor,
        else the pattern :func:`choose_trigger` picks from ``X``/``y`` (the attacker's training rows)."""
        if self.kind != "backdoor" or self.trigger_features is not None:
            return self
        features, values = choose_trigger(X, y, benign=benign)
        return replace(self, trigger_features=features, trigger_value=values)

    @classmethod
    def parse(cls, text: str) -> AttackSpec:
        """Parse ``KIND:FRACTION`` (e.g. ``sign-flip:0.2``)."""
        kind, sep, frac = text.strip().partition(":")
        if not sep:
            raise ValueError(f"--attack: expected KIND:FRACTION, got {text!r}")
        try:
            return cls(kind=kind, fraction=float(frac))
        except ValueError as exc:
            raise ValueError(f"--attack {text!r}: {exc}") from exc

    def poison_data(
        self, X: npt.NDArray[np.float32], y: npt.NDArray[np.int64], n_classes: int, rng: np.random.Generator,
        benign: int = 0,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Return a malicious site's training data (copies) for data-poisoning kinds; others unchanged."""
        X2, y2 = X.copy(), y.copy()
        if self.kind == "label-flip":
            # every class is relabelled as another: attack rows become benign, benign rows become an attack
            y2 = np.where(y == benign, (benign + 1) % n_classes, benign).astype(np.int64)
        elif self.kind == "backdoor":
            spec = self.with_trigger_for(X, y, benign)
            attack_rows = np.flatnonzero(y != benign)
            chosen = rng.choice(attack_rows, size=int(len(attack_rows) * self.poison_rate), replace=False) \
                if len(attack_rows) else attack_rows
            triggered = apply_trigger(X[chosen], spec.trigger_features, spec.trigger_value)
            X2 = np.concatenate([X2, triggered])
            y2 = np.concatenate([y2, np.full(len(chosen), benign, dtype=np.int64)])
        return X2, y2

    def poison_update(
        self, local: npt.NDArray[np.float64], global_model: npt.NDArray[np.float64], n_sites: int,
        rng: np.random.Generator,
    ) -> npt.NDArray[np.float64]:
        """Return the flat model a malicious site submits for model-poisoning kinds; others unchanged."""
        delta = local - global_model
        if self.kind == "sign-flip":
            return global_model - (self.scale or 4.0) * delta
        if self.kind == "scaling":
            return global_model + (self.scale or float(n_sites)) * delta
        if self.kind == "gaussian":
            return global_model + rng.normal(0.0, self.noise_std, size=local.shape)
        return local


def apply_trigger(
    X: npt.NDArray[np.float32], features: tuple[int, ...] | None, value: float | tuple[float, ...]
) -> npt.NDArray[np.float32]:
    """Return a copy of ``X`` with the backdoor pattern stamped on ``features`` (``value``: one for all
    features, or one per feature)."""
    if features is None:
        raise ValueError("the trigger has no features yet; resolve it with AttackSpec.with_trigger_for")
    out = np.array(X, dtype=np.float32, copy=True)
    values = value if isinstance(value, tuple) else (value,) * len(features)
    if len(values) != len(features):
        raise ValueError(f"got {len(values)} trigger values for {len(features)} features")
    if any(f >= out.shape[1] for f in features):
        raise ValueError(f"trigger features {features} out of range for {out.shape[1]} columns")
    out[:, list(features)] = np.asarray(values, dtype=np.float32)
    return out


def choose_trigger(
    X: npt.NDArray[np.float32], y: npt.NDArray[np.int64], *, k: int = 3, quantile: float = 0.99, benign: int = 0,
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Pick a backdoor pattern from training rows: the ``k`` most attack-typical feature tails.

    For every feature with an upper tail (its ``quantile`` value is above its median), take the rows
    at or above that value and the share of them that are benign; the ``k`` features with the lowest
    benign share are the trigger, each set to its ``quantile`` value. The pattern is made of values
    real attack traffic has, so a clean model keeps calling triggered attack rows attacks and any
    "benign" verdict on them is the backdoor's doing. (A pattern of extreme values can instead land
    in a region a clean model already calls benign, which measures evasion, not a backdoor.) Uses only
    the rows given, never test data; ties are broken by column index.
    """
    if not 0.5 < quantile < 1:
        raise ValueError(f"quantile must be in (0.5, 1), got {quantile}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    if len(X) != len(y) or len(X) == 0:
        raise ValueError(f"need matching, non-empty X and y, got {len(X)} and {len(y)} rows")
    scored: list[tuple[float, int, float]] = []
    for j in range(X.shape[1]):
        col = X[:, j]
        top = float(np.quantile(col, quantile))
        if not top > float(np.median(col)):
            continue  # no upper tail (constant, or rare high values): no room for a pattern
        scored.append((float(np.mean(y[col >= top] == benign)), j, top))
    if len(scored) < k:
        raise ValueError(f"only {len(scored)} features have an upper tail; cannot pick a {k}-feature trigger")
    scored.sort()
    chosen = sorted(scored[:k], key=lambda t: t[1])
    return tuple(j for _, j, _ in chosen), tuple(round(v, 6) for *_, v in chosen)


def malicious_sites(n_sites: int, fraction: float, seed: int) -> frozenset[int]:
    """Pick ``round(fraction * n_sites)`` site ids with ``seed`` (at least one when fraction > 0)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    k = int(round(fraction * n_sites))
    if fraction > 0:
        k = max(k, 1)
    perm = np.random.default_rng(seed + 7919).permutation(n_sites)
    return frozenset(int(i) for i in perm[:k])
