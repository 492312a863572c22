"""Feature commitments: the row encoder's shortcut gives the same digests and blob as plain RFC 8785."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trustmesh.assurance._proof import FEATURES_FORMAT, feature_commitments


def _plain_commitments(names: list[str], matrix: np.ndarray) -> tuple[list[str], bytes]:
    """The commitments written the plain way: every row and the blob through ``rfc8785.dumps``."""
    digests: list[str] = []
    rows: dict[str, list[float | None]] = {}
    for row in np.asarray(matrix, dtype=np.float64):
        values = [float(v) if math.isfinite(float(v)) else None for v in row]
        d = hashlib.sha256(rfc8785.dumps({"features": names, "values": values})).hexdigest()
        digests.append(d)
        rows[d] = values
    return digests, rfc8785.dumps({"format": FEATURES_FORMAT, "features": names, "rows": rows})

_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -3.0, 1e-4, 9.99e-5, 1e16, 9.9e15, 2.0**53, 2.0**53 + 2, 0.1, 1e21, 5e-324]),
    st.integers(-(10**6), 10**6).map(float),
)


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 5)), elements=_VALUES))
def test_commitments_match_the_plain_encoding(matrix: np.ndarray) -> None:
    names = [f"f{i}" for i in range(matrix.shape[1])]
    assert feature_commitments(names, matrix) == _plain_commitments(names, matrix)


def test_blob_is_canonical_and_maps_digests_to_rows() -> None:
    matrix = np.array([[1.0, 0.5, np.nan], [3.0, -0.0, 1e-7], [1.0, 0.5, np.nan]])
    digests, blob = feature_commitments(["a", "b", "c"], matrix)
    doc = json.loads(blob)
    assert rfc8785.dumps(doc) == blob
    assert digests[0] == digests[2] != digests[1]
    assert doc["rows"][digests[0]] == [1, 0.5, None] and doc["rows"][digests[1]] == [3, 0, 1e-7]
    assert doc["features"] == ["a", "b", "c"] and doc["format"] == "trustmesh.alert-features/1"
