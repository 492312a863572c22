"""Check each submitted update before aggregation: shape, finiteness, and replay of an earlier update."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NewType

import numpy as np
import numpy.typing as npt

__all__ = ["Commitment", "UpdateValidator", "commit_arrays"]

Commitment = NewType("Commitment", str)


def commit_arrays(arrays: Sequence[npt.ArrayLike]) -> Commitment:
    """Return the sha256 commitment to a list of arrays (count, dtype, shape and little-endian bytes).

    Encoding: ``b"trustmesh.fl.update.v1\\n"``, then per array ``dtype\\nshape\\n`` and raw bytes, so two
    lists commit equally only if they are equal element for element.
    """
    h = hashlib.sha256(b"trustmesh.fl.update.v1\n")
    h.update(f"{len(arrays)}\n".encode())
    for a in arrays:
        arr = np.ascontiguousarray(np.asarray(a))
        le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        h.update(f"{le.dtype.str}\n{','.join(map(str, le.shape))}\n".encode())
        h.update(le.tobytes())
    return Commitment(h.hexdigest())


class UpdateValidator:
    """Reject updates of the wrong shape, with NaN/inf, or replayed from an earlier round.

    ``check`` returns None for a valid update or the reason it is rejected; accepted commitments are
    remembered (per run) so a later resubmission of the same bytes is caught as a replay.
    """

    def __init__(self, shapes: Sequence[tuple[int, ...]]) -> None:
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self._seen: dict[Commitment, tuple[int, str]] = {}

    def check(self, arrays: Sequence[Any], commitment: Commitment, round_no: int, site: str) -> str | None:
        """Return the rejection reason, or None when the update is acceptable (and remember it)."""
        if len(arrays) != len(self.shapes):
            return f"wrong shape: {len(arrays)} arrays, expected {len(self.shapes)}"
        for i, (a, want) in enumerate(zip(arrays, self.shapes, strict=True)):
            arr = np.asarray(a)
            if tuple(arr.shape) != want:
                return f"wrong shape: array {i} is {tuple(arr.shape)}, expected {want}"
            if arr.dtype.kind not in "fi":
                return f"wrong dtype: array {i} is {arr.dtype}"
            if not np.all(np.isfinite(arr)):
                return f"non-finite values (NaN/inf) in array {i}"
        if commitment in self._seen:
            r, s = self._seen[commitment]
            return f"replay of the update site {s} submitted in round {r}"
        self._seen[commitment] = (round_no, site)
        return None
