"""tlog-tiles resource paths: ``tile/<L>/<N>[.p/<W>]`` and ``tile/entries/<N>[.p/<W>]``."""

from __future__ import annotations

import re

from trustmesh.errors import InputError

__all__ = ["format_tile_index", "parse_tile_path", "tile_path"]

_ELEM = re.compile(r"x[0-9]{3}")
_LAST = re.compile(r"[0-9]{3}")
_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")


def format_tile_index(n: int) -> str:
    """Encode a tile index as zero-padded 3-digit path elements, all but the last prefixed ``x``."""
    if n < 0:
        raise ValueError(f"tile index must be >= 0, got {n}")
    groups = []
    while True:
        groups.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


def tile_path(level: int | str, index: int, width: int | None = None) -> str:
    """Return ``tile/<level>/<index>[.p/<width>]``; pass ``level="entries"`` for entry bundles."""
    suffix = "" if width is None or width == 256 else f".p/{width}"
    return f"tile/{level}/{format_tile_index(index)}{suffix}"


def parse_tile_path(path: str) -> tuple[int | None, int, int | None]:
    """Parse ``tile/...`` into (level or None for entries, index, width or None); raise InputError if invalid."""
    parts = path.strip("/").split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise InputError(f"not a tile path: {path!r}")
    level: int | None
    if parts[1] == "entries":
        level = None
    elif _LEVEL.fullmatch(parts[1]) and int(parts[1]) <= 63:
        level = int(parts[1])
    else:
        raise InputError(f"tile level must be 0..63 without leading zeros, got {parts[1]!r}")
    rest = parts[2:]
    width = None
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        w = rest[-1]
        if not _WIDTH.fullmatch(w) or not 1 <= int(w) <= 255:
            raise InputError(f"partial tile width must be 1..255, got {w!r}")
        width = int(w)
        rest = rest[:-2] + [rest[-2][:-2]]
    if not rest or len(rest) > 7 or not _LAST.fullmatch(rest[-1]) or not all(_ELEM.fullmatch(e) for e in rest[:-1]):
        raise InputError(f"tile index must be 3-digit path elements like x001/x234/067, got {'/'.join(rest)!r}")
    index = 0
    for e in rest:
        index = index * 1000 + int(e.lstrip("x"))
    return level, index, width
