"""Anchor a ledger's latest checkpoint on chain, and verify a local log against its anchor.

State lives in ``DIR/anchor/``: ``anchors.json`` (per chain: chain id, contract address, code
hash, account, anchors made) plus, for ``--chain embedded``, the replayable chain record and its
account key (0600). The contract only refuses a shrinking size or a changed root at the same size;
it cannot check consistency itself, so :func:`anchor_ledger` proves the local log extends what is
on chain before anchoring, and :func:`verify_anchor` proves it again when verifying.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trustmesh.errors import AnchorError, ChainError, InputError, LogIntegrityError
from trustmesh.ledger.anchor._client import EMBEDDED, AnchorClient
from trustmesh.ledger.anchor._embedded import write_json_atomic

__all__ = ["ANCHOR_DIR", "AnchorResult", "anchor_ledger", "load_account", "verify_anchor"]

log = logging.getLogger(__name__)

ANCHOR_DIR = "anchor"
STATE_FILE = "anchors.json"


@dataclass(frozen=True, slots=True)
class AnchorResult:
    """The outcome of :func:`anchor_ledger`."""

    chain: str
    chain_id: int
    contract: str
    origin: str
    size: int
    root: str
    tx_hash: str | None  # None when this (size, root) was already anchored, or on a dry run
    block_number: int
    gas_used: int
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def load_account(path: Path) -> Any:
    """Load an Ethereum account from a file holding a hex private key (never printed)."""
    from eth_account import Account

    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise InputError(f"{path}: account key file not found") from None
    try:
        return Account.from_key(text)
    except (ValueError, TypeError):
        raise InputError(f"{path}: not a hex-encoded secp256k1 private key") from None


def _state_path(ledger_dir: Path) -> Path:
    return ledger_dir / ANCHOR_DIR / STATE_FILE


def _load_state(ledger_dir: Path) -> dict[str, Any]:
    path = _state_path(ledger_dir)
    if not path.exists():
        return {"version": 1, "chains": {}}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("chains"), dict):
        raise InputError(f"{path}: not an anchor state file (expected version 1 with 'chains')")
    return doc


def _open_ledger(ledger_dir: Path, *, read_only: bool) -> Any:
    from trustmesh.ledger import Ledger

    return Ledger.open(ledger_dir, read_only=read_only)


def _verify_consistency(size1: int, size2: int, path: Any, root1: bytes, root2: bytes) -> None:
    from trustmesh.ledger import verify_consistency_path

    verify_consistency_path(size1, size2, path, root1, root2)


def _check_extends(ledger: Any, anchored_size: int, anchored_root: bytes, label: str) -> dict[str, Any]:
    """Prove the local log extends the anchored (size, root); raise AnchorError/ConsistencyError."""
    n = ledger.size
    if n < anchored_size:
        raise AnchorError(
            f"{label} anchors size {anchored_size} but the local log has only {n} entries (entries lost)",
            index=n,
        )
    root_n = ledger.root(n)
    proof = ledger.prove_consistency(anchored_size, n)
    _verify_consistency(anchored_size, n, list(proof.path), anchored_root, root_n)
    return {"local_size": n, "local_root": root_n.hex(), "proof_hashes": len(proof.path)}


@contextlib.contextmanager
def _locked(ledger_dir: Path) -> Iterator[None]:
    """Serialise anchoring processes on one folder (the embedded chain record is read-modify-write)."""
    folder = ledger_dir / ANCHOR_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _client(ledger_dir: Path, chain: str) -> AnchorClient:
    return AnchorClient.connect(chain, ledger_dir / ANCHOR_DIR)


def anchor_ledger(
    ledger_dir: Path,
    chain: str = EMBEDDED,
    *,
    account_key: Path | None = None,
    contract: str | None = None,
    dry_run: bool = False,
) -> AnchorResult:
    """Anchor the ledger's latest signed checkpoint on ``chain`` and record it in ``DIR/anchor``.

    Deploys LogAnchor (and registers the account for the log's origin) on first use of a chain
    unless ``contract`` names an existing deployment. Before sending, checks the chain id and the
    contract's code hash, and proves that the checkpoint extends what is already anchored. With
    ``dry_run`` it does every check it can without sending a transaction and returns what it would
    anchor (``tx_hash`` None, ``dry_run`` True).
    """
    ledger_dir = Path(ledger_dir)
    with _open_ledger(ledger_dir, read_only=True) as ledger, _locked(ledger_dir):
        cp = ledger.latest_checkpoint()
        if cp is None:
            raise InputError(f"{ledger_dir}: no checkpoint to anchor; run `trustmesh ledger checkpoint {ledger_dir}` first")
        cp.verify(ledger.verifier)
        if cp.size > ledger.size or ledger.root(cp.size) != cp.root_hash:
            raise LogIntegrityError(f"{ledger_dir}: the stored tree does not match its latest signed checkpoint", index=cp.size)
        origin = ledger.origin
        state = _load_state(ledger_dir)
        client = _client(ledger_dir, chain)
        if account_key is not None:
            account = load_account(account_key)
        elif client.embedded is not None:
            account = client.embedded.account
        else:
            raise InputError(f"--account KEYFILE is required to anchor on {chain}")
        record = state["chains"].get(chain)
        if record is not None:
            client.expect_chain_id(int(record["chain_id"]))
            if contract is not None and contract.lower() != str(record["contract"]).lower():
                raise InputError(f"{_state_path(ledger_dir)}: this log is already anchored on {chain} at {record['contract']}, not {contract}")
            contract = str(record["contract"])
        if contract is None:
            if dry_run:
                return AnchorResult(chain, client.chain_id, "", origin, cp.size, cp.root_hash.hex(), None, 0, 0, dry_run=True)
            contract = client.deploy(account).contract_address
            assert contract is not None
        client.check_contract(contract)
        if record is None:
            record = {"chain_id": client.chain_id, "contract": contract, "code_hash": _code_hash(), "anchors": []}
            state["chains"][chain] = record
            write_json_atomic(_state_path(ledger_dir), state)
        if not client.is_registered(contract, origin, account.address):
            if client.owner(contract).lower() != account.address.lower():
                raise ChainError(f"{chain}: account {account.address} is not registered for origin {origin!r} and is not the contract owner")
            if not dry_run:
                client.set_key(contract, account, origin, account.address, True)
        on_chain = client.latest(contract, origin)
        if on_chain.size > cp.size:
            raise ChainError(f"{chain}: size {on_chain.size} is already anchored, larger than the checkpoint's {cp.size}")
        if on_chain.size:
            _check_extends(ledger, on_chain.size, on_chain.root, f"{chain} contract {contract}")
        if on_chain.size == cp.size and on_chain.root == cp.root_hash:
            log.info("size %d is already anchored on %s", cp.size, chain)
            return AnchorResult(chain, client.chain_id, contract, origin, cp.size, cp.root_hash.hex(), None, on_chain.block_number, 0)
        if dry_run:
            return AnchorResult(chain, client.chain_id, contract, origin, cp.size, cp.root_hash.hex(), None, 0, 0, dry_run=True)
        receipt = client.anchor(contract, account, origin, cp.size, cp.root_hash)
        record["anchors"].append(
            {"size": cp.size, "root": cp.root_hash.hex(), "tx": receipt.tx_hash, "block": receipt.block_number, "gas_used": receipt.gas_used}
        )
        write_json_atomic(_state_path(ledger_dir), state)
    return AnchorResult(chain, client.chain_id, contract, origin, cp.size, cp.root_hash.hex(), receipt.tx_hash, receipt.block_number, receipt.gas_used)


def _code_hash() -> str:
    from trustmesh.ledger.anchor._artifact import load_artifact

    return load_artifact().runtime_hash


def verify_anchor(ledger_dir: Path, chain: str, *, contract: str | None = None) -> dict[str, Any]:
    """Fetch the anchored (size, root) for the ledger's origin and prove the local log extends it.

    Raises ChainError (unreachable, wrong chain id, foreign contract), AnchorError (nothing
    anchored, or the log is shorter than the anchor) or ConsistencyError (history rewritten). On
    success returns what was checked.
    """
    ledger_dir = Path(ledger_dir)
    state = _load_state(ledger_dir)
    record = state["chains"].get(chain)
    if contract is None:
        if record is None:
            raise AnchorError(f"{_state_path(ledger_dir)}: this log was never anchored on {chain} (pass the contract address)")
        contract = str(record["contract"])
    client = _client(ledger_dir, chain)
    if record is not None:
        client.expect_chain_id(int(record["chain_id"]))
    client.check_contract(contract)
    with _open_ledger(ledger_dir, read_only=True) as ledger:
        origin = ledger.origin
        anchored = client.latest(contract, origin)
        if anchored.size == 0:
            raise AnchorError(f"{chain}: nothing is anchored for origin {origin!r} at {contract}")
        checked = _check_extends(ledger, anchored.size, anchored.root, f"{chain} contract {contract}")
    return {
        "chain": chain,
        "chain_id": client.chain_id,
        "contract": contract,
        "code_hash": _code_hash(),
        "origin": origin,
        "anchored_size": anchored.size,
        "anchored_root": anchored.root.hex(),
        "anchored_block": anchored.block_number,
        **checked,
    }


