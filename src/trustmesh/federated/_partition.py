"""Split a labelled training set across sites: IID, Dirichlet over classes, by group, by attack family.

Dirichlet label skew follows Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data Distribution
for Federated Visual Classification" (2019): for every class, site shares are drawn from Dir(alpha).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "PartitionSpec",
    "partition",
    "partition_attack_family",
    "partition_dirichlet",
    "partition_groups",
    "partition_iid",
]

IntArray = npt.NDArray[np.int64]
_KINDS = ("iid", "dirichlet", "device", "attack-family")


@dataclass(frozen=True, slots=True)
class PartitionSpec:
    """A partitioning scheme: ``kind`` in iid|dirichlet|device|attack-family; ``alpha`` for dirichlet."""

    kind: str = "iid"
    alpha: float = 0.5
    hidden_per_site: int = 1

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"partition kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if not self.alpha > 0:
            raise ValueError(f"dirichlet alpha must be > 0, got {self.alpha}")
        if self.hidden_per_site < 1:
            raise ValueError(f"hidden_per_site must be >= 1, got {self.hidden_per_site}")

    @classmethod
    def parse(cls, text: str) -> PartitionSpec:
        """Parse ``iid``, ``dirichlet:0.5``, ``device`` or ``attack-family[:K]``."""
        kind, _, arg = text.strip().partition(":")
        try:
            if kind == "dirichlet":
                return cls(kind=kind, alpha=float(arg) if arg else 0.5)
            if kind == "attack-family":
                return cls(kind=kind, hidden_per_site=int(arg) if arg else 1)
        except ValueError as exc:
            raise ValueError(f"--partition {text!r}: {exc}") from exc
        if arg:
            raise ValueError(f"--partition {text!r}: {kind!r} takes no argument")
        return cls(kind=kind)

    def __str__(self) -> str:
        if self.kind == "dirichlet":
            return f"dirichlet:{self.alpha:g}"
        if self.kind == "attack-family":
            return f"attack-family:{self.hidden_per_site}"
        return self.kind


def _check(n_rows: int, n_sites: int) -> None:
    if n_sites < 1:
        raise ValueError(f"n_sites must be >= 1, got {n_sites}")
    if n_rows < n_sites:
        raise ValueError(f"cannot split {n_rows} rows across {n_sites} sites")


def partition_iid(n_rows: int, n_sites: int, seed: int) -> list[IntArray]:
    """Shuffle row indices with ``seed`` and deal them into ``n_sites`` near-equal parts."""
    _check(n_rows, n_sites)
    perm = np.random.default_rng(seed).permutation(n_rows)
    return [np.sort(part).astype(np.int64) for part in np.array_split(perm, n_sites)]


def partition_dirichlet(
    y: npt.ArrayLike, n_sites: int, alpha: float, seed: int, min_rows: int = 10, max_tries: int = 100
) -> list[IntArray]:
    """Give each site a Dir(``alpha``) share of every class; redraw until every site has ``min_rows``."""
    labels = np.asarray(y)
    _check(len(labels), n_sites)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    floor = min(min_rows, len(labels) // n_sites)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(n_sites)]
        for cls in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(n_sites, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for site, chunk in enumerate(np.split(idx, cuts)):
                parts[site].extend(chunk.tolist())
        if min(len(p) for p in parts) >= floor:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"dirichlet(alpha={alpha}) left a site with < {floor} rows after {max_tries} draws")


def partition_groups(groups: Sequence[str] | npt.ArrayLike, n_sites: int) -> list[IntArray]:
    """One site per group (e.g. TON_IoT device type); with fewer sites than groups, groups are dealt
    round-robin in sorted order, so the mapping does not depend on row order."""
    g = np.asarray(groups).astype(str)
    names = sorted(set(g.tolist()))
    if n_sites < 1 or n_sites > len(names):
        raise ValueError(f"device partition: n_sites must be in 1..{len(names)} (groups: {names}), got {n_sites}")
    parts: list[list[int]] = [[] for _ in range(n_sites)]
    for i, name in enumerate(names):
        parts[i % n_sites].extend(np.flatnonzero(g == name).tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def partition_attack_family(
    y: npt.ArrayLike, n_sites: int, seed: int, benign: int = 0, hidden_per_site: int = 1
) -> list[IntArray]:
    """IID split, then each site drops ``hidden_per_site`` attack classes it never sees.

    Hidden classes rotate over the sites so that every attack class is still seen by some site
    (when there are enough sites): the realistic case where each site meets only some attacks.
    """
    labels = np.asarray(y)
    parts = partition_iid(len(labels), n_sites, seed)
    attacks = [int(c) for c in np.unique(labels) if int(c) != benign]
    if not attacks:
        return parts
    order = np.random.default_rng(seed + 1).permutation(attacks).tolist()
    out = []
    for site, idx in enumerate(parts):
        hidden = {order[(site * hidden_per_site + k) % len(order)] for k in range(hidden_per_site)}
        keep = ~np.isin(labels[idx], list(hidden))
        out.append(idx[keep])
    return out


def partition(
    spec: PartitionSpec, y: npt.ArrayLike, n_sites: int, seed: int,
    groups: Sequence[str] | npt.ArrayLike | None = None, benign: int = 0,
) -> list[IntArray]:
    """Dispatch on ``spec.kind``; ``groups`` is required for ``device``."""
    labels = np.asarray(y)
    if spec.kind == "iid":
        return partition_iid(len(labels), n_sites, seed)
    if spec.kind == "dirichlet":
        return partition_dirichlet(labels, n_sites, spec.alpha, seed)
    if spec.kind == "device":
        if groups is None:
            raise ValueError("device partition needs per-row groups (use dataset ton-iot-telemetry)")
        return partition_groups(groups, n_sites)
    return partition_attack_family(labels, n_sites, seed, benign=benign, hidden_per_site=spec.hidden_per_site)
