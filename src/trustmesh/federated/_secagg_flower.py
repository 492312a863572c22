"""Our secure aggregation over Flower 1.41's message flow: a client mod and a server fit workflow.

The workflow takes the place of Flower's ``SecAggPlusWorkflow`` inside ``DefaultWorkflow`` and the
mod the place of ``secaggplus_mod``: the same four TRAIN-message stages (setup, share keys, masked
input, unmask) with a legacy ``Strategy`` deciding who trains, but the protocol state and every
mask come from :mod:`trustmesh.federated._masks` (ChaCha20 keystreams under HKDF-derived keys)
and sites send quantised *updates* (see :mod:`trustmesh.federated._bounded`), optionally with a
zero-knowledge L-infinity bound the server checks before it sums anything.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from trustmesh.errors import FederatedError, ProofError
from trustmesh.federated._bounded import (
    BoundSpec,
    check_commitment_sum,
    from_ring,
    prove_update,
    quantize_update,
    to_ring,
    verify_update,
)
from trustmesh.federated._masks import MaskingServer, MaskingSite, neighbour_graph
from trustmesh.privacy import SecAggConfig
from trustmesh.privacy.zk import ProofContext
from trustmesh.privacy.zk.hazmat._group import L, scalar_from_bytes, scalar_to_bytes

__all__ = ["BoundStats", "MaskedAggregationWorkflow", "RECORD_KEY", "make_masking_mod"]

_log = logging.getLogger(__name__)

RECORD_KEY = "trustmesh.secagg"
_STATE_KEY = "trustmesh.secagg.state"


def _flat(arrays: list[npt.NDArray[Any]]) -> npt.NDArray[np.float64]:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]) if arrays else np.zeros(0)


def make_masking_mod(fault_of: Callable[[Any], str | None] | None = None, *, workers: int | None = None) -> Any:
    """Return the client mod. ``fault_of(context)`` may name a test fault (``bad-proof``: the site
    boosts its update 50x and sends commitments to it with the proof of its honest update)."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.app.message_type import MessageType
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    def mod(msg: Message, ctxt: Context, call_next: Any) -> Message:
        if (msg.metadata.message_type != MessageType.TRAIN or not msg.has_content()
                or RECORD_KEY not in msg.content.config_records):
            return cast(Message, call_next(msg, ctxt))
        conf = msg.content.config_records[RECORD_KEY]
        stage = str(conf["stage"])
        nid = int(msg.metadata.dst_node_id)
        out = RecordDict()
        res: dict[str, Any]
        if stage == "setup":
            site = MaskingSite.setup(nid, int(cast(int, conf["round"])), int(cast(int, conf["threshold"])))
            res = {"pk1": site.pk1, "pk2": site.pk2}
        else:
            if _STATE_KEY not in ctxt.state.config_records:
                raise FederatedError(f"secure aggregation: stage {stage} before setup")
            site = MaskingSite.from_state(dict(ctxt.state.config_records[_STATE_KEY]))
            if stage == "share-keys":
                peers = {int(p): (bytes(a), bytes(b)) for p, a, b in zip(
                    cast(list[int], conf["peer_ids"]), cast(list[bytes], conf["peer_pk1"]),
                    cast(list[bytes], conf["peer_pk2"]), strict=True)}
                sealed = site.share_keys(peers)
                res = {"dst": sorted(sealed), "ct": [sealed[d] for d in sorted(sealed)]}
            elif stage == "masked-input":
                if "peer_pk1" in conf:  # a pipelined round: keys and shares were dealt last round
                    site.start_round(int(cast(int, conf["round"])), dict(zip(
                        (int(p) for p in cast(list[int], conf["peer_ids"])),
                        (bytes(k) for k in cast(list[bytes], conf["peer_pk1"])), strict=True)))
                site.receive_shares(dict(zip((int(s) for s in cast(list[int], conf.get("src", []))),
                                             (bytes(c) for c in cast(list[bytes], conf.get("ct", []))), strict=True)))
                global_w = parameters_to_ndarrays(compat.recorddict_to_fitins(msg.content, keep_input=True).parameters)
                reply = call_next(msg, ctxt)
                if reply.has_error():
                    return cast(Message, reply)  # the site dropped out while training
                out = reply.content
                fitres = compat.recorddict_to_fitres(out, keep_input=True)
                local = parameters_to_ndarrays(fitres.parameters)
                if [a.shape for a in local] != [a.shape for a in global_w]:
                    raise FederatedError("secure aggregation: the trained model's shapes differ from the global one")
                spec = BoundSpec(float(cast(float, conf["clip"])), int(cast(int, conf["bound"])),
                                 bool(conf.get("prove", False)))
                res = _masked_input(site, _flat(local) - _flat(global_w), spec, int(fitres.num_examples), conf,
                                    fault_of(ctxt) if fault_of is not None else None, workers)
                for arr in out.array_records.values():
                    arr.clear()  # the plain update never leaves the site
            elif stage == "unmask":
                shares = site.unmask(cast(list[int], conf.get("active", [])), cast(list[int], conf.get("dead", [])))
                res = {"ids": sorted(shares), "shares": [shares[k] for k in sorted(shares)]}
                if "next_round" in conf:
                    next_pk1, sealed = site.prepare_next(int(cast(int, conf["next_round"])))
                    res.update({"next_pk1": next_pk1, "next_dst": sorted(sealed),
                                "next_ct": [sealed[d] for d in sorted(sealed)]})
            else:
                raise FederatedError(f"secure aggregation: unknown stage {stage!r}")
        ctxt.state.config_records[_STATE_KEY] = ConfigRecord(site.to_state())
        out.config_records[RECORD_KEY] = ConfigRecord(res)
        return Message(out, reply_to=msg)

    return mod


