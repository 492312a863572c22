"""trustmesh.api: HTTP serving (FastAPI). A leaf: nothing else in trustmesh imports it."""

from trustmesh.api._auth import AuthError, RequestAuth, sign_request
from trustmesh.api._ledger_api import create_ledger_app

__all__ = ["AuthError", "RequestAuth", "create_ledger_app", "sign_request"]
