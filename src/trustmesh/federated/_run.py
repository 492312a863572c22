"""A federated run's configuration and result, the shared set-up, and the in-process driver.

The in-process driver runs the same ``Site`` and ``Coordinator`` code as the Flower simulation, without
Flower's transport; it exists for the robustness/DP sweeps where Ray start-up would dominate. Results
say which path produced them (``path``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from trustmesh.errors import ConfigError
from trustmesh.federated._aggregate import Aggregator, flatten, make_aggregator
from trustmesh.federated._attacks import AttackSpec, apply_trigger, malicious_sites
from trustmesh.federated._coordinator import Coordinator, Submission
from trustmesh.federated._data import FederatedData
from trustmesh.federated._metrics import classification_metrics
from trustmesh.federated._model import MLPModel
from trustmesh.federated._partition import PartitionSpec, partition
from trustmesh.federated._record import RoundRecord, RoundRecorder
from trustmesh.federated._site import Site, TrainConfig
from trustmesh.privacy import CkksCiphertext, CkksKeyring, DPConfig, SecAggConfig, add_ciphertexts

__all__ = ["FLConfig", "FLResult", "Plan", "plan_run", "run_inprocess", "train_centralized"]

AGGREGATORS = ("fedavg", "fedprox", "median", "trimmed-mean", "multikrum", "fltrust")


@dataclass(frozen=True)
class FLConfig:
    """Everything that defines a federated run (the CLI flags of ``fl simulate``)."""

    n_sites: int = 3
    rounds: int = 3
    partition: PartitionSpec = field(default_factory=PartitionSpec)
    aggregator: str = "fedavg"
    secagg: SecAggConfig | None = None
    dp: DPConfig | None = None
    he: str | None = None
    attack: AttackSpec | None = None
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    assumed_malicious: int | None = None  # Multi-Krum's f / trimmed-mean's beta; default from --attack
    proximal_mu: float = 0.01
    root_size: int = 200

    def __post_init__(self) -> None:
        if self.n_sites < 1:
            raise ConfigError(f"--sites must be >= 1, got {self.n_sites}")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")
        if self.aggregator not in AGGREGATORS:
            raise ConfigError(f"--aggregator must be one of {', '.join(AGGREGATORS)}, got {self.aggregator!r}")
        if self.he not in (None, "ckks"):
            raise ConfigError(f"--he must be ckks, got {self.he!r}")
        secure = self.secagg is not None or self.he is not None
        if secure and self.aggregator not in ("fedavg", "fedprox"):
            raise ConfigError(
                f"--aggregator {self.aggregator} needs each site's update in the clear; "
                "SecAgg+/CKKS reveal only the sum (use fedavg or fedprox)"
            )
        if self.secagg is not None and self.he is not None:
            raise ConfigError("--secagg and --he ckks are alternatives; pick one")
        if self.he is not None and self.dp is not None:
            raise ConfigError("--dp with --he ckks is not supported (the server cannot add noise to ciphertexts here)")
        if self.dp is not None and self.aggregator not in ("fedavg", "fedprox"):
            raise ConfigError("--dp is accounted for the mean; use --aggregator fedavg or fedprox")
        if self.secagg is not None and self.n_sites < 3:
            raise ConfigError("--secagg needs at least 3 sites")

    @property
    def secure(self) -> str:
        """``none``, ``secagg+`` or ``ckks``."""
        return "secagg+" if self.secagg is not None else "ckks" if self.he else "none"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for reports and the ledger."""
        return {
            "n_sites": self.n_sites, "rounds": self.rounds, "partition": str(self.partition),
            "aggregator": self.aggregator, "secure_aggregation": self.secure, "seed": self.seed,
            "secagg": None if self.secagg is None else {"num_shares": self.secagg.num_shares,
                                                        "reconstruction_threshold": self.secagg.reconstruction_threshold},
            "dp": None if self.dp is None else {"noise_multiplier": self.dp.noise_multiplier,
                                                "clip_norm": self.dp.clip_norm, "delta": self.dp.delta,
                                                "max_epsilon": self.dp.max_epsilon},
            "attack": None if self.attack is None else {"kind": self.attack.kind, "fraction": self.attack.fraction},
            "train": {"hidden": list(self.train.hidden), "local_epochs": self.train.local_epochs,
                      "batch_size": self.train.batch_size, "lr": self.train.lr,
                      "dp_sgd": None if self.train.dp_sgd is None else list(self.train.dp_sgd)},
        }


