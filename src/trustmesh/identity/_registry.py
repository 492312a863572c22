"""Enrolment, key rotation and revocation as signed ledger entries, and the registry that replays them.

Every identity entry is a signed statement, checked when the registry replays the log; an entry
that does not verify is reported in :attr:`IdentityRegistry.rejected` and skipped, never fatal, so
a writer who can append to the log cannot take over, revoke or wedge an identity.

Entry kinds (payloads hold public material only):

* ``identity.admin``: ``action`` (``add``/``remove``), ``admin`` (an Ed25519 note vkey),
  ``seq``, ``signature`` -- by the **log's own key** (the root of trust the log already has).
* ``identity.enroll``: ``device_id``, ``role``, ``keys``, ``seq``, ``pop`` (proof of possession:
  an Ed25519 signature by the new key over the statement and a Schnorr proof, bound to the log
  origin, the device id and the statement's hash), and ``admin`` + ``authorization``: the name
  of an identity admin active at that point of the log and its signature over the statement.
* ``identity.rotate``: ``device_id``, ``keys``, ``seq``, ``pop`` and ``authorization``, a
  signature by the key being replaced over the same statement.
* ``identity.revoke``: ``device_id``, ``reason``, ``seq``, ``by`` (``device`` or ``admin``),
  ``admin`` (when by an admin) and ``authorization``: a signature by the device's current key or
  by an active admin over a statement naming the keys being revoked.

Statements are ``trustmesh/identity/v2\n`` + RFC 8785 JSON (origin, action, device, keys and
``seq``). ``seq`` counts the operations already accepted for that device (for ``identity.admin``:
admin operations), so an old, validly signed entry posted again is refused. Statements never end
in a newline, so a signature over one can never pass as a signed-note signature.

A key enrolled or rotated in at ledger index ``e`` is valid for signatures presented at indices
``> e`` until it is rotated out or revoked at index ``r``; from ``r + 1`` on it is refused.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import rfc8785

from trustmesh.errors import InputError, ProofError, SignatureError, TrustmeshError
from trustmesh.identity._keys import DeviceId, DeviceKeys, PublicKeys, check_device_id
from trustmesh.ledger import NoteSigner, NoteVerifier
from trustmesh.privacy.zk import ProofContext, SchnorrProof, prove_key_knowledge, verify_key_knowledge

__all__ = [
    "ADMIN",
    "ENROLL",
    "IDENTITY_KINDS",
    "REVOKE",
    "ROTATE",
    "DeviceRecord",
    "IdentityRegistry",
    "KeyEpoch",
    "RejectedEntry",
    "add_admin",
    "enroll",
    "remove_admin",
    "revoke",
    "rotate",
]

log = logging.getLogger(__name__)

ADMIN, ENROLL, ROTATE, REVOKE = "identity.admin", "identity.enroll", "identity.rotate", "identity.revoke"
IDENTITY_KINDS = frozenset({ADMIN, ENROLL, ROTATE, REVOKE})
Role = Literal["device", "site"]
_ROLES = ("device", "site")
_DOMAIN = b"trustmesh/identity/v2\n"
MAX_REASON_CHARS = 500


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
    seq: int = 0  # identity operations accepted for this device

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
            "seq": self.seq,
            "keys": [
                {**e.keys.to_dict(), "since": e.since, "until": e.until, "ended_by": e.ended_by} for e in self.epochs
            ],
        }


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    """An identity entry the registry refused on replay (and skipped): where, what kind, why."""

    index: int
    kind: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"index": self.index, "kind": self.kind, "reason": self.reason}


@dataclass(slots=True)
class _Admin:
    verifier: NoteVerifier
    since: int


def _statement(doc: dict[str, Any]) -> bytes:
    return _DOMAIN + rfc8785.dumps(doc)


def _device_statement(action: str, origin: str, device_id: str, seq: int, **fields: Any) -> bytes:
    return _statement({"action": action, "origin": origin, "device_id": device_id, "seq": seq, **fields})


def _admin_statement(action: str, origin: str, admin_vkey: str, seq: int) -> bytes:
    return _statement({"action": f"admin.{action}", "origin": origin, "admin": admin_vkey, "seq": seq})


def _pop_context(origin: str, device_id: str, statement: bytes) -> ProofContext:
    return ProofContext(origin, 0, device_id, hashlib.sha256(statement).digest())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise InputError(f"{what}: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what}: not base64") from None


def _int_field(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{name}: expected a non-negative integer, got {value!r}")
    return value


def _make_pop(keys: DeviceKeys, origin: str, device_id: str, statement: bytes) -> dict[str, str]:
    proof = prove_key_knowledge(keys.schnorr, _pop_context(origin, device_id, statement))
    return {"ed25519_signature": _b64(keys.sign(statement)), "schnorr_proof": proof.to_bytes().hex()}


def _check_pop(pop: object, keys: PublicKeys, origin: str, device_id: str, statement: bytes) -> None:
    if not isinstance(pop, dict):
        raise SignatureError("pop: expected an object")
    try:
        keys.verify(statement, _unb64(pop.get("ed25519_signature"), "pop.ed25519_signature"))
    except SignatureError:
        raise SignatureError("proof of possession (pop.ed25519_signature) does not verify") from None
    try:
        proof = SchnorrProof.from_bytes(bytes.fromhex(str(pop.get("schnorr_proof"))))
        verify_key_knowledge(keys.ristretto255, proof, _pop_context(origin, device_id, statement))
    except (ValueError, ProofError) as exc:
        raise SignatureError(f"pop.schnorr_proof: {exc}") from None


class IdentityRegistry:
    """The device/site key state obtained by replaying identity entries of one log, in order.

    ``log_key`` is the log's verifier key: it signs ``identity.admin`` entries. Entries that do not
    verify are skipped and listed in :attr:`rejected`.
    """

    def __init__(self, origin: str, log_key: NoteVerifier | None = None) -> None:
        self.origin = origin
        self.log_key = log_key
        self._devices: dict[str, DeviceRecord] = {}
        self._admins: dict[str, _Admin] = {}
        self.admin_seq = 0
        self.rejected: list[RejectedEntry] = []
        self.size = 0  # ledger entries replayed

    # ------------------------------------------------------------------ building
    @classmethod
    def from_ledger(cls, ledger: Any) -> IdentityRegistry:
        """Replay every identity entry of ``ledger`` (invalid ones are skipped and listed in ``rejected``)."""
        reg = cls(ledger.origin, ledger.verifier)
        reg.catch_up(ledger)
        return reg

    def catch_up(self, ledger: Any) -> None:
        """Replay the entries ``ledger`` gained since this registry last looked."""
        n = ledger.size
        self.apply_entries((i, ledger.entry(i)) for i in range(self.size, n))
        self.size = max(self.size, n)

    def copy(self) -> IdentityRegistry:
        """Return an independent copy (to try entries without changing this registry)."""
        return copy.deepcopy(self)

    def apply_entries(self, entries: Iterable[tuple[int, Any]]) -> None:
        """Apply ``(index, Entry)`` pairs in index order (non-identity kinds are skipped)."""
        for index, entry in entries:
            self.size = max(self.size, index + 1)
            if entry.kind not in IDENTITY_KINDS:
                continue
            reason = self.try_apply(index, entry.kind, entry.payload)
            if reason is not None:
                self.rejected.append(RejectedEntry(index, entry.kind, reason))
                log.warning("identity entry %d (%s) skipped: %s", index, entry.kind, reason)

    def try_apply(self, index: int, kind: str, payload: Any) -> str | None:
        """Apply one identity operation; return None if accepted, else why it was refused (state unchanged)."""
        try:
            self._apply(index, kind, payload)
        except (TrustmeshError, ValueError, TypeError, KeyError) as exc:
            return str(exc) or type(exc).__name__
        return None

    def _active_admin(self, name: object, index: int) -> _Admin:
        admin = self._admins.get(name) if isinstance(name, str) else None
        if admin is None or admin.since >= index:
            raise SignatureError(f"{str(name)[:80]!r} is not an identity admin of log {self.origin!r} at this index")
        return admin

    def _apply(self, index: int, kind: str, payload: Any) -> None:
        if not isinstance(payload, dict):
            raise InputError("payload must be an object")
        if kind == ADMIN:
            self._apply_admin(index, payload)
            return
        device_id = check_device_id(payload.get("device_id"))  # type: ignore[arg-type]  # checked to be a str there
        seq = _int_field(payload, "seq")
        record = self._devices.get(device_id)
        expected = 0 if record is None else record.seq
        if seq != expected:
            raise SignatureError(f"seq {seq} is not the device's next operation ({expected}): a replayed entry?")
        if kind == REVOKE:
            self._apply_revoke(index, device_id, seq, record, payload)
        elif kind == ENROLL:
            self._apply_enroll(index, device_id, seq, record, payload)
        else:
            self._apply_rotate(index, device_id, seq, record, payload)

    def _apply_admin(self, index: int, payload: dict[str, Any]) -> None:
        if self.log_key is None:
            raise SignatureError("no log key to check identity.admin entries against")
        action = payload.get("action")
        if action not in ("add", "remove"):
            raise InputError(f"action must be 'add' or 'remove', got {action!r}")
        vkey = payload.get("admin")
        if not isinstance(vkey, str):
            raise InputError("admin: expected a verifier key string")
        admin = NoteVerifier.from_vkey(vkey)
        seq = _int_field(payload, "seq")
        if seq != self.admin_seq:
            raise SignatureError(f"seq {seq} is not the next admin operation ({self.admin_seq}): a replayed entry?")
        statement = _admin_statement(str(action), self.origin, vkey, seq)
        try:
            self.log_key.verify(statement, _unb64(payload.get("signature"), "signature"))
        except SignatureError:
            raise SignatureError("identity.admin entry is not signed by the log key") from None
        if action == "add":
            if admin.name in self._admins:
                raise InputError(f"identity admin {admin.name!r} already exists")
            self._admins[admin.name] = _Admin(admin, index)
        else:
            held = self._admins.get(admin.name)
            if held is None or held.verifier != admin:
                raise InputError(f"identity admin {admin.name!r} with this key does not exist")
            del self._admins[admin.name]
        self.admin_seq += 1

    def _apply_enroll(self, index: int, device_id: str, seq: int, record: DeviceRecord | None,
                      payload: dict[str, Any]) -> None:
        keys = PublicKeys.from_dict(payload.get("keys"), field="keys")
        role = payload.get("role")
        if role not in _ROLES:
            raise InputError(f"role must be one of {_ROLES}, got {role!r}")
        if record is not None and record.active:
            raise InputError(f"device {device_id!r} is already enrolled")
        statement = _device_statement("enroll", self.origin, device_id, seq, role=role, keys=keys.to_dict())
        admin = self._active_admin(payload.get("admin"), index)
        try:
            admin.verifier.verify(statement, _unb64(payload.get("authorization"), "authorization"))
        except SignatureError:
            raise SignatureError(f"enrolment is not authorised by admin {admin.verifier.name!r}") from None
        _check_pop(payload.get("pop"), keys, self.origin, device_id, statement)
        if record is None:
            record = DeviceRecord(DeviceId(device_id), str(role))
            self._devices[device_id] = record
        record.role = str(role)
        record.revoked_at = record.revoke_reason = None
        record.epochs.append(KeyEpoch(keys, index))
        record.seq += 1

    def _apply_rotate(self, index: int, device_id: str, seq: int, record: DeviceRecord | None,
                      payload: dict[str, Any]) -> None:
        if record is None or not record.active:
            raise InputError(f"device {device_id!r} is not active, cannot rotate")
        keys = PublicKeys.from_dict(payload.get("keys"), field="keys")
        old = record.current
        statement = _device_statement("rotate", self.origin, device_id, seq, role=record.role,
                                      keys=keys.to_dict(), previous=old.keys.to_dict())
        _check_pop(payload.get("pop"), keys, self.origin, device_id, statement)
        try:
            old.keys.verify(statement, _unb64(payload.get("authorization"), "authorization"))
        except SignatureError:
            raise SignatureError("rotation is not authorised by the key it replaces") from None
        record.epochs[-1] = KeyEpoch(old.keys, old.since, index, "rotate")
        record.epochs.append(KeyEpoch(keys, index))
        record.seq += 1

    def _apply_revoke(self, index: int, device_id: str, seq: int, record: DeviceRecord | None,
                      payload: dict[str, Any]) -> None:
        if record is None or not record.active:
            raise InputError(f"device {device_id!r} is not active, cannot revoke")
        reason = payload.get("reason")
        if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON_CHARS:
            raise InputError(f"reason must be 1-{MAX_REASON_CHARS} characters")
        statement = _device_statement("revoke", self.origin, device_id, seq, reason=reason,
                                      keys=record.current.keys.to_dict())
        sig = _unb64(payload.get("authorization"), "authorization")
        by = payload.get("by")
        if by == "device":
            try:
                record.current.keys.verify(statement, sig)
            except SignatureError:
                raise SignatureError("revocation is not signed by the device's current key") from None
        elif by == "admin":
            admin = self._active_admin(payload.get("admin"), index)
            try:
                admin.verifier.verify(statement, sig)
            except SignatureError:
                raise SignatureError(f"revocation is not signed by admin {admin.verifier.name!r}") from None
        else:
            raise InputError(f"by must be 'device' or 'admin', got {by!r}")
        record.epochs[-1] = KeyEpoch(record.current.keys, record.current.since, index, "revoke")
        record.revoked_at = index
        record.revoke_reason = reason
        record.seq += 1

    def admins(self) -> list[str]:
        """The names of the identity admins currently active, sorted."""
        return sorted(self._admins)

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


def _registry(ledger: Any) -> IdentityRegistry:
    return IdentityRegistry.from_ledger(ledger)


def _admin_entry(ledger: Any, action: str, admin_vkey: str) -> int:
    reg = _registry(ledger)
    statement = _admin_statement(action, ledger.origin, admin_vkey, reg.admin_seq)
    payload = {"action": action, "admin": admin_vkey, "seq": reg.admin_seq,
               "signature": _b64(ledger.sign_statement(statement))}
    reason = reg.copy().try_apply(ledger.size, ADMIN, payload)
    if reason is not None:
        raise InputError(reason)
    return int(ledger.append_one(ADMIN, payload))


def add_admin(ledger: Any, name: str, key_file: Path) -> tuple[NoteSigner, int]:
    """Create an identity admin key (written 0600 to ``key_file``, never printed) and record it.

    The ``identity.admin`` entry is signed by the log's own key, so this needs a ledger opened
    with its private key. Return the signer and the entry's ledger index.
    """
    signer = NoteSigner.generate(name)
    reg = _registry(ledger)
    if signer.name in reg.admins():
        raise InputError(f"identity admin {name!r} already exists in log {ledger.origin!r}")
    signer.save(Path(key_file))
    return signer, _admin_entry(ledger, "add", signer.verifier.to_vkey())


def remove_admin(ledger: Any, admin_vkey: str) -> int:
    """Record (signed by the log key) that an identity admin's key no longer authorises anything."""
    return _admin_entry(ledger, "remove", NoteVerifier.from_vkey(admin_vkey).to_vkey())


