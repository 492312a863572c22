"""Identity entries in a real ledger: enrol, rotate, revoke, and what every verifier then refuses."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustmesh.errors import InputError, ProofError, SignatureError
from trustmesh.identity import (
    ADMIN,
    ENROLL,
    REVOKE,
    ROTATE,
    DeviceKeys,
    IdentityRegistry,
    add_admin,
    enroll as _enroll,
    remove_admin,
    revoke as _revoke,
    rotate,
)
from trustmesh.ledger import Ledger, NoteSigner
from trustmesh.privacy.zk import ProofContext, prove_key_knowledge

ORIGIN = "trustmesh.test-identity"


@pytest.fixture()
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.create(tmp_path / "log", ORIGIN) as lg:
        signer, _ = add_admin(lg, "admin.test/ops", tmp_path / "admin.key")
        lg.test_admin = signer  # type: ignore[attr-defined]
        yield lg


def enroll(ledger: Ledger, device_id: str, keys: DeviceKeys, role: str = "device") -> int:
    return _enroll(ledger, device_id, keys, role, admin=ledger.test_admin)  # type: ignore[attr-defined,arg-type]


def revoke(ledger: Ledger, device_id: str, reason: str) -> int:
    return _revoke(ledger, device_id, reason, admin=ledger.test_admin)  # type: ignore[attr-defined]


def test_enrolled_device_signatures_verify(ledger: Ledger) -> None:
    keys = DeviceKeys.generate()
    idx = enroll(ledger, "plc-7", keys, role="device")
    reg = IdentityRegistry.from_ledger(ledger)
    reg.verify_signature("plc-7", b"reading=42", keys.sign(b"reading=42"), at_index=idx + 1)
    with pytest.raises(SignatureError, match="does not verify"):
        reg.verify_signature("plc-7", b"reading=43", keys.sign(b"reading=42"), at_index=idx + 1)
    with pytest.raises(SignatureError, match="no valid key"):
        reg.verify_signature("plc-7", b"reading=42", keys.sign(b"reading=42"), at_index=idx)  # before enrolment took effect
    with pytest.raises(SignatureError, match="not enrolled"):
        reg.verify_signature("nobody", b"x", keys.sign(b"x"), at_index=idx + 1)


def test_revoked_key_is_refused_after_revocation_by_every_reader(ledger: Ledger, tmp_path: Path) -> None:
    keys = DeviceKeys.generate()
    enroll(ledger, "cam-1", keys)
    ledger.append_one("alert", {"n": 1})
    r = revoke(ledger, "cam-1", "device stolen")
    sig = keys.sign(b"late message")
    # a second, independent reader (read-only open of the same folder) reaches the same verdict
    with Ledger.open(ledger.directory, read_only=True) as other:
        reg = IdentityRegistry.from_ledger(other)
    with pytest.raises(SignatureError, match="revoked at ledger index"):
        reg.verify_signature("cam-1", b"late message", sig, at_index=r + 1)
    reg.verify_signature("cam-1", b"late message", sig, at_index=r)  # made before the revocation
    assert reg.get("cam-1").to_dict()["status"] == "revoked"
    with pytest.raises(InputError, match="already revoked"):
        revoke(ledger, "cam-1", "again")


def test_rotation_switches_keys_at_its_index(ledger: Ledger) -> None:
    old, new = DeviceKeys.generate(), DeviceKeys.generate()
    enroll(ledger, "site-a", old, role="site")
    t = rotate(ledger, "site-a", old, new)
    reg = IdentityRegistry.from_ledger(ledger)
    reg.verify_signature("site-a", b"m", old.sign(b"m"), at_index=t)
    with pytest.raises(SignatureError):
        reg.verify_signature("site-a", b"m", old.sign(b"m"), at_index=t + 1)
    reg.verify_signature("site-a", b"m", new.sign(b"m"), at_index=t + 1)
    with pytest.raises(SignatureError, match="not .*current keys"):
        rotate(ledger, "site-a", old, DeviceKeys.generate())  # the replaced key cannot rotate again


def test_schnorr_key_proof_against_the_registry(ledger: Ledger) -> None:
    keys = DeviceKeys.generate()
    enroll(ledger, "dev-9", keys)
    reg = IdentityRegistry.from_ledger(ledger)
    ctx = ProofContext.fresh(ORIGIN, 5, "dev-9")
    reg.verify_key_proof("dev-9", prove_key_knowledge(keys.schnorr, ctx), ctx)
    with pytest.raises(ProofError):
        reg.verify_key_proof("dev-9", prove_key_knowledge(DeviceKeys.generate().schnorr, ctx), ctx)
    other = ProofContext.fresh(ORIGIN, 5, "dev-10")
    with pytest.raises(ProofError, match="context"):
        reg.verify_key_proof("dev-9", prove_key_knowledge(keys.schnorr, other), other)


def test_forged_enrolment_without_possession_is_rejected(ledger: Ledger) -> None:
    keys = DeviceKeys.generate()
    i = enroll(ledger, "dev-1", keys)
    forged = dict(ledger.entry(i).payload)
    forged["device_id"] = "dev-2"  # reuse dev-1's proofs for another id
    bad = ledger.append_one(ENROLL, forged)
    reg = IdentityRegistry.from_ledger(ledger)  # reported and skipped, not fatal
    assert [(r.index, r.kind) for r in reg.rejected] == [(bad, ENROLL)]
    with pytest.raises(InputError, match="not enrolled"):
        reg.get("dev-2")
    assert reg.get("dev-1").active


def test_rotation_not_authorised_by_the_old_key_is_rejected(ledger: Ledger) -> None:
    keys, new = DeviceKeys.generate(), DeviceKeys.generate()
    enroll(ledger, "dev-1", keys)
    t = rotate(ledger, "dev-1", keys, new)
    payload = dict(ledger.entry(t).payload)
    payload["authorization"] = base64.b64encode(new.sign(b"whatever")).decode()
    payload["seq"] = 2
    bad = ledger.append_one(ROTATE, payload)
    reg = IdentityRegistry.from_ledger(ledger)
    assert [r.index for r in reg.rejected] == [bad] and "does not verify" in reg.rejected[0].reason
    assert reg.get("dev-1").current.keys == new.public


def test_bad_ids_and_double_enrolment(ledger: Ledger) -> None:
    keys = DeviceKeys.generate()
    with pytest.raises(InputError, match="device id"):
        enroll(ledger, "bad id with spaces", keys)
    enroll(ledger, "dev-1", keys)
    with pytest.raises(InputError, match="already enrolled"):
        enroll(ledger, "dev-1", DeviceKeys.generate())
    with pytest.raises(InputError, match="not enrolled"):
        IdentityRegistry.from_ledger(ledger).get("ghost")


def test_keys_are_saved_0600_and_reload(tmp_path: Path) -> None:
    keys = DeviceKeys.generate()
    keys.save(tmp_path / "k")
    for f in (tmp_path / "k").iterdir():
        assert f.stat().st_mode & 0o777 == 0o600
    assert DeviceKeys.load(tmp_path / "k").public == keys.public
    with pytest.raises(InputError, match="refusing to overwrite"):
        keys.save(tmp_path / "k")
    (tmp_path / "k" / "schnorr.key").write_text("zz")
    with pytest.raises(InputError, match="schnorr.key"):
        DeviceKeys.load(tmp_path / "k")
    with pytest.raises(InputError, match="not found"):
        DeviceKeys.load(tmp_path / "missing")
    assert keys.schnorr.secret_bytes().hex() not in repr(keys)


def test_writer_cannot_take_over_a_device_with_unsigned_revoke_and_enroll(ledger: Ledger) -> None:
    """Issue 14: a plain writer appended identity.revoke then identity.enroll with fresh keys and owned the device."""
    keys, attacker = DeviceKeys.generate(), DeviceKeys.generate()
    e = enroll(ledger, "plc-7", keys)
    r = ledger.append_one(REVOKE, {"device_id": "plc-7", "reason": "x", "seq": 1, "by": "admin",
                                   "admin": "admin.test/ops", "authorization": base64.b64encode(b"\0" * 64).decode()})
    rogue_admin = NoteSigner.generate("admin.test/ops")  # same name, not the registered key
    with pytest.raises(SignatureError):
        _revoke(ledger, "plc-7", "stolen", device_keys=attacker)
    forged = dict(ledger.entry(e).payload)
    forged["keys"] = attacker.public.to_dict()
    forged["seq"] = 1
    x = ledger.append_one(ENROLL, forged)
    reg = IdentityRegistry.from_ledger(ledger)
    assert [j.index for j in reg.rejected] == [r, x]
    assert reg.get("plc-7").active and reg.get("plc-7").current.keys == keys.public
    with pytest.raises(InputError, match="not an identity admin"):
        _enroll(ledger, "plc-8", attacker, admin=rogue_admin)


def test_revoke_of_unknown_device_is_skipped_and_replay_goes_on(ledger: Ledger) -> None:
    """Issue 14: one identity.revoke for an unknown device made identity replay fail for ever."""
    bad = ledger.append_one(REVOKE, {"device_id": "ghost", "reason": "x"})
    junk = ledger.append_one(ENROLL, {"device_id": 5, "keys": "nope"})
    keys = DeviceKeys.generate()
    later = enroll(ledger, "cam-2", keys)
    reg = IdentityRegistry.from_ledger(ledger)
    assert [j.index for j in reg.rejected] == [bad, junk]
    assert reg.get("cam-2").current.since == later
    reg.verify_signature("cam-2", b"m", keys.sign(b"m"), at_index=later + 1)


def test_device_may_revoke_itself_and_old_entries_cannot_be_replayed(ledger: Ledger) -> None:
    keys = DeviceKeys.generate()
    e = enroll(ledger, "dev-3", keys)
    r = _revoke(ledger, "dev-3", "retired", device_keys=keys)
    again = ledger.append_one(ENROLL, ledger.entry(e).payload)  # the admin-signed enrolment, posted again
    reg = IdentityRegistry.from_ledger(ledger)
    assert reg.get("dev-3").revoked_at == r and [j.index for j in reg.rejected] == [again]
    assert "seq" in reg.rejected[0].reason
    enroll(ledger, "dev-3", keys)  # a fresh admin-signed enrolment is accepted
    assert IdentityRegistry.from_ledger(ledger).get("dev-3").active


def test_admin_entries_need_the_log_key_and_removal_ends_authority(ledger: Ledger, tmp_path: Path) -> None:
    forged = NoteSigner.generate("evil.test/admin")
    stmt_sig = base64.b64encode(forged.sign(b"anything")).decode()
    bad = ledger.append_one(ADMIN, {"action": "add", "admin": forged.verifier.to_vkey(), "seq": 1, "signature": stmt_sig})
    reg = IdentityRegistry.from_ledger(ledger)
    assert reg.admins() == ["admin.test/ops"] and [j.index for j in reg.rejected] == [bad]
    remove_admin(ledger, ledger.test_admin.verifier.to_vkey())  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="not an identity admin"):
        enroll(ledger, "dev-4", DeviceKeys.generate())
    with Ledger.open(ledger.directory, read_only=True) as ro, pytest.raises(InputError, match="no signing key"):
        add_admin(ro, "admin.test/two", tmp_path / "two.key")
    assert (tmp_path / "admin.key").stat().st_mode & 0o777 == 0o600
