"""A site's long-running training worker for deployed runs (``fl site``), and the light ClientApp.

Flower 1.41's SuperNode starts a fresh ``flwr-clientapp`` process for every message, in both of its
isolation modes (a process pulls one task with its token, runs it and exits). Importing torch, loading
and encoding the site's table and building its model then happen once per round. ``fl site`` therefore
starts this worker next to its SuperNode: one process that loads the site's data once and keeps its
``Site`` across rounds. The ClientApp that Flower starts per message only forwards the round's
parameters and config to it over a Unix socket in the site's private (0700) directory and returns the
reply, so Flower's message flow, its mods (SecAgg+) and its transport are unchanged.

This module lives outside :mod:`trustmesh.federated` so that the per-message ClientApp process
imports only Flower and numpy (the package's own imports, pandas among them, cost about 2 s more).

Frames: a 4-byte big-endian header length, a JSON header, then a ``numpy.savez`` payload (no pickle
anywhere: arrays are loaded with ``allow_pickle=False``). A request header is
``{"op": "fit", "spec": {...}, "partition": K, "config": {...}}``; a reply is ``{"ok": true, "n": N,
"metrics": {...}}`` with the weights as payload, or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trustmesh.errors import FederatedError

__all__ = ["WORKER_ENV", "client_app", "fit_remote", "serve_worker"]

SECAGG_RECORD = "trustmesh.secagg"  # federated._secagg_flower.RECORD_KEY (a test keeps them equal)
WORKER_ENV = "TRUSTMESH_FL_WORKER"  # the socket path; set by `fl site` for its SuperNode's ClientApps
MAX_HEADER = 1 << 20
MAX_PAYLOAD = 1 << 30
_log = logging.getLogger(__name__)

Arrays = list[npt.NDArray[Any]]


def _pack(header: dict[str, Any], arrays: Arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, *arrays)
    head = json.dumps(header, sort_keys=True).encode()
    payload = buf.getvalue()
    return struct.pack(">II", len(head), len(payload)) + head + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise FederatedError(f"worker connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _unpack(sock: socket.socket) -> tuple[dict[str, Any], Arrays]:
    n_head, n_payload = struct.unpack(">II", _recv_exact(sock, 8))
    if n_head > MAX_HEADER or n_payload > MAX_PAYLOAD:
        raise FederatedError(f"worker frame too large ({n_head} header, {n_payload} payload bytes)")
    header = json.loads(_recv_exact(sock, n_head))
    if not isinstance(header, dict):
        raise FederatedError("worker frame header must be a JSON object")
    with np.load(io.BytesIO(_recv_exact(sock, n_payload)), allow_pickle=False) as npz:
        arrays = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    return header, arrays


def fit_remote(path: str, spec: dict[str, Any], partition: int, parameters: Arrays,
               config: dict[str, Any], *, timeout: float = 600.0,
               connect_timeout: float = 120.0) -> tuple[Arrays, int, dict[str, Any]]:
    """Ask the worker at ``path`` to train ``partition`` from ``parameters``; return weights, n, metrics."""
    header = {"op": "fit", "spec": spec, "partition": partition,
              "config": {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}}
    deadline = time.monotonic() + connect_timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        while True:  # the worker may still be starting (imports, data) when the first round arrives
            try:
                sock.connect(path)
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise FederatedError(f"site worker at {path} is not reachable ({exc})") from exc
                time.sleep(0.2)
        sock.sendall(_pack(header, list(parameters)))
        reply, arrays = _unpack(sock)
    if not reply.get("ok"):
        raise FederatedError(f"site worker: {reply.get('error', 'unknown error')}")
    return arrays, int(reply["n"]), dict(reply.get("metrics") or {})


def serve_worker(path: str | Path, fit: Callable[[dict[str, Any], int, Arrays, dict[str, Any]],
                                                 tuple[Arrays, int, dict[str, Any]]],
                 *, max_requests: int | None = None) -> None:
    """Serve ``fit`` requests on a Unix socket at ``path`` (created 0600) until killed or ``max_requests``.

    One request at a time: a site trains one round at a time. A failing request is answered with its
    error and the worker goes on.
    """
    path = Path(path)
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        old = os.umask(0o177)
        try:
            srv.bind(str(path))
        finally:
            os.umask(old)
        srv.listen(4)
        served = 0
        while max_requests is None or served < max_requests:
            conn, _ = srv.accept()
            served += 1
            with conn:
                conn.settimeout(600)
                try:
                    header, arrays = _unpack(conn)
                    if header.get("op") != "fit" or not isinstance(header.get("spec"), dict):
                        raise FederatedError("request must be {'op': 'fit', 'spec': {...}, ...}")
                    t0 = time.perf_counter()
                    weights, n, metrics = fit(header["spec"], int(header["partition"]), arrays,
                                              dict(header.get("config") or {}))
                    took = time.perf_counter() - t0
                    conn.sendall(_pack({"ok": True, "n": n, "metrics": {**metrics, "fit_seconds": took}}, weights))
                    print(f"site worker: request {served} trained {n} rows in {took:.2f}s", file=sys.stderr,
                          flush=True)
                except Exception as exc:  # noqa: BLE001 - one bad request must not stop the site
                    _log.warning("site worker: request failed: %s", exc)
                    try:
                        conn.sendall(_pack({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, []))
                    except OSError:
                        pass


def _site_fit() -> Callable[[dict[str, Any], int, Arrays, dict[str, Any]], tuple[Arrays, int, dict[str, Any]]]:
    """The worker's ``fit``: the deployed ClientApp's training, with the site built once per run spec."""
    from trustmesh.federated._deploy import local_site

    def fit(spec: dict[str, Any], k: int, parameters: Arrays, config: dict[str, Any]) -> tuple[
            Arrays, int, dict[str, Any]]:
        site = local_site(spec, k)
        clip = float(config["clip_norm"]) if "clip_norm" in config else None
        weights, n, metrics = site.fit(list(parameters), int(config.get("round", 0)),
                                       proximal_mu=float(config.get("proximal_mu", 0.0)), clip_norm=clip)
        if clip is not None:
            n = 1  # as the in-process ClientApp: equal weights under central DP with SecAgg+
        return list(weights), n, {**metrics, "site": site.site_id}

    return fit


def _client_fn(context: Any) -> Any:
    """Forward to the site's worker when ``fl site`` started one, else train here (``_deploy``)."""
    path = os.environ.get(WORKER_ENV)
    if not path:
        from trustmesh.federated._deploy import client_fn

        return client_fn(context)
    raw = context.run_config.get("spec")
    spec = json.loads(raw) if isinstance(raw, str) else None
    if not isinstance(spec, dict):
        raise ValueError("run config must carry a JSON 'spec' object (generated by `trustmesh fl serve`)")
    k = int(context.node_config["partition-id"])
    sock: str = path
    run_spec: dict[str, Any] = spec
    from flwr.client import NumPyClient

    class _Remote(NumPyClient):
        def fit(self, parameters: Arrays, config: dict[str, Any]) -> Any:
            return fit_remote(sock, run_spec, k, list(parameters), dict(config))

        def evaluate(self, parameters: Arrays, config: dict[str, Any]) -> Any:
            return 0.0, 1, {}

    return _Remote().to_client()


def _maybe_secagg(msg: Any, ctxt: Any, call_next: Any) -> Any:
    """Our secure aggregation's client mod (``federated._secagg_flower``) for its own messages only.

    It is imported when such a message arrives, so plain rounds keep the light ClientApp process.
    """
    if msg.has_content() and SECAGG_RECORD in msg.content.config_records:
        from trustmesh.federated._secagg_flower import make_masking_mod

        return make_masking_mod()(msg, ctxt, call_next)
    return call_next(msg, ctxt)


def _client_app() -> Any:
    from flwr.clientapp import ClientApp

    return ClientApp(client_fn=_client_fn, mods=[_maybe_secagg])


client_app = _client_app()  # the deployed app's `clientapp` component (see `fl serve`)


def main(argv: list[str] | None = None) -> int:
    """``python -m trustmesh._fl_worker SOCKET``: serve this site's training until killed."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m trustmesh._fl_worker SOCKET", file=sys.stderr)
        return 2
    from trustmesh.federated._run import limit_torch_threads

    limit_torch_threads()
    serve_worker(args[0], _site_fit())
    return 0


if __name__ == "__main__":  # pragma: no cover - started by `fl site`
    raise SystemExit(main())
