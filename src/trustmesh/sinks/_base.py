"""The sink protocol, per-sink delivery counters, and the fan-out that never lets one sink stop a run."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from trustmesh.errors import SinkError, TrustmeshError

__all__ = ["KINDS", "Sink", "SinkSet", "SinkStats", "doc_kind", "redact_url"]

log = logging.getLogger(__name__)

#: Document kinds a sink can take: ECS alerts and incident versions (``event.dataset`` trustmesh.<kind>).
KINDS = ("alert", "incident")


def doc_kind(doc: Mapping[str, Any]) -> str:
    """Return ``alert`` or ``incident`` for an ECS document made by :mod:`trustmesh._ecs`."""
    dataset = str(doc.get("event", {}).get("dataset", ""))
    return dataset.removeprefix("trustmesh.") if dataset.startswith("trustmesh.") else "alert"


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """Return ``url`` without a password (``redis://:secret@host`` -> ``redis://:***@host``).

    ``keep_path=False`` also drops the path and query (``https://hooks.example.org/…``): webhook URLs
    often carry their secret token there.
    """
    text = re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
    if not keep_path:
        m = re.match(r"^([a-z][a-z0-9+.-]*://[^/?#]*)(.*)$", text, re.I)
        if m and m.group(2) not in ("", "/"):
            text = m.group(1) + "/…"
    return text


@runtime_checkable
class Sink(Protocol):
    """An output for ECS documents. ``emit`` raises :class:`SinkError` when a delivery fails."""

    @property
    def name(self) -> str:
        """A short label for logs and counters, without secrets (``syslog udp://127.0.0.1:514``)."""
        ...

    def emit(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Deliver every document (in order), or raise SinkError naming what failed."""
        ...

    def close(self) -> None:
        """Flush and release files, sockets and connections."""
        ...


@dataclass(slots=True)
class SinkStats:
    """What one sink delivered and what it failed (failures are counted per document)."""

    sent: int = 0
    failed: int = 0
    errors: int = 0  # emit calls that raised
    last_error: str | None = None
    last_error_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready copy."""
        return {"sent": self.sent, "failed": self.failed, "errors": self.errors, "last_error": self.last_error,
                "last_error_time": self.last_error_time}  # fmt: skip


@dataclass(slots=True)
class _Entry:
    sink: Sink
    kinds: frozenset[str]
    stats: SinkStats = field(default_factory=SinkStats)


class SinkSet:
    """Fan documents out to several sinks; a failing sink is counted and skipped, never fatal.

    ``publish`` returns the error messages of this call (one per failing sink, already free of
    secrets) so the caller can record them; the totals are in :meth:`stats`.
    """

    def __init__(self, sinks: Iterable[tuple[Sink, Iterable[str]]] = (), *, clock: Any = time.time) -> None:
        self._entries = [_Entry(s, frozenset(k)) for s, k in sinks]
        for e in self._entries:
            unknown = sorted(e.kinds - set(KINDS))
            if unknown:
                raise ValueError(f"sink {e.sink.name}: unknown kind(s) {unknown}; known: {list(KINDS)}")
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        """The sinks' labels, in configuration order."""
        return [e.sink.name for e in self._entries]

    def publish(self, docs: Sequence[Mapping[str, Any]]) -> list[str]:
        """Give each sink the documents of the kinds it takes; return this call's error messages."""
        problems: list[str] = []
        if not docs:
            return problems
        kinds = [doc_kind(d) for d in docs]
        for e in self._entries:
            mine = [d for d, k in zip(docs, kinds, strict=True) if k in e.kinds]
            if not mine:
                continue
            try:
                e.sink.emit(mine)
            except SinkError as exc:
                self._fail(e, mine, str(exc), problems)
            except (TrustmeshError, OSError, ValueError) as exc:  # a sink bug or OS refusal: still not fatal
                self._fail(e, mine, f"{type(exc).__name__}: {exc}", problems)
            else:
                e.stats.sent += len(mine)
        return problems

    def _fail(self, e: _Entry, docs: Sequence[Mapping[str, Any]], message: str, problems: list[str]) -> None:
        partial = getattr(e.sink, "last_delivered", 0) or 0  # sinks that deliver one by one report how many went
        partial = max(0, min(int(partial), len(docs)))
        e.stats.sent += partial
        e.stats.failed += len(docs) - partial
        e.stats.errors += 1
        e.stats.last_error, e.stats.last_error_time = message, float(self._clock())
        text = f"sink {e.sink.name}: {message}"
        log.warning("%s", text)
        problems.append(text)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Return each sink's counters by name."""
        return {e.sink.name: e.stats.to_dict() for e in self._entries}

    def close(self) -> None:
        """Close every sink; a sink that fails to close is logged, the others still close."""
        for e in self._entries:
            try:
                e.sink.close()
            except (TrustmeshError, OSError) as exc:
                log.warning("sink %s: close failed: %s", e.sink.name, exc)
