"""Persistent response state in SQLite: approval queue, applied actions, handled steps, record outbox.

One file, ``STATE_DIR/respond.sqlite3`` (directory 0700, file 0600), shared by the responder and by
``trustmesh incidents ...`` in other processes; SQLite's locking serialises writers.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustmesh.config import Settings, load_settings
from trustmesh.errors import InputError
from trustmesh.records import ActionResult, Decision, Incident, TriageProposal

__all__ = ["ApprovalQueue", "PendingApproval", "StoredAction", "default_state_dir"]

Record = Incident | Decision | ActionResult | TriageProposal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
  incident_id TEXT PRIMARY KEY, version INTEGER NOT NULL, doc TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS approvals (
  approval_id TEXT PRIMARY KEY, incident_id TEXT NOT NULL, created REAL NOT NULL, status TEXT NOT NULL,
  request TEXT NOT NULL, action_spec TEXT NOT NULL, guards TEXT NOT NULL, enforce INTEGER NOT NULL,
  decision_id TEXT NOT NULL, decided_at REAL, note TEXT);
CREATE TABLE IF NOT EXISTS actions (
  action_id TEXT PRIMARY KEY, incident_id TEXT NOT NULL, decision_id TEXT NOT NULL, kind TEXT NOT NULL,
  blocks INTEGER NOT NULL, status TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL,
  targets TEXT NOT NULL, enforce INTEGER NOT NULL, applied_at REAL NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS handled (
  incident_id TEXT NOT NULL, step_key TEXT NOT NULL, target TEXT NOT NULL,
  PRIMARY KEY (incident_id, step_key, target));
CREATE TABLE IF NOT EXISTS records (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, record_type TEXT NOT NULL, incident_id TEXT,
  doc TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS logged (seq INTEGER PRIMARY KEY, leaf INTEGER);
"""


def default_state_dir(settings: Settings | None = None) -> Path:
    """Return ``$TRUSTMESH_STATE_DIR``, else ``trustmesh-state`` beside the ledger directory."""
    env = os.environ.get("TRUSTMESH_STATE_DIR")
    if env:
        return Path(env).expanduser()
    settings = settings if settings is not None else load_settings()
    return settings.ledger_dir.parent / "trustmesh-state"


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """A step waiting for a person: what would run, with which action config and guards."""

    approval_id: str
    incident_id: str
    created: float
    status: str
    request: dict[str, Any]
    action_spec: dict[str, Any]
    guards: dict[str, Any]
    enforce: bool
    decision_id: str
    decided_at: float | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(frozen=True, slots=True)
class StoredAction:
    """An applied action, kept for rollback and TTL expiry."""

    action_id: str
    incident_id: str
    decision_id: str
    kind: str
    blocks: bool
    status: str
    spec: dict[str, Any]
    state: dict[str, Any]
    targets: tuple[str, ...]
    enforce: bool
    applied_at: float
    expires_at: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        d = {k: getattr(self, k) for k in self.__slots__}
        d["targets"] = list(self.targets)
        return d


