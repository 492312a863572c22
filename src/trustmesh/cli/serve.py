"""CLI commands: ``serve`` (operator REST API + web console) and ``token create|list|revoke``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from trustmesh.cli._common import console, err_console, guarded, print_json
from trustmesh.cli._root import app, bench_app

__all__ = ["run_server", "serve", "serve_demo", "token_app"]

token_app = typer.Typer(help="Operator API tokens (roles viewer, responder, admin).", no_args_is_help=True)
app.add_typer(token_app, name="token")

_CONFIG_HELP = "Pipeline TOML (the one `trustmesh run` uses; its api table configures the server)."


def _api() -> Any:
    try:
        import uvicorn  # noqa: F401

        import trustmesh.api as api
    except ImportError as exc:
        from trustmesh.errors import MissingDependencyError

        raise MissingDependencyError(exc.name or "fastapi", "api") from None
    return api


def run_server(config: Any, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Open the configured state, serve it until interrupted, then close it."""
    import uvicorn

    api = _api()
    server_app = api.create_app(config)
    scheme = "https" if config.tls else "http"
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"{scheme}://{host}:{config.port}/"
    try:
        uv = uvicorn.Config(server_app, host=config.host, port=config.port, log_level="warning",
                            ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
                            ssl_keyfile=str(config.tls_key) if config.tls_key else None,
                            server_header=False, proxy_headers=False, ws="none")
        server = uvicorn.Server(uv)
        if on_ready is not None:
            on_ready(url)
        try:
            server.run()
        except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: uvicorn has shut down cleanly
            pass
    finally:
        server_app.state.context.close()


@app.command()
@guarded
def serve(
    config: Path = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default api.host, else 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="TCP port (default api.port, else 8443)."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate (with --tls-key: HTTPS)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /api/v1/openapi.json), /metrics and the web console at /."""
    api = _api()
    cfg = api.ServeConfig.load(config, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key)
    n_live = sum(1 for t in api.TokenStore(cfg.token_path).records() if t.revoked is None)

    def ready(url: str) -> None:
        err_console.print(f"serving {cfg.ledger_dir} (state {cfg.state_dir}) on {url}", highlight=False)
        if n_live == 0:
            err_console.print(f"[yellow]no tokens yet:[/] trustmesh token create --role admin --name NAME "
                              f"--config {config}", highlight=False)
        if not cfg.tls and cfg.host not in {"127.0.0.1", "localhost", "::1"}:
            err_console.print("[yellow]warning:[/] plain HTTP on a non-loopback address; tokens travel in clear "
                              "(set api.tls_cert/api.tls_key)", highlight=False)

    run_server(cfg, on_ready=ready)


@token_app.command("create")
@guarded
def token_create(
    role: str = typer.Option(..., "--role", help="viewer | responder | admin."),
    name: str = typer.Option(..., "--name", help="Operator name (recorded with every decision)."),
    config: Path = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a token and print it once; only its SHA-256 is stored (0600 file)."""
    api = _api()
    store = api.TokenStore(api.ServeConfig.load(config).token_path)
    token, rec = store.create(name, role)
    if as_json:
        print_json({"token": token, **rec.public()})
        return
    err_console.print(f"token {rec.token_id} for {rec.name} ({rec.role}); shown once, store it now:",
                      highlight=False)
    console.print(token, highlight=False, markup=False)


