"""JSON lines to a file rotated by size, or to stdout."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from trustmesh.errors import SinkError

__all__ = ["JsonLinesSink"]


class JsonLinesSink:
    """Append one ECS document per line (UTF-8, keys sorted) to ``path``, or to stdout for ``"-"``.

    When a line would take the file past ``max_bytes`` the file is rotated first, logrotate style:
    ``alerts.jsonl`` -> ``alerts.jsonl.1`` -> ... -> ``alerts.jsonl.<backups>`` (the oldest is
    dropped). ``max_bytes=0`` never rotates. Files are created 0640; lines are flushed per batch.
    """

    def __init__(self, path: str | Path, *, max_bytes: int = 50 * 1024 * 1024, backups: int = 5) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be >= 0, got {backups}")
        self.path = None if str(path) == "-" else Path(path)
        self.max_bytes, self.backups = max_bytes, backups
        self._fh: IO[str] | None = None
        self._size = 0

    @property
    def name(self) -> str:
        """``jsonl <path>`` or ``jsonl stdout``."""
        return f"jsonl {self.path if self.path is not None else 'stdout'}"

    def _open(self) -> IO[str]:
        if self.path is None:
            return sys.stdout
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")
            self._size = self.path.stat().st_size
        return self._fh

    def _rotate(self) -> None:
        assert self.path is not None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._size = 0

    def emit(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Write each document as one line; rotate before a line that would pass ``max_bytes``."""
        try:
            fh = self._open()
            for doc in docs:
                line = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
                size = len(line.encode("utf-8"))
                if self.path is not None and self.max_bytes and self._size and self._size + size > self.max_bytes:
                    self._rotate()
                    fh = self._open()
                fh.write(line)
                self._size += size
            fh.flush()
        except OSError as exc:
            raise SinkError(f"cannot write {self.path or 'stdout'}: {exc.strerror or exc}") from exc
        except (TypeError, ValueError) as exc:
            raise SinkError(f"document is not JSON: {exc}") from exc

    def close(self) -> None:
        """Close the file (stdout stays open)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
