"""Anchor ledger checkpoints on an Ethereum chain (LogAnchor, a Vyper contract) and verify them.

:func:`anchor_ledger` puts a log's latest (tree size, root hash) on chain; :func:`verify_anchor`
reads it back and proves, with an RFC 9162 consistency proof, that the local log extends it, so a
rewritten history is caught even if the log's signing key leaked. ``chain`` is ``"embedded"`` (an
in-process py-evm chain persisted in the ledger folder) or any ``http(s)://`` JSON-RPC URL.
web3 and eth-tester are imported lazily, so importing this package needs neither.
"""

from trustmesh.ledger.anchor._anchoring import ANCHOR_DIR, AnchorResult, anchor_ledger, load_account, verify_anchor
from trustmesh.ledger.anchor._artifact import ContractArtifact, load_artifact, origin_id
from trustmesh.ledger.anchor._client import EMBEDDED, AnchorClient, ChainAnchor, TxReceipt
from trustmesh.ledger.anchor._embedded import EmbeddedChain

__all__ = [
    "ANCHOR_DIR",
    "AnchorClient",
    "AnchorResult",
    "ChainAnchor",
    "ContractArtifact",
    "EMBEDDED",
    "EmbeddedChain",
    "TxReceipt",
    "anchor_ledger",
    "load_account",
    "load_artifact",
    "origin_id",
    "verify_anchor",
]
