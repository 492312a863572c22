"""Live capture: meters die with `trustmesh run` (kill -9), and a dead meter never delays a stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from trustmesh.ledger import Ledger, audit

from _ton_models import ton_gbdt  # type: ignore[import-not-found]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def model_path(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ton_gbdt(data_dir, tmp_path_factory.mktemp("model"), 3000, 4)


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                out |= {int(x) for x in fh.read().split()}
    except FileNotFoundError:
        pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _start_live(tmp_path: Path, model: Path) -> tuple[subprocess.Popen[str], set[int]]:
    if os.geteuid() != 0:
        pytest.skip("live capture on lo needs root (CAP_NET_RAW)")
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[pipeline]\nmodel = "{model}"\nsources = ["iface:lo"]\ncheckpoint_interval_s = 60\n',
                   encoding="utf-8")
    exe = Path(sys.executable).with_name("trustmesh")
    proc = subprocess.Popen([str(exe), "run", "--config", str(cfg), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 90
    meters: set[int] = set()
    while time.monotonic() < deadline and not meters and proc.poll() is None:
        time.sleep(0.3)
        meters = _children(proc.pid)
    if not meters:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"no meter process appeared: {err[-1500:]}")
    time.sleep(1.0)
    return proc, _children(proc.pid)


def test_kill_9_of_run_leaves_no_meter_behind(tmp_path: Path, model_path: Path) -> None:
    proc, meters = _start_live(tmp_path, model_path)
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(m) for m in meters):
        time.sleep(0.1)
    orphans = [m for m in meters if _alive(m)]
    for m in orphans:  # clean up before failing
        os.kill(m, signal.SIGKILL)
    assert not orphans, f"meter process(es) {orphans} outlived kill -9 of their parent"


def test_sigterm_with_a_dead_meter_ends_within_5_s_with_a_checkpoint(tmp_path: Path, model_path: Path) -> None:
    proc, meters = _start_live(tmp_path, model_path)
    for m in meters:
        os.kill(m, signal.SIGKILL)  # the meter dies without telling its parent
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert took < 5, f"SIGTERM took {took:.1f} s with a dead meter"
    assert proc.returncode == 130, err[-1500:]
    assert json.loads(out)["interrupted"]
    ledger_dir = tmp_path / "trustmesh-ledger"
    report = audit(ledger_dir)
    with Ledger.open(ledger_dir, read_only=True) as led:
        assert led.entry(led.size - 1).kind == "pipeline.stop"
    assert report.latest_checkpoint_size == report.size


def test_a_refused_connection_is_exported_at_its_rst_not_after_the_idle_timeout() -> None:
    import socket
    import threading

    from trustmesh.flows import iter_interface

    if os.geteuid() != 0:
        pytest.skip("live capture on lo needs root (CAP_NET_RAW)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: a connect gets SYN -> RST
    got: list[tuple[float, pd.DataFrame]] = []
    flows = iter_interface("lo", 10, bpf_filter=f"tcp port {port}", idle_timeout=60, active_timeout=120,
                           max_delay_s=0.0)

    def read() -> None:
        for batch in flows:
            got.append((time.monotonic(), batch))
            return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(3.0)  # the meter is capturing
    sent = time.monotonic()
    for _ in range(3):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            pass
    reader.join(30)
    flows.close()
    assert got, "no flow was exported within 30 s (idle timeout is 60 s)"
    at, batch = got[0]
    assert int(batch["dst_port"].iloc[0]) == port
    assert at - sent < 10, "the flow waited for the idle timeout instead of being exported at its RST"
