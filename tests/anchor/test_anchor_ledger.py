"""anchor_ledger / verify_anchor: a log anchored on the embedded chain, checked from another process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _anchor_helpers import extend_ledger, make_ledger  # type: ignore[import-not-found]
from trustmesh.errors import AnchorError, ChainError, ConsistencyError, InputError
from trustmesh.ledger import Ledger
from trustmesh.ledger.anchor import anchor_ledger, verify_anchor

ORIGIN = "trustmesh.test-anchor"


def _entries(start: int, stop: int, tag: str = "a") -> list[dict[str, int]]:
    return [{"i": i, tag: 1} for i in range(start, stop)]


@pytest.fixture()
def anchored(tmp_path: Path) -> Path:
    d = tmp_path / "log"
    make_ledger(d, ORIGIN, _entries(0, 10))
    anchor_ledger(d, "embedded")
    return d


def test_anchor_and_verify(anchored: Path) -> None:
    result = verify_anchor(anchored, "embedded")
    with Ledger.open(anchored, read_only=True) as ledger:
        assert result["anchored_size"] == 10 == ledger.size
        assert result["anchored_root"] == ledger.root(10).hex()


def test_verify_in_a_second_process(anchored: Path) -> None:
    code = "import json,sys; from trustmesh.ledger.anchor import verify_anchor; print(json.dumps(verify_anchor(sys.argv[1], 'embedded')))"
    out = subprocess.run([sys.executable, "-c", code, str(anchored)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["anchored_size"] == 10


def test_growing_log_verifies_with_a_consistency_proof(anchored: Path) -> None:
    extend_ledger(anchored, _entries(10, 25))
    result = verify_anchor(anchored, "embedded")
    assert (result["anchored_size"], result["local_size"]) == (10, 25)
    assert result["proof_hashes"] > 0
    second = anchor_ledger(anchored, "embedded")
    assert second.size == 25 and second.tx_hash is not None
    assert anchor_ledger(anchored, "embedded").tx_hash is None  # already anchored: no transaction
    state = json.loads((anchored / "anchor" / "anchors.json").read_text())
    assert [a["size"] for a in state["chains"]["embedded"]["anchors"]] == [10, 25]


def test_rewritten_history_is_caught_even_with_a_valid_signature(anchored: Path, tmp_path: Path) -> None:
    # An attacker who controls the log (and its signing key) rebuilds it with entry 5 changed and
    # signs fresh checkpoints. Signatures verify; the chain anchor does not.
    forged = tmp_path / "forged"
    make_ledger(forged, ORIGIN, _entries(0, 5) + _entries(5, 12, tag="evil"))
    shutil.copytree(anchored / "anchor", forged / "anchor")
    with pytest.raises(ConsistencyError):
        verify_anchor(forged, "embedded")
    with pytest.raises(ConsistencyError):
        anchor_ledger(forged, "embedded")  # refuses to anchor a fork of what is on chain
    verify_anchor(anchored, "embedded")  # the honest log still verifies


def test_truncated_log_is_an_anchor_error(anchored: Path, tmp_path: Path) -> None:
    short = tmp_path / "short"
    make_ledger(short, ORIGIN, _entries(0, 4))
    shutil.copytree(anchored / "anchor", short / "anchor")
    with pytest.raises(AnchorError, match="entries lost"):
        verify_anchor(short, "embedded")


def test_wrong_chain_id_is_refused(anchored: Path) -> None:
    state_path = anchored / "anchor" / "anchors.json"
    state = json.loads(state_path.read_text())
    state["chains"]["embedded"]["chain_id"] = 1
    state_path.write_text(json.dumps(state))
    with pytest.raises(ChainError, match="wrong chain id"):
        verify_anchor(anchored, "embedded")
    with pytest.raises(ChainError, match="wrong chain id"):
        anchor_ledger(anchored, "embedded")


def test_never_anchored_and_bad_inputs(tmp_path: Path) -> None:
    d = tmp_path / "fresh"
    make_ledger(d, ORIGIN, _entries(0, 2))
    with pytest.raises(AnchorError, match="never anchored"):
        verify_anchor(d, "embedded")
    key = tmp_path / "bad.key"
    key.write_text("not a key")
    with pytest.raises(InputError, match="not a hex-encoded"):
        anchor_ledger(d, "embedded", account_key=key)
    with pytest.raises(ChainError, match="unreachable"):
        anchor_ledger(d, "http://127.0.0.1:9")
    with pytest.raises(ChainError, match="unreachable"):
        verify_anchor(d, "http://127.0.0.1:9", contract="0x" + "11" * 20)
    assert not (d / "anchor" / "anchors.json").exists()  # nothing recorded by the failed attempts
