"""Operator API tokens with roles: shown once, stored only as SHA-256 digests in a 0600 file.

A token is ``tm_`` followed by the URL-safe base64 of 32 random bytes (256 bits from ``secrets``).
The store keeps, per token, an id (``tok-`` + 8 hex), the operator's name, the role, the SHA-256 hex
digest of the token, when it was made and whether it was revoked. The token itself is never written
anywhere; lookup hashes the presented token and compares digests in constant time.

Roles are ordered: ``viewer`` reads; ``responder`` also approves, rejects and rolls back;
``admin`` also manages tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from trustmesh.errors import InputError

__all__ = ["ROLES", "TokenRecord", "TokenStore"]

ROLES: Final = ("viewer", "responder", "admin")
_PREFIX: Final = "tm_"
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")
MAX_TOKENS: Final = 10_000


def role_rank(role: str) -> int:
    """Return the rank of ``role`` (viewer 0 < responder 1 < admin 2)."""
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return ROLES.index(role)


def check_name(name: str) -> str:
    """Return ``name`` if it is a usable operator name (1..64 of letters, digits, ``._@-``)."""
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not set(name) <= _NAME_CHARS:
        raise InputError(f"token name must be 1..64 characters of letters, digits and ._@-, got {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the store keeps about one token (never the token itself)."""

    token_id: str
    name: str
    role: str
    sha256: str
    created: float
    revoked: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the stored form."""
        return {"token_id": self.token_id, "name": self.name, "role": self.role, "sha256": self.sha256,
                "created": self.created, "revoked": self.revoked}

    def public(self) -> dict[str, Any]:
        """Return what listings show (no digest)."""
        return {k: v for k, v in self.to_dict().items() if k != "sha256"}

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> TokenRecord:
        """Parse one stored record, naming the file and the field that is wrong."""
        if not isinstance(doc, dict):
            raise InputError(f"{where}: each token record must be an object")
        try:
            rec = cls(str(doc["token_id"]), check_name(str(doc["name"])), str(doc["role"]),
                      str(doc["sha256"]), float(doc["created"]),
                      None if doc.get("revoked") is None else float(doc["revoked"]))
        except KeyError as exc:
            raise InputError(f"{where}: token record is missing the field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: bad token record ({exc})") from None
        role_rank(rec.role)
        if len(rec.sha256) != 64 or any(c not in "0123456789abcdef" for c in rec.sha256):
            raise InputError(f"{where}: token {rec.token_id}: sha256 must be 64 lowercase hex digits")
        return rec


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The token file (JSON, mode 0600); every change is written atomically, then re-read."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._records: list[TokenRecord] = []

    # -- file ----------------------------------------------------------------------------------
    def _load(self) -> list[TokenRecord]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._records, self._mtime = [], None
            return []
        if st.st_mode & 0o077:
            raise InputError(f"{self.path}: token file is readable by others (mode {st.st_mode & 0o777:o}); "
                             f"run chmod 600 {self.path}")
        if self._mtime == st.st_mtime_ns:
            return self._records
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{self.path}: not a readable token file ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("tokens"), list):
            raise InputError(f'{self.path}: token file must be {{"tokens": [...]}}')
        self._records = [TokenRecord.from_dict(d, str(self.path)) for d in doc["tokens"]]
        self._mtime = st.st_mtime_ns
        return self._records

    def _save(self, records: list[TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"tokens": [r.to_dict() for r in records]}, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._mtime = None

    # -- operations ----------------------------------------------------------------------------
    def create(self, name: str, role: str) -> tuple[str, TokenRecord]:
        """Make a token for ``name`` with ``role``; return ``(token, record)`` (show the token once)."""
        check_name(name)
        role_rank(role)
        token = _PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            records = list(self._load())
            if len(records) >= MAX_TOKENS:
                raise InputError(f"{self.path}: at most {MAX_TOKENS} tokens; revoke and prune some")
            rec = TokenRecord("tok-" + secrets.token_hex(4), name, role, _digest(token), time.time())
            self._save([*records, rec])
        return token, rec

    def records(self) -> list[TokenRecord]:
        """Return every token record (revoked ones too), oldest first."""
        with self._lock:
            return list(self._load())

    def revoke(self, token_id_or_name: str) -> list[TokenRecord]:
        """Revoke the token with this id, or every live token of this operator name; return them."""
        with self._lock:
            records = list(self._load())
            now = time.time()
            hit = [r for r in records if r.revoked is None and token_id_or_name in (r.token_id, r.name)]
            if not hit:
                raise InputError(f"{self.path}: no live token with id or name {token_id_or_name!r}")
            ids = {r.token_id for r in hit}
            out = [TokenRecord(r.token_id, r.name, r.role, r.sha256, r.created, now) if r.token_id in ids else r
                   for r in records]
            self._save(out)
        return [r for r in out if r.token_id in ids]

    def authenticate(self, token: str) -> TokenRecord | None:
        """Return the live record of ``token``, or None. Compares every digest (constant time per record)."""
        if not token.startswith(_PREFIX) or len(token) > 200:
            return None
        want = _digest(token).encode("ascii")
        with self._lock:
            records = self._load()
        found: TokenRecord | None = None
        for r in records:
            if hmac.compare_digest(r.sha256.encode("ascii"), want) and r.revoked is None:
                found = r
        return found
