"""SQLite storage of the log as tlog-tiles: entry bundles and hash tiles, O(log n) reads per proof.

Layout (one SQLite file, WAL journal):

* ``bundles(idx, width, data)`` - tlog-tiles entry bundles: up to 256 entries, each prefixed with its
  big-endian uint16 length. The rightmost bundle is partial and is rewritten by each append batch.
* ``tiles(id, width, data)`` - for "stratum" ``s`` (tree levels 8s .. 8s+7) and tile index ``t``
  (``id = s << 56 | t``), the ``width`` hashes at tree level 8s followed by every complete interior
  node above them inside the tile (``width >> 1`` hashes at level 8s+1, ... ``width >> 7`` at 8s+7).
  The first ``width * 32`` bytes are exactly the tlog-tiles hash tile ``tile/<s>/<t>[.p/<width>]``.
  Storing the interior levels makes every complete-subtree hash one slice of one row, so a proof is
  O(log n) lookups in at most ``ceil(levels / 8)`` tiles per path and memory stays bounded.
* ``checkpoints(seq, size, note)`` - every checkpoint the log signed, in order.
* ``meta(key, value)`` - origin, format version and the committed tree size.
* ``idempotency(key, first, count, digest)`` - created by the first append that carries an
  idempotency key: which leaves that request got, and a digest of what it asked for, written in the
  same transaction as the entries so a retry after a crash returns the original indices.

Each append batch is one transaction; with ``synchronous=FULL`` (the default) SQLite fsyncs the WAL
before COMMIT returns, so an acknowledged append survives a process crash and a power loss.
``NORMAL`` survives process crashes but may lose the last transactions on power loss.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

from trustmesh.errors import EnvironmentProblem, InputError, LogIntegrityError, TrustmeshError
from trustmesh.ledger.hazmat import EMPTY_ROOT, HASH_SIZE, node_hash

__all__ = [
    "FORMAT_VERSION",
    "TileStore",
    "level_offsets",
    "pack_bundle",
    "read_stored_entries",
    "rewrite_stored_entries",
    "tile_id",
    "unpack_bundle",
]

log = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1
TILE_WIDTH: Final = 256
TILE_HEIGHT: Final = 8
_CACHE_TILES: Final = 2048  # at most ~32 MiB of cached full tiles
_H = HASH_SIZE
_sha256 = hashlib.sha256
_U16 = struct.Struct(">H")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bundles(idx INTEGER PRIMARY KEY, width INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tiles(id INTEGER PRIMARY KEY, width INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints(seq INTEGER PRIMARY KEY, size INTEGER NOT NULL, note BLOB NOT NULL);
"""


