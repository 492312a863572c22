"""The canonical flow schema every source maps into (Zeek conn.log core plus per-direction statistics).

One row is one bidirectional flow; "src" is the originator (the host that sent the first packet, Zeek's
``id.orig_h``), "dst" the responder. Columns, units and how each source fills them are documented in
docs/flow-schema.md. Numeric columns are float64 so that a value a source cannot provide is NaN rather
than a fake 0; ports are int64 (0 when a source has none, e.g. nfstream ICMP).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pandas as pd

from trustmesh.errors import InputError

__all__ = [
    "CANONICAL_COLUMNS",
    "CANONICAL_DTYPES",
    "CANONICAL_FEATURES",
    "CATEGORICAL_FEATURES",
    "IDENTIFIER_COLUMNS",
    "LABEL_COLUMNS",
    "empty_canonical",
    "to_canonical",
    "validate_canonical",
]

_STAT_COLUMNS = tuple(
    f"{d}_{s}"
    for d in ("src", "dst")
    for s in ("pkt_size_min", "pkt_size_mean", "pkt_size_max", "pkt_size_std", "iat_mean", "iat_std", "iat_max")
)

#: Column name -> dtype, in canonical order.
CANONICAL_DTYPES: Mapping[str, str] = MappingProxyType(
    {
        "ts": "float64",
        "uid": "str",
        "src_ip": "str",
        "src_port": "int64",
        "dst_ip": "str",
        "dst_port": "int64",
        "proto": "str",
        "service": "str",
        "duration": "float64",
        "src_bytes": "float64",
        "dst_bytes": "float64",
        "src_pkts": "float64",
        "dst_pkts": "float64",
        "conn_state": "str",
        "syn": "float64",
        "ack": "float64",
        "fin": "float64",
        "rst": "float64",
        "psh": "float64",
        "urg": "float64",
        **dict.fromkeys(_STAT_COLUMNS, "float64"),
    }
)

CANONICAL_COLUMNS: tuple[str, ...] = tuple(CANONICAL_DTYPES)

#: Columns that identify a flow, a host or a moment: never model features (they leak labels through the
#: address plan and capture time of a dataset).
IDENTIFIER_COLUMNS: tuple[str, ...] = ("ts", "uid", "src_ip", "dst_ip", "src_port")

#: Columns usable as model features: everything except the identifiers. ``dst_port``, ``proto``,
#: ``service`` and ``conn_state`` are kept: they describe the behaviour, not the host.
CANONICAL_FEATURES: tuple[str, ...] = tuple(c for c in CANONICAL_COLUMNS if c not in IDENTIFIER_COLUMNS)

#: Text-valued features (need encoding before a numeric model).
CATEGORICAL_FEATURES: tuple[str, ...] = ("proto", "service", "conn_state")

#: Optional columns a labelled source appends after the canonical ones.
LABEL_COLUMNS: tuple[str, ...] = ("label", "attack_type")

_TEXT_DEFAULTS = {"uid": "", "src_ip": "", "dst_ip": "", "proto": "-", "service": "-", "conn_state": "-"}


def empty_canonical() -> pd.DataFrame:
    """Return an empty DataFrame with the canonical columns and dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in CANONICAL_DTYPES.items()})


def to_canonical(df: pd.DataFrame, *, source: str = "flows", strict: bool = False) -> pd.DataFrame:
    """Return ``df`` with exactly the canonical columns (in order, with canonical dtypes) plus labels.

    Missing numeric columns become NaN, missing text columns their "unknown" value (``-`` for proto,
    service and conn_state); ``label``/``attack_type`` are kept when present; other columns are dropped.
    With ``strict=True`` a missing canonical column raises ``InputError`` instead.
    """
    n = len(df)
    missing = [c for c in CANONICAL_COLUMNS if c not in df.columns]
    if strict and missing:
        raise InputError(f"{source}: missing canonical columns: {', '.join(missing)}")
    out: dict[str, pd.Series] = {}
    for col, dtype in CANONICAL_DTYPES.items():
        if col in df.columns:
            s = df[col].reset_index(drop=True)
        elif dtype == "str":
            s = pd.Series([_TEXT_DEFAULTS[col]] * n, dtype="str")
        elif dtype == "int64":
            s = pd.Series(np.zeros(n, dtype=np.int64))
        else:
            s = pd.Series(np.full(n, np.nan))
        out[col] = _cast(s, col, dtype, source)
    for col in LABEL_COLUMNS:
        if col in df.columns:
            out[col] = df[col].reset_index(drop=True).astype("str")
    return pd.DataFrame(out)


def _cast(s: pd.Series, col: str, dtype: str, source: str) -> pd.Series:
    if dtype == "str":
        filled = s.astype("str").where(s.notna(), _TEXT_DEFAULTS[col])
        if col in ("proto", "service"):
            filled = filled.str.lower()
        return filled.astype("str")
    num = pd.to_numeric(s, errors="coerce")
    if dtype == "int64":
        bad = num.isna() & s.notna()
        if bool(bad.any()):
            raise InputError(f"{source}: column {col!r} has non-numeric values, e.g. {s[bad].iloc[0]!r}")
        return num.fillna(0).astype(np.int64)
    return num.astype(np.float64).replace([np.inf, -np.inf], np.nan)


def validate_canonical(df: pd.DataFrame, source: str = "flows") -> None:
    """Raise ``InputError`` unless ``df`` starts with exactly the canonical columns and dtypes."""
    head = tuple(df.columns[: len(CANONICAL_COLUMNS)])
    if head != CANONICAL_COLUMNS:
        raise InputError(f"{source}: columns are not the canonical flow schema")
    extra = set(df.columns[len(CANONICAL_COLUMNS) :]) - set(LABEL_COLUMNS)
    if extra:
        raise InputError(f"{source}: unexpected columns after the canonical ones: {', '.join(sorted(extra))}")
    for col, dtype in CANONICAL_DTYPES.items():
        actual = df[col].dtype
        ok = pd.api.types.is_string_dtype(actual) if dtype == "str" else str(actual) == dtype
        if not ok:
            raise InputError(f"{source}: column {col!r} has dtype {actual}, expected {dtype}")