def _check_admin(reg: IdentityRegistry, admin: NoteSigner, origin: str) -> None:
    held = reg._admins.get(admin.name)
    if held is None or held.verifier != admin.verifier:
        raise InputError(f"{admin.name!r} (this key) is not an identity admin of log {origin!r} "
                         "(run `trustmesh identity admin init`)")


def _append_checked(ledger: Any, reg: IdentityRegistry, kind: str, payload: dict[str, Any]) -> int:
    reason = reg.copy().try_apply(max(ledger.size, reg.size), kind, payload)
    if reason is not None:
        raise SignatureError(f"{kind} for {payload.get('device_id')!r} would not verify: {reason}")
    return int(ledger.append_one(kind, payload))


def enroll(ledger: Any, device_id: str, keys: DeviceKeys, role: Role = "device", *, admin: NoteSigner) -> int:
    """Append an enrolment authorised by ``admin`` (with proofs of possession); return its ledger index."""
    device_id = check_device_id(device_id)
    if role not in _ROLES:
        raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
    reg = _registry(ledger)
    record = reg._devices.get(device_id)
    if record is not None and record.active:
        raise InputError(f"device {device_id!r} is already enrolled; rotate or revoke it instead")
    _check_admin(reg, admin, ledger.origin)
    seq = 0 if record is None else record.seq
    statement = _device_statement("enroll", ledger.origin, device_id, seq, role=role, keys=keys.public.to_dict())
    payload = {"device_id": device_id, "role": role, "keys": keys.public.to_dict(), "seq": seq,
               "pop": _make_pop(keys, ledger.origin, device_id, statement),
               "admin": admin.name, "authorization": _b64(admin.sign(statement))}
    return _append_checked(ledger, reg, ENROLL, payload)


