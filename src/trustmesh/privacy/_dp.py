"""Differential privacy for federated runs: an (epsilon, delta) accountant and the Gaussian mechanism.

Two guarantees are offered:

* client-level central DP, DP-FedAvg with fixed clipping (McMahan et al., ICLR 2018): each site's
  update is clipped to L2 norm ``C``, the clipped updates are averaged and Gaussian noise with standard
  deviation ``z * C / n`` is added (:class:`DPConfig`, :func:`privatize_mean`);
* record-level local DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016), run by
  each site with opacus: Poisson-sampled batches, per-example clipping to ``C`` and noise ``z * C`` on
  every step (:class:`DPSGDConfig`, :class:`DPSGDAccountant`).

Both are the subsampled Gaussian mechanism composed many times. Privacy loss is tracked with Renyi DP
(Mironov, "Renyi Differential Privacy", CSF 2017) or privacy-loss distributions (Koskela et al. 2020),
both from Google's dp-accounting library; nothing here re-derives the RDP bounds.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from trustmesh.errors import MissingDependencyError, PrivacyBudgetExceeded
from trustmesh.privacy.hazmat import FloatArray, clip_by_l2_norm, gaussian_noise, os_generator

__all__ = [
    "Accountant",
    "DPConfig",
    "DPSGDAccountant",
    "DPSGDConfig",
    "dp_sgd_sampling",
    "noise_multiplier_for_epsilon",
    "privatize_mean",
]

_log = logging.getLogger(__name__)

Method = Literal["rdp", "pld"]


class _DropExcludedOrders(logging.Filter):
    """Drop dp-accounting's notice that an RDP order did not converge and was left out.

    Leaving an order out can only loosen the bound (epsilon is a minimum over orders), so the result
    stays valid; the notice fires dozens of times while calibrating over small noise multipliers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


_ABSL_FILTER = _DropExcludedOrders()


@dataclass(frozen=True, slots=True)
class DPConfig:
    """Parameters of one subsampled Gaussian mechanism: noise multiplier ``z``, clip norm ``C``, ``delta``.

    For client-level central DP (the CLI's ``--dp``) ``sample_rate`` is the fraction of sites sampled
    per round (Poisson subsampling amplification; 1.0 when every site takes part). For one site's
    record-level DP-SGD (:class:`DPSGDAccountant`) it is that site's per-step record sampling rate.
    ``max_epsilon`` is the hard budget; training stops with ``PrivacyBudgetExceeded`` before a round
    that would exceed it.
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
        values = _parse_spec(spec, "--dp", names)
        for required in ("noise_multiplier", "clip_norm"):
            if required not in values:
                raise ValueError(f"--dp: {required.split('_')[0]}=... is required, got {spec!r}")
        values.update(overrides)
        return cls(**values)


def _parse_spec(spec: str, flag: str, names: Mapping[str, str]) -> dict[str, Any]:
    """Parse ``key=value,...`` for ``flag``: keys from ``names`` (mapped to field names), each at most
    once; every value a finite number except ``method``, which stays text."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or key not in names:
            raise ValueError(f"{flag}: expected key=value with key in {sorted(names)}, got {part!r}")
        if names[key] in values:
            raise ValueError(f"{flag}: {key} given twice in {spec!r}")
        if key == "method":
            values["method"] = raw
            continue
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"{flag}: {key} must be a number, got {raw!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{flag}: {key} must be finite, got {raw!r}")
        values[names[key]] = number
    return values


def _event(noise_multiplier: float, sample_rate: float) -> Any:
    try:
        from dp_accounting import dp_event
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingDependencyError("dp-accounting", "fl") from exc
    gaussian = dp_event.GaussianDpEvent(noise_multiplier)
    if sample_rate < 1.0:
        return dp_event.PoissonSampledDpEvent(sample_rate, gaussian)
    return gaussian


@functools.lru_cache(maxsize=4096)
def _epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, method: Method) -> float:
    # cached: a run asks for the same (z, q, steps) once per site and round, and calibration re-asks
    if steps == 0:
        return 0.0
    try:
        from dp_accounting import dp_event, pld, rdp
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError("dp-accounting", "fl") from exc
    absl = logging.getLogger("absl")
    if _ABSL_FILTER not in absl.filters:
        absl.addFilter(_ABSL_FILTER)
    event = dp_event.SelfComposedDpEvent(_event(noise_multiplier, sample_rate), steps)
    accountant: Any = rdp.RdpAccountant() if method == "rdp" else pld.PLDAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


