"""``trustmesh bench ledger --serve-clients N``: concurrent single-entry appends to a real ``ledger serve``."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from trustmesh.errors import TrustmeshError

__all__ = ["bench_serve"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_up(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrustmeshError(f"ledger serve exited with {proc.returncode}: "
                                 f"{(proc.stderr.read() if proc.stderr else b'').decode()[-400:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/log.pub")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        except OSError:
            time.sleep(0.2)
    raise TrustmeshError(f"ledger serve did not answer on port {port} within {timeout_s} s")


def _cpu_s(pid: int, children: bool = True) -> float:
    """Return the CPU seconds (user + system, all threads) process ``pid`` has used so far (Linux /proc),
    with its live child processes' (the server's signature-checking process) unless ``children`` is False."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rpartition(")")[2].split()
    except OSError:
        return float("nan")
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    if children:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii").split()
        except OSError:
            kids = []
        total += sum(_cpu_s(int(k), children=False) for k in kids)
    return total


def bench_serve(clients: int, seconds: float, directory: Path | None = None) -> dict[str, Any]:
    """Run ``trustmesh ledger serve`` in its own process; ``clients`` threads append one entry per request.

    Every request is signed and carries an idempotency key. Afterwards the server is stopped and the
    ledger reopened: its size must equal the number of acknowledged entries (all durable, none twice).
    """
    from trustmesh._remote_ledger import RemoteLedger
    from trustmesh.ledger import Entry, Ledger, NoteSigner, audit

    tmp = tempfile.TemporaryDirectory(dir=directory)
    root = Path(tmp.name)
    origin = "bench.trustmesh/serve"
    Ledger.create(root / "log", origin).close()
    signer = NoteSigner.generate("bench-client")
    keys = root / "clients.vkeys"
    keys.write_text(signer.verifier.to_vkey() + "\n", encoding="utf-8")
    port = _free_port()
    exe = Path(sys.executable).with_name("trustmesh")
    cmd = [str(exe), "ledger", "serve", str(root / "log"), "--port", str(port), "--client-keys", str(keys)]
    server_out = (root / "server.out").open("wb")
    proc = subprocess.Popen(cmd, stdout=server_out, stderr=subprocess.PIPE,
                            env={**os.environ, "TRUSTMESH_LEDGER_TOKENS": ""})
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    try:
        _wait_up(port, proc)
        remote = RemoteLedger(f"http://127.0.0.1:{port}", signer, origin, retries=3)
        start = threading.Barrier(clients + 1)
        end_at = [0.0]

        def client(k: int) -> None:
            mine = latencies[k]
            start.wait()
            i = 0
            try:
                while time.perf_counter() < end_at[0]:
                    entry = Entry("alert", {"client": k, "i": i, "src": "10.0.0.1"}, time=1.7e9 + i)
                    t = time.perf_counter()
                    remote.append([entry])
                    mine.append(time.perf_counter() - t)
                    i += 1
            except TrustmeshError as exc:
                errors.append(str(exc))
            finally:
                remote.close()

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
        for t in threads:
            t.start()
        end_at[0] = time.perf_counter() + seconds
        server_cpu0, client_cpu0 = _cpu_s(proc.pid), time.process_time()
        t0 = time.perf_counter()
        start.wait()
        for t in threads:
            t.join(seconds + 60)
        wall = time.perf_counter() - t0
        server_cpu, client_cpu = _cpu_s(proc.pid) - server_cpu0, time.process_time() - client_cpu0
        retried = remote.retried
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server_out.close()
        if proc.stderr is not None:
            proc.stderr.close()
    said = re.search(r"stopped: (\d+) add-entries requests in (\d+) group commits",
                     (root / "server.out").read_text(encoding="utf-8", errors="replace"))
    groups = (int(said[1]), int(said[2])) if said else None
    acked = sum(len(x) for x in latencies)
    report = audit(root / "log")
    every = sorted(v for x in latencies for v in x)

    def q(p: float) -> float:
        return every[min(len(every) - 1, int(p * len(every)))] * 1000 if every else float("nan")

    out = {"clients": clients, "seconds": round(wall, 3), "acknowledged": acked, "appends_per_s": acked / wall,
           "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": every[-1] * 1000 if every else None,
           "group_commits": groups[1] if groups else None,
           "mean_requests_per_group": groups[0] / groups[1] if groups and groups[1] else None,
           "server_cpu_us_per_append": server_cpu / acked * 1e6 if acked else None,
           "client_cpu_us_per_append": client_cpu / acked * 1e6 if acked else None,
           "ledger_size": report.size, "durable_and_unique": report.size == acked, "retried": retried,
           "errors": errors[:5], "load_average": os.getloadavg(),
           "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}"}
    tmp.cleanup()
    return out

