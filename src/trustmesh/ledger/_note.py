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
from collections.abc import Sequence
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
    "OpenedNote",
    "SignedNote",
    "is_valid_key_name",
    "key_id",
    "open_note",
    "write_private_file",
]

ALG_ED25519: Final = 0x01
ALG_COSIGNATURE_V1: Final = 0x04
_DASH: Final = "\u2014 "
MAX_NOTE_BYTES: Final = 1 << 20
MAX_SIGNATURES: Final = 100
COSIGNATURE_BYTES: Final = 8 + 64
# Go's unicode.IsSpace (what golang.org/x/mod/sumdb/note's isValidName rejects): the Latin-1 spaces
# plus every other code point with the Unicode White_Space property.
_GO_SPACES: Final = frozenset(
    "\t\n\v\f\r \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)


def is_valid_key_name(name: str) -> bool:
    """Return whether ``name`` is a valid note key name exactly as Go's ``note`` package decides.

    Non-empty, no Unicode white space (Go's ``unicode.IsSpace``), no ``+``. Control characters never
    reach this check inside a note (the note as a whole refuses them).
    """
    return bool(name) and "+" not in name and not any(c in _GO_SPACES for c in name)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not is_valid_key_name(name) or any(c.isspace() for c in name):
        raise InputError(f"key name must be non-empty without spaces or '+', got {name!r}")
    if any(ord(c) < 0x20 for c in name):
        raise InputError(f"key name must not contain control characters, got {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (e.g. from undecodable command-line bytes)
        raise InputError(f"key name is not valid Unicode text, got {name!r}") from None
    return name


def cosigned_message(text: str, timestamp: int) -> bytes:
    """Return what a ``cosignature/v1`` (type 0x04) signature covers: header, ``time <ts>``, note text."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


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

    def verify_note_signature(self, text: str, signature: bytes) -> None:
        """Check one note signature line's bytes (after the key ID) over note ``text``.

        Type 0x01 signs the text itself; type 0x04 (tlog-cosignature) is an 8-byte big-endian
        timestamp (< 2^63) followed by an Ed25519 signature of :func:`cosigned_message`.
        """
        if self.alg == ALG_ED25519:
            self.verify(text.encode("utf-8"), signature)
            return
        if len(signature) != COSIGNATURE_BYTES:
            raise SignatureError(f"cosignature by {self.name!r} has the wrong length")
        ts = struct.unpack(">Q", signature[:8])[0]
        if ts >= 2**63:
            raise SignatureError(f"cosignature by {self.name!r} has an invalid timestamp")
        try:
            self.verify(cosigned_message(text, ts), signature[8:])
        except SignatureError:
            raise SignatureError(f"cosignature by {self.name!r} does not verify") from None


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
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{p}: private key file is not UTF-8 text (byte {exc.start})") from None
        return cls.from_skey(text)


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
            name, _, blob = line[len(_DASH) :].partition(" ")
            if not is_valid_key_name(name) or not blob:
                raise CheckpointError(f"malformed signature line {line[:60]!r}")
            try:
                raw = base64.b64decode(blob, validate=True)
            except (binascii.Error, ValueError):  # ValueError: non-ASCII characters in the signature
                raise CheckpointError(f"signature of {name!r} is not base64") from None
            if len(raw) < 5:
                raise CheckpointError(f"signature of {name!r} is too short")
            sigs.append(NoteSignature(name, struct.unpack(">I", raw[:4])[0], raw[4:]))
        return cls(text, tuple(sigs))

    def signature_by(self, verifier: NoteVerifier) -> NoteSignature | None:
        """Return the first signature line naming ``verifier`` (name and key ID), or None.

        Like Go's ``note.Open``, later lines by the same key are duplicates and are ignored.
        """
        return next((s for s in self.signatures if s.name == verifier.name and s.key_id == verifier.key_id), None)

    def verify(self, verifier: NoteVerifier) -> None:
        """Check the signature by ``verifier``; raise SignatureError if absent or bad.

        The first line by the key decides (duplicates after it are ignored, as Go's ``note.Open`` does).
        """
        sig = self.signature_by(verifier)
        if sig is None:
            raise SignatureError(f"note carries no signature by {verifier.name!r}")
        verifier.verify_note_signature(self.text, sig.signature)


@dataclass(frozen=True, slots=True)
class OpenedNote:
    """A note whose signatures by known keys all verified: the text, verified and unknown lines."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


def open_note(data: bytes, verifiers: Sequence[NoteVerifier]) -> OpenedNote:
    """Parse and verify a signed note exactly as Go's ``golang.org/x/mod/sumdb/note.Open`` does.

    Raises CheckpointError if the note is malformed, SignatureError if a known key's first line does
    not verify (later duplicate lines by that key are ignored) or if no known key signed it. Lines by
    unknown keys are returned unverified (identical repeats dropped).
    """
    known: dict[tuple[str, int], NoteVerifier] = {}
    for v in verifiers:
        prev = known.setdefault((v.name, v.key_id), v)
        if prev != v:
            raise InputError(f"two different keys share the name {v.name!r} and key ID {v.key_id:08x}")
    note = SignedNote.from_bytes(data)
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    for sig in note.signatures:
        key = known.get((sig.name, sig.key_id))
        if key is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if (sig.name, sig.key_id) in seen:
            continue
        seen.add((sig.name, sig.key_id))
        key.verify_note_signature(note.text, sig.signature)
        verified.append(sig)
    if not verified:
        raise SignatureError("note has no verifiable signatures")
    return OpenedNote(note.text, tuple(verified), tuple(unverified))
