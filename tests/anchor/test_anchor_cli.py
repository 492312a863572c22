"""`trustmesh ledger anchor` and `trustmesh bench anchor` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from _anchor_helpers import extend_ledger, make_ledger  # type: ignore[import-not-found]
from trustmesh.cli import app
from trustmesh.ledger.anchor import verify_anchor

runner = CliRunner()


def test_ledger_anchor_command(tmp_path: Path) -> None:
    d = tmp_path / "log"
    make_ledger(d, "trustmesh.test-anchor-cli", [{"i": i} for i in range(5)])
    result = runner.invoke(app, ["ledger", "anchor", str(d), "--chain", "embedded", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["size"] == 5 and doc["tx_hash"] and doc["gas_used"] > 0
    extend_ledger(d, [{"i": 5}])
    result = runner.invoke(app, ["ledger", "anchor", str(d)])
    assert result.exit_code == 0 and "size 6" in result.output
    assert verify_anchor(d, "embedded")["anchored_size"] == 6


def test_ledger_anchor_errors_are_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ledger", "anchor", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no ledger" in result.output
    d = tmp_path / "log"
    make_ledger(d, "trustmesh.test-anchor-cli", [{"i": 0}])
    result = runner.invoke(app, ["ledger", "anchor", str(d), "--chain", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "unreachable" in result.output and "Traceback" not in result.output


def test_bench_anchor_json() -> None:
    result = runner.invoke(app, ["bench", "anchor", "--batches", "1,10,100", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    gas = [row["gas_used"] for row in doc["anchors"]]
    assert gas[0] > gas[1] > 21000  # first anchor pays for fresh storage
    assert abs(gas[2] - gas[1]) < 1000  # later anchors cost the same whatever the batch size
    assert doc["anchors"][2]["gas_per_entry"] < doc["anchors"][1]["gas_per_entry"]


def test_dry_run_sends_nothing(tmp_path: Path) -> None:
    d = tmp_path / "log"
    make_ledger(d, "trustmesh.test-anchor-cli", [{"i": 0}, {"i": 1}])
    result = runner.invoke(app, ["ledger", "anchor", str(d), "--dry-run"])
    assert result.exit_code == 0 and "would anchor" in result.output and "new LogAnchor" in result.output
    assert not (d / "anchor" / "anchors.json").exists()
    assert runner.invoke(app, ["ledger", "anchor", str(d)]).exit_code == 0
    extend_ledger(d, [{"i": 2}])
    result = runner.invoke(app, ["ledger", "anchor", str(d), "--dry-run", "--json"])
    doc = json.loads(result.output)
    assert doc["dry_run"] and doc["size"] == 3 and doc["tx_hash"] is None
    assert verify_anchor(d, "embedded")["anchored_size"] == 2  # the dry run changed nothing on chain
