"""Raw privacy primitives: L2 clipping and Gaussian noise.

.. warning::
   These are building blocks, not a privacy guarantee. Clipping without noise, noise without an
   accountant, or noise drawn from a seeded generator gives **no** differential privacy. Use
   :class:`trustmesh.privacy.Accountant` and :func:`trustmesh.privacy.privatize_mean` unless you are
   writing a new mechanism and have checked its analysis.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["clip_by_l2_norm", "gaussian_noise", "global_l2_norm", "os_generator"]

FloatArray = npt.NDArray[np.floating]


def os_generator() -> np.random.Generator:
    """Return a numpy Generator seeded from the OS CSPRNG (``secrets``), for DP noise.

    A fresh 256-bit seed per call means an observer who knows the code cannot replay the noise;
    a user-chosen seed would let anyone who learns it subtract the noise again.
    """
    return np.random.Generator(np.random.PCG64DXSM(secrets.randbits(256)))


def global_l2_norm(arrays: Sequence[FloatArray]) -> float:
    """Return the L2 norm of all arrays taken together as one flat vector."""
    return float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)))


def clip_by_l2_norm(arrays: Sequence[FloatArray], clip_norm: float) -> tuple[list[FloatArray], float]:
    """Scale ``arrays`` jointly so their global L2 norm is at most ``clip_norm``.

    Returns the clipped arrays (new objects; inputs are not mutated) and the norm before clipping.
    This is the per-client clipping of McMahan et al., "Learning Differentially Private Recurrent
    Language Models", ICLR 2018.
    """
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
    norm = global_l2_norm(arrays)
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return [np.asarray(a, dtype=np.float64) * scale for a in arrays], norm


def gaussian_noise(shape: tuple[int, ...], std: float, rng: np.random.Generator) -> FloatArray:
    """Draw N(0, std^2) noise of ``shape`` from ``rng`` (use :func:`os_generator` for real DP)."""
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std}")
    return rng.normal(0.0, std, size=shape)
