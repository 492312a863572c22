"""An in-process EVM (eth-tester + py-evm) whose state persists in a folder between processes.

Persistence by replay: the folder holds the genesis allocation (one funded account, its key in a
0600 file) and every signed raw transaction that succeeded, in order. Opening the chain builds a
fresh py-evm chain from that genesis and re-submits each transaction, so contract addresses,
storage and events come out identical. We chose replay over snapshotting py-evm's database because
signed transactions are a stable, self-checking format (each is re-validated and re-executed),
while py-evm's internal DB layout is not a public interface. The cost is linear in the number of
past transactions (~10-20 ms each here). Block timestamps differ between replays; the contract does
not use them.

The embedded chain is a demo and test device: anyone who controls the folder controls the chain.
For real tamper evidence anchor to a chain others run (any Ethereum JSON-RPC endpoint).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from trustmesh.errors import ChainError

__all__ = ["EMBEDDED_CHAIN_FILE", "EMBEDDED_KEY_FILE", "EmbeddedChain"]

log = logging.getLogger(__name__)

EMBEDDED_CHAIN_FILE = "embedded-chain.json"
EMBEDDED_KEY_FILE = "embedded-account.key"
_GENESIS_BALANCE = 10**24  # 1M ether in wei; only gas is ever spent


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` created with mode 0600 (atomic replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write JSON atomically (temp file + rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EmbeddedChain:
    """A py-evm chain rebuilt from ``folder`` by replaying recorded signed transactions."""

    def __init__(self, folder: Path) -> None:
        from eth_account import Account
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider, Web3

        self.folder = folder
        self._record_path = folder / EMBEDDED_CHAIN_FILE
        key_path = folder / EMBEDDED_KEY_FILE
        if key_path.exists():
            try:
                self.account = Account.from_key(key_path.read_text(encoding="utf-8").strip())
            except (ValueError, TypeError) as exc:
                raise ChainError(f"{key_path}: not a valid account key ({exc})") from None
        else:
            self.account = Account.create()
            write_private(key_path, self.account.key.hex() + "\n")
        if self._record_path.exists():
            try:
                record = json.loads(self._record_path.read_text(encoding="utf-8"))
                txs = [bytes.fromhex(str(t).removeprefix("0x")) for t in record["transactions"]]
                if record["account"] != self.account.address:
                    raise ChainError(f"{self._record_path}: recorded account does not match {key_path}")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ChainError(f"{self._record_path}: corrupt embedded chain record ({exc})") from None
        else:
            txs = []
        self._transactions: list[bytes] = []
        genesis = {
            bytes.fromhex(self.account.address[2:]): {"balance": _GENESIS_BALANCE, "storage": {}, "code": b"", "nonce": 0}
        }
        backend = PyEVMBackend(genesis_state=genesis)
        self.w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
        for i, raw in enumerate(txs):
            try:
                tx_hash = self.w3.eth.send_raw_transaction(raw)
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)
            except Exception as exc:  # noqa: BLE001 - any replay failure means the record is bad
                raise ChainError(f"{self._record_path}: transaction {i} does not replay ({exc})") from None
            if receipt["status"] != 1:
                raise ChainError(f"{self._record_path}: transaction {i} reverted on replay")
            self._transactions.append(raw)
        log.debug("embedded chain: replayed %d transactions from %s", len(txs), self._record_path)

    def record(self, raw_tx: bytes) -> None:
        """Append a successfully mined raw transaction to the persisted record."""
        self._transactions.append(raw_tx)
        write_json_atomic(
            self._record_path,
            {"account": self.account.address, "transactions": ["0x" + t.hex() for t in self._transactions]},
        )

    @property
    def transaction_count(self) -> int:
        """How many transactions the record holds."""
        return len(self._transactions)
