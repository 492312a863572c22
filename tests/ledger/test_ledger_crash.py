"""Crash safety: SIGKILL an appending process at random points; no acknowledged entry is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from trustmesh.ledger import Ledger, audit

CHILD = textwrap.dedent(
    """
    import sys
    from trustmesh.ledger import Entry, Ledger

    directory, run, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import random
    rng = random.Random(seed)
    led = Ledger.open(directory)
    seq = 0
    print("ready", flush=True)
    while True:
        n = rng.choice([1, 7, 255, 256, 300, 1000])
        batch = [Entry("crash", {"run": run, "seq": seq + k}, time=1.0) for k in range(n)]
        first = led.append(batch)[0]
        # acknowledged: append() returned, so the batch must survive
        print(f"{first} {run} {seq} {n}", flush=True)
        seq += n
        if rng.random() < 0.3:
            led.checkpoint()
    """
)


@pytest.mark.slow
def test_sigkill_during_appends_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    # Arrange
    d = tmp_path / "log"
    Ledger.create(d, "crash.example/log").close()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(1234)
    acked: list[tuple[int, int, int, int]] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for run in range(8):
        proc = subprocess.Popen([sys.executable, str(script), str(d), str(run), str(run)],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # Act: let it append for a random while, then kill it without warning
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 4:  # a line cut by the kill is not an acknowledgement
                acked.append(tuple(int(x) for x in parts))  # type: ignore[arg-type]
    # Assert: every acknowledged entry is there with its content, and the whole log verifies
    assert acked, "the child never acknowledged an append"
    with Ledger.open(d, read_only=True) as led:
        for first, run, seq, n in acked:
            assert led.size >= first + n
            for k in (0, n - 1):
                assert led.entry(first + k).payload == {"run": run, "seq": seq + k}
    report = audit(d)
    assert report.size >= max(f + n for f, _, _, n in acked)


WRITER = textwrap.dedent(
    """
    import sys
    from trustmesh.ledger import Entry, Ledger

    directory, name = sys.argv[1], sys.argv[2]
    with Ledger.open(directory) as led:
        for k in range(30):
            first = led.append([Entry("w", {"writer": name, "k": k, "j": j}, time=1.0) for j in range(37)])[0]
            print(first, flush=True)
            if k % 10 == 9:
                led.checkpoint()
    """
)


def test_two_processes_appending_at_once_interleave_whole_batches(tmp_path: Path) -> None:
    # Arrange
    d = tmp_path / "log"
    Ledger.create(d, "multi.example/log").close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # Act
    procs = [subprocess.Popen([sys.executable, str(script), str(d), name], stdout=subprocess.PIPE, text=True, env=env)
             for name in ("a", "b")]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    # Assert: 60 batches of 37, each contiguous and in order, nothing lost, and the log verifies
    assert all(p.returncode == 0 for p in procs)
    firsts = {name: [int(x) for x in out.split()] for name, out in zip(("a", "b"), outs, strict=True)}
    with Ledger.open(d, read_only=True) as led:
        assert led.size == 2 * 30 * 37
        for name, starts in firsts.items():
            for k, first in enumerate(starts):
                assert [led.entry(first + j).payload for j in (0, 36)] == [
                    {"writer": name, "k": k, "j": 0}, {"writer": name, "k": k, "j": 36}]
    assert audit(d).size == 2220
