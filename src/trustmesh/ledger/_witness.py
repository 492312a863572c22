"""Witnesses per C2SP tlog-cosignature (``cosignature/v1``, signature type 0x04) and tlog-witness.

A :class:`Witness` keeps, per log origin, the last checkpoint it cosigned. It cosigns a new one only
after verifying the log's signature and a consistency proof from the size it knows; two different
roots for one size, or a failing proof, are a fork: it refuses, records the evidence and raises
WitnessError. :func:`verify_cosignatures` checks a k-of-n quorum; :func:`detect_split_view`
compares two checkpoints a client holds.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import struct
import tempfile
import threading
import time as _time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from trustmesh.errors import (
    CheckpointError,
    ConsistencyError,
    InputError,
    SignatureError,
    WitnessError,
)
from trustmesh.ledger._checkpoint import Checkpoint
from trustmesh.ledger._note import (
    ALG_COSIGNATURE_V1,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    SignedNote,
    cosigned_message,
)
from trustmesh.ledger._proof import verify_consistency_path

__all__ = [
    "Cosignature",
    "Witness",
    "WitnessRequestError",
    "WitnessResponse",
    "cosignature_message",
    "detect_split_view",
    "distinct_witness_keys",
    "parse_add_checkpoint_body",
    "verify_cosignatures",
]

KEY_FILE: Final = "witness.key"
PUB_FILE: Final = "witness.pub"
STATE_FILE: Final = "state.json"
LOCK_FILE: Final = "state.lock"
SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"
MAX_PROOF_LINES: Final = 63
MAX_REQUEST_BYTES: Final = 1 << 20
MAX_FORK_RECORDS: Final = 1000
_SIZE_RE = re.compile(rb"0|[1-9][0-9]{0,19}")


def cosignature_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """Return the signed message: ``cosignature/v1``, ``time <ts>``, then the checkpoint body."""
    if not 0 <= timestamp < 2**63:
        raise InputError(f"timestamp must be in [0, 2^63), got {timestamp}")
    return cosigned_message(checkpoint.body(), timestamp)


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A verified cosignature: which witness, and when (POSIX seconds) it cosigned."""

    name: str
    timestamp: int


def _cosign_line(signer: NoteSigner, checkpoint: Checkpoint, timestamp: int) -> NoteSignature:
    sig = signer.sign(cosignature_message(checkpoint, timestamp))
    return NoteSignature(signer.name, signer.verifier.key_id, struct.pack(">Q", timestamp) + sig)


def _check_cosignature(checkpoint: Checkpoint, verifier: NoteVerifier) -> Cosignature | None:
    """Return the verified cosignature by ``verifier``, None if absent; raise SignatureError if bad.

    The first line by the key decides; later duplicates are ignored (Go's ``note.Open`` rule).
    """
    sig = SignedNote(checkpoint.body(), checkpoint.signatures).signature_by(verifier)
    if sig is None:
        return None
    try:
        verifier.verify_note_signature(checkpoint.body(), sig.signature)
    except SignatureError as exc:
        raise SignatureError(str(exc), index=checkpoint.size) from None
    return Cosignature(verifier.name, struct.unpack(">Q", sig.signature[:8])[0])


def distinct_witness_keys(witness_keys: Sequence[NoteVerifier | str]) -> list[NoteVerifier]:
    """Parse witness keys and drop repeats: one witness counts once towards a quorum.

    Two keys are the same witness when their key hash (name and key) or their Ed25519 public key
    match: a ``cosignature/v1`` signature does not commit to the name, so one public key under two
    names is still one witness.
    """
    out: list[NoteVerifier] = []
    hashes: set[tuple[str, int]] = set()
    publics: set[bytes] = set()
    for k in witness_keys:
        v = NoteVerifier.from_vkey(k) if isinstance(k, str) else k
        if v.alg != ALG_COSIGNATURE_V1:
            raise InputError(f"witness key {v.name!r} is not a cosignature/v1 (type 0x04) key")
        if (v.name, v.key_id) in hashes or v.public_key in publics:
            continue
        hashes.add((v.name, v.key_id))
        publics.add(v.public_key)
        out.append(v)
    return out


