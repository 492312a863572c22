"""A killed `trustmesh ledger append` loses no printed index, and a retry with its idempotency key
appends nothing twice (real processes, SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trustmesh.ledger import Ledger

ORIGIN = "test.example/append-kill"


@pytest.mark.integration
def test_killed_cli_append_loses_no_printed_index_and_a_retry_duplicates_nothing(tmp_path: Path) -> None:
    """Issue 14: indices of a large append were printed only at the end; a retry after a kill duplicated."""
    n, batch = 20_000, 400
    d = tmp_path / "log"
    Ledger.create(d, ORIGIN).close()
    src = tmp_path / "entries.jsonl"
    src.write_text("".join(json.dumps({"kind": "alert", "payload": {"i": i}}) + "\n" for i in range(n)))
    cmd = [sys.executable, "-c", "from trustmesh.cli import main; main()", "ledger", "append", str(d), "--file", str(src),
           "--batch", str(batch), "--idempotency-key", "import-2026-12-01"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    assert proc.stdout is not None
    printed = [int(proc.stdout.readline()) for _ in range(batch)]  # the first transaction's indices
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=60)
    printed += [int(x) for x in rest.split()]
    with Ledger.open(d, read_only=True) as led:
        committed = led.size
    assert printed == list(range(len(printed))) and len(printed) <= committed <= n
    retry = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert retry.returncode == 0, retry.stderr
    assert [int(x) for x in retry.stdout.split()] == list(range(n))
    with Ledger.open(d, read_only=True) as led:
        assert led.size == n
        assert [led.entry(i).payload["i"] for i in (0, batch, n - 1)] == [0, batch, n - 1]
