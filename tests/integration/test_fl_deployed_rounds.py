"""A deployed run (`fl serve` + 2 × `fl site`, TLS, enrolled site keys) whose sites train in their
long-running executors: rounds complete, are on the ledger, and each round's overhead over local
training (round time − slowest fit) is reported. Timing bounds are not asserted: `trustmesh bench
fl-deploy` measures them (docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustmesh.federated._deploy_bench import run_deployed

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.needs_data]


def test_deployed_rounds_over_tls_report_their_overhead(tmp_path: Path, data_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrange: every process prints its round timeline (docs/federated.md, "One round's timeline")
    monkeypatch.setenv("TRUSTMESH_FL_TRACE", "1")

    # Act: the coordinator and two enrolled sites, each a separate `trustmesh` process, over HTTPS.
    doc = run_deployed(sites=2, rounds=2, max_rows=1000, max_test=300, work=tmp_path, timeout=400,
                       extra=["--ledger", str(tmp_path / "ledger"), "--local-epochs", "1"], data_dir=data_dir)

    # Assert: both rounds ran over TLS with both enrolled sites and were recorded on the ledger.
    assert doc["path"] == "flower-deployment"
    assert [r["round"] for r in doc["rounds"]] == [1, 2]
    assert doc["transport"]["tls"] is True and doc["transport"]["supernode_auth"] is True
    assert len(doc["transport"]["enrolled"]) == 2
    assert doc["ledger_indices"] == [0, 1]
    assert 0.0 < doc["metrics"]["macro_f1"] <= 1.0
    # each round's slowest fit and the overhead on top of it are reported, and add up to the round
    fits, overhead, times = doc["fit_seconds"], doc["round_overhead"], doc["round_times"]
    assert len(fits) == len(overhead) == len(times) == 2
    for fit, extra, total in zip(fits, overhead, times, strict=True):
        assert fit > 0 and extra > 0
        assert abs(fit + extra - total) < 1e-3
    # the sites' tasks ran in their executors (one process per site for every round), not per message
    for k in range(2):
        log = (tmp_path / f"site{k}.log").read_text(errors="replace")
        assert log.count("site executor: task completed") == 2
        assert "Start `flwr-clientapp` process" not in log
        # one train message per round and no federated evaluate message: the server evaluates
        traced = [line.split(" ", 3)[2:] for line in log.splitlines() if line.startswith("trace ")]
        received = [event for role, event in traced if role == "supernode" and event.startswith("Receiving:")]
        assert len(received) == 2 and all(e.startswith("Receiving: train message") for e in received)
        steps = [event for role, event in traced if role == "executor"]
        # the model travels packed: Message, RecordDict, ArrayRecord, ConfigRecord, one Array and its
        # chunk per instruction (one array per layer would be 2 objects per array: 16 for this MLP)
        pulls = [event for role, event in traced if role == "start_client_internal" and "start" in event]
        assert pulls == ["pull_objects start n=6"] * 2
        assert steps == ["task acquired", "task input pulled", "app done", "reply and status pushed"] * 2
    # the SuperLink's state stayed in memory: nothing of the sites' updates was written to disk
    assert not list((tmp_path / "serve").glob("superlink.db*"))
    server = (tmp_path / "serve" / "flwr-run.log").read_text(errors="replace")
    for rnd in (1, 2):
        assert f"serverapp round {rnd} configure_fit" in server
        assert f"serverapp round {rnd} aggregated and evaluated" in server
    from trustmesh.ledger import Ledger

    ledger = Ledger.open(tmp_path / "ledger", read_only=True)
    assert sorted(ledger.entry(1).payload["sites"]) == ["0", "1"]
