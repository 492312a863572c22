"""A federated run's configuration and result, the shared set-up, and the in-process driver.

The in-process driver runs the same ``Site`` and ``Coordinator`` code as the Flower simulation, without
Flower's transport; it exists for the robustness/DP sweeps where Ray start-up would dominate. Results
say which path produced them (``path``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from trustmesh.errors import ConfigError
from trustmesh.federated._aggregate import (
    DEFENCES,
    Aggregator,
    ServerOptimizer,
    flatten,
    fltrust_root_set,
    fltrust_root_steps,
    make_aggregator,
    wrap_aggregator,
)
from trustmesh.federated._attacks import AttackSpec, apply_trigger, malicious_sites
from trustmesh.federated._autoencoder import AnomalyScorer, AutoencoderModel, anomaly_metrics
from trustmesh.federated._coordinator import Coordinator, Submission
from trustmesh.federated._data import FederatedData
from trustmesh.federated._metrics import classification_metrics
from trustmesh.federated._model import MLPModel, class_weights
from trustmesh.federated._partition import PartitionSpec, partition
from trustmesh.federated._record import RoundRecord, RoundRecorder
from trustmesh.federated._site import Site, TrainConfig
from trustmesh.privacy import (
    CkksCiphertext,
    CkksKeyring,
    DPConfig,
    DPSGDAccountant,
    SecAggConfig,
    add_ciphertexts,
    add_plaintext,
)

__all__ = ["FLConfig", "FLResult", "Plan", "plan_run", "run_inprocess", "train_centralized"]

AGGREGATORS = ("fedavg", "fedprox", "median", "trimmed-mean", "multikrum", "fltrust")
MODELS = ("mlp", "autoencoder")


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
    root_size: int = 500  # FLTrust's clean root set: stratified training rows held out of the sites' pool
    defence: str | None = None  # pre-aggregation defence wrapped around the rule: normbound|centered-clip|bulyan
    model: str = "mlp"  # mlp (classifier) | autoencoder (anomaly model trained on benign rows only)
    target_fpr: float = 0.01  # the autoencoder's threshold flags at most this share of benign validation rows
    server_opt: str = "none"  # server optimiser on the aggregate: none | fedavgm | fedadam | fedyogi [:lr=..,...]

    def __post_init__(self) -> None:
        if self.n_sites < 1:
            raise ConfigError(f"--sites must be >= 1, got {self.n_sites}")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")
        if self.aggregator not in AGGREGATORS:
            raise ConfigError(f"--aggregator must be one of {', '.join(AGGREGATORS)}, got {self.aggregator!r}")
        if self.model not in MODELS:
            raise ConfigError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if not 0.0 <= self.target_fpr < 1.0:
            raise ConfigError(f"--target-fpr must be in [0, 1), got {self.target_fpr}")
        if self.model == "autoencoder" and self.train.dp_sgd is not None:
            raise ConfigError("--dp-sgd is implemented for --model mlp only (use central --dp with the autoencoder)")
        try:
            ServerOptimizer.parse(self.server_opt)
        except ValueError as exc:
            raise ConfigError(f"--server-opt: {exc}") from exc
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
        if self.dp is not None and self.aggregator not in ("fedavg", "fedprox"):
            raise ConfigError("--dp is accounted for the mean; use --aggregator fedavg or fedprox")
        if self.secagg is not None and self.n_sites < 3:
            raise ConfigError("--secagg needs at least 3 sites")
        if self.defence is not None:
            if self.defence not in DEFENCES:
                raise ConfigError(f"--defence must be one of {', '.join(DEFENCES)}, got {self.defence!r}")
            if secure or self.dp is not None:
                raise ConfigError(f"--defence {self.defence} needs each site's update in the clear and is not "
                                  "accounted for DP; it cannot be combined with --secagg, --he or --dp")
        if self.assumed_malicious is not None and self.assumed_malicious < 0:
            raise ConfigError(f"--assumed-malicious must be >= 0, got {self.assumed_malicious}")
        # DP-SGD is purely local (each site's update is already private), so it combines with any
        # aggregator, SecAgg+ and CKKS; only these combinations are refused
        if self.train.dp_sgd is not None and self.dp is not None:
            raise ConfigError("--dp (client-level) and --dp-sgd (record-level) are alternatives here; pick one")
        if self.train.head_weights == "classes":
            self._check_class_head(secure)
        if self.train.dp_sgd is not None and self.train.class_weight != "none":
            raise ConfigError("--class-weight with --dp-sgd: the weights come from the site's label counts, which "
                              "the DP-SGD accountant does not cover; use --class-weight none")

    def _check_class_head(self, secure: bool) -> None:
        """Refuse ``--head-weights classes`` where the scaled updates are unsound (one line each)."""
        why = None
        if self.model != "mlp":
            why = f"--model {self.model} has no class output layer"
        elif self.dp is not None:
            why = ("--dp averages clipped updates with equal weights (sensitivity C per site), so the row "
                   "factors (up to N/n_k) would not cancel and would change the sensitivity")
        elif self.train.dp_sgd is not None:
            why = "the row factors come from label counts, which the --dp-sgd accountant does not cover"
        elif self.aggregator not in ("fedavg", "fedprox"):
            why = f"--aggregator {self.aggregator} is not an example-weighted mean of the updates"
        elif self.defence is not None:
            why = f"--defence {self.defence} bounds or filters the updates, and the scaled ones are not comparable"
        if why is not None:
            raise ConfigError(f"--head-weights classes: {why}; use --head-weights rows")

    @property
    def secure(self) -> str:
        """``none``, ``secagg+`` or ``ckks``."""
        return "secagg+" if self.secagg is not None else "ckks" if self.he else "none"

    def server_optimizer(self) -> ServerOptimizer:
        """A fresh server optimiser for this run (its state starts empty)."""
        return ServerOptimizer.parse(self.server_opt)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for reports and the ledger."""
        return {
            "model": self.model, "target_fpr": self.target_fpr,
            "n_sites": self.n_sites, "rounds": self.rounds, "partition": str(self.partition),
            "aggregator": self.aggregator, "defence": self.defence, "assumed_malicious": self.assumed_malicious,
            "secure_aggregation": self.secure, "seed": self.seed, "server_opt": self.server_optimizer().config(),
            "secagg": None if self.secagg is None else {"num_shares": self.secagg.num_shares,
                                                        "reconstruction_threshold": self.secagg.reconstruction_threshold},
            "dp": None if self.dp is None else {"noise_multiplier": self.dp.noise_multiplier,
                                                "clip_norm": self.dp.clip_norm, "delta": self.dp.delta,
                                                "max_epsilon": self.dp.max_epsilon},
            "dp_sgd": None if self.train.dp_sgd is None else self.train.dp_sgd.describe(),
            "attack": None if self.attack is None else {"kind": self.attack.kind, "fraction": self.attack.fraction},
            "train": {"hidden": list(self.train.hidden), "local_epochs": self.train.local_epochs,
                      "batch_size": self.train.batch_size if self.train.batches_per_epoch is None else None,
                      "batches_per_epoch": self.train.batches_per_epoch, "lr": self.train.lr,
                      "class_weight": self.train.class_weight, "lr_decay": self.train.lr_decay,
                      "head_weights": self.train.head_weights,
                      "dp_sgd": None if self.train.dp_sgd is None
                      else [self.train.dp_sgd.noise_multiplier, self.train.dp_sgd.clip_norm]},
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
    privacy: dict[str, Any] | None = None  # the DP-SGD accountant's final state (per-site epsilon)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON document ``fl simulate --json`` prints."""
        return {
            "path": self.path, "config": self.config, "metrics": self.metrics, "epsilon": self.epsilon,
            "round_times": [round(t, 4) for t in self.round_times], "ledger_indices": self.ledger_indices,
            "model_ledger_index": self.model_index, "malicious_sites": self.malicious_sites,
            "backdoor_success": self.backdoor_success, "stopped": self.stopped, "privacy": self.privacy,
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
    _benign_rows: npt.NDArray[np.float32] | None = field(default=None, init=False, repr=False)
    _global_counts: npt.NDArray[np.int64] | None = field(default=None, init=False, repr=False)

    def new_model(self) -> MLPModel | AutoencoderModel:
        """The shared initial model (same seed on every party)."""
        if self.config.model == "autoencoder":
            return AutoencoderModel(self.data.n_features, self.config.train.hidden, seed=self.config.train.model_seed)
        return MLPModel(self.data.n_features, len(self.data.classes), self.config.train.hidden,
                        seed=self.config.train.model_seed)

    def dp_sgd_accountant(self, site_rows: Mapping[str, int] | None = None) -> DPSGDAccountant | None:
        """The coordinator's record-level accountant for ``--dp-sgd`` (None without it).

        ``site_rows`` are the sites' row counts (what each reports as ``num_examples``); by default
        they are recomputed from the plan, poisoned rows included.
        """
        sgd = self.config.train.dp_sgd
        if sgd is None:
            return None
        rows = dict(site_rows) if site_rows is not None else {
            str(k): self.site(k).num_examples for k in range(self.config.n_sites)}
        try:
            train = self.config.train
            return DPSGDAccountant(sgd, rows, batch_size={site: train.site_batch_size(n) for site, n in rows.items()},
                                   local_epochs=train.local_epochs)
        except ValueError as exc:
            raise ConfigError(f"--dp-sgd: {exc}") from exc

    def site(self, k: int) -> Site:
        """Build site ``k`` with its partition and (if malicious) its attack.

        With ``weight_counts="global"`` the site's class weights come from :meth:`round_zero`, and with
        ``head_weights="classes"`` the factors by which it scales its output rows' update.
        """
        site = self._bare_site(k)
        if self.config.train.weight_counts == "global" and self.config.train.class_weight != "none":
            site.use_global_counts(self.round_zero())
        if self.config.train.head_weights == "classes":
            site.use_head_counts(self.round_zero())
        return site

    def _bare_site(self, k: int) -> Site:
        idx = self.parts[k]
        return Site(k, self.data.X_train[idx], self.data.y_train[idx], len(self.data.classes), self.config.train,
                    attack=self.config.attack if k in self.malicious else None, n_sites=self.config.n_sites,
                    seed=self.config.seed, model=self.new_model())

    def round_zero(self) -> npt.NDArray[np.int64]:
        """Round 0: the sum of every site's label-count vector (:meth:`Site.label_counts`).

        Each site sends only its count per class (what a secure sum of those vectors reveals is this
        total); no row or feature value leaves a site. Computed once per plan.
        """
        if self._global_counts is None:
            total = np.zeros(len(self.data.classes), dtype=np.int64)
            for k in range(self.config.n_sites):
                total += self._bare_site(k).label_counts()
            self._global_counts = total
        return self._global_counts

    def evaluate(self, weights: list[npt.NDArray[Any]]) -> dict[str, Any]:
        """Score ``weights`` on the held-out test split."""
        model = self.new_model()
        model.set_weights(weights)
        if isinstance(model, AutoencoderModel):
            return anomaly_metrics(model, self.benign_calibration_rows(), self.data.X_test, self.data.y_test,
                                   self.data.classes, target_fpr=self.config.target_fpr)
        return classification_metrics(self.data.y_test, model.predict(self.data.X_test), self.data.classes)

    def backdoor_success(self, weights: list[npt.NDArray[Any]]) -> float | None:
        """Share of triggered attack test rows classified benign (None unless the attack is a backdoor)."""
        attack = self.config.attack
        if attack is None or attack.kind != "backdoor":
            return None
        rows = self.data.X_test[self.data.y_test != 0]
        model = self.new_model()
        model.set_weights(weights)
        triggered = apply_trigger(rows, attack.trigger_features, attack.trigger_value)
        if isinstance(model, AutoencoderModel):
            scorer = AnomalyScorer.calibrate(model, self.benign_calibration_rows(), self.config.target_fpr)
            return round(float(np.mean(scorer.scores(model, triggered) < scorer.threshold)), 6)
        pred = model.predict(triggered)
        return round(float(np.mean(pred == 0)), 6)

    def benign_calibration_rows(self) -> npt.NDArray[np.float32]:
        """Scaled benign rows that calibrate the autoencoder's threshold: the server-held validation
        share of the training split; data without one (synthetic tests) falls back to the benign
        training rows. Computed once per plan: every round's evaluation recalibrates on them."""
        if self._benign_rows is None:
            d = self.data
            if d.X_val is not None and d.y_val is not None and d.preprocessor is not None:
                rows = d.preprocessor.transform(d.X_val[d.y_val == 0])
            else:
                rows = d.X_train[d.y_train == 0]
            self._benign_rows = np.asarray(rows, dtype=np.float32)
        return self._benign_rows

    def root_steps(self) -> int:
        """Optimizer steps of FLTrust's root update: the median site's (see :func:`fltrust_root_steps`)."""
        return fltrust_root_steps([len(p) for p in self.parts], self.config.train.local_epochs, self._site_batch())

    def _site_batch(self) -> int:
        """The median site's local batch size."""
        return self.config.train.site_batch_size(int(np.median([len(p) for p in self.parts])))

    def root_update(self) -> Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]:
        """FLTrust's server update: as many optimizer steps on the clean root set as a typical site takes.

        The root set is cycled (fresh shuffles, each row used equally often) to ``root_steps()`` batches,
        so the root update's norm, to which every site update is rescaled, is that of a site's update
        (Cao et al., NDSS 2021, use the same local iterations on the server as on the clients).
        """
        X, y = self.data.X_train[self.root_idx], self.data.y_train[self.root_idx]
        if len(y) == 0:
            raise ConfigError("fltrust needs a root set; plan_run holds one out when --aggregator fltrust")
        model = self.new_model()
        train = self.config.train
        batch = self._site_batch()
        rows = self.root_steps() * batch
        weights = class_weights(y, len(self.data.classes), train.class_weight)
        counter = iter(range(1_000_000))

        def update(global_flat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            from trustmesh.federated._aggregate import unflatten

            k = next(counter)
            rng = np.random.default_rng([self.config.seed, 3, k])
            order = np.concatenate([rng.permutation(len(y)) for _ in range(-(-rows // len(y)))])[:rows]
            model.set_weights(unflatten(global_flat, model.get_weights()))
            model.train_epochs(X[order], y[order], 1, batch_size=batch, lr=train.lr,
                               seed=self.config.seed + k, class_weights=weights)
            return flatten(model.get_weights()) - global_flat

        return update

    def aggregator(self) -> Aggregator:
        """The configured aggregation rule."""
        c = self.config
        f = c.assumed_malicious if c.assumed_malicious is not None else max(1, len(self.malicious))
        beta = min(0.45, max(0.1, f / c.n_sites))
        fltrust = c.aggregator == "fltrust"
        rule = make_aggregator(
            c.aggregator, num_malicious=f, beta=beta, proximal_mu=c.proximal_mu,
            root_update=self.root_update() if fltrust else None,
            root={"rows": int(len(self.root_idx)), "steps": self.root_steps(), "stratified": True} if fltrust else None,
        )
        return rule if c.defence is None else wrap_aggregator(c.defence, rule, num_malicious=f)


def plan_run(config: FLConfig, data: FederatedData) -> Plan:
    """Partition the data and pick malicious sites; FLTrust's root set is held out of the sites' pool.

    The root set is a label-stratified draw of ``root_size`` training rows (at most a tenth of them),
    never test rows. A backdoor attack without an explicit trigger gets the pattern
    :func:`~trustmesh.federated.choose_trigger` picks from the training pool, the same for every
    malicious site and for the evaluation of ``backdoor_success`` (and for a ``backdoor:0.0`` baseline).
    """
    n = len(data.y_train)
    pool = np.arange(n, dtype=np.int64)
    root_idx = np.zeros(0, dtype=np.int64)
    if config.aggregator == "fltrust":
        rng = np.random.default_rng(config.seed + 3)
        root_idx = fltrust_root_set(data.y_train, max(1, min(config.root_size, n // 10)), rng)
        pool = np.setdiff1d(pool, root_idx)
    if config.attack is not None and config.attack.kind == "backdoor" and config.attack.trigger_features is None:
        try:
            config = replace(config, attack=config.attack.with_trigger_for(data.X_train[pool], data.y_train[pool]))
        except ValueError as exc:
            raise ConfigError(f"--attack backdoor: {exc}") from exc
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
    plan = plan_run(FLConfig(n_sites=1, rounds=config.rounds, seed=config.seed, train=config.train,
                             model=config.model, target_fpr=config.target_fpr), data)
    model = plan.new_model()
    t = config.train
    # the same loss as the sites: class weights from the (pooled) training labels
    weights = class_weights(data.y_train, len(data.classes), t.class_weight)
    t0 = time.perf_counter()
    for epoch in range(config.rounds * t.local_epochs):
        model.train_epochs(data.X_train, data.y_train, 1, batch_size=t.site_batch_size(len(data.y_train)), lr=t.lr,
                           seed=config.seed * 100_003 + epoch, class_weights=weights)
    return {"path": "centralized", "metrics": plan.evaluate(model.get_weights()),
            "epochs": config.rounds * t.local_epochs, "seconds": round(time.perf_counter() - t0, 3)}


def run_inprocess(config: FLConfig, data: FederatedData, *, recorder: RoundRecorder | None = None,
                  initial_weights: list[npt.NDArray[np.float32]] | None = None) -> FLResult:
    """Run all rounds in this process with the same Site/Coordinator code as the Flower path.

    ``initial_weights`` (default: the seeded model) start the run, e.g. weights pre-trained on public
    data (:func:`trustmesh.federated.pretrained_weights`); sites receive them as round 1's model.
    """
    from trustmesh.errors import PrivacyBudgetExceeded
    from trustmesh.federated._aggregate import unflatten

    limit_torch_threads()
    plan = plan_run(config, data)
    sites = [plan.site(k) for k in range(config.n_sites)]
    sgd = plan.dp_sgd_accountant({str(s.site_id): s.num_examples for s in sites})
    start = plan.new_model().get_weights()
    if initial_weights is not None:
        template = plan.new_model()
        template.set_weights(initial_weights)  # checks every array's shape against the run's model
        start = template.get_weights()
    coord = Coordinator(start, plan.aggregator(), dp=config.dp, evaluate=plan.evaluate,
                        recorder=recorder, secure=config.secure, dp_sgd=sgd,
                        server_opt=config.server_optimizer())
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
            # under central DP sites clip and weigh equally (sensitivity C per site), as in the Flower path
            weights_n = [(w, 1 if clip is not None else n) for w, n, _ in results]
            total = sum(n for _, n in weights_n)
            cts = [keyring.encrypt(flatten(w) * n) for w, n in weights_n]
            summed = add_ciphertexts(public, [CkksCiphertext.from_bytes(c.to_bytes()) for c in cts])
            noise = coord.sum_noise(summed.length)
            if noise is not None:
                summed = add_plaintext(public, summed, noise)  # the server noises a sum it cannot read
            mean = keyring.decrypt(summed) / total
            coord.aggregate_secure(rnd, [str(k) for k in range(len(sites))], unflatten(mean, coord.weights),
                                   started=t0, noised=noise is not None)
        else:
            coord.aggregate(rnd, [Submission(str(k), w, n) for k, (w, n, _) in enumerate(results)], started=t0)
    rec = coord.recorder
    return FLResult(
        path="in-process", config=config.describe(), metrics=rec.records[-1].metrics if rec.records else {},
        rounds=list(rec.records), epsilon=coord.epsilon,
        round_times=coord.round_times, ledger_indices=list(rec.indices), malicious_sites=sorted(plan.malicious),
        final_weights=coord.weights, backdoor_success=plan.backdoor_success(coord.weights), stopped=stopped,
        privacy=coord.privacy,
    )
