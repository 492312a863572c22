"""Flower 1.41 glue: the site ``ClientApp``, the coordinator ``ServerApp`` and ``simulate``.

Secure aggregation is our own mod and fit workflow (:mod:`trustmesh.federated._secagg_flower`,
SecAgg+'s message flow with ChaCha20/HKDF masks) inside Flower's legacy ``DefaultWorkflow``, so
every mode here uses that API with one legacy ``Strategy`` that delegates to
:class:`~trustmesh.federated.Coordinator`: one code path for plain, robust, DP, SecAgg and CKKS rounds.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from trustmesh.errors import ConfigError, FederatedError, PrivacyBudgetExceeded
from trustmesh.federated._aggregate import flatten, unflatten
from trustmesh.federated._bounded import BoundSpec
from trustmesh.federated._coordinator import Coordinator, Submission
from trustmesh.federated._data import FederatedData
from trustmesh.federated._record import RoundRecorder
from trustmesh.federated._run import FLConfig, FLResult, Plan, limit_torch_threads, plan_run
from trustmesh.federated._secagg_flower import BoundStats, MaskedAggregationWorkflow, make_masking_mod
from trustmesh.federated._site import Site
from trustmesh.privacy import CkksCiphertext, CkksKeyring, add_ciphertexts, add_plaintext

__all__ = ["FlowerRun", "build_client_app", "build_server_app", "run_server_workflow", "simulate"]

_log = logging.getLogger(__name__)

# Test/evaluation faults a site can be told to commit: a wrong-shaped update, NaNs, a replay of its
# round-1 update, dropping out (raising) during training, or (under --secagg with a ZK bound)
# sending a boosted update with a proof that does not cover it.
FAULTS = ("wrong-shape", "nan", "replay", "drop", "bad-proof")
DEPLOY_PULL_INTERVAL = 0.2  # seconds between a deployed ServerApp's polls for replies (Flower's: 3)
SIM_PULL_INTERVAL = 0.01  # seconds between the in-memory grid's polls for replies (Flower's default: 0.1)
#: FitIns config key: the model travels as one float32 vector instead of one array per layer. Flower
#: sends every array as two objects (Array + ArrayChunk), each one request per hop and one store write
#: at the SuperLink: an MLP of 3 layers went as 16 objects per instruction and 18 per reply, packed 6 and 8.
PACKED = "packed"


def _pack(arrays: list[npt.NDArray[Any]]) -> list[npt.NDArray[np.float32]]:
    """The model's arrays as one float32 vector (what the sites' torch models hold)."""
    return [np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])]


def _unpack(arrays: list[npt.NDArray[Any]], like: list[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
    """Arrays shaped like ``like`` from a packed vector; anything of another size is returned as it came,
    so that the coordinator rejects its shape as it would an unpacked update of the wrong shape."""
    if len(arrays) != 1:
        return arrays
    try:
        return list(unflatten(np.asarray(arrays[0]).ravel(), like))
    except ValueError:
        return arrays


@dataclass
class FlowerRun:
    """Server-side state shared between the ServerApp thread and the caller of :func:`simulate`."""

    coordinator: Coordinator
    config: FLConfig
    ckks_public: bytes = b""
    ckks_sum: bytes | None = None
    ckks_total: float = 0.0
    stopped: str | None = None
    seen_ciphertexts: set[str] = field(default_factory=set)
    masked_observations: list[dict[str, Any]] = field(default_factory=list)
    bound_stats: list[BoundStats] = field(default_factory=list)
    #: per round, the slowest reporting site's local training time (its ``fit_seconds`` metric)
    fit_seconds: list[float | None] = field(default_factory=list)

    def round_overhead(self) -> list[float | None]:
        """Per round: round time − the slowest site's training time (what the transport and protocol cost)."""
        times = self.coordinator.round_times
        return [None if f is None else round(t - f, 6) for t, f in zip(times, self.fit_seconds, strict=False)]


