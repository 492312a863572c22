"""Behaviour engine: each class on crafted canonical flows and real captures, benign negatives, streaming."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from trustmesh.detect import BEHAVIOUR_KINDS, BehaviourConfig, BehaviourEngine, BehaviourVerdict
from trustmesh.errors import InputError
from trustmesh.flows import to_canonical

_uid = itertools.count()


def flow(ts: float, src: str, dst: str, dport: int, proto: str = "tcp", *, sport: int | None = None,
         state: str = "SF", sb: float = 0.0, db: float = 0.0, sp: float = 1.0, dp: float = 0.0,
         dur: float = 0.0, service: str = "-") -> dict[str, Any]:
    n = next(_uid)
    return {"ts": ts, "uid": f"C{n}", "src_ip": src, "src_port": sport if sport is not None else 30000 + n % 30000,
            "dst_ip": dst, "dst_port": dport, "proto": proto, "service": service, "duration": dur,
            "src_bytes": sb, "dst_bytes": db, "src_pkts": sp, "dst_pkts": dp, "conn_state": state}


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return to_canonical(pd.DataFrame(rows))


def kinds(verdicts: list[BehaviourVerdict]) -> set[tuple[str, str]]:
    return {(v.kind, v.host) for v in verdicts}


ATT, VIC = "203.0.113.9", "10.1.2.20"


def syn_scan(t0: float = 1000.0, ports: range = range(1, 201), gap: float = 0.01) -> list[dict[str, Any]]:
    return [flow(t0 + i * gap, ATT, VIC, p, state="REJ" if p % 7 else "S0", sp=1, dp=1 if p % 7 else 0)
            for i, p in enumerate(ports)]


def benign_mix(t0: float = 1000.0, seconds: int = 300) -> list[dict[str, Any]]:
    """DNS bursts, MQTT telemetry, one correct SSH login, a bulk transfer, web browsing: all benign."""
    rows: list[dict[str, Any]] = []
    lan = [f"10.1.2.{i}" for i in range(30, 40)]
    for k, host in enumerate(lan):
        for t in range(0, seconds, 5):  # DNS: many queries from a few hosts, all to port 53, answered
            for q in range(6 if t % 60 == 0 else 1):
                rows.append(flow(t0 + t + q * 0.01 + k * 0.1, host, "10.1.2.2", 53, "udp", sb=40, db=90, sp=1, dp=1,
                                 service="dns"))
        rows.append(flow(t0 + k, host, "10.1.2.3", 1883, sb=4000, db=300, sp=80, dp=60, dur=seconds - 10,
                         service="mqtt"))  # one long MQTT session per device
    rows.append(flow(t0 + 30, lan[0], "10.1.2.4", 22, sb=3200, db=4100, sp=30, dp=28, dur=1.2, service="ssh"))
    rows.append(flow(t0 + 60, lan[1], "10.1.2.5", 5201, sb=5e8, db=2e5, sp=350000, dp=90000, dur=20.0))
    for t in range(0, seconds, 7):  # browsing: index + a few pages, varied answers
        for j, page in enumerate((0, 1 + t % 5, 2 + t % 3)):
            rows.append(flow(t0 + t + j * 0.3, lan[2], "10.1.2.6", 80, sb=120 + page * 3, db=2000 + page * 777,
                             sp=5, dp=6, dur=0.05, service="http"))
    return rows


# ------------------------------------------------------------------------------------------ classes


def test_tcp_syn_port_scan_is_t1046() -> None:
    verdicts = BehaviourEngine().detect(table(syn_scan()))
    (v,) = [v for v in verdicts if v.kind == "port-scan"]
    assert (v.host, v.technique_id, v.victims) == (ATT, "T1046", (VIC,))
    assert len(v.flow_uids) == 200 and len(v.ports) == 200
    assert v.confidence > 0.9 and v.technique_name == "Network Service Discovery"


def test_udp_scan_and_slow_scan() -> None:
    udp = [flow(1000 + i * 0.2, ATT, VIC, p, "udp", state="S0", sb=0, sp=1, dp=0) for i, p in
           enumerate((7, 9, 17, 19, 49, 67, 68, 69, 111, 123, 135, 137, 138, 161, 162, 500, 514, 520, 631, 1900))]
    (v,) = BehaviourEngine().detect(table(udp))
    assert (v.kind, v.technique_id) == ("port-scan", "T1046") and v.evidence["udp_ports"] == 20
    # 10 ports, one every 40 s (nmap -T1-like): only the long window sees it, and at low confidence
    slow = syn_scan(ports=range(20, 30), gap=40.0)
    (s,) = BehaviourEngine().detect(table(slow))
    assert s.kind == "port-scan" and 0.5 <= s.confidence < 0.9
    assert s.severity < BehaviourEngine().detect(table(syn_scan()))[0].severity


def test_host_sweeps_icmp_is_t1018_and_tcp_is_t1046() -> None:
    ping = [flow(1000 + i * 0.05, ATT, f"10.1.2.{i}", 0, "icmp", state="OTH", sp=1, dp=i % 2)
            for i in range(1, 60)]
    tcp = [flow(2000 + i * 0.05, "198.51.100.7", f"10.1.3.{i}", 445, state="S0", sp=1) for i in range(1, 60)]
    found = {v.host: v for v in BehaviourEngine().detect(table(ping + tcp)) if v.kind == "host-sweep"}
    assert found[ATT].technique_id == "T1018" and len(found[ATT].victims) == 59
    assert found["198.51.100.7"].technique_id == "T1046"


@pytest.mark.parametrize(("kind", "rows", "technique"), [
    ("syn-flood", [flow(1000 + i * 0.002, ATT, VIC, 80, state="S0" if i % 3 else "RSTO", sp=1, dp=i % 3 == 0)
                   for i in range(3000)], "T1499"),
    ("udp-flood", [flow(1000 + i * 0.002, ATT, VIC, 53, "udp", state="S0", sb=64, sp=1) for i in range(3000)],
     "T1499"),  # a silent port: a listening (or filtered) service is flooded
    ("udp-flood", [flow(1000 + i * 0.002, ATT, VIC, 4444, "udp", state="S0", sb=64, sp=1) for i in range(3000)]
     + [flow(1000 + i, VIC, ATT, 0, "icmp", state="OTH", sb=0, sp=1) for i in range(6)], "T1498"),  # closed port
    ("icmp-flood", [flow(1000, ATT, VIC, 0, "icmp", state="OTH", sb=64 * 4000, sp=4000, dp=4000, dur=8.0)],
     "T1498"),
])
def test_floods(kind: str, rows: list[dict[str, Any]], technique: str) -> None:
    verdicts = BehaviourEngine().detect(table(rows))
    (v,) = [v for v in verdicts if v.kind == kind]
    assert (v.host, v.victims, v.technique_id) == (ATT, (VIC,), technique)
    assert v.severity >= 3  # floods rank above a single slow scan
    assert kind != "syn-flood" or "port-scan" not in {x.kind for x in verdicts}


def test_brute_force_vs_one_correct_login() -> None:
    hydra = [flow(1000 + i * 0.4, ATT, VIC, 22, sb=1900, db=2300 + i % 3, sp=14, dp=12, dur=0.5, service="ssh")
             for i in range(40)]
    login = [flow(1000.0, "10.1.2.33", VIC, 22, sb=3200, db=4100, sp=30, dp=28, dur=1.2, service="ssh")]
    verdicts = BehaviourEngine().detect(table(hydra + login))
    assert kinds(verdicts) == {("brute-force", ATT)}
    assert verdicts[0].technique_id.startswith("T1110") and verdicts[0].severity >= 3


def test_web_enumeration() -> None:
    rows = [flow(1000 + i * 0.05, ATT, VIC, 8080, sb=95 + (i * 7) % 13, db=469 if i % 10 else 2800, sp=5, dp=5,
                 dur=0.01, service="http") for i in range(150)]
    (v,) = BehaviourEngine().detect(table(rows))
    assert (v.kind, v.technique_id, v.ports) == ("web-enumeration", "T1595.003", (8080,))


def test_lateral_movement_from_an_inside_host() -> None:
    iot = "10.1.2.50"
    history = [flow(900 + i * 10, iot, "10.1.2.3", 53, "udp", sb=40, db=90, sp=1, dp=1) for i in range(6)]
    scan = [flow(1000 + i * 0.01, iot, f"10.1.2.{h}", p, state="REJ", sp=1, dp=1)
            for i, (h, p) in enumerate(itertools.product(range(1, 30), (22, 23, 80, 1883)))]
    logins = [flow(2000 + i, iot, f"10.1.2.{h}", 22, sb=3000, db=4000, sp=25, dp=22, dur=0.8, service="ssh")
              for i, h in enumerate((4, 5, 6))]
    verdicts = BehaviourEngine().detect(table(history + scan + logins))
    techniques = {v.technique_id for v in verdicts if v.kind == "lateral-movement" and v.host == iot}
    assert techniques == {"T1046", "T1021"}
    # the same sweep from an outside host is a host sweep, and logins from a host without LAN history are not
    outside = [dict(r, src_ip=ATT) for r in scan + logins]
    assert {v.kind for v in BehaviourEngine().detect(table(outside))} == {"host-sweep"}


# ------------------------------------------------------------------------------------------ negatives


def test_benign_patterns_do_not_alert() -> None:
    assert BehaviourEngine().detect(table(benign_mix())) == []


def test_reconnecting_telemetry_is_not_brute_force() -> None:
    # an MQTT device that reconnects for every publish: a session per second, payloads of varying size
    rows = [flow(1000 + i * 1.0, "10.1.2.40", "10.1.2.3", 1883, sb=(182, 315, 448, 250, 390)[i % 5],
                 db=(8, 12, 16, 4, 12)[i % 5], sp=8, dp=6, dur=1.0, service="mqtt") for i in range(120)]
    assert BehaviourEngine().detect(table(rows)) == []
    # the same rate of identical refused CONNECTs is password guessing
    guess = [dict(r, src_bytes=30.0 + i % 3, dst_bytes=4.0, src_ip=ATT) for i, r in enumerate(rows)]
    assert {v.kind for v in BehaviourEngine().detect(table(guess))} == {"brute-force"}


def test_multicast_and_broadcast_are_not_victims() -> None:
    rows = [flow(1000 + i, "10.1.2.30", dst, 5353, "udp", state="S0", sb=40, sp=1)
            for i, dst in enumerate(["224.0.0.251", "239.255.255.250", "10.1.2.255", "255.255.255.255"] * 20)]
    assert BehaviourEngine().detect(table(rows)) == []


# ------------------------------------------------------------------------------------------ engine


def test_streaming_equals_batch_in_any_order() -> None:
    rows = syn_scan() + benign_mix(seconds=120) + [
        flow(1100 + i * 0.4, ATT, VIC, 22, sb=1900, db=2300, sp=14, dp=12, dur=0.5, service="ssh") for i in range(30)]
    flows = table(rows)
    batch = BehaviourEngine().detect(flows)
    engine = BehaviourEngine()
    latest: dict[tuple[str, str, str], BehaviourVerdict] = {}
    shuffled = flows.sample(frac=1.0, random_state=3)  # meters emit flows in expiry order, not start order
    for chunk in np.array_split(np.arange(len(shuffled)), 17):
        for v in engine.update(shuffled.iloc[chunk]):
            latest[(v.host, v.kind, v.technique_id)] = v
    assert {(v.host, v.kind, v.technique_id): (set(v.flow_uids), v.victims) for v in batch} == \
        {k: (set(v.flow_uids), v.victims) for k, v in latest.items()}
    assert kinds(batch) == {("port-scan", ATT), ("brute-force", ATT)}


def test_state_is_bounded() -> None:
    cfg = BehaviourConfig(max_hosts=50, max_records_per_host=100)
    engine = BehaviourEngine(cfg)
    for start in range(0, 4000, 500):  # 4,000 one-flow hosts, then a long quiet gap evicts everyone
        engine.update(table([flow(1000 + i, f"10.{i // 250}.{i % 250}.1", VIC, 80, sb=10, db=10, sp=2, dp=2)
                             for i in range(start, start + 500)]))
        assert engine.hosts <= 50
    engine.update(table([flow(1000 + i * 0.01, ATT, VIC, 80, sb=10, db=10, sp=2, dp=2) for i in range(500)]))
    assert engine.records <= 50 * 100
    engine.update(table([flow(10_000, "10.9.9.9", VIC, 80, sb=10, db=10, sp=2, dp=2)]))
    assert engine.hosts == 1 and engine.records == 1


def test_input_checks_and_config_round_trip() -> None:
    with pytest.raises(InputError):
        BehaviourEngine().update([1, 2])  # type: ignore[arg-type]
    assert BehaviourEngine().detect(table([])) == []
    cfg = BehaviourConfig(scan_ports=20)
    assert BehaviourConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputError, match="unknown"):
        BehaviourConfig.from_dict({"scan_portz": 3})
    with pytest.raises(InputError, match="scan_ports"):
        BehaviourConfig.from_dict({"scan_ports": 1})
    with pytest.raises(ValueError, match="kind"):
        BehaviourVerdict("dance", "h", "T1", "x", 0.5, 0.0, 0.0)
    assert set(BEHAVIOUR_KINDS) >= {"port-scan", "lateral-movement"}
    assert dataclasses.is_dataclass(cfg)


def test_verdict_alerts_and_technique_adoption() -> None:
    from trustmesh.pipeline import adopt_techniques, alerts_from_verdicts, alerts_from_scores

    flows = table(syn_scan())
    engine = BehaviourEngine()
    (v,) = engine.update(flows)
    seen: set[tuple[str, str]] = set()
    # the batch is gone: alerts are built from what the engine retained (FlowRef)
    alerts = alerts_from_verdicts([v], None, source_name="s", refs=engine.flow_refs(v.flow_uids), seen=seen)
    assert len(alerts) == 200 and {a.technique_id for a in alerts} == {"T1046"}
    assert {(a.source_ip, a.destination_ip, a.detector, a.predicted_class) for a in alerts} == \
        {(ATT, VIC, "behaviour", "port-scan")}
    assert alerts_from_verdicts([v], flows, source_name="s", seen=seen) == []  # each (kind, flow) once
    ml = alerts_from_scores(flows, np.full(len(flows), 0.9), threshold=0.5, model_id="m", source_name="s",
                            classes=["dos"] * len(flows))
    adopted = adopt_techniques(ml, {(ATT, VIC): ("T1046", "Network Service Discovery")})
    assert {(a.technique_id, a.predicted_class, a.detector) for a in adopted} == {("T1046", "dos", "ml")}


def test_missing_columns_and_bad_rows_are_skipped() -> None:
    rows = syn_scan()
    rows[0]["ts"] = float("nan")
    rows[1]["src_ip"] = ""
    flows = table(rows).drop(columns=["service", "duration"])
    (v,) = BehaviourEngine().detect(flows)
    assert v.kind == "port-scan" and len(v.flow_uids) == 198


# ------------------------------------------------------------------------------------------ real captures


def _pcap(data_dir: Path, rel: str) -> pd.DataFrame:
    from trustmesh.flows import read_pcap

    path = data_dir / "pcaps" / rel
    if not path.exists():
        pytest.skip(f"optional: {path} not staged")
    return read_pcap(path)


@pytest.mark.parametrize(("rel", "kind", "host", "technique"), [
    ("practical-packet-analysis/synscan.pcapng", "port-scan", "172.16.0.8", "T1046"),
    ("stratosphere-slips/malicious-ssh-bruteforce.pcap", "brute-force", "147.32.80.40", "T1110.001"),
    ("stratosphere-slips/test12-icmp-portscan.pcap", "host-sweep", "192.168.1.109", "T1018"),
    ("stratosphere-slips/test7-malicious.pcap", "host-sweep", "192.168.2.16", "T1046"),
])
def test_real_attack_captures(data_dir: Path, rel: str, kind: str, host: str, technique: str) -> None:
    verdicts = BehaviourEngine().detect(_pcap(data_dir, rel))
    assert [(v.kind, v.host, v.technique_id) for v in verdicts] == [(kind, host, technique)]


@pytest.mark.parametrize("rel", [
    "stratosphere-slips/test-cc-capture-2.pcap",  # periodic HTTPS + DNS (scripted, benign-shaped)
    "practical-packet-analysis/http_dvwa_sqlinjection.pcapng",  # a handful of HTTP requests
])
def test_real_captures_without_these_behaviours(data_dir: Path, rel: str) -> None:
    assert BehaviourEngine().detect(_pcap(data_dir, rel)) == []


def test_real_suricata_eve_slow_inbound_scan(data_dir: Path) -> None:
    from trustmesh.flows import open_source

    path = data_dir / "logs" / "suricata" / "test6-malicious.suricata.json.gz"
    if not path.exists():
        pytest.skip(f"optional: {path} not staged")
    flows = pd.concat(list(open_source(path).iter_batches(50_000)), ignore_index=True)
    verdicts = BehaviourEngine().detect(flows)
    # an internet scanner probing 482 ports of one host over a day (REJ flows; EVE bytes include headers)
    assert {(v.kind, v.host, v.technique_id) for v in verdicts} == {("port-scan", "193.46.255.92", "T1046")}
    assert {"192.168.1.129"} == {vic for v in verdicts for vic in v.victims}
