"""The SQLite tile store: durable appends, reopen, tiles, bundles, blobs and bad input."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from _ledger_helpers import ORIGIN, make_entries

from trustmesh.errors import InputError, LogIntegrityError
from trustmesh.ledger import Entry, Ledger, format_tile_index, parse_tile_path, tile_path
from trustmesh.ledger._store import unpack_bundle
from trustmesh.ledger.hazmat import leaf_hash, root_from_leaf_hashes


def test_append_returns_consecutive_indices_and_survives_reopen(ledger_dir: Path) -> None:
    # Arrange
    entries = make_entries(600)
    with Ledger.create(ledger_dir, ORIGIN) as led:
        # Act
        first = led.append(entries[:257])
        second = led.append(entries[257:])
        one = led.append_one("note", {"x": 1}, refs=[0, 599])
    # Assert
    assert first == list(range(257)) and second == list(range(257, 600)) and one == 600
    with Ledger.open(ledger_dir) as led:
        assert led.size == 601
        assert led.entry(599) == entries[599]
        assert led.entry(600).refs == (0, 599)
        hashes = [leaf_hash(e.to_bytes()) for e in entries] + [leaf_hash(led.entry_bytes(600))]
        assert led.root() == root_from_leaf_hashes(hashes)


def test_two_handles_see_each_others_appends(ledger_dir: Path) -> None:
    a = Ledger.create(ledger_dir, ORIGIN)
    b = Ledger.open(ledger_dir)
    a.append(make_entries(300))
    b.append(make_entries(5, 300))
    a.append(make_entries(5, 305))
    assert a.size == b.size == 310
    assert a.root() == b.root() == root_from_leaf_hashes([leaf_hash(e.to_bytes()) for e in make_entries(310)])
    a.close()
    b.close()


def test_private_key_is_0600_and_never_in_repr(ledger_dir: Path) -> None:
    led = Ledger.create(ledger_dir, ORIGIN)
    key = ledger_dir / "log.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    secret = key.read_text().strip().split("+", 4)[4]
    assert secret not in repr(led) and secret not in repr(led._signer)
    assert (ledger_dir / "log.pub").read_text().strip() == led.verifier_key
    led.close()


def test_open_refuses_world_readable_key(ledger_dir: Path) -> None:
    Ledger.create(ledger_dir, ORIGIN).close()
    os.chmod(ledger_dir / "log.key", 0o644)
    with pytest.raises(InputError, match="chmod 600"):
        Ledger.open(ledger_dir)


def test_refs_must_point_backwards_and_bad_batches_change_nothing(ledger_dir: Path) -> None:
    with Ledger.create(ledger_dir, ORIGIN) as led:
        led.append(make_entries(3))
        root = led.root()
        with pytest.raises(InputError, match="not earlier"):
            led.append([Entry("x", {}, time=1.0, refs=(3,))])
        with pytest.raises(InputError):
            led.append(["not an entry"])  # type: ignore[list-item]
        with pytest.raises(InputError):
            led.append_one("x", {"big": "a" * 70000})
        assert led.size == 3 and led.root() == root


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "", "payload": {}},
        {"kind": "has space", "payload": {}},
        {"kind": "k", "payload": []},
        {"kind": "k", "payload": {"n": 2**60}},
        {"kind": "k", "payload": {"f": float("nan")}},
        {"kind": "k", "payload": {}, "time": -1},
        {"kind": "k", "payload": {}, "refs": (-1,)},
        {"kind": "k", "payload": {}, "refs": ("1",)},
    ],
)
def test_entry_rejects_bad_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        Entry(**kwargs)  # type: ignore[arg-type]


def test_entry_from_bytes_requires_canonical_json() -> None:
    e = Entry("k", {"b": 1, "a": 2}, time=5.0)
    assert Entry.from_bytes(e.to_bytes()) == e
    for bad in [b'{"kind":"k","time":5,"payload":{"b":1,"a":2},"refs":[]}', b"[]", b"\xff", b'{"kind":"k"}']:
        with pytest.raises(InputError):
            Entry.from_bytes(bad)


def test_blobs_are_content_addressed_and_checked(ledger_dir: Path) -> None:
    with Ledger.create(ledger_dir, ORIGIN) as led:
        digest = led.put_blob(b"model weights" * 1000)
        assert digest == hashlib.sha256(b"model weights" * 1000).hexdigest()
        assert led.get_blob(digest) == b"model weights" * 1000
        path = ledger_dir / "blobs" / digest[:2] / digest
        path.write_bytes(b"swapped")
        with pytest.raises(LogIntegrityError):
            led.get_blob(digest)
        with pytest.raises(InputError):
            led.get_blob("../../etc/passwd")


def test_tiles_and_bundles_follow_tlog_tiles(small_ledger: Ledger) -> None:
    # 700 entries: level-0 tiles 0, 1 full and 2 partial (188); level-1 tile 0 partial (2)
    t0 = small_ledger.tile(0, 0)
    assert len(t0) == 256 * 32 and t0[:32] == small_ledger.leaf_hash(0)
    assert len(small_ledger.tile(0, 2, 188)) == 188 * 32
    assert small_ledger.tile(0, 2, 10) == small_ledger.tile(0, 2, 188)[: 10 * 32]
    level1 = small_ledger.tile(1, 0, 2)
    assert level1[:32] == small_ledger.store.node(8, 0)
    entries = unpack_bundle(small_ledger.entry_bundle(1))
    assert len(entries) == 256 and entries[0] == small_ledger.entry_bytes(256)
    assert len(unpack_bundle(small_ledger.entry_bundle(2, 7))) == 7
    with pytest.raises(InputError):
        small_ledger.tile(0, 3)
    with pytest.raises(InputError):
        small_ledger.tile(0, 2, 189)


def test_tile_paths() -> None:
    assert format_tile_index(1234067) == "x001/x234/067"
    assert tile_path(0, 5, 17) == "tile/0/005.p/17"
    assert tile_path("entries", 1000) == "tile/entries/x001/000"
    assert parse_tile_path("tile/2/x001/x234/067.p/3") == (2, 1234067, 3)
    assert parse_tile_path("tile/entries/000") == (None, 0, None)
    for bad in ["tile/01/000", "tile/0/1", "tile/0/x1/000", "tile/0/000.p/0", "tile/0/000.p/256", "tile/64/000", "x/0/000"]:
        with pytest.raises(InputError):
            parse_tile_path(bad)


def test_checkpoint_root_base64_matches_tree(small_ledger: Ledger) -> None:
    cp = small_ledger.latest_checkpoint()
    assert cp is not None and cp.size == 700
    assert cp.body().split("\n")[2] == base64.b64encode(small_ledger.root()).decode()


def test_read_only_refuses_appends_and_sequence_checkpoints_each_batch(ledger_dir: Path) -> None:
    with Ledger.create(ledger_dir, ORIGIN) as led:
        indices, cp = led.sequence(make_entries(5))
        assert indices == [0, 1, 2, 3, 4] and cp.size == 5 and cp.root_hash == led.root()
        indices, cp = led.sequence(make_entries(3, 5))
        assert cp.size == 8 and len(led.checkpoints()) == 2
    with Ledger.open(ledger_dir, read_only=True) as ro, pytest.raises(InputError, match="read-only"):
        ro.append(make_entries(1))


def test_memory_stays_bounded_while_the_log_grows(ledger_dir: Path) -> None:
    from trustmesh.ledger._store import _CACHE_TILES

    entries = make_entries(70_000)
    with Ledger.create(ledger_dir, ORIGIN) as led:
        for k in range(7):
            led.append(entries[10_000 * k : 10_000 * (k + 1)])
        store = led.store
        # the right edge holds < 256 hashes per tile level and < 256 entries; the tile cache is capped
        assert all(len(row) < 256 for row in store._edge) and len(store._edge) <= 3
        assert len(store._bundle_edge) < 256 and len(store._cache) <= _CACHE_TILES
        assert led.root() == root_from_leaf_hashes([leaf_hash(e.to_bytes()) for e in entries])
