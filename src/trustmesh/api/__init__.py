"""trustmesh.api: HTTP serving (FastAPI). A leaf: nothing else in trustmesh imports it.

``create_ledger_app`` serves a ledger (tlog-tiles, proofs, authenticated submit); ``create_app`` is the
operator server of ``trustmesh serve`` (REST API with roles, Prometheus metrics, the web console).

Names are imported on first use: ``trustmesh ledger serve`` needs only the ledger app, and the
operator server's imports (the responder, its JSON Schema validator and that one's grammars) cost
seconds of CPU at every start of a ledger server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trustmesh.api._app import create_app
    from trustmesh.api._auth import AuthError, RequestAuth, sign_request
    from trustmesh.api._config import ServeConfig
    from trustmesh.api._ledger_api import create_ledger_app
    from trustmesh.api._tokens import ROLES, TokenRecord, TokenStore

__all__ = [
    "AuthError",
    "ROLES",
    "RequestAuth",
    "ServeConfig",
    "TokenRecord",
    "TokenStore",
    "create_app",
    "create_ledger_app",
    "sign_request",
]

_HOME = {
    "AuthError": "_auth", "RequestAuth": "_auth", "sign_request": "_auth", "ServeConfig": "_config",
    "create_app": "_app", "create_ledger_app": "_ledger_api", "ROLES": "_tokens", "TokenRecord": "_tokens",
    "TokenStore": "_tokens",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
