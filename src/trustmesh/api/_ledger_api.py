"""HTTP serving of a ledger: C2SP tlog-tiles read API, proofs, and an authenticated submit endpoint.

Read endpoints (public): ``GET /checkpoint``, ``GET /tile/<L>/<N>[.p/<W>]``,
``GET /tile/entries/<N>[.p/<W>]``, ``GET /log.pub``, ``GET /proof/inclusion?index=&size=``,
``GET /proof/consistency?from=&to=``. Write endpoint: ``POST /add-entries`` with
``{"entries": [{"kind", "payload", "refs"?, "time"?}, ...]}``, authenticated (see ``_auth``).

Writes are group-committed: one writer thread takes every request that queued up while the previous
group was being written, checks each (identity entries one by one, against the registry), appends
them all in one SQLite transaction together with the checkpoint covering them (one fsync for both,
``Ledger.append_group_signed``; the group's nonces are written meanwhile, in one transaction of
their own file), and only once both are durable answers each request with its own indices and that
checkpoint. So every acknowledged entry is durable and signed, and 20 clients
sending one entry each cost one transaction, not twenty.

The body is read in chunks and refused (413) as soon as it passes ``max_body_bytes``, before it is
parsed or authenticated, whether or not it declares a Content-Length. An ``Idempotency-Key``
header makes a retry return the original indices. ``identity.*`` entries are refused (403) unless
the request is signed by an identity-writer key, and then must verify against the identity
registry replayed from the log (400 otherwise).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Query, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from trustmesh._safeload import json_too_deep
from trustmesh.api._auth import AuthError, Caller, RequestAuth
from trustmesh.api._verifier import SignatureChecker
from trustmesh.errors import InputError, LogIntegrityError, TrustmeshError, VerificationError
from trustmesh.identity import IDENTITY_KINDS, IdentityRegistry
from trustmesh.ledger import Entry, Ledger, parse_tile_path
from trustmesh.ledger._ledger import check_idempotency_key

__all__ = ["create_ledger_app"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 8 << 20
MAX_BATCH_ENTRIES: Final = 10_000
_MAX_BODY_DEPTH: Final = 64  # nesting checked before json.loads (see trustmesh._safeload.json_too_deep)
MAX_GROUP_ENTRIES: Final = 50_000  # entries one group commit may take (several requests' worth)
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


class _SubmitFastPath:
    """Answer ``POST /add-entries`` straight from ASGI, everything else through the FastAPI app.

    The submit endpoint is the server's hot path (every worker's appends): routing, the Request object
    and the middleware stack cost more per request than the authentication and parsing themselves.
    The checks are the route's own (one ``submit`` function serves both).
    """

    def __init__(self, app: Any, submit: Any, limit: int) -> None:
        self.app, self.submit, self.limit = app, submit, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/add-entries" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        body = await self._body(headers, receive)
        status, data, extra = await self.submit(scope.get("root_path", "") + scope["path"], headers, body)
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": data})

    async def _body(self, headers: Mapping[str, str], receive: Any) -> bytes | None:
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return None
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


Reply = tuple[int, bytes, dict[str, str]]  # an answer to add-entries: status, JSON body, extra headers


def _reply(status: int, doc: dict[str, Any], extra: dict[str, str] | None = None) -> Reply:
    return status, json.dumps(doc, separators=(",", ":")).encode(), extra or {}


def _failure(exc: BaseException) -> Reply:
    """The answer to a request whose group commit raised ``exc``."""
    if isinstance(exc, VerificationError):
        log.error("ledger verification failed while serving: %s", exc)
        return _reply(409 if not isinstance(exc, LogIntegrityError) else 500, {"error": f"{type(exc).__name__}: {exc}"})
    if isinstance(exc, sqlite3.Error):
        log.error("ledger database error while serving: %s", exc)
        return _reply(500, {"error": "the ledger database is damaged or unavailable"})
    if isinstance(exc, TrustmeshError):
        return _reply(400, {"error": str(exc)})
    log.error("add-entries failed: %s: %s", type(exc).__name__, exc)
    return _reply(500, {"error": "internal error"})


@dataclass(slots=True)
class _Request:
    entries: list[Entry]
    key: str | None  # the stored idempotency key ("api:<header>")
    idem: str | None  # the header as sent, for messages
    caller: Caller
    loop: asyncio.AbstractEventLoop  # the event loop waiting for the answer
    reply: Callable[[Reply], None]  # called on that loop with the answer, once it is durable


def _deliver(answers: list[tuple[_Request, Reply]]) -> None:
    """Hand a group's answers to their requests (runs on their event loop: one wake-up for the whole group)."""
    for r, answer in answers:
        try:
            r.reply(answer)
        except Exception:  # noqa: BLE001 - one connection's failure must not cost the others their answers
            log.exception("delivering an add-entries answer failed")


