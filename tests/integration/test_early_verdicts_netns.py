"""Early verdicts end to end: attacks whose probes end without a RST or FIN are still contained fast.

A UDP scan (closed ports answer with ICMP, the others not at all), a SYN flood from ever new source
ports and a SYN scan of filtered ports give nfstream no RST or FIN to export a flow at; without the
fan-out early-export rule (``flows/_pcap.py``, ``_FanOut``) each probe would wait for the idle
timeout. The set-up is the containment bench's (``trustmesh.testbed.measure_containment``): the
gateway namespace runs ``trustmesh run --enforce`` with the default pcap model on its attacker-facing
interface, the device sends telemetry and a benign client on the attackers' segment uses the
device's service all along; two attackers, one after the other from fresh addresses, run the attack.
Every address that ever entered the gateway's nft drop set is checked. The attacks are bounded
(each is killed once its address is blocked, or after ``wait_s``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trustmesh.testbed import (
    BENIGN_IP,
    DEV_IP,
    GW_ATK_IP,
    GW_DEV_IP,
    PEER_IP,
    measure_containment,
    netns_unavailable,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ATTACKERS = ["10.203.2.100", "10.203.2.101"]
BOUND_S = 10.0  # a sane floor for "contained", not a timing target (the bench measures those)
TOOLS = {"nmap-udp": "nmap", "syn-flood": "hping3", "filtered": "nmap"}


@pytest.mark.parametrize("attack", ["nmap-udp", "syn-flood", "filtered"])
def test_each_attacker_is_in_the_drop_set_within_the_bound_and_no_benign_host(
        attack: str, policy_model: Path, tmp_path: Path) -> None:
    # Arrange: root, nftables and the attack's tool (CI provides them; a skip there is a failure)
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which(TOOLS[attack]) is None:
        pytest.skip(f"attack {attack} needs {TOOLS[attack]} (apt-get install -y {TOOLS[attack]})")
    work = tmp_path / "ttc"

    # Act: two attackers in sequence against one enforcing gateway
    doc = measure_containment(str(policy_model), len(ATTACKERS), str(work), wait_s=BOUND_S, attack=attack)

    # Assert: each attacker entered the drop set within the bound (its probes then fail), and only
    # attackers ever did: not the benign client, the telemetry peer, the device or the gateway
    log = (work / "gw.log").read_text(encoding="utf-8", errors="replace")[-3000:]
    runs = doc["per_run"]
    assert isinstance(runs, list) and [r["attacker"] for r in runs] == ATTACKERS
    for row in runs:
        assert row["drop_active_s"] is not None, (attack, runs, log)
        assert 0 < row["drop_active_s"] < BOUND_S, (attack, runs)
        assert row["probes_failing_s"] is not None, (attack, runs)  # cut off: its connects go unanswered
    assert doc["contained"] == len(ATTACKERS)
    assert doc["benign_blocked"] == [], (attack, doc["blocked_addresses"])
    blocked = doc["blocked_addresses"]
    assert isinstance(blocked, list) and set(blocked) == set(ATTACKERS), (attack, blocked)
    assert {BENIGN_IP, PEER_IP, DEV_IP, GW_ATK_IP, GW_DEV_IP}.isdisjoint(blocked)
