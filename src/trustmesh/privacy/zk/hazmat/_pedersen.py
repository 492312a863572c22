"""Pedersen commitments over ristretto255 (Pedersen, CRYPTO 1991).

``commit(v, r) = r*G + v*H``. ``G`` is the standard ristretto255 generator and ``H`` is derived by
hash-to-group from a public label (nothing up my sleeve), so nobody knows ``log_G(H)`` and the
commitment is computationally binding and perfectly hiding. The blinding factor sits on ``G``
because libsodium multiplies the generator ~3x faster than an arbitrary point, and range proofs
make one such multiplication per committed bit.
"""

from __future__ import annotations

from trustmesh.privacy.zk.hazmat._group import Point, base_mul, hash_to_point, random_scalar

__all__ = ["H", "PEDERSEN_H_LABEL", "commit", "random_blind"]

PEDERSEN_H_LABEL = b"trustmesh/pedersen/H/v1"
#: The second generator: hash-to-group of a public label.
H = hash_to_point(PEDERSEN_H_LABEL)


def random_blind() -> int:
    """Return a fresh blinding factor from OS randomness."""
    return random_scalar()


def commit(value: int, blind: int) -> Point:
    """Commit to an integer ``value`` (negative values wrap mod L) with blinding factor ``blind``."""
    return base_mul(blind) + H * value
