"""C2SP tlog-cosignature witnesses: cosign after a consistency proof, refuse forks, k-of-n, split views."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest
from _ledger_helpers import ORIGIN, make_entries
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustmesh.errors import SignatureError, WitnessError
from trustmesh.ledger import (
    Checkpoint,
    Ledger,
    NoteSigner,
    NoteVerifier,
    Witness,
    detect_split_view,
    verify_cosignatures,
)


def _witnesses(tmp_path: Path, led: Ledger, n: int) -> list[Witness]:
    out = []
    for i in range(n):
        w = Witness.create(tmp_path / f"w{i}", f"witness{i}.example/w")
        w.trust_log(led.verifier_key)
        out.append(w)
    return out


def test_cosignature_is_byte_exact(tmp_path: Path, ledger_dir: Path) -> None:
    led = Ledger.create(ledger_dir, ORIGIN)
    led.append(make_entries(10))
    (w,) = _witnesses(tmp_path, led, 1)
    cp = led.checkpoint(witnesses=[w], quorum=1)
    line = cp.to_bytes().decode().splitlines()[-1]
    name, blob = line.removeprefix("\u2014 ").split(" ")
    raw = base64.b64decode(blob)
    vk = NoteVerifier.from_vkey(w.verifier_key)
    assert name == w.name and len(raw) == 4 + 8 + 64
    import hashlib

    assert raw[:4] == hashlib.sha256(w.name.encode() + b"\n\x04" + vk.public_key).digest()[:4]
    ts = struct.unpack(">Q", raw[4:12])[0]
    msg = f"cosignature/v1\ntime {ts}\n{cp.body()}".encode()
    Ed25519PublicKey.from_public_bytes(vk.public_key).verify(raw[12:], msg)
    assert led.latest_checkpoint() == cp  # the stored note carries the cosignature
    led.close()


def test_k_of_n_quorum_and_growth(tmp_path: Path, ledger_dir: Path) -> None:
    led = Ledger.create(ledger_dir, ORIGIN)
    ws = _witnesses(tmp_path, led, 3)
    keys = [w.verifier_key for w in ws]
    for k in range(4):
        led.append(make_entries(100 + k, 1000 * k))
        cp = led.checkpoint(witnesses=ws, quorum=2)
        assert len(verify_cosignatures(cp, keys, 3)) == 3
    log_only = Checkpoint(cp.origin, cp.size, cp.root_hash, cp.extensions, cp.signatures[:1])
    with pytest.raises(WitnessError):
        verify_cosignatures(log_only, keys, 1)
    assert len(verify_cosignatures(log_only, keys, 0)) == 0
    led.close()


def test_witness_refuses_and_records_a_fork(tmp_path: Path, ledger_dir: Path) -> None:
    # Arrange: an honest checkpoint, then a forked one signed with the same (stolen) log key
    led = Ledger.create(ledger_dir, ORIGIN)
    led.append(make_entries(20))
    (w,) = _witnesses(tmp_path, led, 1)
    led.checkpoint(witnesses=[w], quorum=1)
    signer = NoteSigner.load(ledger_dir / "log.key")
    fork_same_size = Checkpoint.signed(ORIGIN, 20, bytes(32), signer)
    fork_bigger = Checkpoint.signed(ORIGIN, 25, bytes(32), signer)
    # Act / Assert
    with pytest.raises(WitnessError, match="fork"):
        w.add_checkpoint(fork_same_size.to_bytes(), old_size=20, proof=[])
    with pytest.raises(WitnessError, match="fork"):
        w.add_checkpoint(fork_bigger.to_bytes(), old_size=20, proof=[bytes(32)])
    assert len(Witness.open(tmp_path / "w0").forks) == 2
    with pytest.raises(WitnessError):
        w.add_checkpoint(fork_bigger.to_bytes(), old_size=3, proof=[])  # stale old size
    led.close()


def test_witness_rejects_unsigned_or_unknown_logs(tmp_path: Path, ledger_dir: Path) -> None:
    led = Ledger.create(ledger_dir, ORIGIN)
    led.append(make_entries(5))
    w = Witness.create(tmp_path / "w", "w.example/w")
    cp = led.checkpoint()
    with pytest.raises(WitnessError) as unknown:
        w.add_checkpoint(cp.to_bytes(), old_size=0, proof=[])
    assert getattr(unknown.value, "status", None) == 404
    w.trust_log(led.verifier_key)
    forged = Checkpoint.signed(ORIGIN, 5, cp.root_hash, NoteSigner.generate(ORIGIN))
    with pytest.raises(WitnessError, match="not signed by the trusted key") as bad_sig:
        w.add_checkpoint(forged.to_bytes(), old_size=0, proof=[])
    assert getattr(bad_sig.value, "status", None) == 403
    led.close()


def test_client_detects_split_view(tmp_path: Path, ledger_dir: Path) -> None:
    led = Ledger.create(ledger_dir, ORIGIN)
    led.append(make_entries(30))
    a = led.checkpoint()
    signer = NoteSigner.load(ledger_dir / "log.key")
    b = Checkpoint.signed(ORIGIN, 30, bytes(32), signer)
    with pytest.raises(WitnessError, match="split view"):
        detect_split_view(a, b, led.verifier_key)
    led.append(make_entries(10, 30))
    c = led.checkpoint()
    detect_split_view(a, c, led.verifier_key, proof=led.prove_consistency(30, 40).path)
    with pytest.raises(WitnessError):
        detect_split_view(b, c, led.verifier_key, proof=led.prove_consistency(30, 40).path)
    led.close()


def test_repeated_witness_key_counts_once_towards_quorum(tmp_path: Path, ledger_dir: Path) -> None:
    """Issue 14: `--witness-key K --witness-key K --quorum 2` passed with one witness."""
    from trustmesh.errors import InputError

    led = Ledger.create(ledger_dir, ORIGIN)
    led.append(make_entries(5))
    (w,) = _witnesses(tmp_path, led, 1)
    cp = led.checkpoint(witnesses=[w], quorum=1)
    key = w.verifier_key
    same_public = NoteVerifier("alias.example/w", 0x04, NoteVerifier.from_vkey(key).public_key)
    assert len(verify_cosignatures(cp, [key, key], 1)) == 1
    with pytest.raises(InputError, match="distinct witness keys"):
        verify_cosignatures(cp, [key, key], 2)
    with pytest.raises(InputError, match="distinct witness keys"):
        verify_cosignatures(cp, [key, same_public], 2)  # one Ed25519 key under two names is one witness
    with pytest.raises(InputError, match="distinct witnesses"):
        led.checkpoint(witnesses=[w, w], quorum=2)
    led.close()


def test_forged_cosignature_is_refused_and_never_stored(tmp_path: Path, ledger_dir: Path) -> None:
    """Issue 14: add_cosignatures stored unchecked lines; one forged line broke checkpoint() and audit()."""
    from trustmesh.ledger import audit
    from trustmesh.ledger._note import NoteSignature

    led = Ledger.create(ledger_dir, ORIGIN)
    led.append(make_entries(8))
    (w,) = _witnesses(tmp_path, led, 1)
    cp = led.checkpoint()
    vk = NoteVerifier.from_vkey(w.verifier_key)
    forged_cosig = NoteSignature(vk.name, vk.key_id, struct.pack(">Q", 1_700_000_000) + b"\x01" * 64)
    forged_log = NoteSignature(led.verifier.name, led.verifier.key_id, b"\x02" * 64)
    before = led.store.latest_checkpoint()
    with pytest.raises(SignatureError, match="refusing to store"):
        led.add_cosignatures(cp.with_signatures((forged_cosig,)), [w.verifier_key])
    assert led.store.latest_checkpoint() == before
    # a line by a key the caller did not name (here a forged log signature) is ignored, not stored
    merged = led.add_cosignatures(cp.with_signatures((forged_log,)), [w.verifier_key])
    assert forged_log not in merged.signatures and led.store.latest_checkpoint() == before
    line = w.add_checkpoint(cp.to_bytes(), old_size=0, proof=[])
    merged = led.add_cosignatures(cp.with_signatures((line,)), [w.verifier_key])
    assert len(verify_cosignatures(merged, [w.verifier_key], 1)) == 1
    led.append(make_entries(3, 8))
    led.checkpoint()  # the stored notes still verify, so the log keeps signing
    assert audit(ledger_dir, witness_keys=[w.verifier_key], quorum=0).checkpoints_verified == 2
    led.close()
