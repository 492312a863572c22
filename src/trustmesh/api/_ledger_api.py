"""HTTP serving of a ledger: C2SP tlog-tiles read API, proofs, and an authenticated submit endpoint.

Read endpoints (public): ``GET /checkpoint``, ``GET /tile/<L>/<N>[.p/<W>]``,
``GET /tile/entries/<N>[.p/<W>]``, ``GET /log.pub``, ``GET /proof/inclusion?index=&size=``,
``GET /proof/consistency?from=&to=``. Write endpoint: ``POST /add-entries`` with
``{"entries": [{"kind", "payload", "refs"?, "time"?}, ...]}``, authenticated (see ``_auth``); each
accepted batch is one durable transaction and yields a new signed checkpoint.

The body is read in chunks and refused (413) as soon as it passes ``max_body_bytes``, before it is
parsed or authenticated, whether or not it declares a Content-Length. An ``Idempotency-Key``
header makes a retry return the original indices. ``identity.*`` entries are refused (403) unless
the request is signed by an identity-writer key, and then must verify against the identity
registry replayed from the log (400 otherwise).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Query, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from trustmesh.api._auth import AuthError, Caller, RequestAuth
from trustmesh.errors import InputError, LogIntegrityError, TrustmeshError, VerificationError
from trustmesh.identity import IDENTITY_KINDS, IdentityRegistry
from trustmesh.ledger import Entry, Ledger, parse_tile_path
from trustmesh.ledger._ledger import check_idempotency_key

__all__ = ["create_ledger_app"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 8 << 20
MAX_BATCH_ENTRIES: Final = 10_000
NONCE_DB: Final = "api-nonces.sqlite"


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the request body chunk by chunk, stopping as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _BodyTooLarge
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_ledger_app(
    ledger_dir: Path | str,
    *,
    auth: RequestAuth | None = None,
    checkpoint_each_batch: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """Return a FastAPI app serving the ledger in ``ledger_dir``.

    Without ``auth`` (or with one that has no credentials) the submit endpoint refuses every write.
    """
    ledger = Ledger.open(ledger_dir)
    guard = auth or RequestAuth()
    guard.use_nonce_store(Path(ledger_dir) / NONCE_DB)  # replay protection survives restarts
    identities: list[IdentityRegistry] = []  # replayed lazily, then caught up incrementally
    write_lock = threading.Lock()  # one write at a time: the identity check and the append stay atomic
    app = FastAPI(title="trustmesh ledger", docs_url=None, redoc_url=None, openapi_url=None)
    # tlog-tiles: entry bundles SHOULD be compressed at the HTTP layer (gzip when the client accepts it)
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.state.ledger = ledger

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(VerificationError)
    async def _verification_error(_: Request, exc: VerificationError) -> JSONResponse:
        log.error("ledger verification failed while serving: %s", exc)
        return _error(409 if not isinstance(exc, LogIntegrityError) else 500, f"{type(exc).__name__}: {exc}")

    @app.exception_handler(sqlite3.Error)
    async def _db_error(_: Request, exc: sqlite3.Error) -> JSONResponse:
        log.error("ledger database error while serving: %s", exc)
        return _error(500, "the ledger database is damaged or unavailable")

    @app.exception_handler(TrustmeshError)
    async def _other_error(_: Request, exc: TrustmeshError) -> JSONResponse:
        return _error(400, str(exc))

    @app.get("/checkpoint")
    def checkpoint() -> Response:
        cp = ledger.latest_checkpoint()
        if cp is None:
            return _error(404, "the log has not signed a checkpoint yet")
        return PlainTextResponse(cp.to_bytes().decode("utf-8"), media_type="text/plain; charset=utf-8",
                                 headers={"Cache-Control": "no-cache, max-age=2"})

    @app.get("/log.pub")
    def public_key() -> Response:
        return PlainTextResponse(ledger.verifier_key + "\n", media_type="text/plain; charset=utf-8")

    @app.get("/tile/{rest:path}")
    def tile(rest: str) -> Response:
        try:
            level, index, width = parse_tile_path("tile/" + rest)
            data = ledger.entry_bundle(index, width) if level is None else ledger.tile(level, index, width)
        except InputError as exc:
            return _error(404, str(exc))
        return Response(data, media_type="application/octet-stream", headers=_IMMUTABLE)

    @app.get("/proof/inclusion")
    def inclusion(index: int = Query(..., ge=0), size: int | None = Query(None, ge=1)) -> dict[str, Any]:
        return ledger.prove_inclusion(index, size).to_json()

    @app.get("/proof/consistency")
    def consistency(size1: int = Query(..., alias="from", ge=0), size2: int | None = Query(None, alias="to", ge=0)) -> dict[str, Any]:
        return ledger.prove_consistency(size1, size2).to_json()

    def _check_identity_entries(entries: list[Entry], caller: Caller) -> JSONResponse | None:
        """Refuse identity kinds from plain writers; check the others' signatures against the registry."""
        wanted = [(i, e) for i, e in enumerate(entries) if e.kind in IDENTITY_KINDS or e.kind.startswith("identity.")]
        if not wanted:
            return None
        if not caller.identity_writer:
            return _error(403, f"entries[{wanted[0][0]}]: kind {wanted[0][1].kind!r} may only be submitted by an "
                               "identity-writer key (signed request)")
        if not identities:
            identities.append(IdentityRegistry.from_ledger(ledger))
        reg = identities[0]
        reg.catch_up(ledger)
        trial = reg.copy()
        base = ledger.size
        for i, e in enumerate(entries):
            if e.kind not in IDENTITY_KINDS:
                if e.kind.startswith("identity."):
                    return _error(400, f"entries[{i}]: unknown identity kind {e.kind!r}")
                continue
            reason = trial.try_apply(base + i, e.kind, e.payload)
            if reason is not None:
                return _error(400, f"entries[{i}] ({e.kind}) does not verify: {reason}")
        return None

    @app.post("/add-entries")
    async def add_entries(request: Request) -> Response:
        try:
            body = await _read_body(request, max_body_bytes)
        except _BodyTooLarge:
            return _error(413, f"request body must be at most {max_body_bytes} bytes")
        try:
            caller = guard.authenticate(request.method, request.url.path, request.headers, body, origin=ledger.origin)
        except AuthError as exc:
            return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        idem = request.headers.get("idempotency-key")
        if idem is not None:
            try:
                check_idempotency_key(idem)
            except InputError as exc:
                return _error(400, f"Idempotency-Key: {exc}")
            if len(idem) > 190:
                return _error(400, "Idempotency-Key must be at most 190 characters")
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            return _error(400, f"body is not valid JSON: {exc}")
        if not isinstance(doc, dict) or set(doc) != {"entries"} or not isinstance(doc["entries"], list):
            return _error(400, 'body must be {"entries": [ ... ]}')
        items = doc["entries"]
        if not 1 <= len(items) <= MAX_BATCH_ENTRIES:
            return _error(400, f"entries must hold 1..{MAX_BATCH_ENTRIES} items, got {len(items)}")
        entries = []
        for i, item in enumerate(items):
            try:
                entries.append(Entry.from_dict(item))
            except InputError as exc:
                return _error(400, f"entries[{i}]: {exc}")

        def _locked_commit() -> dict[str, Any] | JSONResponse:
            with write_lock:
                return _commit()

        def _commit() -> dict[str, Any] | JSONResponse:
            refused = _check_identity_entries(entries, caller)
            if refused is not None:
                return refused
            key = None if idem is None else f"api:{idem}"
            try:
                indices = ledger.append(entries, idempotency_key=key)
            except InputError as exc:
                if "already used" in str(exc):
                    return _error(409, f"Idempotency-Key {idem!r} was already used for a different request")
                raise
            out: dict[str, Any] = {"indices": indices}
            if checkpoint_each_batch:
                out["checkpoint"] = ledger.checkpoint().to_bytes().decode("utf-8")
            return out

        result = await run_in_threadpool(_locked_commit)
        if isinstance(result, JSONResponse):
            return result
        log.info("appended %d entries for %s", len(entries), caller.name)
        return JSONResponse(result)

    return app  # the caller owns app.state.ledger and closes it when the server stops
