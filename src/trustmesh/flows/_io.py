"""Open possibly gzip-compressed text logs line by line, naming the file in every error."""

from __future__ import annotations

import gzip
import json
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from trustmesh.errors import InputError

__all__ = ["head_bytes", "is_gzip", "json_objects", "open_text"]


def is_gzip(path: Path) -> bool:
    """Return True when the file starts with the gzip magic."""
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def head_bytes(path: Path, n: int = 8192) -> bytes:
    """Return up to ``n`` bytes of the (decompressed, for gzip) content."""
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as fh:
                return fh.read(n)
        with path.open("rb") as fh:
            return fh.read(n)
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc


@contextmanager
def open_text(path: Path) -> Iterator[IO[str]]:
    """Open a text log (plain or gzip) for reading as UTF-8 (undecodable bytes replaced)."""
    try:
        raw: Any = gzip.open(path, "rb") if is_gzip(path) else path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=None)
    try:
        yield text
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{path}: truncated or corrupt gzip data ({exc})") from exc
    finally:
        text.close()


def json_objects(lines: Iterator[str | None], path: Path) -> Iterator[tuple[int, dict[str, Any]] | None]:
    """Parse JSON lines into ``(line number, object)``, skipping blank lines; pass ``None`` ticks on.

    A line that is not a JSON object raises ``InputError`` naming ``path`` and the line number.
    """
    for lineno, raw in enumerate(lines, 1):
        if raw is None:
            yield None
            continue
        line = raw.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
        if not isinstance(rec, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object per line")
        yield lineno, rec
