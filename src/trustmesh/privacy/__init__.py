"""Privacy recipes: differential-privacy accounting, the Gaussian mechanism, CKKS aggregation and
SecAgg+ settings.

Raw primitives live in :mod:`trustmesh.privacy.hazmat`. Zero-knowledge proofs are in
:mod:`trustmesh.privacy.zk` (imported on demand, not here). TenSEAL and dp-accounting are imported only
when a CKKS or accounting call runs.
"""

from __future__ import annotations

from trustmesh.privacy._ckks import CkksCiphertext, CkksKeyring, add_ciphertexts, add_plaintext
from trustmesh.privacy._dp import (
    Accountant,
    DPConfig,
    DPSGDAccountant,
    DPSGDConfig,
    dp_sgd_sampling,
    noise_multiplier_for_epsilon,
    privatize_mean,
)
from trustmesh.privacy._secagg import SecAggConfig

__all__ = [
    "Accountant",
    "CkksCiphertext",
    "CkksKeyring",
    "DPConfig",
    "DPSGDAccountant",
    "DPSGDConfig",
    "SecAggConfig",
    "add_ciphertexts",
    "add_plaintext",
    "dp_sgd_sampling",
    "noise_multiplier_for_epsilon",
    "privatize_mean",
]
