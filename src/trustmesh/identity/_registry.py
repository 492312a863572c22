"""Enrolment, key rotation and revocation as ledger entries, and the registry that replays them.

Entry kinds (payloads hold public material only):

* ``identity.enroll``: ``device_id``, ``role``, ``keys``, ``pop`` -- proof of possession: an
  Ed25519 signature by the new key over the statement and a Schnorr proof (bound to the log
  origin, the device id and the statement's hash) for the ristretto255 key.
* ``identity.rotate``: ``device_id``, ``keys``, ``pop`` and ``authorization``, an Ed25519
  signature by the key being replaced over the same statement.
* ``identity.revoke``: ``device_id``, ``reason``. Written by the log operator; needs no device
  signature because the device's key may be the thing that was compromised.

A key enrolled or rotated in at ledger index ``e`` is valid for signatures presented at indices
``> e`` until it is rotated out or revoked at index ``r``; from ``r + 1`` on it is refused.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import rfc8785

from trustmesh.errors import InputError, LogIntegrityError, ProofError, SignatureError
from trustmesh.identity._keys import DeviceId, DeviceKeys, PublicKeys, check_device_id
from trustmesh.privacy.zk import ProofContext, SchnorrProof, prove_key_knowledge, verify_key_knowledge

__all__ = [
    "ENROLL",
    "REVOKE",
    "ROTATE",
    "DeviceRecord",
    "IdentityRegistry",
    "KeyEpoch",
    "enroll",
    "revoke",
    "rotate",
]

ENROLL, ROTATE, REVOKE = "identity.enroll", "identity.rotate", "identity.revoke"
Role = Literal["device", "site"]
_ROLES = ("device", "site")
_DOMAIN = b"trustmesh/identity/v1\n"


@dataclass(frozen=True, slots=True)
class KeyEpoch:
    """One key's validity: from ledger index ``since`` (exclusive) to ``until`` (inclusive) if ended."""

    keys: PublicKeys
    since: int
    until: int | None = None
    ended_by: str | None = None  # "rotate" | "revoke"

    def valid_at(self, index: int) -> bool:
        """Whether a signature presented at ledger ``index`` may use this key."""
        return self.since < index and (self.until is None or index <= self.until)


