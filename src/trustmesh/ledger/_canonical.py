"""RFC 8785 (JCS) canonical JSON, fast: the C ``json`` encoder wherever its output is already canonical.

Python's encoder with sorted keys, no whitespace and ``ensure_ascii=False`` writes exactly the JCS
bytes for strings, integers, booleans, null, arrays and objects whose keys lie in the Basic
Multilingual Plane (JCS sorts keys by UTF-16 code units, Python by code points: the two orders agree
there). Numbers differ only for floats: ECMAScript writes an integral double as an integer ("1", not
"1.0") and switches to exponents at other bounds than ``repr``. So one pass over the value copies it,
turns integral floats into integers and checks every other float lies where ``repr`` equals the
ECMAScript form (1e-4 <= |x| < 1e16); anything else (a key outside the BMP, a float outside that
range, an integer beyond +-(2^53-1), a non-JSON type, NaN, deep nesting) is handed to the reference
implementation (``rfc8785``), which writes it or raises as before. The result is byte-identical to
``rfc8785.dumps`` (a property test compares the two on random documents).
"""

from __future__ import annotations

import json
from typing import Any, Final

import rfc8785

__all__ = ["canonical_dumps"]

_MAX_SAFE: Final = 2**53 - 1
_MAX_DEPTH: Final = 200  # deeper values go to the reference implementation (the C encoder recurses on the C stack)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False,
                           check_circular=False).encode


class _Slow(Exception):
    """The value needs the reference implementation."""


def _norm(v: Any, depth: int) -> Any:
    t = type(v)
    if t is str:
        return v
    if t is dict:
        if depth > _MAX_DEPTH:
            raise _Slow
        out = {}
        for k, x in v.items():
            if type(k) is not str or (not k.isascii() and max(k) > "\uffff"):
                raise _Slow
            out[k] = _norm(x, depth + 1)
        return out
    if t is int:
        if -_MAX_SAFE <= v <= _MAX_SAFE:
            return v
        raise _Slow
    if t is float:
        if v.is_integer():
            if -_MAX_SAFE <= v <= _MAX_SAFE:
                return int(v)  # ECMAScript: 1.0 -> "1" (and -0.0 -> "0")
            raise _Slow
        if 1e-4 <= abs(v) < 1e16:  # repr's shortest digits, without an exponent, as ECMAScript writes them
            return v
        raise _Slow  # NaN and infinities fail the comparison too
    if t is list or t is tuple:
        if depth > _MAX_DEPTH:
            raise _Slow
        return [_norm(x, depth + 1) for x in v]
    if v is None or t is bool:
        return v
    raise _Slow


def canonical_dumps(value: Any) -> tuple[bytes, Any]:
    """Return the RFC 8785 bytes of ``value`` and a plain copy of it (what ``json.loads`` of them gives).

    Raises what ``rfc8785.dumps`` raises for a value JCS cannot represent.
    """
    try:
        copy = _norm(value, 0)
        return _encode(copy).encode("utf-8"), copy
    except (_Slow, UnicodeEncodeError, RecursionError):
        raw = rfc8785.dumps(value)
        return raw, json.loads(raw)
