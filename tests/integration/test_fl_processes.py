"""The coordinator and three sites as separate processes (Flower SuperLink + SuperNodes) on loopback,
over TLS with enrolled site keys, and sites that must not get in (foreign CA, unenrolled key)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trustmesh._procs import stop_group
from trustmesh.federated._tls import create_tls

pytestmark = [pytest.mark.integration]

BIN = Path(sys.executable).parent
TRUSTMESH = str(BIN / "trustmesh")


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


def _json_cmd(*args: str) -> dict[str, object]:
    proc = subprocess.run([TRUSTMESH, *args, "--json"], capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"fl serve exited ({proc.returncode}) before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout:.0f}s"
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.needs_data
def test_coordinator_and_three_sites_as_processes_over_tls(tmp_path: Path, data_dir: Path) -> None:
    # Arrange: a CA + server certificate, one enrolment key per site and one key nobody enrolled.
    certs = _json_cmd("fl", "certs", str(tmp_path / "tls"), "--host", "127.0.0.1")
    ca = tmp_path / "tls" / "ca.pem"
    keys = [tmp_path / "keys" / f"site{k}" for k in range(3)]
    for key in [*keys, tmp_path / "keys" / "rogue"]:
        _json_cmd("fl", "site-key", str(key))
    link_port = _free_port()
    work = tmp_path / "work"
    env = {**os.environ, "TRUSTMESH_DATA": str(data_dir)}
    enroll = [arg for key in keys for arg in ("--enroll", f"{key}.pub")]

    # Act: the coordinator enrolls the keys, then the three sites and an intruder dial it.
    serve = subprocess.Popen(
        [TRUSTMESH, "fl", "serve", "--sites", "3", "--rounds", "2", "--max-rows", "1500", "--max-test", "500",
         "--port", str(link_port), "--work-dir", str(work), "--ledger", str(tmp_path / "ledger"),
         "--tls-dir", str(tmp_path / "tls"), *enroll, "--timeout", "420", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    sites: list[subprocess.Popen[bytes]] = []
    intruder = None
    try:
        _wait_for(work / "enrolled.json", serve, 120)
        sites = [
            subprocess.Popen(
                [TRUSTMESH, "fl", "site", "--partition-id", str(k), "--superlink", f"127.0.0.1:{link_port}",
                 "--port", str(_free_port()), "--sites", "3", "--root-cert", str(ca), "--auth-key", str(key)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            )
            for k, key in enumerate(keys)
        ]
        intruder = subprocess.Popen(
            [TRUSTMESH, "fl", "site", "--partition-id", "0", "--superlink", f"127.0.0.1:{link_port}",
             "--port", str(_free_port()), "--root-cert", str(ca),
             "--auth-key", str(tmp_path / "keys" / "rogue")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )
        intruder_out, _ = intruder.communicate(timeout=120)
        out, err = serve.communicate(timeout=480)
    finally:
        _stop(serve)
        for proc in [*sites, *([intruder] if intruder else [])]:
            _stop(proc)

    # Assert: the run completed over HTTPS with exactly the enrolled sites; the intruder was refused.
    assert serve.returncode == 0, err.decode(errors="replace")[-2000:]
    doc = json.loads(out)
    assert doc["path"] == "flower-deployment"
    assert [r["round"] for r in doc["rounds"]] == [1, 2]
    assert doc["ledger_indices"] == [0, 1]
    assert 0.0 < doc["metrics"]["macro_f1"] <= 1.0
    transport = doc["transport"]
    assert transport["tls"] is True and transport["supernode_auth"] is True
    assert transport["ca_sha256"] == certs["ca_sha256"]
    assert sorted(e["public_key"] for e in transport["enrolled"]) == sorted(f"{k}.pub" for k in keys)
    assert "Uvicorn running on https://" in (work / "superlink.log").read_text(errors="replace")
    assert intruder.returncode == 2
    assert b"Failed to activate SuperNode" in intruder_out
    from trustmesh.ledger import Ledger

    ledger = Ledger.open(tmp_path / "ledger", read_only=True)
    assert sorted(ledger.entry(1).payload["sites"]) == ["0", "1", "2"]
    assert all(proc.returncode is not None for proc in sites)


def test_site_with_a_foreign_ca_cannot_join(tmp_path: Path) -> None:
    # Arrange: a TLS SuperLink with its own CA; the site trusts a different CA.
    tls = create_tls(tmp_path / "tls", ["127.0.0.1"])
    foreign = create_tls(tmp_path / "foreign", ["127.0.0.1"])
    port = _free_port()
    env = {**os.environ, "PATH": str(BIN) + os.pathsep + os.environ.get("PATH", ""),
           "FLWR_HOME": str(tmp_path / "home")}
    link = subprocess.Popen(
        [str(BIN / "flower-superlink"), "--host", "127.0.0.1", "--port", str(port),
         "--ssl-ca-certfile", str(tls.ca), "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key),
         "--disable-runtime-dependency-installation"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert link.poll() is None, f"flower-superlink exited with {link.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "flower-superlink did not listen"
                time.sleep(0.3)

        # Act
        site = subprocess.run(
            [TRUSTMESH, "fl", "site", "--partition-id", "0", "--superlink", f"127.0.0.1:{port}",
             "--port", str(_free_port()), "--root-cert", str(foreign.ca)],
            capture_output=True, timeout=90, check=False,
        )
    finally:
        stop_group(link, timeout=15)

    # Assert: the SuperNode refused the SuperLink's certificate and `fl site` says it could not join.
    output = (site.stdout + site.stderr).decode(errors="replace")
    assert site.returncode == 2, output[-1500:]
    assert "CERTIFICATE_VERIFY_FAILED" in output
    assert "could not join" in output
