"""Measure gas per anchor and how anchoring cost scales with the batch of entries it covers."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from trustmesh.ledger.anchor._client import AnchorClient

__all__ = ["bench_anchor"]


def bench_anchor(batch_sizes: tuple[int, ...] = (1, 10, 100, 1000, 10_000), workdir: Path | None = None) -> dict[str, Any]:
    """Anchor a real ledger on the embedded chain after each batch; report gas and time per anchor.

    The contract stores one (size, root) per origin, so gas does not depend on the batch size N:
    the cost per entry is gas / N.
    """
    from trustmesh.ledger import Entry, Ledger

    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError("batch_sizes must be non-empty and >= 1")
    own_tmp = workdir is None
    base = Path(tempfile.mkdtemp(prefix="trustmesh-bench-anchor-")) if workdir is None else workdir
    try:
        client = AnchorClient.connect("embedded", base / "chain")
        assert client.embedded is not None
        account = client.embedded.account
        deploy = client.deploy(account)
        contract = deploy.contract_address
        assert contract is not None
        ledger = Ledger.create(base / "log", "bench.trustmesh-anchor")
        register = client.set_key(contract, account, ledger.origin, account.address)
        rows = []
        try:
            for n in batch_sizes:
                start = ledger.size
                ledger.append([Entry(kind="bench", payload={"i": start + i}, time=0.0, refs=()) for i in range(n)])
                cp = ledger.checkpoint()
                t0 = time.perf_counter()
                receipt = client.anchor(contract, account, ledger.origin, cp.size, cp.root_hash)
                elapsed = time.perf_counter() - t0
                rows.append({"batch_entries": n, "tree_size": cp.size, "gas_used": receipt.gas_used,
                             "gas_per_entry": receipt.gas_used / n, "anchor_s": elapsed})
        finally:
            ledger.close()
        return {
            "chain": "embedded (eth-tester + py-evm)",
            "contract_runtime_bytes": len(client.w3.eth.get_code(contract)),
            "deploy_gas": deploy.gas_used,
            "register_key_gas": register.gas_used,
            "anchors": rows,
            "note": "first anchor of an origin writes fresh storage slots (more gas); later anchors overwrite them",
        }
    finally:
        if own_tmp:
            shutil.rmtree(base, ignore_errors=True)
