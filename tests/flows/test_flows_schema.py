"""The canonical schema: column sets, to_canonical casting, and the Zeek conn_state approximation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trustmesh.errors import InputError
from trustmesh.flows import (
    CANONICAL_COLUMNS,
    CANONICAL_DTYPES,
    CANONICAL_FEATURES,
    derive_conn_state,
    empty_canonical,
    to_canonical,
    validate_canonical,
)


def test_features_exclude_identifiers_but_keep_service_descriptors() -> None:
    for ident in ("ts", "uid", "src_ip", "dst_ip", "src_port"):
        assert ident in CANONICAL_COLUMNS
        assert ident not in CANONICAL_FEATURES
    for feat in ("dst_port", "proto", "service", "conn_state", "duration", "src_iat_mean"):
        assert feat in CANONICAL_FEATURES
    assert set(CANONICAL_FEATURES) < set(CANONICAL_COLUMNS)
    assert list(CANONICAL_DTYPES) == list(CANONICAL_COLUMNS)


def test_to_canonical_fills_missing_columns_and_casts() -> None:
    raw = pd.DataFrame({"src_ip": ["10.0.0.1"], "dst_port": ["80"], "proto": ["TCP"], "duration": ["1.5"],
                        "extra": [1], "label": ["benign"]})  # fmt: skip

    out = to_canonical(raw)

    assert list(out.columns) == [*CANONICAL_COLUMNS, "label"]
    assert out.loc[0, "dst_port"] == 80 and out["dst_port"].dtype == np.int64
    assert out.loc[0, "proto"] == "tcp"
    assert out.loc[0, "service"] == "-" and out.loc[0, "conn_state"] == "-"
    assert out.loc[0, "duration"] == 1.5
    assert np.isnan(out.loc[0, "src_bytes"])
    validate_canonical(out)


def test_to_canonical_strict_and_bad_port() -> None:
    with pytest.raises(InputError, match="missing canonical columns"):
        to_canonical(pd.DataFrame({"src_ip": ["a"]}), strict=True)
    with pytest.raises(InputError, match="dst_port"):
        to_canonical(pd.DataFrame({"dst_port": ["http"]}))


def test_validate_rejects_wrong_dtype() -> None:
    df = empty_canonical()
    validate_canonical(df)
    df["duration"] = df["duration"].astype(str)
    with pytest.raises(InputError, match="duration"):
        validate_canonical(df)


@pytest.mark.parametrize(
    ("proto", "flags", "dst_pkts", "expected"),
    [
        # flags: src_syn, dst_syn, src_fin, dst_fin, src_rst, dst_rst
        ("tcp", (1, 0, 0, 0, 0, 0), 0, "S0"),
        ("tcp", (1, 0, 0, 0, 0, 1), 1, "REJ"),
        ("tcp", (1, 1, 1, 1, 0, 0), 5, "SF"),
        ("tcp", (1, 1, 0, 0, 0, 0), 3, "S1"),
        ("tcp", (1, 1, 1, 0, 0, 0), 3, "S2"),
        ("tcp", (1, 1, 0, 1, 0, 0), 3, "S3"),
        ("tcp", (1, 1, 0, 0, 1, 0), 3, "RSTO"),
        ("tcp", (1, 1, 0, 0, 0, 1), 3, "RSTR"),
        ("tcp", (1, 0, 0, 0, 1, 0), 0, "RSTOS0"),
        ("tcp", (1, 0, 1, 0, 0, 0), 0, "SH"),
        ("tcp", (0, 1, 0, 0, 0, 1), 1, "RSTRH"),
        ("tcp", (0, 1, 0, 1, 0, 0), 1, "SHR"),
        ("tcp", (0, 0, 0, 0, 0, 0), 4, "OTH"),
        ("udp", (0, 0, 0, 0, 0, 0), 0, "S0"),
        ("udp", (0, 0, 0, 0, 0, 0), 2, "SF"),
        ("icmp", (0, 0, 0, 0, 0, 0), 2, "OTH"),
    ],
)
def test_conn_state_rules(proto: str, flags: tuple[int, ...], dst_pkts: int, expected: str) -> None:
    cols = [[f] for f in flags]
    state = derive_conn_state([proto], *cols, [dst_pkts])
    assert state.tolist() == [expected]
