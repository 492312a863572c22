"""The fast RFC 8785 encoder writes exactly what the reference implementation writes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from trustmesh.errors import InputError
from trustmesh.ledger import Entry
from trustmesh.ledger._canonical import canonical_dumps

_keys = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)  # includes non-BMP code points
_scalars = (st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(alphabet=st.characters(codec="utf-8"),
                                                                        max_size=12))
_docs = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
                     max_leaves=25)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_docs)
def test_bytes_and_copy_match_the_reference(doc: Any) -> None:
    raw, copy = canonical_dumps(doc)
    assert raw == rfc8785.dumps(doc)
    assert copy == json.loads(raw)


@pytest.mark.parametrize("value", [1.0, -0.0, 1e-4, 9.9e-5, 1e15 + 0.5, 1e16, 2.0**53, 1e21, 5e-324, 0.1, 1 / 3,
                                   123456789.125, -1e-7])
def test_float_boundaries(value: float) -> None:
    assert canonical_dumps({"x": value})[0] == rfc8785.dumps({"x": value})


@pytest.mark.parametrize("doc", [{"\U0001f600": 1, "\uffff": 2, "a": 3}, {"k": "\x00\x1f\x7f\u2028\"\\/"},
                                 {"t": (1, [2, (3,)])}, {"deep": json.loads("[" * 300 + "]" * 300)}])
def test_keys_escapes_tuples_depth(doc: Any) -> None:
    assert canonical_dumps(doc)[0] == rfc8785.dumps(doc)


@pytest.mark.parametrize("bad", [{"x": math.nan}, {"x": math.inf}, {"x": 2**53}, {"x": "\ud800"}, {1: "a"},
                                 {"x": object()}, {"x": b"bytes"}])
def test_unrepresentable_values_raise_as_before(bad: Any) -> None:
    with pytest.raises((rfc8785.CanonicalizationError, TypeError, ValueError)):
        rfc8785.dumps(bad)
    with pytest.raises((rfc8785.CanonicalizationError, TypeError, ValueError)):
        canonical_dumps(bad)
    with pytest.raises(InputError):
        Entry("alert", bad, time=1.0)


def test_entry_payload_is_a_private_normalised_copy() -> None:
    payload = {"score": 1.0, "tags": ("a", "b"), "n": {"t": 0.5}}
    entry = Entry("alert", payload, time=1.5)
    payload["n"]["t"] = 9.0  # the caller's later change does not reach the entry
    assert entry.payload == {"score": 1, "tags": ["a", "b"], "n": {"t": 0.5}}
    assert Entry.from_bytes(entry.to_bytes()) == entry


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_es6_number_matches_the_reference(value: float) -> None:
    assert canonical_dumps([value, {"v": value}])[0] == rfc8785.dumps([value, {"v": value}])


def test_a_string_that_looks_like_the_placeholder_is_kept_as_written() -> None:
    from trustmesh.ledger._canonical import _TAG

    doc = {"s": _TAG + "0", "f": 1e-9}
    assert canonical_dumps(doc)[0] == rfc8785.dumps(doc)


@pytest.mark.parametrize("doc", [{"s": "v1.0,x", "f": 2.0}, {"s": "-0,", "z": -0.0}, {"a": [97.0, -3.0, "3.0]"]},
                                 {"n": 1e15, "m": 1234567890123456}, {"1": 1.0, "e": "1e5"}])
def test_texts_that_look_like_numbers_and_integral_floats(doc: Any) -> None:
    raw, copy = canonical_dumps(doc)
    assert raw == rfc8785.dumps(doc)
    assert copy == json.loads(raw)
