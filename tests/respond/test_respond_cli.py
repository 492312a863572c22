"""`trustmesh bench respond` on the real TON_IoT file (a small slice), and CLI error paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TRUSTMESH = str(Path(sys.executable).with_name("trustmesh"))
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.needs_data
def test_bench_respond_on_ton_iot_slice(data_dir: Path) -> None:
    done = subprocess.run([TRUSTMESH, "bench", "respond", "--data-dir", str(data_dir), "--limit", "3000",
                           "--handle-limit", "300", "--json"], capture_output=True, text=True, check=False,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["attack_rows"] == 3000
    assert 1 <= doc["incidents"] < 3000  # correlation groups alerts
    assert sum(v["alerts"] for v in doc["per_class"].values()) == 3000
    assert all("-" not in v["technique"] for v in doc["per_class"].values())  # every class maps
    assert doc["handle_calls"] == 300 and doc["records"] > 0


def test_cli_missing_state_and_bad_playbook_are_one_line_errors(tmp_path: Path) -> None:
    missing = subprocess.run([TRUSTMESH, "incidents", "list", "--state", str(tmp_path / "none")],
                             capture_output=True, text=True, check=False)
    nofile = subprocess.run([TRUSTMESH, "playbook", "validate", str(tmp_path / "nope.yaml")],
                            capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "no response state here" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert nofile.returncode == 2 and "playbook file not found" in nofile.stderr
    assert len(nofile.stderr.strip().splitlines()) == 1
