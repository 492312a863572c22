"""STIX 2.1 export: stable producer, deterministic ids, no duplicates, TLP 2.0, internal hosts as
sightings, no 1970 dates, and `stix2_validator --strict --interop` clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from _sink_helpers import make_alert  # type: ignore[import-not-found]
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.flows import iter_eve_alerts
from trustmesh.sinks import TLP_MARKINGS, bundle_json, stix_bundle

EVE = "logs/suricata/test6-malicious.suricata.json.gz"


def _alerts(data_dir: Path, n: int = 60) -> list:  # type: ignore[type-arg]
    alerts = [a for b in iter_eve_alerts(data_dir / EVE) for a in b][:n]
    # an internal attacker with a technique and relative times (Zeek-style), plus one without a technique
    alerts.append(make_alert(90, source_ip="10.0.2.15", timestamp=18.8, technique_id="T1046"))
    alerts.append(make_alert(91, source_ip="192.168.1.50", technique_id=None))
    return alerts


@pytest.mark.needs_data
def test_bundle_is_deterministic_deduplicated_and_marked(data_dir: Path) -> None:
    alerts = _alerts(data_dir)
    one = stix_bundle(alerts, producer="soc-gw-1", tlp="amber", created=1.7e9)
    two = stix_bundle(list(reversed(alerts)), producer="soc-gw-1", tlp="amber", created=1.7e9)
    assert bundle_json(one) == bundle_json(two)  # same alerts, same bytes, whatever the order
    ids = [o["id"] for o in one["objects"]]
    assert len(ids) == len(set(ids))
    identities = [o for o in one["objects"] if o["type"] == "identity"]
    assert len(identities) == 1 and identities[0]["name"] == "soc-gw-1"
    other = stix_bundle(alerts, producer="soc-gw-2", created=1.7e9)
    assert [o for o in other["objects"] if o["type"] == "identity"][0]["id"] != identities[0]["id"]
    assert all(o["object_marking_refs"] == [TLP_MARKINGS["amber"]] for o in one["objects"])
    assert all(o["created_by_ref"] == identities[0]["id"] for o in one["objects"])
    text = bundle_json(one)
    assert "1970-" not in text


@pytest.mark.needs_data
def test_internal_hosts_are_sightings_not_indicators(data_dir: Path) -> None:
    bundle = stix_bundle(_alerts(data_dir), created=1.7e9)
    indicators = [o for o in bundle["objects"] if o["type"] == "indicator"]
    assert indicators and not any("10.0.2.15" in o["pattern"] or "192.168." in o["pattern"] for o in indicators)
    internal = [o for o in bundle["objects"] if o["type"] == "sighting" and "internal host 10.0.2.15" in
                o.get("description", "")]
    assert len(internal) == 1 and internal[0]["sighting_of_ref"].startswith("attack-pattern--")
    assert internal[0]["first_seen"].startswith("2023-11-14")  # relative source time: export time, not 1970
    assert internal[0]["external_references"][0]["external_id"] == "alr-0090"
    mssql = [o for o in indicators if "T1046" in o["name"]]
    assert mssql and all(o["indicator_types"] == ["malicious-activity"] for o in mssql)
    rels = Counter(o["relationship_type"] for o in bundle["objects"] if o["type"] == "relationship")
    assert rels["indicates"] == len(mssql)


@pytest.mark.needs_data
def test_stix2_validator_strict_interop_is_clean(data_dir: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("stix2_validator")
    if not exe.exists() and shutil.which("stix2_validator") is None:
        pytest.skip("stix2_validator not installed (pip install stix2-validator; the test extra has it)")
    path = tmp_path / "bundle.json"
    path.write_text(bundle_json(stix_bundle(_alerts(data_dir, 40), created=1.7e9)))
    result = subprocess.run([str(exe if exe.exists() else "stix2_validator"), "--strict", "--interop", str(path)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "[X]" not in result.stdout and "[!]" not in result.stdout


def test_cli_export_from_alert_lines(tmp_path: Path) -> None:
    lines = tmp_path / "alerts.jsonl"
    lines.write_text("".join(json.dumps(make_alert(i).to_ecs(created=1.7e9)) + "\n" for i in range(3)))
    out = tmp_path / "b.json"
    result = CliRunner().invoke(app, ["stix", "export", "--alerts", str(lines), "--out", str(out), "--tlp", "green",
                                      "--producer", "gw", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["alerts"] == 3 and summary["types"]["indicator"] == 1 and summary["types"]["sighting"] == 1
    assert json.loads(out.read_text())["objects"][1]["object_marking_refs"] == [TLP_MARKINGS["green"]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"event": {"dataset": "trustmesh.alert"}}\n')
    result = CliRunner().invoke(app, ["stix", "export", "--alerts", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output and "Traceback" not in result.output