def _as_bytes(value: object) -> bytes:
    """Return a stored BLOB as bytes; a tampered row may hold TEXT or a number instead."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise LogIntegrityError(f"stored value has the wrong type ({type(value).__name__})")


def _as_int(value: object) -> int:
    if isinstance(value, int):
        return value
    raise LogIntegrityError(f"stored integer has the wrong type ({type(value).__name__})")


def tile_id(stratum: int, index: int) -> int:
    """Return the row id of the tile at tile level ``stratum`` and index ``index``."""
    return (stratum << 56) | index


def level_offsets(width: int) -> list[int]:
    """Return the hash offset of each of the 8 in-tile levels for a tile of ``width`` leaves."""
    return _OFFSETS[width]


def _level_offsets(width: int) -> list[int]:
    out, off = [], 0
    for j in range(TILE_HEIGHT):
        out.append(off)
        off += width >> j
    out.append(off)
    return out


_OFFSETS: Final = [_level_offsets(w) for w in range(TILE_WIDTH + 1)]


def build_tile(hashes: Sequence[bytes]) -> bytes:
    """Return the stored form of a tile: its level-0 hashes and every complete node above them."""
    parts = list(hashes)
    cur = parts
    sha = _sha256
    for _ in range(1, TILE_HEIGHT):
        cur = [sha(b"\x01" + cur[i] + cur[i + 1]).digest() for i in range(0, len(cur) - 1, 2)]
        if not cur:
            break
        parts.extend(cur)
    return b"".join(parts)


def pack_bundle(entries: Sequence[bytes]) -> bytes:
    """Return a tlog-tiles entry bundle: each entry prefixed with its big-endian uint16 length."""
    pack = _U16.pack
    return b"".join([pack(len(e)) + e for e in entries])


def unpack_bundle(data: bytes, index: int = 0) -> list[bytes]:
    """Split an entry bundle; raise LogIntegrityError (naming the first bad index) if it is malformed."""
    out: list[bytes] = []
    off, n = 0, len(data)
    while off < n:
        if off + 2 > n:
            raise LogIntegrityError(f"entry bundle truncated at entry {index + len(out)}", index=index + len(out))
        length = (data[off] << 8) | data[off + 1]
        end = off + 2 + length
        if end > n:
            raise LogIntegrityError(f"entry bundle truncated at entry {index + len(out)}", index=index + len(out))
        out.append(bytes(data[off + 2 : end]))
        off = end
    return out


def read_stored_entries(db: sqlite3.Connection) -> list[bytes]:
    """Return every entry's bytes from an open ledger database's bundles, bypassing all checks.

    For tamper campaigns (tests, the evaluation blueprint): the ledger itself never reads this way.
    """
    out: list[bytes] = []
    for (data,) in db.execute("SELECT data FROM bundles ORDER BY idx"):
        out.extend(unpack_bundle(data))
    return out


def rewrite_stored_entries(db: sqlite3.Connection, entries: Sequence[bytes]) -> None:
    """Replace the stored bundles with ``entries`` (widths follow the new content), bypassing all checks.

    A tamper tool: the hashes, tiles and checkpoints are left as they were, so an audit must fail.
    """
    db.execute("DELETE FROM bundles")
    for b in range(0, len(entries), TILE_WIDTH):
        chunk = entries[b:b + TILE_WIDTH]
        db.execute("INSERT INTO bundles VALUES(?,?,?)", (b // TILE_WIDTH, len(chunk), pack_bundle(chunk)))


# SQLite primary result codes that describe the machine, not the database's content
_ENV_CODES = {3: "permission denied", 5: "database is locked by another process", 8: "read-only database or media",
              10: "input/output error", 13: "disk full", 14: "cannot open the database file", 22: "file too large"}


def sqlite_problem(path: Path, exc: sqlite3.Error) -> TrustmeshError:
    """Translate a SQLite error: environment problems (full, read-only, I/O) vs a damaged ledger file."""
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc).lower()
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in _ENV_CODES or "disk is full" in text or "readonly" in text or "unable to open" in text:
        what = _ENV_CODES.get(primary or -1, str(exc))
        return EnvironmentProblem(f"{path}: {what} ({exc})", path=str(path))
    return LogIntegrityError(f"{path}: not a readable ledger database ({exc})")


def _writable(path: Path) -> bool:
    """Return True when the database file and its folder (WAL and shm files live there) are writable."""
    import os

    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Open a ledger on read-only media: ``mode=ro``, or ``immutable=1`` when no WAL index can be made."""
    from urllib.parse import quote

    uri = f"file:{quote(str(path.resolve()))}"
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        # a WAL database whose -shm file cannot be created: nothing can be writing it, read it as is
        db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db


