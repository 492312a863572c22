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
from trustmesh.flows._records import MAX_LINE_CHARS, BadRecord, BadRecordHandler, report, screen_frame
from trustmesh.flows._schema import CANONICAL_DTYPES, empty_canonical, to_canonical

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
        parsed = pd.to_datetime(ts, format="ISO8601", utc=True, errors="coerce")
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"{source}: unparseable ts values, e.g. {ts.dropna().iloc[0]!r}") from exc
    return (parsed - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)


_NUMERIC = tuple(c for c, d in CANONICAL_DTYPES.items() if d == "float64" and c != "ts")


def zeek_to_canonical(df: pd.DataFrame, *, source: str = "zeek conn.log", lines: list[int] | None = None,
                      on_bad: BadRecordHandler | None = None) -> pd.DataFrame:
    """Map a frame with Zeek conn.log field names (``id.orig_h``, ``orig_bytes``, ...) to canonical.

    Every row is validated first (``_records.screen_frame``): a row with a bad port or number is
    handed to ``on_bad`` with its line from ``lines`` and dropped, or raised without a handler.
    """
    if df.empty:
        return empty_canonical()
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"{source}: not a Zeek conn.log (missing fields {', '.join(missing)})")
    out = df.rename(columns=_RENAME)
    if out.columns.duplicated().any():
        dup = sorted({str(c) for c in out.columns[out.columns.duplicated()]})
        raise InputError(f"{source}: field(s) {', '.join(dup)} given more than once")
    if "ts" in out.columns and not pd.api.types.is_numeric_dtype(out["ts"]):
        out["ts"] = _ts_seconds(out["ts"], source)
    keep = np.arange(len(out))
    out["__row"] = keep
    out = screen_frame(out, source=source, lines=lines, on_bad=on_bad, numeric=("ts", *_NUMERIC))
    if out.empty:
        return empty_canonical()
    df = df.iloc[out.pop("__row").to_numpy()].reset_index(drop=True)
    for col in ("service", "conn_state"):
        if col in out.columns:
            s = out[col].astype("str")
            out[col] = s.where(out[col].notna() & ~s.isin(["", "(empty)"]), "-")
    labels = _labels(df)
    out = out.drop(columns=[c for c in ("label", *_DETAILED) if c in out.columns])
    if labels is not None:
        out["label"], out["attack_type"] = labels
    return to_canonical(out, source=source)


def _parse_tsv_batch(rows: list[list[str]], lines: list[int], fields: list[str], unset: str, empty: str,
                     source: str, on_bad: BadRecordHandler | None) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=fields, dtype=object)
    df = df.replace({unset: np.nan, empty: ""})
    return zeek_to_canonical(df, source=source, lines=lines, on_bad=on_bad)


def _separator(value: str, path: Path, lineno: int) -> str:
    """Decode a ``#separator`` header value (``\\x09`` or a literal character) or refuse the header."""
    text = value.strip(" \r\n")
    try:
        sep = text.encode("ascii").decode("unicode_escape") if text.startswith("\\") else text
    except (UnicodeError, ValueError):
        sep = ""
    if len(sep) != 1 or sep in "\r\n#":
        raise InputError(f"{path}:{lineno}: bad '#separator' header {value.strip()[:40]!r} "
                         "(expected one character, e.g. \\x09)")
    return sep


