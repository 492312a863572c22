"""The site's long-running ClientApp executor and the SuperNode launcher behind `fl site`.

The executor is checked against a real Flower SuperNode's Runtime API (``--isolation process`` with a
SuperExec auth secret, as `fl site` runs it); the whole deployed round is in
tests/integration/test_fl_deployed_rounds.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from trustmesh import _supernode
from trustmesh._fl_worker import run_executor

BIN = Path(sys.executable).parent
QUIET = {"FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_launcher_shortens_only_flowers_two_fixed_waits() -> None:
    slept: list[float] = []
    fake = SimpleNamespace(sleep=slept.append, time=lambda: 42.0)
    waits = _supernode._ShorterWaits(fake, {3: 0.2, 0.5: 0.02})  # type: ignore[arg-type]

    for s in (3, 0.5, 1.0, 7):
        waits.sleep(s)

    assert slept == [0.2, 0.02, 1.0, 7]
    assert waits.time() == 42.0  # everything else is the real module's


def test_launcher_patches_the_supernode_loop_of_this_flower(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supernode import start_client_internal as loop

    monkeypatch.setattr(loop, "time", loop.time)  # restored after the test
    patched = _supernode.patch_supernode_waits(idle=0.25, reply=0.01)

    assert isinstance(patched.time, _supernode._ShorterWaits)
    assert patched.time._waits == {3: 0.25, 0.5: 0.01}


def test_launcher_refuses_another_flower_version(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import flwr
    from flwr.supernode import start_client_internal as loop

    monkeypatch.setattr(loop, "time", loop.time)
    monkeypatch.setattr(flwr, "__version__", "1.42.0")

    with pytest.raises(RuntimeError, match="Flower 1.41.x only, found '1.42.0'"):
        _supernode.patch_supernode_waits()
    assert _supernode.main() == 2
    assert "patches Flower 1.41.x only" in capsys.readouterr().err
    assert loop.time is __import__("time")  # nothing was patched


@pytest.fixture
def supernode(tmp_path: Path) -> Any:
    """A real SuperNode in process isolation with a SuperExec secret (no SuperLink: it keeps retrying)."""
    secret = tmp_path / "superexec.secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    port = _free_port()
    log = (tmp_path / "supernode.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trustmesh._supernode", "--superlink", f"127.0.0.1:{_free_port()}", "--insecure",
         "--isolation", "process", "--host", "127.0.0.1", "--port", str(port),
         "--superexec-auth-secret-file", str(secret), "--node-config", "partition-id=0"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **QUIET}, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "supernode.log").read_text(errors="replace")[-1500:]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the SuperNode's Runtime API did not listen within 60 s"
                time.sleep(0.2)
        yield SimpleNamespace(address=f"127.0.0.1:{port}", secret=secret, log=tmp_path / "supernode.log")
    finally:
        from trustmesh._procs import stop_group

        stop_group(proc, timeout=10)
        log.close()


def test_executor_polls_the_supernode_with_the_site_secret_and_others_are_refused(supernode: Any,
                                                                                  tmp_path: Path) -> None:
    # Arrange: the site's secret, and a local process that does not have it.
    wrong = tmp_path / "wrong.secret"
    wrong.write_bytes(b"not the site's secret")

    # Act
    ran = run_executor(supernode.address, supernode.secret.read_bytes(), deadline=time.monotonic() + 1.0)
    intruder = subprocess.run([sys.executable, "-m", "trustmesh._fl_worker", supernode.address, str(wrong)],
                              capture_output=True, timeout=60, check=False, env={**os.environ, **QUIET})

    # Assert: the authenticated executor is served (no task waiting: none run); the other is refused.
    assert ran == 0
    assert intruder.returncode != 0
    assert "SuperExec authentication failed" in supernode.log.read_text(errors="replace")


def test_executor_usage_error_is_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "trustmesh._fl_worker"], capture_output=True, timeout=60,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().startswith("usage: python -m trustmesh._fl_worker")


def test_deployed_clientapp_routes_our_secure_aggregation_messages() -> None:
    from trustmesh._fl_worker import SECAGG_RECORD
    from trustmesh.federated._secagg_flower import RECORD_KEY

    assert SECAGG_RECORD == RECORD_KEY


def test_object_pull_backoff_is_shortened_only_for_the_patched_module(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import ModuleType

    from flwr.supercore.inflatable import inflatable_utils

    calls: list[dict[str, Any]] = []

    def recording_pull(object_ids: list[str], pull_object_fn: Any, *, max_concurrent_pulls: int = 1,
                       max_time: float | None = None, max_tries_per_object: int | None = None,
                       initial_backoff: float = 1.0, backoff_cap: float = 10.0) -> dict[str, bytes]:
        calls.append({"initial_backoff": initial_backoff, "backoff_cap": backoff_cap,
                      "tries": max_tries_per_object})
        return {i: pull_object_fn(i) for i in object_ids}

    monkeypatch.setattr(inflatable_utils, "pull_objects", recording_pull)
    grid = ModuleType("grid")
    grid.pull_objects = recording_pull  # type: ignore[attr-defined]
    other = ModuleType("other")
    other.pull_objects = lambda *a, **k: None  # type: ignore[attr-defined]

    _supernode.patch_object_pulls(grid)
    _supernode.patch_object_pulls(grid)  # idempotent
    got = grid.pull_objects(["a", "b"], lambda i: i.encode())
    recording_pull(["c"], lambda i: b"")  # callers elsewhere keep Flower's backoff

    assert got == {"a": b"a", "b": b"b"}
    assert calls == [{"initial_backoff": _supernode.PULL_BACKOFF, "backoff_cap": _supernode.PULL_BACKOFF_CAP,
                      "tries": _supernode.PULL_MAX_TRIES},
                     {"initial_backoff": 1.0, "backoff_cap": 10.0, "tries": None}]
    with pytest.raises(RuntimeError, match="update trustmesh._supernode"):
        _supernode.patch_object_pulls(other)


def test_trace_lines_only_when_asked(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(_supernode.TRACE_ENV, raising=False)
    _supernode.trace("executor", "task acquired")
    assert capsys.readouterr().err == ""

    monkeypatch.setenv(_supernode.TRACE_ENV, "1")
    before = time.time()
    _supernode.trace("executor", "task acquired")
    line = capsys.readouterr().err.strip()

    word, stamp, role, event = line.split(" ", 3)
    assert (word, role, event) == ("trace", "executor", "task acquired")
    assert before - 1 <= float(stamp) <= time.time() + 1  # wall clock: comparable across processes


def test_traced_object_pull_reports_count_and_bytes(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from types import ModuleType

    from flwr.supercore.inflatable import inflatable_utils

    def pull(object_ids: list[str], pull_object_fn: Any, *, max_concurrent_pulls: int = 1,
             max_time: float | None = None, max_tries_per_object: int | None = None,
             initial_backoff: float = 1.0, backoff_cap: float = 10.0) -> dict[str, bytes]:
        return {i: pull_object_fn(i) for i in object_ids}

    monkeypatch.setattr(inflatable_utils, "pull_objects", pull)
    monkeypatch.setenv(_supernode.TRACE_ENV, "1")
    grid = ModuleType("flwr.superlink.grid.http_grid")
    grid.pull_objects = pull  # type: ignore[attr-defined]
    _supernode.patch_object_pulls(grid)

    grid.pull_objects(["a", "bb", "ccc"], lambda i: i.encode() * 2)

    events = [line.split(" ", 3)[2:] for line in capsys.readouterr().err.splitlines()]
    assert events == [["http_grid", "pull_objects start n=3"], ["http_grid", "pull_objects done bytes=12"]]


def test_executor_retries_local_pulls_faster_than_the_supernodes_remote_ones() -> None:
    # the executor's objects come from its own SuperNode; a long cap only delays seeing them
    assert 0 < _supernode.PULL_BACKOFF <= _supernode.LOCAL_PULL_BACKOFF_CAP < _supernode.PULL_BACKOFF_CAP


def test_coordinator_superlink_keeps_its_state_in_memory() -> None:
    # `fl serve` passes this name so that no SQLite file (one commit per object) holds the run
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME

    from trustmesh.cli.fl import FLWR_IN_MEMORY_DB

    assert FLWR_IN_MEMORY_DB == FLWR_IN_MEMORY_DB_NAME
