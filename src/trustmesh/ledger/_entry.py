"""Typed ledger entries, serialised as RFC 8785 canonical JSON."""

from __future__ import annotations

import json
import math
import time as _time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import rfc8785

from trustmesh.errors import InputError
from trustmesh.ledger._canonical import canonical_dumps, canonical_dumps_owned

__all__ = ["MAX_ENTRY_BYTES", "Entry"]

# tlog-tiles entry bundles length-prefix each entry with a big-endian uint16, so an entry is at most
# 65535 bytes; larger payloads (model files) go to the blob store and the entry carries their hash.
MAX_ENTRY_BYTES: Final = 65535
MAX_KIND_CHARS: Final = 128
MAX_REFS: Final = 1024
_FIELDS: Final = frozenset({"kind", "payload", "refs", "time"})


_KINDS_SEEN: set[str] = set()  # kinds already checked (a run uses a handful)


def _check_kind(kind: Any) -> str:
    if type(kind) is str and kind in _KINDS_SEEN:
        return kind
    if not isinstance(kind, str) or not kind:
        raise InputError(f"entry.kind must be a non-empty string, got {kind!r}")
    if len(kind) > MAX_KIND_CHARS or any(ord(c) < 0x20 or c.isspace() for c in kind):
        raise InputError(f"entry.kind must be at most {MAX_KIND_CHARS} characters without spaces or "
                         f"control characters, got {kind[:40]!r}")
    if type(kind) is str and len(_KINDS_SEEN) < 256:
        _KINDS_SEEN.add(kind)
    return kind


