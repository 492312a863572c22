"""trustmesh.assurance: verifiable claims about models.

Model passports (:func:`build_passport`, :func:`record_passport`, :func:`verify_passport`), robustness
certificates (:func:`certify`: exact for the GBDT with dtai-veritas, CROWN bounds for the MLP),
energy figures (:func:`energy_profile`) and zero-knowledge proofs of inference
(:mod:`trustmesh.assurance._proof`, ezkl). Verifiers raise ``trustmesh.errors.VerificationError``
subclasses (``PassportError``, ``ProofError``); they never return False.
"""

from trustmesh.assurance._bounds import crown_bounds, ibp_bounds
from trustmesh.assurance._certify import Certificate, certify, schema_boxes
from trustmesh.assurance._energy import energy_profile
from trustmesh.assurance._passport import (
    PASSPORT_ENTRY_KIND,
    Passport,
    build_passport,
    record_passport,
    verify_passport,
)

__all__ = [
    "PASSPORT_ENTRY_KIND",
    "Certificate",
    "Passport",
    "build_passport",
    "certify",
    "crown_bounds",
    "energy_profile",
    "ibp_bounds",
    "record_passport",
    "schema_boxes",
    "verify_passport",
]