def _site_client(site: Site, faults: dict[int, str], keyring_bytes: bytes | None,
                 initial: list[npt.NDArray[Any]]) -> Any:
    from flwr.client import NumPyClient

    keyring = CkksKeyring.from_bytes(keyring_bytes) if keyring_bytes else None

    class _Client(NumPyClient):
        def fit(self, parameters: list[npt.NDArray[Any]], config: dict[str, Any]) -> Any:
            rnd = int(config.get("round", 0))
            fault = faults.get(site.site_id)
            if fault == "drop" and rnd >= int(config.get("drop_from", 1)):
                raise RuntimeError(f"site {site.site_id} drops out in round {rnd}")
            packed = bool(config.get(PACKED, False))
            global_w = _unpack(list(parameters), site.model.get_weights()) if packed else parameters
            if keyring is not None and "ckks_sum" in config:
                ct = CkksCiphertext.from_bytes(bytes(config["ckks_sum"]))
                flat = keyring.decrypt(ct) / float(config["ckks_total"])
                global_w = unflatten(flat, site.model.get_weights())
            clip = float(config["clip_norm"]) if "clip_norm" in config else None
            t0 = time.perf_counter()
            weights, n, metrics = site.fit(list(global_w), rnd, proximal_mu=float(config.get("proximal_mu", 0.0)),
                                           clip_norm=clip)
            fit_seconds = time.perf_counter() - t0
            if fault == "replay" and rnd >= 2:
                # resend the round-1 update; recomputed (training is seeded and deterministic) because
                # simulated clients keep no Python state between rounds
                weights = site.fit(list(initial), 1)[0]
            elif fault == "nan":
                weights = [w.copy() for w in weights]
                weights[0].flat[0] = np.nan
            elif fault == "wrong-shape":
                weights = [w.ravel()[:-1].copy() for w in weights]
            if clip is not None:
                # DP under SecAgg+: the protocol weights by example count; equal weights keep the
                # sensitivity of the mean at C/n, which is what the accountant assumes
                n = 1
            metrics = {**metrics, "site": site.site_id, "fit_seconds": fit_seconds}
            if keyring is not None:
                ct_bytes = keyring.encrypt(flatten(weights) * n).to_bytes()
                return [np.frombuffer(ct_bytes, dtype=np.uint8).copy()], n, metrics
            return (_pack(list(weights)) if packed else weights), n, metrics

        def evaluate(self, parameters: list[npt.NDArray[Any]], config: dict[str, Any]) -> Any:
            return 0.0, 1, {}

    return _Client()


def build_client_app(
    plan: Plan, *, faults: dict[int, str] | None = None, keyring_bytes: bytes | None = None,
    secagg: bool = False, site_of: Callable[[Any], int] | None = None,
) -> Any:
    """Build the sites' ``ClientApp``: partition ``partition-id`` of ``plan`` trains locally.

    ``site_of(context)`` maps a Flower context to a site index (default: ``node_config['partition-id']``).
    """
    from flwr.app import Context
    from flwr.clientapp import ClientApp

    fault_map = dict(faults or {})
    for k, v in fault_map.items():
        if v not in FAULTS:
            raise ValueError(f"fault for site {k} must be one of {FAULTS}, got {v!r}")
    cache: dict[int, Any] = {}

    def client_fn(context: Context) -> Any:
        limit_torch_threads()
        k = site_of(context) if site_of is not None else int(context.node_config["partition-id"])
        if k not in cache:
            cache[k] = _site_client(plan.site(k), fault_map, keyring_bytes, plan.new_model().get_weights())
        return cache[k].to_client()

    def fault_of(context: Context) -> str | None:
        return fault_map.get(site_of(context) if site_of is not None else int(context.node_config["partition-id"]))

    return ClientApp(client_fn=client_fn, mods=[make_masking_mod(fault_of)] if secagg else [])


