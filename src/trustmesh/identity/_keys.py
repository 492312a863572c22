"""Device and site key material: an Ed25519 signing key and a ristretto255 Schnorr key."""

from __future__ import annotations

import base64
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NewType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustmesh.errors import InputError, ProofError, SignatureError
from trustmesh.privacy.zk import Point, SchnorrKeyPair

__all__ = ["DeviceId", "DeviceKeys", "PublicKeys", "check_device_id"]

DeviceId = NewType("DeviceId", str)
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
ED25519_FILE = "ed25519.pem"
SCHNORR_FILE = "schnorr.key"


def check_device_id(value: str) -> DeviceId:
    """Return ``value`` as a DeviceId or raise InputError (1-128 chars of ``A-Za-z0-9._:-``)."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InputError(f"device id must be 1-128 characters of A-Z a-z 0-9 . _ : - (starting alphanumeric), got {value!r}")
    return DeviceId(value)


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """What the ledger records for a device: its Ed25519 and ristretto255 public keys."""

    ed25519: bytes
    ristretto255: Point

    def __post_init__(self) -> None:
        if len(self.ed25519) != 32:
            raise InputError(f"ed25519 public key must be 32 bytes, got {len(self.ed25519)}")

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check an Ed25519 signature; raise SignatureError if it does not verify."""
        try:
            Ed25519PublicKey.from_public_bytes(self.ed25519).verify(signature, message)
        except (InvalidSignature, ValueError):
            raise SignatureError("Ed25519 signature does not verify") from None

    def to_dict(self) -> dict[str, str]:
        """Return the JSON form (base64 Ed25519, hex ristretto255)."""
        return {"ed25519": base64.b64encode(self.ed25519).decode("ascii"), "ristretto255": self.ristretto255.to_bytes().hex()}

    @classmethod
    def from_dict(cls, doc: object, *, field: str = "keys") -> PublicKeys:
        """Parse and validate the JSON form; raise InputError naming the bad field."""
        if not isinstance(doc, dict):
            raise InputError(f"{field}: expected an object")
        try:
            ed = base64.b64decode(str(doc["ed25519"]), validate=True)
            rp = Point.from_bytes(bytes.fromhex(str(doc["ristretto255"])), field=f"{field}.ristretto255")
        except KeyError as exc:
            raise InputError(f"{field}: missing {exc.args[0]!r}") from None
        except (ValueError, ProofError) as exc:
            raise InputError(f"{field}: {exc}") from None
        if rp.is_identity():
            raise InputError(f"{field}.ristretto255: the identity element is not a key")
        return cls(ed, rp)


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    """A device's private keys (never logged, printed or put in the ledger)."""

    signing: Ed25519PrivateKey = field(repr=False)
    schnorr: SchnorrKeyPair = field(repr=False)

    @classmethod
    def generate(cls) -> DeviceKeys:
        """Make fresh keys from OS randomness."""
        return cls(Ed25519PrivateKey.generate(), SchnorrKeyPair.generate())

    @property
    def public(self) -> PublicKeys:
        """The public half."""
        raw = self.signing.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKeys(raw, self.schnorr.public)

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` with Ed25519 (RFC 8032)."""
        return self.signing.sign(message)

    def save(self, directory: Path) -> None:
        """Write both private keys into ``directory`` as 0600 files (refuse to overwrite)."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = self.signing.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for name, data in ((ED25519_FILE, pem), (SCHNORR_FILE, self.schnorr.secret_bytes().hex().encode() + b"\n")):
            target = directory / name
            if target.exists():
                raise InputError(f"{target}: a key already exists; refusing to overwrite it")
            _write_private(target, data)

    @classmethod
    def load(cls, directory: Path) -> DeviceKeys:
        """Load keys written by :meth:`save`; raise InputError naming a missing or bad file."""
        ed_path, sc_path = directory / ED25519_FILE, directory / SCHNORR_FILE
        for p in (ed_path, sc_path):
            if not p.is_file():
                raise InputError(f"{p}: key file not found")
        try:
            key = serialization.load_pem_private_key(ed_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{ed_path}: not a PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InputError(f"{ed_path}: not an Ed25519 key")
        try:
            schnorr = SchnorrKeyPair.from_secret_bytes(bytes.fromhex(sc_path.read_text(encoding="ascii").strip()))
        except (ValueError, ProofError) as exc:
            raise InputError(f"{sc_path}: not a ristretto255 secret key ({exc})") from None
        return cls(key, schnorr)


def _write_private(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