class Accountant:
    """Track (epsilon, delta) over rounds of the subsampled Gaussian mechanism and enforce a budget.

    Each round composes the mechanism ``steps_per_round`` times: 1 for client-level DP (one noisy
    mean per round), ``local_epochs * batches`` for a site's DP-SGD.

    Examples
    --------
    >>> acc = Accountant(DPConfig(noise_multiplier=1.0, clip_norm=1.0, max_epsilon=30.0))
    >>> eps = acc.spend()          # one round
    >>> acc.rounds
    1
    """

    def __init__(self, config: DPConfig, *, steps_per_round: int = 1) -> None:
        if steps_per_round < 1:
            raise ValueError(f"steps_per_round must be >= 1, got {steps_per_round}")
        self.config = config
        self.steps_per_round = steps_per_round
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
        return _epsilon(c.noise_multiplier, c.sample_rate, rounds * self.steps_per_round, c.delta, c.method)

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
    """Return the smallest noise multiplier (to 0.1%) whose ``rounds``-fold composition stays within epsilon.

    ``rounds`` counts compositions of the mechanism: rounds for client-level DP, total optimizer
    steps for DP-SGD.
    """
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


def dp_sgd_sampling(n_rows: int, batch_size: int) -> tuple[float, int]:
    """Return the Poisson sample rate and steps per epoch that opacus uses for ``n_rows`` records.

    opacus' ``make_private`` (``poisson_sampling=True``, its default) replaces the data loader by a
    ``DPDataLoader`` with sample rate ``1 / len(loader)`` (``len(loader) = ceil(n / batch)``), which
    draws each record independently with that probability in each of ``int(1 / rate)`` steps per
    epoch. The rate is at most ``batch_size / n_rows``; accounting with exactly opacus' values keeps
    the accountant and the sampler in step.
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sample_rate = 1 / math.ceil(n_rows / batch_size)
    return sample_rate, int(1 / sample_rate)


@dataclass(frozen=True, slots=True)
class DPSGDConfig:
    """Record-level local DP-SGD run by each site (the CLI's ``--dp-sgd``).

    Give either ``noise_multiplier`` (z; each step adds N(0, (z*C)^2) to the sum of per-example
    gradients clipped to ``clip_norm`` C), or ``target_epsilon`` with ``rounds``: each site then
    calibrates its own z so that ``rounds`` rounds at its own sample rate spend at most the target
    (and ``max_epsilon`` defaults to the target). ``max_epsilon`` is the hard per-site budget.
    """

    clip_norm: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    rounds: int | None = None
    delta: float = 1e-5
    max_epsilon: float | None = None
    method: Method = "rdp"

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("give exactly one of noise_multiplier and target_epsilon")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if self.target_epsilon is not None:
            if not self.target_epsilon > 0:
                raise ValueError(f"target_epsilon must be > 0, got {self.target_epsilon}")
            if self.rounds is None or self.rounds < 1:
                raise ValueError(f"rounds must be >= 1 to calibrate to target_epsilon, got {self.rounds}")
            if self.max_epsilon is None:
                object.__setattr__(self, "max_epsilon", self.target_epsilon)
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if self.max_epsilon is not None and not self.max_epsilon > 0:
            raise ValueError(f"max_epsilon must be > 0, got {self.max_epsilon}")
        if self.method not in ("rdp", "pld"):
            raise ValueError(f"method must be 'rdp' or 'pld', got {self.method!r}")

    @classmethod
    def parse(cls, spec: str, *, rounds: int | None = None) -> DPSGDConfig:
        """Parse ``noise=Z,clip=C[,delta=D][,budget=E][,method=rdp|pld]`` or ``epsilon=E,clip=C[,delta=D]``.

        ``rounds`` is the run's length, the horizon that ``epsilon=E`` calibrates for.
        """
        names = {"noise": "noise_multiplier", "epsilon": "target_epsilon", "clip": "clip_norm", "delta": "delta",
                 "budget": "max_epsilon", "method": "method"}
        values = _parse_spec(spec, "--dp-sgd", names)
        if "clip_norm" not in values:
            raise ValueError(f"--dp-sgd: clip=... is required, got {spec!r}")
        if ("noise_multiplier" in values) == ("target_epsilon" in values):
            raise ValueError(f"--dp-sgd: give exactly one of noise=Z and epsilon=E, got {spec!r}")
        if "target_epsilon" in values:
            values["rounds"] = rounds
        try:
            return cls(**values)
        except ValueError as exc:
            field = str(exc).split(" ", 1)[0]
            key = next((k for k, v in names.items() if v == field), field)
            raise ValueError(f"--dp-sgd: {key}: {exc}") from None

    def site_mechanism(self, n_rows: int, batch_size: int, local_epochs: int) -> tuple[float, float, int]:
        """Return ``(noise_multiplier, sample_rate, steps_per_round)`` for a site with ``n_rows`` records.

        With ``target_epsilon`` the noise is the smallest z (to 0.1 %) for which ``rounds`` rounds of
        ``local_epochs`` epochs at this site's sample rate stay within the target.
        """
        if local_epochs < 1:
            raise ValueError(f"local_epochs must be >= 1, got {local_epochs}")
        sample_rate, steps_per_epoch = dp_sgd_sampling(n_rows, batch_size)
        steps = local_epochs * steps_per_epoch
        if self.noise_multiplier is not None:
            return self.noise_multiplier, sample_rate, steps
        assert self.target_epsilon is not None and self.rounds is not None  # checked in __post_init__
        z = _calibrate(self.target_epsilon, self.delta, self.rounds * steps, sample_rate, self.method)
        return z, sample_rate, steps

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary of the settings (no per-site values)."""
        return {"mode": "dp-sgd", "noise_multiplier": self.noise_multiplier, "target_epsilon": self.target_epsilon,
                "calibration_rounds": self.rounds, "clip_norm": self.clip_norm, "delta": self.delta,
                "max_epsilon": self.max_epsilon, "accountant": self.method}


@functools.lru_cache(maxsize=256)
def _calibrate(target: float, delta: float, steps: int, sample_rate: float, method: Method) -> float:
    # every site of an IID split has the same (q, steps): calibrate once, and the same on both sides
    return noise_multiplier_for_epsilon(target, delta, steps, sample_rate, method)


class DPSGDAccountant:
    """Account each site's record-level DP-SGD from public parameters and enforce the per-site budget.

    Site ``k`` with ``n_k`` records runs ``local_epochs * ceil(n_k / b_k)`` Poisson-subsampled
    Gaussian steps per round at rate ``1 / ceil(n_k / b_k)`` (:func:`dp_sgd_sampling`), where ``b_k``
    is ``batch_size`` or, given a mapping, the site's own entry; sites of different rates spend
    differently, and the run's epsilon is the largest site's. The coordinator runs
    this to stop a run before any site would exceed the budget; each site's own accountant over its
    true row count and steps is the authoritative one.
    """

    def __init__(self, config: DPSGDConfig, site_rows: Mapping[str, int], *, batch_size: int | Mapping[str, int],
                 local_epochs: int) -> None:
        if any(rows < 0 for rows in site_rows.values()):
            raise ValueError(f"site_rows must be >= 0, got {dict(site_rows)}")
        # a site without records trains nothing and releases nothing about anyone
        self.site_rows = {site: rows for site, rows in site_rows.items() if rows > 0}
        if not self.site_rows:
            raise ValueError("site_rows must name at least one site with records")
        self.config = config
        self.batch_size = batch_size
        self.local_epochs = local_epochs
        self._sites: dict[str, Accountant] = {}
        for site, rows in self.site_rows.items():
            batch = batch_size if isinstance(batch_size, int) else batch_size[site]
            z, q, steps = config.site_mechanism(rows, batch, local_epochs)
            mech = DPConfig(noise_multiplier=z, clip_norm=config.clip_norm, delta=config.delta,
                            max_epsilon=config.max_epsilon, sample_rate=q, method=config.method)
            self._sites[site] = Accountant(mech, steps_per_round=steps)

    def site(self, site_id: str) -> Accountant:
        """Return one site's accountant (``KeyError`` for an unknown site)."""
        return self._sites[site_id]

    @property
    def epsilon(self) -> float:
        """The largest epsilon any site has spent so far at ``config.delta``."""
        return max(acc.epsilon for acc in self._sites.values())

    def check(self, rounds: int = 1) -> float:
        """Return the largest epsilon after ``rounds`` more rounds; raise ``PrivacyBudgetExceeded`` if over budget."""
        worst = 0.0
        for site, acc in self._sites.items():
            try:
                worst = max(worst, acc.check(rounds))
            except PrivacyBudgetExceeded as exc:
                raise PrivacyBudgetExceeded(f"DP-SGD site {site}: {exc}") from None
        return worst

    def spend(self, sites: Iterable[str] | None = None) -> float:
        """Account one round for ``sites`` (all when None) and return the largest epsilon over all sites.

        Raises ``PrivacyBudgetExceeded`` (spending nothing) if any named site would exceed the budget.
        """
        names = list(self._sites) if sites is None else [s for s in sites if s in self._sites]
        for site in names:
            try:
                self._sites[site].check(1)
            except PrivacyBudgetExceeded as exc:
                raise PrivacyBudgetExceeded(f"DP-SGD site {site}: {exc}") from None
        for site in names:
            self._sites[site].spend(1)
        return self.epsilon

    def describe(self) -> dict[str, Any]:
        """The settings and each site's mechanism and spend, JSON-ready (for the round record)."""
        return {
            **self.config.describe(), "batch_size": self.batch_size if isinstance(self.batch_size, int)
            else dict(self.batch_size), "local_epochs": self.local_epochs,
            "sampling": "poisson (opacus DPDataLoader)", "epsilon": self.epsilon,
            "sites": {site: {"rows": self.site_rows[site], "noise_multiplier": acc.config.noise_multiplier,
                             "sample_rate": acc.config.sample_rate, "steps_per_round": acc.steps_per_round,
                             "rounds": acc.rounds, "epsilon": acc.epsilon}
                      for site, acc in self._sites.items()},
        }


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
