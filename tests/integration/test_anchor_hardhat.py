"""Anchor through a real local Ethereum node: hardhat@2 on 127.0.0.1 with a random free port.

hardhat is installed on first use with ``npm install --no-save hardhat@2`` into
tests/integration/.hardhat (git-ignored); the test skips, saying why, when npm or node is missing
or the install fails. The node is started by the fixture and stopped afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustmesh.errors import ChainError, ConsistencyError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CACHE = Path(__file__).resolve().parent / ".hardhat"
HARDHAT = CACHE / "node_modules" / ".bin" / "hardhat"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "anchor"))
from _anchor_helpers import extend_ledger, make_ledger  # type: ignore[import-not-found]  # noqa: E402


def _ensure_hardhat() -> Path:
    if HARDHAT.exists():
        return HARDHAT
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("hardhat test needs node and npm on PATH (Node 20)")
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "package.json").write_text('{"name": "trustmesh-hardhat-cache", "private": true}\n')
    try:
        proc = subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "hardhat@2"], cwd=CACHE,
                              capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("npm install hardhat@2 timed out after 600 s")
    if proc.returncode != 0 or not HARDHAT.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        pytest.skip(f"npm could not install hardhat@2: {' | '.join(tail)}")
    return HARDHAT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def hardhat_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Start `hardhat node`; yield (RPC URL, private key of its first funded account)."""
    binary = _ensure_hardhat()
    config = CACHE / "hardhat.config.js"
    if not config.exists():
        config.write_text("module.exports = {};\n")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("hardhat") / "node.log"
    env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "CI": "true"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(binary), "node", "--hostname", "127.0.0.1", "--port", str(port)], cwd=CACHE,
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline:
            text = log_path.read_text()
            if "Started HTTP" in text and "Private Key" in text:
                break
            if proc.poll() is not None:
                pytest.skip(f"hardhat node exited early: {text[-500:]}")
            time.sleep(0.5)
        else:
            pytest.skip("hardhat node did not start within 90 s")
        key = re.search(r"Private Key: (0x[0-9a-fA-F]{64})", text)
        assert key is not None
        yield f"http://127.0.0.1:{port}", key.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_anchor_and_verify_through_hardhat(hardhat_node: tuple[str, str], tmp_path: Path) -> None:
    from trustmesh.ledger.anchor import anchor_ledger, verify_anchor

    url, private_key = hardhat_node
    key_file = tmp_path / "account.key"
    key_file.write_text(private_key + "\n")
    key_file.chmod(0o600)
    log_dir = tmp_path / "log"
    make_ledger(log_dir, "trustmesh.test-hardhat", [{"i": i} for i in range(8)])

    first = anchor_ledger(log_dir, url, account_key=key_file)
    assert first.chain_id == 31337 and first.size == 8 and first.gas_used > 21000
    assert verify_anchor(log_dir, url)["anchored_size"] == 8

    extend_ledger(log_dir, [{"i": 8}, {"i": 9}])
    second = anchor_ledger(log_dir, url, account_key=key_file)
    assert second.size == 10 and second.contract == first.contract
    checked = verify_anchor(log_dir, url)
    assert (checked["anchored_size"], checked["local_size"]) == (10, 10)

    # A rewritten log (same origin, valid signatures, different entry 3) is caught via the chain.
    forged = tmp_path / "forged"
    make_ledger(forged, "trustmesh.test-hardhat", [{"i": i, "x": int(i == 3)} for i in range(10)])
    shutil.copytree(log_dir / "anchor", forged / "anchor")
    with pytest.raises(ConsistencyError):
        verify_anchor(forged, url)

    # The anchor record says chain 31337; a node on another chain id is refused.
    state_path = log_dir / "anchor" / "anchors.json"
    state = json.loads(state_path.read_text())
    state["chains"][url]["chain_id"] = 1
    state_path.write_text(json.dumps(state))
    with pytest.raises(ChainError, match="wrong chain id"):
        verify_anchor(log_dir, url)


def test_rpc_anchor_needs_an_account(hardhat_node: tuple[str, str], tmp_path: Path) -> None:
    from trustmesh.errors import InputError
    from trustmesh.ledger.anchor import anchor_ledger

    url, _ = hardhat_node
    log_dir = tmp_path / "log"
    make_ledger(log_dir, "trustmesh.test-hardhat-2", [{"i": 0}])
    with pytest.raises(InputError, match="--account"):
        anchor_ledger(log_dir, url)
