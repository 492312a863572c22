"""Zeek ``conn.log`` (TSV with ``#fields`` headers, or JSON lines; plain or gzip) -> canonical flows.

TSV: header lines (``#separator``, ``#unset_field``, ``#empty_field``, ``#fields``, ``#types``) may
appear again mid-file (concatenated or rotated logs) and are re-read; leading whitespace before ``#``
is tolerated (one public Slips sample starts with a stray TAB), and so is IoT-23's habit of joining the
last three columns with three spaces instead of TABs. Unset (``-``) values become NaN for
numbers and ``-`` for text; ``(empty)`` becomes ``-``.

Labelled logs (Stratosphere/IoT-23 ``conn.log.labeled``) carry ``label`` and ``detailedlabel`` (or
``detailed-label``) columns; they map to ``label`` (``benign``/``malicious``/``unknown``) and
``attack_type`` (the detailed label, or ``label`` when the detailed label is unset).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trustmesh.flows._follow import follow_lines
from trustmesh.errors import InputError
from trustmesh.flows._io import json_objects, open_text
from trustmesh.flows._schema import empty_canonical, to_canonical

__all__ = [
    "follow_zeek_conn", "iter_zeek_conn", "read_zeek_conn", "zeek_to_canonical"]

_RENAME = {
    "id.orig_h": "src_ip",
    "id.orig_p": "src_port",
    "id.resp_h": "dst_ip",
    "id.resp_p": "dst_port",
    "orig_bytes": "src_bytes",
    "resp_bytes": "dst_bytes",
    "orig_pkts": "src_pkts",
    "resp_pkts": "dst_pkts",
}
_REQUIRED = ("id.orig_h", "id.resp_h", "proto")
_DETAILED = ("detailedlabel", "detailed-label", "detailed_label")
# IoT-23 labelled logs join "tunnel_parents   label   detailed-label" with 3 spaces instead of TABs
_IOT23_SPLIT = re.compile(r"\t| {3,}")


def _labels(df: pd.DataFrame) -> tuple[pd.Series, pd.Series] | None:
    if "label" not in df.columns:
        return None
    raw = df["label"].astype("str").str.strip().where(df["label"].notna(), "-")
    low = raw.str.lower()
    label = low.map(
        lambda v: "benign" if v in ("benign", "normal", "background") else "unknown" if v in ("-", "", "unknown")
        else "malicious"
    )  # fmt: skip
    det_col = next((c for c in _DETAILED if c in df.columns), None)
    if det_col is None:
        attack = label.copy()
    else:
        det = df[det_col].astype("str").str.strip().where(df[det_col].notna(), "-")
        attack = det.where(~det.isin(["-", "", "(empty)"]), label)
    attack = attack.where(label != "benign", "benign")
    return label.astype("str"), attack.astype("str")


def _ts_seconds(ts: pd.Series, source: str) -> pd.Series:
    """Return epoch seconds from Zeek ``ts`` given as numbers or ISO 8601 text (JSON_TS_ISO8601)."""
    num = pd.to_numeric(ts, errors="coerce")
    if bool(num.notna().any()) or not bool(ts.notna().any()):
        return num
    try:
        parsed = pd.to_datetime(ts, format="ISO8601", utc=True)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{source}: unparseable ts values, e.g. {ts.dropna().iloc[0]!r}") from exc
    return (parsed - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)


def zeek_to_canonical(df: pd.DataFrame, *, source: str = "zeek conn.log") -> pd.DataFrame:
    """Map a frame with Zeek conn.log field names (``id.orig_h``, ``orig_bytes``, ...) to canonical."""
    if df.empty:
        return empty_canonical()
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"{source}: not a Zeek conn.log (missing fields {', '.join(missing)})")
    out = df.rename(columns=_RENAME)
    if "ts" in out.columns and not pd.api.types.is_numeric_dtype(out["ts"]):
        out["ts"] = _ts_seconds(out["ts"], source)
    for col in ("service", "conn_state"):
        if col in out.columns:
            s = out[col].astype("str")
            out[col] = s.where(out[col].notna() & ~s.isin(["", "(empty)"]), "-")
    labels = _labels(df)
    out = out.drop(columns=[c for c in ("label", *_DETAILED) if c in out.columns])
    if labels is not None:
        out["label"], out["attack_type"] = labels
    return to_canonical(out, source=source)


def _parse_tsv_batch(rows: list[list[str]], fields: list[str], unset: str, empty: str, source: str) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=fields, dtype=object)
    df = df.replace({unset: np.nan, empty: ""})
    return zeek_to_canonical(df, source=source)


def _iter_tsv(lines: Iterator[str | None], path: Path, batch_size: int) -> Iterator[pd.DataFrame]:
    sep = "\t"
    unset, empty = "-", "(empty)"
    fields: list[str] | None = None
    iot23 = False
    rows: list[list[str]] = []
    for lineno, raw in enumerate(lines, 1):
        if raw is None:  # a follow-mode idle tick: release what we hold
            if rows and fields is not None:
                yield _parse_tsv_batch(rows, fields, unset, empty, str(path))
                rows = []
            continue
        line = raw.rstrip("\r\n")
        stripped = line.lstrip(" \t")
        if not stripped:
            continue
        if stripped.startswith("#"):
            key, _, value = stripped.partition(" " if stripped.startswith("#separator") else sep)
            if key == "#separator":
                sep = value.strip().encode().decode("unicode_escape")
            elif key == "#unset_field":
                unset = value
            elif key == "#empty_field":
                empty = value
            elif key == "#fields":
                if rows and fields is not None:
                    yield _parse_tsv_batch(rows, fields, unset, empty, str(path))
                    rows = []
                fields = value.split(sep)
                iot23 = sep == "\t" and any("   " in f for f in fields)
                if iot23:
                    fields = _IOT23_SPLIT.split(value)
            continue
        if fields is None:
            raise InputError(f"{path}:{lineno}: data before any '#fields' header; not a Zeek TSV log")
        parts = _IOT23_SPLIT.split(line) if iot23 else line.split(sep)
        if len(parts) != len(fields):
            raise InputError(f"{path}:{lineno}: {len(parts)} fields, the '#fields' header names {len(fields)}")
        rows.append(parts)
        if len(rows) >= batch_size:
            yield _parse_tsv_batch(rows, fields, unset, empty, str(path))
            rows = []
    if rows and fields is not None:
        yield _parse_tsv_batch(rows, fields, unset, empty, str(path))


def _iter_json(lines: Iterator[str | None], path: Path, batch_size: int) -> Iterator[pd.DataFrame]:
    records: list[dict[str, Any]] = []
    for item in json_objects(lines, path):
        if item is None:  # a follow-mode idle tick: release what we hold
            if records:
                yield zeek_to_canonical(pd.DataFrame.from_records(records), source=str(path))
                records = []
            continue
        records.append(item[1])
        if len(records) >= batch_size:
            yield zeek_to_canonical(pd.DataFrame.from_records(records), source=str(path))
            records = []
    if records:
        yield zeek_to_canonical(pd.DataFrame.from_records(records), source=str(path))


def iter_zeek_conn(path: Path | str, batch_size: int = 10_000) -> Iterator[pd.DataFrame]:
    """Yield canonical flow batches from a Zeek conn.log (TSV or JSON lines, plain or gzip)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    p = Path(path)
    try:
        with open_text(p) as fh:
            first = ""
            for first in fh:
                if first.strip():
                    break
            if not first.strip():
                raise InputError(f"{p}: log is empty")
            lines = _chain(first, fh)
            if first.lstrip().startswith("{"):
                yield from _iter_json(lines, p, batch_size)
            elif first.lstrip(" \t").startswith("#"):
                yield from _iter_tsv(lines, p, batch_size)
            else:
                raise InputError(f"{p}: neither Zeek TSV (no '#separator' header) nor JSON lines")
    except zlib.error as exc:
        raise InputError(f"{p}: corrupt gzip data ({exc})") from exc


def follow_zeek_conn(path: Path | str, batch_size: int = 10_000, *, poll_s: float = 0.2) -> Iterator[pd.DataFrame]:
    """Follow a growing Zeek conn.log (``tail -F``, across rotation); never ends on its own.

    Batches are released when full or when the log has been quiet for ``poll_s`` seconds.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    p = Path(path)
    lines = follow_lines(p, poll_s=poll_s)
    first: str | None = None
    for first in lines:
        if first is not None and first.strip():
            break
    assert first is not None
    rest = _chain(first, lines)
    if first.lstrip().startswith("{"):
        yield from _iter_json(rest, p, batch_size)
    else:
        yield from _iter_tsv(rest, p, batch_size)


def _chain(first: str, rest: Iterator[str | None]) -> Iterator[str | None]:
    yield first
    yield from rest


def read_zeek_conn(path: Path | str) -> pd.DataFrame:
    """Read a whole Zeek conn.log into one canonical flow DataFrame (file order)."""
    batches = list(iter_zeek_conn(path, 100_000))
    if not batches:
        return empty_canonical()
    return pd.concat(batches, ignore_index=True) if len(batches) > 1 else batches[0]
