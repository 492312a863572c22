"""Client-level differential privacy: an (epsilon, delta) accountant and the Gaussian mechanism.

The mechanism is DP-FedAvg with fixed clipping (McMahan et al., ICLR 2018): each site's update is
clipped to L2 norm ``C``, the clipped updates are averaged and Gaussian noise with standard deviation
``z * C / n`` is added. Privacy loss is tracked with Renyi DP (Mironov, "Renyi Differential Privacy",
CSF 2017) or privacy-loss distributions (Koskela et al. 2020; Google's dp-accounting library).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from trustmesh.errors import MissingDependencyError, PrivacyBudgetExceeded
from trustmesh.privacy.hazmat import FloatArray, clip_by_l2_norm, gaussian_noise, os_generator

__all__ = ["Accountant", "DPConfig", "noise_multiplier_for_epsilon", "privatize_mean"]

_log = logging.getLogger(__name__)

Method = Literal["rdp", "pld"]


@dataclass(frozen=True, slots=True)
class DPConfig:
    """Parameters of client-level central DP: noise multiplier ``z``, clip norm ``C``, ``delta``.

    ``max_epsilon`` is the hard budget; training stops with ``PrivacyBudgetExceeded`` before a round
    that would exceed it. ``sample_rate`` is the fraction of sites sampled per round (Poisson
    subsampling amplification; 1.0 when every site takes part).
    """

    noise_multiplier: float
    clip_norm: float
    delta: float = 1e-5
    max_epsilon: float | None = None
    sample_rate: float = 1.0
    method: Method = "rdp"

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if self.max_epsilon is not None and not self.max_epsilon > 0:
            raise ValueError(f"max_epsilon must be > 0, got {self.max_epsilon}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.method not in ("rdp", "pld"):
            raise ValueError(f"method must be 'rdp' or 'pld', got {self.method!r}")

    @classmethod
    def parse(cls, spec: str, **overrides: Any) -> DPConfig:
        """Parse ``noise=Z,clip=C,delta=D[,budget=E][,method=rdp|pld]`` (the CLI's ``--dp`` value)."""
        names = {"noise": "noise_multiplier", "clip": "clip_norm", "delta": "delta", "budget": "max_epsilon",
                 "method": "method", "sample": "sample_rate"}
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, raw = part.partition("=")
            if not sep or key not in names:
                raise ValueError(f"--dp: expected key=value with key in {sorted(names)}, got {part!r}")
            values[names[key]] = raw if key == "method" else float(raw)
        for required in ("noise_multiplier", "clip_norm"):
            if required not in values:
                raise ValueError(f"--dp: {required.split('_')[0]}=... is required, got {spec!r}")
        values.update(overrides)
        return cls(**values)


def _event(noise_multiplier: float, sample_rate: float) -> Any:
    try:
        from dp_accounting import dp_event
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingDependencyError("dp-accounting", "fl") from exc
    gaussian = dp_event.GaussianDpEvent(noise_multiplier)
    if sample_rate < 1.0:
        return dp_event.PoissonSampledDpEvent(sample_rate, gaussian)
    return gaussian


def _epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, method: Method) -> float:
    if steps == 0:
        return 0.0
    try:
        from dp_accounting import dp_event, pld, rdp
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError("dp-accounting", "fl") from exc
    event = dp_event.SelfComposedDpEvent(_event(noise_multiplier, sample_rate), steps)
    accountant: Any = rdp.RdpAccountant() if method == "rdp" else pld.PLDAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


class Accountant:
    """Track (epsilon, delta) over rounds of the subsampled Gaussian mechanism and enforce a budget.

    Examples
    --------
    >>> acc = Accountant(DPConfig(noise_multiplier=1.0, clip_norm=1.0, max_epsilon=30.0))
    >>> eps = acc.spend()          # one round
    >>> acc.rounds
    1
    """

    def __init__(self, config: DPConfig) -> None:
        self.config = config
        self._rounds = 0
        self._epsilon = 0.0

    @property
    def rounds(self) -> int:
        """Rounds spent so far."""
        return self._rounds

    @property
    def epsilon(self) -> float:
        """Epsilon spent so far at ``config.delta``."""
        return self._epsilon

    def epsilon_after(self, rounds: int) -> float:
        """Return the epsilon that ``rounds`` rounds in total would cost at ``config.delta``."""
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        c = self.config
        return _epsilon(c.noise_multiplier, c.sample_rate, rounds, c.delta, c.method)

    def check(self, rounds: int = 1) -> float:
        """Return the epsilon after ``rounds`` more rounds; raise ``PrivacyBudgetExceeded`` if over budget."""
        eps = self.epsilon_after(self._rounds + rounds)
        budget = self.config.max_epsilon
        if budget is not None and eps > budget:
            raise PrivacyBudgetExceeded(
                f"round {self._rounds + rounds} would spend epsilon={eps:.3f} > budget {budget} "
                f"at delta={self.config.delta} (noise_multiplier={self.config.noise_multiplier})"
            )
        return eps

    def spend(self, rounds: int = 1) -> float:
        """Account for ``rounds`` more rounds and return the total epsilon; refuse (raise) if over budget."""
        eps = self.check(rounds)
        self._rounds += rounds
        self._epsilon = eps
        _log.debug("privacy: %d rounds, epsilon=%.4f at delta=%g", self._rounds, eps, self.config.delta)
        return eps


def noise_multiplier_for_epsilon(
    target_epsilon: float, delta: float, rounds: int, sample_rate: float = 1.0, method: Method = "rdp"
) -> float:
    """Return the smallest noise multiplier (to 0.1%) whose ``rounds``-fold composition stays within epsilon."""
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    lo, hi = 0.05, 1.0
    while _epsilon(hi, sample_rate, rounds, delta, method) > target_epsilon:
        hi *= 2
        if hi > 1e4:
            raise ValueError(f"no noise multiplier reaches epsilon={target_epsilon} in {rounds} rounds")
    while hi - lo > 1e-3 * hi:
        mid = math.sqrt(lo * hi)
        if _epsilon(mid, sample_rate, rounds, delta, method) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def privatize_mean(
    updates: Sequence[Sequence[FloatArray]],
    config: DPConfig,
    *,
    rng: np.random.Generator | None = None,
    already_clipped: bool = False,
) -> tuple[list[FloatArray], list[float]]:
    """Clip each site's update to ``clip_norm``, average, and add N(0, (z*C/n)^2) noise.

    ``updates`` are model *deltas* (new - global), one list of arrays per site. Returns the noisy mean
    and each site's pre-clipping norm. ``rng`` defaults to an OS-seeded generator; pass one only in
    tests that check the arithmetic, never in a deployment.
    """
    if not updates:
        raise ValueError("updates must not be empty")
    generator = rng if rng is not None else os_generator()
    clipped: list[list[FloatArray]] = []
    norms: list[float] = []
    for update in updates:
        if already_clipped:
            arrays: list[FloatArray] = [np.asarray(a, dtype=np.float64) for a in update]
            norms.append(float(np.sqrt(sum(float(np.sum(a * a)) for a in arrays))))
        else:
            arrays, norm = clip_by_l2_norm(update, config.clip_norm)
            norms.append(norm)
        clipped.append(arrays)
    n = len(clipped)
    std = config.noise_multiplier * config.clip_norm / n
    # sum() starts from int 0, so its declared type is array | float; with >= 1 site it is an array.
    mean = [cast(FloatArray, sum(site[i] for site in clipped) / n) for i in range(len(clipped[0]))]
    return [m + gaussian_noise(m.shape, std, generator) for m in mean], norms