def _check_time(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"entry.time must be a number of seconds since the epoch, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out < 0:
        raise InputError(f"entry.time must be finite and >= 0, got {value!r}")
    return out


def _check_refs(refs: Any) -> tuple[int, ...]:
    if isinstance(refs, str | bytes) or not isinstance(refs, Iterable):
        raise InputError(f"entry.refs must be a list of leaf indices, got {refs!r}")
    out = tuple(refs)
    if len(out) > MAX_REFS:
        raise InputError(f"entry.refs may hold at most {MAX_REFS} indices, got {len(out)}")
    for r in out:
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise InputError(f"entry.refs must hold non-negative integers, got {r!r}")
    return out


def _encode(dumps: Callable[[Any], tuple[bytes, Any]], doc: dict[str, Any]) -> tuple[bytes, Any]:
    """Canonical bytes and plain copy of an entry document; one clear error if it cannot be an entry."""
    try:
        raw, plain = dumps(doc)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"entry.payload is not canonical-JSON representable: {exc}") from None
    if len(raw) > MAX_ENTRY_BYTES:
        raise InputError(
            f"entry is {len(raw)} bytes, more than {MAX_ENTRY_BYTES}; store large data with "
            "Ledger.put_blob() and put its sha256 in the payload"
        )
    return raw, plain


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: a typed record with optional references to earlier leaf indices.

    The canonical bytes (RFC 8785 JSON of ``{"kind", "payload", "refs", "time"}``) are computed once
    at construction, which also validates the payload (JSON-representable, integers within
    +-(2^53-1), at most 65535 bytes in all). The leaf hash is ``SHA-256(0x00 || to_bytes())``.
    """

    kind: str
    payload: dict[str, Any]
    time: float = field(default_factory=_time.time)
    refs: tuple[int, ...] = ()
    _bytes: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        if not isinstance(self.payload, dict):
            raise InputError(f"entry.payload must be a JSON object, got {type(self.payload).__name__}")
        object.__setattr__(self, "time", _check_time(self.time))
        object.__setattr__(self, "refs", _check_refs(self.refs))
        doc: dict[str, Any] = {"kind": self.kind, "payload": self.payload, "refs": list(self.refs), "time": self.time}
        raw, plain = _encode(canonical_dumps, doc)
        object.__setattr__(self, "_bytes", raw)
        # Keep a private copy so later mutation of the caller's dict cannot desynchronise the bytes.
        object.__setattr__(self, "payload", plain["payload"])

    def __hash__(self) -> int:
        return hash(self._bytes)  # the payload dict is unhashable; the canonical bytes identify the entry

    def to_bytes(self) -> bytes:
        """Return the RFC 8785 canonical JSON bytes that the log hashes."""
        return self._bytes

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form (what to_bytes encodes)."""
        return {"kind": self.kind, "payload": self.payload, "refs": list(self.refs), "time": self.time}

    @classmethod
    def owned(cls, kind: str, payload: dict[str, Any], *, time: float, refs: Iterable[int] = ()) -> Entry:
        """Build an entry from a payload the caller made and hands over (no private copy is taken).

        The same entry as ``Entry(kind, payload, time, refs)``, byte for byte, for payloads built only
        of exact ``dict`` (``str`` keys), ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``:
        what the pipeline's builders make (ECS alert documents, incidents, response records read back
        from JSON). Such a payload is encoded once by the C encoder and the bytes are checked for what
        could differ from RFC 8785 (:func:`~trustmesh.ledger._canonical.canonical_dumps_owned`); when
        nothing does, the entry keeps ``payload`` itself, so the caller must not change it afterwards.
        Anything else (an integral or tiny float, a long integer, a key outside the Basic Multilingual
        Plane) takes the general path and the entry keeps a normalised copy, as the constructor does.
        Untrusted input (``ledger serve``, :meth:`from_dict`) goes through the constructor.
        """
        _check_kind(kind)
        if type(payload) is not dict:
            raise InputError(f"entry.payload must be a JSON object, got {type(payload).__name__}")
        when = _check_time(time)
        refs_t = _check_refs(refs)
        raw, plain = _encode(canonical_dumps_owned,
                             {"kind": kind, "payload": payload, "refs": list(refs_t), "time": when})
        entry = object.__new__(cls)
        for name, value in (("kind", kind), ("payload", plain["payload"]), ("time", when), ("refs", refs_t),
                            ("_bytes", raw)):
            object.__setattr__(entry, name, value)
        return entry

    @classmethod
    def from_dict(cls, doc: Any, *, default_time: float | None = None) -> Entry:
        """Build an entry from a submitted JSON object (``time`` and ``refs`` optional)."""
        if not isinstance(doc, dict):
            raise InputError(f"entry must be a JSON object, got {type(doc).__name__}")
        extra = set(doc) - _FIELDS
        if extra:
            raise InputError(f"entry has unknown field(s) {sorted(extra)}; allowed: {sorted(_FIELDS)}")
        for name in ("kind", "payload"):
            if name not in doc:
                raise InputError(f"entry is missing the field {name!r}")
        when = doc.get("time", _time.time() if default_time is None else default_time)
        return cls(kind=doc["kind"], payload=doc["payload"], time=when, refs=_check_refs(doc.get("refs", ())))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Entry:
        """Parse canonical entry bytes; reject anything that is not exactly what to_bytes would give."""
        if not isinstance(raw, bytes | bytearray):
            raise InputError(f"entry bytes must be bytes, got {type(raw).__name__}")
        if len(raw) > MAX_ENTRY_BYTES:
            raise InputError(f"entry is {len(raw)} bytes, more than {MAX_ENTRY_BYTES}")
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"entry is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or set(doc) != _FIELDS:
            raise InputError(f"entry must be an object with exactly the fields {sorted(_FIELDS)}")
        _check_kind(doc["kind"])
        if not isinstance(doc["payload"], dict):
            raise InputError("entry.payload must be a JSON object")
        if not isinstance(doc["refs"], list):
            raise InputError("entry.refs must be a list")
        when, refs = _check_time(doc["time"]), _check_refs(doc["refs"])
        try:
            canonical = canonical_dumps(doc)[0]
        except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
            raise InputError(f"entry is not canonical-JSON representable: {exc}") from None
        if canonical != bytes(raw):
            raise InputError("entry bytes are not RFC 8785 canonical JSON")
        # Valid and canonical: build without re-encoding (doc is a fresh object nobody else holds).
        entry = object.__new__(cls)
        for name, value in (("kind", doc["kind"]), ("payload", doc["payload"]), ("time", when),
                            ("refs", refs), ("_bytes", canonical)):
            object.__setattr__(entry, name, value)
        return entry
