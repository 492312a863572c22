"""`trustmesh datasets list/verify` through typer's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustmesh.cli._app import app
from trustmesh.flows import DATASETS

pytestmark = pytest.mark.needs_data

runner = CliRunner()


def test_list_json(data_dir: Path) -> None:
    result = runner.invoke(app, ["datasets", "list", "--json", "--data-dir", str(data_dir)])

    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    by_name = {d["name"]: d for d in doc["datasets"]}
    assert set(by_name) == set(DATASETS)
    assert by_name["ton-iot-network"]["rows"] == 211_043
    assert all(d["status"] == "present" for d in doc["datasets"])


def test_list_table_on_empty_dir(tmp_path: Path) -> None:
    result = runner.invoke(app, ["datasets", "list", "--data-dir", str(tmp_path)])

    assert result.exit_code == 0
    assert "nsl-kdd" in result.stdout and "missing" in result.stdout


def test_verify_ok(data_dir: Path) -> None:
    result = runner.invoke(app, ["datasets", "verify", "nsl-kdd", "pcap-synscan", "--data-dir", str(data_dir)])

    assert result.exit_code == 0, result.output
    assert "ok: 5 files in 2 datasets verified" in result.stdout


def test_verify_reports_each_problem(data_dir: Path, tmp_path: Path) -> None:
    rel = "logs/zeek/slips-test10-mixed/conn.log.gz"
    (tmp_path / rel).parent.mkdir(parents=True)
    shutil.copy(data_dir / rel, tmp_path / rel)
    (tmp_path / rel).write_bytes((tmp_path / rel).read_bytes() + b"x")

    text = runner.invoke(app, ["datasets", "verify", "zeek-slips-test10", "nsl-kdd", "--data-dir", str(tmp_path)])
    as_json = runner.invoke(app, ["datasets", "verify", "zeek-slips-test10", "--json", "--data-dir", str(tmp_path)])

    assert text.exit_code == 1
    lines = [ln for ln in text.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 5  # 1 corrupted + 4 missing NSL-KDD files
    assert any("sha256 mismatch" in ln for ln in lines)
    assert sum("missing" in ln and "unb.ca" in ln for ln in lines) == 4
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is False and doc["files"][0]["status"] == "corrupted" and doc["files"][0]["obtain_from"]


def test_verify_unknown_name_is_one_line_exit_2() -> None:
    result = runner.invoke(app, ["datasets", "verify", "bogus"])

    assert result.exit_code == 2
    assert "unknown dataset(s): bogus" in result.stderr
