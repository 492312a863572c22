"""C2SP tlog-checkpoint: the signed tree head (https://c2sp.org/tlog-checkpoint)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from trustmesh.errors import CheckpointError, InputError
from trustmesh.ledger._note import NoteSignature, NoteSigner, NoteVerifier, SignedNote
from trustmesh.ledger.hazmat import HASH_SIZE

__all__ = ["Checkpoint"]

_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint: origin, tree size, RFC 6962 root hash, optional extension lines, signatures.

    ``from_bytes`` checks the format only; call :meth:`verify` with the log's key (and
    ``trustmesh.ledger.verify_cosignatures`` for witnesses) before trusting it.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()
    signatures: tuple[NoteSignature, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or any(ord(c) < 0x20 for c in self.origin):
            raise InputError(f"checkpoint origin must be a non-empty single line, got {self.origin!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size < 2**63:
            raise InputError(f"checkpoint size must be an integer in [0, 2^63), got {self.size!r}")
        if len(self.root_hash) != HASH_SIZE:
            raise InputError(f"checkpoint root must be {HASH_SIZE} bytes, got {len(self.root_hash)}")
        for line in self.extensions:
            if not line or "\n" in line:
                raise InputError("checkpoint extension lines must be non-empty single lines")

    def body(self) -> str:
        """Return the note text: origin, size, base64 root, extension lines, each ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode("ascii"), *self.extensions]
        return "".join(line + "\n" for line in lines)

    def to_bytes(self) -> bytes:
        """Return the signed note (body, blank line, signature lines)."""
        return SignedNote(self.body(), self.signatures).to_bytes()

    @classmethod
    def signed(cls, origin: str, size: int, root_hash: bytes, signer: NoteSigner) -> Checkpoint:
        """Create and sign a checkpoint with the log's Ed25519 note key."""
        unsigned = cls(origin, size, root_hash)
        note = SignedNote.sign(unsigned.body(), [signer])
        return cls(origin, size, root_hash, (), note.signatures)

    def with_signatures(self, extra: tuple[NoteSignature, ...]) -> Checkpoint:
        """Return the same checkpoint with ``extra`` signature lines appended (duplicates dropped)."""
        merged = list(self.signatures)
        for sig in extra:
            if sig not in merged:
                merged.append(sig)
        return Checkpoint(self.origin, self.size, self.root_hash, self.extensions, tuple(merged))

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Parse a signed checkpoint note; raise CheckpointError if it is malformed."""
        note = SignedNote.from_bytes(data)
        lines = note.text.split("\n")[:-1]
        if len(lines) < 3:
            raise CheckpointError("checkpoint text needs at least origin, size and root hash lines")
        origin, size_line, root_line, *ext = lines
        if not origin:
            raise CheckpointError("checkpoint origin line is empty")
        if not _SIZE_RE.fullmatch(size_line):
            raise CheckpointError(f"checkpoint size {size_line[:30]!r} is not a decimal without leading zeros")
        try:
            root = base64.b64decode(root_line, validate=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII characters in the line
            raise CheckpointError("checkpoint root hash is not base64") from None
        if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != root_line:
            raise CheckpointError("checkpoint root hash is not the base64 of 32 bytes")
        if any(not line for line in ext):
            raise CheckpointError("checkpoint extension lines must be non-empty")
        try:
            return cls(origin, int(size_line), root, tuple(ext), note.signatures)
        except InputError as exc:
            raise CheckpointError(str(exc)) from None

    def verify(self, verifier: NoteVerifier) -> None:
        """Check the log's signature; raise SignatureError (or CheckpointError on origin mismatch)."""
        if verifier.name != self.origin:
            raise CheckpointError(
                f"checkpoint origin {self.origin!r} does not match the log key name {verifier.name!r}",
                index=self.size,
            )
        SignedNote(self.body(), self.signatures).verify(verifier)