class TileStore:
    """The SQLite tile store behind a Ledger (one writer at a time; readers see committed state)."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", create: bool = False) -> None:
        if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA"}:
            raise ValueError(f"synchronous must be FULL, EXTRA or NORMAL, got {synchronous!r}")
        if not create and not Path(path).is_file():
            raise InputError(f"{path}: no ledger database here (run `trustmesh ledger init` first)")
        self.path = Path(path)
        self._lock = threading.RLock()
        # read-only media (a mounted archive, a write-protected copy): open without writing anything
        self.read_only = not create and not _writable(self.path)
        try:
            if self.read_only:
                self._db = _connect_read_only(self.path)
            else:
                self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
                if create:
                    self._db.execute("PRAGMA page_size=16384")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
                if create:
                    self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise sqlite_problem(self.path, exc) from None
        self._size = -1
        self._cache: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self._edge: list[list[bytes]] = []  # per stratum: level-0 hashes of the partial tile
        self._bundle_edge: list[bytes] = []
        self._edge_loaded = False
        self._partial_nodes: dict[int, list[list[bytes]]] = {}  # tile id -> node levels of its partial row
        self._idempotency_table = False  # known to exist (it is created on first use and never dropped)
        try:
            self._check_schema()
            self.refresh()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise sqlite_problem(self.path, exc) from None

    # ----------------------------------------------------------------------------- basics
    def _check_schema(self) -> None:
        names = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = {"meta", "bundles", "tiles", "checkpoints"} - names
        if missing:
            raise LogIntegrityError(f"{self.path}: ledger tables missing: {sorted(missing)}")

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def meta(self, key: str) -> str | None:
        """Return a meta value or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a meta value (in its own transaction)."""
        with self._lock:  # autocommit (isolation_level=None) unless inside write_lock()
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def _committed_size(self) -> int:
        raw = self.meta("size")
        if raw is None:
            return 0
        try:
            value = int(raw)
        except ValueError:
            raise LogIntegrityError(f"stored tree size {raw!r} is not an integer") from None
        if value < 0:
            raise LogIntegrityError(f"stored tree size {value} is negative")
        return value

    @property
    def size(self) -> int:
        """The committed number of entries."""
        self.refresh()
        return self._size

    def refresh(self) -> None:
        """Pick up appends committed by other connections (and drop cached partial tiles)."""
        with self._lock:
            size = self._committed_size()
            if size != self._size:
                self._size = size
                for key in [k for k, (w, _) in self._cache.items() if w < TILE_WIDTH]:
                    del self._cache[key]
                self._edge = []
                self._bundle_edge = []
                self._edge_loaded = False

    def _load_edge(self) -> None:
        """Load the right edge (partial tiles and partial bundle) needed to append."""
        if self._edge_loaded:
            return
        size = self._size
        edge: list[list[bytes]] = []
        s = 0
        while (size >> (TILE_HEIGHT * s)) > 0:
            count = size >> (TILE_HEIGHT * s)
            width, t = count & (TILE_WIDTH - 1), count >> TILE_HEIGHT
            hashes: list[bytes] = []
            if width:
                w, data = self._tile(s, t)
                if w != width:
                    raise LogIntegrityError(
                        f"partial tile {s}/{t} has width {w}, expected {width}", index=(t << (8 * (s + 1)))
                    )
                hashes = [data[i * _H : (i + 1) * _H] for i in range(width)]
            edge.append(hashes)
            s += 1
        self._edge = edge
        bw = size & (TILE_WIDTH - 1)
        self._bundle_edge = []
        if bw:
            first = size - bw
            self._bundle_edge = self.bundle_entries(size >> TILE_HEIGHT)
            if len(self._bundle_edge) != bw:
                raise LogIntegrityError(f"partial entry bundle holds {len(self._bundle_edge)} entries, "
                                        f"expected {bw}", index=first + min(bw, len(self._bundle_edge)))
        self._edge_loaded = True

    # ----------------------------------------------------------------------------- reads
    def _tile(self, stratum: int, index: int) -> tuple[int, bytes]:
        key = tile_id(stratum, index)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        row = self._db.execute("SELECT width, data FROM tiles WHERE id=?", (key,)).fetchone()
        if row is None:
            raise LogIntegrityError(f"hash tile {stratum}/{index} is missing", index=index << (8 * (stratum + 1)))
        width, data = _as_int(row[0]), _as_bytes(row[1])
        if not 1 <= width <= TILE_WIDTH or len(data) != level_offsets(width)[-1] * _H:
            raise LogIntegrityError(f"hash tile {stratum}/{index} is malformed", index=index << (8 * (stratum + 1)))
        self._cache[key] = (width, data)
        if len(self._cache) > _CACHE_TILES:
            self._cache.popitem(last=False)
        return width, data

    def tile_raw(self, stratum: int, index: int) -> tuple[int, bytes]:
        """Return (width, stored bytes) of a tile, as stored (audit and serving)."""
        with self._lock:
            return self._tile(stratum, index)

    def node(self, level: int, index: int) -> bytes:
        """Return the hash of the complete subtree at (level, index); it must lie within the tree."""
        return self.nodes([(level, index)])[0]

    def nodes(self, refs: Sequence[tuple[int, int]]) -> list[bytes]:
        """Return the hashes of several complete subtrees (level, index) - the proof fast path."""
        size = self._size
        cache = self._cache
        out = []
        for level, index in refs:
            if index < 0 or (index + 1) << level > size:
                raise LogIntegrityError(f"node ({level}, {index}) is not a complete subtree of size {size}")
            s, j = level >> 3, level & 7
            t = (index << j) >> 8
            hit = cache.get((s << 56) | t)
            if hit is None:
                with self._lock:
                    hit = self._tile(s, t)
            width, data = hit
            pos = index - (t << (8 - j))
            if pos >= width >> j:
                raise LogIntegrityError(f"hash tile {s}/{t} lacks node ({level}, {index})", index=index << level)
            off = (_OFFSETS[width][j] + pos) << 5
            out.append(data[off : off + 32])
        return out

    def root(self, size: int) -> bytes:
        """Return MTH(D[0:size]) from the stored complete subtrees (O(log size) lookups)."""
        if size == 0:
            return EMPTY_ROOT
        nodes = self.decomposition(size)
        root = nodes[-1]
        for h in reversed(nodes[:-1]):
            root = node_hash(h, root)
        return root

    def decomposition(self, size: int) -> list[bytes]:
        """Return the hashes of the complete subtrees that make up [0, size), largest first."""
        refs, start = [], 0
        for b in range(size.bit_length() - 1, -1, -1):
            if size >> b & 1:
                refs.append((b, start >> b))
                start += 1 << b
        return self.nodes(refs)

    def bundle_entries(self, index: int) -> list[bytes]:
        """Return the entries of bundle ``index`` (full or partial)."""
        with self._lock:
            row = self._db.execute("SELECT width, data FROM bundles WHERE idx=?", (index,)).fetchone()
        if row is None:
            raise LogIntegrityError(f"entry bundle {index} is missing", index=index << TILE_HEIGHT)
        entries = unpack_bundle(_as_bytes(row[1]), index << TILE_HEIGHT)
        if len(entries) != int(row[0]):
            raise LogIntegrityError(f"entry bundle {index} holds {len(entries)} entries but says {row[0]}",
                                    index=(index << TILE_HEIGHT) + min(len(entries), int(row[0])))
        return entries

    def bundle_raw(self, index: int) -> tuple[int, bytes]:
        """Return (width, bytes) of an entry bundle as stored."""
        with self._lock:
            row = self._db.execute("SELECT width, data FROM bundles WHERE idx=?", (index,)).fetchone()
        if row is None:
            raise LogIntegrityError(f"entry bundle {index} is missing", index=index << TILE_HEIGHT)
        return _as_int(row[0]), _as_bytes(row[1])

    def iter_bundles(self) -> Iterator[tuple[int, int, bytes]]:
        """Yield (index, width, data) of every stored bundle in index order."""
        cur = self._db.execute("SELECT idx, width, data FROM bundles ORDER BY idx")
        for idx, width, data in cur:
            yield _as_int(idx), _as_int(width), _as_bytes(data)

    def iter_tile_ids(self) -> Iterator[tuple[int, int]]:
        """Yield (stratum, index) of every stored tile in id order."""
        for (key,) in self._db.execute("SELECT id FROM tiles ORDER BY id"):
            yield _as_int(key) >> 56, _as_int(key) & ((1 << 56) - 1)

    def entry(self, index: int) -> bytes:
        """Return the bytes of entry ``index``."""
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM bundles WHERE idx=?", (index >> TILE_HEIGHT,)
            ).fetchone()
        if row is None:
            raise LogIntegrityError(f"entry bundle for entry {index} is missing", index=index)
        data, off, pos = _as_bytes(row[0]), 0, index & (TILE_WIDTH - 1)
        for _ in range(pos):
            if off + 2 > len(data):
                raise LogIntegrityError(f"entry {index} is missing from its bundle", index=index)
            off += 2 + ((data[off] << 8) | data[off + 1])
        if off + 2 > len(data):
            raise LogIntegrityError(f"entry {index} is missing from its bundle", index=index)
        length = (data[off] << 8) | data[off + 1]
        if off + 2 + length > len(data):
            raise LogIntegrityError(f"entry {index} is truncated in its bundle", index=index)
        return data[off + 2 : off + 2 + length]

    # ----------------------------------------------------------------------------- idempotency
    def _has_idempotency_table(self) -> bool:
        if self._idempotency_table:  # created once, never dropped: no catalogue query per request
            return True
        row = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='idempotency'").fetchone()
        self._idempotency_table = row is not None
        return self._idempotency_table

    def _idempotency_rows(self, keys: Sequence[str]) -> dict[str, tuple[object, object, object]]:
        """Return the stored (first, count, digest) of those of ``keys`` that are recorded (one query per 500)."""
        if not keys or not self._has_idempotency_table():
            return {}
        found: dict[str, tuple[object, object, object]] = {}
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            marks = ",".join("?" * len(part))
            for key, first, n, digest in self._db.execute(
                    f"SELECT key, first, count, digest FROM idempotency WHERE key IN ({marks})", part):
                found[str(key)] = (first, n, digest)
        return found

    def _idempotent(self, key: str, digest: bytes, count: int,
                    rows: Mapping[str, tuple[object, object, object]] | None = None) -> int | None:
        """Return the first index a request with ``key`` got, None if the key is new; refuse a reuse.

        ``rows``: the group's keys looked up already (:meth:`_idempotency_rows`), instead of one query.
        """
        if rows is not None:
            row: tuple[object, ...] | None = rows.get(key)
        elif not self._has_idempotency_table():
            return None
        else:
            row = self._db.execute("SELECT first, count, digest FROM idempotency WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        first, n, stored = _as_int(row[0]), _as_int(row[1]), _as_bytes(row[2])
        if n != count or stored != digest:
            raise InputError(f"idempotency key {key!r} was already used for a different request "
                             f"({n} entries at {first}); use a new key")
        if first + n > self._size:
            raise LogIntegrityError(f"idempotency key {key!r} names leaves {first}..{first + n - 1} beyond the log")
        return first

    def lookup_idempotency_many(self, keys: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Return (first index, count) for those of ``keys`` that are recorded (one query per 500 keys)."""
        with self._lock:
            rows = self._idempotency_rows(keys)
        return {k: (_as_int(r[0]), _as_int(r[1])) for k, r in rows.items()}

    def lookup_idempotency(self, key: str) -> tuple[int, int] | None:
        """Return (first index, count) recorded for ``key``, or None."""
        with self._lock:
            if not self._has_idempotency_table():
                return None
            row = self._db.execute("SELECT first, count FROM idempotency WHERE key=?", (key,)).fetchone()
        return None if row is None else (_as_int(row[0]), _as_int(row[1]))

    # ----------------------------------------------------------------------------- writes
    def append(self, entries: Sequence[bytes], leaf_hashes: Sequence[bytes],
               idempotency: tuple[str, bytes] | None = None) -> int:
        """Append entries (with their leaf hashes) in one durable transaction; return the first index.

        With ``idempotency=(key, digest)``: if ``key`` was used before for the same digest and count,
        nothing is written and the original first index is returned; a different request under a
        used key is an InputError. The key is recorded in the same transaction as the entries.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self.refresh()
                if idempotency is not None:
                    earlier = self._idempotent(idempotency[0], idempotency[1], len(entries))
                    if earlier is not None:
                        self._db.execute("COMMIT")
                        return earlier
                self._load_edge()
                first = self._size
                tile_rows, bundle_rows = self._stage(entries, leaf_hashes)
                self._db.executemany("INSERT OR REPLACE INTO bundles(idx, width, data) VALUES(?,?,?)", bundle_rows)
                self._db.executemany("INSERT OR REPLACE INTO tiles(id, width, data) VALUES(?,?,?)", tile_rows)
                new_size = first + len(entries)
                self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('size', ?)", (str(new_size),))
                if idempotency is not None:
                    self._db.execute("CREATE TABLE IF NOT EXISTS idempotency(key TEXT PRIMARY KEY, "
                                     "first INTEGER NOT NULL, count INTEGER NOT NULL, digest BLOB NOT NULL)")
                    self._db.execute("INSERT INTO idempotency(key, first, count, digest) VALUES(?,?,?,?)",
                                     (idempotency[0], first, len(entries), idempotency[1]))
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # disk full, read-only, I/O error: not a damaged log
                self._rollback()
                raise sqlite_problem(self.path, exc) from None
            except BaseException:
                self._rollback()
                raise
            self._size = new_size
            for key, width, data in tile_rows:
                if width == TILE_WIDTH:
                    self._cache[key] = (width, data)
                    if len(self._cache) > _CACHE_TILES:
                        self._cache.popitem(last=False)
                else:
                    self._cache.pop(key, None)
            return first

    def append_requests(
        self, requests: Sequence[tuple[Sequence[bytes], Sequence[bytes], tuple[str, bytes] | None]],
        seal: Callable[[int], bytes] | None = None,
    ) -> list[int | InputError]:
        """Append several requests' entries in one durable transaction (group commit).

        Each request is ``(entries, leaf_hashes, idempotency)`` as for :meth:`append`. Returns, per
        request, its first index, or the InputError that refused it (a key reused for a different
        request); a refused request writes nothing and does not affect the others. A key seen twice
        in the group for the same request gets the first one's indices.

        ``seal(new_size)``, when given and entries were added, is called inside the transaction once
        the new tree is readable (``root(new_size)``) and returns a signed checkpoint note, stored in
        the same transaction: one commit (one fsync) for the entries and the checkpoint covering them.
        """
        results: list[int | InputError] = []
        staged_keys: list[int] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self.refresh()
                self._load_edge()
                first = self._size
                raws: list[bytes] = []
                hashes: list[bytes] = []
                keyed: list[tuple[str, int, int, bytes]] = []
                in_group: dict[str, tuple[bytes, int, int]] = {}
                stored = self._idempotency_rows([idem[0] for _, _, idem in requests if idem is not None])
                for entries, leaf_hashes, idem in requests:
                    if idem is not None:
                        seen = in_group.get(idem[0])
                        try:
                            if seen is not None:
                                if seen[0] != idem[1] or seen[2] != len(entries):
                                    raise InputError(f"idempotency key {idem[0]!r} was already used for a different "
                                                     "request; use a new key")
                                results.append(seen[1])
                                continue
                            earlier = self._idempotent(idem[0], idem[1], len(entries), stored)
                        except InputError as exc:
                            results.append(exc)
                            continue
                        if earlier is not None:
                            results.append(earlier)
                            continue
                        in_group[idem[0]] = (idem[1], first + len(raws), len(entries))
                        keyed.append((idem[0], first + len(raws), len(entries), idem[1]))
                    results.append(first + len(raws))
                    raws.extend(entries)
                    hashes.extend(leaf_hashes)
                tile_rows, bundle_rows = self._stage(raws, hashes) if raws else ([], [])
                self._db.executemany("INSERT OR REPLACE INTO bundles(idx, width, data) VALUES(?,?,?)", bundle_rows)
                self._db.executemany("INSERT OR REPLACE INTO tiles(id, width, data) VALUES(?,?,?)", tile_rows)
                new_size = first + len(raws)
                self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('size', ?)", (str(new_size),))
                if keyed:
                    if not self._idempotency_table:
                        self._db.execute("CREATE TABLE IF NOT EXISTS idempotency(key TEXT PRIMARY KEY, "
                                         "first INTEGER NOT NULL, count INTEGER NOT NULL, digest BLOB NOT NULL)")
                    self._db.executemany("INSERT INTO idempotency(key, first, count, digest) VALUES(?,?,?,?)", keyed)
                if seal is not None and raws:
                    # the new tree as this connection sees it (uncommitted): size and the staged tiles
                    for key, width, data in tile_rows:
                        self._cache[key] = (width, data)
                        staged_keys.append(key)
                    self._size = new_size
                    note = seal(new_size)
                    self._db.execute("INSERT INTO checkpoints(size, note) VALUES(?, ?)", (new_size, note))
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # disk full, read-only, I/O error: not a damaged log
                for key in staged_keys:
                    self._cache.pop(key, None)
                self._rollback()
                raise sqlite_problem(self.path, exc) from None
            except BaseException:
                for key in staged_keys:
                    self._cache.pop(key, None)
                self._rollback()
                raise
            self._size = new_size
            for key, width, data in tile_rows:
                if width == TILE_WIDTH:
                    self._cache[key] = (width, data)
                    if len(self._cache) > _CACHE_TILES:
                        self._cache.popitem(last=False)
                else:
                    self._cache.pop(key, None)
        return results

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:  # pragma: no cover - nothing to roll back
            pass
        # The in-memory right edge may be half-updated: force a reload from committed state.
        self._partial_nodes = {}
        self._size = -1
        self.refresh()

    def _stage(
        self, entries: Sequence[bytes], leaf_hashes: Sequence[bytes]
    ) -> tuple[list[tuple[int, int, bytes]], list[tuple[int, int, bytes]]]:
        """Advance the in-memory right edge by a batch; return the tile and bundle rows to write.

        Works tile by tile (slices of up to 256), so the per-entry Python work is one list append.
        """
        if len(entries) != len(leaf_hashes):
            raise ValueError("entries and leaf_hashes differ in length")
        edge, bundle = self._edge, self._bundle_edge
        tile_rows: list[tuple[int, int, bytes]] = []
        bundle_rows: list[tuple[int, int, bytes]] = []
        nb = self._size >> TILE_HEIGHT
        pos, total = 0, len(entries)
        while pos < total:
            take = min(TILE_WIDTH - len(bundle), total - pos)
            bundle.extend(entries[pos : pos + take])
            if len(bundle) == TILE_WIDTH:
                bundle_rows.append((nb, TILE_WIDTH, pack_bundle(bundle)))
                bundle.clear()
                nb += 1
            pos += take
        if bundle:
            bundle_rows.append((nb, len(bundle), pack_bundle(bundle)))
        if not edge:
            edge.append([])
        # counts[s]: hashes ever pushed to tile level s (names the tile a completed row becomes)
        counts = [self._size >> (TILE_HEIGHT * s) for s in range(len(edge))]
        row0 = edge[0]
        pos = 0
        while pos < total:
            take = min(TILE_WIDTH - len(row0), total - pos)
            row0.extend(leaf_hashes[pos : pos + take])
            counts[0] += take
            pos += take
            s, row = 0, row0
            while len(row) == TILE_WIDTH:
                data = build_tile(row)
                tile_rows.append((tile_id(s, (counts[s] >> TILE_HEIGHT) - 1), TILE_WIDTH, data))
                root = _sha256(b"\x01" + data[-2 * _H :]).digest()  # the two level-7 nodes end the tile
                row.clear()
                s += 1
                if len(edge) <= s:
                    edge.append([])
                    counts.append(0)
                row = edge[s]
                row.append(root)
                counts[s] += 1
        for s, row in enumerate(edge):
            if row:
                key = tile_id(s, counts[s] >> TILE_HEIGHT)
                tile_rows.append((key, len(row), self._partial_tile(key, row)))
        return tile_rows, bundle_rows

    def _partial_tile(self, key: int, row: list[bytes]) -> bytes:
        """Return ``build_tile(row)`` for a right-edge tile, extending the nodes computed for its last width.

        A group commit rewrites the partial tiles after every group; rebuilding each from its 256 leaves
        was most of the writer's hashing. The cached levels are reused only while the row still starts
        with exactly the leaves they were computed from (checked, not assumed), else rebuilt.
        """
        hit = self._partial_nodes.get(key)
        if hit is not None and len(hit[0]) <= len(row) and row[:len(hit[0])] == hit[0]:
            levels = hit
            levels[0] = list(row)
        else:
            levels = [list(row)] + [[] for _ in range(1, TILE_HEIGHT)]
        sha = _sha256
        for k in range(1, TILE_HEIGHT):
            below, cur = levels[k - 1], levels[k]
            for i in range(2 * len(cur), len(below) - 1, 2):
                cur.append(sha(b"\x01" + below[i] + below[i + 1]).digest())
        self._partial_nodes = {key: levels} if len(self._partial_nodes) > 8 else {**self._partial_nodes, key: levels}
        return b"".join([h for level in levels for h in level])

    # ----------------------------------------------------------------------------- checkpoints
    def checkpoints(self) -> list[tuple[int, int, bytes]]:
        """Return every stored (seq, size, note) in signing order."""
        with self._lock:
            rows = self._db.execute("SELECT seq, size, note FROM checkpoints ORDER BY seq").fetchall()
        return [(_as_int(a), _as_int(b), _as_bytes(c)) for a, b, c in rows]

    def latest_checkpoint(self) -> tuple[int, int, bytes] | None:
        """Return the newest stored (seq, size, note) or None."""
        with self._lock:
            row = self._db.execute("SELECT seq, size, note FROM checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else (_as_int(row[0]), _as_int(row[1]), _as_bytes(row[2]))

    def add_checkpoint(self, size: int, note: bytes) -> None:
        """Store a newly signed checkpoint."""
        with self._lock:  # autocommit unless inside write_lock()
            self._db.execute("INSERT INTO checkpoints(size, note) VALUES(?, ?)", (size, note))

    def replace_checkpoint_note(self, seq: int, note: bytes) -> None:
        """Replace the note of checkpoint ``seq`` (same body, more cosignatures)."""
        with self._lock:  # autocommit unless inside write_lock()
            self._db.execute("UPDATE checkpoints SET note=? WHERE seq=?", (note, seq))

    def write_lock(self) -> WriteTxn:
        """Return a context manager holding SQLite's write lock (BEGIN IMMEDIATE ... COMMIT)."""
        return WriteTxn(self)

    def disk_bytes(self) -> int:
        """Return the bytes used by the database and its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def checkpoint_wal(self) -> None:
        """Fold the WAL into the main database file."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class WriteTxn:
    """Hold the store's write transaction so a check and a write happen atomically."""

    def __init__(self, store: TileStore) -> None:
        self.store = store

    def __enter__(self) -> TileStore:
        self.store._lock.acquire()
        try:
            self.store._db.execute("BEGIN IMMEDIATE")
            self.store.refresh()
        except BaseException:
            self.store._lock.release()
            raise
        return self.store

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.store._db.execute("COMMIT")
            else:
                self.store._db.execute("ROLLBACK")
        finally:
            self.store._lock.release()
