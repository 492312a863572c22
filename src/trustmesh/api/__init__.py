"""trustmesh.api: HTTP serving (FastAPI). A leaf: nothing else in trustmesh imports it.

``create_ledger_app`` serves a ledger (tlog-tiles, proofs, authenticated submit); ``create_app`` is the
operator server of ``trustmesh serve`` (REST API with roles, Prometheus metrics, the web console).
"""

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
