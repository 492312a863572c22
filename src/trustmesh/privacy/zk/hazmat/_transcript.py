"""A Fiat-Shamir transcript: every label and message is absorbed, challenges depend on all of it.

Built on SHA-512 with length-prefixed framing (the idea of Merlin/STROBE transcripts, not their
wire format): a challenge binds the protocol name, the context (log origin, round, device id, fresh
nonce) and the whole statement, so a proof cannot be moved to another statement or context.
"""

from __future__ import annotations

import hashlib

from trustmesh.privacy.zk.hazmat._group import L

__all__ = ["Transcript"]


class Transcript:
    """Absorb labelled messages and squeeze scalar challenges (Fiat-Shamir, 1986)."""

    def __init__(self, protocol: bytes) -> None:
        self._h = hashlib.sha512()
        self.append(b"protocol", protocol)

    def append(self, label: bytes, message: bytes) -> None:
        """Absorb one labelled message."""
        self._h.update(len(label).to_bytes(4, "little") + label)
        self._h.update(len(message).to_bytes(8, "little"))
        self._h.update(message)

    def append_many(self, label: bytes, messages: list[bytes]) -> None:
        """Absorb a list of messages under one label (count first, then each)."""
        self.append(label, len(messages).to_bytes(8, "little"))
        update = self._h.update
        for message in messages:
            update(message)

    def challenge(self, label: bytes) -> int:
        """Return a scalar challenge and absorb it, so later challenges depend on it."""
        self.append(b"challenge", label)
        digest = self._h.copy().digest()
        self._h.update(digest)
        return int.from_bytes(digest, "little") % L