class _GroupCommit:
    """One writer thread: take every queued request, write them in one transaction, then answer each.

    The answers of a group are handed to the event loop in one ``call_soon_threadsafe`` (not one
    thread-safe wake-up per request): at a few thousand requests a second the per-request hand-over
    between the writer thread and the loop costs more than the group's SQLite work.
    """

    def __init__(self, ledger: Ledger, guard: RequestAuth, checkpoint_each_batch: bool,
                 check_identity: Any) -> None:
        self.ledger, self.guard, self.checkpoint_each_batch = ledger, guard, checkpoint_each_batch
        self.check_identity = check_identity
        self.queue: queue.Queue[_Request | None] = queue.Queue()
        self.groups = 0
        self.requests = 0  # requests answered through groups (groups / requests = mean group size)
        self._answers: list[tuple[_Request, Reply]] = []
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trustmesh-nonce-flush")
        self._thread = threading.Thread(target=self._run, name="trustmesh-ledger-writer", daemon=True)
        self._thread.start()

    def submit(self, request: _Request) -> None:
        self.queue.put(request)

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=10)
        self._flusher.shutdown(wait=True)

    def _answer(self, r: _Request, answer: Reply) -> None:
        self._answers.append((r, answer))

    def _send_answers(self) -> None:
        answers, self._answers = self._answers, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Reply]]] = {}
        for a in answers:
            by_loop.setdefault(a[0].loop, []).append(a)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that loop has closed: nobody is waiting any more
                log.debug("dropped %d answers for a closed event loop", len(items))

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            group, n = [first], len(first.entries)
            while n < MAX_GROUP_ENTRIES:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.queue.put(None)  # stop after this group
                    break
                group.append(more)
                n += len(more.entries)
            self.requests += len(group)
            try:
                self._commit(group)
            except BaseException as exc:  # noqa: BLE001 - every waiting request must get an answer
                answered = {id(a[0]) for a in self._answers}
                failed = _failure(exc)
                for r in group:
                    if id(r) not in answered:
                        self._answer(r, failed)
            finally:
                self._send_answers()

    def _commit(self, group: list[_Request]) -> None:
        self.groups += 1
        plain: list[_Request] = []
        for r in group:  # identity entries are checked against the registry one request at a time
            if any(e.kind in IDENTITY_KINDS or e.kind.startswith("identity.") for e in r.entries):
                refused = self.check_identity(r.entries, r.caller)
                if refused is not None:
                    self._answer(r, refused)
                    continue
                self.guard.flush_nonces()
                self._finish([r], *self._append([r]))
            else:
                plain.append(r)
        if plain:
            # the nonces' fsync (their own SQLite file) runs beside the ledger's; both end before any
            # answer, so an acknowledged request's nonce and entries survive a crash
            flushed = self._flusher.submit(self.guard.flush_nonces)
            try:
                results, note = self._append(plain)
            finally:
                flushed.result()
            self._finish(plain, results, note)

    def _append(self, requests: list[_Request]) -> tuple[list[list[int] | InputError], bytes | None]:
        """Append the requests in one transaction; with checkpoints on, their checkpoint is in the same one.

        Returns each request's result and the checkpoint note as a JSON string (encoded once per group).
        """
        batch = [(r.entries, r.key) for r in requests]
        if not self.checkpoint_each_batch:
            return self.ledger.append_group(batch), None
        results, cp = self.ledger.append_group_signed(batch)
        return results, json.dumps(cp.to_bytes().decode("utf-8")).encode()

    def _finish(self, requests: list[_Request], results: list[list[int] | InputError], note: bytes | None = None
                ) -> None:
        if note is not None and all(isinstance(x, InputError) for x in results):
            note = None
        tail = b"]}" if note is None else b'],"checkpoint":' + note + b"}"
        for r, result in zip(requests, results, strict=True):
            if isinstance(result, InputError):
                if "already used" in str(result):
                    self._answer(r, _reply(409, {"error": f"Idempotency-Key {r.idem!r} was already used for a "
                                                          "different request"}))
                else:
                    self._answer(r, _reply(400, {"error": str(result)}))
                continue
            # {"indices": [...], "checkpoint": note}, built from the group's one encoding of the note
            self._answer(r, (200, b'{"indices":[' + ",".join(map(str, result)).encode() + tail, {}))


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
    guard.defer_nonces()  # written once per group commit, before the group is acknowledged
    identities: list[IdentityRegistry] = []  # replayed lazily, then caught up incrementally
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

    def _check_identity_entries(entries: list[Entry], caller: Caller) -> Reply | None:
        """Refuse identity kinds from plain writers; check the others' signatures against the registry."""
        wanted = [(i, e) for i, e in enumerate(entries) if e.kind in IDENTITY_KINDS or e.kind.startswith("identity.")]
        if not wanted:
            return None
        if not caller.identity_writer:
            return _reply(403, {"error": f"entries[{wanted[0][0]}]: kind {wanted[0][1].kind!r} may only be "
                                         "submitted by an identity-writer key (signed request)"})
        if not identities:
            identities.append(IdentityRegistry.from_ledger(ledger))
        reg = identities[0]
        reg.catch_up(ledger)
        trial = reg.copy()
        base = ledger.size
        for i, e in enumerate(entries):
            if e.kind not in IDENTITY_KINDS:
                if e.kind.startswith("identity."):
                    return _reply(400, {"error": f"entries[{i}]: unknown identity kind {e.kind!r}"})
                continue
            reason = trial.try_apply(base + i, e.kind, e.payload)
            if reason is not None:
                return _reply(400, {"error": f"entries[{i}] ({e.kind}) does not verify: {reason}"})
        return None

    def begin(path: str, headers: Mapping[str, str], body: bytes | None, reply: Callable[[Reply], None],
              checker: SignatureChecker | None = None) -> Reply | None:
        """Authenticate and check one ``POST /add-entries``; return its answer if it is refused at once.

        Otherwise queue it for the group-commit writer and return None: ``reply`` is then called on
        this event loop with the answer, once the request's entries, their checkpoint and its nonce
        are durable. No task or future per request (at thousands a second they cost more than the
        checks). ``body`` None: it was larger than ``max_body_bytes`` (refused before parsing or
        authenticating). With ``checker`` (and signatures the only credential), the Ed25519 check
        runs in its process and the rest follows when its answer is back (refusals then come
        through ``reply`` too).
        """
        if body is None:
            return _reply(413, {"error": f"request body must be at most {max_body_bytes} bytes"})
        if checker is not None and guard.signatures_only:
            try:
                parts = guard.signed_parts("POST", path, headers, body, origin=ledger.origin)
            except AuthError as exc:
                return _reply(401, {"error": str(exc)}, {"WWW-Authenticate": "Bearer"})
            signed = body

            def verified(ok: bool) -> None:
                try:
                    caller = guard.accept_signed(parts, ok)
                except AuthError as exc:
                    reply(_reply(401, {"error": str(exc)}, {"WWW-Authenticate": "Bearer"}))
                    return
                now = _authenticated(headers, signed, caller, reply)
                if now is not None:
                    reply(now)

            checker.check(parts.key.public_key, parts.signature, parts.message, verified)
            return None
        try:
            caller = guard.authenticate("POST", path, headers, body, origin=ledger.origin)
        except AuthError as exc:
            return _reply(401, {"error": str(exc)}, {"WWW-Authenticate": "Bearer"})
        return _authenticated(headers, body, caller, reply)

    def _authenticated(headers: Mapping[str, str], body: bytes, caller: Caller, reply: Callable[[Reply], None]
                       ) -> Reply | None:
        """The checks of an authenticated request; queue it for the writer (None) or return its refusal."""
        idem = headers.get("idempotency-key")
        if idem is not None:
            try:
                check_idempotency_key(idem)
            except InputError as exc:
                return _reply(400, {"error": f"Idempotency-Key: {exc}"})
            if len(idem) > 190:
                return _reply(400, {"error": "Idempotency-Key must be at most 190 characters"})
        if json_too_deep(body.decode("utf-8", "replace"), _MAX_BODY_DEPTH):
            return _reply(400, {"error": f"body is not valid JSON: nested deeper than {_MAX_BODY_DEPTH} levels"})
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            return _reply(400, {"error": f"body is not valid JSON: {exc}"})
        if not isinstance(doc, dict) or set(doc) != {"entries"} or not isinstance(doc["entries"], list):
            return _reply(400, {"error": 'body must be {"entries": [ ... ]}'})
        items = doc["entries"]
        if not 1 <= len(items) <= MAX_BATCH_ENTRIES:
            return _reply(400, {"error": f"entries must hold 1..{MAX_BATCH_ENTRIES} items, got {len(items)}"})
        entries = []
        for i, item in enumerate(items):
            try:
                entries.append(Entry.from_dict(item))
            except InputError as exc:
                return _reply(400, {"error": f"entries[{i}]: {exc}"})
        key = None if idem is None else f"api:{idem}"
        writer.submit(_Request(entries, key, idem, caller, asyncio.get_running_loop(), reply))
        return None

    async def submit(path: str, headers: Mapping[str, str], body: bytes | None) -> Reply:
        """:func:`begin` for an ASGI caller: return (status, JSON body, extra headers) once answered."""
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Reply] = loop.create_future()

        def reply(answer: Reply) -> None:
            if not answered.done():  # not when the waiting task was cancelled (client gone)
                answered.set_result(answer)

        now = begin(path, headers, body, reply)
        return now if now is not None else await answered

    @app.post("/add-entries")
    async def add_entries(request: Request) -> Response:
        # reached only without the fast path below (kept for mounting the app under other ASGI stacks)
        try:
            body: bytes | None = await _read_body(request, max_body_bytes)
        except _BodyTooLarge:
            body = None
        status, out, extra = await submit(request.url.path, request.headers, body)
        return Response(out, status_code=status, headers=extra or None, media_type="application/json")

    app.add_middleware(_SubmitFastPath, submit=submit, limit=max_body_bytes)  # outermost: skips routing and gzip
    writer = _GroupCommit(ledger, guard, checkpoint_each_batch, _check_identity_entries)
    app.state.writer = writer
    # what a server should run: the submit path ahead of FastAPI itself (its router, exception and
    # error middleware cost more per request than the checks); every other request goes to the app
    app.state.asgi = _SubmitFastPath(app, submit, max_body_bytes)
    app.state.submit, app.state.max_body_bytes = submit, max_body_bytes  # for api._ledger_http.serve_ledger
    app.state.begin_submit = begin  # the same checks without a task per request (api._ledger_http)
    app.state.auth = guard
    return app  # the caller owns app.state.ledger (and app.state.writer) and closes them when the server stops