@dataclass
class FLResult:
    """The outcome of a run: final metrics, per-round records, privacy spent, timings, ledger indices."""

    path: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    rounds: list[RoundRecord]
    epsilon: float | None
    round_times: list[float]
    ledger_indices: list[int]
    malicious_sites: list[int]
    final_weights: list[npt.NDArray[np.float32]]
    backdoor_success: float | None = None
    stopped: str | None = None
    model_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON document ``fl simulate --json`` prints."""
        return {
            "path": self.path, "config": self.config, "metrics": self.metrics, "epsilon": self.epsilon,
            "round_times": [round(t, 4) for t in self.round_times], "ledger_indices": self.ledger_indices,
            "model_ledger_index": self.model_index, "malicious_sites": self.malicious_sites,
            "backdoor_success": self.backdoor_success, "stopped": self.stopped,
            "rounds": [{"round": r.round, "metrics": r.metrics, "rejected": r.rejected, "epsilon": r.epsilon,
                        "aggregate_sha256": r.aggregate_sha256} for r in self.rounds],
        }


@dataclass
class Plan:
    """The materialized set-up of a run: partitions, malicious ids, model factory, evaluation, root set."""

    config: FLConfig
    data: FederatedData
    parts: list[npt.NDArray[np.int64]]
    malicious: frozenset[int]
    root_idx: npt.NDArray[np.int64]

    def new_model(self) -> MLPModel:
        """The shared initial model (same seed on every party)."""
        return MLPModel(self.data.n_features, len(self.data.classes), self.config.train.hidden,
                        seed=self.config.train.model_seed)

    def site(self, k: int) -> Site:
        """Build site ``k`` with its partition and (if malicious) its attack."""
        idx = self.parts[k]
        return Site(k, self.data.X_train[idx], self.data.y_train[idx], len(self.data.classes), self.config.train,
                    attack=self.config.attack if k in self.malicious else None, n_sites=self.config.n_sites,
                    seed=self.config.seed)

    def evaluate(self, weights: list[npt.NDArray[Any]]) -> dict[str, Any]:
        """Score ``weights`` on the held-out test split."""
        model = self.new_model()
        model.set_weights(weights)
        return classification_metrics(self.data.y_test, model.predict(self.data.X_test), self.data.classes)

    def backdoor_success(self, weights: list[npt.NDArray[Any]]) -> float | None:
        """Share of triggered attack test rows classified benign (None unless the attack is a backdoor)."""
        attack = self.config.attack
        if attack is None or attack.kind != "backdoor":
            return None
        rows = self.data.X_test[self.data.y_test != 0]
        model = self.new_model()
        model.set_weights(weights)
        pred = model.predict(apply_trigger(rows, attack.trigger_features, attack.trigger_value))
        return round(float(np.mean(pred == 0)), 6)

    def root_update(self) -> Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]:
        """FLTrust's server update: one local-training pass on the clean root set."""
        X, y = self.data.X_train[self.root_idx], self.data.y_train[self.root_idx]
        model = self.new_model()
        train = self.config.train
        counter = iter(range(1_000_000))

        def update(global_flat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            from trustmesh.federated._aggregate import unflatten

            model.set_weights(unflatten(global_flat, model.get_weights()))
            model.train_epochs(X, y, train.local_epochs, batch_size=train.batch_size, lr=train.lr,
                               seed=self.config.seed + next(counter))
            return flatten(model.get_weights()) - global_flat

        return update

    def aggregator(self) -> Aggregator:
        """The configured aggregation rule."""
        c = self.config
        f = c.assumed_malicious if c.assumed_malicious is not None else max(1, len(self.malicious))
        beta = min(0.45, max(0.1, f / c.n_sites))
        return make_aggregator(c.aggregator, num_malicious=f, beta=beta, proximal_mu=c.proximal_mu,
                               root_update=self.root_update() if c.aggregator == "fltrust" else None)


def plan_run(config: FLConfig, data: FederatedData) -> Plan:
    """Partition the data and pick malicious sites; FLTrust's root set is held out of the sites' pool."""
    n = len(data.y_train)
    pool = np.arange(n, dtype=np.int64)
    root_idx = np.zeros(0, dtype=np.int64)
    if config.aggregator == "fltrust":
        rng = np.random.default_rng(config.seed + 3)
        root_idx = np.sort(rng.choice(n, size=min(config.root_size, n // 10), replace=False)).astype(np.int64)
        pool = np.setdiff1d(pool, root_idx)
    groups = None if data.groups_train is None else data.groups_train[pool]
    try:
        parts = partition(config.partition, data.y_train[pool], config.n_sites, config.seed, groups=groups)
    except ValueError as exc:
        raise ConfigError(f"--partition {config.partition}: {exc}") from exc
    parts = [pool[p] for p in parts]
    bad = malicious_sites(config.n_sites, config.attack.fraction, config.seed) if config.attack else frozenset()
    return Plan(config, data, parts, bad, root_idx)


def limit_torch_threads(n: int = 1) -> None:
    """Use ``n`` torch threads: many small sites on few cores run faster without oversubscription."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(n)


def train_centralized(config: FLConfig, data: FederatedData) -> dict[str, Any]:
    """Train the same model on all training rows for ``rounds * local_epochs`` epochs (the baseline)."""
    limit_torch_threads()
    plan = plan_run(FLConfig(n_sites=1, rounds=config.rounds, seed=config.seed, train=config.train), data)
    model = plan.new_model()
    t = config.train
    t0 = time.perf_counter()
    for epoch in range(config.rounds * t.local_epochs):
        model.train_epochs(data.X_train, data.y_train, 1, batch_size=t.batch_size, lr=t.lr,
                           seed=config.seed * 100_003 + epoch)
    return {"path": "centralized", "metrics": plan.evaluate(model.get_weights()),
            "epochs": config.rounds * t.local_epochs, "seconds": round(time.perf_counter() - t0, 3)}


def run_inprocess(config: FLConfig, data: FederatedData, *, recorder: RoundRecorder | None = None) -> FLResult:
    """Run all rounds in this process with the same Site/Coordinator code as the Flower path."""
    from trustmesh.errors import PrivacyBudgetExceeded
    from trustmesh.federated._aggregate import unflatten

    limit_torch_threads()
    plan = plan_run(config, data)
    sites = [plan.site(k) for k in range(config.n_sites)]
    coord = Coordinator(plan.new_model().get_weights(), plan.aggregator(), dp=config.dp, evaluate=plan.evaluate,
                        recorder=recorder, secure=config.secure)
    keyring = CkksKeyring.generate() if config.he == "ckks" else None
    public = keyring.public_context() if keyring is not None else b""
    mu = config.proximal_mu if config.aggregator == "fedprox" else 0.0
    clip = config.dp.clip_norm if (config.dp is not None and config.secure != "none") else None
    stopped = None
    for rnd in range(1, config.rounds + 1):
        try:
            coord.begin_round(rnd)
        except PrivacyBudgetExceeded as exc:
            stopped = str(exc)
            break
        t0 = time.perf_counter()
        results = [s.fit(coord.weights, rnd, proximal_mu=mu, clip_norm=clip) for s in sites]
        if keyring is not None:
            total = sum(n for _, n, _ in results)
            cts = [keyring.encrypt(flatten(w) * n) for w, n, _ in results]
            summed = add_ciphertexts(public, [CkksCiphertext.from_bytes(c.to_bytes()) for c in cts])
            mean = keyring.decrypt(summed) / total
            coord.aggregate_secure(rnd, [str(k) for k in range(len(sites))], unflatten(mean, coord.weights),
                                   started=t0)
        else:
            coord.aggregate(rnd, [Submission(str(k), w, n) for k, (w, n, _) in enumerate(results)], started=t0)
    rec = coord.recorder
    return FLResult(
        path="in-process", config=config.describe(), metrics=rec.records[-1].metrics if rec.records else {},
        rounds=list(rec.records), epsilon=None if coord.accountant is None else coord.accountant.epsilon,
        round_times=coord.round_times, ledger_indices=list(rec.indices), malicious_sites=sorted(plan.malicious),
        final_weights=coord.weights, backdoor_success=plan.backdoor_success(coord.weights), stopped=stopped,
    )