def _masked_input(site: MaskingSite, delta: npt.NDArray[np.float64], spec: BoundSpec, weight: int, conf: Any,
                  fault: str | None, workers: int | None) -> dict[str, Any]:
    q = quantize_update(delta, spec, np.random.default_rng(secrets.randbits(128)))
    sent = q
    res: dict[str, Any] = {}
    if spec.prove:
        ctx = ProofContext(str(conf["origin"]), site.round_no, str(site.node_id), bytes(conf["nonce"]))
        t0 = time.perf_counter()
        proven = prove_update(q, spec, ctx, workers=workers)
        res["prove_s"] = time.perf_counter() - t0
        commitments = proven.commitments
        if fault == "bad-proof":
            from trustmesh.privacy.zk.hazmat._pedersen import commit

            sent = q * 50  # a boosted update the site cannot prove; it reuses its honest proof
            commitments = b"".join(commit(int(v), r).to_bytes() for v, r in zip(sent.tolist(), proven.blinds, strict=True))
        res["commitments"] = commitments
        res["proof"] = proven.proof
        blinds = site.mask_scalars([weight * r % L for r in proven.blinds])
        res["masked_blinds"] = b"".join(scalar_to_bytes(b) for b in blinds)
    res["masked"] = site.mask(to_ring(sent, weight)).astype("<u8").tobytes()
    return res


@dataclass
class _Pending:
    """Keys and sealed shares the sites dealt for the next round while unmasking this one."""

    round: int
    neighbours: dict[int, frozenset[int]]
    threshold: int
    pk1: dict[int, bytes]
    pk2: dict[int, bytes]
    sealed: dict[int, dict[int, bytes]]


@dataclass
class BoundStats:
    """Per-round cost and outcome of the bound checks (what the ledger and the benchmark report)."""

    round: int
    prove_s: dict[str, float] = field(default_factory=dict)
    verify_s: dict[str, float] = field(default_factory=dict)
    link_s: float = 0.0
    rejected: dict[str, str] = field(default_factory=dict)
    setup: bool = True  # False: keys and shares were dealt in the previous round (2 messages, not 4)


