"""trustmesh.console: the operator web console's static files (``static/``), served by ``trustmesh serve``.

Plain ES modules and CSS, no build step and nothing fetched from elsewhere at run time. The browser
verifies ledger inclusion proofs and checkpoint signatures itself with WebCrypto (``static/verify.js``).
"""

__all__: list[str] = []
