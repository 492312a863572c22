"""Entry.owned (no private copy of pipeline-built payloads) writes exactly the bytes the constructor writes.

The payloads are what the pipeline hands over: ECS alert documents of generated alerts (hostile
Suricata/behaviour extras: keys outside the Basic Multilingual Plane, odd and integral floats, integers
at and past +-(2^53-1), texts that look like numbers), incident dicts and response records read back
from JSON. Every case is compared with ``rfc8785.dumps`` and with ``Entry(...)``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from trustmesh.errors import InputError
from trustmesh.ledger import Entry
from trustmesh.ledger._canonical import canonical_dumps_owned
from trustmesh.records import Alert, FlowId, Incident, IncidentId, ModelId

_HOSTILE_TEXT = st.one_of(st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
                          st.sampled_from(["1.0,", "e+5", "x:1234567890123456,", "\U0001f600", "1e-05]", ".0}",
                                           "-0.0", "2021-06-06T13:59:46.0Z", "1:abcde+Fg/h="]))
_ODD_FLOATS = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                        st.sampled_from([0.0, -0.0, 1.0, 80.0, 1e-4, 9.9e-5, 1e16, 1e21, 5e-324, 2.0**53, 0.5]))
_BIG_INTS = st.one_of(st.integers(-(2**53) + 1, 2**53 - 1),
                      st.sampled_from([2**53 - 1, -(2**53) + 1, 10**15, 10**16 - 1, 1234567890123456]))
_LEAF = st.one_of(st.none(), st.booleans(), _BIG_INTS, _ODD_FLOATS, _HOSTILE_TEXT)
_EXTRA_VALUE = st.recursive(_LEAF, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(_HOSTILE_TEXT, inner, max_size=3), max_leaves=10)
_EXTRA = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"suricata": st.dictionaries(_HOSTILE_TEXT, _EXTRA_VALUE, max_size=4)}),
    st.fixed_dictionaries({"behaviour": st.dictionaries(_HOSTILE_TEXT, _EXTRA_VALUE, max_size=4)}),
)


@st.composite
def _alerts(draw: st.DrawFn) -> Alert:
    return Alert(
        alert_id=draw(st.sampled_from(["alr-1", "", "alr-ab12"])),
        timestamp=draw(st.one_of(st.floats(0, 4e9), st.sampled_from([0.0, 12.0, 1e-5, 1622987986.0,
                                                                     1622987986.457984]))),
        flow_id=FlowId(draw(st.one_of(_HOSTILE_TEXT, st.sampled_from(["1234567890123456789", "f1"])))),
        model_id=ModelId(draw(st.sampled_from(["m1", "gbdt-3e+4", "behaviour-v1"]))),
        score=draw(st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, 0.5, 1e-5]))),
        threshold=draw(st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, 5e-05]))),
        source_ip=draw(st.sampled_from(["10.0.0.5", "2001:db8::7", None, "bad"])),
        source_port=draw(st.one_of(st.none(), st.integers(0, 65535))),
        destination_ip=draw(st.sampled_from(["192.168.1.129", "8.8.8.8", None])),
        destination_port=draw(st.one_of(st.none(), st.integers(0, 65535))),
        transport=draw(st.sampled_from(["tcp", "udp", "icmp", None])),
        application=draw(st.one_of(st.none(), _HOSTILE_TEXT)), predicted_class=draw(st.one_of(st.none(), _HOSTILE_TEXT)),
        severity=draw(st.integers(1, 4)), source_name=draw(st.one_of(st.none(), _HOSTILE_TEXT)),
        extra=draw(_EXTRA), technique_id=draw(st.sampled_from([None, "T1046", "T1110.001"])),
        technique_name=draw(st.one_of(st.none(), _HOSTILE_TEXT)),
        detector=draw(st.sampled_from([None, "ml", "behaviour", "suricata"])),
    )


def _same_as_constructor(kind: str, payload: dict[str, Any], when: float, refs: tuple[int, ...]) -> None:
    try:
        want = Entry(kind, payload, time=when, refs=refs)
    except InputError:
        with pytest.raises(InputError):
            Entry.owned(kind, payload, time=when, refs=refs)
        return
    got = Entry.owned(kind, payload, time=when, refs=refs)
    assert got.to_bytes() == want.to_bytes()
    assert got.to_bytes() == rfc8785.dumps({"kind": kind, "payload": payload, "refs": list(refs), "time": float(when)})
    assert got == want  # kind, payload, time and refs as the constructor has them
    assert json.loads(got.to_bytes())["payload"] == got.payload
    try:
        back = Entry.from_bytes(want.to_bytes())
    except InputError:  # an integral float past 2^53 reads back as an integer RFC 8785 refuses (both paths)
        return
    assert Entry.from_bytes(got.to_bytes()) == back == got


@settings(max_examples=500, deadline=None, derandomize=True)
@given(_alerts(), st.one_of(st.floats(1.6e9, 1.8e9), st.sampled_from([1.7e9, 1.0, 0.0, 1e-7])),
       st.lists(st.integers(0, 10**6), max_size=3))
def test_alert_documents_encode_as_the_constructor_does(alert: Alert, when: float, refs: list[int]) -> None:
    _same_as_constructor("alert", alert.to_ecs(created=1.7e9), when, tuple(sorted(set(refs))))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(1, 10**6), _ODD_FLOATS.filter(lambda f: f >= 0), st.floats(0.0, 1.0),
       st.lists(_HOSTILE_TEXT, max_size=4), st.lists(st.integers(0, 65535), max_size=3), st.sampled_from([1.7e9, 2.0]))
def test_incident_and_record_payloads(version: int, first: float, confidence: float, ids: list[str],
                                      ports: list[int], when: float) -> None:
    inc = Incident(incident_id=IncidentId("inc-1"), version=version, first_seen=first, last_seen=first + 1,
                   severity=2, confidence=confidence, alert_ids=tuple(ids) or ("a",), source_ips=("10.0.0.5",),
                   destination_ips=("10.0.0.6",), destination_ports=tuple(ports), model_ids=("m1",),
                   flows=(("10.0.0.5", "10.0.0.6", "tcp", 22),))
    _same_as_constructor("incident", inc.to_dict(), when, (1, 2))
    _same_as_constructor("decision", json.loads(json.dumps(inc.to_dict())), when, ())


def test_a_normal_payload_is_kept_without_a_copy() -> None:
    doc = {"score": 0.75, "ts": 1622987986.457984, "ids": ["a", "b"], "n": {"port": 443}}
    entry = Entry.owned("alert", doc, time=1.7e9 + 0.25)
    assert entry.payload is doc
    assert entry.to_bytes() == Entry("alert", doc, time=1.7e9 + 0.25).to_bytes()


@pytest.mark.parametrize("doc", [{"x": 1.0}, {"x": -0.0}, {"x": 1e-7}, {"x": 1e16}, {"x": [2.0]},
                                 {"x": 2**53 - 1}, {"\U0001f600": 1, "a": 2}, {"s": "\ud800"}])
def test_values_the_c_encoder_writes_otherwise_take_the_general_path(doc: dict[str, Any]) -> None:
    try:
        want = rfc8785.dumps({"kind": "alert", "payload": doc, "refs": [], "time": 1.5})
    except (rfc8785.CanonicalizationError, ValueError, TypeError):
        with pytest.raises(InputError):
            Entry.owned("alert", doc, time=1.5)
        return
    raw, copy = canonical_dumps_owned({"kind": "alert", "payload": doc, "refs": [], "time": 1.5})
    assert raw == want
    assert copy == json.loads(raw)
    assert Entry.owned("alert", doc, time=1.5).to_bytes() == want


def test_refusals_name_the_problem() -> None:
    with pytest.raises(InputError, match="payload must be a JSON object"):
        Entry.owned("alert", ["not", "a", "dict"], time=1.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="kind"):
        Entry.owned("bad kind", {}, time=1.0)
    with pytest.raises(InputError, match="more than 65535"):
        Entry.owned("alert", {"x": "y" * 70_000}, time=1.0)
    with pytest.raises(InputError, match="not canonical-JSON representable"):
        Entry.owned("alert", {"x": float("nan")}, time=1.0)
