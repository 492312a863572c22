"""Packet captures and live interfaces -> canonical flows, metered by nfstream (nDPI).

nfstream is run with ``statistical_analysis=True`` (per-direction size and inter-arrival statistics),
``n_meters=1`` (one metering process: fine on a 2-core machine and deterministic flow order) and
``accounting_mode=3`` (payload bytes, matching Zeek's ``orig_bytes``/``resp_bytes``).

nfstream reads a truncated or garbage-tailed capture silently and returns the flows of whatever it
could parse; a half capture would then look like a complete one. Files are therefore walked record by
record first (a cheap header scan, no packet decoding) and a truncated or corrupt capture raises
``InputError`` naming the byte offset, unless ``allow_truncated=True``.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import signal
import threading
import time
import mmap
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable, Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trustmesh.errors import InputError, MissingDependencyError
from trustmesh.flows._connstate import derive_conn_state
from trustmesh.flows._schema import empty_canonical, to_canonical

__all__ = [
    "CAPTURE_MAGICS",
    "check_capture",
    "iter_interface",
    "iter_pcap",
    "nfstream_to_canonical",
    "read_pcap",
]

log = logging.getLogger(__name__)

CAPTURE_MAGICS: dict[bytes, str] = {
    b"\xd4\xc3\xb2\xa1": "pcap",  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": "pcap",  # big-endian, microseconds
    b"\x4d\x3c\xb2\xa1": "pcap",  # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": "pcap",  # big-endian, nanoseconds
    b"\x0a\x0d\x0d\x0a": "pcapng",
}

_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}  # Zeek also calls ICMPv6 "icmp"
# nDPI names -> Zeek service names where they differ (Zeek labels TLS "ssl").
_SERVICE_NAMES = {
    "tls": "ssl",
    "unknown": "-",
    "ftp_control": "ftp",
    "ftp_data": "ftp-data",
    "mdns": "dns",
    "llmnr": "dns",
    "icmp": "-",  # Zeek leaves service unset for ICMP
    "icmpv6": "-",
}
_MAX_RECORD = 1 << 24  # no link type has 16 MiB frames; larger means garbage


def _nfstream() -> Any:
    try:
        import nfstream
    except ImportError as exc:  # pragma: no cover - nfstream is part of the pcap extra
        raise MissingDependencyError("nfstream", "pcap") from exc
    return nfstream


# ----------------------------------------------------------------------------------- capture check


def check_capture(path: Path | str) -> str:
    """Walk a pcap/pcapng file's record headers; return its format or raise ``InputError``.

    Detects empty files, unknown magic, truncated last records and records whose lengths are garbage.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    if size == 0:
        raise InputError(f"{p}: capture file is empty")
    with p.open("rb") as fh:
        if size < 4:
            raise InputError(f"{p}: too short to be a capture ({size} bytes)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            kind = CAPTURE_MAGICS.get(bytes(mm[:4]))
            if kind is None:
                raise InputError(f"{p}: not a pcap/pcapng capture (magic {bytes(mm[:4]).hex()})")
            if kind == "pcap":
                _walk_pcap(p, mm, size)
            else:
                _walk_pcapng(p, mm, size)
    return kind


def _walk_pcap(p: Path, mm: mmap.mmap, size: int) -> None:
    if size < 24:
        raise InputError(f"{p}: truncated pcap global header ({size} of 24 bytes)")
    endian = "<" if mm[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    rec = struct.Struct(endian + "IIII")
    (snaplen,) = struct.unpack_from(endian + "I", mm, 16)
    limit = min(_MAX_RECORD, max(snaplen, 65535)) if snaplen else _MAX_RECORD
    pos, n = 24, 0
    while pos < size:
        if size - pos < 16:
            raise InputError(f"{p}: truncated capture: record {n} header cut at byte {pos} of {size}")
        _, _, incl, _ = rec.unpack_from(mm, pos)
        if incl > limit:
            raise InputError(f"{p}: corrupt capture: record {n} at byte {pos} claims {incl} bytes")
        if pos + 16 + incl > size:
            raise InputError(
                f"{p}: truncated capture: record {n} at byte {pos} needs {incl} bytes, "
                f"only {size - pos - 16} remain"
            )
        pos += 16 + incl
        n += 1


def _walk_pcapng(p: Path, mm: mmap.mmap, size: int) -> None:
    pos, n = 0, 0
    endian = "<"
    while pos < size:
        if size - pos < 12:
            raise InputError(f"{p}: truncated capture: block {n} cut at byte {pos} of {size}")
        btype_raw = bytes(mm[pos : pos + 4])
        if btype_raw == b"\x0a\x0d\x0d\x0a":
            if size - pos < 12:
                raise InputError(f"{p}: truncated section header at byte {pos}")
            bom = bytes(mm[pos + 8 : pos + 12])
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise InputError(f"{p}: corrupt pcapng section header at byte {pos} (byte-order magic {bom.hex()})")
        (length,) = struct.unpack_from(endian + "I", mm, pos + 4)
        if length < 12 or length % 4 or length > _MAX_RECORD:
            raise InputError(f"{p}: corrupt capture: block {n} at byte {pos} has length {length}")
        if pos + length > size:
            raise InputError(
                f"{p}: truncated capture: block {n} at byte {pos} needs {length} bytes, only {size - pos} remain"
            )
        (trailer,) = struct.unpack_from(endian + "I", mm, pos + length - 4)
        if trailer != length:
            raise InputError(f"{p}: corrupt capture: block {n} at byte {pos} length fields differ")
        pos += length
        n += 1


# ---------------------------------------------------------------------------------------- mapping


def _uids(df: pd.DataFrame) -> list[str]:
    # Deterministic ids (same capture -> same uid) so alerts and ledger entries can name a flow.
    keys = zip(
        df["bidirectional_first_seen_ms"].astype(str), df["src_ip"].astype(str), df["src_port"].astype(str),
        df["dst_ip"].astype(str), df["dst_port"].astype(str), df["protocol"].astype(str),
        df.get("vlan_id", pd.Series(0, index=df.index)).astype(str), strict=True,
    )  # fmt: skip
    return ["N" + hashlib.sha256("|".join(k).encode()).hexdigest()[:17] for k in keys]


def _service(app: pd.Series, guessed: pd.Series) -> pd.Series:
    master = app.astype("str").str.split(".", n=1).str[0].str.lower()
    master = master.map(lambda v: _SERVICE_NAMES.get(v, v))
    return master.where(guessed.astype(int) == 0, "-").fillna("-")


def _turn_tails(df: pd.DataFrame) -> pd.DataFrame:
    """Turn round the flows marked as tails (``TAIL_COLUMN``): their first packet was the responder's.

    nfstream makes a flow's first packet's sender its source; a tail (the answer to a flow exported at
    its first packet, see ``_FanOut``) is the rest of the original conversation, so its directions are
    swapped back: the originator stays the source, the answer's packets count as the responder's.
    """
    tail = pd.to_numeric(df[TAIL_COLUMN], errors="coerce").fillna(0).to_numpy() > 0
    if not tail.any():
        return df
    out = df.copy()
    pairs = [(c, "dst" + c[3:]) for c in df.columns if c.startswith("src_") and "dst" + c[3:] in df.columns]
    pairs += [(c, "dst2src" + c[7:]) for c in df.columns
              if c.startswith("src2dst") and "dst2src" + c[7:] in df.columns]
    for a, b in pairs:
        out.loc[tail, a] = df.loc[tail, b].to_numpy()
        out.loc[tail, b] = df.loc[tail, a].to_numpy()
    return out


def nfstream_to_canonical(df: pd.DataFrame, *, source: str = "nfstream") -> pd.DataFrame:
    """Map an nfstream flow table (``NFStreamer.to_pandas()`` columns) to the canonical schema.

    Used for both pcap files and live interfaces. Requires ``statistical_analysis=True`` columns.
    """
    if df.empty:
        return empty_canonical()
    if TAIL_COLUMN in df.columns:
        df = _turn_tails(df)
    need = ("src2dst_syn_packets", "src2dst_min_ps", "src2dst_mean_piat_ms", "bidirectional_first_seen_ms")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{source}: nfstream output lacks {', '.join(missing)} (statistical_analysis=True?)")
    proto_num = df["protocol"].astype(int)
    proto = proto_num.map(lambda v: _PROTO_NAMES.get(v, "unknown_transport"))
    spk = df["src2dst_packets"].astype(float)
    dpk = df["dst2src_packets"].astype(float)
    out = pd.DataFrame(
        {
            "ts": df["bidirectional_first_seen_ms"].astype(float) / 1000.0,
            "uid": _uids(df),
            "src_ip": df["src_ip"].astype("str"),
            "src_port": df["src_port"].astype(np.int64),
            "dst_ip": df["dst_ip"].astype("str"),
            "dst_port": df["dst_port"].astype(np.int64),
            "proto": proto,
            "service": _service(df["application_name"], df["application_is_guessed"]),
            "duration": df["bidirectional_duration_ms"].astype(float) / 1000.0,
            "src_bytes": df["src2dst_bytes"].astype(float),
            "dst_bytes": df["dst2src_bytes"].astype(float),
            "src_pkts": spk,
            "dst_pkts": dpk,
            "conn_state": derive_conn_state(
                proto, df["src2dst_syn_packets"], df["dst2src_syn_packets"], df["src2dst_fin_packets"],
                df["dst2src_fin_packets"], df["src2dst_rst_packets"], df["dst2src_rst_packets"], dpk,
            ),  # fmt: skip
        }
    )
    for flag in ("syn", "ack", "fin", "rst", "psh", "urg"):
        out[flag] = df[f"bidirectional_{flag}_packets"].astype(float)
    for d, nf, pk in (("src", "src2dst", spk), ("dst", "dst2src", dpk)):
        # nfstream reports 0 for a direction without packets; that is "undefined", not zero
        has = (pk > 0).to_numpy()
        has2 = (pk > 1).to_numpy()
        for stat, col in (("min", "min_ps"), ("mean", "mean_ps"), ("max", "max_ps"), ("std", "stddev_ps")):
            out[f"{d}_pkt_size_{stat}"] = np.where(has, df[f"{nf}_{col}"].astype(float), np.nan)
        for stat, col in (("mean", "mean_piat_ms"), ("std", "stddev_piat_ms"), ("max", "max_piat_ms")):
            out[f"{d}_iat_{stat}"] = np.where(has2, df[f"{nf}_{col}"].astype(float) / 1000.0, np.nan)
    return to_canonical(out, source=source)


# --------------------------------------------------------------------------------------- readers

# nfstream forks its meter processes (multiprocessing "fork") at the first next() of the streamer. A
# meter outliving its parent (kill -9 of `trustmesh run`) keeps capturing and holds the parent's files
# and pipes open, so each meter forked while ``_ARMED`` names the forking thread asks the kernel to
# SIGKILL it when that thread's process dies (PR_SET_PDEATHSIG), and exits at once if the parent is
# already gone (the race between fork and prctl).
_ARMED: set[int] = set()  # thread idents currently starting a streamer
_FORK_PARENT = [0]
_PR_SET_PDEATHSIG = 1


def _before_fork() -> None:
    _FORK_PARENT[0] = os.getpid()


def _die_with_parent() -> None:
    if threading.get_ident() not in _ARMED:
        return
    _ARMED.clear()
    # A meter must die on the SIGTERM nfstream (or _stop) sends it: a Python handler inherited from the
    # parent (the pipeline's graceful-stop handler) would only run between bytecodes, never while the
    # meter is blocked in C on its full queue.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pipeline still stops its meters on a clean exit
        return
    if os.getppid() != _FORK_PARENT[0]:
        os._exit(1)


os.register_at_fork(before=_before_fork, after_in_child=_die_with_parent)


def _start(flows: Iterator[Any]) -> tuple[Any, bool]:
    """Take the streamer's first flow (this forks its meters) with the die-with-parent hook armed."""
    me = threading.get_ident()
    _ARMED.add(me)
    try:
        return next(flows), True
    except StopIteration:
        return None, False
    finally:
        _ARMED.discard(me)


class _Tracked:
    """nfstream's multiprocessing context, keeping the meter processes and queues it makes.

    ``NFStreamer.__iter__`` holds its meters in local variables; this is how a source stopped early
    finds exactly its own meters (other sources may be starting theirs in other threads).
    """

    def __init__(self, context: Any) -> None:
        self._context = context
        self.processes: list[Any] = []
        self.queues: list[Any] = []

    def Process(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - multiprocessing's name
        proc = self._context.Process(*args, **kwargs)
        self.processes.append(proc)
        return proc

    def Queue(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - multiprocessing's name
        queue = self._context.Queue(*args, **kwargs)
        self.queues.append(queue)
        return queue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


_READ_TIMEOUT_HOOK: list[bool] = []  # the live-capture hook is installed once per process
_LIVE_READ_TIMEOUT_MS = 10  # libpcap read timeout of live captures (nfstream's own: 1000 ms)


def _install_short_read_timeout() -> None:
    """Make nfstream's live captures hand packets to the meter within ~10 ms instead of up to 1 s.

    nfstream opens an interface with a 1000 ms libpcap read timeout, and Linux libpcap (TPACKET_V3)
    hands packets over only when a ring block fills or that timeout passes: on a quiet link an
    attack's first packets reached the meter up to a second late, whatever the flow timeouts
    (measured in the namespace testbed: flows came in bursts about 1 s apart). The meter builds its
    capture handle with ``nfstream.meter.setup_capture``; the hook sets a 10 ms read timeout on that
    not-yet-activated handle (``pcap_set_timeout``, from the libpcap nfstream links in). Immediate
    mode was tried first: it gives up TPACKET_V3's packed blocks and dropped 219 of 1,200 datagrams
    of a burst on lo, where the 10 ms timeout dropped none. Offline captures (files) are left alone.
    Installed before the meter forks, so the meter inherits it.
    """
    if _READ_TIMEOUT_HOOK:
        return
    _READ_TIMEOUT_HOOK.append(True)
    try:
        import ctypes

        import _lib_engine  # nfstream's native engine
        import nfstream.meter as meter
        from nfstream.utils import NFMode

        native = ctypes.CDLL(_lib_engine.__file__)
        set_timeout = native.pcap_set_timeout
        set_timeout.argtypes, set_timeout.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int
        original = meter.setup_capture
    except (ImportError, OSError, AttributeError) as exc:  # another nfstream build: keep its behaviour
        log.warning("live capture: cannot shorten libpcap's read timeout (%s); packets may wait up to 1 s", exc)
        return

    def setup_capture(ffi: Any, lib: Any, source: Any, snaplen: Any, promisc: Any, mode: Any, *rest: Any) -> Any:
        capture = original(ffi, lib, source, snaplen, promisc, mode, *rest)
        if capture is not None and int(mode) == int(NFMode.INTERFACE):
            set_timeout(int(ffi.cast("uintptr_t", capture)), _LIVE_READ_TIMEOUT_MS)
        return capture

    meter.setup_capture = setup_capture


_METER_HOOKS: list[bool] = []  # installed once per process


def _install_meter_hooks() -> None:
    """Wrap two functions of nfstream's meter for the live path (only a meter running our plugin).

    * ``consume`` (per packet): notes the packet's flow key for the plugin (``_MeterHooks.key``), and
      moves an updated flow to the end of the meter's flow cache. nfstream's cache is ordered by
      flow *creation* (its ``__getitem__`` does not refresh the order) and its idle scan stops at the
      first flow that is not idle, so one long-lived flow at the head held every idle flow behind it
      until that flow's ``active_timeout``: on a link with one steady stream (the testbed's
      telemetry), unanswered probes waited up to ``live_active_timeout`` instead of
      ``live_idle_timeout``. With the order refreshed the head is the least recently *updated* flow,
      as the idle scan assumes.
    * ``meter_scan`` (every 10 ms): after nfstream's idle scan, exports the attempts that are still
      unanswered at their deadline and whose source is failing (``_FanOut.expire_due``).

    Installed before the meter forks; a meter that never runs the plugin (files) is unaffected,
    because ``_MeterHooks.live`` is only set by the plugin inside the meter process.
    """
    if _METER_HOOKS:
        return
    _METER_HOOKS.append(True)
    try:
        import nfstream.meter as meter
    except ImportError:  # pragma: no cover - nfstream is part of the pcap extra
        return
    consume, scan, flow_key = meter.consume, meter.meter_scan, meter.get_flow_key_from_pkt
    if not (callable(consume) and callable(scan) and callable(flow_key)):  # pragma: no cover - other nfstream
        log.warning("live capture: nfstream's meter differs from the one expected; no answer deadlines")
        return

    def consume_hooked(packet: Any, cache: Any, *rest: Any) -> Any:
        if not _HOOKS.live:  # a meter without the plugin, or before the plugin's first callback
            return consume(packet, cache, *rest)
        key = _HOOKS.key = flow_key(packet)
        state = consume(packet, cache, *rest)
        if key in cache:
            cache.move_to_end(key)
        return state

    def scan_hooked(tick: Any, cache: Any, idle_timeout: Any, channel: Any, *rest: Any) -> int:
        done = int(scan(tick, cache, idle_timeout, channel, *rest))
        fan = _HOOKS.fan
        if fan is not None and fan.due:
            done += fan.expire_due(float(tick), cache, channel, rest)
        return done

    meter.consume = consume_hooked
    meter.meter_scan = scan_hooked


def _streamer(source: str, **extra: Any) -> Any:
    nfs = _nfstream()
    streamer = nfs.NFStreamer(
        source=source, statistical_analysis=True, n_meters=1, accounting_mode=3, **extra
    )
    streamer._mp_context = _Tracked(streamer._mp_context)
    return streamer


def _stop(flows: Any, tracked: Any) -> None:
    """Stop nfstream's metering process(es) when the consumer stops early.

    ``NFStreamer.__iter__`` terminates its meters only on ``KeyboardInterrupt`` and then joins them
    without a timeout; a plain ``generator.close()`` would leave them capturing until the parent exits.
    So the meters this streamer made are terminated here (killed if SIGTERM has not ended them within a
    second), their queue is closed without waiting for its feeder, and nfstream's generator is closed.
    """
    procs = list(getattr(tracked, "processes", ()))
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(1.0)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
    for queue in getattr(tracked, "queues", ()):
        queue.close()
        queue.cancel_join_thread()
    flows.close()


def _iter_streamer(
    streamer: Any, batch_size: int, source: str, max_delay_s: float | None = None
) -> Generator[pd.DataFrame, None, None]:
    """Group nfstream's flows into canonical batches of ``batch_size``.

    With ``max_delay_s`` (live capture) a batch is released as soon as no further flow is already
    waiting in the meter's queue (a lone flow is never held back), when it is full, or once its
    oldest flow has waited ``max_delay_s`` (0: ``_DRAIN_CAP_S``) while flows kept arriving. A burst
    (a scan's probes expired together) is therefore converted once, not flow by flow: converting
    one flow costs about as much as converting a hundred, and doing it per flow made the reader fall
    behind a scan on a loaded gateway (issue 12).
    """
    keys: list[str] | None = None
    rows: list[list[Any]] = []
    seen: dict[str, int] = {}  # uids issued so far (``_distinct``)
    flows = iter(streamer)
    finished = False
    first_at = 0.0
    cap = (max_delay_s or _DRAIN_CAP_S) if max_delay_s is not None else 0.0
    tracked = getattr(streamer, "_mp_context", None)
    try:
        head, started = _start(flows)
        channel = _channel(tracked) if max_delay_s is not None else None
        for flow in itertools.chain((head,), flows) if started else ():
            if keys is None:
                keys = list(flow.keys())
            if not rows:
                first_at = time.monotonic()
            rows.append(flow.values())
            if len(rows) >= batch_size or (
                max_delay_s is not None
                and (time.monotonic() - first_at >= cap or channel is None or _drained(channel))
            ):
                yield _distinct(nfstream_to_canonical(pd.DataFrame(rows, columns=keys), source=source), seen)
                rows = []
        finished = True
    except ValueError as exc:  # nfstream: "unknown file format" and similar
        finished = True
        raise InputError(f"{source}: nfstream cannot read it ({exc})") from exc
    finally:
        if not finished:
            _stop(flows, getattr(streamer, "_mp_context", None))
    if rows and keys is not None:
        yield _distinct(nfstream_to_canonical(pd.DataFrame(rows, columns=keys), source=source), seen)


_SEEN_UIDS = 200_000  # uids a stream remembers to keep its flows' uids distinct


def _distinct(df: pd.DataFrame, seen: dict[str, int]) -> pd.DataFrame:
    """Give a flow whose uid a stream already issued a new one, derived from it and a part number.

    A uid names the first-seen millisecond and the 5-tuple; two flows of one stream share that when
    a long flow is cut by the packet cap within the millisecond it began (its parts, ``_early_export_plugin``)
    or a port pair is reused at once. The n-th repeat becomes ``N`` + sha256(uid|n), so the same capture
    still gives the same uids. ``seen`` keeps the last ``_SEEN_UIDS`` uids (insertion order).
    """
    uids = df["uid"].tolist()
    changed = False
    for i, uid in enumerate(uids):
        n = seen.get(uid, 0)
        if n:
            uids[i] = "N" + hashlib.sha256(f"{uid}|{n}".encode()).hexdigest()[:17]
            changed = True
        seen[uid] = n + 1
    if len(seen) > _SEEN_UIDS:
        for old in list(itertools.islice(seen, len(seen) - _SEEN_UIDS // 2)):
            del seen[old]
    if changed:
        df = df.copy()
        df["uid"] = uids
    return df


_DRAIN_CAP_S = 0.05  # longest a live batch keeps collecting flows that are already waiting


def _channel(tracked: Any) -> Any:
    """The meters' flow queue of a streamer (the queue nfstream's ``__iter__`` made), or None."""
    queues = list(getattr(tracked, "queues", ()))
    return queues[0] if len(queues) == 1 else None


def _drained(channel: Any) -> bool:
    try:
        return bool(channel.empty())
    except (OSError, ValueError):  # closed: nothing more will come
        return True


#: Default packet cap of a live flow (see ``_early_export_plugin``).
EARLY_PACKETS = 1000
#: Default fan-out threshold of a live source (see ``_early_export_plugin``; 0: off).
EARLY_FANOUT = 32
_FANOUT_WINDOW_MS = 1000  # the sliding window the fan-out rule counts in
_ANSWER_GRACE_MS = 200  # a flow attempt still unanswered this long after its first packet has failed
_FANOUT_SOURCES = 4096  # sources whose attempts are tracked at once (least recently active evicted)
_TAIL_KEYS = 65536  # first-packet exports remembered, so that the answer's flow is known as their tail
_TAIL_TTL_MS = 5000  # how long an answer may lag its first-packet export and still be a tail
_DUE_KEYS = 65536  # attempts waiting for their answer deadline (oldest dropped: they wait for the idle timeout)
TAIL_COLUMN = "udps.tm_tail"  # 1: a flow started by the answer to a flow exported before it was answered


class _MeterHooks:
    """State shared by the plugin and the meter hooks inside one live meter process.

    ``live`` is set by the plugin's first callback, so only a meter running ``_early_export_plugin``
    (live capture; files never use it) changes behaviour; ``key`` is the flow key of the packet being
    consumed (for the plugin to find its flow in the meter's cache again); ``fan`` the plugin's rule.
    """

    live = False
    key: Any = None
    fan: _FanOut | None = None


_HOOKS = _MeterHooks()


class _Source:
    """Fan-out state of one source address: its recent flow attempts and failures."""

    __slots__ = ("pending", "failed", "opened", "early")

    def __init__(self) -> None:
        self.pending: deque[tuple[float, Any]] = deque()  # (first packet ms, flow) not judged yet
        self.failed: deque[float] = deque()  # first-packet times of attempts that failed
        self.opened: deque[float] = deque()  # first-packet times of attempts (any outcome)
        self.early = False  # its new flows are exported at their first packet


class _FanOut:
    """The per-source rule of ``_early_export_plugin``: which new flows to export at their first packet.

    A source **enters** first-packet mode once ``threshold`` of its flow attempts (flows it started:
    a TCP SYN, any UDP or ICMP or other first packet) failed within the last second, an attempt
    having failed when the responder reset it or had not answered at all ``_ANSWER_GRACE_MS`` after
    its first packet (ICMP errors come as flows of their own, so a UDP probe to a closed port is an
    unanswered attempt). Answered attempts never count: a busy client, a proxy or a crawler opening
    hundreds of connections a second that are answered never enters. A source **stays** in the mode
    while it keeps starting ``threshold`` attempts a second (its first-packet exports cannot show
    whether they were answered), and leaves it when it slows down.

    A first-packet export leaves the rest of that conversation to a new flow; one whose first packet
    comes from the responder (a SYN/ACK, a RST, a DNS answer) is marked a *tail* (``TAIL_COLUMN``),
    and the reader turns it round so that its originator is the original one (``_turn_tails``):
    otherwise a scanned host's RSTs would read as that host probing the scanner's ports.

    Memory is bounded: at most ``_FANOUT_SOURCES`` sources (least recently active evicted), each
    with at most ``2 * threshold`` attempts kept per deque, and ``_TAIL_KEYS`` remembered exports
    (each kept ``_TAIL_TTL_MS``). Times are packet times (ms), so a replayed capture behaves the same.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.quick = max(2, threshold // 4)  # failed attempts/s after which unanswered ones leave at the deadline
        self.cap = 2 * threshold
        self.sources: OrderedDict[str, _Source] = OrderedDict()
        self.exported: OrderedDict[tuple[Any, ...], float] = OrderedDict()
        self.due: deque[tuple[float, Any, Any]] = deque()  # (answer deadline ms, cache key, flow)

    def _remember(self, key: tuple[Any, ...], now: float) -> None:
        exported = self.exported
        exported[key] = now
        exported.move_to_end(key)
        if len(exported) > _TAIL_KEYS:
            exported.popitem(last=False)

    def expire_due(self, tick: float, cache: Any, channel: Any, expire_args: tuple[Any, ...]) -> int:
        """Export the attempts still unanswered at their deadline whose source is failing; return how many.

        Called by the meter's idle scan (every 10 ms of packet time). An unanswered attempt exported
        now holds what it would hold at the idle timeout, unless an answer comes later (that answer
        starts a tail).
        """
        due, n = self.due, 0
        while due and due[0][0] <= tick:
            _, key, flow = due.popleft()
            if flow.dst2src_packets or cache.get(key) is not flow:
                continue  # answered, or already exported
            src = self.sources.get(flow.src_ip)
            if src is None:
                continue
            if not src.early:
                self._judge(src, tick)
                if len(src.failed) < self.quick:
                    continue
            del cache[key]
            channel.put(flow.expire(*expire_args))
            self._remember((flow.protocol, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port), tick)
            n += 1
        return n

    def _judge(self, src: _Source, now: float) -> None:
        pending, failed = src.pending, src.failed
        while pending and now - pending[0][0] >= _ANSWER_GRACE_MS:
            at, flow = pending.popleft()
            if flow.dst2src_packets == 0 or flow.dst2src_rst_packets > 0:
                failed.append(at)
                if len(failed) > self.cap:
                    failed.popleft()
        while failed and failed[0] < now - _FANOUT_WINDOW_MS:
            failed.popleft()

    def on_new(self, packet: Any, flow: Any) -> bool:
        """Account a flow's first packet; return True to export it at once."""
        if _HOOKS.fan is not self:  # the first packet in this meter process: the meter hooks act from now
            _HOOKS.fan, _HOOKS.live = self, True
        now = float(packet.time)
        key = (packet.protocol, packet.src_ip, packet.src_port, packet.dst_ip, packet.dst_port)
        exported = self.exported
        while exported:  # forget exports too old to have a tail
            first = next(iter(exported.values()))
            if first >= now - _TAIL_TTL_MS:
                break
            exported.popitem(last=False)
        back = (key[0], key[3], key[4], key[1], key[2])
        if back in exported:  # the responder's answer to a flow exported before it was answered
            del exported[back]
            flow.udps.tm_tail = 1
            return False
        flow.udps.tm_tail = 0
        if packet.protocol == 6 and (not packet.syn or packet.ack):
            return False  # mid-stream or a SYN/ACK: not an attempt
        sources = self.sources
        src = sources.get(packet.src_ip)
        if src is None:
            src = sources[packet.src_ip] = _Source()
            if len(sources) > _FANOUT_SOURCES:
                sources.popitem(last=False)
        else:
            sources.move_to_end(packet.src_ip)
        opened = src.opened
        opened.append(now)
        if len(opened) > self.cap:
            opened.popleft()
        while opened and opened[0] < now - _FANOUT_WINDOW_MS:
            opened.popleft()
        if src.early:
            src.early = len(opened) >= self.threshold
        else:
            self._judge(src, now)
            src.early = len(src.failed) >= self.threshold
            if src.early:
                src.pending.clear()
        if not src.early:
            if len(src.pending) < self.cap:  # full: a sample is judged, the rest is not
                src.pending.append((now, flow))
            if _HOOKS.key is not None and len(self.due) < _DUE_KEYS:
                self.due.append((now + _ANSWER_GRACE_MS, _HOOKS.key, flow))
            return False
        self._remember(key, now)
        return True


def _early_export_plugin(max_packets: int | None = EARLY_PACKETS, fanout: int | None = EARLY_FANOUT) -> Any:
    """An nfstream plugin that exports a live flow as soon as it is over or long enough to judge.

    * **RST**: a scan probe (SYN -> RST from a closed port, or SYN -> SYN/ACK -> RST from the
      scanner) and a refused or aborted connection are over at their RST;
    * **FIN close**: a TCP connection closed by both sides is over at the ACK of the second FIN (the
      flow is exported with that ACK, so no stray one-packet flow follows; a close whose last packet
      is a FIN still waits for the idle timeout). Each login attempt of a brute force is such a
      connection;
    * **packet cap**: a flow is exported once it has ``max_packets`` packets (both directions; None:
      never). A flood from one port pair or a bulk transfer is then judged while it goes on.

    nfstream would otherwise hold a finished flow until ``idle_timeout`` (whole seconds, at least 1)
    passed, and a long one until ``active_timeout``. A flow cut by the packet cap continues as a new
    flow with the same 5-tuple and a later first-seen time (so a new uid): its packets and bytes are
    not counted twice, the parts add up to the whole (the behaviour detectors sum packets per victim,
    so floods read the same), and the continuation has no handshake, so its ``conn_state`` reads
    mid-stream (``OTH``), as Zeek labels a connection it joined late;
    * **fan-out** (``fanout`` attempts; None or 0: off): once a source's flow attempts fail at a
      scan's or a flood's rate, each further flow it starts is exported at its first packet
      (``_FanOut``): a probe that gets no answer at all (a filtered port, an open or filtered UDP
      port, a SYN flood's SYNs to a victim that no longer answers) would otherwise wait for the
      idle timeout. (A flood a victim still answers ends each flow at the flooder's RST: RST rule.)
      docs/pipeline.md says more.
    """
    nfs = _nfstream()
    cap = max_packets if max_packets is not None and max_packets > 0 else None
    fan = _FanOut(fanout) if fanout is not None and fanout > 0 else None

    class EarlyExport(nfs.NFPlugin):  # type: ignore[misc,name-defined]
        def on_init(self, packet: Any, flow: Any) -> None:
            first = fan is not None and fan.on_new(packet, flow)
            if packet.rst or first:
                flow.expiration_id = -1

        def on_update(self, packet: Any, flow: Any) -> None:
            if packet.rst:
                flow.expiration_id = -1
            elif (packet.ack and not packet.fin and not packet.syn and packet.payload_size == 0
                  and flow.src2dst_fin_packets > 0 and flow.dst2src_fin_packets > 0):
                flow.expiration_id = -1  # the ACK of the second FIN: the connection is closed
            elif cap is not None and flow.bidirectional_packets >= cap:
                flow.expiration_id = -1

    return EarlyExport()


def _check_batch(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def iter_pcap(
    path: Path | str, batch_size: int = 10_000, *, allow_truncated: bool = False, bpf_filter: str | None = None
) -> Generator[pd.DataFrame, None, None]:
    """Yield canonical flow batches from a pcap/pcapng file without loading the whole capture.

    Flows are emitted when nfstream expires them (idle 120 s, active 1800 s, or end of file), so a
    batch holds flows in expiry order, not start order. The file is structure-checked first (see the
    module docstring); ``allow_truncated=True`` logs a warning and meters the readable part instead.
    """
    _check_batch(batch_size)
    p = Path(path)
    try:
        check_capture(p)
    except InputError:
        if not allow_truncated:
            raise
        log.warning("%s: capture is truncated or corrupt; metering the readable part", p)
    try:
        streamer = _streamer(str(p), bpf_filter=bpf_filter)
    except ValueError as exc:  # nfstream: "unknown file format", bad BPF filter, ...
        raise InputError(f"{p}: nfstream cannot read it ({exc})") from exc
    yield from _iter_streamer(streamer, batch_size, str(p))


def read_pcap(path: Path | str, *, allow_truncated: bool = False, bpf_filter: str | None = None) -> pd.DataFrame:
    """Read a whole pcap/pcapng file into one canonical flow DataFrame (sorted by ``ts``)."""
    batches = list(iter_pcap(path, 50_000, allow_truncated=allow_truncated, bpf_filter=bpf_filter))
    if not batches:
        return empty_canonical()
    df = pd.concat(batches, ignore_index=True) if len(batches) > 1 else batches[0]
    return df.sort_values(["ts", "uid"], kind="stable").reset_index(drop=True)


def iter_interface(
    interface: str,
    batch_size: int = 1_000,
    *,
    bpf_filter: str | None = None,
    idle_timeout: int = 120,
    active_timeout: int = 1800,
    max_delay_s: float | None = 0.0,
    early_export: bool = True,
    early_packets: int | None = EARLY_PACKETS,
    early_fanout: int | None = EARLY_FANOUT,
) -> Generator[pd.DataFrame, None, None]:
    """Yield canonical flow batches metered live from a network interface (needs capture rights).

    Same mapping as ``iter_pcap``; runs until the caller stops iterating. Call ``close()`` on the
    generator (or let it be garbage-collected) to stop nfstream's capture process. A flow is
    emitted when it has been idle ``idle_timeout`` seconds (or ran ``active_timeout``); a batch is
    released when full, as soon as no further flow is waiting in the meter's queue, or once its
    oldest flow has waited ``max_delay_s`` (0: 50 ms) while flows kept coming (None: only full
    batches). So a lone flow is never held back and a burst is converted in one batch.
    ``early_export`` (default) also emits a TCP flow the moment a RST or a two-sided FIN close ends
    it, any flow once it has ``early_packets`` packets, and each new flow of a source whose attempts
    fail at ``early_fanout`` a second at its first packet (``_early_export_plugin``; None or 0: no
    fan-out rule), without waiting for the timeouts.
    """
    _check_batch(batch_size)
    if not interface or "/" in interface:
        raise ValueError(f"interface must be an interface name, got {interface!r}")
    _install_short_read_timeout()
    if early_export:
        _install_meter_hooks()
    try:
        plugin = _early_export_plugin(early_packets, early_fanout) if early_export else None
        extra: dict[str, Any] = {"udps": [plugin]} if plugin is not None else {}
        streamer = _streamer(
            interface, bpf_filter=bpf_filter, idle_timeout=idle_timeout, active_timeout=active_timeout, **extra
        )
    except (ValueError, OSError, PermissionError) as exc:
        raise InputError(f"interface {interface!r}: cannot capture ({exc})") from exc
    yield from _iter_streamer(streamer, batch_size, f"interface {interface}", max_delay_s)
