"""CKKS homomorphic aggregation with TenSEAL (Cheon, Kim, Kim, Song, ASIACRYPT 2017).

Sites share one CKKS secret key (``CkksKeyring``); the aggregator gets only the public context and
can add ciphertexts (``add_ciphertexts``) but not decrypt them. Long vectors are split into chunks of
``poly_modulus_degree / 2`` slots, so any length works without rotation (Galois) keys.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trustmesh.errors import InputError, MissingDependencyError

__all__ = ["CkksCiphertext", "CkksKeyring", "add_ciphertexts", "add_plaintext"]

_MAGIC = b"TMCKKS1\n"
_MAX_CHUNKS = 1 << 20


def _tenseal() -> Any:
    try:
        import tenseal
    except ImportError as exc:  # pragma: no cover - depends on installed extras
        raise MissingDependencyError("tenseal", "fl") from exc
    return tenseal


@dataclass(frozen=True, slots=True)
class CkksCiphertext:
    """An encrypted float vector of ``length`` values, as serialized TenSEAL CKKS chunks."""

    length: int
    chunks: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.length < 0:
            raise ValueError(f"length must be >= 0, got {self.length}")
        if not self.chunks:
            raise ValueError("chunks must not be empty")

    def to_bytes(self) -> bytes:
        """Serialize as magic, length, chunk count, then (size, bytes) per chunk."""
        head = _MAGIC + struct.pack(">QI", self.length, len(self.chunks))
        return head + b"".join(struct.pack(">Q", len(c)) + c for c in self.chunks)

    @classmethod
    def from_bytes(cls, data: bytes) -> CkksCiphertext:
        """Parse bytes written by :meth:`to_bytes`, checking every length field."""
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 12:
            raise InputError("ckks ciphertext: bad magic or truncated header")
        length, count = struct.unpack_from(">QI", data, len(_MAGIC))
        if not 0 < count <= _MAX_CHUNKS:
            raise InputError(f"ckks ciphertext: chunk count {count} out of range")
        pos = len(_MAGIC) + 12
        chunks = []
        for i in range(count):
            if pos + 8 > len(data):
                raise InputError(f"ckks ciphertext: truncated before chunk {i}")
            (size,) = struct.unpack_from(">Q", data, pos)
            pos += 8
            if size == 0 or pos + size > len(data):
                raise InputError(f"ckks ciphertext: chunk {i} size {size} runs past the end")
            chunks.append(data[pos:pos + size])
            pos += size
        if pos != len(data):
            raise InputError(f"ckks ciphertext: {len(data) - pos} trailing bytes")
        return cls(length=length, chunks=tuple(chunks))


class CkksKeyring:
    """A CKKS context holding the secret key: encrypt and decrypt; share ``public_context()`` with the server.

    Defaults (N=8192, modulus chain 60/40/40/60 bits, scale 2^40) give 128-bit security per the
    HomomorphicEncryption.org standard and ~1e-6 relative error for sums of a few hundred terms.
    """

    def __init__(self, context: Any) -> None:
        if not context.has_secret_key():
            raise ValueError("context must hold the secret key; the server side uses add_ciphertexts")
        self._ctx = context
        self._slots = int(context.data.seal_context().first_context_data().parms().poly_modulus_degree()) // 2

    @classmethod
    def generate(cls, poly_modulus_degree: int = 8192, scale_bits: int = 40) -> CkksKeyring:
        """Generate a fresh key pair (TenSEAL draws the key from OS randomness)."""
        if poly_modulus_degree not in (8192, 16384, 32768):
            raise ValueError(f"poly_modulus_degree must be 8192, 16384 or 32768, got {poly_modulus_degree}")
        ts = _tenseal()
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=poly_modulus_degree,
                         coeff_mod_bit_sizes=[60, scale_bits, scale_bits, 60])
        ctx.global_scale = 2.0**scale_bits
        return cls(ctx)

    @classmethod
    def from_bytes(cls, data: bytes) -> CkksKeyring:
        """Load a serialized secret context (keep those bytes as secret as a private key)."""
        ts = _tenseal()
        try:
            ctx = ts.context_from(data)
        except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on garbage
            raise InputError(f"ckks keyring: cannot parse context ({exc})") from exc
        return cls(ctx)

    def secret_bytes(self) -> bytes:
        """Serialize the context *with* the secret key."""
        return bytes(self._ctx.serialize(save_secret_key=True))

    def public_context(self) -> bytes:
        """Serialize the context without the secret key (what the aggregator gets)."""
        return bytes(self._ctx.serialize(save_secret_key=False))

    @property
    def slots(self) -> int:
        """Values per ciphertext chunk."""
        return self._slots

    def encrypt(self, vector: npt.ArrayLike) -> CkksCiphertext:
        """Encrypt a flat float vector."""
        ts = _tenseal()
        flat = np.asarray(vector, dtype=np.float64).ravel()
        if not np.all(np.isfinite(flat)):
            raise ValueError("vector must be finite to encrypt")
        step = self.slots
        chunks = tuple(
            bytes(ts.ckks_vector(self._ctx, flat[i:i + step].tolist()).serialize())
            for i in range(0, max(len(flat), 1), step)
        )
        return CkksCiphertext(length=len(flat), chunks=chunks)

    def decrypt(self, ciphertext: CkksCiphertext) -> npt.NDArray[np.float64]:
        """Decrypt to a float64 vector of ``ciphertext.length`` values."""
        ts = _tenseal()
        parts = [np.asarray(ts.ckks_vector_from(self._ctx, c).decrypt(), dtype=np.float64)
                 for c in ciphertext.chunks]
        out = np.concatenate(parts) if parts else np.zeros(0)
        if out.shape[0] != ciphertext.length:
            raise InputError(f"ckks ciphertext: decrypts to {out.shape[0]} values, header says {ciphertext.length}")
        return out


def _public(public_context: bytes) -> Any:
    ts = _tenseal()
    try:
        ctx = ts.context_from(public_context)
    except Exception as exc:
        raise InputError(f"ckks public context: cannot parse ({exc})") from exc
    if ctx.has_secret_key():
        raise InputError("ckks public context holds a secret key; the aggregator must not have it")
    return ctx


def add_ciphertexts(public_context: bytes, ciphertexts: Sequence[CkksCiphertext]) -> CkksCiphertext:
    """Add ciphertexts slot-wise under the public context (the aggregator's only operation)."""
    if not ciphertexts:
        raise ValueError("ciphertexts must not be empty")
    first = ciphertexts[0]
    for i, ct in enumerate(ciphertexts):
        if ct.length != first.length or len(ct.chunks) != len(first.chunks):
            raise InputError(f"ckks ciphertext {i}: length {ct.length} differs from {first.length}")
    ts = _tenseal()
    ctx = _public(public_context)
    sums = []
    for j in range(len(first.chunks)):
        try:
            acc = ts.ckks_vector_from(ctx, first.chunks[j])
            for ct in ciphertexts[1:]:
                acc += ts.ckks_vector_from(ctx, ct.chunks[j])
        except Exception as exc:
            raise InputError(f"ckks ciphertext chunk {j}: cannot parse or add ({exc})") from exc
        sums.append(bytes(acc.serialize()))
    return CkksCiphertext(length=first.length, chunks=tuple(sums))


def add_plaintext(public_context: bytes, ciphertext: CkksCiphertext, vector: npt.ArrayLike) -> CkksCiphertext:
    """Add a plaintext vector to a ciphertext slot-wise under the public context.

    The aggregator uses this to add DP noise to an encrypted sum it cannot read, so the key holders
    who decrypt it see only the noised sum.
    """
    flat = np.asarray(vector, dtype=np.float64).ravel()
    if flat.shape[0] != ciphertext.length:
        raise ValueError(f"vector has {flat.shape[0]} values, the ciphertext holds {ciphertext.length}")
    if not np.all(np.isfinite(flat)):
        raise ValueError("vector must be finite")
    ts = _tenseal()
    ctx = _public(public_context)
    step = ts.ckks_vector_from(ctx, ciphertext.chunks[0]).size() if ciphertext.chunks else 0
    out = []
    for j, chunk in enumerate(ciphertext.chunks):
        try:
            vec = ts.ckks_vector_from(ctx, chunk)
            part = flat[j * step:(j + 1) * step]
            if len(part) != vec.size():
                raise InputError(f"ckks ciphertext chunk {j}: holds {vec.size()} values, expected {len(part)}")
            vec += part.tolist()
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"ckks ciphertext chunk {j}: cannot parse or add ({exc})") from exc
        out.append(bytes(vec.serialize()))
    return CkksCiphertext(length=ciphertext.length, chunks=tuple(out))