def _strategy(run: FlowerRun) -> Any:
    from flwr.common import FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import Strategy

    cfg = run.config
    coord = run.coordinator

    class TrustmeshStrategy(Strategy):
        """Legacy strategy delegating every decision to the Coordinator."""

        def __init__(self) -> None:
            self._started = 0.0

        def initialize_parameters(self, client_manager: Any) -> Parameters:
            return ndarrays_to_parameters(coord.weights)

        def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> Any:
            try:
                coord.begin_round(server_round)
            except PrivacyBudgetExceeded as exc:
                run.stopped = str(exc)
                _log.warning("stopping: %s", exc)
                return []
            if not client_manager.wait_for(cfg.n_sites, timeout=600):
                raise FederatedError(f"only {client_manager.num_available()} of {cfg.n_sites} sites connected")
            clients = client_manager.sample(num_clients=cfg.n_sites, min_num_clients=cfg.n_sites)
            self._started = time.perf_counter()
            from trustmesh._supernode import trace

            trace("serverapp", f"round {server_round} configure_fit")
            conf: dict[str, Any] = {"round": server_round}
            if cfg.aggregator == "fedprox":
                conf["proximal_mu"] = cfg.proximal_mu
            if cfg.dp is not None and cfg.secure != "none":
                conf["clip_norm"] = cfg.dp.clip_norm
            params = ndarrays_to_parameters(coord.weights)
            if cfg.secure == "none":  # plain rounds: one vector each way (SecAgg+ and CKKS have their own)
                conf[PACKED] = True
                params = ndarrays_to_parameters(_pack(coord.weights))
            if cfg.secure == "ckks" and run.ckks_sum is not None:
                conf["ckks_sum"] = run.ckks_sum
                conf["ckks_total"] = run.ckks_total
                params = ndarrays_to_parameters([np.zeros(1, dtype=np.float32)])
            return [(c, FitIns(params, dict(conf))) for c in clients]

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            from trustmesh._supernode import trace

            trace("serverapp", f"round {server_round} aggregate_fit start")
            sites = [str(int(res.metrics.get("site", -1))) for _, res in results]
            fits = [float(res.metrics["fit_seconds"]) for _, res in results
                    if isinstance(res.metrics.get("fit_seconds"), (int, float))]
            if failures:
                _log.warning("round %d: %d sites failed", server_round, len(failures))
            if not results:
                return None, {}
            run.fit_seconds.append(max(fits) if fits else None)
            if cfg.secure == "secagg+":
                # every FitRes carries the unmasked aggregate; single updates were never visible
                agg = parameters_to_ndarrays(results[0][1].parameters)
                masked = None
                if run.masked_observations:
                    masked = run.masked_observations[-1].get("commitment")
                stats = run.bound_stats[-1] if run.bound_stats and run.bound_stats[-1].round == server_round else None
                coord.aggregate_secure(server_round, sites, agg, masked_commitment=masked, started=self._started,
                                       rejected=stats.rejected if stats is not None else None)
            elif cfg.secure == "ckks":
                cts, commits, rejected = [], {}, {}
                for site, (_, res) in zip(sites, results, strict=True):
                    raw = bytes(parameters_to_ndarrays(res.parameters)[0].astype(np.uint8).tobytes())
                    digest = hashlib.sha256(raw).hexdigest()
                    commits[site] = digest
                    try:
                        ct = CkksCiphertext.from_bytes(raw)
                    except Exception as exc:  # noqa: BLE001 - any parse failure is a rejection
                        rejected[site] = f"bad ciphertext ({exc})"
                        continue
                    if digest in run.seen_ciphertexts:
                        rejected[site] = "replay of an earlier ciphertext"
                        continue
                    run.seen_ciphertexts.add(digest)
                    cts.append((ct, res.num_examples))
                if cts:
                    summed = add_ciphertexts(run.ckks_public, [c for c, _ in cts])
                    noise = coord.sum_noise(summed.length)
                    if noise is not None:  # central DP: noise the sum the server cannot read
                        summed = add_plaintext(run.ckks_public, summed, noise)
                    run.ckks_sum = summed.to_bytes()
                    run.ckks_total = float(sum(n for _, n in cts))
                    sum_hash = hashlib.sha256(run.ckks_sum).hexdigest()
                else:
                    sum_hash = ""
                coord.aggregate_encrypted(server_round, sites, commits, sum_hash, started=self._started,
                                          rejected=rejected)
            else:
                subs = [Submission(site, _unpack(parameters_to_ndarrays(res.parameters), coord.weights),
                                   int(res.num_examples))
                        for site, (_, res) in zip(sites, results, strict=True)]
                coord.aggregate(server_round, subs, started=self._started)
            trace("serverapp", f"round {server_round} aggregated and evaluated")
            return ndarrays_to_parameters(coord.weights), {}

        def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: Any) -> Any:
            return []

        def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
            return None, {}

        def evaluate(self, server_round: int, parameters: Parameters) -> Any:
            return None

    return TrustmeshStrategy()


class _PollingGrid:
    """Wrap a deployment Grid so ``send_and_receive`` polls for replies every ``DEPLOY_PULL_INTERVAL`` s.

    Flower 1.41's HTTP grid sleeps 3 s between polls, which rounds every message round trip up to a
    multiple of 3 s. This uses the Grid's own ``push_messages``/``pull_messages``, with the same
    timeout semantics (None waits until every reply is in).
    """

    def __init__(self, grid: Any) -> None:
        self._grid = grid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        from trustmesh._supernode import trace

        messages = list(messages)
        trace("serverapp", f"push_messages start n={len(messages)}")
        ids = set(self._grid.push_messages(messages))
        trace("serverapp", "push_messages done")
        end = time.time() + (timeout if timeout is not None else 0.0)
        replies: list[Any] = []
        while timeout is None or time.time() < end:
            got = list(self._grid.pull_messages(ids))
            if got:
                trace("serverapp", f"pulled {len(got)} replies")
            replies.extend(got)
            ids.difference_update({m.metadata.reply_to_message_id for m in got})
            if not ids:
                break
            time.sleep(DEPLOY_PULL_INTERVAL)
        return replies


