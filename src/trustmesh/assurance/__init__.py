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
    PASSPORT_SUFFIX,
    Passport,
    build_passport,
    passport_path,
    record_passport,
    require_passport,
    verify_passport,
)
from trustmesh.assurance._proof import (
    CIRCUIT_ENTRY_KIND,
    DEFAULT_TOLERANCE,
    Circuit,
    check_proof,
    feature_commitments,
    load_proof,
    prove_alert,
    record_circuit,
    setup_circuit,
)

__all__ = [
    "CIRCUIT_ENTRY_KIND",
    "Certificate",
    "Circuit",
    "DEFAULT_TOLERANCE",
    "PASSPORT_ENTRY_KIND",
    "PASSPORT_SUFFIX",
    "Passport",
    "build_passport",
    "certify",
    "check_proof",
    "crown_bounds",
    "energy_profile",
    "feature_commitments",
    "ibp_bounds",
    "load_proof",
    "passport_path",
    "prove_alert",
    "record_circuit",
    "record_passport",
    "require_passport",
    "schema_boxes",
    "setup_circuit",
    "verify_passport",
]
