"""`trustmesh ledger ...` commands end to end, including bad input that must change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.ledger import (
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    Ledger,
    verify_consistency,
    verify_inclusion,
)

runner = CliRunner()
ORIGIN = "cli.example/log"


def _init(d: Path) -> None:
    r = runner.invoke(app, ["ledger", "init", str(d), "--origin", ORIGIN])
    assert r.exit_code == 0, r.output


def _jsonl(path: Path, n: int, start: int = 0) -> Path:
    path.write_text("".join(json.dumps({"kind": "alert", "payload": {"i": i}, "time": 1.0}) + "\n" for i in range(start, start + n)))
    return path


def test_full_cli_flow(tmp_path: Path) -> None:
    d = tmp_path / "log"
    _init(d)
    secret = (d / "log.key").read_text().strip().split("+", 4)[4]
    r = runner.invoke(app, ["ledger", "append", str(d), "--file", str(_jsonl(tmp_path / "a.jsonl", 40))])
    assert r.exit_code == 0 and r.output.split() == [str(i) for i in range(40)]
    r = runner.invoke(app, ["ledger", "append", str(d), "-"], input=_jsonl(tmp_path / "b.jsonl", 5, 40).read_text())
    assert r.exit_code == 0 and r.output.split() == [str(i) for i in range(40, 45)]
    r = runner.invoke(app, ["ledger", "checkpoint", str(d)])
    assert r.exit_code == 0 and secret not in r.output
    cp = Checkpoint.from_bytes(r.output.encode())
    assert cp.size == 45
    (tmp_path / "kept.note").write_bytes(cp.to_bytes())
    r = runner.invoke(app, ["ledger", "prove", str(d), "--index", "7", "--json"])
    proof = InclusionProof.from_json(json.loads(r.output))
    with Ledger.open(d, read_only=True) as led:
        verify_inclusion(proof, cp, led.entry_bytes(7))
    r = runner.invoke(app, ["ledger", "consistency", str(d), "--from", "10", "--to", "45", "--json"])
    cons = ConsistencyProof.from_json(json.loads(r.output))
    verify_consistency(cons, cons.root1, cp)
    r = runner.invoke(app, ["ledger", "verify", str(d), "--trusted-checkpoint", str(tmp_path / "kept.note"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["trusted_checkpoint_size"] == 45


def test_witness_cli_cosigns_and_verify_counts_quorum(tmp_path: Path) -> None:
    d = tmp_path / "log"
    _init(d)
    runner.invoke(app, ["ledger", "append", str(d), "--file", str(_jsonl(tmp_path / "a.jsonl", 3)), "--checkpoint"])
    wkey = runner.invoke(app, ["ledger", "witness", "init", str(tmp_path / "w"), "--name", "w.example/w1"]).output.strip()
    r = runner.invoke(app, ["ledger", "witness", "trust", str(tmp_path / "w"), "--log-key", f"@{d / 'log.pub'}"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["ledger", "witness", "cosign", str(tmp_path / "w"), "--ledger", str(d)])
    assert r.exit_code == 0, r.output
    assert "\u2014 w.example/w1 " in r.output
    r = runner.invoke(app, ["ledger", "verify", str(d), "--witness-key", wkey, "--quorum", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["witness_cosignatures"] == 1
    # issue 14: one witness named twice must not meet a quorum of two
    r = runner.invoke(app, ["ledger", "verify", str(d), "--witness-key", wkey, "--witness-key", wkey, "--quorum", "2"])
    assert r.exit_code == 2 and "distinct witness keys" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(
    "content",
    ["{not json}\n", '{"kind": "a"}\n', '{"kind": "a", "payload": {}, "refs": [5]}\n', "[1, 2]\n", "",
     json.dumps({"kind": "a", "payload": {"x": "y" * 70000}}) + "\n",
     '{"kind": "a", "payload": {}}\n{"kind": "a", "payload": 3}\n'],
)
def test_bad_append_input_is_one_line_and_changes_nothing(tmp_path: Path, content: str) -> None:
    d = tmp_path / "log"
    _init(d)
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    r = runner.invoke(app, ["ledger", "append", str(d), "--file", str(f)])
    assert r.exit_code == 2 and "error" in r.output and "Traceback" not in r.output
    with Ledger.open(d, read_only=True) as led:
        assert led.size == 0


def test_verify_exits_1_on_tampering_and_2_on_bad_input(tmp_path: Path) -> None:
    import sqlite3

    d = tmp_path / "log"
    _init(d)
    runner.invoke(app, ["ledger", "append", str(d), "--file", str(_jsonl(tmp_path / "a.jsonl", 10)), "--checkpoint"])
    db = sqlite3.connect(d / "ledger.sqlite")
    db.execute("UPDATE checkpoints SET note = replace(note, '10', '11')")
    db.commit()
    db.close()
    r = runner.invoke(app, ["ledger", "verify", str(d)])
    assert r.exit_code == 1 and "Error" in r.output
    assert runner.invoke(app, ["ledger", "verify", str(tmp_path / "nowhere")]).exit_code == 2
    assert runner.invoke(app, ["ledger", "prove", str(d), "--index", "10"]).exit_code == 2
    assert runner.invoke(app, ["ledger", "consistency", str(d), "--from", "5", "--to", "99"]).exit_code == 2
    assert runner.invoke(app, ["ledger", "init", str(d), "--origin", ORIGIN]).exit_code == 2
    assert runner.invoke(app, ["ledger", "init", str(tmp_path / "x"), "--origin", "has space"]).exit_code == 2


def test_verify_with_chain_reports_missing_anchoring_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    d = tmp_path / "log"
    _init(d)
    monkeypatch.setitem(sys.modules, "trustmesh.ledger.anchor", None)  # simulate the package being absent
    r = runner.invoke(app, ["ledger", "verify", str(d), "--chain", "embedded"])
    assert r.exit_code == 2 and "anchoring not available" in r.output


def test_check_proof_accepts_real_and_rejects_forged_proofs(tmp_path: Path) -> None:
    d = tmp_path / "log"
    _init(d)
    runner.invoke(app, ["ledger", "append", str(d), "--file", str(_jsonl(tmp_path / "a.jsonl", 20)), "--checkpoint"])
    old_note = tmp_path / "old.note"
    old_note.write_text(runner.invoke(app, ["ledger", "checkpoint", str(d)]).output)
    runner.invoke(app, ["ledger", "append", str(d), "--file", str(_jsonl(tmp_path / "b.jsonl", 9, 20))])
    note = tmp_path / "cp.note"
    note.write_text(runner.invoke(app, ["ledger", "checkpoint", str(d)]).output)
    proof = json.loads(runner.invoke(app, ["ledger", "prove", str(d), "--index", "3", "--json"]).output)
    with Ledger.open(d, read_only=True) as led:
        (tmp_path / "entry.bin").write_bytes(led.entry_bytes(3))
    key = f"@{d / 'log.pub'}"
    base = ["ledger", "check-proof", str(tmp_path / "p.json"), "--checkpoint", str(note), "--log-key", key]
    (tmp_path / "p.json").write_text(json.dumps(proof))
    assert runner.invoke(app, [*base, "--entry", str(tmp_path / "entry.bin")]).exit_code == 0
    forged = {**proof, "proof": list(reversed(proof["proof"]))}
    (tmp_path / "p.json").write_text(json.dumps(forged))
    r = runner.invoke(app, base)
    assert r.exit_code == 1 and "InclusionProofError" in r.output
    (tmp_path / "p.json").write_text(json.dumps({**proof, "leafIdx": "three"}))
    assert runner.invoke(app, base).exit_code == 2
    cons = json.loads(runner.invoke(app, ["ledger", "consistency", str(d), "--from", "20", "--json"]).output)
    (tmp_path / "p.json").write_text(json.dumps(cons))
    assert runner.invoke(app, [*base, "--old-checkpoint", str(old_note)]).exit_code == 0
    (tmp_path / "p.json").write_text(json.dumps({**cons, "proof": cons["proof"][:-1]}))
    assert runner.invoke(app, [*base, "--old-checkpoint", str(old_note)]).exit_code == 1


def test_bench_ledger_reports_sane_numbers() -> None:
    r = runner.invoke(app, ["bench", "ledger", "--sizes", "1500", "--max-size", "1500", "--proofs", "20",
                            "--batch", "500", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["append"]["entries"] == 1500 and doc["append"]["entries_per_s"] > 0
    assert doc["append"]["pymerkle_entries_per_s"] > 0
    (row,) = doc["sizes"]
    assert row["size"] == 1500 and 64 < row["bytes_per_entry"] < 10_000
    assert row["inclusion_prove_us"] > 0 and row["consistency_verify_us"] > 0


@pytest.mark.parametrize(
    "args",
    [
        ["ledger", "checkpoint", "{d}", "--witness", "{tmp}/no-witness"],
        ["ledger", "checkpoint", "{d}", "--quorum", "1"],
        ["ledger", "witness", "init", "{tmp}/w", "--name", "bad name"],
        ["ledger", "witness", "trust", "{tmp}/no-witness", "--log-key", "x+y+z"],
        ["ledger", "witness", "cosign", "{tmp}/no-witness", "--ledger", "{d}"],
        ["ledger", "serve", "{d}", "--port", "0"],
        ["ledger", "init", "{tmp}/new", "--origin", "o.example/l", "--synchronous", "OFF"],
        ["ledger", "verify", "{d}", "--trusted-checkpoint", "{tmp}/missing.note"],
        ["ledger", "verify", "{d}", "--log-key", "not-a-key"],
        ["ledger", "append", "{d}"],
        ["ledger", "append", "{d}", "--file", "{tmp}/missing.jsonl"],
        ["ledger", "check-proof", "{tmp}/missing.json", "--checkpoint", "{tmp}/x", "--log-key", "@{d}/log.pub"],
    ],
)
def test_bad_arguments_give_one_line_and_change_nothing(tmp_path: Path, args: list[str]) -> None:
    d = tmp_path / "log"
    _init(d)
    runner.invoke(app, ["ledger", "append", str(d), "--file", str(_jsonl(tmp_path / "a.jsonl", 4)), "--checkpoint"])
    before = (d / "ledger.sqlite").read_bytes(), sorted(p.name for p in d.iterdir())
    r = runner.invoke(app, [a.format(d=d, tmp=tmp_path) for a in args])
    assert r.exit_code == 2, r.output
    assert "error" in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    with Ledger.open(d, read_only=True) as led:
        assert led.size == 4 and len(led.checkpoints()) == 1
    assert sorted(p.name for p in d.iterdir()) == before[1]


def test_damaged_database_file_is_a_one_line_integrity_error(tmp_path: Path) -> None:
    d = tmp_path / "log"
    _init(d)
    runner.invoke(app, ["ledger", "append", str(d), "--file", str(_jsonl(tmp_path / "a.jsonl", 4)), "--checkpoint"])
    (d / "ledger.sqlite").write_bytes(b"this is not an SQLite file" * 100)
    for args in (["ledger", "prove", str(d), "--index", "0"], ["ledger", "verify", str(d)],
                 ["ledger", "append", str(d), "--file", str(tmp_path / "a.jsonl")]):
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and "LogIntegrityError" in r.output and "Traceback" not in r.output
