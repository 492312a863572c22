"""``bench ledger --serve-clients``: a real ``ledger serve``, every acknowledged entry durable once, each side's CPU."""

from __future__ import annotations

import math
from pathlib import Path

from trustmesh.cli._bench_serve import bench_serve


def test_bench_serve_reports_durability_groups_and_cpu_per_append(tmp_path: Path) -> None:
    res = bench_serve(3, 1.5, tmp_path)
    assert res["errors"] == [] and res["acknowledged"] > 0
    assert res["durable_and_unique"] and res["ledger_size"] == res["acknowledged"]
    # the server printed its request and group counts when it stopped; groups never exceed requests
    assert res["group_commits"] is not None and 1 <= res["group_commits"] <= res["acknowledged"]
    assert res["mean_requests_per_group"] >= 1.0
    for side in ("server_cpu_us_per_append", "client_cpu_us_per_append"):
        assert res[side] is not None and math.isfinite(res[side]) and res[side] > 0, side
