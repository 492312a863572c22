"""`trustmesh identity ...` end to end on a real ledger folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.ledger import Ledger

runner = CliRunner()
ORIGIN = "trustmesh.test-identity-cli"


@pytest.fixture()
def ledger_dir(tmp_path: Path) -> Path:
    d = tmp_path / "log"
    Ledger.create(d, ORIGIN).close()
    result = runner.invoke(app, ["identity", "admin", "init", "--ledger", str(d), "--name", "ops.test/admin", "--json"])
    assert result.exit_code == 0, result.output
    key_file = Path(json.loads(result.output)["key_file"])
    assert key_file.stat().st_mode & 0o777 == 0o600
    secret = max(key_file.read_text().split("+"), key=len).strip()  # the key material, not a short fragment
    assert secret not in result.output and "PRIVATE" not in result.output
    return d


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_enroll_list_show_rotate_revoke(ledger_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys" / "plc-1"
    code, out = _run("identity", "enroll", "plc-1", "--ledger", str(ledger_dir), "--keys", str(keys), "--json")
    assert code == 0, out
    doc = json.loads(out)
    secret = (keys / "schnorr.key").read_text().strip()
    assert secret not in out and "PRIVATE" not in out
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in keys.iterdir())

    code, out = _run("identity", "list", "--ledger", str(ledger_dir), "--json")
    assert code == 0 and json.loads(out)["devices"][0]["device_id"] == "plc-1"

    code, out = _run("identity", "rotate", "plc-1", "--ledger", str(ledger_dir), "--keys", str(keys), "--json")
    assert code == 0, out
    new_dir = Path(json.loads(out)["keys_dir"])
    assert json.loads(out)["ed25519"] != doc["ed25519"]

    code, out = _run("identity", "revoke", "plc-1", "--ledger", str(ledger_dir), "--reason", "decommissioned")
    assert code == 0, out
    code, out = _run("identity", "show", "plc-1", "--ledger", str(ledger_dir), "--json")
    shown = json.loads(out)
    assert shown["status"] == "revoked" and len(shown["keys"]) == 2
    assert new_dir.is_dir()


def test_prove_and_verify(ledger_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "k"
    assert _run("identity", "enroll", "site-a", "--role", "site", "--ledger", str(ledger_dir), "--keys", str(keys))[0] == 0
    nonce = "ab" * 16
    proof = tmp_path / "proof.json"
    code, out = _run("identity", "prove", "site-a", "--ledger", str(ledger_dir), "--keys", str(keys),
                     "--round", "3", "--nonce", nonce, "--out", str(proof))
    assert code == 0, out
    code, out = _run("identity", "verify", "site-a", str(proof), "--ledger", str(ledger_dir), "--nonce", nonce, "--round", "3")
    assert code == 0, out
    # replay with another nonce, wrong round, other device, tampered proof: all exit 1 (verification failure)
    assert _run("identity", "verify", "site-a", str(proof), "--ledger", str(ledger_dir), "--nonce", "cd" * 16)[0] == 1
    assert _run("identity", "verify", "site-a", str(proof), "--ledger", str(ledger_dir), "--nonce", nonce, "--round", "4")[0] == 1
    assert _run("identity", "verify", "site-b", str(proof), "--ledger", str(ledger_dir), "--nonce", nonce)[0] == 1
    doc = json.loads(proof.read_text())
    doc["proof"] = doc["proof"][:-2] + ("00" if doc["proof"][-2:] != "00" else "01")
    proof.write_text(json.dumps(doc))
    code, out = _run("identity", "verify", "site-a", str(proof), "--ledger", str(ledger_dir), "--nonce", nonce)
    assert code == 1 and "ProofError" in out


def test_bad_input_is_one_line(ledger_dir: Path, tmp_path: Path) -> None:
    code, out = _run("identity", "enroll", "bad id", "--ledger", str(ledger_dir))
    assert code == 2 and "device id" in out and "Traceback" not in out
    code, out = _run("identity", "show", "ghost", "--ledger", str(ledger_dir))
    assert code == 2 and "not enrolled" in out
    code, out = _run("identity", "list", "--ledger", str(tmp_path / "nowhere"))
    assert code == 2 and "no ledger" in out


def test_forged_identity_entries_are_reported_and_skipped(ledger_dir: Path, tmp_path: Path) -> None:
    from trustmesh.identity import REVOKE

    assert _run("identity", "enroll", "plc-2", "--ledger", str(ledger_dir), "--keys", str(tmp_path / "k"))[0] == 0
    with Ledger.open(ledger_dir) as lg:
        bad = lg.append_one(REVOKE, {"device_id": "unknown-device", "reason": "x"})
    code, out = _run("identity", "show", "plc-2", "--ledger", str(ledger_dir))
    assert code == 0 and f"ledger entry {bad} (identity.revoke) skipped" in out and "active" in out
    code, out = _run("identity", "list", "--ledger", str(ledger_dir))
    assert code == 0 and "plc-2" in out
    # revocation signed by the device itself; the admin key is not needed for it
    code, out = _run("identity", "revoke", "plc-2", "--ledger", str(ledger_dir), "--reason", "retired",
                     "--keys", str(tmp_path / "k"))
    assert code == 0, out
    code, out = _run("identity", "enroll", "plc-3", "--ledger", str(ledger_dir), "--admin-key", str(tmp_path / "none.key"))
    assert code == 2 and "no identity admin key" in out
