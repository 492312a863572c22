"""Playbook loading: valid files load; invalid ones are rejected naming the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustmesh.errors import PlaybookError
from trustmesh.records import Incident, IncidentId
from trustmesh.respond import DEFAULT_PLAYBOOKS, Playbook, PlaybookSet

REPO = Path(__file__).resolve().parents[2]


def _inc(**kw: object) -> Incident:
    base: dict[str, object] = dict(incident_id=IncidentId("i"), version=1, first_seen=0.0, last_seen=0.0,
                                   severity=3, confidence=0.9, alert_ids=("a",), source_ips=("10.0.0.66",),
                                   destination_ips=("10.0.0.5",), technique_id="T1046")
    base.update(kw)
    return Incident(**base)  # type: ignore[arg-type]


def test_shipped_playbooks_load_and_first_match_decides() -> None:
    pbs = PlaybookSet.load(DEFAULT_PLAYBOOKS)
    assert [pb.name for pb in pbs][:2] == ["block-port-scanner", "block-brute-force"]
    assert pbs.matching(_inc())[0].name == "block-port-scanner"
    assert pbs.matching(_inc(technique_id=None))[0].name == "log-everything-else"
    step = pbs.get("quarantine-c2-device").actions[0]
    assert (step.type, step.ttl_s, step.approval) == ("quarantine", 3600, True)


def test_single_playbook_file(tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text("name: only\nactions:\n  - type: notify\n")
    pb = Playbook.load(path)
    assert pb.name == "only" and pb.actions[0].type == "notify"


@pytest.mark.parametrize(("text", "line", "field", "problem"), [
    ("name: a\nactions:\n  - type: nftables\n    params: {verdict: bounce}\n", 4, "params.verdict", "drop"),
    ("name: a\nactions:\n  - type: nftables\n    ttl_s: -5\n", 4, "ttl_s", "greater than 0"),
    ("name: a\nactions:\n  - type: teleport\n", 3, "actions[0]", "teleport"),
    ("name: a\nactions:\n  - type: notify\n    aproval: true\n", 4, "aproval", "Extra inputs"),
    ("name: a\nmatch:\n  technique: [X12]\nactions:\n  - type: notify\n", 3, "match.technique", "ATT&CK"),
    ("name: a\nmatch:\n  source_cidr: [10.0.0.0/33]\nactions:\n  - type: notify\n", 3, "source_cidr",
     "IP network"),
    ("name: a\nmatch:\n  min_severity: 9\nactions:\n  - type: notify\n", 3, "min_severity", "less than"),
    ("name: a\nactions: []\n", 2, "actions", "at least 1"),
])
def test_invalid_playbook_names_line_and_field(tmp_path: Path, text: str, line: int, field: str,
                                               problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PlaybookError) as err:
        PlaybookSet.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert field in message and problem in message


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: a\nactions:\n  - type: notify\n   bad: [\n")
    with pytest.raises(PlaybookError, match=r"broken.yaml:\d+:\d+: not valid YAML"):
        PlaybookSet.load(path)


def test_duplicate_key_is_rejected_not_silently_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nactions:\n  - type: notify\nname: b\n")
    with pytest.raises(PlaybookError, match=r"dup.yaml:4:1: field 'name' is given twice"):
        PlaybookSet.load(path)


def test_duplicate_playbook_names_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text("playbooks:\n  - {name: a, actions: [{type: notify}]}\n"
                    "  - {name: a, actions: [{type: notify}]}\n")
    with pytest.raises(PlaybookError, match="unique"):
        PlaybookSet.load(path)
    with pytest.raises(PlaybookError, match="not found"):
        PlaybookSet.load(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(PlaybookError, match="empty"):
        PlaybookSet.load(tmp_path / "empty.yaml")


def test_match_conditions() -> None:
    pbs = PlaybookSet.from_yaml(
        "name: a\nmatch: {min_severity: 3, min_confidence: 0.8, min_alerts: 2,"
        " destination_cidr: [10.0.0.0/24],"
        " technique: [T1499]}\nactions: [{type: notify}]\n")
    pb = pbs.get("a")
    ok = _inc(technique_id="T1499.002", alert_ids=("a", "b"))
    assert pb.match.matches(ok)
    assert not pb.match.matches(_inc(technique_id="T1499", alert_ids=("a",)))
    assert not pb.match.matches(_inc(technique_id="T1499", alert_ids=("a", "b"),
                                     destination_ips=("192.0.2.1",)))
    assert not pb.match.matches(_inc(technique_id="T1499", alert_ids=("a", "b"), confidence=0.5))
