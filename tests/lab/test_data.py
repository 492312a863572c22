"""The committed lab captures (tests/data/lab, made by ``trustmesh lab run`` as root) and their truth agree."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from trustmesh.lab import load_truth

DATA = Path(__file__).resolve().parents[1] / "data" / "lab"


def test_mini_site_every_attack_has_flows_and_benign_hosts_stay_benign() -> None:
    truth = load_truth(DATA / "mini-site-s7")
    flows = pd.read_parquet(DATA / "mini-site-s7" / "flows.parquet")
    assert {a.kind for a in truth.attacks} == {"port-scan", "host-sweep", "brute-force", "web-enumeration",
                                              "syn-flood", "udp-flood", "icmp-flood", "lateral-movement"}
    counts = flows[flows["label"] == "attack"].groupby("attack_id").size()
    for a in truth.attacks:
        assert counts.get(a.id, 0) >= 1, a.id
        assert a.start < a.end and a.argv[0] in ("nmap", "hping3", "hydra", "{python}")
    attackers = {a.attacker for a in truth.attacks}
    attack = flows[flows["label"] == "attack"]
    assert set(attack["src_ip"]) | set(attack["dst_ip"]) >= attackers
    outside_attacker = next(h.ip for h in truth.hosts if h.role == "attacker")
    assert not ((flows["label"] == "benign") & (flows["src_ip"] == outside_attacker)).any()
    remote = next(h.ip for h in truth.hosts if h.role == "workstation" and h.zone == "outside")
    assert (flows.loc[flows["src_ip"] == remote, "label"] == "benign").all()  # outside is not attack by itself
    assert len(truth.flows) == len(flows) and truth.summary["attack_flows"] == len(attack)


@pytest.mark.parametrize("run", ["mini-site-s7", "mini-benign-s8"])
def test_committed_captures_are_small_and_complete(run: str) -> None:
    d = DATA / run
    assert {p.name for p in d.iterdir()} >= {"capture.pcap", "truth.json", "flows.parquet"}
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 5_000_000
    truth = load_truth(d)
    if run.startswith("mini-benign"):
        assert not truth.attacks and truth.summary["attack_flows"] == 0 and truth.summary["benign_flows"] > 50
