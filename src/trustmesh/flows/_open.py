"""Open flow sources from their specs: paths, live interfaces, followed logs and Redis streams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from trustmesh.errors import InputError
from trustmesh.flows._records import BadRecordLog
from trustmesh.flows._redis import RedisStreamSource, parse_redis_spec
from trustmesh.flows._schema import empty_canonical
from trustmesh.flows._sources import FlowSource, InterfaceSource, detect_kind, follow_source, open_source
from trustmesh.flows._suricata_alerts import iter_eve_alerts

__all__ = ["LazySource"]


class LazySource:
    """A source named by a spec, opened only when iterated (so a bad file fails where the run reaches it).

    ``spec`` is a path (pcap, Zeek folder/log, EVE file, flow table), ``iface:NAME`` (live capture),
    ``follow:PATH`` (tail a growing log) or ``redis://HOST:PORT/STREAM?group=G`` (a stream). Records
    the source skips land in ``bad_records``; ``acknowledge`` passes a frame's token on to the opened
    source (a stream XACKs its records); ``streaming`` says whether it never ends on its own.
    """

    def __init__(self, spec: str, idle_timeout: int = 1, active_timeout: int = 30,
                 early_packets: int | None = 1000, early_fanout: int | None = 32) -> None:
        self.spec, self.idle_timeout, self.active_timeout = spec, idle_timeout, active_timeout
        self.early_packets = early_packets  # live capture: packets after which a flow is exported
        self.early_fanout = early_fanout  # live capture: failed attempts/s after which flows leave at once
        self._inner: FlowSource | None = None
        self.bad_records = BadRecordLog()  # records the source skipped; Pipeline.run drains them

    @property
    def name(self) -> str:
        if self.spec.startswith(("redis://", "rediss://")):
            try:
                return parse_redis_spec(self.spec).name  # never the password
            except InputError:
                return self.spec.split("@")[-1]
        return self.spec

    @property
    def streaming(self) -> bool:
        return self.spec.startswith(("iface:", "follow:", "redis://", "rediss://"))

    def acknowledge(self, token: Any) -> None:
        """Pass a frame's acknowledgement on to the opened source (a stream XACKs its records)."""
        ack = getattr(self._inner, "acknowledge", None)
        if callable(ack):
            ack(token)

    def iter_batches(self, batch_size: int = 1024) -> Iterator[pd.DataFrame]:
        if self.spec.startswith(("redis://", "rediss://")):
            source: FlowSource = RedisStreamSource(self.spec, bad_records=self.bad_records)
        elif self.spec.startswith("iface:"):
            source = InterfaceSource(self.spec[len("iface:"):], idle_timeout=self.idle_timeout,
                                     active_timeout=self.active_timeout, early_packets=self.early_packets,
                                     early_fanout=self.early_fanout)
        elif self.spec.startswith("follow:"):
            source = follow_source(self.spec[len("follow:"):], on_bad_record=self.bad_records)
        else:
            if not Path(self.spec).exists():
                raise InputError(f"{self.spec}: source not found")
            source = open_source(self.spec, on_bad_record=self.bad_records)
        self._inner = source
        yield from source.iter_batches(batch_size)
        if not self.spec.startswith(("iface:", "follow:")) and detect_kind(self.spec) == "suricata":
            # the file's EVE alert events, after its flows: fusion then finds the model's verdict on each flow
            for signatures in iter_eve_alerts(self.spec, batch_size, source_name=self.spec):
                carrier = empty_canonical()
                carrier.attrs["suricata_alerts"] = signatures
                yield carrier
