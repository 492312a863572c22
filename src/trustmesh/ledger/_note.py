"""C2SP signed-note with Ed25519 keys (https://c2sp.org/signed-note).

A note is ``text`` (ending in a newline), a blank line, then signature lines
``— <key name> base64(key ID || signature)``. The key ID is
``SHA-256(name || 0x0A || type || public key)[:4]``; type 0x01 is a plain Ed25519 note signature,
0x04 a timestamped witness cosignature (c2sp.org/tlog-cosignature).

Keys use the verifier-key ("vkey") format ``<name>+<key ID as 8 hex digits>+base64(type || pubkey)``
and, for private keys, ``PRIVATE+KEY+<name>+<key ID>+base64(type || 32-byte seed)`` (the format of
golang.org/x/mod/sumdb/note). Private keys are written with mode 0600 and never printed or logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, PublicFormat, NoEncryption

from trustmesh.errors import CheckpointError, InputError, SignatureError

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "SignedNote",
    "key_id",
    "write_private_file",
]

ALG_ED25519: Final = 0x01
ALG_COSIGNATURE_V1: Final = 0x04
_DASH: Final = "\u2014 "
MAX_NOTE_BYTES: Final = 1 << 20
MAX_SIGNATURES: Final = 100


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or any(c.isspace() or c == "+" for c in name):
        raise InputError(f"key name must be non-empty without spaces or '+', got {name!r}")
    if any(ord(c) < 0x20 for c in name):
        raise InputError(f"key name must not contain control characters, got {name!r}")
    return name


def key_id(name: str, alg: int, public_key: bytes) -> int:
    """Return the signed-note key ID: the first 4 bytes (big-endian) of SHA-256(name || 0x0A || alg || pubkey)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def write_private_file(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (refusing to overwrite) and write ``text`` to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A public Ed25519 note key: name, signature type and the 32-byte public key."""

    name: str
    alg: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise InputError(f"unsupported signature type 0x{self.alg:02x}; supported: 0x01, 0x04")
        if len(self.public_key) != 32:
            raise InputError(f"Ed25519 public key must be 32 bytes, got {len(self.public_key)}")

    @property
    def key_id(self) -> int:
        """The 32-bit key ID of this key."""
        return key_id(self.name, self.alg, self.public_key)

    def to_vkey(self) -> str:
        """Return ``name+hash+base64(type || pubkey)``."""
        blob = base64.b64encode(bytes([self.alg]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{blob}"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key, checking that its key ID matches its name and key."""
        if not isinstance(vkey, str):
            raise InputError("verifier key must be a string")
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise InputError("verifier key must look like name+hash+base64key")
        name, hexid, blob = parts
        try:
            raw = base64.b64decode(blob, validate=True)
            kid = int(hexid, 16)
        except (binascii.Error, ValueError):
            raise InputError("verifier key: bad hash or base64 key") from None
        if len(hexid) != 8 or len(raw) != 33:
            raise InputError("verifier key: hash must be 8 hex digits and the key 1+32 bytes")
        ver = cls(_check_name(name), raw[0], raw[1:])
        if ver.key_id != kid:
            raise InputError(f"verifier key {name!r}: key hash {hexid} does not match the key")
        return ver

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check an Ed25519 signature; raise SignatureError if it does not verify."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            raise SignatureError(f"signature by {self.name!r} does not verify") from None


class NoteSigner:
    """An Ed25519 note signing key. Its seed stays inside; ``repr`` shows only the public part."""

    __slots__ = ("_key", "verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey, alg: int = ALG_ED25519) -> None:
        pub = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._key = private_key
        self.verifier = NoteVerifier(_check_name(name), alg, pub)

    def __repr__(self) -> str:
        return f"NoteSigner({self.verifier.to_vkey()!r})"

    @property
    def name(self) -> str:
        """The key name."""
        return self.verifier.name

    @classmethod
    def generate(cls, name: str, alg: int = ALG_ED25519) -> NoteSigner:
        """Generate a fresh key from OS randomness."""
        return cls(name, Ed25519PrivateKey.generate(), alg)

    def sign(self, message: bytes) -> bytes:
        """Return the raw 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)

    def to_skey(self) -> str:
        """Return ``PRIVATE+KEY+name+hash+base64(type || seed)`` (write it only to a 0600 file)."""
        seed = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        blob = base64.b64encode(bytes([self.verifier.alg]) + seed).decode("ascii")
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id:08x}+{blob}"

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse a private key string; the message never echoes key material."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise InputError("private key file is not in PRIVATE+KEY+name+hash+key format")
        try:
            raw = base64.b64decode(parts[4], validate=True)
            kid = int(parts[3], 16)
        except (binascii.Error, ValueError):
            raise InputError("private key file: bad hash or base64") from None
        if len(raw) != 33:
            raise InputError("private key file: key must be 1+32 bytes")
        signer = cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]), raw[0])
        if signer.verifier.key_id != kid:
            raise InputError("private key file: key hash does not match the key")
        return signer

    def save(self, path: Path) -> None:
        """Write the private key to a new file with mode 0600."""
        write_private_file(Path(path), self.to_skey() + "\n")

    @classmethod
    def load(cls, path: Path) -> NoteSigner:
        """Read a private key file, refusing one that group or others can read."""
        p = Path(path)
        mode = p.stat().st_mode & 0o777
        if mode & 0o077:
            raise InputError(f"{p}: private key is readable by others (mode {mode:o}); run chmod 600 {p}")
        return cls.from_skey(p.read_text(encoding="utf-8"))


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 32-bit key ID, and the signature bytes after the ID."""

    name: str
    key_id: int
    signature: bytes

    def to_line(self) -> str:
        """Return ``— name base64(keyid || sig)`` followed by a newline."""
        blob = base64.b64encode(struct.pack(">I", self.key_id) + self.signature).decode("ascii")
        return f"{_DASH}{self.name} {blob}\n"


@dataclass(frozen=True, slots=True)
class SignedNote:
    """A parsed signed note: its text (ending in a newline) and its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def to_bytes(self) -> bytes:
        """Serialise as text, blank line, signature lines."""
        return (self.text + "\n" + "".join(s.to_line() for s in self.signatures)).encode("utf-8")

    @classmethod
    def sign(cls, text: str, signers: list[NoteSigner]) -> SignedNote:
        """Sign ``text`` with plain Ed25519 (type 0x01) note keys."""
        if not text.endswith("\n"):
            raise InputError("note text must end with a newline")
        sigs = []
        for s in signers:
            if s.verifier.alg != ALG_ED25519:
                raise InputError(f"key {s.name!r} is not a plain Ed25519 note key")
            sigs.append(NoteSignature(s.name, s.verifier.key_id, s.sign(text.encode("utf-8"))))
        return cls(text, tuple(sigs))

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedNote:
        """Parse a signed note, enforcing every rule of the format; raise CheckpointError if malformed."""
        if not isinstance(data, bytes | bytearray):
            raise CheckpointError("signed note must be bytes")
        if len(data) > MAX_NOTE_BYTES:
            raise CheckpointError(f"signed note is larger than {MAX_NOTE_BYTES} bytes")
        try:
            s = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("signed note is not valid UTF-8") from None
        if any(ord(c) < 0x20 and c != "\n" for c in s):
            raise CheckpointError("signed note contains control characters")
        if not s.endswith("\n"):
            raise CheckpointError("signed note must end with a newline")
        split = s.rfind("\n\n")
        if split < 0:
            raise CheckpointError("signed note has no blank line before its signatures")
        text, sig_block = s[: split + 1], s[split + 2 :]
        lines = sig_block.split("\n")[:-1]
        if not lines:
            raise CheckpointError("signed note has no signatures")
        if len(lines) > MAX_SIGNATURES:
            raise CheckpointError(f"signed note has more than {MAX_SIGNATURES} signatures")
        sigs = []
        for line in lines:
            if not line.startswith(_DASH):
                raise CheckpointError(f"malformed signature line {line[:60]!r}")
            name, sep, blob = line[len(_DASH) :].partition(" ")
            if not sep or not name or "+" in name or " " in blob:
                raise CheckpointError(f"malformed signature line {line[:60]!r}")
            try:
                raw = base64.b64decode(blob, validate=True)
            except binascii.Error:
                raise CheckpointError(f"signature of {name!r} is not base64") from None
            if len(raw) < 5:
                raise CheckpointError(f"signature of {name!r} is too short")
            sigs.append(NoteSignature(name, struct.unpack(">I", raw[:4])[0], raw[4:]))
        return cls(text, tuple(sigs))

    def verify(self, verifier: NoteVerifier) -> None:
        """Check the signature by ``verifier`` (type 0x01); raise SignatureError if absent or bad."""
        matching = [s for s in self.signatures if s.name == verifier.name and s.key_id == verifier.key_id]
        if not matching:
            raise SignatureError(f"note carries no signature by {verifier.name!r}")
        for sig in matching:
            verifier.verify(self.text.encode("utf-8"), sig.signature)