def verify_cosignatures(
    checkpoint: Checkpoint, witness_keys: Sequence[NoteVerifier | str], quorum: int, *, max_future_s: int = 300
) -> list[Cosignature]:
    """Check that at least ``quorum`` distinct witnesses cosigned ``checkpoint``; raise WitnessError if not.

    Repeated keys count once (see :func:`distinct_witness_keys`); a quorum larger than the number
    of distinct keys is an InputError. Unknown signature lines are ignored (signed-note rules); a
    bad signature by a known key raises SignatureError; a timestamp more than ``max_future_s`` in
    the future is rejected.
    """
    keys = distinct_witness_keys(witness_keys)
    if isinstance(quorum, bool) or not isinstance(quorum, int) or not 0 <= quorum <= len(keys):
        raise InputError(
            f"quorum must be in [0, {len(keys)}] (the number of distinct witness keys), got {quorum!r}"
        )
    now = int(_time.time())
    good: list[Cosignature] = []
    for k in keys:
        cs = _check_cosignature(checkpoint, k)
        if cs is None:
            continue
        if cs.timestamp > now + max_future_s:
            raise SignatureError(f"cosignature by {k.name!r} is dated in the future", index=checkpoint.size)
        good.append(cs)
    if len(good) < quorum:
        raise WitnessError(
            f"checkpoint of size {checkpoint.size} has {len(good)} valid witness cosignatures, needs {quorum}",
            index=checkpoint.size,
        )
    return good


def detect_split_view(
    a: Checkpoint,
    b: Checkpoint,
    log_key: NoteVerifier | str,
    *,
    proof: Sequence[bytes] | None = None,
    witness_keys: Sequence[NoteVerifier | str] = (),
    quorum: int = 0,
) -> None:
    """Raise WitnessError if two checkpoints of one log, both validly signed, show a split view.

    Same size with different roots is a split view. For different sizes, pass the consistency proof
    from the smaller to the larger; a proof that fails is a split view too. With ``witness_keys``,
    each checkpoint must first carry ``quorum`` valid cosignatures.
    """
    key = NoteVerifier.from_vkey(log_key) if isinstance(log_key, str) else log_key
    for cp in (a, b):
        cp.verify(key)
        if witness_keys:
            verify_cosignatures(cp, witness_keys, quorum)
    if a.origin != b.origin:
        raise CheckpointError("checkpoints come from different logs")
    small, large = (a, b) if a.size <= b.size else (b, a)
    if small.size == large.size:
        if small.root_hash != large.root_hash:
            raise WitnessError(f"split view: two signed roots for size {small.size}", index=small.size)
        return
    if small.size == 0:
        return
    if proof is None:
        raise InputError("checkpoints differ in size: pass the consistency proof between them")
    try:
        verify_consistency_path(small.size, large.size, proof, small.root_hash, large.root_hash)
    except ConsistencyError as exc:
        raise WitnessError(f"split view between sizes {small.size} and {large.size}: {exc}", index=small.size) from None


