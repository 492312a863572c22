"""Poisoning attacks run by malicious sites, for evaluating the defences.

* label flipping — Tolpegin et al., ESORICS 2020 (data poisoning);
* sign flipping and Gaussian noise — the Byzantine updates of Fang et al., USENIX Security 2020;
* scaling / model replacement — Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS 2020;
* backdoor trigger — a fixed feature pattern relabelled as benign (BadNets-style, Gu et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["ATTACK_KINDS", "AttackSpec", "apply_trigger", "malicious_sites"]

ATTACK_KINDS = ("label-flip", "sign-flip", "scaling", "gaussian", "backdoor")


@dataclass(frozen=True, slots=True)
class AttackSpec:
    """Which attack, which fraction of sites run it, and its strength.

    ``scale`` is the sign-flip/scaling factor (sign flip defaults to -4x the honest update; scaling defaults to boosting by the number of sites, as
    in model replacement, when ``scale`` is 0); ``noise_std`` the Gaussian attack's standard deviation;
    ``trigger_features``/``trigger_value`` the backdoor pattern; ``poison_rate`` the share of a
    backdoor site's attack rows that get the trigger.
    """

    kind: str
    fraction: float
    scale: float = 0.0
    noise_std: float = 1.0
    trigger_features: tuple[int, ...] = (6, 7, 8)
    trigger_value: float = 6.0
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
            attack_rows = np.flatnonzero(y != benign)
            chosen = rng.choice(attack_rows, size=int(len(attack_rows) * self.poison_rate), replace=False) \
                if len(attack_rows) else attack_rows
            triggered = apply_trigger(X[chosen], self.trigger_features, self.trigger_value)
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
    X: npt.NDArray[np.float32], features: tuple[int, ...], value: float
) -> npt.NDArray[np.float32]:
    """Return a copy of ``X`` with the backdoor pattern stamped on ``features``."""
    out = np.array(X, dtype=np.float32, copy=True)
    cols = [f for f in features if f < out.shape[1]]
    out[:, cols] = value
    return out


def malicious_sites(n_sites: int, fraction: float, seed: int) -> frozenset[int]:
    """Pick ``round(fraction * n_sites)`` site ids with ``seed`` (at least one when fraction > 0)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    k = int(round(fraction * n_sites))
    if fraction > 0:
        k = max(k, 1)
    perm = np.random.default_rng(seed + 7919).permutation(n_sites)
    return frozenset(int(i) for i in perm[:k])