@dataclass(slots=True)
class DeviceRecord:
    """Everything the ledger says about one device or site."""

    device_id: DeviceId
    role: str
    epochs: list[KeyEpoch] = field(default_factory=list)
    revoked_at: int | None = None
    revoke_reason: str | None = None

    @property
    def active(self) -> bool:
        """Whether the device currently has a valid key."""
        return bool(self.epochs) and self.epochs[-1].until is None

    @property
    def current(self) -> KeyEpoch:
        """The latest key epoch."""
        return self.epochs[-1]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary (public keys only)."""
        return {
            "device_id": self.device_id,
            "role": self.role,
            "status": "active" if self.active else "revoked",
            "revoked_at": self.revoked_at,
            "revoke_reason": self.revoke_reason,
            "keys": [
                {**e.keys.to_dict(), "since": e.since, "until": e.until, "ended_by": e.ended_by} for e in self.epochs
            ],
        }


def _statement(action: str, origin: str, device_id: str, role: str, keys: PublicKeys, previous: PublicKeys | None) -> bytes:
    doc: dict[str, Any] = {"action": action, "origin": origin, "device_id": device_id, "role": role, "keys": keys.to_dict()}
    if previous is not None:
        doc["previous"] = previous.to_dict()
    return _DOMAIN + rfc8785.dumps(doc)


def _pop_context(origin: str, device_id: str, statement: bytes) -> ProofContext:
    return ProofContext(origin, 0, device_id, hashlib.sha256(statement).digest())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise InputError(f"{what}: not base64") from None


def _make_pop(keys: DeviceKeys, origin: str, device_id: str, statement: bytes) -> dict[str, str]:
    proof = prove_key_knowledge(keys.schnorr, _pop_context(origin, device_id, statement))
    return {"ed25519_signature": _b64(keys.sign(statement)), "schnorr_proof": proof.to_bytes().hex()}


def _check_pop(pop: object, keys: PublicKeys, origin: str, device_id: str, statement: bytes) -> None:
    if not isinstance(pop, dict):
        raise SignatureError("pop: expected an object")
    keys.verify(statement, _unb64(pop.get("ed25519_signature"), "pop.ed25519_signature"))
    try:
        proof = SchnorrProof.from_bytes(bytes.fromhex(str(pop.get("schnorr_proof"))))
        verify_key_knowledge(keys.ristretto255, proof, _pop_context(origin, device_id, statement))
    except (ValueError, ProofError) as exc:
        raise SignatureError(f"pop.schnorr_proof: {exc}") from None


class IdentityRegistry:
    """The device/site key state obtained by replaying identity entries of one log, in order."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self._devices: dict[str, DeviceRecord] = {}
        self.size = 0  # ledger entries replayed

    # ------------------------------------------------------------------ building
    @classmethod
    def from_ledger(cls, ledger: Any) -> IdentityRegistry:
        """Replay every identity entry of ``ledger``; raise LogIntegrityError at a bad entry."""
        reg = cls(ledger.origin)
        n = ledger.size
        reg.apply_entries((i, ledger.entry(i)) for i in range(n))
        reg.size = n
        return reg

    def apply_entries(self, entries: Iterable[tuple[int, Any]]) -> None:
        """Apply ``(index, Entry)`` pairs in index order (non-identity kinds are skipped)."""
        for index, entry in entries:
            if entry.kind not in (ENROLL, ROTATE, REVOKE):
                continue
            try:
                self._apply(index, entry.kind, entry.payload)
            except (InputError, SignatureError) as exc:
                raise LogIntegrityError(f"ledger entry {index} ({entry.kind}): {exc}", index=index) from None
            self.size = max(self.size, index + 1)

    def _apply(self, index: int, kind: str, payload: Any) -> None:
        if not isinstance(payload, dict):
            raise InputError("payload must be an object")
        device_id = check_device_id(str(payload.get("device_id", "")))
        record = self._devices.get(device_id)
        if kind == REVOKE:
            if record is None or not record.active:
                raise InputError(f"device {device_id!r} is not active, cannot revoke")
            record.epochs[-1] = KeyEpoch(record.current.keys, record.current.since, index, "revoke")
            record.revoked_at = index
            record.revoke_reason = str(payload.get("reason", ""))
            return
        keys = PublicKeys.from_dict(payload.get("keys"), field="keys")
        if kind == ENROLL:
            role = payload.get("role")
            if role not in _ROLES:
                raise InputError(f"role must be one of {_ROLES}, got {role!r}")
            if record is not None and record.active:
                raise InputError(f"device {device_id!r} is already enrolled")
            statement = _statement("enroll", self.origin, device_id, str(role), keys, None)
            _check_pop(payload.get("pop"), keys, self.origin, device_id, statement)
            if record is None:
                record = DeviceRecord(device_id, str(role))
                self._devices[device_id] = record
            record.role = str(role)
            record.revoked_at = record.revoke_reason = None
            record.epochs.append(KeyEpoch(keys, index))
            return
        # ROTATE
        if record is None or not record.active:
            raise InputError(f"device {device_id!r} is not active, cannot rotate")
        old = record.current
        statement = _statement("rotate", self.origin, device_id, record.role, keys, old.keys)
        _check_pop(payload.get("pop"), keys, self.origin, device_id, statement)
        old.keys.verify(statement, _unb64(payload.get("authorization"), "authorization"))
        record.epochs[-1] = KeyEpoch(old.keys, old.since, index, "rotate")
        record.epochs.append(KeyEpoch(keys, index))

    # ------------------------------------------------------------------ queries
    def devices(self) -> list[DeviceRecord]:
        """Every device ever enrolled, sorted by id."""
        return [self._devices[k] for k in sorted(self._devices)]

    def get(self, device_id: str) -> DeviceRecord:
        """Return one device's record; InputError if it was never enrolled."""
        try:
            return self._devices[device_id]
        except KeyError:
            raise InputError(f"device {device_id!r} is not enrolled in log {self.origin!r}") from None

    def keys_at(self, device_id: str, at_index: int) -> PublicKeys:
        """Return the key valid for a signature presented at ledger ``at_index``; SignatureError if none."""
        record = self._devices.get(device_id)
        if record is None:
            raise SignatureError(f"device {device_id!r} is not enrolled", index=at_index)
        for epoch in reversed(record.epochs):
            if epoch.valid_at(at_index):
                return epoch.keys
        if record.revoked_at is not None and at_index > record.revoked_at:
            raise SignatureError(f"device {device_id!r} was revoked at ledger index {record.revoked_at}", index=at_index)
        raise SignatureError(f"device {device_id!r} had no valid key at ledger index {at_index}", index=at_index)

    def verify_signature(self, device_id: str, message: bytes, signature: bytes, at_index: int) -> None:
        """Raise SignatureError unless ``signature`` is the device's valid Ed25519 signature at ``at_index``."""
        keys = self.keys_at(device_id, at_index)
        try:
            keys.verify(message, signature)
        except SignatureError:
            raise SignatureError(f"signature by {device_id!r} does not verify with its key at index {at_index}", index=at_index) from None

    def verify_key_proof(self, device_id: str, proof: SchnorrProof, context: ProofContext, at_index: int | None = None) -> None:
        """Raise ProofError unless ``proof`` shows knowledge of the device's ristretto255 secret key."""
        if context.device_id != device_id or context.origin != self.origin:
            raise ProofError(f"proof context is for {context.device_id!r} in {context.origin!r}, not {device_id!r} in {self.origin!r}")
        try:
            keys = self.keys_at(device_id, self.size if at_index is None else at_index)
        except SignatureError as exc:
            raise ProofError(str(exc), index=exc.index) from None
        verify_key_knowledge(keys.ristretto255, proof, context)