class Witness:
    """A witness with its own Ed25519 cosigning key and per-log state in a folder.

    Folder: ``witness.key`` (0600), ``witness.pub`` (vkey, type 0x04), ``state.json`` (trusted logs,
    the last cosigned checkpoint per origin, and any fork evidence).
    """

    def __init__(self, directory: Path, signer: NoteSigner, state: dict[str, Any]) -> None:
        self.directory = directory
        self._signer = signer
        self._state = state
        self._lock = threading.Lock()

    @classmethod
    def create(cls, directory: Path | str, name: str) -> Witness:
        """Create a witness (new key) in ``directory``."""
        d = Path(directory)
        if (d / KEY_FILE).exists():
            raise InputError(f"{d}: a witness already exists here")
        d.mkdir(parents=True, exist_ok=True)
        signer = NoteSigner.generate(name, ALG_COSIGNATURE_V1)
        signer.save(d / KEY_FILE)
        (d / PUB_FILE).write_text(signer.verifier.to_vkey() + "\n", encoding="utf-8")
        w = cls(d, signer, {"logs": {}, "forks": []})
        w._save()
        return w

    @classmethod
    def open(cls, directory: Path | str) -> Witness:
        """Open an existing witness folder."""
        d = Path(directory)
        if not (d / KEY_FILE).is_file():
            raise InputError(f"{d}: no witness here (run `trustmesh ledger witness init`)")
        signer = NoteSigner.load(d / KEY_FILE)
        if signer.verifier.alg != ALG_COSIGNATURE_V1:
            raise InputError(f"{d / KEY_FILE}: not a cosignature/v1 key")
        try:
            state = json.loads((d / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{d / STATE_FILE}: unreadable witness state ({exc})") from None
        if not isinstance(state, dict) or not isinstance(state.get("logs"), dict):
            raise InputError(f"{d / STATE_FILE}: malformed witness state")
        return cls(d, signer, state)

    @property
    def name(self) -> str:
        """The witness key name."""
        return self._signer.name

    @property
    def verifier_key(self) -> str:
        """The witness public key as a vkey (type 0x04)."""
        return self._signer.verifier.to_vkey()

    @property
    def forks(self) -> list[dict[str, Any]]:
        """Recorded fork evidence (both notes, base64)."""
        with self._locked_state():
            return list(self._state.get("forks", []))

    def trust_log(self, log_key: str) -> None:
        """Add a log (by its verifier key) that this witness will cosign."""
        key = NoteVerifier.from_vkey(log_key)
        with self._locked_state():
            entry = self._state["logs"].setdefault(key.name, {"key": log_key, "size": 0, "note": None})
            if entry["key"] != log_key:
                raise InputError(f"witness already trusts a different key for log {key.name!r}")
            self._save()

    def known_size(self, origin: str) -> int:
        """Return the size of the last checkpoint cosigned for ``origin`` (0 if none)."""
        with self._locked_state():
            entry = self._state["logs"].get(origin)
        if entry is None:
            raise WitnessRequestError(404, f"witness {self.name!r} does not know the log {origin!r}")
        return int(entry["size"])

    def add_checkpoint(self, note: bytes, *, old_size: int, proof: Sequence[bytes], timestamp: int | None = None) -> NoteSignature:
        """Verify and cosign a checkpoint (C2SP tlog-witness add-checkpoint); return the cosignature line.

        Raises :class:`WitnessRequestError` carrying the HTTP status the spec assigns: 400 malformed
        or ``old_size`` above the checkpoint size (or a proof with ``old_size`` 0), 403 no valid
        signature by the trusted log key, 404 unknown origin, 409 ``old_size`` is not the size this
        witness last cosigned (``known_size`` says which) or the same size with another root, 422 the
        consistency proof does not verify. A fork (409 same size, 422) is recorded as evidence. The
        check of ``old_size`` and the update of the state happen under one lock (also across
        processes), so concurrent requests cannot roll the witness back.
        """
        try:
            cp = Checkpoint.from_bytes(note)
        except CheckpointError as exc:
            raise WitnessRequestError(400, f"malformed checkpoint: {exc}") from None
        if isinstance(old_size, bool) or not isinstance(old_size, int) or old_size < 0:
            raise WitnessRequestError(400, f"old size must be a non-negative integer, got {old_size!r}")
        if len(proof) > MAX_PROOF_LINES or any(len(h) != 32 for h in proof):
            raise WitnessRequestError(400, f"consistency proof must be at most {MAX_PROOF_LINES} hashes of 32 bytes")
        with self._locked_state():
            entry = self._state["logs"].get(cp.origin)
            if entry is None:
                raise WitnessRequestError(404, f"witness {self.name!r} does not know the log {cp.origin!r}", index=cp.size)
            try:
                cp.verify(NoteVerifier.from_vkey(entry["key"]))
            except (SignatureError, CheckpointError) as exc:
                raise WitnessRequestError(403, f"checkpoint is not signed by the trusted key of {cp.origin!r}: {exc}",
                                          index=cp.size) from None
            if old_size > cp.size:
                raise WitnessRequestError(400, f"old size {old_size} is larger than the checkpoint size {cp.size}",
                                          index=cp.size)
            known = int(entry["size"])
            prev = Checkpoint.from_bytes(base64.b64decode(entry["note"])) if entry["note"] else None
            if old_size != known:
                raise WitnessRequestError(409, f"witness {self.name!r} knows size {known}, request says {old_size}",
                                          index=known, known_size=known)
            if old_size == 0 and proof:
                raise WitnessRequestError(400, "the consistency proof must be empty when the old size is 0")
            if prev is not None and cp.size == prev.size:
                if cp.root_hash != prev.root_hash:
                    self._record_fork(cp, entry)
                    raise WitnessRequestError(
                        409, f"fork detected for {cp.origin!r}: another root for the cosigned size {prev.size} "
                             "(evidence saved)", index=prev.size, known_size=known)
            elif prev is not None:
                try:
                    verify_consistency_path(prev.size, cp.size, proof, prev.root_hash, cp.root_hash)
                except ConsistencyError:
                    self._record_fork(cp, entry)
                    raise WitnessRequestError(
                        422, f"fork detected for {cp.origin!r}: size {cp.size} is not consistent with the "
                             f"cosigned size {prev.size}; refusing to cosign (evidence saved)", index=prev.size) from None
            ts = int(_time.time()) if timestamp is None else timestamp
            line = _cosign_line(self._signer, cp, ts)
            entry["size"] = cp.size
            entry["note"] = base64.b64encode(cp.to_bytes()).decode("ascii")
            self._save()  # persisted before the cosignature is handed out
            return line

    def handle_add_checkpoint(self, body: bytes) -> WitnessResponse:
        """Answer one tlog-witness ``POST <prefix>/add-checkpoint`` request body (no network here)."""
        try:
            old_size, proof, note = parse_add_checkpoint_body(body)
            line = self.add_checkpoint(note, old_size=old_size, proof=proof)
        except WitnessRequestError as exc:
            if exc.status == 409 and exc.known_size is not None:
                return WitnessResponse(409, SIZE_CONTENT_TYPE, f"{exc.known_size}\n".encode())
            return WitnessResponse(exc.status, "text/plain; charset=utf-8", f"{exc}\n".encode())
        except InputError as exc:
            return WitnessResponse(400, "text/plain; charset=utf-8", f"{exc}\n".encode())
        return WitnessResponse(200, "text/plain; charset=utf-8", line.to_line().encode("utf-8"))

    def _record_fork(self, cp: Checkpoint, entry: dict[str, Any]) -> None:
        forks = self._state.setdefault("forks", [])
        if len(forks) < MAX_FORK_RECORDS:
            forks.append({
                "origin": cp.origin,
                "known": entry["note"],
                "offered": base64.b64encode(cp.to_bytes()).decode("ascii"),
                "time": int(_time.time()),
            })
            self._save()

    @contextlib.contextmanager
    def _locked_state(self) -> Iterator[None]:
        """Hold the witness lock (threads and, through flock, processes) with the state reloaded."""
        with self._lock:
            fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._state = _load_state(self.directory)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def _save(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".state-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self._state, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / STATE_FILE)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself is durable before a cosignature leaves
        finally:
            os.close(dir_fd)


def _load_state(d: Path) -> dict[str, Any]:
    path = d / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"logs": {}, "forks": []}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable witness state ({exc})") from None
    if not isinstance(state, dict) or not isinstance(state.get("logs"), dict):
        raise InputError(f"{path}: malformed witness state")
    return state


def parse_add_checkpoint_body(body: bytes) -> tuple[int, list[bytes], bytes]:
    """Parse a tlog-witness add-checkpoint body: ``old <size>``, proof lines, a blank line, the checkpoint.

    Raise WitnessRequestError(400) naming the problem; return (old size, proof hashes, note bytes).
    """
    if not isinstance(body, bytes | bytearray) or len(body) > MAX_REQUEST_BYTES:
        raise WitnessRequestError(400, f"request body must be bytes, at most {MAX_REQUEST_BYTES}")
    data = bytes(body)
    head, sep, note = data.partition(b"\n\n")
    if not sep:
        raise WitnessRequestError(400, "request body has no empty line before the checkpoint")
    lines = head.split(b"\n")
    first = lines[0]
    if not first.startswith(b"old ") or not _SIZE_RE.fullmatch(first[4:]):
        raise WitnessRequestError(400, "first line must be 'old <size>' (decimal, no leading zeros)")
    old = int(first[4:])
    if old >= 2**63:
        raise WitnessRequestError(400, "old size is out of range")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRequestError(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for n, raw in enumerate(lines[1:], 2):
        try:
            h = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise WitnessRequestError(400, f"line {n}: consistency proof line is not base64") from None
        if len(h) != 32:
            raise WitnessRequestError(400, f"line {n}: consistency proof line is not a 32-byte hash")
        proof.append(h)
    return old, proof, note


@dataclass(frozen=True, slots=True)
class WitnessResponse:
    """An HTTP answer to an add-checkpoint request: status, Content-Type and body."""

    status: int
    content_type: str
    body: bytes


class WitnessRequestError(WitnessError):
    """A witness refused an add-checkpoint request; ``status`` is the tlog-witness HTTP status.

    For 409, ``known_size`` is the size of the last checkpoint the witness cosigned.
    """

    def __init__(self, status: int, message: str, *, index: int | None = None, known_size: int | None = None) -> None:
        super().__init__(message, index=index)
        self.status = status
        self.known_size = known_size
