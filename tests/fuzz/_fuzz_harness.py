"""The fuzz harness: mutate real records and files, feed them to a parser, allow only clean outcomes.

A case is clean when the parser returns, or raises a ``TrustmeshError`` whose message is one
non-empty line. Anything else (``KeyError``, ``ValueError``, ``RecursionError``, a numpy cast
error, ...) is a bug: the case fails with the input and the traceback.

Budget: ``TRUSTMESH_FUZZ_EXAMPLES`` scales every parser's example count (default 1.0 = the CI size,
bounded so the whole suite stays within ~2.5 min on 2 cores; ``TRUSTMESH_FUZZ_EXAMPLES=20`` for a
long run). ``TRUSTMESH_FUZZ_REPORT=FILE`` appends one JSON line per parser with its counts.
"""

from __future__ import annotations

import json
import os
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from trustmesh.errors import TrustmeshError

#: hostile tokens spliced into records: overflowing and non-finite numbers, wrong types, deep nesting
HOSTILE_NUMBERS = ["1e400", "-1e400", "inf", "-inf", "nan", "NaN", "Infinity", "-1", "65536", "99999999999999999999",
                   "-9223372036854775809", "1.5", "0x50", "", "-", "(empty)", "1e308", "1.8e308", "true", "null",
                   "[]", "{}", '"80"', "9" * 5000]
HOSTILE_TEXT = ["\x00", "\ufeff", "\u00a0", "\u2028", "é", "\ud800", "\t", "\n", "\r", " ", "#", "{", "}", "[", "]",
                '"', "\\", "\\x", "&a", "*a", "!!python/object:os.system", "'", ",", ";", "%s", "A" * 70000]


def scale() -> float:
    try:
        return max(0.01, float(os.environ.get("TRUSTMESH_FUZZ_EXAMPLES", "1")))
    except ValueError:
        return 1.0


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for one parser: ``examples`` scaled by TRUSTMESH_FUZZ_EXAMPLES, no deadline."""
    return settings(max_examples=max(1, int(examples * scale())), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), derandomize=os.environ.get("CI") is not None)


class Tally:
    """Count cases per parser: parsed, refused with a TrustmeshError, and bugs (any other exception)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: Counter[str] = Counter()
        self.bugs: Counter[str] = Counter()
        self.seconds = 0.0

    def report(self) -> None:
        path = os.environ.get("TRUSTMESH_FUZZ_REPORT")
        if not path:
            return
        doc = {"parser": self.name, "cases": sum(self.counts.values()), **self.counts,
               "distinct_bugs": len(self.bugs), "bugs": dict(self.bugs),
               "seconds": round(self.seconds, 2)}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, sort_keys=True) + "\n")


_TALLIES: dict[str, Tally] = {}


def tally_for(name: str) -> Tally:
    """Return the session's tally for one parser (reported at the end when TRUSTMESH_FUZZ_REPORT is set)."""
    return _TALLIES.setdefault(name, Tally(name))


def report_all() -> None:
    """Append every parser's counts to the TRUSTMESH_FUZZ_REPORT file."""
    for t in _TALLIES.values():
        t.report()


def expect_clean(tally: Tally, fn: Callable[[], Any], sample: object) -> Any:
    """Run ``fn``; a TrustmeshError with a one-line message is fine, anything else fails the case."""
    started = time.perf_counter()
    try:
        return _run_case(tally, fn, sample)
    finally:
        tally.seconds += time.perf_counter() - started


def _run_case(tally: Tally, fn: Callable[[], Any], sample: object) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # library warnings are not failures of the parser
            out = fn()
    except TrustmeshError as exc:
        msg = str(exc)
        if not msg.strip() or "\n" in msg.strip() or "Traceback" in msg:
            tally.bugs[f"{type(exc).__name__}: message not one line"] += 1
            raise AssertionError(f"{tally.name}: error message is not one clear line: {msg!r}") from exc
        tally.counts["refused"] += 1
        return None
    except Exception as exc:  # noqa: BLE001 - this is what the fuzz hunts for
        where = traceback.extract_tb(exc.__traceback__)[-1]
        key = f"{type(exc).__name__} at {os.path.basename(where.filename)}:{where.lineno}"
        tally.bugs[key] += 1
        shown = repr(sample)
        raise AssertionError(f"{tally.name}: traceback on input {shown[:600]}{'...' if len(shown) > 600 else ''}:\n"
                             f"{''.join(traceback.format_exception(exc))[-3000:]}") from None
    tally.counts["parsed"] += 1
    return out