def enroll(ledger: Any, device_id: str, keys: DeviceKeys, role: Role = "device") -> int:
    """Append an enrolment entry (with proofs of possession) and return its ledger index."""
    device_id = check_device_id(device_id)
    if role not in _ROLES:
        raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
    reg = IdentityRegistry.from_ledger(ledger)
    if device_id in reg._devices and reg._devices[device_id].active:
        raise InputError(f"device {device_id!r} is already enrolled; rotate or revoke it instead")
    statement = _statement("enroll", ledger.origin, device_id, role, keys.public, None)
    payload = {"device_id": device_id, "role": role, "keys": keys.public.to_dict(),
               "pop": _make_pop(keys, ledger.origin, device_id, statement)}
    return int(ledger.append_one(ENROLL, payload))


def rotate(ledger: Any, device_id: str, old_keys: DeviceKeys, new_keys: DeviceKeys) -> int:
    """Append a rotation entry authorised by the old key; return its ledger index."""
    reg = IdentityRegistry.from_ledger(ledger)
    record = reg.get(device_id)
    if not record.active:
        raise InputError(f"device {device_id!r} is revoked; enrol it again instead")
    if record.current.keys != old_keys.public:
        raise SignatureError(f"the old keys given are not {device_id!r}'s current keys")
    statement = _statement("rotate", ledger.origin, device_id, record.role, new_keys.public, old_keys.public)
    payload = {"device_id": device_id, "keys": new_keys.public.to_dict(),
               "pop": _make_pop(new_keys, ledger.origin, device_id, statement),
               "authorization": _b64(old_keys.sign(statement))}
    return int(ledger.append_one(ROTATE, payload))


def revoke(ledger: Any, device_id: str, reason: str) -> int:
    """Append a revocation entry; signatures presented after it are refused. Return its index."""
    if not reason or len(reason) > 500:
        raise ValueError("reason must be 1-500 characters")
    record = IdentityRegistry.from_ledger(ledger).get(device_id)
    if not record.active:
        raise InputError(f"device {device_id!r} is already revoked")
    return int(ledger.append_one(REVOKE, {"device_id": device_id, "reason": reason}))
