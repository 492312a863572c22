"""Follow a growing log file (``tail -F``): complete lines as they are appended, across rotation.

Zeek rotates ``conn.log`` by renaming it and starting a new file (with new header lines); Suricata's
``eve.json`` is rotated the same way by logrotate. :func:`follow_lines` notices a new inode or a
shrunk file and starts the new file from its beginning, so no record is skipped or read twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import IO
from pathlib import Path

__all__ = ["follow_lines"]

log = logging.getLogger(__name__)


def follow_lines(path: Path | str, *, poll_s: float = 0.2, from_start: bool = True,
                 idle_ticks: bool = True) -> Iterator[str | None]:
    """Yield each complete line appended to ``path``, forever; ``None`` when ``poll_s`` passes idle.

    The ``None`` ticks let batching readers release what they hold when the log goes quiet. A
    partial last line is held back until its newline arrives. ``from_start=False`` skips what the
    file already holds (a live tail); the default reads it first, then follows.
    """
    if poll_s <= 0:
        raise ValueError(f"poll_s must be > 0, got {poll_s}")
    p = Path(path)
    state: dict[str, IO[str] | None] = {"fh": None}
    try:
        yield from _follow(p, poll_s, from_start, idle_ticks, state)
    finally:
        if state["fh"] is not None:
            state["fh"].close()


def _follow(p: Path, poll_s: float, from_start: bool, idle_ticks: bool,
            state: dict[str, IO[str] | None]) -> Iterator[str | None]:
    fh: IO[str] | None = None
    inode = None
    pending = ""
    while True:
        if fh is None:
            try:
                fh = p.open("r", encoding="utf-8", errors="replace", newline="")
            except FileNotFoundError:
                if idle_ticks:
                    yield None
                time.sleep(poll_s)
                continue
            state["fh"] = fh
            inode = os.fstat(fh.fileno()).st_ino
            if not from_start:
                fh.seek(0, os.SEEK_END)
                from_start = True  # a rotated-in file is read from its start
        chunk = fh.read(1 << 16)
        if chunk:
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line + "\n"
            continue
        try:
            st = p.stat()
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_ino != inode or st.st_size < fh.tell()):
            log.info("%s was rotated or truncated; following the new file", p)
            fh.close()
            fh, pending = None, ""
            state["fh"] = None
            continue
        if idle_ticks:
            yield None
        time.sleep(poll_s)
