"""Device and site identities recorded in the ledger: enrol, rotate, revoke, verify.

Each device or site has an Ed25519 key (signatures, RFC 8032 via pyca/cryptography) and a
ristretto255 key (Schnorr zero-knowledge proofs, :mod:`trustmesh.privacy.zk`). Enrolment, rotation
and revocation are ledger entries; :meth:`IdentityRegistry.from_ledger` replays them so every
verifier that reads the same log refuses a revoked key's later signatures.
"""

from trustmesh.identity._keys import DeviceId, DeviceKeys, PublicKeys, check_device_id
from trustmesh.identity._registry import (
    ENROLL,
    REVOKE,
    ROTATE,
    DeviceRecord,
    IdentityRegistry,
    KeyEpoch,
    enroll,
    revoke,
    rotate,
)

__all__ = [
    "DeviceId",
    "DeviceKeys",
    "DeviceRecord",
    "ENROLL",
    "IdentityRegistry",
    "KeyEpoch",
    "PublicKeys",
    "REVOKE",
    "ROTATE",
    "check_device_id",
    "enroll",
    "revoke",
    "rotate",
]
