"""Identity entries in a real ledger: enrol, rotate, revoke, and what every verifier then refuses."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustmesh.errors import InputError, LogIntegrityError, ProofError, SignatureError
from trustmesh.identity import ENROLL, ROTATE, DeviceKeys, IdentityRegistry, enroll, revoke, rotate
from trustmesh.ledger import Ledger
from trustmesh.privacy.zk import ProofContext, prove_key_knowledge

ORIGIN = "trustmesh.test-identity"


@pytest.fixture()
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.create(tmp_path / "log", ORIGIN) as lg:
        yield lg


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
    keys, attacker = DeviceKeys.generate(), DeviceKeys.generate()
    enroll(ledger, "dev-1", keys)
    entry = ledger.entry(0)
    forged = dict(entry.payload)
    forged["device_id"] = "dev-2"  # reuse dev-1's proofs for another id
    ledger.append_one(ENROLL, forged)
    with pytest.raises(LogIntegrityError, match="entry 1"):
        IdentityRegistry.from_ledger(ledger)
    assert attacker.public != keys.public


def test_rotation_not_authorised_by_the_old_key_is_rejected(ledger: Ledger) -> None:
    keys, new = DeviceKeys.generate(), DeviceKeys.generate()
    enroll(ledger, "dev-1", keys)
    rotate(ledger, "dev-1", keys, new)
    payload = dict(ledger.entry(1).payload)
    payload["authorization"] = base64.b64encode(new.sign(b"whatever")).decode()
    ledger.append_one(ROTATE, payload)
    with pytest.raises(LogIntegrityError, match="entry 2"):
        IdentityRegistry.from_ledger(ledger)


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
