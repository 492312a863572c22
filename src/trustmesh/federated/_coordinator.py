"""The coordinator's round logic, independent of transport: validate, commit, defend, privatize, record.

Both the Flower strategy (:mod:`trustmesh.federated._flower`) and the in-process loop call this, so
the numbers from either path come from the same code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trustmesh.errors import FederatedError
from trustmesh.federated._aggregate import Aggregator, ServerOptimizer, flatten, unflatten
from trustmesh.federated._record import RoundRecord, RoundRecorder
from trustmesh.federated._validate import UpdateValidator, commit_arrays
from trustmesh.privacy import Accountant, DPConfig, DPSGDAccountant
from trustmesh.privacy.hazmat import clip_by_l2_norm, gaussian_noise, os_generator

__all__ = ["Coordinator", "Submission"]

_log = logging.getLogger(__name__)

Arrays = list[npt.NDArray[Any]]


@dataclass(frozen=True)
class Submission:
    """One site's update as received: its id, arrays and example count."""

    site_id: str
    arrays: Sequence[Any]
    num_examples: int


class Coordinator:
    """Hold the global model and turn each round's submissions into the next one.

    Parameters
    ----------
    initial:
        The starting weights (shared with the sites by seed).
    aggregator:
        The aggregation rule (FedAvg or a robust one).
    dp:
        Client-level central DP; clipping on the server unless ``secure`` is set (then sites clip).
    evaluate:
        ``weights -> metrics`` on the coordinator's test data, or None.
    recorder:
        Where round records go (ledger).
    secure:
        ``"none"``, ``"secagg+"`` or ``"ckks"`` (recorded; the server never sees single updates then).
    dp_sgd:
        Record-level accountant for sites running local DP-SGD. The sites add the noise; the
        coordinator only accounts, from public parameters (noise, clip, batch, local epochs and each
        site's row count), so that it can stop the run before any site would exceed the budget. A
        site's own accountant over its true data is the authoritative one in a deployment.
    server_opt:
        A server optimiser (FedAvgM, FedAdam, FedYogi) applied to each round's aggregate, after any
        central-DP noise (post-processing); None keeps the aggregate as the next model.
    """

    def __init__(
        self, initial: Arrays, aggregator: Aggregator, *, dp: DPConfig | None = None,
        evaluate: Callable[[Arrays], dict[str, Any]] | None = None, recorder: RoundRecorder | None = None,
        secure: str = "none", defence_extra: dict[str, Any] | None = None,
        dp_sgd: DPSGDAccountant | None = None, server_opt: ServerOptimizer | None = None,
    ) -> None:
        if secure not in ("none", "secagg+", "ckks"):
            raise ValueError(f"secure must be none|secagg+|ckks, got {secure!r}")
        if dp is not None and aggregator.name not in ("fedavg", "fedprox"):
            raise FederatedError(f"central DP is accounted for the mean only; use fedavg/fedprox, not {aggregator.name}")
        self.weights: Arrays = [np.asarray(w, dtype=np.float32) for w in initial]
        self.aggregator = aggregator
        self.dp = dp
        self.accountant = Accountant(dp) if dp is not None else None
        if dp is not None and dp_sgd is not None:
            raise FederatedError("client-level DP and DP-SGD are alternatives; give the coordinator one of them")
        self.dp_sgd = dp_sgd
        self.evaluate = evaluate
        self.recorder = recorder if recorder is not None else RoundRecorder()
        self.secure = secure
        self.validator = UpdateValidator([w.shape for w in self.weights])
        self.defence_extra = defence_extra or {}
        self.round_times: list[float] = []
        self.server_opt = server_opt

    def begin_round(self, round_no: int) -> None:
        """Refuse to start a round that would exceed the DP budget (raises PrivacyBudgetExceeded).

        Under DP-SGD the round is refused if any site would go over, before any site trains.
        """
        if self.accountant is not None:
            self.accountant.check(1)
        if self.dp_sgd is not None:
            self.dp_sgd.check(1)

    @property
    def epsilon(self) -> float | None:
        """Epsilon spent so far: client-level, or the largest site's record-level; None without DP."""
        if self.accountant is not None:
            return self.accountant.epsilon
        return None if self.dp_sgd is None else self.dp_sgd.epsilon

    @property
    def privacy(self) -> dict[str, Any] | None:
        """The DP-SGD accountant's state (settings and per-site spend), or None."""
        return None if self.dp_sgd is None else self.dp_sgd.describe()

    def _spend_dp_sgd(self, round_no: int, sites: Sequence[str]) -> float | None:
        """Account one round of DP-SGD for the sites that trained (rejected ones too: they released an update)."""
        if self.dp_sgd is None:
            return None
        unknown = [s for s in sites if s not in self.dp_sgd.site_rows]
        if unknown:
            _log.warning("round %d: DP-SGD: no row count for sites %s; not accounted", round_no, unknown)
        return self.dp_sgd.spend(sites)

    def _dp_description(self) -> dict[str, Any] | None:
        if self.dp_sgd is not None:
            return self.dp_sgd.describe()
        if self.dp is None:
            return None
        return {"mode": "central", "noise_multiplier": self.dp.noise_multiplier, "clip_norm": self.dp.clip_norm,
                "delta": self.dp.delta, "max_epsilon": self.dp.max_epsilon, "accountant": self.dp.method}

    def _finish(self, round_no: int, sites: Sequence[str], commitments: dict[str, str], rejected: dict[str, str],
                new: npt.NDArray[np.float64], n_accepted: int, started: float, masked: str | None = None,
                extra: dict[str, Any] | None = None, noised: bool = False) -> RoundRecord:
        epsilon = None
        if self.dp is not None and self.accountant is not None and n_accepted > 0:
            if not noised:
                std = self.dp.noise_multiplier * self.dp.clip_norm / n_accepted
                new = new + gaussian_noise(new.shape, std, os_generator())
            epsilon = self.accountant.spend(1)
        if self.dp_sgd is not None:
            epsilon = self._spend_dp_sgd(round_no, sites)
        if self.server_opt is not None and n_accepted > 0:
            new = self.server_opt.step(flatten(self.weights), new)
        self.weights = unflatten(new, self.weights)
        metrics = self.evaluate(self.weights) if self.evaluate is not None else {}
        seconds = time.perf_counter() - started
        self.round_times.append(seconds)
        rec = RoundRecord(
            round=round_no, sites=tuple(sites), commitments=commitments, rejected=rejected,
            aggregate_sha256=commit_arrays(self.weights), strategy=self._strategy(),
            defence={"validation": ["shape", "finite", "replay"], **self.defence_extra,
                     "dp": self._dp_description()},
            secure_aggregation=self.secure, epsilon=epsilon, delta=self._delta(),
            metrics=metrics, seconds=round(seconds, 6), masked_commitment=masked, extra=extra or {},
        )
        self.recorder.record(rec)
        _log.info("round %d: %d sites, %d rejected, metrics=%s", round_no, len(sites), len(rejected), metrics)
        return rec

    def aggregate(self, round_no: int, submissions: Sequence[Submission], started: float | None = None) -> RoundRecord:
        """Validate, commit to and aggregate individually visible updates; returns the round record."""
        t0 = time.perf_counter() if started is None else started
        commitments: dict[str, str] = {}
        rejected: dict[str, str] = {}
        ok: list[Submission] = []
        for sub in submissions:
            try:
                commitment = commit_arrays(sub.arrays)
            except (TypeError, ValueError) as exc:
                rejected[sub.site_id] = f"unreadable update ({exc})"
                continue
            commitments[sub.site_id] = commitment
            # the example count first: sites with nothing to train on send identical unchanged
            # weights, which the replay check would otherwise misreport as replays of each other
            reason = (f"num_examples must be >= 1, got {sub.num_examples}" if sub.num_examples < 1
                      else self.validator.check(sub.arrays, commitment, round_no, sub.site_id))
            if reason is not None:
                rejected[sub.site_id] = reason
                continue
            ok.append(sub)
        base = flatten(self.weights)
        if not ok:
            _log.warning("round %d: every update rejected; the global model is unchanged", round_no)
            return self._finish(round_no, [s.site_id for s in submissions], commitments, rejected, base, 0, t0)
        models = [flatten(s.arrays) for s in ok]
        if self.dp is not None:
            models = [base + clip_by_l2_norm([m - base], self.dp.clip_norm)[0][0] for m in models]
            counts = [1] * len(ok)  # DP-FedAvg averages clipped updates unweighted (sensitivity C/n)
        else:
            counts = [s.num_examples for s in ok]
        agg = self.aggregator.aggregate(models, counts, base)
        for i, reason in agg.rejected.items():
            rejected[ok[i].site_id] = reason
        # accepted updates a defence changed (norm-bounded, centre-clipped) go on the ledger too
        clipped = {ok[i].site_id: reason for i, reason in agg.clipped.items()}
        return self._finish(round_no, [s.site_id for s in submissions], commitments, rejected, agg.vector,
                            len(agg.accepted), t0, extra={"clipped": clipped} if clipped else None)

    def sum_noise(self, length: int) -> npt.NDArray[np.float64] | None:
        """Central DP's Gaussian noise for a SUM of clipped site models (std ``z * C``), or None without DP.

        Under CKKS the server adds this to the encrypted sum (it cannot read the sum), so the key
        holders decrypt only the noised sum; divided by the site count it is DP-FedAvg's ``z * C / n``.
        """
        if self.dp is None:
            return None
        noise = gaussian_noise((length,), self.dp.noise_multiplier * self.dp.clip_norm, os_generator())
        return np.asarray(noise, dtype=np.float64)

    def aggregate_secure(
        self, round_no: int, sites: Sequence[str], aggregate: Arrays, masked_commitment: str | None = None,
        started: float | None = None, noised: bool = False, rejected: dict[str, str] | None = None,
    ) -> RoundRecord:
        """Take an aggregate computed under SecAgg+/CKKS (the server saw no single update).

        ``noised``: central DP noise was already added to the sum (under encryption, by :meth:`sum_noise`);
        the round is only accounted. ``rejected``: sites left out of the masked sum, with the reason
        (e.g. a failed bound proof).
        """
        t0 = time.perf_counter() if started is None else started
        shapes = [w.shape for w in self.weights]
        if len(aggregate) != len(shapes) or any(np.asarray(a).shape != s for a, s in zip(aggregate, shapes, strict=False)):
            raise FederatedError(f"round {round_no}: secure aggregate has the wrong shape")
        vec = flatten(aggregate)
        if not np.all(np.isfinite(vec)):
            raise FederatedError(f"round {round_no}: secure aggregate contains NaN/inf")
        return self._finish(round_no, sites, {}, dict(rejected or {}), vec, len(sites), t0, masked=masked_commitment,
                            noised=noised)

    def aggregate_encrypted(
        self, round_no: int, sites: Sequence[str], ciphertext_commitments: dict[str, str], sum_sha256: str,
        started: float | None = None, rejected: dict[str, str] | None = None,
    ) -> RoundRecord:
        """Record a CKKS round: the server added ciphertexts it cannot read; the model stays with the sites.

        The global weights here are updated later by :meth:`adopt_decrypted` when a key holder
        decrypts (the simulation's driver plays that site).
        """
        t0 = time.perf_counter() if started is None else started
        epsilon = self._spend_dp_sgd(round_no, sites)
        if self.accountant is not None and len(set(sites) - set(rejected or {})) > 0:
            epsilon = self.accountant.spend(1)  # the noise went into the encrypted sum (sum_noise)
        seconds = time.perf_counter() - t0
        self.round_times.append(seconds)
        rec = RoundRecord(
            round=round_no, sites=tuple(sites), commitments=dict(ciphertext_commitments), rejected=rejected or {},
            aggregate_sha256=sum_sha256, strategy=self._strategy(),
            defence={"validation": ["ciphertext-format", "length", "replay"], **self.defence_extra,
                     "dp": self._dp_description()},
            secure_aggregation="ckks", epsilon=epsilon, delta=self._delta(), metrics={}, seconds=round(seconds, 6),
        )
        self.recorder.record(rec)
        return rec

    def _strategy(self) -> dict[str, Any]:
        config = self.aggregator.config()
        return config if self.server_opt is None else {**config, "server_optimizer": self.server_opt.config()}

    def _delta(self) -> float | None:
        if self.dp is not None:
            return self.dp.delta
        return None if self.dp_sgd is None else self.dp_sgd.config.delta

    def adopt_decrypted(self, weights: Arrays) -> dict[str, Any]:
        """Install weights decrypted by a key holder (through the server optimiser, if any); return metrics."""
        if self.server_opt is not None:
            weights = unflatten(self.server_opt.step(flatten(self.weights), flatten(weights)), self.weights)
        self.weights = [np.asarray(w, dtype=np.float32) for w in weights]
        return self.evaluate(self.weights) if self.evaluate is not None else {}
