"""Environment failures are their own class (exit 3, naming the path); read-only verification works."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustmesh.cli._app import app
from trustmesh.cli._common import classify
from trustmesh.errors import EnvironmentProblem, LogIntegrityError
from trustmesh.ledger._store import sqlite_problem

runner = CliRunner()


def _mount(args: list[str]) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}); needs root with CAP_SYS_ADMIN")


@pytest.fixture()
def mounts() -> Iterator[list[Path]]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make read-only and full file systems")
    made: list[Path] = []
    yield made
    for m in reversed(made):
        subprocess.run(["umount", "-l", str(m)], capture_output=True, check=False)


def _ledger_with_one_entry(where: Path) -> Path:
    led = where / "led"
    assert runner.invoke(app, ["ledger", "init", str(led), "--origin", "env.example/log"]).exit_code == 0
    entries = where / "e.jsonl"
    entries.write_text(json.dumps({"kind": "note", "payload": {"n": 1}}) + "\n")
    done = runner.invoke(app, ["ledger", "append", str(led), "-f", str(entries), "--checkpoint"])
    assert done.exit_code == 0, done.output
    return led


def test_verify_on_read_only_media_says_ok_and_appends_exit_3(tmp_path: Path, mounts: list[Path]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _ledger_with_one_entry(src)
    ro = tmp_path / "ro"
    ro.mkdir()
    _mount(["--bind", str(src), str(ro)])
    mounts.append(ro)
    _mount(["-o", "remount,bind,ro", str(ro)])
    with pytest.raises(OSError):
        (ro / "probe").write_text("x")

    done = runner.invoke(app, ["ledger", "verify", str(ro / "led")])
    assert done.exit_code == 0, done.output
    assert "OK" in done.output and "damaged" not in done.output

    done = runner.invoke(app, ["ledger", "append", str(ro / "led"), "-f", str(src / "e.jsonl")])
    assert done.exit_code == 3, done.output
    assert "environment:" in done.output and "ledger.sqlite" in done.output and "read-only" in done.output


def test_disk_full_is_an_environment_error_not_log_integrity(tmp_path: Path, mounts: list[Path]) -> None:
    full = tmp_path / "full"
    full.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=600k", "tmpfs", str(full)])
    mounts.append(full)
    assert runner.invoke(app, ["ledger", "init", str(full / "led"), "--origin", "env.example/log"]).exit_code == 0
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"kind": "note", "payload": {"pad": "y" * 400, "i": i}}) + "\n"
                           for i in range(3000)))
    done = runner.invoke(app, ["ledger", "append", str(full / "led"), "-f", str(big)])
    assert done.exit_code == 3, done.output
    assert "disk full" in done.output and str(full / "led") in done.output
    assert "LogIntegrityError" not in done.output
    # what was committed before the disk filled still verifies
    assert runner.invoke(app, ["ledger", "verify", str(full / "led")]).exit_code == 0


def test_sqlite_errors_are_classified_by_result_code(tmp_path: Path) -> None:
    def err(code: int, text: str) -> sqlite3.OperationalError:
        exc = sqlite3.OperationalError(text)
        exc.sqlite_errorcode = code  # type: ignore[attr-defined]
        return exc

    p = tmp_path / "ledger.sqlite"
    assert isinstance(sqlite_problem(p, err(13, "database or disk is full")), EnvironmentProblem)
    assert isinstance(sqlite_problem(p, err(8, "attempt to write a readonly database")), EnvironmentProblem)
    assert isinstance(sqlite_problem(p, err(10 | (13 << 8), "disk I/O error")), EnvironmentProblem)
    corrupt = sqlite3.DatabaseError("database disk image is malformed")
    corrupt.sqlite_errorcode = 11  # type: ignore[attr-defined]
    assert isinstance(sqlite_problem(p, corrupt), LogIntegrityError)
    notadb = tmp_path / "x.sqlite"
    notadb.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LogIntegrityError):
        from trustmesh.ledger._store import TileStore

        TileStore(notadb)


@pytest.mark.parametrize(("exc", "code", "words"), [
    (OSError(errno.ENOSPC, "No space left on device", "/var/x"), 3, "/var/x: no space left on device"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/y"), 3, "/mnt/y: read-only file system"),
    (PermissionError(errno.EACCES, "Permission denied", "/etc/z"), 3, "/etc/z: permission denied"),
    (FileNotFoundError(errno.ENOENT, "No such file", "/nope"), 2, "/nope: no such file"),
    (EnvironmentProblem("/d: disk full", path="/d"), 3, "environment: /d: disk full"),
    (LogIntegrityError("bad leaf"), 1, "LogIntegrityError: bad leaf"),
])
def test_exit_codes_per_failure_class(exc: BaseException, code: int, words: str) -> None:
    got = classify(exc)
    assert got is not None and got[0] == code and words in got[1]
