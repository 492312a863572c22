"""Suricata EVE JSON (``event_type == "flow"`` records; plain or gzip) -> canonical flows.

Mapping (Suricata EVE format, "Event types: flow"): ``flow.start`` -> ``ts``; ``flow.end - flow.start``
-> ``duration``; ``flow.pkts_toserver/toclient`` -> ``src_pkts/dst_pkts``; ``flow.bytes_toserver/
toclient`` -> ``src_bytes/dst_bytes`` (NB: Suricata counts whole packets, headers included, while Zeek
counts payload); ``app_proto`` -> ``service`` (``failed``/absent -> ``-``, ``tls`` -> ``ssl``);
``flow_id`` -> ``uid``; ICMP type/code -> ports (as Zeek does). ``conn_state`` is derived from the
per-direction flag sets ``tcp.tcp_flags_ts``/``tcp_flags_tc`` (see ``_connstate``). Suricata reports
which flags occurred, not how often, so the flag *count* columns and the per-packet statistics are
NaN. Other event types (alert, dns, http, ...) are skipped.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from trustmesh.flows._follow import follow_lines
from trustmesh.errors import InputError
from trustmesh.flows._connstate import derive_conn_state
from trustmesh.flows._io import json_objects, open_text
from trustmesh.flows._records import BadRecord, BadRecordHandler, report, screen_frame
from trustmesh.flows._schema import empty_canonical, to_canonical
from trustmesh.flows._suricata_alerts import eve_alert

__all__ = [
    "follow_suricata_eve", "iter_suricata_eve", "read_suricata_eve", "suricata_flows_to_canonical"]

_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
_APP = {"failed": "-", "tls": "ssl", "": "-"}


def _flags(hexes: pd.Series, bit: int) -> npt.NDArray[np.float64]:
    def one(v: Any) -> float:
        if not isinstance(v, str) or not v:
            return 0.0
        try:
            return 1.0 if int(v, 16) & bit else 0.0
        except ValueError:
            return 0.0

    return np.fromiter((one(v) for v in hexes), dtype=float, count=len(hexes))


def _epoch(values: pd.Series, source: str) -> pd.Series:
    """Return epoch seconds of ISO 8601 timestamps; an unparseable one becomes NaN (screened later)."""
    text = values.map(lambda v: v if isinstance(v, str) else None)
    try:
        ts = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"{source}: unparseable flow.start/end timestamp ({exc})") from exc
    return (ts - _EPOCH) / pd.Timedelta(seconds=1)


def _bad_timestamps(raw: pd.Series, parsed: pd.Series) -> npt.NDArray[np.bool_]:
    """Rows whose timestamp is present but did not parse."""
    present = raw.map(lambda v: v is not None and not (isinstance(v, float) and v != v)).to_numpy(dtype=bool)
    out: npt.NDArray[np.bool_] = present & parsed.isna().to_numpy()
    return out


# the EVE fields the mapping reads: top-level keys, and (object, key) pairs one level down
_TOP = ("proto", "icmp_type", "icmp_code", "src_port", "dest_port", "app_proto", "flow_id", "src_ip", "dest_ip")
_NESTED = (("flow", ("start", "end", "pkts_toserver", "pkts_toclient", "bytes_toserver", "bytes_toclient")),
           ("tcp", ("tcp_flags_ts", "tcp_flags_tc")))
_ABSENT = object()


def _columns(records: list[dict[str, Any]]) -> dict[str, pd.Series]:
    """Return the mapped EVE fields as columns (``"flow.start"`` etc.), straight from the parsed records.

    A field no record has is left out; one that some records lack is NaN there (as
    ``pandas.json_normalize`` gives, without flattening every other field of every record).
    """
    out: dict[str, pd.Series] = {}

    def add(name: str, values: list[Any]) -> None:
        if any(v is not _ABSENT for v in values):
            out[name] = pd.Series([np.nan if v is _ABSENT else v for v in values])

    for key in _TOP:
        add(key, [r.get(key, _ABSENT) for r in records])
    for outer, keys in _NESTED:
        objs: list[dict[str, Any]] = [o if type(o := r.get(outer)) is dict else {} for r in records]
        for key in keys:
            add(f"{outer}.{key}", [o.get(key, _ABSENT) for o in objs])
    return out


def suricata_flows_to_canonical(records: list[dict[str, Any]], *, source: str = "suricata eve",
                                lines: list[int] | None = None,
                                on_bad: BadRecordHandler | None = None) -> pd.DataFrame:
    """Map a list of EVE ``flow`` event dicts to the canonical schema.

    Each record is validated (ports, finite counters, timestamps): a bad one goes to ``on_bad`` with
    its line from ``lines`` and is dropped, or is raised as ``InputError`` without a handler.
    """
    if not records:
        return empty_canonical()
    columns = _columns(records)
    n = len(records)
    line_of = (lambda i: lines[i]) if lines is not None else (lambda i: i + 1)

    def col(name: str, default: Any = np.nan) -> pd.Series:
        return columns[name] if name in columns else pd.Series([default] * n)

    proto = col("proto", "-").astype("str").str.lower()
    start = _epoch(col("flow.start", None), source)
    end = _epoch(col("flow.end", None), source)
    bad_time = np.zeros(n, dtype=bool)
    for name, parsed in (("flow.start", start), ("flow.end", end)):
        wrong = _bad_timestamps(col(name, None), parsed) & ~bad_time
        for i in np.flatnonzero(wrong):
            report(BadRecord(source, line_of(int(i)), name, f"not an ISO 8601 timestamp "
                             f"({str(col(name, None).iloc[i])[:40]!r})"), on_bad)
        bad_time |= wrong
    is_icmp = proto.str.startswith("icmp").to_numpy()
    src_port = np.where(is_icmp, col("icmp_type", 0), col("src_port", 0))
    dst_port = np.where(is_icmp, col("icmp_code", 0), col("dest_port", 0))
    app = col("app_proto", "-").astype("str").str.lower()
    app = app.map(lambda v: _APP.get(v, v)).where(col("app_proto", None).notna(), "-")
    dpk = pd.to_numeric(col("flow.pkts_toclient"), errors="coerce")
    ts_flags = col("tcp.tcp_flags_ts", None)
    tc_flags = col("tcp.tcp_flags_tc", None)
    out = pd.DataFrame(
        {
            "ts": start,
            "uid": col("flow_id", "").astype("str"),
            "src_ip": col("src_ip", "").astype("str"),
            "src_port": pd.Series(src_port, dtype=object),
            "dst_ip": col("dest_ip", "").astype("str"),
            "dst_port": pd.Series(dst_port, dtype=object),
            "proto": proto,
            "service": app,
            "duration": end - start,
            "src_bytes": col("flow.bytes_toserver"),
            "dst_bytes": col("flow.bytes_toclient"),
            "src_pkts": col("flow.pkts_toserver"),
            "dst_pkts": dpk,
            "conn_state": derive_conn_state(
                proto, _flags(ts_flags, 0x02), _flags(tc_flags, 0x02), _flags(ts_flags, 0x01),
                _flags(tc_flags, 0x01), _flags(ts_flags, 0x04), _flags(tc_flags, 0x04), dpk,
            ),  # fmt: skip
        }
    )
    out["__line"] = [line_of(i) for i in range(n)]
    out = out.loc[~bad_time].reset_index(drop=True)
    numeric = ("ts", "duration", "src_bytes", "dst_bytes", "src_pkts", "dst_pkts")
    out = screen_frame(out, source=source, lines=out["__line"].tolist(), on_bad=on_bad, numeric=numeric)
    return to_canonical(out.drop(columns="__line"), source=source)


def _eve_batches(lines: Iterator[str | None], p: Path, batch_size: int, seen: list[int],
                 on_bad: BadRecordHandler | None = None,
                 alerts: list[Any] | None = None) -> Iterator[pd.DataFrame]:
    """Parse EVE lines into canonical batches of ``flow`` events; ``None`` lines release a batch early.

    ``seen[0]`` counts the EVE records read (of any event type), so callers can tell an empty log.
    A line that is not an EVE record, or a flow record with a bad field, goes to ``on_bad``.
    With ``alerts`` (a list; follow mode), ``alert`` events become Alerts that ride on the next batch
    as ``attrs["suricata_alerts"]`` (an empty frame when no flow came: flows._suricata_alerts).
    """
    records: list[dict[str, Any]] = []
    linenos: list[int] = []

    def flush() -> pd.DataFrame:
        frame = suricata_flows_to_canonical(records, source=str(p), lines=linenos, on_bad=on_bad)
        if alerts:
            frame.attrs["suricata_alerts"] = list(alerts)
            alerts.clear()
        return frame

    for item in json_objects(lines, p, on_bad):
        if item is None:  # a follow-mode idle tick
            if records or alerts:
                yield flush()
                records, linenos = [], []
            continue
        lineno, rec = item
        if not isinstance(rec.get("event_type"), str):
            report(BadRecord(str(p), lineno, "event_type", "not a Suricata EVE record (no event_type)"), on_bad)
            continue
        seen[0] += 1
        if rec["event_type"] != "flow":
            if alerts is not None and rec["event_type"] == "alert":
                signature = eve_alert(rec, source_name=str(p))
                if signature is not None:
                    alerts.append(signature)
            continue
        if not isinstance(rec.get("flow", {}), dict):
            report(BadRecord(str(p), lineno, "flow", "flow must be a JSON object"), on_bad)
            continue
        records.append(rec)
        linenos.append(lineno)
        if len(records) >= batch_size:
            yield flush()
            records, linenos = [], []
    if records or alerts:
        yield flush()


def iter_suricata_eve(path: Path | str, batch_size: int = 10_000, *,
                      on_bad_record: BadRecordHandler | None = None) -> Iterator[pd.DataFrame]:
    """Yield canonical flow batches from the ``flow`` events of a Suricata EVE JSON file.

    A bad record goes to ``on_bad_record`` and is skipped; without a handler it raises ``InputError``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    p = Path(path)
    seen = [0]
    try:
        with open_text(p) as fh:
            yield from _eve_batches(fh, p, batch_size, seen, on_bad_record)
    except zlib.error as exc:
        raise InputError(f"{p}: corrupt gzip data ({exc})") from exc
    if seen[0] == 0:
        raise InputError(f"{p}: log is empty")


def follow_suricata_eve(path: Path | str, batch_size: int = 10_000, *, poll_s: float = 0.2,
                        on_bad_record: BadRecordHandler | None = None) -> Iterator[pd.DataFrame]:
    """Follow a growing EVE file (``tail -F``, across rotation); yield its ``flow`` events as batches.

    Its ``alert`` events ride on the batches as ``attrs["suricata_alerts"]`` (docs/soc.md).

    Batches are released when full or when the file has been quiet for ``poll_s`` seconds. Lines
    that are not EVE JSON are refused with the line number, as in :func:`iter_suricata_eve`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    p = Path(path)
    yield from _eve_batches(follow_lines(p, poll_s=poll_s), p, batch_size, [0], on_bad_record, alerts=[])


def read_suricata_eve(path: Path | str) -> pd.DataFrame:
    """Read all flow events of an EVE file into one canonical DataFrame (file order)."""
    batches = list(iter_suricata_eve(path, 100_000))
    if not batches:
        return empty_canonical()
    return pd.concat(batches, ignore_index=True) if len(batches) > 1 else batches[0]