def run_server_workflow(grid: Any, context: Any, run: FlowerRun, max_weight: float) -> None:
    """Run all rounds on ``grid``: DefaultWorkflow, with our masked-aggregation fit workflow under --secagg.

    ``max_weight`` is no longer needed (masked sums live in Z_2^64); it stays for callers' signatures.
    """
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow

    cfg = run.config
    if isinstance(getattr(grid, "pull_interval", None), float):
        # The simulation's in-memory grid polls for replies every 100 ms by default, which adds up
        # to 0.1 s per message round trip: one per plain round, four per SecAgg+ round. Poll faster
        # so round times measure the protocol, not the poll (deployments use the gRPC grid).
        grid.pull_interval = min(grid.pull_interval, SIM_PULL_INTERVAL)
    elif hasattr(grid, "push_messages") and hasattr(grid, "pull_messages"):
        grid = _PollingGrid(grid)  # the deployment grid waits 3 s between reply polls
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg.rounds), strategy=_strategy(run))
    fit_workflow = None
    if cfg.secagg is not None:
        def observe(obs: dict[str, Any], stats: BoundStats) -> None:
            run.masked_observations.append(obs)
            run.bound_stats.append(stats)

        spec = None
        if cfg.secagg.zk_bound is not None:
            spec = BoundSpec(cfg.secagg.zk_clip, cfg.secagg.zk_bound, prove=True)
        fit_workflow = MaskedAggregationWorkflow(cfg.secagg, spec=spec, observer=observe)
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)


def build_server_app(run: FlowerRun, max_weight: float = 1e6) -> Any:
    """Build the coordinator's ``ServerApp`` around ``run`` (``max_weight``: SecAgg+'s largest example count)."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server_workflow(grid, context, run, max_weight)

    return app


def simulate(
    config: FLConfig, data: FederatedData, *, recorder: RoundRecorder | None = None,
    faults: dict[int, str] | None = None, num_cpus: int | None = None,
) -> tuple[FLResult, FlowerRun]:
    """Run ``config`` as a Flower simulation (Ray backend, one virtual SuperNode per site)."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.simulation import run_simulation

    opt = config.server_optimizer()
    if config.he == "ckks" and (opt.kind != "none" or opt.lr != 1.0):
        # the sites decrypt each round's mean and train from it; the server never reads a mean, so a
        # server optimiser could only be applied to the last one and the run would differ from in-process
        raise ConfigError(f"--he ckks on Flower takes no server optimiser (got --server-opt {config.server_opt}); "
                          "drop --server-opt or use --in-process")
    limit_torch_threads()
    plan = plan_run(config, data)
    coord = Coordinator(plan.new_model().get_weights(), plan.aggregator(), dp=config.dp, evaluate=plan.evaluate,
                        recorder=recorder, secure=config.secure, dp_sgd=plan.dp_sgd_accountant(),
                        server_opt=config.server_optimizer())
    keyring = CkksKeyring.generate() if config.he == "ckks" else None
    run = FlowerRun(coordinator=coord, config=config, ckks_public=keyring.public_context() if keyring else b"")
    client_app = build_client_app(plan, faults=faults, keyring_bytes=keyring.secret_bytes() if keyring else None,
                                  secagg=config.secagg is not None)
    server_app = build_server_app(run, max_weight=float(max(len(p) for p in plan.parts)))
    cpus = num_cpus or max(1, min(2, os.cpu_count() or 1))
    backend: dict[str, dict[str, Any]] = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "include_dashboard": False, "logging_level": "ERROR",
                             "log_to_driver": False}}
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=config.n_sites,
                       backend_config=backend)
    finally:
        with warnings.catch_warnings():
            # Ray's services open os.devnull for their helper processes and leave closing to the GC;
            # collect now, quietly, instead of surfacing that ResourceWarning later in our callers
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    if keyring is not None and run.ckks_sum is not None:
        # the driver holds the secret key as a site does: decrypt the last encrypted sum
        flat = keyring.decrypt(CkksCiphertext.from_bytes(run.ckks_sum)) / run.ckks_total
        metrics = coord.adopt_decrypted(unflatten(flat, coord.weights))
    else:
        metrics = coord.recorder.records[-1].metrics if coord.recorder.records else {}
    rec = coord.recorder
    result = FLResult(
        path="flower-simulation", config=config.describe(), metrics=metrics, rounds=list(rec.records),
        epsilon=coord.epsilon, round_times=coord.round_times,
        ledger_indices=list(rec.indices), malicious_sites=sorted(plan.malicious), final_weights=coord.weights,
        backdoor_success=plan.backdoor_success(coord.weights), stopped=run.stopped, privacy=coord.privacy,
    )
    return result, run
