"""Authentication for write endpoints: bearer tokens and/or Ed25519-signed requests with replay protection.

Signed requests carry four headers::

    X-Trustmesh-Key        name of a client key the server trusts (a signed-note vkey, type 0x01)
    X-Trustmesh-Timestamp  POSIX seconds; must be within ``window_s`` of the server clock
    X-Trustmesh-Nonce      16..64 characters [A-Za-z0-9_-]; each accepted nonce is refused afterwards
    X-Trustmesh-Signature  base64 Ed25519 signature over the canonical request below

    trustmesh-submit/v2\\n<log origin>\\n<Host>\\n<METHOD>\\n<path>\\n<timestamp>\\n<nonce>\\n
    <Idempotency-Key or empty>\\n<sha256 hex of the body>\\n

The log origin and the ``Host`` the client addressed are inside the signed string, so a request
captured on one log (or one server name) is refused by another; with ``allowed_hosts`` set, a
request naming any other host is refused. Accepted nonces are kept in a SQLite file (``nonce_db``)
until their timestamp leaves the window, so a restart does not reopen a replay window.

Tokens are kept only as SHA-256 digests and compared in constant time. Only signed requests by a
key listed in ``identity_keys`` may submit identity entries (``identity.*`` kinds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import sqlite3
import threading
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustmesh.errors import InputError
from trustmesh.ledger import NoteSigner, NoteVerifier

__all__ = ["AuthError", "Caller", "NonceStore", "RequestAuth", "SignedParts", "canonical_request", "sign_request"]

_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SIGNED_VERSION = "trustmesh-submit/v2"
_BAD_SIGNATURE = "request signature does not verify (for this log origin and host)"


class AuthError(Exception):
    """The request is not authenticated (HTTP 401); the message says why without leaking secrets."""


def canonical_request(
    origin: str, host: str, method: str, path: str, timestamp: str, nonce: str, body: bytes,
    idempotency_key: str = "",
) -> bytes:
    """Return the bytes a client signs (see the module docstring)."""
    digest = hashlib.sha256(body).hexdigest()
    fields = (_SIGNED_VERSION, origin, host, method.upper(), path, timestamp, nonce, idempotency_key, digest)
    for f in fields:
        if "\n" in f:
            raise InputError("signed request fields must not contain newlines")
    return ("".join(f + "\n" for f in fields)).encode()


def sign_request(
    signer: NoteSigner, method: str, path: str, body: bytes, *, nonce: str, origin: str, host: str,
    timestamp: int | None = None, idempotency_key: str | None = None,
) -> dict[str, str]:
    """Return the headers of a signed request (client side) to the log ``origin`` served at ``host``."""
    ts = str(int(_time.time()) if timestamp is None else timestamp)
    sig = signer.sign(canonical_request(origin, host, method, path, ts, nonce, body, idempotency_key or ""))
    headers = {
        "Host": host,
        "X-Trustmesh-Key": signer.name,
        "X-Trustmesh-Timestamp": ts,
        "X-Trustmesh-Nonce": nonce,
        "X-Trustmesh-Signature": base64.b64encode(sig).decode("ascii"),
    }
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


class NonceStore:
    """Accepted nonces with their expiry, in memory or in a SQLite file that survives restarts."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()  # the claims in memory
        self._db_lock = threading.Lock()  # the connection (a flush's fsync must not hold up claims)
        target = ":memory:" if path is None else str(path)
        try:
            self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS nonces(key TEXT PRIMARY KEY, expires REAL NOT NULL)")
        except sqlite3.Error as exc:
            raise InputError(f"{target}: cannot open the nonce store ({exc})") from None
        self._last_purge = 0.0
        self.deferred = False  # True: claims are held in memory until flush() writes them in one transaction
        self._pending: dict[str, float] = {}
        self._known: dict[str, float] = {}  # deferred mode: every unexpired nonce (from disk and since)
        self._known_cap = 10_000

    def defer(self) -> None:
        """Switch to deferred claims: load the unexpired nonces once; later claims are checked in memory."""
        with self._lock:
            if self.deferred:
                return
            with self._db_lock:
                rows = self._db.execute("SELECT key, expires FROM nonces WHERE expires >= ?",
                                        (_time.time(),)).fetchall()
            self._known = {str(k): float(e) for k, e in rows}
            self._known_cap = max(10_000, len(self._known))
            self.deferred = True

    def claim(self, key: str, expires: float, now: float) -> bool:
        """Record ``key`` (durably, unless ``deferred``); return False if it is recorded and has not expired.

        With ``deferred`` set, a claim is refused at once for a second use but written to disk only by
        :meth:`flush`, which a group-committing server calls before it acknowledges the requests:
        one fsync for the whole group, and no acknowledged request's nonce is lost by a crash.
        """
        with self._lock:
            if now - self._last_purge > 60 and not self.deferred:  # deferred: flush() purges
                with self._db_lock:
                    self._db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
                self._last_purge = now
            if self.deferred:  # every unexpired nonce is in memory (loaded once from disk): no query per claim
                held = self._known.get(key)
                if held is not None and held >= now:
                    return False
                self._known[key] = expires
                self._pending[key] = expires
                if len(self._known) > 2 * self._known_cap:
                    self._known = {k: v for k, v in self._known.items() if v >= now}
                    self._known_cap = max(self._known_cap, len(self._known))
                return True
            with self._db_lock:
                row = self._db.execute("SELECT expires FROM nonces WHERE key=?", (key,)).fetchone()
                if row is not None and float(row[0]) >= now:
                    return False
                self._db.execute("INSERT OR REPLACE INTO nonces(key, expires) VALUES(?, ?)", (key, expires))
            return True

    def flush(self) -> None:
        """Write the deferred claims made so far in one durable transaction.

        The claims are taken from memory first and written without holding the claims' lock, so new
        requests are checked (in memory) while the fsync runs instead of waiting for it; a claim made
        meanwhile is written by the next flush, which precedes that request's acknowledgement.
        """
        with self._lock:
            if not self._pending:
                return
            rows = list(self._pending.items())
            self._pending = {}
            now = _time.time()
            purge_due = now - self._last_purge > 60
            if purge_due:
                self._last_purge = now
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO nonces(key, expires) VALUES(?, ?)", rows)
                if purge_due:
                    self._db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                with self._lock:  # not written: keep them for the next flush
                    self._pending = {**dict(rows), **self._pending}
                raise

    def close(self) -> None:
        """Close the database."""
        with self._lock, self._db_lock:
            self._db.close()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent an authenticated request and what it may write."""

    name: str
    identity_writer: bool = False


@dataclass
class RequestAuth:
    """Which credentials a write request needs: any configured kind (default) or all of them."""

    token_digests: Sequence[bytes] = ()
    client_keys: Mapping[str, NoteVerifier] = field(default_factory=dict)
    require_all: bool = False
    window_s: int = 300
    identity_keys: frozenset[str] = frozenset()
    allowed_hosts: frozenset[str] = frozenset()
    nonces: NonceStore | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _public: dict[str, tuple[NoteVerifier, Ed25519PublicKey]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(
        cls, tokens: Sequence[str] = (), client_keys: Sequence[str] = (), *, require_all: bool = False,
        identity_keys: Sequence[str] = (), allowed_hosts: Sequence[str] = (), nonce_db: Path | None = None,
    ) -> RequestAuth:
        """Build from plain tokens (hashed here, then dropped), client vkeys and identity-writer vkeys.

        ``identity_keys`` are client vkeys that may also submit ``identity.*`` entries (they are
        trusted as client keys too). ``nonce_db`` persists accepted nonces across restarts.
        """
        digests = []
        for t in tokens:
            if len(t) < 16:
                raise InputError("API tokens must be at least 16 characters")
            digests.append(hashlib.sha256(t.encode()).digest())
        keys: dict[str, NoteVerifier] = {}
        for k in [*client_keys, *identity_keys]:
            v = NoteVerifier.from_vkey(k)
            if keys.setdefault(v.name, v) != v:
                raise InputError(f"two different client keys are named {v.name!r}")
        writers = frozenset(NoteVerifier.from_vkey(k).name for k in identity_keys)
        store = NonceStore(nonce_db) if nonce_db is not None else None
        return cls(tuple(digests), keys, require_all, identity_keys=writers, allowed_hosts=frozenset(allowed_hosts),
                   nonces=store)

    @property
    def configured(self) -> bool:
        """Whether any credential is configured (without one, writes are refused)."""
        return bool(self.token_digests or self.client_keys)

    def defer_nonces(self) -> None:
        """Hold accepted nonces in memory until :meth:`flush_nonces` (a group-committing server)."""
        with self._lock:
            if self.nonces is None:
                self.nonces = NonceStore(None)
            self.nonces.defer()

    def flush_nonces(self) -> None:
        """Write deferred nonces durably (call before acknowledging the requests they came with)."""
        if self.nonces is not None:
            self.nonces.flush()

    def use_nonce_store(self, path: Path) -> None:
        """Persist accepted nonces in ``path`` (unless a store is configured already)."""
        with self._lock:
            if self.nonces is None:
                self.nonces = NonceStore(path)

    def check(self, method: str, path: str, headers: Mapping[str, str], body: bytes, *, origin: str = "") -> str:
        """Return who is calling; raise AuthError if the request is not authenticated."""
        return self.authenticate(method, path, headers, body, origin=origin).name

    def authenticate(self, method: str, path: str, headers: Mapping[str, str], body: bytes, *, origin: str) -> Caller:
        """Return the authenticated caller; raise AuthError if the request is not authenticated."""
        if not self.configured:
            raise AuthError("writes are disabled: the server has no tokens or client keys configured")
        results: list[str] = []
        errors: list[str] = []
        kinds = 0
        signed_by: str | None = None
        if self.token_digests:
            kinds += 1
            try:
                results.append(self._check_token(headers))
            except AuthError as exc:
                errors.append(str(exc))
        if self.client_keys:
            kinds += 1
            try:
                signed_by = self._check_signature(method, path, headers, body, origin)
                results.append(f"key:{signed_by}")
            except AuthError as exc:
                errors.append(str(exc))
        if (self.require_all and len(results) < kinds) or not results:
            raise AuthError("; ".join(errors) or "not authenticated")
        return Caller(",".join(results), signed_by is not None and signed_by in self.identity_keys)

    def _check_token(self, headers: Mapping[str, str]) -> str:
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("missing bearer token")
        digest = hashlib.sha256(token.strip().encode()).digest()
        ok = False
        for d in self.token_digests:
            ok |= hmac.compare_digest(d, digest)
        if not ok:
            raise AuthError("bearer token not accepted")
        return "token"

    @property
    def signatures_only(self) -> bool:
        """Whether signed requests are the only credential (then the signature check may run elsewhere)."""
        return bool(self.client_keys) and not self.token_digests

    def signed_parts(self, method: str, path: str, headers: Mapping[str, str], body: bytes, *, origin: str
                     ) -> SignedParts:
        """Check a signed request up to its signature; return what to verify; raise AuthError.

        Then verify ``signature`` over ``message`` with the Ed25519 key ``public`` and pass the
        outcome to :meth:`accept_signed` (which also refuses a replayed nonce).
        """
        name = headers.get("x-trustmesh-key", "")
        ts = headers.get("x-trustmesh-timestamp", "")
        nonce = headers.get("x-trustmesh-nonce", "")
        sig_b64 = headers.get("x-trustmesh-signature", "")
        host = headers.get("host", "")
        idem = headers.get("idempotency-key", "")
        if not (name and ts and nonce and sig_b64):
            raise AuthError("unsigned request (X-Trustmesh-Key/-Timestamp/-Nonce/-Signature required)")
        key = self.client_keys.get(name)
        if key is None:
            raise AuthError(f"unknown client key {name[:64]!r}")
        if not ts.isdigit() or len(ts) > 12:
            raise AuthError("X-Trustmesh-Timestamp must be POSIX seconds")
        now = _time.time()
        if abs(now - int(ts)) > self.window_s:
            raise AuthError(f"request timestamp is more than {self.window_s} s from the server clock")
        if not _NONCE.fullmatch(nonce):
            raise AuthError("X-Trustmesh-Nonce must be 16..64 characters [A-Za-z0-9_-]")
        if self.allowed_hosts and host not in self.allowed_hosts:
            raise AuthError(f"request is addressed to host {host[:80]!r}, which this server does not answer for")
        try:
            sig = base64.b64decode(sig_b64, validate=True)
        except binascii.Error:
            raise AuthError("X-Trustmesh-Signature is not base64") from None
        try:
            message = canonical_request(origin, host, method, path, ts, nonce, body, idem)
        except InputError:
            raise AuthError(_BAD_SIGNATURE) from None
        if len(sig) != 64:
            raise AuthError(_BAD_SIGNATURE)
        return SignedParts(name, key, sig, message, nonce, int(ts), now)

    def accept_signed(self, parts: SignedParts, verified: bool) -> Caller:
        """Finish a signed request's check: refuse it unless ``verified``, or when its nonce was used."""
        if not verified:
            raise AuthError(_BAD_SIGNATURE)
        with self._lock:
            if self.nonces is None:
                self.nonces = NonceStore(None)
            store = self.nonces
        # a nonce older than the window is refused by the timestamp check, so it may be forgotten then
        if not store.claim(f"{parts.name}\n{parts.nonce}", parts.timestamp + self.window_s + 1, parts.now):
            raise AuthError("replayed request (nonce already used)")
        return Caller(f"key:{parts.name}", parts.name in self.identity_keys)

    def _check_signature(self, method: str, path: str, headers: Mapping[str, str], body: bytes, origin: str) -> str:
        parts = self.signed_parts(method, path, headers, body, origin=origin)
        public = self._public.get(parts.name)
        if public is None or public[0] is not parts.key:  # the key object, parsed once per client key
            try:
                public = (parts.key, Ed25519PublicKey.from_public_bytes(parts.key.public_key))
            except ValueError:
                raise AuthError(_BAD_SIGNATURE) from None
            self._public[parts.name] = public
        try:
            public[1].verify(parts.signature, parts.message)
            verified = True
        except InvalidSignature:
            verified = False
        return self.accept_signed(parts, verified).name[len("key:"):]


@dataclass(frozen=True, slots=True)
class SignedParts:
    """A signed request checked up to its signature (:meth:`RequestAuth.signed_parts`)."""

    name: str
    key: NoteVerifier
    signature: bytes
    message: bytes
    nonce: str
    timestamp: int
    now: float
