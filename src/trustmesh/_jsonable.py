"""Make values JSON-ready for canonical JSON (RFC 8785): no NaN/inf, numpy scalars as numbers, paths as text."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["json_ready"]


def json_ready(value: Any) -> Any:
    """Return ``value`` with mappings/sequences rebuilt, non-finite floats as None, numpy scalars unwrapped."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
