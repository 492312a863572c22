"""Per-record validation for every flow source: one bad record is skipped, counted and reported.

A record is refused when a port is not an integer in 0..65535 (``1e400``, ``inf``, ``-1``,
``99999999999999999999``: nothing is wrapped or clamped), when a numeric field holds a non-finite
number or one over 1e308, when a text field is longer than ``MAX_TEXT`` characters, or when its line
is not a JSON object within the depth and size limits. Each refusal is a ``BadRecord`` naming
``FILE:LINE`` and the field; a source hands it to its ``BadRecordLog`` (counters, the first
``keep`` examples, an optional callback), and goes on with the next record. Without a handler the
parsers are strict: the first bad record raises ``InputError`` with the same message.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from trustmesh.errors import InputError

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_LINE_CHARS",
    "MAX_TEXT",
    "BadRecord",
    "BadRecordHandler",
    "BadRecordLog",
    "report",
    "screen_frame",
]

log = logging.getLogger(__name__)

#: Longest line a log parser accepts (a Zeek or EVE flow record is well under 4 kB).
MAX_LINE_CHARS = 1 << 20
#: Deepest JSON nesting accepted in one record (EVE flow records nest 3 levels).
MAX_JSON_DEPTH = 32
#: Longest text value (uid, address, service, state) kept in a canonical column.
MAX_TEXT = 1024
#: Largest magnitude accepted in a numeric field; above it a value is an overflow, not a measurement.
MAX_NUMBER = 1e308

_PORT_COLUMNS = ("src_port", "dst_port")
_TEXT_COLUMNS = ("uid", "src_ip", "dst_ip", "proto", "service", "conn_state")


@dataclass(frozen=True, slots=True)
class BadRecord:
    """One record a source refused: where (file, line or row), which field, and why."""

    source: str
    line: int | None
    field: str | None
    problem: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: field {self.field}: {self.problem}" if self.field else f"{where}: {self.problem}"


BadRecordHandler = Callable[[BadRecord], None]


class BadRecordLog:
    """Count the records a source skipped; keep the first ``keep`` and queue them for a consumer.

    Thread-safe (a followed log is read on a thread). ``drain()`` returns the records queued since
    the last call (the pipeline writes each one to the ledger as ``pipeline.error``); records past
    ``keep`` are only counted, so a file of garbage cannot flood memory or the ledger.
    """

    def __init__(self, keep: int = 1000, on_record: BadRecordHandler | None = None) -> None:
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        self.keep = keep
        self.on_record = on_record
        self.count = 0
        self.by_field: Counter[str] = Counter()
        self.examples: list[BadRecord] = []
        self._pending: deque[BadRecord] = deque()
        self._lock = threading.Lock()

    def __call__(self, bad: BadRecord) -> None:
        with self._lock:
            self.count += 1
            self.by_field[bad.field or "<record>"] += 1
            kept = len(self.examples) < self.keep
            if kept:
                self.examples.append(bad)
                self._pending.append(bad)
        if self.count <= 10 and not isinstance(self.on_record, BadRecordLog):  # the outer log reports it
            log.warning("skipped bad record: %s", bad)
        if self.on_record is not None:
            self.on_record(bad)

    @property
    def dropped(self) -> int:
        """Return how many skipped records were counted but not kept as examples."""
        return self.count - len(self.examples)

    def drain(self) -> list[BadRecord]:
        """Return (and forget) the kept records not drained yet."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
        return out


def report(bad: BadRecord, on_bad: BadRecordHandler | None) -> None:
    """Hand ``bad`` to ``on_bad``, or raise it as an ``InputError`` when there is no handler (strict)."""
    if on_bad is None:
        raise InputError(str(bad))
    on_bad(bad)