@st.composite
def mutated_lines(draw: st.DrawFn, lines: list[str], sep: str) -> list[str]:
    """Pick a few lines of a real file and mutate fields, bytes, structure or line count."""
    out = list(lines)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["field-number", "field-text", "drop-field", "add-field", "truncate", "dup",
                                   "delete", "char", "swap-header"]))
        parts = out[i].split(sep) if sep else [out[i]]
        if op == "field-number" and parts:
            parts[draw(st.integers(0, len(parts) - 1))] = draw(st.sampled_from(HOSTILE_NUMBERS))
            out[i] = sep.join(parts)
        elif op == "field-text" and parts:
            j = draw(st.integers(0, len(parts) - 1))
            parts[j] = parts[j] + draw(st.sampled_from(HOSTILE_TEXT))
            out[i] = sep.join(parts)
        elif op == "drop-field" and len(parts) > 1:
            del parts[draw(st.integers(0, len(parts) - 1))]
            out[i] = sep.join(parts)
        elif op == "add-field":
            out[i] = out[i] + sep + draw(st.sampled_from(HOSTILE_NUMBERS + HOSTILE_TEXT))
        elif op == "truncate":
            out[i] = out[i][: draw(st.integers(0, max(0, len(out[i]))))]
        elif op == "dup":
            out.insert(i, out[i])
        elif op == "delete":
            del out[i]
        elif op == "char" and out[i]:
            j = draw(st.integers(0, len(out[i]) - 1))
            out[i] = out[i][:j] + draw(st.sampled_from(HOSTILE_TEXT + list("0123456789.-e"))) + out[i][j + 1:]
        elif op == "swap-header" and len(out) > 1:
            j = draw(st.integers(0, len(out) - 1))
            out[i], out[j] = out[j], out[i]
    return out


@st.composite
def mutated_json(draw: st.DrawFn, doc: Any, depth: int = 0) -> Any:
    """Replace, delete or wrap values anywhere in a JSON document with hostile ones."""
    hostile = st.one_of(
        st.sampled_from([1e308, -1.0, 2 ** 64, -(2 ** 63) - 1, 0, 65536, 1.5, True, None, "", "x" * 5000, [], {},
                         "1e400", "inf", "\u2028", "é\x00"]),
        st.recursive(st.integers() | st.text(max_size=8), lambda c: st.lists(c, max_size=3)
                     | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=6),
    )
    if isinstance(doc, dict) and doc and depth < 4:
        out = dict(doc)
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(sorted(out))) if out else None
            op = draw(st.sampled_from(["replace", "recurse", "delete", "add"]))
            if key is None or op == "add":
                out[draw(st.text(max_size=6))] = draw(hostile)
            elif op == "replace":
                out[key] = draw(hostile)
            elif op == "delete":
                del out[key]
            else:
                out[key] = draw(mutated_json(out[key], depth + 1))
        return out
    if isinstance(doc, list) and doc and depth < 4:
        out_l = list(doc)
        i = draw(st.integers(0, len(out_l) - 1))
        out_l[i] = draw(mutated_json(out_l[i], depth + 1)) if draw(st.booleans()) else draw(hostile)
        return out_l
    return draw(hostile)


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """Flip, overwrite, insert or cut bytes of a real file."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "cut", "truncate"]))
        if not buf:
            buf.extend(draw(st.binary(min_size=1, max_size=16)))
            continue
        i = draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x0A, 0x22, 0x7B]))
        elif op == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=32))
        elif op == "cut":
            del buf[i: i + draw(st.integers(1, 64))]
        else:
            del buf[i:]
    return bytes(buf)


def deep(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth
