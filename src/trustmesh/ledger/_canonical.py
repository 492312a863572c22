"""RFC 8785 (JCS) canonical JSON, fast: the C ``json`` encoder wherever its output is already canonical.

Python's encoder with sorted keys, no whitespace and ``ensure_ascii=False`` writes exactly the JCS
bytes for strings, integers, booleans, null, arrays and objects whose keys lie in the Basic
Multilingual Plane (JCS sorts keys by UTF-16 code units, Python by code points: the two orders agree
there). Numbers differ only for floats: ECMAScript writes an integral double as an integer ("1", not
"1.0") and switches to exponents at other bounds than ``repr``. So one pass over the value copies it,
turns integral floats into integers, keeps floats where ``repr`` equals the ECMAScript form
(1e-4 <= |x| < 1e16) and puts a placeholder string for any other float, replaced in the output by
its ECMAScript form (:func:`es6_number`; the placeholder carries a random per-process tag, and the
output must hold exactly as many as were put in). Anything else (a key outside the BMP, an integer
beyond +-(2^53-1), a non-JSON type, NaN, deep nesting) is handed to the reference implementation
(``rfc8785``), which writes it or raises as before. The result is byte-identical to
``rfc8785.dumps`` (a property test compares the two on random documents).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, Final

import rfc8785

__all__ = ["canonical_dumps", "canonical_dumps_owned"]

_MAX_SAFE: Final = 2**53 - 1
_INF: Final = float("inf")
_MAX_DEPTH: Final = 200  # deeper values go to the reference implementation (the C encoder recurses on the C stack)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False,
                           check_circular=False).encode


# Owned values (canonical_dumps_owned): what in the C encoder's output may differ from JCS. A float
# repr writes with an exponent ("1e-05", "1e+16") or as an integer ("1.0") always shows one of the
# first two patterns; an integer token of 16 or more digits may lie beyond +-(2^53-1) (third check).
# Inside strings these are false alarms, which only send the value the general way.
_EXPONENT: Final = re.compile(rb"e[-+][0-9]")  # a float's when a digit precedes it (base64 text has "e+" too)
_DIGITS: Final = frozenset(b"0123456789")
_INTEGRAL: Final = re.compile(rb"\.0[,}\]]")
# integers: digits -> "0", the bytes that may precede a number (":", ",", "[") -> ":", "-" kept, the rest "x";
# a number token of 16+ digits then shows as ":" or ":-" and 16 zeros
_SHAPES: Final = bytes(ord("0") if 48 <= b <= 57 else ord(":") if b in b":,[" else
                       ord("-") if b == ord("-") else ord("x") for b in range(256))
_LONG_INT: Final = (b":" + b"0" * 16, b":-" + b"0" * 16)
_ASTRAL: Final = re.compile("[\U00010000-\U0010ffff]")  # keys there sort otherwise (UTF-16 order)

_TAG: Final = "\x00tm" + secrets.token_hex(8) + ":"  # never written by the encoder for a caller's string
_TAG_OUT: Final = json.dumps(_TAG).encode()[:-1]  # its encoded form, without the closing quote


class _Slow(Exception):
    """The value needs the reference implementation."""


def es6_number(x: float) -> str:
    """Return a finite double as ECMAScript's Number.prototype.toString writes it (RFC 8785 3.2.2.3)."""
    if x == 0:
        return "0"
    text = repr(abs(x))
    mant, _, exp = text.partition("e")
    whole, _, frac = mant.partition(".")
    if frac == "0":
        frac = ""
    digits = (whole + frac).lstrip("0")
    n = len(whole) + (int(exp) if exp else 0) - (len(whole + frac) - len(digits) if whole == "0" else 0)
    digits = digits.rstrip("0")
    k = len(digits)
    sign = "-" if x < 0 else ""
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    return sign + digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))


def _float(v: float, odd: list[float]) -> Any:
    if v.is_integer():
        if -_MAX_SAFE <= v <= _MAX_SAFE:
            return int(v)  # ECMAScript: 1.0 -> "1" (and -0.0 -> "0")
        raise _Slow
    if 1e-4 <= abs(v) < 1e16:  # repr's shortest digits, without an exponent, as ECMAScript writes them
        return v
    if v != v or v in (_INF, -_INF):
        raise _Slow  # the reference implementation refuses them
    odd.append(v)
    return _TAG + str(len(odd) - 1)