def _as_number(s: pd.Series) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Return (values as float64 with NaN for unset, mask of values present but not numbers).

    Integers too large for a float become ``inf`` (so a range check refuses them) instead of wrapping.
    """
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return vals, np.zeros(len(s), dtype=bool)
    out = np.full(len(s), np.nan, dtype=np.float64)
    bad = np.zeros(len(s), dtype=bool)
    try:  # vectorised first: only the values it cannot read go through the per-value rules below
        fast = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        todo = np.flatnonzero(np.isnan(fast) & s.notna().to_numpy())
        out = fast.copy()
    except (TypeError, ValueError, OverflowError):
        todo = np.arange(len(s))
    values = s.tolist()
    for i in todo.tolist():
        v = values[i]
        if v is None or (isinstance(v, float) and v != v):
            out[i] = np.nan
        elif isinstance(v, (bool, int, float, np.integer, np.floating)):
            try:
                out[i] = float(v)
            except OverflowError:  # an int beyond float range
                out[i] = np.inf
        elif isinstance(v, str):
            t = v.strip()
            if t in ("", "-", "(empty)"):
                out[i] = np.nan
                continue
            try:
                out[i] = float(t)
            except OverflowError:
                out[i] = np.inf
            except ValueError:
                out[i], bad[i] = np.nan, True
        else:  # a list, dict or other JSON structure where a number belongs
            out[i], bad[i] = np.nan, True
    return out, bad


def screen_frame(
    df: pd.DataFrame,
    *,
    source: str,
    lines: Sequence[int] | npt.NDArray[np.int64] | None,
    on_bad: BadRecordHandler | None,
    numeric: Sequence[str] = (),
    strict_text_numbers: bool = True,
) -> pd.DataFrame:
    """Return ``df`` without the rows that fail validation, reporting each refused row once.

    ``df`` holds canonical column names (before the dtype cast). Ports must be integers in
    0..65535 (unset becomes 0 later); ``numeric`` columns must be finite and within ±1e308 when
    present (unset is NaN); with ``strict_text_numbers`` a text that is not a number in a numeric
    column is refused too (tables pass False: their loaders map such text to NaN on purpose).
    ``lines`` gives each row's line (or row) number for the report.
    """
    n = len(df)
    if n == 0:
        return df
    bad_any = np.zeros(n, dtype=bool)
    reasons: list[tuple[npt.NDArray[np.bool_], str, str]] = []
    parsed: dict[str, npt.NDArray[np.float64]] = {}  # numbers read once, handed on (no second parse)
    for col in _PORT_COLUMNS:
        if col not in df.columns:
            continue
        vals, not_num = _as_number(df[col])
        parsed[col] = vals
        present = ~np.isnan(vals)
        with np.errstate(invalid="ignore"):
            out_of_range = present & ~((vals >= 0) & (vals <= 65535))
            fractional = present & ~out_of_range & (np.floor(np.where(present, vals, 0)) != np.where(present, vals, 0))
        for mask, why in ((not_num, "port is not a number"), (out_of_range, "port outside 0..65535"),
                          (fractional, "port is not an integer")):
            if mask.any():
                reasons.append((mask, col, why))
                bad_any |= mask
    for col in numeric:
        if col not in df.columns:
            continue
        vals, not_num = _as_number(df[col])
        parsed[col] = vals
        with np.errstate(invalid="ignore"):
            huge = ~np.isnan(vals) & ~(np.abs(vals) <= 1e308)
        if huge.any():
            reasons.append((huge, col, "number is not finite or over 1e308"))
            bad_any |= huge
        if strict_text_numbers and not_num.any():
            reasons.append((not_num, col, "not a number"))
            bad_any |= not_num
    for col in _TEXT_COLUMNS:
        if col not in df.columns or pd.api.types.is_numeric_dtype(df[col].dtype):
            continue
        col_s = df[col]
        if pd.api.types.infer_dtype(col_s, skipna=True) in ("string", "empty"):  # all text: vectorised
            lengths = np.array(col_s.str.len().to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        else:  # numbers, lists or dicts where text belongs: their text form counts
            lengths = np.array([len(v) if isinstance(v, str) else len(str(v)) if v is not None else 0
                                for v in col_s.tolist()], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            long = lengths > MAX_TEXT
        if long.any():
            reasons.append((long, col, f"text longer than {MAX_TEXT} characters"))
            bad_any |= long
    raw = df
    if parsed:
        df = df.assign(**{c: v for c, v in parsed.items()})
    if not bad_any.any():
        return df
    first: dict[int, tuple[str, str]] = {}  # row -> the first problem found in it
    for mask, col, why in reasons:
        for row in np.flatnonzero(mask):
            first.setdefault(int(row), (col, why))
    for i in sorted(first):
        col, why = first[i]
        value = raw[col].iloc[i]
        if isinstance(value, np.generic):
            value = value.item()
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        line = int(lines[i]) if lines is not None else i + 1
        report(BadRecord(source, line, col, f"{why} ({shown})"), on_bad)
    return df.loc[~bad_any].reset_index(drop=True)
