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

from trustmesh._safeload import check_depth, json_too_deep
from trustmesh.errors import InputError
from trustmesh.flows._records import MAX_JSON_DEPTH, MAX_LINE_CHARS, BadRecord, BadRecordHandler, report

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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_objects(
    lines: Iterator[str | None], path: Path, on_bad: BadRecordHandler | None = None
) -> Iterator[tuple[int, dict[str, Any]] | None]:
    """Parse JSON lines into ``(line number, object)``, skipping blank lines; pass ``None`` ticks on.

    A line that is not a JSON object (invalid JSON, ``NaN``/``Infinity``, longer than
    ``MAX_LINE_CHARS``, nested deeper than ``MAX_JSON_DEPTH``) is a bad record naming ``path`` and the
    line: handed to ``on_bad`` and skipped, or, without a handler, raised as ``InputError``.
    """
    for lineno, raw in enumerate(lines, 1):
        if raw is None:
            yield None
            continue
        line = raw.strip()
        if not line:
            continue
        if len(line) > MAX_LINE_CHARS:
            report(BadRecord(str(path), lineno, None, f"line longer than {MAX_LINE_CHARS} characters"), on_bad)
            continue
        if json_too_deep(line, MAX_JSON_DEPTH):
            report(BadRecord(str(path), lineno, None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"), on_bad)
            continue
        try:
            rec = json.loads(line, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            report(BadRecord(str(path), lineno, None, f"not JSON ({exc.msg})"), on_bad)
            continue
        except RecursionError:
            report(BadRecord(str(path), lineno, None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"), on_bad)
            continue
        except ValueError as exc:  # NaN/Infinity constants, integers with too many digits
            report(BadRecord(str(path), lineno, None, f"not acceptable JSON ({exc})"), on_bad)
            continue
        if not isinstance(rec, dict):
            report(BadRecord(str(path), lineno, None, "expected a JSON object per line"), on_bad)
            continue
        try:
            check_depth(rec, MAX_JSON_DEPTH, f"{path}:{lineno}")
        except InputError:
            report(BadRecord(str(path), lineno, None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"), on_bad)
            continue
        yield lineno, rec
