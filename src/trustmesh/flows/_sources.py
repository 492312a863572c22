"""Flow sources: one ``FlowSource`` protocol, concrete sources per format, and ``open_source`` detection.

Every source yields pandas DataFrames with exactly ``CANONICAL_COLUMNS`` (+ ``label``/``attack_type``
when the source carries labels). ``iter_batches`` reads to the end of its input; the line-based
sources (Zeek, Suricata) read through an iterator of lines so a follow ("tail -f") mode can later wrap
the same parsers around a growing file without changing the mapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd

from trustmesh.errors import InputError
from trustmesh.flows._io import head_bytes, is_gzip
from trustmesh.flows._pcap import CAPTURE_MAGICS, iter_interface, iter_pcap
from trustmesh.flows._records import BadRecordHandler, BadRecordLog, screen_frame
from trustmesh.flows._schema import CANONICAL_COLUMNS, CANONICAL_DTYPES, empty_canonical, to_canonical
from trustmesh.flows._suricata import follow_suricata_eve, iter_suricata_eve
from trustmesh.flows._tables import read_frame
from trustmesh.flows._ton import TON_REQUIRED, ton_iot_to_canonical
from trustmesh.flows._zeek import follow_zeek_conn, iter_zeek_conn

__all__ = [
    "FlowSource",
    "InterfaceSource",
    "PcapSource",
    "SuricataEveSource",
    "TableSource",
    "ZeekConnSource",
    "detect_kind",
    "follow_source",
    "open_source",
    "read_flows",
]

_CONN_NAMES = ("conn.log", "conn.log.gz", "conn.log.labeled", "conn.log.labeled.gz", "conn.json", "conn.json.gz")


@runtime_checkable
class FlowSource(Protocol):
    """A producer of canonical flow batches (pcap, interface, Zeek, Suricata, flow table)."""

    @property
    def name(self) -> str:
        """Return a short human-readable name (kind and file/interface)."""
        ...

    def iter_batches(self, batch_size: int = 10_000) -> Iterator[pd.DataFrame]:
        """Yield DataFrames of at most ``batch_size`` canonical flows until the input ends."""
        ...


@dataclass(frozen=True, slots=True)
class PcapSource:
    """A pcap/pcapng file metered by nfstream."""

    path: Path
    allow_truncated: bool = False

    @property
    def name(self) -> str:
        """Return ``pcap:<file name>``."""
        return f"pcap:{self.path.name}"

    def iter_batches(self, batch_size: int = 10_000) -> Iterator[pd.DataFrame]:
        """Yield canonical flow batches in nfstream expiry order."""
        return iter_pcap(self.path, batch_size, allow_truncated=self.allow_truncated)


@dataclass(frozen=True, slots=True)
class InterfaceSource:
    """A live network interface metered by nfstream (needs capture rights)."""

    interface: str
    bpf_filter: str | None = None
    idle_timeout: int = 120  # seconds a flow must be idle before it is emitted (1 for fast containment)
    active_timeout: int = 1800
    max_delay_s: float | None = 0.0
    early_packets: int | None = 1000  # a live flow is exported once it has this many packets (None: never)
    early_fanout: int | None = 32  # a source whose attempts fail this often a second: first-packet export

    @property
    def name(self) -> str:
        """Return ``iface:<name>``."""
        return f"iface:{self.interface}"

    def iter_batches(self, batch_size: int = 1_000) -> Iterator[pd.DataFrame]:
        """Yield canonical flow batches as flows expire; never ends on its own."""
        return iter_interface(self.interface, batch_size, bpf_filter=self.bpf_filter,
                              idle_timeout=self.idle_timeout, active_timeout=self.active_timeout,
                              max_delay_s=self.max_delay_s, early_packets=self.early_packets,
                              early_fanout=self.early_fanout)


@dataclass(frozen=True, slots=True)
class ZeekConnSource:
    """One or more Zeek conn.log files (TSV or JSON lines, plain or gzip), read in order."""

    paths: tuple[Path, ...]
    follow: bool = False  # tail the (single) log as it grows, across rotation; never ends
    #: records skipped as bad (counted, first ones kept); they never stop the source
    bad_records: BadRecordLog = field(default_factory=BadRecordLog, compare=False, repr=False)

    @property
    def name(self) -> str:
        """Return ``zeek:<first file>``."""
        return f"zeek:{self.paths[0].parent.name}/{self.paths[0].name}"

    def iter_batches(self, batch_size: int = 10_000) -> Iterator[pd.DataFrame]:
        """Yield canonical flow batches, file by file (or, following, as lines are appended)."""
        if self.follow:
            yield from follow_zeek_conn(self.paths[-1], batch_size, on_bad_record=self.bad_records)
            return
        for p in self.paths:
            yield from iter_zeek_conn(p, batch_size, on_bad_record=self.bad_records)


@dataclass(frozen=True, slots=True)
class SuricataEveSource:
    """A Suricata EVE JSON file; only ``flow`` events become flows."""

    path: Path
    follow: bool = False  # tail the file as it grows, across rotation; never ends
    #: records skipped as bad (counted, first ones kept); they never stop the source
    bad_records: BadRecordLog = field(default_factory=BadRecordLog, compare=False, repr=False)

    @property
    def name(self) -> str:
        """Return ``suricata:<file name>``."""
        return f"suricata:{self.path.name}"

    def iter_batches(self, batch_size: int = 10_000) -> Iterator[pd.DataFrame]:
        """Yield canonical flow batches from flow events (following the file when ``follow``)."""
        if self.follow:
            return follow_suricata_eve(self.path, batch_size, on_bad_record=self.bad_records)
        return iter_suricata_eve(self.path, batch_size, on_bad_record=self.bad_records)


@dataclass(frozen=True, slots=True)
class TableSource:
    """A CSV/CSV.gz/Parquet flow table: canonical columns already, or TON_IoT/Zeek-like columns."""

    path: Path
    #: rows skipped as bad (counted, first ones kept); they never stop the source
    bad_records: BadRecordLog = field(default_factory=BadRecordLog, compare=False, repr=False)

    @property
    def name(self) -> str:
        """Return ``table:<file name>``."""
        return f"table:{self.path.name}"

    def iter_batches(self, batch_size: int = 10_000) -> Iterator[pd.DataFrame]:
        """Yield canonical flow batches (the table is read and mapped once, then sliced)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        raw = read_frame(self.path)
        raw.columns = [str(c).replace("\ufeff", "").strip() for c in raw.columns]
        cols = set(raw.columns)
        if {"src_ip", "dst_ip", "proto", "uid", "ts"} <= cols:
            mapper = "canonical"
        elif set(TON_REQUIRED) <= cols:
            mapper = "ton"
        else:
            raise InputError(
                f"{self.path}: not a flow table (needs the canonical columns or TON_IoT/Zeek-like "
                f"columns {', '.join(TON_REQUIRED)}); for labelled feature tables use load_table()"
            )
        if raw.empty:
            yield empty_canonical()
            return
        if raw.columns.duplicated().any():
            dup = sorted({str(c) for c in raw.columns[raw.columns.duplicated()]})
            raise InputError(f"{self.path}: column(s) {', '.join(dup)[:80]} given more than once")
        # CSV rows are numbered as file lines (header = line 1); Parquet rows from 1
        first_line = 1 if raw.attrs.get("format") == "parquet" or self.path.suffix == ".parquet" else 2
        raw = screen_frame(raw, source=str(self.path), lines=range(first_line, first_line + len(raw)),
                           on_bad=self.bad_records, numeric=_TABLE_NUMERIC, strict_text_numbers=False)
        if raw.empty:
            yield empty_canonical()
            return
        # map once, then slice: per-chunk mapping costs a fixed ~30 ms per batch
        if mapper == "canonical":
            flows = to_canonical(raw, source=str(self.path))
        else:
            flows = ton_iot_to_canonical(raw, source=str(self.path))
        for start in range(0, len(flows), batch_size):
            yield flows.iloc[start : start + batch_size].reset_index(drop=True)


