"""The tamper-evident log: entries, RFC 9162 tree, proofs and signed checkpoints in one folder.

Folder layout::

    DIR/ledger.sqlite   entry bundles, hash tiles, checkpoints (see _store)
    DIR/log.key         the log's Ed25519 note key, mode 0600 (never printed)
    DIR/log.pub         its verifier key, name+hash+base64 (the name is the origin)
    DIR/blobs/ab/abcd.. content-addressed large payloads (sha256 hex)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time as _time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NewType

from trustmesh.errors import (
    CheckpointError,
    ConsistencyError,
    InputError,
    LogIntegrityError,
    SignatureError,
    WitnessError,
)
from trustmesh.ledger._canonical import canonical_dumps
from trustmesh.ledger._checkpoint import Checkpoint
from trustmesh.ledger._entry import Entry
from trustmesh.ledger._note import NoteSignature, NoteSigner, NoteVerifier, SignedNote
from trustmesh.ledger._proof import (
    ConsistencyProof,
    InclusionProof,
    NodeRef,
    consistency_plan,
    inclusion_plan,
)
from trustmesh.ledger._store import FORMAT_VERSION, TILE_HEIGHT, TILE_WIDTH, TileStore, pack_bundle
from trustmesh.ledger.hazmat import EMPTY_ROOT, HASH_SIZE, node_hash

from trustmesh.ledger._witness import distinct_witness_keys

if TYPE_CHECKING:
    from trustmesh.ledger._witness import Witness

__all__ = ["BlobId", "Ledger", "check_idempotency_key", "request_digest"]

log = logging.getLogger(__name__)

BlobId = NewType("BlobId", str)
DB_NAME: Final = "ledger.sqlite"
KEY_NAME: Final = "log.key"
PUB_NAME: Final = "log.pub"
MAX_BATCH: Final = 1_000_000
_HEX64 = re.compile(r"[0-9a-f]{64}")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")


def check_idempotency_key(key: str) -> str:
    """Return ``key`` if it is 1-200 printable ASCII characters without spaces; else InputError."""
    if not isinstance(key, str) or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InputError(f"idempotency key must be 1-200 printable ASCII characters without spaces, got {str(key)[:60]!r}")
    return key


def request_digest(entries: Sequence[Entry]) -> bytes:
    """Return SHA-256 over what an append asked for: each entry's kind, payload and refs (not its time).

    Times are left out so that a retry that stamps entries again still matches the original request.
    """
    h = hashlib.sha256()
    for e in entries:
        h.update(canonical_dumps([e.kind, e.payload, list(e.refs)])[0])
        h.update(b"\n")
    return h.digest()


class Ledger:
    """An append-only RFC 9162 log stored in SQLite, with C2SP checkpoints and tlog-tiles.

    Create one with :meth:`create`, reopen with :meth:`open`; use as a context manager or call
    :meth:`close`. Thread-safe; several processes may open the same folder (SQLite serialises writers).
    """

    def __init__(
        self, directory: Path, store: TileStore, signer: NoteSigner | None, verifier: NoteVerifier,
        *, read_only: bool = False,
    ) -> None:
        self.directory = directory
        self.read_only = read_only
        self._store = store
        self._signer = signer
        self.verifier = verifier
        self._suffixes: dict[int, dict[int, bytes]] = {}
        # the latest checkpoint note this object signed or verified, with its parsed form
        self._verified_note: tuple[bytes, Checkpoint] | None = None

    # ----------------------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, directory: Path | str, origin: str, *, synchronous: str = "FULL") -> Ledger:
        """Create a new log in ``directory`` (created if missing, must hold no ledger) named ``origin``."""
        d = Path(directory)
        if not isinstance(origin, str) or not origin or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in origin):
            raise InputError(f"origin must be a non-empty name without spaces or '+', got {origin!r}")
        if (d / DB_NAME).exists() or (d / KEY_NAME).exists():
            raise InputError(f"{d}: a ledger already exists here")
        d.mkdir(parents=True, exist_ok=True)
        (d / "blobs").mkdir(exist_ok=True)
        signer = NoteSigner.generate(origin)
        signer.save(d / KEY_NAME)
        (d / PUB_NAME).write_text(signer.verifier.to_vkey() + "\n", encoding="utf-8")
        store = TileStore(d / DB_NAME, synchronous=synchronous, create=True)
        with store.write_lock():  # one transaction: a crash leaves no half-initialised ledger
            store.set_meta("origin", origin)
            store.set_meta("format", str(FORMAT_VERSION))
            store.set_meta("size", "0")
            store.set_meta("verifier_key", signer.verifier.to_vkey())
        log.info("created ledger %s (origin %s)", d, origin)
        return cls(d, store, signer, signer.verifier)

    @classmethod
    def open(cls, directory: Path | str, *, synchronous: str = "FULL", read_only: bool = False) -> Ledger:
        """Open an existing log; ``read_only`` skips the private key and refuses appends (auditors, anchors)."""
        d = Path(directory)
        if not (d / DB_NAME).is_file():
            raise InputError(f"{d}: no ledger here (expected {DB_NAME}; run `trustmesh ledger init`)")
        store = TileStore(d / DB_NAME, synchronous=synchronous)
        if store.meta("format") != str(FORMAT_VERSION):
            found = store.meta("format")
            store.close()
            raise LogIntegrityError(f"{d}: ledger format {found!r} is not the supported version {FORMAT_VERSION}")
        vkey = store.meta("verifier_key")
        if vkey is None:
            store.close()
            raise LogIntegrityError(f"{d}: ledger database has no verifier key")
        verifier = NoteVerifier.from_vkey(vkey)
        pub = d / PUB_NAME
        if pub.is_file() and pub.read_text(encoding="utf-8").strip() != vkey:
            store.close()
            raise SignatureError(f"{pub}: public key file does not match the key recorded in the ledger")
        signer = None
        if not read_only and (d / KEY_NAME).is_file():
            signer = NoteSigner.load(d / KEY_NAME)
            if signer.verifier != verifier:
                store.close()
                raise SignatureError(f"{d / KEY_NAME}: private key does not match the ledger's public key")
        return cls(d, store, signer, verifier, read_only=read_only)

    def close(self) -> None:
        """Close the database."""
        self._store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.directory)!r}, origin={self.origin!r}, size={self.size})"

    # ----------------------------------------------------------------------------- properties
    @property
    def origin(self) -> str:
        """The log name: checkpoint origin line and key name."""
        return self.verifier.name

    @property
    def verifier_key(self) -> str:
        """The log's public verifier key (``name+hash+base64``)."""
        return self.verifier.to_vkey()

    @property
    def size(self) -> int:
        """The number of durable entries."""
        return self._store.size

    @property
    def store(self) -> TileStore:
        """The underlying tile store (read access for audit and serving)."""
        return self._store

    # ----------------------------------------------------------------------------- append
    def append(self, entries: Sequence[Entry], *, idempotency_key: str | None = None) -> list[int]:
        """Append entries in one durable transaction and return their leaf indices.

        Every ``refs`` index must name an earlier entry. When this returns, the entries are on disk.
        With ``idempotency_key``, a retry of the same request (same kinds, payloads and refs, in the
        same order; times may differ and the original ones stand) returns the original indices and
        appends nothing; the key is stored in the same transaction as the entries, so this holds
        even after a crash between the commit and the caller learning the indices. Reusing a key for
        a different request is an InputError.
        """
        if self.read_only:
            raise InputError(f"{self.directory}: ledger opened read-only; appends are refused")
        if isinstance(entries, Entry) or not isinstance(entries, Sequence):
            raise InputError("append() takes a sequence of Entry objects")
        if not entries:
            return []
        if len(entries) > MAX_BATCH:
            raise InputError(f"at most {MAX_BATCH} entries per batch, got {len(entries)}")
        if not all(isinstance(e, Entry) for e in entries):
            bad = next(e for e in entries if not isinstance(e, Entry))
            raise InputError(f"append() takes Entry objects, got {type(bad).__name__}")
        idem = None if idempotency_key is None else (check_idempotency_key(idempotency_key), request_digest(entries))
        raws = [e.to_bytes() for e in entries]
        sha = hashlib.sha256
        hashes = [sha(b"\x00" + r).digest() for r in raws]  # RFC 6962 leaf hash, inlined for speed
        with self._store._lock:
            earlier = None if idem is None else self._store.lookup_idempotency(idem[0])
            base = self._store.size  # a lower bound on the first index even if another process appends
            for i, e in enumerate(entries):
                if earlier is None and e.refs and max(e.refs) >= base + i:
                    raise InputError(
                        f"entry {i} of the batch refers to leaf {max(e.refs)}, which is not earlier than it"
                    )
            first = self._store.append(raws, hashes, idem)
        return list(range(first, first + len(raws)))

    def append_group(self, requests: Sequence[tuple[Sequence[Entry], str | None]]) -> list[list[int] | InputError]:
        """Append several independent requests in one durable transaction (group commit).

        Each request is ``(entries, idempotency_key)`` with the rules of :meth:`append`; the result
        per request is its leaf indices or the InputError that refused it (bad refs, a reused key),
        which leaves the other requests untouched. One fsync covers the whole group, so a server can
        acknowledge many concurrent single-entry requests at the cost of one.
        """
        return self._append_group(requests, sign=False)[0]

    def append_group_signed(self, requests: Sequence[tuple[Sequence[Entry], str | None]]
                            ) -> tuple[list[list[int] | InputError], Checkpoint]:
        """Group-commit like :meth:`append_group` and sign the checkpoint covering it in the same transaction.

        One commit (one fsync) makes the entries and their checkpoint durable together, instead of one
        for the entries and one for :meth:`checkpoint`. The checks of :meth:`checkpoint` apply (the
        previous checkpoint verifies and the stored tree still extends it). When the group adds no
        entry (only refusals and retries) the latest checkpoint is returned, signing one if needed.
        """
        results, cp = self._append_group(requests, sign=True)
        return results, cp if cp is not None else self.checkpoint()

    def _seal(self, size: int) -> bytes:
        """Sign a checkpoint of ``size`` inside the store's open append transaction (see append_requests)."""
        if self._signer is None:
            raise InputError(f"{self.directory}: no signing key (opened read-only or {KEY_NAME} missing)")
        self._previous_checkpoint(self._store, size)
        cp = Checkpoint.signed(self.origin, size, self._store.root(size), self._signer)
        note = cp.to_bytes()
        self._verified_note = (note, cp)  # signed here: the next seal need not parse and verify it again
        return note

    def _previous_checkpoint(self, store: TileStore, size: int) -> Checkpoint | None:
        """The latest stored checkpoint, checked before signing ``size``: its signature verifies, it is not
        larger than ``size`` and the stored tree still has its root. None when none was signed yet."""
        prev_row = store.latest_checkpoint()
        if prev_row is None:
            return None
        known = self._verified_note
        if known is not None and known[0] == prev_row[2]:
            prev = known[1]  # these very bytes were parsed and verified before (a group commit seals often)
        else:
            prev = Checkpoint.from_bytes(prev_row[2])
            try:
                prev.verify(self.verifier)
            except SignatureError as exc:
                raise SignatureError(f"previous checkpoint: {exc}", index=prev.size) from None
            self._verified_note = (prev_row[2], prev)
        if prev.size > size:
            raise ConsistencyError(
                f"refusing to sign size {size}: the log already signed size {prev.size} (entries lost)",
                index=size,
            )
        if store.root(prev.size) != prev.root_hash:
            raise ConsistencyError(
                f"refusing to sign: the stored tree no longer matches the checkpoint of size {prev.size}",
                index=prev.size,
            )
        return prev

    def _append_group(self, requests: Sequence[tuple[Sequence[Entry], str | None]], *, sign: bool
                      ) -> tuple[list[list[int] | InputError], Checkpoint | None]:
        """Group-commit ``requests``; with ``sign`` also the checkpoint covering them (None if nothing was added)."""
        if self.read_only:
            raise InputError(f"{self.directory}: ledger opened read-only; appends are refused")
        sha = hashlib.sha256
        out: list[list[int] | InputError | None] = [None] * len(requests)
        staged: list[tuple[int, list[bytes], list[bytes], tuple[str, bytes] | None]] = []
        with self._store._lock:
            base = self._store.size
            offset = 0
            keys: set[str] = set()  # a key repeated within the group is appended once
            # which requests are retries matters only to check refs (a retry appends nothing, so the
            # entries after it get lower indices): one lookup for the group, and none without refs
            known: dict[str, tuple[int, int]] = {}
            if any(e.refs for entries, _ in requests for e in entries if isinstance(e, Entry)):
                known = self._store.lookup_idempotency_many([k for _, k in requests if isinstance(k, str)])
            for r, (entries, key) in enumerate(requests):
                try:
                    if not entries or len(entries) > MAX_BATCH or not all(isinstance(e, Entry) for e in entries):
                        raise InputError(f"a request needs 1..{MAX_BATCH} Entry objects")
                    idem = None if key is None else (check_idempotency_key(key), request_digest(entries))
                    earlier = None if idem is None else known.get(idem[0])
                    if earlier is None and key in keys:
                        earlier = (0, 0)
                    if earlier is None:
                        for i, e in enumerate(entries):
                            if e.refs and max(e.refs) >= base + offset + i:
                                raise InputError(f"entry {i} of the batch refers to leaf {max(e.refs)}, which is "
                                                 "not earlier than it")
                except InputError as exc:
                    out[r] = exc
                    continue
                raws = [e.to_bytes() for e in entries]
                staged.append((r, raws, [sha(b"\x00" + x).digest() for x in raws], idem))
                if earlier is None:
                    offset += len(raws)
                if key is not None:
                    keys.add(key)
            notes: list[bytes] = []

            def seal(size: int) -> bytes:
                notes.append(self._seal(size))
                return notes[-1]

            firsts = self._store.append_requests([(raws, hashes, idem) for _, raws, hashes, idem in staged],
                                                 seal if sign else None)
        for (r, raws, _, _), first in zip(staged, firsts, strict=True):
            out[r] = first if isinstance(first, InputError) else list(range(first, first + len(raws)))
        cp = None
        if notes:  # the checkpoint _seal signed (not parsed again from its bytes)
            known_note = self._verified_note
            cp = known_note[1] if known_note is not None and known_note[0] == notes[-1] else Checkpoint.from_bytes(notes[-1])
        return [x if x is not None else InputError("not appended") for x in out], cp

    def sequence(self, entries: Sequence[Entry], *, idempotency_key: str | None = None) -> tuple[list[int], Checkpoint]:
        """Append one batch durably and sign the checkpoint that covers it (one batch, one checkpoint)."""
        indices = self.append(entries, idempotency_key=idempotency_key)
        return indices, self.checkpoint()

    def append_one(self, kind: str, payload: Mapping[str, Any], refs: Sequence[int] = (), *, time: float | None = None,
                   idempotency_key: str | None = None) -> int:
        """Append one entry now and return its leaf index (see :meth:`append` for ``idempotency_key``)."""
        if not isinstance(payload, Mapping):
            raise InputError(f"payload must be a mapping, got {type(payload).__name__}")
        when = _time.time() if time is None else time
        entry = Entry(kind=kind, payload=dict(payload), time=when, refs=refs)  # type: ignore[arg-type]
        return self.append([entry], idempotency_key=idempotency_key)[0]

    # ----------------------------------------------------------------------------- blobs
    def put_blob(self, data: bytes) -> BlobId:
        """Store ``data`` content-addressed beside the log and return its sha256 hex digest."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InputError(f"put_blob() takes bytes, got {type(data).__name__}")
        digest = hashlib.sha256(data).hexdigest()
        target = self._blob_path(digest)
        if target.exists():
            return BlobId(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # make the rename itself durable
            finally:
                os.close(dir_fd)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return BlobId(digest)

    def get_blob(self, digest: str) -> bytes:
        """Return the blob with this sha256, checking its content; raise LogIntegrityError if altered."""
        data = self._blob_path(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise LogIntegrityError(f"blob {digest} does not match its sha256")
        return data

    def _blob_path(self, digest: str) -> Path:
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise InputError(f"blob id must be 64 lowercase hex digits, got {digest!r}")
        return self.directory / "blobs" / digest[:2] / digest

    # ----------------------------------------------------------------------------- reads
    def entry_bytes(self, index: int) -> bytes:
        """Return the stored bytes of entry ``index``."""
        self._check_index(index, self.size, "index")
        return self._store.entry(index)

    def entry(self, index: int) -> Entry:
        """Return entry ``index`` (parsed and checked; raise LogIntegrityError if it is not canonical)."""
        raw = self.entry_bytes(index)
        try:
            return Entry.from_bytes(raw)
        except InputError as exc:
            raise LogIntegrityError(f"stored entry {index} is invalid: {exc}", index=index) from None

    def leaf_hash(self, index: int) -> bytes:
        """Return the stored leaf hash of entry ``index``."""
        self._check_index(index, self.size, "index")
        return self._store.node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """Return the root hash of the tree of ``size`` entries (default: all)."""
        n = self.size if size is None else size
        self._check_size(n)
        return self._store.root(n)

    @staticmethod
    def _check_index(index: int, size: int, name: str) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
            raise InputError(f"{name} must be an integer in [0, {size}), got {index!r}")

    def _check_size(self, size: int, current: int | None = None) -> None:
        cur = self.size if current is None else current
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= cur:
            raise InputError(f"size must be an integer in [0, {cur}], got {size!r}")

    # ----------------------------------------------------------------------------- proofs
    def _resolve(self, refs: Sequence[NodeRef], n: int) -> tuple[list[bytes], bytes]:
        """Look up the hashes named by a proof plan in the tree of size n; also return its root."""
        store = self._store
        with store._lock:
            suffix = self._suffixes.get(n)
            if suffix is None:
                # Right-edge hashes MTH(D[x:n]) for each start x of n's binary decomposition; the
                # complete subtrees never change, so this is cached per size (a few sizes only).
                starts, start = [], 0
                for b in range(n.bit_length() - 1, -1, -1):
                    if n >> b & 1:
                        starts.append(start)
                        start += 1 << b
                chunks = list(zip(starts, store.decomposition(n), strict=True))
                suffix = {}
                acc = b""
                for st, h in reversed(chunks):
                    acc = h if not acc else node_hash(h, acc)
                    suffix[st] = acc
                if len(self._suffixes) >= 16:
                    self._suffixes.pop(next(iter(self._suffixes)))
                self._suffixes[n] = suffix
            complete = store.nodes([(a, b2) for kind, a, b2 in refs if kind == "c"])
            out, k = [], 0
            for kind, a, _ in refs:
                if kind == "c":
                    out.append(complete[k])
                    k += 1
                else:
                    out.append(suffix[a])
            return out, suffix[0] if n else EMPTY_ROOT

    def prove_inclusion(self, index: int, size: int | None = None) -> InclusionProof:
        """Return the inclusion proof of entry ``index`` in the tree of ``size`` entries (default: all)."""
        cur = self.size
        n = cur if size is None else size
        self._check_size(n, cur)
        self._check_index(index, n, "index")
        path, root = self._resolve(inclusion_plan(index, n), n)
        return InclusionProof(index, n, self._store.node(0, index), root, tuple(path))

    def prove_consistency(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        """Return the consistency proof between the trees of ``size1`` and ``size2`` entries."""
        cur = self.size
        n = cur if size2 is None else size2
        self._check_size(n, cur)
        if isinstance(size1, bool) or not isinstance(size1, int) or not 0 <= size1 <= n:
            raise InputError(f"size1 must be an integer in [0, {n}], got {size1!r}")
        if size1 == 0 and n > 0:
            raise InputError("size1 must be >= 1: RFC 9162 defines no proof from the empty tree (every tree extends it)")
        path, root2 = self._resolve(consistency_plan(size1, n), n)
        return ConsistencyProof(size1, n, self._store.root(size1), root2, tuple(path))

    # ----------------------------------------------------------------------------- tiles
    def tile(self, level: int, index: int, width: int | None = None) -> bytes:
        """Return tlog-tiles hash tile ``tile/<level>/<index>[.p/<width>]`` (the level-0 hashes only)."""
        self._check_tile_request(level, index, width)
        w, data = self._store.tile_raw(level, index)
        want = TILE_WIDTH if width is None else width
        if w < want:
            raise InputError(f"tile {level}/{index} has only {w} hashes")
        return data[: want * HASH_SIZE]

    def entry_bundle(self, index: int, width: int | None = None) -> bytes:
        """Return tlog-tiles entry bundle ``tile/entries/<index>[.p/<width>]``."""
        self._check_tile_request(0, index, width)
        w, data = self._store.bundle_raw(index)
        want = TILE_WIDTH if width is None else width
        if w < want:
            raise InputError(f"entry bundle {index} has only {w} entries")
        if w == want:
            return data
        return pack_bundle(self._store.bundle_entries(index)[:want])

    def _check_tile_request(self, level: int, index: int, width: int | None) -> None:
        if not 0 <= level <= 63 or index < 0:
            raise InputError(f"no tile at level {level} index {index}")
        if width is not None and not 1 <= width < TILE_WIDTH:
            raise InputError(f"partial tile width must be in 1..255, got {width}")
        need = ((index << TILE_HEIGHT) + (TILE_WIDTH if width is None else width)) << (TILE_HEIGHT * level)
        if need > self.size:
            raise InputError(f"tile {level}/{index} (width {width or TILE_WIDTH}) is beyond the tree")

    # ----------------------------------------------------------------------------- statements
    def sign_statement(self, message: bytes) -> bytes:
        """Sign a ``trustmesh/...`` statement with the log key (e.g. registering an identity admin).

        Refused unless ``message`` starts with ``trustmesh/`` and does not end in a newline: signed
        note text always ends in one, so such a signature can never pass as a checkpoint signature.
        """
        if self._signer is None:
            raise InputError(f"{self.directory}: no signing key (opened read-only or {KEY_NAME} missing)")
        if not isinstance(message, bytes) or not message.startswith(b"trustmesh/") or message.endswith(b"\n"):
            raise InputError("a log-key statement must start with 'trustmesh/' and must not end in a newline")
        return self._signer.sign(message)

    # ----------------------------------------------------------------------------- checkpoints
    def latest_checkpoint(self) -> Checkpoint | None:
        """Return the newest checkpoint the log signed (with any cosignatures), or None."""
        row = self._store.latest_checkpoint()
        return None if row is None else Checkpoint.from_bytes(row[2])

    def checkpoints(self) -> list[Checkpoint]:
        """Return every checkpoint the log signed, oldest first."""
        return [Checkpoint.from_bytes(note) for _, _, note in self._store.checkpoints()]

    def checkpoint(self, witnesses: Sequence[Witness] = (), quorum: int = 0) -> Checkpoint:
        """Sign, store and return a checkpoint of the current size.

        Refuses (ConsistencyError) to sign if the stored tree does not extend the previous signed
        checkpoint. With ``witnesses``, asks each to cosign (sending a consistency proof from the size
        it last saw) and raises WitnessError, after storing what it got, if fewer than ``quorum``
        cosigned.
        """
        if self._signer is None:
            raise InputError(f"{self.directory}: no signing key (opened read-only or {KEY_NAME} missing)")
        distinct = len({w.verifier_key for w in witnesses})
        if isinstance(quorum, bool) or not isinstance(quorum, int) or not 0 <= quorum <= distinct:
            raise InputError(f"quorum must be in [0, {distinct}] (the number of distinct witnesses), got {quorum!r}")
        with self._store.write_lock() as store:
            n = store.size
            root = store.root(n)
            prev = self._previous_checkpoint(store, n)
            cp = prev if prev is not None and prev.size == n else None
            if cp is None:
                cp = Checkpoint.signed(self.origin, n, root, self._signer)
                store.add_checkpoint(n, cp.to_bytes())
        if witnesses:
            cp = self._gather_cosignatures(cp, witnesses, quorum)
        return cp

    def _gather_cosignatures(self, cp: Checkpoint, witnesses: Sequence[Witness], quorum: int) -> Checkpoint:
        got: list[NoteSignature] = []
        keys: list[NoteVerifier] = []
        errors = []
        for w in witnesses:
            try:
                old = w.known_size(self.origin)
                proof = self.prove_consistency(old, cp.size).path if 0 < old < cp.size else ()
                got.append(w.add_checkpoint(cp.to_bytes(), old_size=old, proof=list(proof)))
                keys.append(NoteVerifier.from_vkey(w.verifier_key))
            except (WitnessError, ConsistencyError, CheckpointError, SignatureError) as exc:
                errors.append(f"{w.name}: {exc}")
                log.warning("witness %s refused checkpoint %d: %s", w.name, cp.size, exc)
        signed = self.add_cosignatures(cp.with_signatures(tuple(got)), keys) if got else cp
        count = len(distinct_witness_keys(keys))
        if count < quorum:
            raise WitnessError(
                f"only {count} of the required {quorum} witnesses cosigned size {cp.size}: " + "; ".join(errors),
                index=cp.size,
            )
        return signed

    def add_cosignatures(self, checkpoint: Checkpoint, witness_keys: Sequence[NoteVerifier | str]) -> Checkpoint:
        """Verify, then merge, the cosignatures of ``checkpoint`` into the stored checkpoint with its body.

        Only lines by ``witness_keys`` are considered, and each must verify (SignatureError, nothing
        stored, otherwise); lines by other keys are ignored, so a forged line never reaches the store
        and never breaks a later :meth:`checkpoint` or :func:`audit`. A witness that already has a
        cosignature on the stored note keeps its first one. Raise CheckpointError if no stored
        checkpoint has this body.
        """
        keys = distinct_witness_keys(witness_keys)
        if not keys:
            raise InputError("add_cosignatures needs the verifier keys of the witnesses whose lines to add")
        body = checkpoint.body()
        new_lines: list[NoteSignature] = []
        note = SignedNote(body, checkpoint.signatures)
        for k in keys:
            sig = note.signature_by(k)
            if sig is None:
                continue
            try:
                k.verify_note_signature(body, sig.signature)
            except SignatureError as exc:
                raise SignatureError(f"refusing to store a cosignature: {exc}", index=checkpoint.size) from None
            new_lines.append(sig)
        with self._store.write_lock() as store:
            for seq, _size, raw in reversed(store.checkpoints()):
                stored = Checkpoint.from_bytes(raw)
                if stored.body() != body:
                    continue
                have = {(s.name, s.key_id) for s in stored.signatures}
                extra = tuple(s for s in new_lines if (s.name, s.key_id) not in have)
                merged = stored.with_signatures(extra)
                store.replace_checkpoint_note(seq, merged.to_bytes())
                return merged
        raise CheckpointError("no stored checkpoint has this body", index=checkpoint.size)

