"""The coordinator and three sites as separate processes (Flower SuperLink + SuperNodes) on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.needs_data]

TRUSTMESH = str(Path(sys.executable).with_name("trustmesh"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_coordinator_and_three_sites_as_processes(tmp_path: Path, data_dir: Path) -> None:
    link_port = _free_port()
    env = {**os.environ, "TRUSTMESH_DATA": str(data_dir)}
    serve = subprocess.Popen(
        [TRUSTMESH, "fl", "serve", "--sites", "3", "--rounds", "2", "--max-rows", "1500", "--max-test", "500",
         "--port", str(link_port), "--work-dir", str(tmp_path / "work"), "--ledger", str(tmp_path / "ledger"),
         "--timeout", "420", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    sites = [
        subprocess.Popen(
            [TRUSTMESH, "fl", "site", "--partition-id", str(k), "--superlink", f"127.0.0.1:{link_port}",
             "--port", str(_free_port()), "--sites", "3"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        for k in range(3)
    ]
    try:
        out, err = serve.communicate(timeout=480)
    finally:
        _stop(serve)
        for proc in sites:
            _stop(proc)

    assert serve.returncode == 0, err.decode(errors="replace")[-2000:]
    doc = json.loads(out)
    assert doc["path"] == "flower-deployment"
    assert [r["round"] for r in doc["rounds"]] == [1, 2]
    assert doc["ledger_indices"] == [0, 1]
    assert 0.0 < doc["metrics"]["macro_f1"] <= 1.0
    from trustmesh.ledger import Ledger

    ledger = Ledger.open(tmp_path / "ledger", read_only=True)
    assert sorted(ledger.entry(1).payload["sites"]) == ["0", "1", "2"]
    assert all(proc.returncode is not None for proc in sites)
