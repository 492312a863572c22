"""Authentication for write endpoints: bearer tokens and/or Ed25519-signed requests with replay protection.

Signed requests carry four headers::

    X-Trustmesh-Key        name of a client key the server trusts (a signed-note vkey, type 0x01)
    X-Trustmesh-Timestamp  POSIX seconds; must be within ``window_s`` of the server clock
    X-Trustmesh-Nonce      16..64 characters [A-Za-z0-9_-]; each accepted nonce is refused afterwards
    X-Trustmesh-Signature  base64 Ed25519 signature over the canonical request below

    trustmesh-submit/v1\\n<METHOD>\\n<path>\\n<timestamp>\\n<nonce>\\n<sha256 hex of the body>\\n

Tokens are kept only as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from trustmesh.errors import InputError, SignatureError
from trustmesh.ledger import NoteSigner, NoteVerifier

__all__ = ["AuthError", "RequestAuth", "sign_request"]

_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")


class AuthError(Exception):
    """The request is not authenticated (HTTP 401); the message says why without leaking secrets."""


def canonical_request(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """Return the bytes a client signs."""
    digest = hashlib.sha256(body).hexdigest()
    return f"trustmesh-submit/v1\n{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{digest}\n".encode()


def sign_request(signer: NoteSigner, method: str, path: str, body: bytes, *, nonce: str, timestamp: int | None = None) -> dict[str, str]:
    """Return the headers of a signed request (client side)."""
    ts = str(int(_time.time()) if timestamp is None else timestamp)
    sig = signer.sign(canonical_request(method, path, ts, nonce, body))
    return {
        "X-Trustmesh-Key": signer.name,
        "X-Trustmesh-Timestamp": ts,
        "X-Trustmesh-Nonce": nonce,
        "X-Trustmesh-Signature": base64.b64encode(sig).decode("ascii"),
    }


@dataclass
class RequestAuth:
    """Which credentials a write request needs: any configured kind (default) or all of them."""

    token_digests: Sequence[bytes] = ()
    client_keys: Mapping[str, NoteVerifier] = field(default_factory=dict)
    require_all: bool = False
    window_s: int = 300
    _seen: dict[str, float] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_config(cls, tokens: Sequence[str] = (), client_keys: Sequence[str] = (), *, require_all: bool = False) -> RequestAuth:
        """Build from plain tokens (hashed here, then dropped) and client vkeys."""
        digests = []
        for t in tokens:
            if len(t) < 16:
                raise InputError("API tokens must be at least 16 characters")
            digests.append(hashlib.sha256(t.encode()).digest())
        keys: dict[str, NoteVerifier] = {}
        for k in client_keys:
            v = NoteVerifier.from_vkey(k)
            keys[v.name] = v
        return cls(tuple(digests), keys, require_all)

    @property
    def configured(self) -> bool:
        """Whether any credential is configured (without one, writes are refused)."""
        return bool(self.token_digests or self.client_keys)

    def check(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
        """Return who is calling; raise AuthError if the request is not authenticated."""
        if not self.configured:
            raise AuthError("writes are disabled: the server has no tokens or client keys configured")
        results: list[str] = []
        errors: list[str] = []
        kinds = 0
        if self.token_digests:
            kinds += 1
            try:
                results.append(self._check_token(headers))
            except AuthError as exc:
                errors.append(str(exc))
        if self.client_keys:
            kinds += 1
            try:
                results.append(self._check_signature(method, path, headers, body))
            except AuthError as exc:
                errors.append(str(exc))
        if (self.require_all and len(results) < kinds) or not results:
            raise AuthError("; ".join(errors) or "not authenticated")
        return ",".join(results)

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

    def _check_signature(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
        name = headers.get("x-trustmesh-key", "")
        ts = headers.get("x-trustmesh-timestamp", "")
        nonce = headers.get("x-trustmesh-nonce", "")
        sig_b64 = headers.get("x-trustmesh-signature", "")
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
        try:
            sig = base64.b64decode(sig_b64, validate=True)
        except binascii.Error:
            raise AuthError("X-Trustmesh-Signature is not base64") from None
        try:
            key.verify(canonical_request(method, path, ts, nonce, body), sig)
        except SignatureError:
            raise AuthError("request signature does not verify") from None
        with self._lock:
            for n, exp in list(self._seen.items()):
                if exp < now:
                    del self._seen[n]
            seen_key = f"{name}\n{nonce}"
            if seen_key in self._seen:
                raise AuthError("replayed request (nonce already used)")
            self._seen[seen_key] = now + 2 * self.window_s
        return f"key:{name}"
