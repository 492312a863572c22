"""Talk to the LogAnchor contract on the embedded chain or any Ethereum JSON-RPC endpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustmesh.errors import ChainError
from trustmesh.ledger.anchor._artifact import load_artifact, origin_id
from trustmesh.ledger.anchor._embedded import EmbeddedChain

__all__ = ["EMBEDDED", "AnchorClient", "ChainAnchor", "TxReceipt"]

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
_RECEIPT_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class TxReceipt:
    """A mined, successful transaction."""

    tx_hash: str
    block_number: int
    gas_used: int
    contract_address: str | None = None


@dataclass(frozen=True, slots=True)
class ChainAnchor:
    """What the contract holds for one origin."""

    size: int
    root: bytes
    block_number: int


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class AnchorClient:
    """A connection to one chain: deploy, register keys, anchor and read (size, root).

    Every failure (unreachable node, revert, wrong chain id, foreign contract) is a ChainError; a
    transaction that reverts changes nothing.
    """

    def __init__(self, w3: Any, label: str, embedded: EmbeddedChain | None = None) -> None:
        self.w3 = w3
        self.label = label
        self.embedded = embedded
        self._chain_id: int | None = None

    # ------------------------------------------------------------------ connecting
    @classmethod
    def connect(cls, chain: str, state_dir: Path, *, timeout: float = 10.0) -> AnchorClient:
        """Connect to ``embedded`` (persisted in ``state_dir``) or an ``http(s)://`` JSON-RPC URL."""
        if chain == EMBEDDED:
            chain_db = EmbeddedChain(state_dir)
            # eth-tester charges eth_call gas to the sender: read as the funded account
            chain_db.w3.eth.default_account = chain_db.account.address
            return cls(chain_db.w3, EMBEDDED, chain_db)
        if not chain.startswith(("http://", "https://")):
            raise ChainError(f"--chain must be 'embedded' or an http(s):// JSON-RPC URL, got {chain!r}")
        from web3 import HTTPProvider, Web3

        w3 = Web3(HTTPProvider(chain, request_kwargs={"timeout": timeout}))
        client = cls(w3, chain)
        _ = client.chain_id  # fail fast if unreachable
        return client

    @property
    def chain_id(self) -> int:
        """The node's chain id (EIP-155); ChainError if the node cannot be reached."""
        if self._chain_id is None:
            try:
                self._chain_id = int(self.w3.eth.chain_id)
            except Exception as exc:  # noqa: BLE001 - connection errors come in many types
                raise ChainError(f"{self.label}: chain unreachable ({_describe(exc)})") from None
        return self._chain_id

    def expect_chain_id(self, expected: int) -> None:
        """Raise ChainError if the node is not on chain ``expected``."""
        if self.chain_id != expected:
            raise ChainError(f"{self.label}: wrong chain id {self.chain_id}, the anchor record says {expected}")

    # ------------------------------------------------------------------ contract
    def _contract(self, address: str | None = None) -> Any:
        art = load_artifact()
        if address is None:
            return self.w3.eth.contract(abi=list(art.abi), bytecode=art.bytecode)
        return self.w3.eth.contract(address=self._checksum(address), abi=list(art.abi))

    def _checksum(self, address: str) -> str:
        from web3 import Web3

        if not Web3.is_address(address):
            raise ChainError(f"{address!r} is not an Ethereum address")
        return str(Web3.to_checksum_address(address))

    def check_contract(self, address: str) -> None:
        """Raise ChainError unless the code at ``address`` is exactly our compiled LogAnchor."""
        from eth_utils.crypto import keccak

        try:
            code = bytes(self.w3.eth.get_code(self._checksum(address)))
        except ChainError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"{self.label}: cannot read code at {address} ({_describe(exc)})") from None
        if not code:
            raise ChainError(f"{self.label}: no contract at {address}")
        expected = load_artifact().runtime_hash
        got = "0x" + keccak(code).hex()
        if got != expected:
            raise ChainError(f"{self.label}: the contract at {address} is not LogAnchor (code hash {got}, expected {expected})")

    def _send(self, account: Any, call: Any, what: str) -> TxReceipt:
        try:
            nonce = self.w3.eth.get_transaction_count(account.address, "pending")
            tx = call.build_transaction({"from": account.address, "nonce": nonce, "chainId": self.chain_id})
        except ChainError:
            raise
        except Exception as exc:  # noqa: BLE001 - reverts raise here (gas estimation), as do I/O errors
            raise ChainError(f"{self.label}: {what} refused: {_describe(exc)}") from None
        # Headroom over the estimate: nodes estimate at the exact boundary, and SSTORE's EIP-2200
        # stipend check (and warm/cold access differences between estimate and inclusion) can then
        # make the real transaction run out of gas (seen with hardhat on the second anchor).
        tx["gas"] = int(tx["gas"] * 1.25) + 10_000
        signed = account.sign_transaction(tx)
        raw = bytes(signed.raw_transaction)
        try:
            tx_hash = self.w3.eth.send_raw_transaction(raw)
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=_RECEIPT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"{self.label}: {what} failed: {_describe(exc)}") from None
        if receipt["status"] != 1:
            raise ChainError(f"{self.label}: {what} reverted in block {receipt['blockNumber']}")
        if self.embedded is not None:
            self.embedded.record(raw)
        address = receipt.get("contractAddress")
        return TxReceipt("0x" + bytes(tx_hash).hex(), int(receipt["blockNumber"]), int(receipt["gasUsed"]), address and str(address))

    def deploy(self, account: Any) -> TxReceipt:
        """Deploy LogAnchor with ``account`` as owner; the receipt carries the address."""
        receipt = self._send(account, self._contract().constructor(), "deploying LogAnchor")
        if receipt.contract_address is None:
            raise ChainError(f"{self.label}: deployment receipt has no contract address")
        self.check_contract(receipt.contract_address)
        log.info("deployed LogAnchor at %s on %s", receipt.contract_address, self.label)
        return receipt

    def owner(self, address: str) -> str:
        """Return the contract owner's address."""
        return str(self._call(self._contract(address).functions.owner(), "reading owner"))

    def is_registered(self, address: str, origin: str, key: str) -> bool:
        """Whether ``key`` may anchor ``origin``."""
        fn = self._contract(address).functions.registered(origin_id(origin), self._checksum(key))
        return bool(self._call(fn, "reading key registration"))

    def set_key(self, address: str, account: Any, origin: str, key: str, allowed: bool = True) -> TxReceipt:
        """Register (or revoke) ``key`` for ``origin``; only the owner may."""
        fn = self._contract(address).functions.set_key(origin_id(origin), self._checksum(key), allowed)
        return self._send(account, fn, "registering key" if allowed else "revoking key")

    def anchor(self, address: str, account: Any, origin: str, size: int, root: bytes) -> TxReceipt:
        """Anchor (size, root) for ``origin``; ChainError (nothing changed) if the contract refuses."""
        if size <= 0 or len(root) != 32:
            raise ValueError(f"need size > 0 and a 32-byte root, got size={size}, root of {len(root)} bytes")
        fn = self._contract(address).functions.anchor(origin_id(origin), size, root)
        return self._send(account, fn, f"anchoring size {size}")

    def latest(self, address: str, origin: str) -> ChainAnchor:
        """Return the anchored (size, root, block) for ``origin`` (size 0 if never anchored)."""
        size, root, block = self._call(self._contract(address).functions.latest(origin_id(origin)), "reading anchor")
        return ChainAnchor(int(size), bytes(root), int(block))

    def _call(self, fn: Any, what: str) -> Any:
        try:
            return fn.call()
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"{self.label}: {what} failed: {_describe(exc)}") from None