_TABLE_NUMERIC = tuple(c for c, d in CANONICAL_DTYPES.items() if d == "float64")


def detect_kind(path: Path | str) -> str:
    """Return 'pcap', 'zeek', 'suricata', 'table' or 'zeek-dir' for a path, or raise ``InputError``."""
    p = Path(path)
    if p.is_dir():
        return "zeek-dir"
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")
    with p.open("rb") as fh:
        magic = fh.read(4)
    if magic in CAPTURE_MAGICS:
        return "pcap"
    head = head_bytes(p)
    if not head:
        raise InputError(f"{p}: file is empty")
    if is_gzip(p) and head[:4] in CAPTURE_MAGICS:
        raise InputError(f"{p}: gzip-compressed capture; decompress it first (nfstream reads pcap/pcapng)")
    if head[:4] == b"PAR1":
        return "table"
    if b"\x00" in head:
        raise InputError(f"{p}: binary data of unknown format (not pcap, pcapng, log, CSV or Parquet)")
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    stripped = first.lstrip(" \t")
    if stripped.startswith(("#separator", "#fields")):
        return "zeek"
    if stripped.startswith("{"):
        if '"event_type"' in first:
            return "suricata"
        if '"id.orig_h"' in first or '"uid"' in first:
            return "zeek"
        raise InputError(f"{p}: JSON lines, but neither Zeek conn (id.orig_h) nor Suricata EVE (event_type)")
    if "," in first or "\t" in first:
        return "table"
    raise InputError(f"{p}: unrecognised format (not pcap, pcapng, Zeek, Suricata EVE, CSV or Parquet)")


