"""Recompute a log from its stored entries and check every hash, tile and signed checkpoint."""

from __future__ import annotations

import hashlib
import sqlite3
import time as _time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustmesh.errors import (
    CheckpointError,
    ConsistencyError,
    InputError,
    LogIntegrityError,
    SignatureError,
)
from trustmesh.ledger._checkpoint import Checkpoint
from trustmesh.ledger._entry import Entry
from trustmesh.ledger._ledger import Ledger
from trustmesh.ledger._note import NoteVerifier
from trustmesh.ledger._store import TILE_HEIGHT, TILE_WIDTH, build_tile, level_offsets, unpack_bundle
from trustmesh.ledger._witness import verify_cosignatures
from trustmesh.ledger.hazmat import HASH_SIZE, leaf_hash, node_hash

__all__ = ["AuditReport", "audit"]

_H = HASH_SIZE


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What a successful audit checked."""

    origin: str
    size: int
    root_hash: bytes
    checkpoints_verified: int
    latest_checkpoint_size: int | None
    trusted_checkpoint_size: int | None
    witness_cosignatures: int
    blobs_verified: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        import base64

        return {
            "ok": True,
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root_hash).decode("ascii"),
            "checkpoints_verified": self.checkpoints_verified,
            "latest_checkpoint_size": self.latest_checkpoint_size,
            "trusted_checkpoint_size": self.trusted_checkpoint_size,
            "witness_cosignatures": self.witness_cosignatures,
            "blobs_verified": self.blobs_verified,
            "seconds": round(self.seconds, 3),
        }


def _entries(ledger: Ledger, size: int) -> Iterator[tuple[int, bytes]]:
    """Yield (index, entry bytes) from the stored bundles, checking bundle numbering and widths."""
    expect_idx, index = 0, 0
    for idx, width, data in ledger.store.iter_bundles():
        if idx != expect_idx:
            raise LogIntegrityError(f"entry bundle {expect_idx} is missing", index=expect_idx << TILE_HEIGHT)
        for raw in unpack_bundle(data, idx << TILE_HEIGHT):
            yield index, raw
            index += 1
        if index != (idx << TILE_HEIGHT) + width or (width != TILE_WIDTH and index != size):
            # a bundle whose stated width disagrees with its content, or a short bundle mid-log
            raise LogIntegrityError(f"entry bundle {idx} is malformed", index=min(index, (idx << TILE_HEIGHT) + width))
        expect_idx += 1


def _level0(ledger: Ledger, tile_index: int) -> bytes:
    """Return the stored leaf hashes of a level-0 tile (empty if it is missing or malformed)."""
    try:
        w, data = ledger.store.tile_raw(0, tile_index)
    except LogIntegrityError:
        return b""
    return data[: w * _H]


def _first_bad_in_tile(stratum: int, index: int, width: int, got: bytes, want: bytes) -> int:
    """Return the first leaf index covered by a hash that differs between two stored tiles."""
    offs = level_offsets(width)
    best = None
    for j in range(TILE_HEIGHT):
        for p in range(offs[j + 1] - offs[j]):
            a = got[(offs[j] + p) * _H : (offs[j] + p + 1) * _H]
            b = want[(offs[j] + p) * _H : (offs[j] + p + 1) * _H]
            if a != b:
                leaf = ((index << (TILE_HEIGHT - j)) + p) << (TILE_HEIGHT * stratum + j)
                best = leaf if best is None else min(best, leaf)
                break
    return (index << (TILE_HEIGHT * (stratum + 1))) if best is None else best


def _check_tiles(ledger: Ledger, size: int) -> None:
    """Recompute every tile from the (verified) level-0 hashes and compare with what is stored."""
    store = ledger.store
    tiles_per_level: list[int] = []
    s = 0
    while (size >> (TILE_HEIGHT * s)) > 0:
        count = size >> (TILE_HEIGHT * s)
        ntiles = (count + TILE_WIDTH - 1) >> TILE_HEIGHT
        tiles_per_level.append(ntiles)
        for t in range(ntiles):
            width = min(TILE_WIDTH, count - (t << TILE_HEIGHT))
            if s == 0:
                hashes = None  # level 0 was compared leaf by leaf already; recompute interiors below
            else:
                hashes = []
                for i in range(width):
                    child = (t << TILE_HEIGHT) + i
                    w, data = store.tile_raw(s - 1, child)
                    if w != TILE_WIDTH:
                        raise LogIntegrityError(f"tile {s - 1}/{child} should be full", index=child << (TILE_HEIGHT * s))
                    hashes.append(node_hash(data[-2 * _H : -_H], data[-_H:]))
            w, data = store.tile_raw(s, t)
            first = t << (TILE_HEIGHT * (s + 1))
            if w != width:
                raise LogIntegrityError(f"hash tile {s}/{t} has width {w}, expected {width}",
                                        index=first + (min(w, width) << (TILE_HEIGHT * s)))
            if hashes is None:
                hashes = [data[i * _H : (i + 1) * _H] for i in range(width)]
            want = build_tile(hashes)
            if want != data:
                raise LogIntegrityError(
                    f"hash tile {s}/{t} does not match the entries it covers",
                    index=_first_bad_in_tile(s, t, width, data, want),
                )
        s += 1
    for st, ix in store.iter_tile_ids():
        if st >= len(tiles_per_level) or ix >= tiles_per_level[st]:
            raise LogIntegrityError(f"unexpected hash tile {st}/{ix} beyond the tree of size {size}", index=size)


def audit(
    directory: Path | str,
    trusted_checkpoint: Checkpoint | bytes | None = None,
    *,
    log_key: NoteVerifier | str | None = None,
    witness_keys: Sequence[NoteVerifier | str] = (),
    quorum: int = 0,
    check_blobs: bool = True,
) -> AuditReport:
    """Recompute everything from the stored entries and check it; raise a VerificationError if anything fails.

    Checks, in order: every entry parses as canonical JSON with refs to earlier leaves; its leaf
    hash equals the stored one (LogIntegrityError naming the first bad index - modified, deleted,
    inserted, reordered or truncated entries); every hash tile equals its recomputation; every
    stored checkpoint parses (CheckpointError), is signed by the log key (SignatureError), has a
    non-decreasing size within the tree and the root recomputed at its size (ConsistencyError: a
    rewritten history); and ``trusted_checkpoint`` - one the caller kept - verifies and matches the
    recomputed tree (a truncated log raises LogIntegrityError at the current size). ``log_key`` pins
    the key instead of trusting the one stored beside the log.
    """
    try:
        return _audit(directory, trusted_checkpoint, log_key, witness_keys, quorum, check_blobs)
    except sqlite3.Error as exc:  # a damaged database file is tampering evidence, not a crash
        raise LogIntegrityError(f"{directory}: the ledger database is damaged ({exc})") from None


def _audit(
    directory: Path | str,
    trusted_checkpoint: Checkpoint | bytes | None,
    log_key: NoteVerifier | str | None,
    witness_keys: Sequence[NoteVerifier | str],
    quorum: int,
    check_blobs: bool,
) -> AuditReport:
    started = _time.perf_counter()
    ledger = Ledger.open(directory, read_only=True)
    try:
        key = ledger.verifier
        if log_key is not None:
            pinned = NoteVerifier.from_vkey(log_key) if isinstance(log_key, str) else log_key
            if pinned != key:
                raise SignatureError("the ledger's key is not the pinned log key")
            key = pinned
        size = ledger.store.size

        # 1. entries -> leaf hashes, compared with the stored level-0 tiles, leaf by leaf.
        count = 0
        tile_index, tile_data = -1, b""
        for index, raw in _entries(ledger, size):
            if index >= size:
                raise LogIntegrityError(f"entry {index} is beyond the committed size {size}", index=index)
            try:
                entry = Entry.from_bytes(raw)
            except InputError as exc:
                raise LogIntegrityError(f"entry {index} is invalid: {exc}", index=index) from None
            if entry.refs and max(entry.refs) >= index:
                raise LogIntegrityError(f"entry {index} refers to a leaf that is not earlier", index=index)
            if index >> TILE_HEIGHT != tile_index:  # one level-0 tile read per 256 entries
                tile_index = index >> TILE_HEIGHT
                tile_data = _level0(ledger, tile_index)
            pos = (index & (TILE_WIDTH - 1)) * _H
            if tile_data[pos : pos + _H] != leaf_hash(raw):
                raise LogIntegrityError(f"entry {index} does not match its committed leaf hash", index=index)
            count += 1
        if count != size:
            raise LogIntegrityError(f"log holds {count} entries but committed {size} (truncated)", index=count)

        # 2. every hash tile, all in-tile levels and all strata.
        _check_tiles(ledger, size)
        root = ledger.store.root(size)

        # 3. every checkpoint the log signed.
        verified_size = 0
        prev_size = -1
        n_cp = 0
        cosigs = 0
        latest = None
        for seq, stored_size, note in ledger.store.checkpoints():
            try:
                cp = Checkpoint.from_bytes(note)
            except CheckpointError as exc:
                raise CheckpointError(f"stored checkpoint #{seq} is malformed: {exc}", index=verified_size) from None
            if cp.size != stored_size:
                raise CheckpointError(f"stored checkpoint #{seq} is filed under size {stored_size} but says {cp.size}",
                                      index=min(cp.size, stored_size))
            try:
                cp.verify(key)
            except SignatureError as exc:
                raise SignatureError(f"checkpoint #{seq} (size {cp.size}): {exc}", index=cp.size) from None
            if cp.size < prev_size:
                raise CheckpointError(f"checkpoint #{seq} goes back from size {prev_size} to {cp.size}", index=cp.size)
            if cp.size > size:
                raise LogIntegrityError(f"checkpoint #{seq} covers {cp.size} entries but the log holds {size} (truncated)",
                                        index=size)
            if ledger.store.root(cp.size) != cp.root_hash:
                raise ConsistencyError(
                    f"the stored entries do not produce the root signed in checkpoint #{seq} (size {cp.size}): "
                    f"history was rewritten after size {verified_size}",
                    index=verified_size,
                )
            if witness_keys:
                cosigs += len(verify_cosignatures(cp, witness_keys, quorum))
            prev_size = verified_size = cp.size
            latest = cp
            n_cp += 1

        # 4. the checkpoint the caller kept from earlier.
        trusted_size = None
        if trusted_checkpoint is not None:
            tc = trusted_checkpoint if isinstance(trusted_checkpoint, Checkpoint) else Checkpoint.from_bytes(trusted_checkpoint)
            if tc.origin != key.name:
                raise CheckpointError(f"trusted checkpoint is for log {tc.origin!r}, not {key.name!r}", index=tc.size)
            try:
                tc.verify(key)
            except SignatureError as exc:
                raise SignatureError(f"trusted checkpoint: {exc}", index=tc.size) from None
            if tc.size > size:
                raise LogIntegrityError(
                    f"the trusted checkpoint covers {tc.size} entries but the log holds only {size} (truncated)",
                    index=size,
                )
            if ledger.store.root(tc.size) != tc.root_hash:
                below = max((c for c in _sizes(ledger) if c < tc.size), default=0)
                raise ConsistencyError(
                    f"the log is not consistent with the trusted checkpoint of size {tc.size}: history was rewritten",
                    index=below,
                )
            trusted_size = tc.size

        # 5. content-addressed blobs.
        blobs = _check_blobs(ledger.directory) if check_blobs else 0
        return AuditReport(key.name, size, root, n_cp, None if latest is None else latest.size, trusted_size,
                           cosigs, blobs, _time.perf_counter() - started)
    finally:
        ledger.close()


def _sizes(ledger: Ledger) -> list[int]:
    return [s for _, s, _ in ledger.store.checkpoints()]


def _check_blobs(directory: Path) -> int:
    n = 0
    root = Path(directory) / "blobs"
    if not root.is_dir():
        return 0
    for path in sorted(root.glob("*/*")):
        if path.name.startswith("."):
            continue
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != path.name or path.parent.name != path.name[:2]:
            raise LogIntegrityError(f"blob {path.name} does not match its sha256")
        n += 1
    return n
