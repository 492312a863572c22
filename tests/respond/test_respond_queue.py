"""ApprovalQueue: private files, persistence across objects, one-shot resolution, clear errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from trustmesh.errors import InputError
from trustmesh.records import Decision, IncidentId
from trustmesh.respond import ApprovalQueue


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_private(tmp_path: Path) -> None:
    queue = ApprovalQueue(tmp_path / "state")
    queue.enqueue("apr-1", "inc-1", {"x": 1}, {"kind": "notify"}, {}, False, "dec-1")
    assert _mode(tmp_path / "state") == 0o700
    # the connection is still open, so the WAL files exist and hold recent writes
    for name in ("respond.sqlite3", "respond.sqlite3-wal", "respond.sqlite3-shm"):
        assert _mode(tmp_path / "state" / name) == 0o600, name


def test_approvals_persist_and_resolve_once(tmp_path: Path) -> None:
    ApprovalQueue(tmp_path).enqueue("apr-1", "inc-1", {"x": 1}, {"kind": "notify"}, {}, True, "dec-1")
    other = ApprovalQueue(tmp_path)  # as another process would open it
    assert [a.approval_id for a in other.approvals()] == ["apr-1"]
    assert other.resolve("apr-1", "rejected", "false positive").status == "rejected"
    with pytest.raises(InputError, match="already rejected"):
        other.resolve("apr-1", "approved")
    with pytest.raises(InputError, match="no approval 'apr-404'"):
        other.resolve("apr-404", "approved")


def test_outbox_keeps_order_and_filters(tmp_path: Path) -> None:
    queue = ApprovalQueue(tmp_path)
    recs = [Decision(decision_id=f"d{i}", incident_id=IncidentId(f"inc-{i % 2}"), incident_version=1,
                     status="skipped", reason="r", decided_by="playbook",
                     timestamp=float(i)) for i in range(4)]
    queue.add_records(recs)
    rows = queue.outbox()
    assert [d["decision_id"] for _, _, d in rows] == ["d0", "d1", "d2", "d3"]
    assert [d["decision_id"] for _, _, d in queue.outbox(after=rows[1][0])] == ["d2", "d3"]
    assert [d["decision_id"] for _, _, d in queue.outbox(incident_id="inc-1")] == ["d1", "d3"]


def test_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "respond.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="not a usable state database"):
        ApprovalQueue(tmp_path)
