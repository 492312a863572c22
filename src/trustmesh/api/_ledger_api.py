"""HTTP serving of a ledger: C2SP tlog-tiles read API, proofs, and an authenticated submit endpoint.

Read endpoints (public): ``GET /checkpoint``, ``GET /tile/<L>/<N>[.p/<W>]``,
``GET /tile/entries/<N>[.p/<W>]``, ``GET /log.pub``, ``GET /proof/inclusion?index=&size=``,
``GET /proof/consistency?from=&to=``. Write endpoint: ``POST /add-entries`` with
``{"entries": [{"kind", "payload", "refs"?, "time"?}, ...]}``, authenticated (see ``_auth``); each
accepted batch is one durable transaction and yields a new signed checkpoint.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Query, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from trustmesh.api._auth import AuthError, RequestAuth
from trustmesh.errors import InputError, LogIntegrityError, TrustmeshError, VerificationError
from trustmesh.ledger import Entry, Ledger, parse_tile_path

__all__ = ["create_ledger_app"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 8 << 20
MAX_BATCH_ENTRIES: Final = 10_000
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

    @app.post("/add-entries")
    async def add_entries(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            return _error(413, f"request body must be at most {max_body_bytes} bytes")
        body = await request.body()
        if len(body) > max_body_bytes:
            return _error(413, f"request body must be at most {max_body_bytes} bytes")
        try:
            who = guard.check(request.method, request.url.path, request.headers, body)
        except AuthError as exc:
            return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
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

        def _commit() -> dict[str, Any]:
            indices = ledger.append(entries)
            out: dict[str, Any] = {"indices": indices}
            if checkpoint_each_batch:
                out["checkpoint"] = ledger.checkpoint().to_bytes().decode("utf-8")
            return out

        result = await run_in_threadpool(_commit)
        log.info("appended %d entries for %s", len(entries), who)
        return JSONResponse(result)

    return app  # the caller owns app.state.ledger and closes it when the server stops
