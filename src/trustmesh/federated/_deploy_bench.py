"""Time a real deployed run on loopback: a CA and server certificate and one key per site (as ``fl certs``
and ``fl site-key`` make them), ``fl serve`` over TLS with every key enrolled, and ``fl site``
processes, each a separate ``trustmesh`` process as a user runs them. The result is ``fl serve``'s JSON, with ``round_times``, the sites' ``fit_seconds`` per round and
the per-round overhead (round time − slowest fit) that ``fl serve`` reports.

Used by ``trustmesh bench fl-deploy`` and by the integration test of deployed rounds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trustmesh.errors import FederatedError

__all__ = ["run_deployed"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _trustmesh() -> str:
    return str(Path(sys.executable).parent / "trustmesh")


def run_deployed(*, sites: int = 3, rounds: int = 3, max_rows: int = 6000, max_test: int = 500,
                 extra: list[str] | None = None, work: Path | None = None, timeout: float = 600.0,
                 data_dir: Path | None = None) -> dict[str, Any]:
    """Run ``fl serve`` + ``sites`` × ``fl site`` over TLS with enrolled keys; return ``fl serve``'s JSON.

    ``extra`` goes to ``fl serve`` (e.g. ``["--secagg"]``). Every process is stopped before returning.
    """
    from trustmesh._procs import stop_group

    if sites < 1 or rounds < 1:
        raise FederatedError("run_deployed needs at least one site and one round")
    root = Path(work) if work else Path(tempfile.mkdtemp(prefix="trustmesh-fl-bench-"))
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = dict(os.environ)
    if data_dir is not None:
        env["TRUSTMESH_DATA"] = str(data_dir)
    # the certificates and keys `fl certs` / `fl site-key` make, without a process start each
    from trustmesh.federated._tls import create_site_key, create_tls

    create_tls(root / "tls", ["127.0.0.1"])
    keys = [root / "keys" / f"site{k}" for k in range(sites)]
    for key in keys:
        create_site_key(key)
    port = _free_port()
    serve_work = root / "serve"
    enroll = [arg for key in keys for arg in ("--enroll", f"{key}.pub")]
    serve = subprocess.Popen(
        [_trustmesh(), "fl", "serve", "--sites", str(sites), "--rounds", str(rounds), "--max-rows", str(max_rows),
         "--max-test", str(max_test), "--port", str(port), "--work-dir", str(serve_work),
         "--tls-dir", str(root / "tls"), *enroll, *(extra or []), "--timeout", str(int(timeout)), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        deadline = time.monotonic() + 120
        while not (serve_work / "enrolled.json").exists():
            if serve.poll() is not None:
                raise FederatedError(f"fl serve exited ({serve.returncode}): "
                                     f"{serve.stderr.read().decode(errors='replace')[-800:] if serve.stderr else ''}")
            if time.monotonic() > deadline:
                raise FederatedError("fl serve did not enroll the sites within 120 s")
            time.sleep(0.3)
        for k, key in enumerate(keys):
            log = (root / f"site{k}.log").open("wb")
            logs.append(log)
            procs.append(subprocess.Popen(
                [_trustmesh(), "fl", "site", "--partition-id", str(k), "--superlink", f"127.0.0.1:{port}",
                 "--port", str(_free_port()), "--sites", str(sites), "--root-cert", str(root / "tls" / "ca.pem"),
                 "--auth-key", str(key)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        try:
            out, err = serve.communicate(timeout=timeout + 60)
        except subprocess.TimeoutExpired as exc:
            raise FederatedError(f"the deployed run did not finish within {timeout:.0f}s (logs in {root})") from exc
    finally:
        stop_group(serve, timeout=20)
        for proc in procs:
            stop_group(proc, timeout=20)
        for log in logs:
            log.close()
    if serve.returncode != 0:
        raise FederatedError(f"fl serve exited {serve.returncode}: {err.decode(errors='replace')[-1500:]}")
    doc: dict[str, Any] = json.loads(out)
    doc["bench_dir"] = str(root)
    return doc
