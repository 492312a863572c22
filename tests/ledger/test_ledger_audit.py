"""Randomized tamper campaign: every edit to the SQLite file or its tiles is caught, with the right error.

Each trial copies a pristine log, applies one random edit of one kind with SQL on the database file,
and runs ``audit``. The expected error class and first bad index are computed from the edit alone.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from _ledger_helpers import ORIGIN, make_entries

from trustmesh.errors import (
    CheckpointError,
    ConsistencyError,
    LogIntegrityError,
    SignatureError,
    VerificationError,
)
from trustmesh.ledger import Checkpoint, Entry, Ledger, NoteSigner, audit
from trustmesh.ledger._store import level_offsets, read_stored_entries, rewrite_stored_entries

SIZE = 530  # two full level-0 tiles, a partial one, and a partial level-1 tile
CHECKPOINTS = (200, SIZE)
TRIALS = 200  # per kind


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pristine") / "log"
    with Ledger.create(d, ORIGIN) as led:
        led.append(make_entries(CHECKPOINTS[0]))
        led.checkpoint()
        led.append(make_entries(SIZE - CHECKPOINTS[0], CHECKPOINTS[0]))
        led.checkpoint()
        led.store.checkpoint_wal()
    audit(d)  # the untouched log verifies
    return d


def _copy(pristine: Path, dest: Path) -> Path:
    shutil.copytree(pristine, dest)
    return dest


def _other_entry(rng: random.Random) -> bytes:
    return Entry("forged", {"n": rng.randrange(10**9)}, time=1.0).to_bytes()


# Each edit mutates the database and returns (expected error class, expected first bad index).
Edit = Callable[[sqlite3.Connection, random.Random], tuple[type[VerificationError], int]]


def modify_entry(db: sqlite3.Connection, rng: random.Random) -> tuple[type[VerificationError], int]:
    entries = read_stored_entries(db)
    i = rng.randrange(SIZE)
    raw = bytearray(entries[i])
    if rng.random() < 0.5:
        pos = rng.randrange(len(raw))
        raw[pos] ^= 1 << rng.randrange(8)
        entries[i] = bytes(raw)
    else:
        entries[i] = _other_entry(rng)
    rewrite_stored_entries(db, entries)
    return LogIntegrityError, i


def delete_entry(db: sqlite3.Connection, rng: random.Random) -> tuple[type[VerificationError], int]:
    entries = read_stored_entries(db)
    i = rng.randrange(SIZE)
    del entries[i]
    rewrite_stored_entries(db, entries)
    return LogIntegrityError, i


def insert_entry(db: sqlite3.Connection, rng: random.Random) -> tuple[type[VerificationError], int]:
    entries = read_stored_entries(db)
    i = rng.randrange(SIZE)
    entries.insert(i, _other_entry(rng) if rng.random() < 0.5 else entries[rng.randrange(SIZE)])
    rewrite_stored_entries(db, entries)
    return LogIntegrityError, i


def reorder_entries(db: sqlite3.Connection, rng: random.Random) -> tuple[type[VerificationError], int]:
    entries = read_stored_entries(db)
    i, j = sorted(rng.sample(range(SIZE), 2))
    entries[i], entries[j] = entries[j], entries[i]
    rewrite_stored_entries(db, entries)
    return LogIntegrityError, i


def truncate_entries(db: sqlite3.Connection, rng: random.Random) -> tuple[type[VerificationError], int]:
    entries = read_stored_entries(db)
    keep = rng.randrange(SIZE)
    rewrite_stored_entries(db, entries[:keep])
    if rng.random() < 0.5:  # also lower the committed size and drop the tiles, as a careful attacker would
        db.execute("UPDATE meta SET value=? WHERE key='size'", (str(keep),))
    return LogIntegrityError, keep


def edit_tile(db: sqlite3.Connection, rng: random.Random) -> tuple[type[VerificationError], int]:
    rows = db.execute("SELECT id, width, data FROM tiles").fetchall()
    key, width, data = rows[rng.randrange(len(rows))]
    stratum, t = key >> 56, key & ((1 << 56) - 1)
    offs = level_offsets(width)
    h = rng.randrange(offs[-1])
    j = max(q for q in range(8) if offs[q] <= h)
    p = h - offs[j]
    raw = bytearray(data)
    raw[h * 32 + rng.randrange(32)] ^= 1 << rng.randrange(8)
    db.execute("UPDATE tiles SET data=? WHERE id=?", (bytes(raw), key))
    return LogIntegrityError, ((t << (8 - j)) + p) << (8 * stratum + j)


def replace_checkpoint(db: sqlite3.Connection, rng: random.Random) -> tuple[type[VerificationError], int]:
    rows = db.execute("SELECT seq, size, note FROM checkpoints").fetchall()
    seq, size, note = rows[rng.randrange(len(rows))]
    cp = Checkpoint.from_bytes(note)
    choice = rng.randrange(4)
    if choice == 0:  # re-signed by a different key with the same name
        new = Checkpoint.signed(ORIGIN, cp.size, cp.root_hash, NoteSigner.generate(ORIGIN)).to_bytes()
    elif choice == 1:  # one base64 character of the signature changed (not the padding-bearing tail)
        text = note.decode()
        cut = text.rindex(" ") + 1 + rng.randrange(80)
        old = text[cut]
        new = (text[:cut] + ("A" if old != "A" else "B") + text[cut + 1 :]).encode()
    elif choice == 2:  # a different root under the old signature
        new = Checkpoint(cp.origin, cp.size, bytes(rng.randrange(256) for _ in range(32)), (), cp.signatures).to_bytes()
    else:  # garbage
        db.execute("UPDATE checkpoints SET note=? WHERE seq=?", (b"not a note\n", seq))
        return CheckpointError, 0 if seq == 1 else CHECKPOINTS[0]
    db.execute("UPDATE checkpoints SET note=? WHERE seq=?", (new, seq))
    return SignatureError, size


KINDS: dict[str, Edit] = {
    "modify_entry": modify_entry,
    "delete_entry": delete_entry,
    "insert_entry": insert_entry,
    "reorder_entries": reorder_entries,
    "truncate_entries": truncate_entries,
    "edit_tile": edit_tile,
    "replace_checkpoint": replace_checkpoint,
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_tamper_campaign(kind: str, pristine: Path, tmp_path: Path) -> None:
    rng = random.Random(f"tamper-{kind}")
    detected = 0
    for trial in range(TRIALS):
        # Arrange
        d = _copy(pristine, tmp_path / f"t{trial}")
        db = sqlite3.connect(d / "ledger.sqlite")
        expected, index = KINDS[kind](db, rng)
        db.commit()
        db.close()
        # Act / Assert
        with pytest.raises(VerificationError) as err:
            audit(d)
        assert type(err.value) is expected, (trial, str(err.value))
        assert err.value.index == index, (trial, str(err.value))
        detected += 1
        shutil.rmtree(d)
    assert detected == TRIALS


def _rewrite_history(d: Path, i: int, new_size: int = SIZE, *, resign: bool) -> None:
    """Replace entry i and rebuild every tile consistently (and optionally re-sign checkpoints)."""
    forged_dir = d.parent / (d.name + "-forged")
    with Ledger.create(forged_dir, ORIGIN) as forged:
        entries = make_entries(new_size)
        if i < new_size:
            entries[i] = Entry("forged", {"i": i}, time=1.0)
        forged.append(entries)
        forged.store.checkpoint_wal()
        root = forged.root()
    db = sqlite3.connect(d / "ledger.sqlite")
    db.execute("ATTACH DATABASE ? AS f", (str(forged_dir / "ledger.sqlite"),))
    for table in ("bundles", "tiles"):
        db.execute(f"DELETE FROM main.{table}")
        db.execute(f"INSERT INTO main.{table} SELECT * FROM f.{table}")
    db.execute("UPDATE main.meta SET value=? WHERE key='size'", (str(new_size),))
    if resign:  # the attacker stole the log key and re-signs one checkpoint of the new history
        signer = NoteSigner.load(d / "log.key")
        db.execute("DELETE FROM main.checkpoints")
        db.execute("INSERT INTO main.checkpoints(size, note) VALUES(?, ?)",
                   (new_size, Checkpoint.signed(ORIGIN, new_size, root, signer).to_bytes()))
    db.commit()
    db.execute("DETACH DATABASE f")
    db.close()


@pytest.mark.parametrize("seed", range(12))
def test_rewritten_history_is_a_consistency_error(seed: int, pristine: Path, tmp_path: Path) -> None:
    rng = random.Random(seed)
    i = rng.randrange(SIZE)
    d = _copy(pristine, tmp_path / "log")
    _rewrite_history(d, i, resign=False)
    with pytest.raises(ConsistencyError) as err:
        audit(d)
    assert err.value.index == (0 if i < CHECKPOINTS[0] else CHECKPOINTS[0])  # a lower bound on i
    assert err.value.index <= i


def test_trusted_checkpoint_catches_a_resigned_rewrite_and_a_truncation(pristine: Path, tmp_path: Path) -> None:
    # Arrange: the caller kept the checkpoint of size SIZE from earlier
    with Ledger.open(pristine, read_only=True) as led:
        kept = led.latest_checkpoint()
    assert kept is not None
    rewritten = _copy(pristine, tmp_path / "rewritten")
    _rewrite_history(rewritten, 17, resign=True)
    truncated = _copy(pristine, tmp_path / "truncated")
    _rewrite_history(truncated, SIZE, new_size=400, resign=True)
    # Act / Assert: without the kept checkpoint both look fine; with it, both fail
    audit(rewritten)
    audit(truncated)
    with pytest.raises(ConsistencyError):
        audit(rewritten, kept.to_bytes())
    with pytest.raises(LogIntegrityError) as err:
        audit(truncated, kept)
    assert err.value.index == 400


def test_trusted_checkpoint_from_another_key_is_a_signature_error(pristine: Path) -> None:
    with Ledger.open(pristine, read_only=True) as led:
        kept = led.latest_checkpoint()
    assert kept is not None
    forged = Checkpoint.signed(ORIGIN, kept.size, kept.root_hash, NoteSigner.generate(ORIGIN))
    with pytest.raises(SignatureError):
        audit(pristine, forged)
    report = audit(pristine, kept)
    assert report.size == SIZE and report.trusted_checkpoint_size == SIZE and report.checkpoints_verified == 2


def _logical_dump(path: Path) -> list[tuple[object, ...]] | None:
    """Every row of every ledger table, or None if SQLite cannot read the file."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows: list[tuple[object, ...]] = []
            for table in ("meta", "bundles", "tiles", "checkpoints"):
                rows.extend(db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall())
            db.execute("PRAGMA integrity_check").fetchall()
            return rows
        finally:
            db.close()
    except sqlite3.Error:
        return None


@pytest.mark.slow
def test_random_byte_flips_in_the_database_file(pristine: Path, tmp_path: Path) -> None:
    """Flip one random byte of ledger.sqlite: any change to what the file holds must fail the audit."""
    rng = random.Random("byte-flips")
    base = _logical_dump(pristine / "ledger.sqlite")
    assert base is not None
    changed = 0
    for trial in range(TRIALS):
        d = _copy(pristine, tmp_path / f"f{trial}")
        db_file = d / "ledger.sqlite"
        raw = bytearray(db_file.read_bytes())
        pos = rng.randrange(len(raw))
        raw[pos] ^= 1 << rng.randrange(8)
        db_file.write_bytes(bytes(raw))
        after = _logical_dump(db_file)
        if after != base:
            changed += 1
            with pytest.raises(VerificationError):
                audit(d)
        else:  # the flip hit unused space: nothing to detect, and the audit must still pass
            audit(d)
        shutil.rmtree(d)
    print(f"{changed} of {TRIALS} flips changed the file's content; all were detected")
    assert changed > 0