def _zeek_dir(p: Path) -> ZeekConnSource:
    for name in _CONN_NAMES:
        if (p / name).is_file():
            return ZeekConnSource((p / name,))
    rotated = sorted(f for f in p.glob("conn.*log*") if f.is_file())
    if rotated:
        return ZeekConnSource(tuple(rotated))
    raise InputError(f"{p}: directory holds no conn.log (looked for {', '.join(_CONN_NAMES)}, conn.*.log*)")


def follow_source(path: Path | str, *, on_bad_record: BadRecordHandler | None = None) -> FlowSource:
    """Return a source that tails a growing Zeek conn.log (or a Zeek log folder) or Suricata EVE file.

    The file must already hold its first record (or header), so its kind can be told; after that
    it is followed across rotation until the caller stops iterating.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("conn.log", "conn.log.json"):
            if (p / name).exists():
                return ZeekConnSource((p / name,), follow=True, bad_records=BadRecordLog(on_record=on_bad_record))
        raise InputError(f"{p}: no conn.log to follow in this folder")
    kind = detect_kind(p)
    if kind == "zeek":
        return ZeekConnSource((p,), follow=True, bad_records=BadRecordLog(on_record=on_bad_record))
    if kind == "suricata":
        return SuricataEveSource(p, follow=True, bad_records=BadRecordLog(on_record=on_bad_record))
    raise InputError(f"{p}: only Zeek conn.log and Suricata EVE files can be followed (this is {kind})")


def open_source(path: Path | str, *, allow_truncated: bool = False,
                on_bad_record: BadRecordHandler | None = None) -> FlowSource:
    """Detect the kind of ``path`` and return a ``FlowSource`` for it.

    pcap/pcapng by magic bytes; Zeek TSV by its ``#separator``/``#fields`` header; JSON lines as Zeek
    conn (``id.orig_h``) or Suricata EVE (``event_type``); a directory by its ``conn.log*``; otherwise a
    CSV/Parquet flow table. Raises ``InputError`` naming the file when nothing fits.

    Bad records in a log or table are skipped and counted on the source's ``bad_records``;
    ``on_bad_record`` is also called with each one (the pipeline records them in the ledger).
    """
    p = Path(path).expanduser()
    kind = detect_kind(p)
    log = BadRecordLog(on_record=on_bad_record)
    if kind == "pcap":
        return PcapSource(p, allow_truncated=allow_truncated)
    if kind == "zeek":
        return ZeekConnSource((p,), bad_records=log)
    if kind == "zeek-dir":
        return ZeekConnSource(_zeek_dir(p).paths, bad_records=log)
    if kind == "suricata":
        return SuricataEveSource(p, bad_records=log)
    return TableSource(p, bad_records=log)


def read_flows(path: Path | str) -> pd.DataFrame:
    """Read every flow of any supported source into one canonical DataFrame."""
    src = open_source(path)
    batches = list(src.iter_batches(100_000))
    if not batches:
        return empty_canonical()
    df = pd.concat(batches, ignore_index=True) if len(batches) > 1 else batches[0]
    extra = [c for c in df.columns if c not in CANONICAL_COLUMNS]
    return df[[*CANONICAL_COLUMNS, *extra]]