@token_app.command("list")
@guarded
def token_list(
    config: Path = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List tokens (id, name, role, created, revoked); never the tokens themselves."""
    import datetime as dt

    api = _api()
    rows = [t.public() for t in api.TokenStore(api.ServeConfig.load(config).token_path).records()]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no tokens")
    for r in rows:
        made = dt.datetime.fromtimestamp(r["created"], dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        state = "revoked" if r["revoked"] else "live"
        console.print(f"{r['token_id']}  {r['role']:<9} {r['name']:<24} {made}  {state}", highlight=False)


@token_app.command("revoke")
@guarded
def token_revoke(
    token: str = typer.Argument(..., help="Token id (tok-...) or operator name (revokes all of theirs)."),
    config: Path = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
) -> None:
    """Revoke a token (a running server refuses it from its next request)."""
    api = _api()
    for r in api.TokenStore(api.ServeConfig.load(config).token_path).revoke(token):
        console.print(f"revoked {r.token_id} ({r.name}, {r.role})", highlight=False)


def serve_demo(out_dir: Path, *, host: str = "127.0.0.1", port: int = 8443) -> None:
    """Serve the console on a demo folder (``ledger/``, ``state/``) with a one-time admin token.

    The token is made for this server run and revoked when it stops; it is printed with the URL
    (in the URL's fragment, which browsers never send to the server, so it stays out of access logs).
    """
    api = _api()
    cfg = api.ServeConfig(ledger_dir=out_dir / "ledger", state_dir=out_dir / "state", host=host, port=port)
    store = api.TokenStore(cfg.token_path)
    token, rec = store.create("demo-admin", "admin")

    def ready(url: str) -> None:
        console.print(f"[bold]console:[/] {url}#token={token}", highlight=False, soft_wrap=True)
        console.print(f"one-time admin token (revoked when this server stops): {token}", highlight=False,
                      markup=False, soft_wrap=True)
        err_console.print("[dim]Ctrl-C stops the server[/]")

    try:
        run_server(cfg, on_ready=ready)
    finally:
        store.revoke(rec.token_id)


@bench_app.command("api")
@guarded
def bench_api(
    config: Path = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    requests: int = typer.Option(50, "--requests", help="Requests per endpoint (timed over real HTTP)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Time the operator server on a deployment: ledger index catch-up, its memory, request latency."""
    import socket
    import statistics
    import threading
    import time
    import tracemalloc

    import httpx
    import uvicorn

    api = _api()
    from trustmesh.api._index import LedgerIndex

    if requests < 1:
        raise typer.BadParameter("--requests must be >= 1")
    cfg = api.ServeConfig.load(config)
    server_app = api.create_app(cfg)
    ctx = server_app.state.context
    fresh = LedgerIndex(ctx.ledger)
    tracemalloc.start()
    t0 = time.perf_counter()
    size = fresh.refresh()
    index_s = time.perf_counter() - t0
    index_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    t0 = time.perf_counter()
    LedgerIndex(ctx.ledger).refresh()
    untraced_s = time.perf_counter() - t0
    token, rec = ctx.tokens.create("bench", "viewer")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(server_app, log_level="warning", lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    latencies: dict[str, dict[str, float]] = {}
    last = max(0, (ctx.ledger.latest_checkpoint().size if ctx.ledger.latest_checkpoint() else 1) - 1)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            for name, path in (("alerts?limit=100", "/api/v1/alerts?limit=100"), ("incidents", "/api/v1/incidents"),
                               ("ledger/entries (proof)", f"/api/v1/ledger/entries/{last}"),
                               ("summary", "/api/v1/summary")):
                times = []
                for _ in range(requests):
                    t = time.perf_counter()
                    client.get(path).raise_for_status()
                    times.append((time.perf_counter() - t) * 1e3)
                times.sort()
                latencies[name] = {"median_ms": round(statistics.median(times), 2),
                                   "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2)}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        ctx.tokens.revoke(rec.token_id)
        ctx.close()
    doc = {"ledger_entries": size, "alerts": len(fresh.alerts),
           "index_entries_per_s": round(size / untraced_s) if untraced_s else None,
           "index_bytes_per_alert": round(index_bytes / max(len(fresh.alerts), 1)),
           "index_seconds_traced": round(index_s, 3), "requests_per_endpoint": requests, "latency": latencies}
    if as_json:
        print_json(doc)
        return
    for key, value in doc.items():
        console.print(f"{key}: {value}", highlight=False)
