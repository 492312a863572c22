"""Hash dataset files: sha256 results cached by (device, inode, ctime, size, mtime).

Rehashing a 2 MB file costs a few milliseconds, but a registry verify touches every file on every
load; the cache keeps repeated loads cheap. The cache lives in memory and, best effort, as a small JSON
file under ``Settings().cache_dir`` so separate processes (CLI runs, test sessions) share it.

The key includes the inode change time (``st_ctime_ns``), which the kernel sets on every write and
every ``utime`` call and which no unprivileged call can set back: a file whose bytes were changed and
whose mtime was then restored (``touch -r``) has a new ctime, so it is hashed again. A copy or a
replacement has a new inode. ``full=True`` (``trustmesh datasets verify --full``) ignores the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import NewType

from trustmesh.config import load_settings

__all__ = ["Sha256Hex", "digest_files", "sha256_file"]

log = logging.getLogger(__name__)

Sha256Hex = NewType("Sha256Hex", str)

_CHUNK = 1 << 20
_LOCK = threading.Lock()
_MEMO: dict[str, str] = {}
_DISK_LOADED: set[Path] = set()
_CACHE_NAME = "sha256-cache.json"


def _key(path: Path, st: os.stat_result) -> str:
    return f"{path.resolve()}|{st.st_dev}|{st.st_ino}|{st.st_ctime_ns}|{st.st_size}|{st.st_mtime_ns}"


def _cache_file() -> Path | None:
    try:
        return load_settings().cache_dir / _CACHE_NAME
    except Exception:  # a bad TRUSTMESH_* setting must not stop hashing; the cache is an optimisation
        return None


def _load_disk(cache: Path) -> None:
    if cache in _DISK_LOADED:
        return
    _DISK_LOADED.add(cache)
    try:
        doc = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(doc, dict):
        for k, v in doc.items():
            if isinstance(k, str) and isinstance(v, str) and len(v) == 64:
                _MEMO.setdefault(k, v)


def _save_disk(cache: Path) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_MEMO, sort_keys=True), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError as exc:  # read-only home etc.: fall back to the in-memory cache
        log.debug("cannot write sha256 cache %s: %s", cache, exc)


def _hash_stream(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path | str, *, full: bool = False) -> Sha256Hex:
    """Return the hex sha256 of a file's bytes.

    A cached value is reused while the file's device, inode, ctime, size and mtime are unchanged;
    ``full=True`` always rehashes (and refreshes the cache). A file seen for the first time is hashed.
    """
    p = Path(path)
    st = p.stat()
    key = _key(p, st)
    cache = _cache_file()
    if not full:
        with _LOCK:
            if cache is not None:
                _load_disk(cache)
            hit = _MEMO.get(key)
        if hit is not None:
            return Sha256Hex(hit)
    value = _hash_stream(p)
    if p.stat().st_ctime_ns != st.st_ctime_ns:  # changed while we read it: do not cache a torn hash
        return Sha256Hex(value)
    with _LOCK:
        _MEMO[key] = value
        if cache is not None:
            _save_disk(cache)
    return Sha256Hex(value)


def digest_files(paths: Iterable[Path]) -> Sha256Hex:
    """Return sha256 over the concatenated bytes of ``paths`` taken in sorted path order.

    For a single file this equals the file's own sha256 (and uses the cache).
    """
    ordered = sorted({Path(p) for p in paths}, key=lambda p: str(p))
    if len(ordered) == 1:
        return sha256_file(ordered[0])
    h = hashlib.sha256()
    for p in ordered:
        with p.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return Sha256Hex(h.hexdigest())
