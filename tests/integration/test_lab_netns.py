"""The lab end to end as root: real services, benign generators and real attack tools in namespaces.

A short scenario (about 25 s of traffic) runs through ``trustmesh lab run``; the capture must hold the
attacker's flows labelled with the attack and the benign generators' flows labelled benign, and
nothing the lab made (namespaces, /etc/netns files, processes) may survive it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from trustmesh.lab import label_flows, lab_unavailable, load_scenario, load_truth, plan_scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIO = """\
name: lab-itest
duration: 24
hosts:
  - {name: hub, role: server, services: [ssh, http, mqtt, dns]}
  - {name: sensor, role: iot, count: 2}
  - {name: laptop, role: workstation}
  - {name: intruder, role: attacker}
benign:
  - {kind: mqtt-telemetry, from: sensor, to: hub, interval: [0.5, 1.0]}
  - {kind: dns-lookups, from: [sensor, laptop], to: hub, interval: [1, 2]}
  - {kind: http-browsing, from: laptop, to: hub, interval: [1.5, 3]}
  - {kind: ssh-logins, from: laptop, to: hub, interval: [4, 6], start: 1}
attacks:
  - {kind: port-scan, variant: syn, from: intruder, to: hub, at: 4, timeout: 15}
  - {kind: brute-force, variant: ssh, from: intruder, to: hub, at: 9, timeout: 12}
  - {kind: lateral-movement, variant: scan, from: sensor, to: lan, at: 15, timeout: 8}
"""


def _etc_netns() -> set[str]:
    root = Path("/etc/netns")
    return {p.name for p in root.glob("tml*")} if root.exists() else set()


def _lab_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("tml")]


def test_lab_run_captures_and_labels_real_attacks_and_benign_traffic(tmp_path: Path) -> None:
    scen = tmp_path / "itest.yaml"
    scen.write_text(SCENARIO)
    plan = plan_scenario(load_scenario(scen), 7)
    reason = lab_unavailable(plan)
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "run"
    exe = str(Path(sys.executable).with_name("trustmesh"))
    done = subprocess.run([exe, "lab", "run", str(scen), "--seed", "7", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["attack_flows"] > 0 and report["benign_flows"] > 0

    truth = load_truth(out / "truth.json")
    assert (out / "capture.pcap").stat().st_size > 10_000
    assert {a.kind for a in truth.attacks} == {"port-scan", "brute-force", "lateral-movement"}
    for a in truth.attacks:  # each window was measured around the real process
        assert a.end > a.start
        assert a.timed_out or a.exit_code == 0, a
    hydra = next(a for a in truth.attacks if a.tool == "hydra")
    assert hydra.argv[0] == "hydra" and hydra.ports == [plan.host("hub").services["ssh"]]

    flows = pd.read_parquet(out / "flows.parquet")
    by_attack = flows[flows["label"] == "attack"].groupby("attack_id").size().to_dict()
    scan, brute, lateral = (next(a for a in truth.attacks if a.kind == k)
                            for k in ("port-scan", "brute-force", "lateral-movement"))
    assert by_attack.get(scan.id, 0) >= 500  # the SYN scan probes hundreds of ports, one flow each
    assert by_attack.get(brute.id, 0) >= 3   # hydra's SSH connections
    assert by_attack.get(lateral.id, 0) >= 3  # the compromised sensor probing its LAN
    attack = flows[flows["label"] == "attack"]
    assert set(attack["src_ip"]) <= {plan.host("intruder").ip, lateral.attacker}
    assert set(attack.loc[attack["attack_id"] == brute.id, "dst_port"]) == {plan.host("hub").services["ssh"]}

    benign = flows[flows["label"] == "benign"]
    services = plan.host("hub").services
    for svc in ("mqtt", "dns", "http", "ssh"):  # every benign generator's traffic is there, labelled benign
        assert ((benign["dst_ip"] == plan.host("hub").ip) & (benign["dst_port"] == services[svc])).any(), svc
    assert not (benign["src_ip"] == plan.host("intruder").ip).any()
    # the laptop's correct SSH logins reach the same port hydra attacked, and stay benign
    laptop_ssh = benign[(benign["src_ip"] == plan.host("laptop").ip) & (benign["dst_port"] == services["ssh"])]
    assert len(laptop_ssh) >= 1

    # the labels in truth.json / labels.csv are the ones label_flows gives on the metered capture
    relabelled = label_flows(flows.drop(columns=["label", "attack_type", "technique_id", "attack_id"]), truth)
    assert list(relabelled["label"]) == list(flows["label"])
    assert len(truth.flows) == len(flows) == len(pd.read_csv(out / "labels.csv"))
    assert truth.summary["attack_flows"] == len(attack)

    prefix = str(truth.capture["namespace"]).removesuffix("-gw")  # nothing of this run is left behind
    assert prefix.startswith("tml") and not [n for n in _lab_namespaces() if n.startswith(prefix)]
    assert not [n for n in _etc_netns() if n.startswith(prefix)]
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
    assert str(out / "capture.pcap") not in procs  # tcpdump is gone


def test_lab_run_refuses_to_overwrite_and_rejects_bad_scenarios(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("trustmesh"))
    (tmp_path / "truth.json").write_text("{}")
    done = subprocess.run([exe, "lab", "run", "port-scan", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "already holds a lab run" in done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nhosts:\n  - {name: a, role: server, services: [telnet]}\n")
    done = subprocess.run([exe, "lab", "run", str(bad), "--out", str(tmp_path / "o")], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "bad.yaml:3: hosts[0].services" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()


def test_interrupted_run_leaves_nothing_behind(tmp_path: Path) -> None:
    import signal
    import time

    scen = tmp_path / "itest.yaml"
    scen.write_text(SCENARIO.replace("duration: 24", "duration: 60"))
    reason = lab_unavailable(plan_scenario(load_scenario(scen), 8))
    if reason is not None:
        pytest.skip(reason)
    exe = str(Path(sys.executable).with_name("trustmesh"))
    out = tmp_path / "run"
    proc = subprocess.Popen([exe, "lab", "run", str(scen), "--seed", "8", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "capture.pcap").exists() and time.monotonic() < deadline:  # mid-run: tcpdump writing
            time.sleep(0.2)
        assert (out / "capture.pcap").exists()
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)  # a second signal (a killed process group) must not cut cleanup short
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    prefix = re.search(r"namespaces (tml[0-9a-f]+)-\*", err)
    assert prefix is not None, err
    assert not [n for n in _lab_namespaces() if n.startswith(prefix.group(1))]
    assert not [n for n in _etc_netns() if n.startswith(prefix.group(1))]
    assert not (out / "capture.pcap").exists() and not (out / "truth.json").exists()
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
    assert str(tmp_path) not in procs  # no service, generator or tcpdump of this run survives
