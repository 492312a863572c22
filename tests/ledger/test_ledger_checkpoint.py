"""C2SP signed-note / tlog-checkpoint, byte for byte, and the log's refusal to sign a fork."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from pathlib import Path

import pytest
from _ledger_helpers import ORIGIN, make_entries
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustmesh.errors import CheckpointError, ConsistencyError, InputError, SignatureError
from trustmesh.ledger import Checkpoint, Ledger, NoteSigner, NoteVerifier


def test_checkpoint_note_is_byte_exact(small_ledger: Ledger) -> None:
    # Arrange
    cp = small_ledger.latest_checkpoint()
    assert cp is not None
    raw = cp.to_bytes().decode()
    pub = small_ledger.verifier.public_key
    # Act: recompute every piece independently of the implementation
    body = f"{ORIGIN}\n700\n{base64.b64encode(small_ledger.root()).decode()}\n"
    kid = hashlib.sha256(ORIGIN.encode() + b"\n" + b"\x01" + pub).digest()[:4]
    text, _, sig_line = raw.partition("\n\n")
    # Assert
    assert raw.startswith(body) and text + "\n" == body
    assert sig_line.startswith(f"\u2014 {ORIGIN} ") and sig_line.endswith("\n") and sig_line.count("\n") == 1
    blob = base64.b64decode(sig_line.split(" ")[2])
    assert blob[:4] == kid and len(blob) == 68
    Ed25519PublicKey.from_public_bytes(pub).verify(blob[4:], body.encode())
    key_b64 = base64.b64encode(b"\x01" + pub).decode()
    assert small_ledger.verifier_key == f"{ORIGIN}+{kid.hex()}+{key_b64}"


def test_verifier_key_round_trip_and_mismatch() -> None:
    signer = NoteSigner.generate("a.example/k")
    vkey = signer.verifier.to_vkey()
    assert NoteVerifier.from_vkey(vkey) == signer.verifier
    name, kid, key = vkey.split("+", 2)
    with pytest.raises(InputError):
        NoteVerifier.from_vkey(f"{name}+{int(kid, 16) ^ 1:08x}+{key}")
    with pytest.raises(InputError):
        NoteVerifier.from_vkey("nonsense")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.replace("\n700\n", "\n0700\n"),
        lambda s: s.replace("\n700\n", "\n-1\n"),
        lambda s: s.replace("\n\n", "\n"),
        lambda s: s[:-1],
        lambda s: s.replace("\u2014", "-"),
        lambda s: s.replace("=\n\n", "\n\n", 1),
        lambda s: "\x01" + s,
        lambda s: s.split("\n", 1)[1],
    ],
)
def test_malformed_checkpoints_are_rejected(small_ledger: Ledger, mutate: object) -> None:
    cp = small_ledger.latest_checkpoint()
    assert cp is not None
    bad = mutate(cp.to_bytes().decode())  # type: ignore[operator]
    with pytest.raises((CheckpointError, SignatureError)):
        Checkpoint.from_bytes(bad.encode()).verify(small_ledger.verifier)


def test_replaced_root_fails_signature(small_ledger: Ledger) -> None:
    cp = small_ledger.latest_checkpoint()
    assert cp is not None
    forged = Checkpoint(cp.origin, cp.size, bytes(32), cp.extensions, cp.signatures)
    with pytest.raises(SignatureError):
        Checkpoint.from_bytes(forged.to_bytes()).verify(small_ledger.verifier)
    other = NoteSigner.generate(ORIGIN)
    with pytest.raises(SignatureError):
        Checkpoint.signed(ORIGIN, cp.size, cp.root_hash, other).verify(small_ledger.verifier)


def test_same_size_returns_the_same_checkpoint(small_ledger: Ledger) -> None:
    before = small_ledger.latest_checkpoint()
    assert small_ledger.checkpoint() == before
    assert len(small_ledger.checkpoints()) == 2


def test_log_refuses_to_sign_after_history_rewrite(small_ledger: Ledger, ledger_dir: Path) -> None:
    # Arrange: rewrite the hash of the first 256 entries (level-1 tile) behind the log's back
    db = sqlite3.connect(ledger_dir / "ledger.sqlite")
    (data,) = db.execute("SELECT data FROM tiles WHERE id=?", (1 << 56,)).fetchone()
    db.execute("UPDATE tiles SET data=? WHERE id=?", (bytes(32) + data[32:], 1 << 56))
    db.commit()
    db.close()
    small_ledger.close()
    with Ledger.open(ledger_dir) as led:
        led.append(make_entries(3, 700))
        # Act / Assert
        with pytest.raises(ConsistencyError):
            led.checkpoint()
        assert led.latest_checkpoint().size == 700  # type: ignore[union-attr]


def test_read_only_ledger_cannot_sign(small_ledger: Ledger, ledger_dir: Path) -> None:
    with Ledger.open(ledger_dir, read_only=True) as ro, pytest.raises(InputError):
        ro.checkpoint()
