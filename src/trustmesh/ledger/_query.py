"""Query rules over entry payloads, shared by ``trustmesh ledger search`` and the API's ledger search."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["field_values", "value_matches"]


def field_values(payload: Any, dotted: str) -> list[Any]:
    """Return every value at a dotted path (``source.ip``, ``threat.technique.id``), lists element-wise."""
    values = [payload]
    for part in dotted.split("."):
        values = [i[part] for v in values for i in (v if isinstance(v, list) else [v])
                  if isinstance(i, Mapping) and part in i]
    out: list[Any] = []
    for v in values:
        out += v if isinstance(v, list) else [v]
    return out


def value_matches(value: Any, wanted: str) -> bool:
    """Return whether one payload value equals a query string (booleans and numbers compared as such)."""
    if isinstance(value, bool):
        return wanted.lower() == str(value).lower()
    if isinstance(value, int | float):
        try:
            return float(wanted) == float(value)
        except ValueError:
            return False
    return value is not None and str(value) == wanted