class ApprovalQueue:
    """The persistent queue of steps awaiting approval, plus the responder's other state."""

    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir).expanduser()
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InputError(f"{self.state_dir}: cannot create state directory ({exc})") from None
        self.path = self.state_dir / "respond.sqlite3"
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._batch_depth = 0  # > 0 inside batch()
        if not self.path.exists():
            # create the file 0600 before SQLite does: its -wal/-shm files copy the database's mode
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            with self._db() as db:
                # WAL lets the CLI read while the responder writes; with synchronous=NORMAL a commit
                # does not fsync (a power cut may lose the last commits, never corrupt the file)
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path}: not a usable state database ({exc})") from None

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # one connection per queue object, kept open: reopening per call checkpoints the WAL each time
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
                self._conn.row_factory = sqlite3.Row
                self._conn.execute("PRAGMA synchronous=NORMAL")
            if self._batch_depth:  # inside batch(): one commit at its end
                yield self._conn
                return
            with self._conn:
                yield self._conn

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make the calls inside one transaction: the same rows as call by call, one commit for all.

        Each call stays all-or-nothing: every call but :meth:`add_records` is one statement (SQLite
        undoes a failed statement), and that one prepares every row before it writes the first. The
        transaction commits when the block ends, also when it ends with an exception (what earlier
        calls wrote stays, as it would call by call).
        Other threads using this queue wait for the block; other processes see its writes at the end.
        The pipeline responds to a batch's incidents in one such block (not one commit per call).
        """
        with self._lock:
            with self._db():  # opens the connection
                pass
            assert self._conn is not None
            conn = self._conn
            if self._batch_depth == 0:
                if conn.in_transaction:
                    conn.commit()
                # IMMEDIATE takes the write lock now: a deferred transaction that read first could not
                # upgrade after another process wrote (SQLITE_BUSY_SNAPSHOT, not retried)
                conn.execute("BEGIN IMMEDIATE")
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
                if self._batch_depth == 0:
                    conn.commit()

    def close(self) -> None:
        """Close the database connection (it reopens on the next call)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()

    # -- incidents and records ---------------------------------------------------------------
    def save_incident(self, incident: Incident) -> None:
        """Store the latest version of an incident."""
        with self._db() as db:
            db.execute(
                "INSERT INTO incidents VALUES (?,?,?,?) ON CONFLICT(incident_id) DO UPDATE SET "
                "version=excluded.version, doc=excluded.doc, updated=excluded.updated "
                "WHERE excluded.version >= incidents.version",
                (incident.incident_id, incident.version, json.dumps(incident.to_dict()), time.time()),
            )

    def incident(self, incident_id: str) -> Incident:
        """Return a stored incident; raise InputError when unknown."""
        with self._db() as db:
            row = db.execute("SELECT doc FROM incidents WHERE incident_id=?", (incident_id,)).fetchone()
        if row is None:
            raise InputError(f"no incident {incident_id!r} in {self.path}")
        return Incident.from_dict(json.loads(row["doc"]))

    def incidents(self) -> list[Incident]:
        """Return every stored incident, newest activity first."""
        with self._db() as db:
            rows = db.execute("SELECT doc FROM incidents ORDER BY updated DESC").fetchall()
        return [Incident.from_dict(json.loads(r["doc"])) for r in rows]

    def add_records(self, records: Sequence[Record], *, claimed: bool = False) -> list[int]:
        """Append records to the outbox (what the pipeline later appends to the ledger); return their seqs.

        With ``claimed`` the caller appends them to the ledger itself (the operator API does, at once):
        they are marked in the same transaction, so ``outbox()`` never hands them to the pipeline as
        well.
        """
        seqs: list[int] = []
        if not records:
            return seqs
        rows = [(r.record_type, getattr(r, "incident_id", None), json.dumps(r.to_dict())) for r in records]
        with self._db() as db:
            for record_type, incident_id, doc in rows:
                cur = db.execute("INSERT INTO records (record_type, incident_id, doc, created) VALUES (?,?,?,?)",
                                 (record_type, incident_id, doc, time.time()))
                seqs.append(int(cur.lastrowid or 0))
            if claimed:
                db.executemany("INSERT INTO logged (seq, leaf) VALUES (?, NULL)", [(s,) for s in seqs])
        return seqs

    def mark_logged(self, seq: int, leaf: int) -> None:
        """Record the ledger leaf a claimed record was appended as."""
        with self._db() as db:
            db.execute("INSERT INTO logged (seq, leaf) VALUES (?, ?) ON CONFLICT(seq) DO UPDATE SET "
                       "leaf=excluded.leaf", (seq, leaf))

    def unlogged_claims(self) -> list[tuple[int, str, dict[str, Any]]]:
        """Return claimed records whose ledger append never finished (a crash between the two)."""
        with self._db() as db:
            rows = db.execute("SELECT r.seq, r.record_type, r.doc FROM records r JOIN logged l ON "
                              "l.seq = r.seq WHERE l.leaf IS NULL ORDER BY r.seq").fetchall()
        return [(int(r["seq"]), str(r["record_type"]), json.loads(r["doc"])) for r in rows]

    def outbox(self, after: int = 0, incident_id: str | None = None, *,
               include_claimed: bool = False) -> list[tuple[int, str, dict[str, Any]]]:
        """Return ``(seq, record_type, doc)`` for records with ``seq > after`` (optionally one incident).

        Records another writer claimed for the ledger (the operator API appends its own at once) are
        left out unless ``include_claimed``: what the pipeline drains is only what nobody logged.
        """
        sql = "SELECT seq, record_type, doc FROM records WHERE seq > ?"
        args: list[Any] = [after]
        if incident_id is not None:
            sql += " AND incident_id = ?"
            args.append(incident_id)
        if not include_claimed:
            sql += " AND seq NOT IN (SELECT seq FROM logged)"
        with self._db() as db:
            rows = db.execute(sql + " ORDER BY seq", args).fetchall()
        return [(int(r["seq"]), str(r["record_type"]), json.loads(r["doc"])) for r in rows]

    # -- approvals ---------------------------------------------------------------------------
    def enqueue(self, approval_id: str, incident_id: str, request: dict[str, Any], action_spec: dict[str,
                                                                                                     Any],
                guards: dict[str, Any], enforce: bool, decision_id: str) -> None:
        """Queue a step for a person to approve or reject."""
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO approvals VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (approval_id, incident_id, time.time(), "pending", json.dumps(request),
                 json.dumps(action_spec),
                 json.dumps(guards), int(enforce), decision_id, None, None),
            )

    def _select(self, table: str, order_by: str, **equals: str | None) -> list[sqlite3.Row]:
        """Return the rows of ``table`` whose columns equal the given non-None values, ordered."""
        where = [(column, value) for column, value in equals.items() if value is not None]
        sql = f"SELECT * FROM {table}" + "".join(
            (" WHERE " if i == 0 else " AND ") + f"{column}=?" for i, (column, _) in enumerate(where))
        with self._db() as db:
            return list(db.execute(f"{sql} ORDER BY {order_by}", [value for _, value in where]).fetchall())

    def approvals(self, status: str | None = "pending",
                  incident_id: str | None = None) -> list[PendingApproval]:
        """Return queued approvals (all statuses when ``status`` is None)."""
        rows = self._select("approvals", "created", status=status, incident_id=incident_id)
        return [self._approval(r) for r in rows]

    def approval(self, approval_id: str) -> PendingApproval:
        """Return one approval; raise InputError when unknown."""
        with self._db() as db:
            row = db.execute("SELECT * FROM approvals WHERE approval_id=?", (approval_id,)).fetchone()
        if row is None:
            raise InputError(f"no approval {approval_id!r} in {self.path}")
        return self._approval(row)

    def resolve(self, approval_id: str, status: str, note: str | None = None) -> PendingApproval:
        """Mark a pending approval approved or rejected (once); return it as it was before."""
        if status not in {"approved", "rejected"}:
            raise ValueError(f"status must be approved or rejected, got {status!r}")
        with self._db() as db:
            cur = db.execute(
                "UPDATE approvals SET status=?, decided_at=?, note=? "
                "WHERE approval_id=? AND status='pending'",
                (status, time.time(), note, approval_id),
            )
            if cur.rowcount != 1:
                row = db.execute("SELECT status FROM approvals WHERE approval_id=?", (approval_id,
                                                                                      )).fetchone()
                if row is None:
                    raise InputError(f"no approval {approval_id!r} in {self.path}")
                raise InputError(f"approval {approval_id!r} is already {row['status']}")
        return self.approval(approval_id)

    @staticmethod
    def _approval(r: sqlite3.Row) -> PendingApproval:
        return PendingApproval(r["approval_id"], r["incident_id"], r["created"], r["status"],
                               json.loads(r["request"]), json.loads(r["action_spec"]),
                               json.loads(r["guards"]),
                               bool(r["enforce"]), r["decision_id"], r["decided_at"], r["note"])

    # -- applied actions ---------------------------------------------------------------------
    def record_action(self, action: StoredAction) -> None:
        """Remember an applied (or dry-run) action for rollback and expiry."""
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO actions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (action.action_id, action.incident_id, action.decision_id, action.kind, int(action.blocks),
                 action.status, json.dumps(action.spec), json.dumps(action.state),
                 json.dumps(list(action.targets)),
                 int(action.enforce), action.applied_at, action.expires_at),
            )

    def set_action_status(self, action_id: str, status: str) -> None:
        """Update an action's status (rolled_back, expired)."""
        with self._db() as db:
            db.execute("UPDATE actions SET status=? WHERE action_id=?", (status, action_id))

    def actions(self, incident_id: str | None = None, status: str | None = None) -> list[StoredAction]:
        """Return stored actions, oldest first."""
        rows = self._select("actions", "applied_at", incident_id=incident_id, status=status)
        return [self._action(r) for r in rows]

    @staticmethod
    def _action(r: sqlite3.Row) -> StoredAction:
        return StoredAction(r["action_id"], r["incident_id"], r["decision_id"], r["kind"], bool(r["blocks"]),
                            r["status"], json.loads(r["spec"]), json.loads(r["state"]),
                            tuple(json.loads(r["targets"])), bool(r["enforce"]), r["applied_at"],
                            r["expires_at"])

    def due(self, now: float) -> list[StoredAction]:
        """Return applied (or dry-run) actions whose TTL ended at or before ``now``, oldest first."""
        with self._db() as db:  # filtered in SQL: the pipeline asks after every batch, the table grows
            rows = db.execute("SELECT * FROM actions WHERE status IN ('applied', 'dry_run') AND expires_at IS NOT NULL "
                              "AND expires_at <= ? ORDER BY applied_at", (now,)).fetchall()
        return [self._action(r) for r in rows]

    # -- guard state -------------------------------------------------------------------------
    def blocking_since(self, since: float) -> int:
        """Count blocking actions applied (or dry-run) at or after ``since`` (for the rate limit)."""
        with self._db() as db:
            row = db.execute("SELECT COUNT(*) AS n FROM actions WHERE blocks=1 AND applied_at>=? "
                             "AND status != 'failed'", (since,)).fetchone()
        return int(row["n"])

    def hosts_blocked(self, incident_id: str) -> set[str]:
        """Return the hosts blocking actions of this incident have targeted."""
        out: set[str] = set()
        for a in self.actions(incident_id=incident_id):
            if a.blocks and a.status != "failed":
                out.update(a.targets)
        return out

    def mark_handled(self, incident_id: str, step_key: str, targets: Sequence[str]) -> None:
        """Remember that a step was decided for these targets (``""`` for a step without targets)."""
        with self._db() as db:
            db.executemany("INSERT OR IGNORE INTO handled VALUES (?,?,?)",
                           [(incident_id, step_key, t) for t in (targets or [""])])

    def unmark_handled(self, incident_id: str, step_key: str, targets: Sequence[str]) -> None:
        """Forget targets of a step (a denied step may be retried later)."""
        with self._db() as db:
            db.executemany("DELETE FROM handled WHERE incident_id=? AND step_key=? AND target=?",
                           [(incident_id, step_key, t) for t in targets])

    def handled(self, incident_id: str, step_key: str) -> set[str]:
        """Return the targets this step was already decided for."""
        with self._db() as db:
            rows = db.execute("SELECT target FROM handled WHERE incident_id=? AND step_key=?",
                              (incident_id, step_key)).fetchall()
        return {str(r["target"]) for r in rows}
