"""``trustmesh demo``: the README's first command, end to end on the real captures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trustmesh.ledger import audit

pytestmark = pytest.mark.slow


def test_demo_detects_records_proves_and_reports(tmp_path: Path, data_dir: Path) -> None:
    exe = Path(sys.executable).with_name("trustmesh")
    out = tmp_path / "demo"
    run = subprocess.run([str(exe), "demo", "--out", str(out), "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    checks = summary["checks"]
    assert checks["inclusion"].startswith("ok") and checks["consistency"].startswith("ok")
    assert checks["audit"].startswith("ok")
    assert checks["tamper"].startswith("ok: tampered copy rejected with LogIntegrityError")
    assert checks["anchor"].startswith(("ok", "skipped"))
    pcaps = {p["name"]: p for p in summary["pcaps"]}
    assert len(pcaps) == 10 and not any(p["error"] for p in pcaps.values())
    # the port scanner and the FTP brute-forcer are unmistakable: they must be flagged
    assert pcaps["pcap-synscan"]["attackers_flagged"] == ["172.16.0.8"]
    assert pcaps["pcap-ftp-crack"]["attackers_flagged"] == ["10.234.125.254"]  # see flows/_datasets.py
    assert summary["pipeline"]["incidents"] >= 1 and summary["pipeline"]["decisions"] >= 1
    assert all(a.get("enforce") in (False, None) for a in summary["actions"]), "the demo never enforces"
    audit(out / "ledger")
    html = (out / "report.html").read_text(encoding="utf-8")
    for section in ("summary", "detections", "incidents", "actions", "ledger"):
        assert f'<section id="{section}">' in html
    assert html.count("data:image/png;base64,") == 3
    note = summary["ledger"]["checkpoint"]
    assert note.startswith("trustmesh.demo/log\n") and "\n\n\u2014 trustmesh.demo/log " in note
    assert note.strip() in run.stdout, "the signed checkpoint is printed verbatim"


def test_demo_without_data_says_what_is_missing(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("trustmesh")
    env = {**os.environ, "TRUSTMESH_DATA": str(tmp_path / "nowhere")}
    run = subprocess.run([str(exe), "demo", "--out", str(tmp_path / "d")], capture_output=True, text=True,
                         env=env, timeout=300, check=False)
    assert run.returncode == 2
    assert "TRUSTMESH_DATA" in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_reports_a_corrupted_capture_and_replays_the_rest(tmp_path: Path, data_dir: Path) -> None:
    data = tmp_path / "data"
    for src in data_dir.rglob("*"):
        if src.is_file():
            dst = data / src.relative_to(data_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
    bad = data / "pcaps/practical-packet-analysis/synscan.pcapng"
    bad.unlink()
    bad.write_bytes((data_dir / "pcaps/practical-packet-analysis/synscan.pcapng").read_bytes()[:5000])  # truncated
    exe = Path(sys.executable).with_name("trustmesh")
    run = subprocess.run([str(exe), "demo", "--out", str(tmp_path / "d"), "--data-dir", str(data), "--no-anchor"],
                         capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "d" / "summary.json").read_text(encoding="utf-8"))
    pcaps = {p["name"]: p for p in summary["pcaps"]}
    assert "synscan.pcapng" in pcaps["pcap-synscan"]["error"] and "sha256" in pcaps["pcap-synscan"]["error"]
    assert pcaps["pcap-ftp-crack"]["error"] is None and pcaps["pcap-ftp-crack"]["alerts"] > 0