def _iter_tsv(lines: Iterator[str | None], path: Path, batch_size: int,
              on_bad: BadRecordHandler | None = None) -> Iterator[pd.DataFrame]:
    sep = "\t"
    unset, empty = "-", "(empty)"
    fields: list[str] | None = None
    iot23 = False
    rows: list[list[str]] = []
    linenos: list[int] = []
    src = str(path)
    for lineno, raw in enumerate(lines, 1):
        if raw is None:  # a follow-mode idle tick: release what we hold
            if rows and fields is not None:
                yield _parse_tsv_batch(rows, linenos, fields, unset, empty, src, on_bad)
                rows, linenos = [], []
            continue
        line = raw.rstrip("\r\n")
        stripped = line.lstrip(" \t")
        if not stripped:
            continue
        if len(line) > MAX_LINE_CHARS:
            report(BadRecord(src, lineno, None, f"line longer than {MAX_LINE_CHARS} characters"), on_bad)
            continue
        if stripped.startswith("#"):
            key, _, value = stripped.partition(" " if stripped.startswith("#separator") else sep)
            if key == "#separator":
                sep = _separator(value, path, lineno)
            elif key == "#unset_field":
                unset = value
            elif key == "#empty_field":
                empty = value
            elif key == "#fields":
                if rows and fields is not None:
                    yield _parse_tsv_batch(rows, linenos, fields, unset, empty, src, on_bad)
                    rows, linenos = [], []
                fields = value.split(sep)
                iot23 = sep == "\t" and any("   " in f for f in fields)
                if iot23:
                    fields = _IOT23_SPLIT.split(value)
                if len(set(fields)) != len(fields):
                    dup = sorted({f for f in fields if fields.count(f) > 1})
                    raise InputError(f"{path}:{lineno}: '#fields' header names {', '.join(dup)[:80]} twice")
            continue
        if fields is None:
            raise InputError(f"{path}:{lineno}: data before any '#fields' header; not a Zeek TSV log")
        parts = _IOT23_SPLIT.split(line) if iot23 else line.split(sep)
        if len(parts) != len(fields):
            report(BadRecord(src, lineno, None, f"{len(parts)} fields, the '#fields' header names {len(fields)}"),
                   on_bad)
            continue
        rows.append(parts)
        linenos.append(lineno)
        if len(rows) >= batch_size:
            yield _parse_tsv_batch(rows, linenos, fields, unset, empty, src, on_bad)
            rows, linenos = [], []
    if rows and fields is not None:
        yield _parse_tsv_batch(rows, linenos, fields, unset, empty, src, on_bad)


def _iter_json(lines: Iterator[str | None], path: Path, batch_size: int,
               on_bad: BadRecordHandler | None = None) -> Iterator[pd.DataFrame]:
    records: list[dict[str, Any]] = []
    linenos: list[int] = []

    def flush() -> pd.DataFrame:
        return zeek_to_canonical(pd.DataFrame.from_records(records), source=str(path), lines=linenos,
                                 on_bad=on_bad)

    for item in json_objects(lines, path, on_bad):
        if item is None:  # a follow-mode idle tick: release what we hold
            if records:
                yield flush()
                records, linenos = [], []
            continue
        records.append(item[1])
        linenos.append(item[0])
        if len(records) >= batch_size:
            yield flush()
            records, linenos = [], []
    if records:
        yield flush()


def iter_zeek_conn(path: Path | str, batch_size: int = 10_000, *,
                   on_bad_record: BadRecordHandler | None = None) -> Iterator[pd.DataFrame]:
    """Yield canonical flow batches from a Zeek conn.log (TSV or JSON lines, plain or gzip).

    A bad record (wrong field count, bad port or number, bad JSON line) goes to ``on_bad_record``
    and is skipped; without a handler the first one raises ``InputError`` naming FILE:LINE.
    """
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
                yield from _iter_json(lines, p, batch_size, on_bad_record)
            elif first.lstrip(" \t").startswith("#"):
                yield from _iter_tsv(lines, p, batch_size, on_bad_record)
            else:
                raise InputError(f"{p}: neither Zeek TSV (no '#separator' header) nor JSON lines")
    except zlib.error as exc:
        raise InputError(f"{p}: corrupt gzip data ({exc})") from exc


def follow_zeek_conn(path: Path | str, batch_size: int = 10_000, *, poll_s: float = 0.2,
                     on_bad_record: BadRecordHandler | None = None) -> Iterator[pd.DataFrame]:
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
    if first is None:  # follow_lines never ends, so this is only reached if it is given an ended iterator
        raise InputError(f"{p}: log ended before its first line")
    rest = _chain(first, lines)
    if first.lstrip().startswith("{"):
        yield from _iter_json(rest, p, batch_size, on_bad_record)
    else:
        yield from _iter_tsv(rest, p, batch_size, on_bad_record)


def _chain(first: str, rest: Iterator[str | None]) -> Iterator[str | None]:
    yield first
    yield from rest


def read_zeek_conn(path: Path | str) -> pd.DataFrame:
    """Read a whole Zeek conn.log into one canonical flow DataFrame (file order)."""
    batches = list(iter_zeek_conn(path, 100_000))
    if not batches:
        return empty_canonical()
    return pd.concat(batches, ignore_index=True) if len(batches) > 1 else batches[0]
