"""Measure prove/verify time and proof size of the range and L-infinity proofs."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any

import numpy as np

from trustmesh.privacy.zk._context import ProofContext
from trustmesh.privacy.zk._linf import LinfBoundProof, prove_linf_bound, verify_linf_bound
from trustmesh.privacy.zk._range import RangeProof, prove_range, verify_range

__all__ = ["bench_zk"]


def bench_zk(
    *,
    range_bits: tuple[int, ...] = (32, 64),
    reps: int = 5,
    coordinates: int = 10_000,
    bound: int = 127,
    workers: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Return timings (seconds) and sizes (bytes) for range proofs and one L-infinity proof.

    ``*_cpu_s`` is process CPU time (all threads): on a shared machine it shows the work done
    independently of how many cores were actually free; ``load_average_1m`` tells how busy it was.
    """
    if reps < 1 or coordinates < 1:
        raise ValueError("reps and coordinates must be >= 1")
    rng = np.random.default_rng(seed)
    ctx = ProofContext.fresh("bench.trustmesh", 0, "bench-site")
    ranges = []
    for bits in range_bits:
        prove_s, verify_s, size = [], [], 0
        for _ in range(reps):
            value = int(rng.integers(0, 2**min(bits, 62)))
            t0 = time.perf_counter()
            commitment, _, proof = prove_range(value, bits, ctx)
            t1 = time.perf_counter()
            data = proof.to_bytes()
            verify_range(commitment, RangeProof.from_bytes(data), bits, ctx)
            t2 = time.perf_counter()
            prove_s.append(t1 - t0)
            verify_s.append(t2 - t1)
            size = len(data)
        ranges.append({"bits": bits, "prove_s": statistics.median(prove_s), "verify_s": statistics.median(verify_s),
                       "proof_bytes": size, "commitment_bytes": 32, "reps": reps})
    values = rng.integers(-bound, bound + 1, size=coordinates)
    c0, t0 = time.process_time(), time.perf_counter()
    commitments, linf_proof = prove_linf_bound(values, bound, ctx, workers=workers)
    c1, t1 = time.process_time(), time.perf_counter()
    data = linf_proof.to_bytes()
    t2 = time.perf_counter()
    parsed = LinfBoundProof.from_bytes(data)
    c3, t3 = time.process_time(), time.perf_counter()
    verify_linf_bound(commitments, parsed, bound, ctx, workers=workers)
    c4, t4 = time.process_time(), time.perf_counter()
    return {
        "scheme": "bit-decomposition CDS OR-proofs on ristretto255 (rbcl/libsodium), Fiat-Shamir",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "workers": workers,
                    "load_average_1m": os.getloadavg()[0]},
        "range": ranges,
        "linf": {
            "coordinates": coordinates,
            "bound": bound,
            "bits_per_coordinate": (2 * bound).bit_length(),
            "prove_s": t1 - t0,
            "prove_cpu_s": c1 - c0,
            "parse_s": t3 - t2,
            "verify_s": t4 - t3,
            "verify_cpu_s": c4 - c3,
            "proof_bytes": len(data),
            "commitments_bytes": 32 * coordinates,
        },
        "targets": {"linf_prove_s": 10.0, "linf_verify_s": 2.0, "bulletproofs_64bit_bytes": 672},
    }
