"""Batch appends: one transaction per batch, all or nothing, and idempotent retries that never duplicate."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from trustmesh.errors import InputError, SignatureError
from trustmesh.ledger import Entry, Ledger, audit

ORIGIN = "test.trustmesh/batch"


def _batch(n: int, start: int = 0) -> list[Entry]:
    return [Entry("alert", {"i": start + i, "score": 0.5 + i / (4 * n)}, time=1.7e9 + i) for i in range(n)]


def _count_transactions(led: Ledger) -> list[str]:
    seen: list[str] = []
    led.store._db.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith(("BEGIN", "COMMIT")) else None)
    return seen


def test_a_batch_of_many_entries_is_one_transaction(tmp_path: Path) -> None:
    with Ledger.create(tmp_path / "log", ORIGIN) as led:
        statements = _count_transactions(led)
        indices = led.append(_batch(1_500))  # crosses five tile boundaries
        assert indices == list(range(1_500))
        assert statements == ["BEGIN IMMEDIATE", "COMMIT"]
    assert audit(tmp_path / "log").size == 1_500


def test_a_batch_with_one_bad_entry_appends_nothing(tmp_path: Path) -> None:
    with Ledger.create(tmp_path / "log", ORIGIN) as led:
        led.append(_batch(10))
        bad = [*_batch(300, 10), Entry("alert", {"i": -1}, time=1.0, refs=(10_000,))]  # refers to a later leaf
        with pytest.raises(InputError, match="not earlier"):
            led.append(bad)
        assert led.size == 10
        assert led.append(_batch(5, 10)) == list(range(10, 15))  # the log goes on from where it was
    assert audit(tmp_path / "log").size == 15


def test_a_batch_that_fails_inside_its_transaction_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    with Ledger.create(tmp_path / "log", ORIGIN) as led:
        led.append(_batch(200))
        led.checkpoint()
        real = led.store._db
        calls = {"n": 0}

        class Failing:  # the disk fails on the second write of the batch (after the bundles, before the tiles)
            def __getattr__(self, name: str) -> object:
                return getattr(real, name)

            def executemany(self, sql: str, rows: object) -> object:
                calls["n"] += 1
                if calls["n"] == 2:
                    raise sqlite3.OperationalError("disk I/O error")
                return real.executemany(sql, rows)  # type: ignore[arg-type]

        monkeypatch.setattr(led.store, "_db", Failing())
        with pytest.raises(Exception, match="input/output error|disk I/O"):
            led.append(_batch(700, 200))
        monkeypatch.setattr(led.store, "_db", real)
        assert led.size == 200
        assert led.append(_batch(3, 200)) == [200, 201, 202]
        led.checkpoint()
    report = audit(tmp_path / "log")
    assert report.size == 203


def test_retrying_a_batch_with_its_key_never_duplicates(tmp_path: Path) -> None:
    with Ledger.create(tmp_path / "log", ORIGIN) as led:
        batch = _batch(600)
        first = led.append(batch, idempotency_key="worker-1/batch-7")
        led.append(_batch(2, 600))
        # a retry re-stamps the times; the original indices stand and nothing is appended
        again = led.append([Entry(e.kind, e.payload, time=e.time + 30) for e in batch],
                           idempotency_key="worker-1/batch-7")
        assert again == first == list(range(600))
        assert led.size == 602
        # the same retry inside a group commit, next to new work, is still appended once
        out = led.append_group([(batch, "worker-1/batch-7"), (_batch(1, 700), "worker-1/batch-8"),
                                (batch, "worker-1/batch-7")])
        assert out == [first, [602], first]
        assert led.size == 603
        with pytest.raises(InputError, match="already used"):
            led.append(batch[:-1], idempotency_key="worker-1/batch-7")  # the key names a different request
    assert audit(tmp_path / "log").size == 603


def test_a_group_and_its_checkpoint_are_one_transaction(tmp_path: Path) -> None:
    with Ledger.create(tmp_path / "log", ORIGIN) as led:
        led.append(_batch(300))
        led.checkpoint()
        statements = _count_transactions(led)
        results, cp = led.append_group_signed([(_batch(1, 300), "c1"), (_batch(2, 301), None),
                                               (_batch(1, 303), "c1")])  # the same key again: refused
        assert statements == ["BEGIN IMMEDIATE", "COMMIT"]
        assert results[:2] == [[300], [301, 302]] and isinstance(results[2], InputError)
        assert cp.size == led.size == 303 and cp.root_hash == led.root()
        cp.verify(led.verifier)
        assert led.latest_checkpoint() == cp
        # a retry adds nothing and gets the latest checkpoint back
        again, cp2 = led.append_group_signed([(_batch(1, 300), "c1")])
        assert again == [[300]] and cp2.size == 303
    assert audit(tmp_path / "log").size == 303


def test_a_group_whose_checkpoint_cannot_be_signed_appends_nothing(tmp_path: Path) -> None:
    with Ledger.create(tmp_path / "log", ORIGIN) as led:
        led.append(_batch(5))
        led.checkpoint()
        db = led.store._db
        note = bytes(db.execute("SELECT note FROM checkpoints ORDER BY seq DESC LIMIT 1").fetchone()[0])
        lines = note.split(b"\n")
        lines[1] = b"6"  # the signed size line altered: the stored checkpoint no longer verifies
        db.execute("UPDATE checkpoints SET note=? WHERE seq=(SELECT max(seq) FROM checkpoints)", (b"\n".join(lines),))
        with pytest.raises(SignatureError, match="previous checkpoint"):
            led.append_group_signed([(_batch(3, 5), None)])
        assert led.size == 5
        db.execute("UPDATE checkpoints SET note=? WHERE seq=(SELECT max(seq) FROM checkpoints)", (note,))
        results, cp = led.append_group_signed([(_batch(3, 5), None)])
        assert results == [[5, 6, 7]] and cp.size == 8
    assert audit(tmp_path / "log").size == 8
