"""Device and site identities recorded in the ledger: enrol, rotate, revoke, verify.

Each device or site has an Ed25519 key (signatures, RFC 8032 via pyca/cryptography) and a
ristretto255 key (Schnorr zero-knowledge proofs, :mod:`trustmesh.privacy.zk`). Enrolment (signed
by an identity admin whose key the log key registered), rotation (signed by the old key) and
revocation (signed by the device or an admin) are ledger entries; :meth:`IdentityRegistry.from_ledger`
replays and verifies them, skipping and reporting any that do not verify, so every verifier that
reads the same log refuses a revoked key's later signatures.
"""

from trustmesh.identity._keys import DeviceId, DeviceKeys, PublicKeys, check_device_id
from trustmesh.identity._registry import (
    ADMIN,
    ENROLL,
    IDENTITY_KINDS,
    REVOKE,
    ROTATE,
    DeviceRecord,
    IdentityRegistry,
    KeyEpoch,
    RejectedEntry,
    add_admin,
    enroll,
    remove_admin,
    revoke,
    rotate,
)

__all__ = [
    "ADMIN",
    "DeviceId",
    "DeviceKeys",
    "DeviceRecord",
    "ENROLL",
    "IDENTITY_KINDS",
    "IdentityRegistry",
    "KeyEpoch",
    "PublicKeys",
    "REVOKE",
    "ROTATE",
    "RejectedEntry",
    "add_admin",
    "check_device_id",
    "enroll",
    "remove_admin",
    "revoke",
    "rotate",
]
