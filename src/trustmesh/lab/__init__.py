"""The labelled traffic lab: scenarios, namespaces, real services and attack tools, captures, ground truth.

``trustmesh lab run SCENARIO --out DIR --seed N`` builds a site of network namespaces, runs real
services (OpenSSH, http.server, mosquitto, dnsmasq, iperf3), benign generators and attacks by real tools
(nmap, hping3, hydra, curl, ...), captures the site with tcpdump and writes ``capture.pcap`` plus
``truth.json`` (hosts, attacks with measured time windows, per-flow labels). Addresses, host counts,
ports, timing and tool options vary with the seed. See docs/lab.md.
"""

from __future__ import annotations

from trustmesh.lab._plan import TECHNIQUES, LabPlan, PlannedAttack, PlannedBenign, PlannedHost, plan_scenario
from trustmesh.lab._run import LabResult, lab_unavailable, required_tools, run_plan
from trustmesh.lab._scenario import (
    ATTACK_KINDS,
    ATTACK_VARIANTS,
    BENIGN_KINDS,
    SERVICE_KINDS,
    AttackSpec,
    BenignSpec,
    HostSpec,
    Scenario,
    list_scenarios,
    load_scenario,
    parse_scenario,
)
from trustmesh.lab._truth import (
    TRUTH_FORMAT,
    GroundTruth,
    TruthAttack,
    TruthBenign,
    TruthHost,
    label_flows,
    load_truth,
    match_attacks,
)

__all__ = [
    "ATTACK_KINDS",
    "ATTACK_VARIANTS",
    "AttackSpec",
    "BENIGN_KINDS",
    "BenignSpec",
    "GroundTruth",
    "HostSpec",
    "LabPlan",
    "LabResult",
    "PlannedAttack",
    "PlannedBenign",
    "PlannedHost",
    "SERVICE_KINDS",
    "Scenario",
    "TECHNIQUES",
    "TRUTH_FORMAT",
    "TruthAttack",
    "TruthBenign",
    "TruthHost",
    "lab_unavailable",
    "label_flows",
    "list_scenarios",
    "load_scenario",
    "load_truth",
    "match_attacks",
    "parse_scenario",
    "plan_scenario",
    "required_tools",
    "run_plan",
]
