"""Scale-out: two `trustmesh run` workers share one Redis stream and append to one `trustmesh ledger serve`.

Real redis-server (Debian) and real server/worker processes. Suricata EVE records go into the stream
the way Suricata's redis output writes them (``XADD KEY * eve JSON``).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustmesh.flows import RedisStreamSource
from trustmesh.ledger import Ledger, NoteSigner, audit

from _ton_models import ton_gbdt  # type: ignore[import-not-found]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVE = "logs/suricata/test6-malicious.suricata.json.gz"
ORIGIN = "test.trustmesh/shared"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{what} did not listen on {port}")


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, "redis-server", 10)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def model_path(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ton_gbdt(data_dir, tmp_path_factory.mktemp("model"), 4000, 3)


def _fill(port: int, data_dir: Path, stream: str, limit: int | None = None) -> tuple[int, int]:
    import redis

    lines = gzip.open(data_dir / EVE, "rt", encoding="utf-8").read().splitlines()[:limit]
    client = redis.Redis(port=port)
    pipe = client.pipeline(transaction=False)
    for ln in lines:
        pipe.xadd(stream, {"eve": ln})
    pipe.execute()
    client.close()
    flows = sum(1 for ln in lines if json.loads(ln).get("event_type") == "flow")
    return len(lines), flows


def test_a_crashed_consumers_records_are_taken_over(redis_port: int, data_dir: Path) -> None:
    import redis

    total, flows = _fill(redis_port, data_dir, "eve")
    url = f"redis://127.0.0.1:{redis_port}/eve?group=g&claim_idle_ms=300"
    dead = RedisStreamSource(url + "&consumer=dead")
    first = next(iter(dead.iter_batches(100)))  # read, never acknowledged: the worker "crashed"
    assert len(first) > 0
    alive = RedisStreamSource(url + "&consumer=alive")
    time.sleep(0.4)
    seen = 0
    for frame in alive.iter_batches(500):
        seen += len(frame) if not frame.attrs.get("suricata_alerts") else 0
        token = frame.attrs.get("trustmesh_ack")
        if token:
            alive.acknowledge(token)
        if alive.acked >= total:
            break
    assert alive.claimed >= 100, "the dead consumer's pending records were claimed"
    assert seen == flows
    info = redis.Redis(port=redis_port).xinfo_groups("eve")[0]
    assert info["pending"] == 0


def test_two_workers_share_a_stream_and_one_served_ledger(tmp_path: Path, redis_port: int, data_dir: Path,
                                                          model_path: Path) -> None:
    import redis

    total, flows = _fill(redis_port, data_dir, "suricata", 1500)  # flows and alert events, within the budget
    Ledger.create(tmp_path / "shared", ORIGIN).close()
    client_key = NoteSigner.generate("worker.example/w")
    client_key.save(tmp_path / "worker.key")
    (tmp_path / "clients.vkeys").write_text(client_key.verifier.to_vkey() + "\n", encoding="utf-8")
    lport = _free_port()
    exe = str(Path(sys.executable).with_name("trustmesh"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRUSTMESH_LEDGER_TOKENS": ""}
    server = subprocess.Popen([exe, "ledger", "serve", str(tmp_path / "shared"), "--port", str(lport),
                               "--client-keys", str(tmp_path / "clients.vkeys")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[subprocess.Popen[str]] = []
    try:
        _wait_port(lport, server, "ledger serve")
        for w in range(2):
            cfg = tmp_path / f"w{w}.toml"
            cfg.write_text(f'[pipeline]\norigin = "{ORIGIN}"\nmodel = "{model_path}"\n'
                           f'ledger_url = "http://127.0.0.1:{lport}"\nledger_key = "{tmp_path / "worker.key"}"\n'
                           f'state_dir = "{tmp_path / f"state{w}"}"\nbatch_size = 256\n', encoding="utf-8")
            src = f"redis://127.0.0.1:{redis_port}/suricata?group=trustmesh&consumer=w{w}"
            workers.append(subprocess.Popen([exe, "run", "--config", str(cfg), "--source", src, "--json"],
                                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        r = redis.Redis(port=redis_port)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            groups = r.xinfo_groups("suricata")
            if groups and groups[0]["pending"] == 0 and groups[0].get("lag") == 0:
                break
            assert all(p.poll() is None for p in workers), [p.communicate() for p in workers if p.poll() is not None]
            time.sleep(0.5)
        else:
            pytest.fail(f"the workers did not consume the stream: {r.xinfo_groups('suricata')}")
        consumers = {c["name"].decode(): c for c in r.xinfo_consumers("suricata", "trustmesh")}
        r.close()
        docs = []
        for p in workers:
            p.send_signal(signal.SIGTERM)
        for p in workers:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 130, err[-2000:]
            docs.append(json.loads(out))
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
        server.terminate()
        server.wait(30)
    assert set(consumers) == {"w0", "w1"}
    assert sum(d["flows"] for d in docs) == flows, "every flow record scored exactly once"
    assert all(d["flows"] > 0 for d in docs), f"both workers took records: {[d['flows'] for d in docs]}"
    report = audit(tmp_path / "shared")
    with Ledger.open(tmp_path / "shared", read_only=True) as led:
        entries = [led.entry(i) for i in range(led.size)]
    alerts = [e for e in entries if e.kind == "alert"]
    ids = [e.payload["event"]["id"] for e in alerts]
    assert len(alerts) == sum(d["alerts"] for d in docs) > 0, "every alert the workers reported is on the ledger"
    assert len(set(ids)) == len(ids), "no alert appended twice"
    suricata = [e for e in alerts if e.payload.get("rule", {}).get("id") or "suricata" in json.dumps(e.payload)[:4000]]
    assert suricata, "EVE alert events from the stream became alerts"
    assert sum(1 for e in entries if e.kind == "pipeline.start") == 2
    assert report.latest_checkpoint_size == report.size
