"""`trustmesh bench zk --json` runs and reports sane, internally consistent numbers."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from trustmesh.cli import app


def test_bench_zk_json_small() -> None:
    result = CliRunner().invoke(app, ["bench", "zk", "--coordinates", "20", "--bound", "7", "--reps", "1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    sizes = {r["bits"]: r["proof_bytes"] for r in doc["range"]}
    assert sizes[64] > sizes[32] > 0
    linf = doc["linf"]
    assert linf["bits_per_coordinate"] == 4 and linf["coordinates"] == 20
    assert linf["prove_s"] > 0 and linf["verify_s"] > 0 and linf["proof_bytes"] > 20 * 4 * 96
