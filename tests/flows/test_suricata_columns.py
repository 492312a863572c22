"""EVE flow records are read into columns directly: the same columns ``pandas.json_normalize`` gave."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from trustmesh.flows._suricata import _NESTED, _TOP, _columns, suricata_flows_to_canonical


def _normalized(records: list[dict[str, Any]]) -> dict[str, pd.Series]:
    df = pd.json_normalize(records)
    names = [*_TOP, *(f"{o}.{k}" for o, keys in _NESTED for k in keys)]
    return {n: df[n] for n in names if n in df.columns}


def _same(a: dict[str, pd.Series], b: dict[str, pd.Series]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        left, right = a[name].tolist(), b[name].tolist()
        assert len(left) == len(right), name
        for x, y in zip(left, right, strict=True):
            both_nan = isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y)
            assert both_nan or (x == y and type(x) is type(y)), (name, x, y)


def test_columns_match_json_normalize_on_the_real_eve_log(data_dir: Path) -> None:
    path = data_dir / "logs" / "suricata" / "test6-malicious.suricata.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        records = [r for r in map(json.loads, fh) if r.get("event_type") == "flow"]
    assert len(records) > 100
    _same(_columns(records), _normalized(records))
    frame = suricata_flows_to_canonical(records, source=str(path))
    assert len(frame) == len(records)
    assert frame["src_ip"].notna().all() and (frame["ts"] > 1e9).all()


_SCALAR = st.one_of(st.none(), st.integers(-5, 70000), st.sampled_from(["tcp", "UDP", "ICMP", "tls", "failed", "",
                                                                         "2021-06-06T13:59:46.457984+0000", "1b"]),
                    st.floats(allow_nan=False, allow_infinity=False), st.booleans())
_FLOW = st.dictionaries(st.sampled_from(["start", "end", "pkts_toserver", "pkts_toclient", "bytes_toserver",
                                         "bytes_toclient", "age"]), _SCALAR, max_size=6)
_TCP = st.dictionaries(st.sampled_from(["tcp_flags_ts", "tcp_flags_tc", "syn"]), _SCALAR, max_size=3)
_RECORD = st.fixed_dictionaries({"event_type": st.just("flow"), "flow": _FLOW}, optional={
    **{k: _SCALAR for k in _TOP}, "tcp": _TCP, "other": _SCALAR})


@settings(max_examples=200, deadline=None)
@given(st.lists(_RECORD, min_size=1, max_size=8))
def test_columns_match_json_normalize_on_varied_records(records: list[dict[str, Any]]) -> None:
    _same(_columns(records), _normalized(records))
