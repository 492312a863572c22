"""LogAnchor's rules, enforced on a real EVM (eth-tester + py-evm), through AnchorClient."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from trustmesh.errors import ChainError
from trustmesh.ledger.anchor import AnchorClient, EmbeddedChain, origin_id

ROOT_A = bytes.fromhex("aa" * 32)
ROOT_B = bytes.fromhex("bb" * 32)


@pytest.fixture()
def deployed(tmp_path: Path) -> tuple[AnchorClient, str]:
    client = AnchorClient.connect("embedded", tmp_path)
    assert client.embedded is not None
    receipt = client.deploy(client.embedded.account)
    assert receipt.contract_address is not None
    client.set_key(receipt.contract_address, client.embedded.account, "log-a", client.embedded.account.address)
    return client, receipt.contract_address


def _owner(client: AnchorClient) -> object:
    assert client.embedded is not None
    return client.embedded.account


def test_anchor_then_read_back(deployed: tuple[AnchorClient, str]) -> None:
    client, addr = deployed
    receipt = client.anchor(addr, _owner(client), "log-a", 10, ROOT_A)
    got = client.latest(addr, "log-a")
    assert (got.size, got.root, got.block_number) == (10, ROOT_A, receipt.block_number)
    assert receipt.gas_used > 21000
    assert client.latest(addr, "log-b").size == 0  # origins are separate


def test_anchor_emits_an_event(deployed: tuple[AnchorClient, str]) -> None:
    client, addr = deployed
    receipt = client.anchor(addr, _owner(client), "log-a", 3, ROOT_A)
    contract = client._contract(addr)
    events = contract.events.Anchored().get_logs(from_block=receipt.block_number, to_block=receipt.block_number)
    assert len(events) == 1
    args = events[0]["args"]
    assert (args["origin"], args["size"], args["root"]) == (origin_id("log-a"), 3, ROOT_A)


def test_smaller_size_and_changed_root_are_refused_on_chain(deployed: tuple[AnchorClient, str]) -> None:
    client, addr = deployed
    client.anchor(addr, _owner(client), "log-a", 10, ROOT_A)
    with pytest.raises(ChainError, match="went backwards"):
        client.anchor(addr, _owner(client), "log-a", 9, ROOT_A)
    with pytest.raises(ChainError, match="same size, different root"):
        client.anchor(addr, _owner(client), "log-a", 10, ROOT_B)
    client.anchor(addr, _owner(client), "log-a", 10, ROOT_A)  # re-anchoring the same state is allowed
    got = client.latest(addr, "log-a")
    assert (got.size, got.root) == (10, ROOT_A)  # nothing changed by the refused attempts


def test_only_registered_keys_may_anchor(deployed: tuple[AnchorClient, str]) -> None:
    client, addr = deployed
    with pytest.raises(ChainError, match="not registered"):
        client.anchor(addr, _owner(client), "log-other", 1, ROOT_A)
    stranger = Account.create()
    with pytest.raises(ChainError):  # unfunded and unregistered: refused before anything is mined
        client.anchor(addr, stranger, "log-a", 1, ROOT_A)
    assert client.latest(addr, "log-a").size == 0


def test_only_the_owner_manages_keys_and_revocation_works(deployed: tuple[AnchorClient, str]) -> None:
    client, addr = deployed
    owner = _owner(client)
    client.set_key(addr, owner, "log-a", owner.address, False)  # revoke
    assert not client.is_registered(addr, "log-a", owner.address)
    with pytest.raises(ChainError, match="not registered"):
        client.anchor(addr, owner, "log-a", 1, ROOT_A)


def test_chain_state_persists_across_processes_by_replay(deployed: tuple[AnchorClient, str], tmp_path: Path) -> None:
    client, addr = deployed
    client.anchor(addr, _owner(client), "log-a", 7, ROOT_B)
    reopened = AnchorClient.connect("embedded", tmp_path)
    assert reopened.embedded is not None and reopened.embedded.transaction_count == 3
    got = reopened.latest(addr, "log-a")
    assert (got.size, got.root) == (7, ROOT_B)
    reopened.check_contract(addr)


def test_foreign_contract_is_detected_by_code_hash(deployed: tuple[AnchorClient, str]) -> None:
    client, addr = deployed
    owner = _owner(client)
    # Deploy a different contract: creation code that returns a 1-byte runtime (STOP).
    tx = {"from": owner.address, "nonce": client.w3.eth.get_transaction_count(owner.address), "data": "0x600180600b6000396000f300",
          "gas": 100000, "maxFeePerGas": 3 * 10**9, "maxPriorityFeePerGas": 10**9, "chainId": client.chain_id}
    signed = owner.sign_transaction(tx)
    receipt = client.w3.eth.get_transaction_receipt(client.w3.eth.send_raw_transaction(signed.raw_transaction))
    with pytest.raises(ChainError, match="not LogAnchor"):
        client.check_contract(receipt["contractAddress"])
    with pytest.raises(ChainError, match="no contract"):
        client.check_contract("0x" + "11" * 20)
    with pytest.raises(ChainError, match="not an Ethereum address"):
        client.check_contract("0x1234")


def test_unreachable_and_invalid_chains(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="unreachable"):
        AnchorClient.connect("http://127.0.0.1:9", tmp_path, timeout=2)
    with pytest.raises(ChainError, match="embedded' or an http"):
        AnchorClient.connect("ftp://example", tmp_path)


def test_corrupt_embedded_record_is_a_chain_error(deployed: tuple[AnchorClient, str], tmp_path: Path) -> None:
    record = tmp_path / "embedded-chain.json"
    record.write_text(record.read_text().replace('"0x02', '"0x03', 1))
    with pytest.raises(ChainError, match="embedded-chain.json"):
        EmbeddedChain(tmp_path)


def test_embedded_key_is_private(deployed: tuple[AnchorClient, str], tmp_path: Path) -> None:
    assert (tmp_path / "embedded-account.key").stat().st_mode & 0o777 == 0o600