def _norm(v: Any, depth: int, odd: list[float]) -> Any:
    """Return a plain copy of ``v`` ready for the C encoder (strings and small ints pass inline)."""
    t = type(v)
    if t is dict:
        if depth > _MAX_DEPTH:
            raise _Slow
        out = {}
        for k, x in v.items():
            if type(k) is not str or (not k.isascii() and max(k) > "\uffff"):
                raise _Slow
            tx = type(x)
            if tx is str or (tx is int and -_MAX_SAFE <= x <= _MAX_SAFE) or x is None or tx is bool:
                out[k] = x
            elif tx is float:
                out[k] = _float(x, odd)
            else:
                out[k] = _norm(x, depth + 1, odd)
        return out
    if t is list or t is tuple:
        if depth > _MAX_DEPTH:
            raise _Slow
        items = []
        for x in v:
            tx = type(x)
            if tx is str or (tx is int and -_MAX_SAFE <= x <= _MAX_SAFE) or x is None or tx is bool:
                items.append(x)
            elif tx is float:
                items.append(_float(x, odd))
            else:
                items.append(_norm(x, depth + 1, odd))
        return items
    if t is str or v is None or t is bool:
        return v
    if t is int:
        if -_MAX_SAFE <= v <= _MAX_SAFE:
            return v
        raise _Slow
    if t is float:
        return _float(v, odd)
    raise _Slow


def canonical_dumps(value: Any) -> tuple[bytes, Any]:
    """Return the RFC 8785 bytes of ``value`` and a plain copy of it (what ``json.loads`` of them gives).

    Raises what ``rfc8785.dumps`` raises for a value JCS cannot represent.
    """
    try:
        odd: list[float] = []
        copy = _norm(value, 0, odd)
        raw = _encode(copy).encode("utf-8")
        if odd:  # floats repr writes otherwise than ECMAScript: put their ECMAScript form in
            parts = raw.split(_TAG_OUT)
            if len(parts) != len(odd) + 1:
                raise _Slow
            out = [parts[0]]
            for part in parts[1:]:
                num, _, rest = part.partition(b'"')
                out.append(es6_number(odd[int(num)]).encode("ascii") + rest)
            raw = b"".join(out)
            copy = json.loads(raw)
        return raw, copy
    except (_Slow, UnicodeEncodeError, RecursionError, ValueError):
        raw = rfc8785.dumps(value)
        return raw, json.loads(raw)


def canonical_dumps_owned(value: Any) -> tuple[bytes, Any]:
    """Return what :func:`canonical_dumps` returns, without copying a value the caller owns.

    For values built only of exact ``dict`` (``str`` keys), ``list``, ``str``, ``int``, ``float``,
    ``bool`` and ``None`` (what the pipeline's own builders make: ECS documents, incidents, records
    read back from JSON). The C encoder writes such a value straight away; its output is RFC 8785 as
    it stands unless it holds a float written with an exponent or as an integer (``1.0``), a long
    integer, or a character outside the Basic Multilingual Plane, which a scan of the bytes finds
    (texts inside strings that look like these are false alarms: the value then takes the general
    path). When the output stands, the second item is ``value`` itself (no copy: the caller must not
    change it afterwards); otherwise both come from :func:`canonical_dumps`. Tuples, subclasses and
    non-``str`` keys are outside the contract: the C encoder would write a tuple as a list (right
    bytes, but the value is then not what ``json.loads`` gives) and a key ``1`` as ``"1"``, which the
    reference refuses. Untrusted input takes :func:`canonical_dumps`.
    """
    try:
        text = _encode(value)
        if not text.isascii() and _ASTRAL.search(text):
            raise _Slow
        raw = text.encode("utf-8")
    except (_Slow, TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return canonical_dumps(value)
    if _INTEGRAL.search(raw) or any(raw[m.start() - 1] in _DIGITS for m in _EXPONENT.finditer(raw)):
        return canonical_dumps(value)
    shapes = raw.translate(_SHAPES)
    if _LONG_INT[0] in shapes or _LONG_INT[1] in shapes:
        return canonical_dumps(value)
    return raw, value
