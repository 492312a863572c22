"""The operator server: ``/api/v1`` (REST, OpenAPI), ``/metrics`` (Prometheus) and the console at ``/``.

Request bodies are capped at ``max_body_bytes`` before any handler reads them (413). Every response
carries a strict Content-Security-Policy: the console loads only its own scripts and styles.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trustmesh.api._config import ServeConfig
from trustmesh.api._context import ApiContext, open_context
from trustmesh.api._routes import build_router
from trustmesh.errors import TrustmeshError

__all__ = ["console_dir", "create_app"]

log = logging.getLogger(__name__)

_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = [(b"content-security-policy", _CSP.encode()), (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]


def console_dir() -> Path:
    """Return the folder of the console's static files (shipped inside the package)."""
    return Path(str(resources.files("trustmesh.console") / "static"))


class _Guard:
    """ASGI middleware: body size cap, security headers, request metrics."""

    def __init__(self, app: ASGIApp, ctx: ApiContext) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.ctx.config.max_body_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _too_large(send, limit)
            return
        seen = 0
        status = [500]
        started = time.perf_counter()

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return msg

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
                msg = dict(msg)
                msg["headers"] = [*msg.get("headers", []), *_HEADERS]
            await send(msg)

        try:
            await self.app(scope, limited, send_with_headers)
        except _BodyTooLarge:
            await _too_large(send, limit)
            status[0] = 413
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("/api/v1/*" if scope["path"].startswith("/api/") else "static")
            self.ctx.metrics.requests.labels(scope["method"], path, str(status[0])).inc()
            self.ctx.metrics.latency.labels(path).observe(time.perf_counter() - started)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body must be at most {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *_HEADERS]})
    await send({"type": "http.response.body", "body": body})


def create_app(config: ServeConfig | None = None, *, context: ApiContext | None = None) -> FastAPI:
    """Return the operator server for ``config`` (or an already opened ``context``).

    The caller closes ``app.state.context`` when the server stops.
    """
    if context is None:
        if config is None:
            raise ValueError("create_app needs a config or a context")
        context = open_context(config)
    ctx = context
    app = FastAPI(title="trustmesh operator API", version="1", openapi_url="/api/v1/openapi.json",
                  docs_url=None, redoc_url=None,
                  description="Alerts, incidents, approvals, actions, models and the ledger of one trustmesh "
                              "deployment. Bearer tokens with roles viewer < responder < admin.")
    app.state.context = ctx

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(TrustmeshError)
    async def _trustmesh_error(_: Request, exc: TrustmeshError) -> JSONResponse:
        log.warning("request failed: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=400)

    app.include_router(build_router(ctx))

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if not ctx.config.metrics_public:
            _require_viewer(ctx, request)
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    app.mount("/", StaticFiles(directory=console_dir(), html=True), name="console")
    app.add_middleware(_Guard, ctx=ctx)
    return app


def _require_viewer(ctx: ApiContext, request: Request) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or ctx.tokens.authenticate(token.strip()) is None:
        ctx.metrics.auth_failures.labels("401").inc()
        raise StarletteHTTPException(401, "a bearer token is required for /metrics (or set api.metrics_public)",
                                     headers={"WWW-Authenticate": "Bearer"})