def rotate(ledger: Any, device_id: str, old_keys: DeviceKeys, new_keys: DeviceKeys) -> int:
    """Append a rotation entry authorised by the old key; return its ledger index."""
    reg = _registry(ledger)
    record = reg.get(device_id)
    if not record.active:
        raise InputError(f"device {device_id!r} is revoked; enrol it again instead")
    if record.current.keys != old_keys.public:
        raise SignatureError(f"the old keys given are not {device_id!r}'s current keys")
    statement = _device_statement("rotate", ledger.origin, device_id, record.seq, role=record.role,
                                  keys=new_keys.public.to_dict(), previous=old_keys.public.to_dict())
    payload = {"device_id": device_id, "keys": new_keys.public.to_dict(), "seq": record.seq,
               "pop": _make_pop(new_keys, ledger.origin, device_id, statement),
               "authorization": _b64(old_keys.sign(statement))}
    return _append_checked(ledger, reg, ROTATE, payload)


def revoke(ledger: Any, device_id: str, reason: str, *, admin: NoteSigner | None = None,
           device_keys: DeviceKeys | None = None) -> int:
    """Append a revocation signed by an identity admin or by the device's own current key.

    Signatures presented after it are refused. Return its ledger index.
    """
    if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON_CHARS:
        raise ValueError(f"reason must be 1-{MAX_REASON_CHARS} characters")
    if (admin is None) == (device_keys is None):
        raise ValueError("revoke needs exactly one of admin= or device_keys=")
    reg = _registry(ledger)
    record = reg.get(device_id)
    if not record.active:
        raise InputError(f"device {device_id!r} is already revoked")
    statement = _device_statement("revoke", ledger.origin, device_id, record.seq, reason=reason,
                                  keys=record.current.keys.to_dict())
    payload: dict[str, Any] = {"device_id": device_id, "reason": reason, "seq": record.seq}
    if admin is not None:
        _check_admin(reg, admin, ledger.origin)
        payload.update(by="admin", admin=admin.name, authorization=_b64(admin.sign(statement)))
    elif device_keys is not None:
        if device_keys.public != record.current.keys:
            raise SignatureError(f"the keys given are not {device_id!r}'s current keys")
        payload.update(by="device", authorization=_b64(device_keys.sign(statement)))
    return _append_checked(ledger, reg, REVOKE, payload)
