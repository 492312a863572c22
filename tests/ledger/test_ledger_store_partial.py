"""Partial tiles extended from cached nodes (TileStore._partial_tile) equal tiles built from their leaves."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

import pytest

from trustmesh.ledger._store import TILE_WIDTH, TileStore, build_tile, tile_id


def _leaf(tag: str) -> tuple[bytes, bytes]:
    raw = tag.encode()
    return raw, hashlib.sha256(b"\x00" + raw).digest()


def _check_every_stored_tile(path: Path) -> int:
    """Rebuild every stored level-0 tile from its leaf hashes; return how many were compared."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT id, width, data FROM tiles WHERE id < ?", (1 << 56,)).fetchall()
    finally:
        db.close()
    for _, width, data in rows:
        leaves = [data[i * 32:(i + 1) * 32] for i in range(width)]
        assert data == build_tile(leaves)
    return len(rows)


def test_groups_of_random_sizes_store_the_same_tiles_as_a_rebuild(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "s.sqlite", create=True)
    rng = random.Random(7)
    n = 0
    for _ in range(120):
        k = rng.choice([1, 1, 2, 3, 7, 40, 255, 300])
        batch = [_leaf(f"e{n + j}") for j in range(k)]
        store.append_requests([([r for r, _ in batch], [h for _, h in batch], None)])
        n += k
    assert store.size == n and n > 2 * TILE_WIDTH
    store.close()
    assert _check_every_stored_tile(tmp_path / "s.sqlite") >= n // TILE_WIDTH


def test_a_rolled_back_group_does_not_leave_its_nodes_behind(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "s.sqlite", create=True)
    first = [_leaf(f"a{j}") for j in range(10)]
    store.append_requests([([r for r, _ in first], [h for _, h in first], None)])
    doomed = [_leaf(f"doomed{j}") for j in range(6)]

    def fail(_: int) -> bytes:
        raise RuntimeError("signing failed")

    with pytest.raises(RuntimeError):
        store.append_requests([([r for r, _ in doomed], [h for _, h in doomed], None)], seal=fail)
    # the same positions, other leaves: the tile must be built from these, not the rolled-back ones
    other = [_leaf(f"b{j}") for j in range(6)]
    store.append_requests([([r for r, _ in other], [h for _, h in other], None)])
    assert store.size == 16
    store.close()
    db = sqlite3.connect(tmp_path / "s.sqlite")
    try:
        (data,) = db.execute("SELECT data FROM tiles WHERE id=?", (tile_id(0, 0),)).fetchone()
    finally:
        db.close()
    assert data == build_tile([h for _, h in first + other])