class MaskedAggregationWorkflow:
    """Server fit workflow of our secure aggregation (use as ``DefaultWorkflow(fit_workflow=...)``).

    Parameters
    ----------
    config:
        shares, threshold and the clip; without ``spec`` updates are quantised to
        ``quantization_range // 2`` levels each side of ``[-clipping_range, clipping_range]``.
    spec:
        the bound and whether sites must prove it (``--zk-bound``).
    observer:
        called each round with ``{"vectors": {node: [masked]}, "commitment": sha256}`` and the
        :class:`BoundStats`, before the strategy aggregates.
    """

    def __init__(self, config: SecAggConfig, *, spec: BoundSpec | None = None, origin: str = "trustmesh.fl",
                 observer: Callable[[dict[str, Any], BoundStats], None] | None = None,
                 workers: int | None = None) -> None:
        self.config = config
        self.spec = spec or BoundSpec(config.clipping_range, max(1, config.quantization_range // 2))
        self.origin = origin
        self.observer = observer
        self.workers = workers
        self._pending: _Pending | None = None

    def _send(self, grid: Any, records: dict[int, Any], rnd: int, contents: dict[int, Any] | None = None) -> dict[int, Any]:
        from flwr.app import ConfigRecord, Message, RecordDict
        from flwr.app.message_type import MessageType

        msgs = []
        for nid, rec in records.items():
            content = contents[nid] if contents is not None else RecordDict()
            content.config_records[RECORD_KEY] = ConfigRecord(rec)
            msgs.append(Message(content=content, dst_node_id=nid, message_type=MessageType.TRAIN, group_id=str(rnd)))
        replies = {}
        for reply in grid.send_and_receive(msgs, timeout=self.config.timeout):
            src = int(reply.metadata.src_node_id)
            if reply.has_error():
                _log.warning("round %d: site node %d failed: %s", rnd, src, reply.error)
                continue
            if RECORD_KEY in reply.content.config_records:
                replies[src] = reply
        return replies

    def __call__(self, grid: Any, context: Any) -> None:
        """Run one round of masked aggregation and hand the unmasked mean to the strategy."""
        import flwr.compat.common.recorddict_compat as compat
        from flwr.common import parameters_to_ndarrays
        from flwr.server.compat.legacy_context import LegacyContext
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
        from flwr.server.workflow.constant import Key as WorkflowKey

        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected a LegacyContext, got {type(context).__name__}")
        rnd = int(cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND]))
        params = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        chosen = context.strategy.configure_fit(rnd, params, context.client_manager)
        if not chosen:
            return
        fitins = {p.node_id: compat.fitins_to_recorddict(f, True) for p, f in chosen}
        proxies = {p.node_id: p for p, _ in chosen}
        ids = set(fitins)
        if len(ids) < 2:
            raise FederatedError("secure aggregation needs at least 2 sites")
        shares = min(self.config.num_shares, len(ids))
        threshold = min(self.config.reconstruction_threshold, shares)
        stats = BoundStats(rnd)
        global_w = parameters_to_ndarrays(params)
        n = int(sum(a.size for a in global_w))
        pending, self._pending = self._pending, None
        if pending is not None and pending.round == rnd and set(pending.pk1) == ids and pending.threshold == threshold:
            # the sites dealt this round's keys and shares while unmasking the last one: 2 messages, not 4
            server = MaskingServer(rnd, pending.neighbours, threshold,
                                   public_keys={k: (pending.pk1[k], pending.pk2[k]) for k in ids})
            alive = set(ids)
            forwarded = server.forward(pending.sealed)
            extra = {nid: {"round": rnd, "peer_ids": sorted(server.neighbours[nid]),
                           "peer_pk1": [pending.pk1[p] for p in sorted(server.neighbours[nid])]} for nid in ids}
            stats.setup = False
        else:
            server = MaskingServer(rnd, neighbour_graph(ids, shares), threshold)
            forwarded, alive = self._set_up(grid, server, ids, rnd)
            extra = {nid: {} for nid in alive}
        self._masked_round(grid, context, rnd, server, alive, forwarded, extra, fitins, proxies, global_w, n, stats)

    def _set_up(self, grid: Any, server: MaskingServer, ids: set[int], rnd: int) -> tuple[dict[int, dict[int, bytes]], set[int]]:
        threshold = server.threshold
        replies = self._send(grid, {nid: {"stage": "setup", "round": rnd, "threshold": threshold} for nid in ids}, rnd)
        for nid, r in replies.items():
            rec = r.content.config_records[RECORD_KEY]
            server.public_keys[nid] = (bytes(cast(bytes, rec["pk1"])), bytes(cast(bytes, rec["pk2"])))
        alive = set(server.public_keys)
        server.check_threshold(alive)

        def peers(nid: int) -> dict[str, Any]:
            ps = sorted(server.neighbours[nid] & alive)
            return {"stage": "share-keys", "peer_ids": ps, "peer_pk1": [server.public_keys[p][0] for p in ps],
                    "peer_pk2": [server.public_keys[p][1] for p in ps]}

        replies = self._send(grid, {nid: peers(nid) for nid in alive}, rnd)
        sent = {}
        for nid, r in replies.items():
            rec = r.content.config_records[RECORD_KEY]
            sent[nid] = dict(zip((int(d) for d in cast(list[int], rec.get("dst", []))),
                                 (bytes(c) for c in cast(list[bytes], rec.get("ct", []))), strict=True))
        forwarded = server.forward(sent)
        alive = set(sent)
        server.check_threshold(alive)
        return forwarded, alive

    def _masked_round(self, grid: Any, context: Any, rnd: int, server: MaskingServer, alive: set[int],
                      forwarded: dict[int, dict[int, bytes]], extra: dict[int, dict[str, Any]], fitins: dict[int, Any],
                      proxies: dict[int, Any], global_w: list[npt.NDArray[Any]], n: int, stats: BoundStats) -> None:
        import flwr.compat.common.recorddict_compat as compat
        from flwr.common import ndarrays_to_parameters
        from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

        nonces = {nid: secrets.token_bytes(32) for nid in alive}
        spec = self.spec
        stage3 = {nid: {"stage": "masked-input", "src": sorted(forwarded[nid]),
                        "ct": [forwarded[nid][s] for s in sorted(forwarded[nid])], "clip": spec.clip,
                        "bound": spec.bound, "prove": spec.prove, "origin": self.origin, "nonce": nonces[nid],
                        **extra[nid]}
                  for nid in alive}
        replies = self._send(grid, stage3, rnd, contents={nid: fitins[nid] for nid in alive})
        accepted: dict[int, tuple[npt.NDArray[np.uint64], Any]] = {}
        commitments: dict[int, list[bytes]] = {}
        blinds: dict[int, bytes] = {}
        for nid, r in sorted(replies.items()):
            rec = r.content.config_records[RECORD_KEY]
            fitres = compat.recorddict_to_fitres(r.content, keep_input=True)
            label = str(int(fitres.metrics.get("site", nid)))
            masked = np.frombuffer(bytes(cast(bytes, rec.get("masked", b""))), dtype="<u8").astype(np.uint64)
            if len(masked) != n:
                stats.rejected[label] = f"masked input has {len(masked)} coordinates, expected {n}"
                continue
            if spec.prove:
                stats.prove_s[label] = round(float(cast(float, rec.get("prove_s", 0.0))), 4)
                ctx = ProofContext(self.origin, rnd, str(nid), nonces[nid])
                t0 = time.perf_counter()
                try:
                    commitments[nid] = verify_update(bytes(cast(bytes, rec.get("commitments", b""))),
                                                     bytes(cast(bytes, rec.get("proof", b""))), n, spec, ctx,
                                                     workers=self.workers)
                    mb = bytes(cast(bytes, rec.get("masked_blinds", b"")))
                    if len(mb) != 32 * n:
                        raise ProofError(f"masked blinds have {len(mb)} bytes, expected {32 * n}")
                    blinds[nid] = mb
                except ProofError as exc:
                    stats.rejected[label] = f"L-infinity bound proof failed: {exc}"
                    continue
                finally:
                    stats.verify_s[label] = round(time.perf_counter() - t0, 4)
            accepted[nid] = (masked, fitres)
        survivors = set(accepted)
        server.check_threshold(survivors)

        def unmask_req(nid: int) -> dict[str, Any]:
            nb = server.neighbours[nid]
            return {"stage": "unmask", "active": sorted(nb & survivors), "dead": sorted(nb & (alive - survivors)),
                    "next_round": rnd + 1}

        replies = self._send(grid, {nid: unmask_req(nid) for nid in survivors}, rnd)
        released = {}
        nxt = _Pending(rnd + 1, server.neighbours, server.threshold, {}, {k: v[1] for k, v in server.public_keys.items()}, {})
        for nid, r in replies.items():
            rec = r.content.config_records[RECORD_KEY]
            released[nid] = dict(zip((int(i) for i in cast(list[int], rec.get("ids", []))),
                                     (bytes(s) for s in cast(list[bytes], rec.get("shares", []))), strict=True))
            if "next_pk1" in rec:
                nxt.pk1[nid] = bytes(cast(bytes, rec["next_pk1"]))
                nxt.sealed[nid] = dict(zip((int(d) for d in cast(list[int], rec.get("next_dst", []))),
                                           (bytes(c) for c in cast(list[bytes], rec.get("next_ct", []))), strict=True))
        if survivors == set(server.neighbours) and set(nxt.pk1) == survivors:
            # everyone took part: the next round can start from what they dealt (otherwise a fresh set-up)
            self._pending = nxt
        masked_sum = np.zeros(n, dtype=np.uint64)
        for masked, _ in accepted.values():
            masked_sum = masked_sum + masked
        scalar_sum = None
        if spec.prove:
            scalar_sum = [0] * n
            for mb in blinds.values():
                scalar_sum = [(a + scalar_from_bytes(mb[32 * j: 32 * j + 32], field="masked blind")) % L
                              for j, a in enumerate(scalar_sum)]
        total, blind_sum = server.unmask(masked_sum, survivors, released, scalar_sum=scalar_sum)
        weights = {nid: int(fr.num_examples) for nid, (_, fr) in accepted.items()}
        signed = from_ring(total)
        if spec.prove and blind_sum is not None:
            t0 = time.perf_counter()
            check_commitment_sum(commitments, weights, signed, blind_sum)
            stats.link_s = round(time.perf_counter() - t0, 4)
        digest = hashlib.sha256(b"".join(m.tobytes() for _, (m, _) in sorted(accepted.items()))).hexdigest()
        if self.observer is not None:
            self.observer({"vectors": {str(nid): [m] for nid, (m, _) in accepted.items()}, "commitment": digest}, stats)
        mean = signed.astype(np.float64) * spec.step / max(1, sum(weights.values()))
        flat = _flat(global_w) + mean
        out, off = [], 0
        for a in global_w:
            out.append(flat[off: off + a.size].reshape(a.shape).astype(a.dtype))
            off += a.size
        parameters = ndarrays_to_parameters(out)
        results = []
        for nid, (_, fitres) in sorted(accepted.items()):
            fitres.parameters = parameters
            results.append((proxies[nid], fitres))
        agg, metrics = context.strategy.aggregate_fit(rnd, results, [])
        if agg is not None:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(agg, True)
            context.history.add_metrics_distributed_fit(server_round=rnd, metrics=metrics)

