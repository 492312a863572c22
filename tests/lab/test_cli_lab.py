"""``trustmesh lab`` commands that need no root: list, validate, plan, and run's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustmesh.cli._app import app
from trustmesh.lab import lab_unavailable, load_scenario, plan_scenario

runner = CliRunner()


def test_list_json_names_every_shipped_scenario() -> None:
    res = runner.invoke(app, ["lab", "list", "--json"])
    assert res.exit_code == 0, res.output
    names = {s["name"] for s in json.loads(res.stdout)["scenarios"]}
    assert {"benign-only", "iot-site", "port-scan", "brute-force", "lateral-movement"} <= names


def test_validate_ok_and_bad(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["lab", "validate", "src/trustmesh/lab/scenarios/iot-site.yaml"])
    assert ok.exit_code == 0 and "ok: iot-site" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nduration: 30\nhosts:\n  - {name: a, role: server, count: 40}\n")
    res = runner.invoke(app, ["lab", "validate", str(bad)])
    assert res.exit_code == 2
    assert f"{bad}:4: hosts[0].count: count must be within 1..12" in " ".join(res.stderr.split())
    missing = runner.invoke(app, ["lab", "validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "not a shipped scenario" in missing.stderr


def test_plan_prints_the_seeded_commands_without_the_password() -> None:
    res = runner.invoke(app, ["lab", "plan", "brute-force", "--seed", "8"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    plan = plan_scenario(load_scenario("brute-force"), 8)
    assert doc["lan"] == plan.lan and [a["argv"] for a in doc["attacks"]] == [a.argv for a in plan.attacks]
    assert plan.password not in res.stdout


def test_run_refuses_an_existing_run_and_a_bad_seed(tmp_path: Path) -> None:
    (tmp_path / "capture.pcap").write_bytes(b"")
    res = runner.invoke(app, ["lab", "run", "port-scan", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "already holds a lab run" in res.stderr
    res = runner.invoke(app, ["lab", "run", "port-scan", "--out", str(tmp_path / "x"), "--seed", "-3"])
    assert res.exit_code == 2 and not (tmp_path / "x").exists()


def test_lab_unavailable_names_root_and_missing_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_scenario(load_scenario("brute-force"), 7)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert "needs root" in str(lab_unavailable(plan))
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda tool: None if tool == "hydra" else f"/usr/bin/{tool}")
    assert "'hydra' not found" in str(lab_unavailable(plan))
    res = runner.invoke(app, ["lab", "run", "brute-force", "--seed", "7", "--out", "/nonexistent/never-made"])
    assert res.exit_code == 3 and "'hydra' not found" in res.stderr
    assert not Path("/nonexistent/never-made").exists()


DATA = Path(__file__).resolve().parents[1] / "data" / "lab"


def test_label_command_relabels_a_committed_capture_like_the_lab_did(tmp_path: Path) -> None:
    run = DATA / "mini-site-s7"
    out = tmp_path / "labels.csv"
    res = runner.invoke(app, ["lab", "label", str(run / "capture.pcap"), "--truth", str(run), "--out", str(out),
                              "--json"])
    assert res.exit_code == 0, res.output
    import pandas as pd

    got = pd.read_csv(out, keep_default_na=False).sort_values("uid", ignore_index=True)
    want = pd.read_parquet(run / "flows.parquet").sort_values("uid", ignore_index=True)
    assert list(got["uid"]) == list(want["uid"])
    assert list(got["label"]) == list(want["label"]) and list(got["attack_id"]) == list(want["attack_id"])
    bad = runner.invoke(app, ["lab", "label", str(run / "capture.pcap"), "--truth", str(run), "--out",
                              str(tmp_path / "x.txt")])
    assert bad.exit_code == 2 and "must end in .parquet or .csv" in bad.stderr
