"""The ristretto255 prime-order group (RFC 9496) over rbcl's bundled libsodium.

Points are 32-byte canonical encodings; scalars are Python ints reduced mod ``L``. Every point that
comes from outside goes through :meth:`Point.from_bytes`, which rejects non-canonical and invalid
encodings: rbcl's add/sub silently return zeros for invalid input, so validation here is essential.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import rbcl

from trustmesh.errors import ProofError

__all__ = [
    "GENERATOR",
    "IDENTITY",
    "L",
    "POINT_BYTES",
    "SCALAR_BYTES",
    "Point",
    "base_mul",
    "hash_to_point",
    "hash_to_scalar",
    "random_scalar",
    "raw_add",
    "raw_base_mul",
    "raw_mul",
    "raw_sub",
    "scalar_from_bytes",
    "scalar_to_bytes",
]

#: Order of the ristretto255 group (RFC 9496, section 4).
L = 2**252 + 27742317777372353535851937790883648493
POINT_BYTES = 32
SCALAR_BYTES = 32

_ZERO = bytes(32)
_add = rbcl.crypto_core_ristretto255_add
_sub = rbcl.crypto_core_ristretto255_sub
_mul = rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero
_base = rbcl.crypto_scalarmult_ristretto255_base_allow_scalar_zero
_valid = rbcl.crypto_core_ristretto255_is_valid_point
_from_hash = rbcl.crypto_core_ristretto255_from_hash


def scalar_to_bytes(s: int) -> bytes:
    """Encode a scalar as 32 little-endian bytes (reduced mod L first)."""
    return (s % L).to_bytes(32, "little")


def scalar_from_bytes(data: bytes, *, field: str = "scalar") -> int:
    """Decode a canonical scalar; raise ProofError for a wrong length or a value >= L."""
    if len(data) != SCALAR_BYTES:
        raise ProofError(f"{field}: a scalar is {SCALAR_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "little")
    if value >= L:
        raise ProofError(f"{field}: non-canonical scalar (not reduced mod the group order)")
    return value


def random_scalar() -> int:
    """Return a uniform scalar from OS randomness (64 bytes reduced mod L, negligible bias)."""
    return int.from_bytes(secrets.token_bytes(64), "little") % L


def hash_to_scalar(*parts: bytes) -> int:
    """Hash length-prefixed parts with SHA-512 and reduce mod L."""
    h = hashlib.sha512()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return int.from_bytes(h.digest(), "little") % L


# --- raw byte-level operations for hot loops (inputs must already be validated) -----------------


def raw_add(p: bytes, q: bytes) -> bytes:
    """Add two validated encodings."""
    return _add(p, q)  # type: ignore[no-any-return]


def raw_sub(p: bytes, q: bytes) -> bytes:
    """Subtract two validated encodings."""
    return _sub(p, q)  # type: ignore[no-any-return]


def raw_mul(s: int, p: bytes) -> bytes:
    """Multiply a validated encoding by a scalar."""
    return _mul(scalar_to_bytes(s), p)  # type: ignore[no-any-return]


def raw_base_mul(s: int) -> bytes:
    """Multiply the generator by a scalar (libsodium's fixed-base path, ~3x a variable-base mult)."""
    return _base(scalar_to_bytes(s))  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Point:
    """A ristretto255 group element held as its canonical 32-byte encoding."""

    data: bytes

    @classmethod
    def from_bytes(cls, data: bytes, *, field: str = "point") -> Point:
        """Decode and validate an encoding; raise ProofError if it is not a canonical group element."""
        if not isinstance(data, bytes | bytearray) or len(data) != POINT_BYTES:
            raise ProofError(f"{field}: a point is {POINT_BYTES} bytes")
        data = bytes(data)
        if data != _ZERO and not _valid(data):
            raise ProofError(f"{field}: not a valid ristretto255 encoding")
        return cls(data)

    def to_bytes(self) -> bytes:
        """Return the canonical encoding."""
        return self.data

    def is_identity(self) -> bool:
        """Return True for the identity element."""
        return self.data == _ZERO

    def __add__(self, other: Point) -> Point:
        return Point(_add(self.data, other.data))

    def __sub__(self, other: Point) -> Point:
        return Point(_sub(self.data, other.data))

    def __neg__(self) -> Point:
        return Point(_sub(_ZERO, self.data))

    def __mul__(self, scalar: int) -> Point:
        return Point(_mul(scalar_to_bytes(scalar), self.data))

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Point({self.data.hex()})"


def base_mul(s: int) -> Point:
    """Return ``s * GENERATOR``."""
    return Point(raw_base_mul(s))


def hash_to_point(label: bytes) -> Point:
    """Map a label to a point with no known discrete log (SHA-512 then RFC 9496 one-way map)."""
    return Point(_from_hash(hashlib.sha512(b"trustmesh/hash-to-group/v1\x00" + label).digest()))


IDENTITY = Point(_ZERO)
GENERATOR = base_mul(1)
