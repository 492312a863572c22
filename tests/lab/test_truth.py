"""Ground truth: truth.json is checked on load; flows are labelled by attacker, targets, protocol, port, time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from trustmesh.errors import InputError
from trustmesh.flows import to_canonical
from trustmesh.lab import GroundTruth, label_flows, load_truth, match_attacks

T0 = 1_800_000_000.0


def _truth(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": "trustmesh-lab-truth/1", "scenario": "t", "seed": 7, "start": T0, "end": T0 + 60,
        "lan": "10.50.0.0/24", "outside": "172.20.1.0/26", "gateway": {"lan": "10.50.0.1", "outside": "172.20.1.1"},
        "domain": "lab", "capture": {"file": "capture.pcap"},
        "hosts": [{"name": "hub", "ip": "10.50.0.10", "role": "server", "zone": "lan", "services": {"ssh": 2222}},
                  {"name": "s1", "ip": "10.50.0.20", "role": "iot", "zone": "lan"},
                  {"name": "x", "ip": "172.20.1.9", "role": "attacker", "zone": "outside"}],
        "attacks": [
            {"id": "a1", "kind": "brute-force", "variant": "ssh", "tool": "hydra", "argv": ["hydra"],
             "technique_id": "T1110", "technique_name": "Brute Force", "attacker": "172.20.1.9",
             "victims": ["10.50.0.10"], "targets": ["10.50.0.10/32"], "protos": ["tcp"], "ports": [2222],
             "start": T0 + 10, "end": T0 + 20, "exit_code": 0},
            {"id": "a2", "kind": "lateral-movement", "variant": "scan", "tool": "nmap", "argv": ["nmap"],
             "technique_id": "T1046", "technique_name": "Network Service Discovery", "attacker": "10.50.0.20",
             "victims": ["10.50.0.10"], "targets": ["10.50.0.0/24"], "protos": ["tcp"], "ports": [22, 80],
             "start": T0 + 30, "end": T0 + 35, "exit_code": 0},
            {"id": "a3", "kind": "port-scan", "variant": "udp", "tool": "nmap", "argv": ["nmap"],
             "technique_id": "T1046", "technique_name": "Network Service Discovery", "attacker": "172.20.1.9",
             "victims": ["10.50.0.10"], "targets": ["10.50.0.10/32"], "protos": ["udp", "icmp"], "ports": None,
             "start": T0 + 40, "end": T0 + 45, "exit_code": 0}],
        "benign": [{"id": "b1", "kind": "mqtt-telemetry", "tool": "paho-mqtt", "host": "10.50.0.20",
                    "server": "10.50.0.10", "port": 1883, "start": T0, "end": T0 + 60}],
    }
    doc.update(over)
    return doc


def _flows(rows: list[tuple[float, str, str, int, str]]) -> pd.DataFrame:
    return to_canonical(pd.DataFrame(
        [{"ts": T0 + t, "uid": f"F{i}", "src_ip": s, "src_port": 40000 + i, "dst_ip": d, "dst_port": p, "proto": pr}
         for i, (t, s, d, p, pr) in enumerate(rows)]))


def test_label_flows_by_attacker_target_proto_port_and_window() -> None:
    truth = GroundTruth.model_validate(_truth())
    flows = _flows([
        (12.0, "172.20.1.9", "10.50.0.10", 2222, "tcp"),   # hydra attempt: a1
        (20.5, "172.20.1.9", "10.50.0.10", 2222, "tcp"),   # inside the 1 s slack: a1
        (25.0, "172.20.1.9", "10.50.0.10", 2222, "tcp"),   # after the attack ended: benign
        (12.0, "10.50.0.20", "10.50.0.10", 1883, "tcp"),   # telemetry during a1: benign
        (31.0, "10.50.0.20", "10.50.0.10", 80, "tcp"),     # lateral scan probe: a2
        (31.0, "10.50.0.20", "10.50.0.10", 1883, "tcp"),   # same host, port not scanned: benign
        (31.0, "10.50.0.20", "10.50.0.10", 22, "udp"),     # same host, other protocol: benign
        (41.0, "172.20.1.9", "10.50.0.10", 53, "udp"),     # UDP scan probe: a3
        (41.0, "10.50.0.10", "172.20.1.9", 0, "icmp"),     # the port-unreachable it provokes: a3
        (41.0, "172.20.1.9", "10.50.0.20", 53, "udp"),     # a host the scan did not target: benign
    ])
    original = flows.copy()
    out = label_flows(flows, truth)
    pd.testing.assert_frame_equal(flows, original)  # input not mutated
    assert list(match_attacks(flows, truth)) == ["a1", "a1", "", "", "a2", "", "", "a3", "a3", ""]
    assert list(out["label"]) == ["attack", "attack", "benign", "benign", "attack", "benign", "benign", "attack",
                                  "attack", "benign"]
    assert list(out["attack_type"])[:5] == ["brute-force", "brute-force", "benign", "benign", "lateral-movement"]
    assert list(out["technique_id"])[:5] == ["T1110", "T1110", "", "", "T1046"]
    assert list(out.columns[: len(original.columns)]) == list(original.columns)


def test_label_flows_on_empty_table_and_missing_columns() -> None:
    truth = GroundTruth.model_validate(_truth())
    assert label_flows(_flows([]), truth).empty
    with pytest.raises(InputError, match="missing columns for labelling: dst_port"):
        label_flows(pd.DataFrame({"ts": [T0], "src_ip": ["a"], "dst_ip": ["b"], "proto": ["tcp"]}), truth)


def test_load_truth_round_trip_and_folder(tmp_path: Path) -> None:
    (tmp_path / "truth.json").write_text(json.dumps(_truth()))
    t = load_truth(tmp_path)
    assert t.attackers == ["10.50.0.20", "172.20.1.9"]
    assert t.host_role("10.50.0.10") == "server"
    assert load_truth(tmp_path / "truth.json") == t


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps(_truth(format="other/9")), "format"),
        (json.dumps({k: v for k, v in _truth().items() if k != "attacks"}), "attacks: Field required"),
        (json.dumps(_truth(attacks=[{**_truth()["attacks"][0], "kind": "teleport"}])), "attacks.0.kind"),
        (json.dumps(_truth(attacks=[{**_truth()["attacks"][0], "targets": ["10.50.0.999"]}])),
         "attacks.a1.targets: '10.50.0.999' is not an address"),
        (json.dumps(_truth(attacks=[{**_truth()["attacks"][0], "end": T0}])), "attacks.a1: end"),
    ],
)
def test_bad_truth_files_are_rejected_with_the_field(tmp_path: Path, doc: str, message: str) -> None:
    p = tmp_path / "truth.json"
    p.write_text(doc)
    with pytest.raises(InputError, match=message) as err:
        load_truth(p)
    assert str(p) in str(err.value)


def test_missing_truth_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_truth(tmp_path / "nope.json")


def test_overlapping_attacks_the_most_recently_started_wins() -> None:
    doc = _truth()
    flood = {**doc["attacks"][0], "id": "a9", "kind": "syn-flood", "tool": "hping3", "technique_id": "T1499",
             "technique_name": "Endpoint Denial of Service", "start": T0 + 15, "end": T0 + 19}
    truth = GroundTruth.model_validate({**doc, "attacks": [*doc["attacks"], flood]})
    flows = _flows([(12.0, "172.20.1.9", "10.50.0.10", 2222, "tcp"),    # hydra, before the flood: a1
                    (16.0, "172.20.1.9", "10.50.0.10", 2222, "tcp"),    # during both: the flood
                    (19.8, "172.20.1.9", "10.50.0.10", 2222, "tcp")])   # in the flood's slack: still the flood
    assert list(match_attacks(flows, truth)) == ["a1", "a9", "a9"]
    assert list(label_flows(flows, truth)["attack_type"]) == ["brute-force", "syn-flood", "syn-flood"]


def test_an_icmp_flow_opened_by_an_earlier_ping_belongs_to_the_flood_it_carries() -> None:
    doc = _truth()
    sweep = {**doc["attacks"][2], "id": "s1", "kind": "host-sweep", "protos": ["icmp", "tcp"],
             "targets": ["10.50.0.0/24"], "technique_id": "T1018", "start": T0 + 5, "end": T0 + 6}
    flood = {**doc["attacks"][2], "id": "f1", "kind": "icmp-flood", "protos": ["icmp"], "technique_id": "T1498",
             "start": T0 + 50, "end": T0 + 53}
    truth = GroundTruth.model_validate({**doc, "attacks": [sweep, flood]})
    flows = _flows([(5.5, "172.20.1.9", "10.50.0.10", 0, "icmp"), (5.5, "172.20.1.9", "10.50.0.20", 0, "icmp")])
    flows["duration"] = [47.0, 0.0]  # the first one carried the flood's echo requests too
    assert list(match_attacks(flows, truth)) == ["f1", "s1"]
