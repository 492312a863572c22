"""nft actions apply per target: one unparsable address no longer leaves the rest of a batch unblocked."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from trustmesh.records import Incident, IncidentId
from trustmesh.respond import ActionRequest, NftablesAction

INC = Incident(incident_id=IncidentId("inc-pt"), version=1, first_seen=0.0, last_seen=1.0, severity=3,
               confidence=0.9, alert_ids=("a1",), source_ips=("10.203.9.9",), destination_ips=("10.0.0.5",))


def _req(targets: tuple[str, ...], **params: object) -> ActionRequest:
    return ActionRequest(action_id="act-pt", incident=INC, action="nftables", targets=targets,
                         params=dict(params), ttl_s=60, playbook="pb", step=0)


def test_dry_run_reports_each_target_and_keeps_the_good_ones() -> None:
    out = NftablesAction(netns="gw0").apply(_req(("10.203.9.9", "10.0.0.1 } ; flush ruleset", "fd00::7")),
                                            enforce=False)
    assert out.status == "dry_run"
    assert out.targets == ("10.203.9.9", "fd00::7")
    assert [(t, s) for t, s, _ in out.per_target] == [("10.203.9.9", "dry_run"), ("fd00::7", "dry_run"),
                                                     ("10.0.0.1 } ; flush ruleset", "failed")]
    assert len(out.commands) == 2 and "not an IP address" in out.detail


def test_only_bad_targets_is_a_failure_naming_them() -> None:
    out = NftablesAction().apply(_req(("nope", "999.1.1.1")), enforce=False)
    assert out.status == "failed" and "'nope'" in out.detail and "'999.1.1.1'" in out.detail
    assert [s for _, s, _ in out.per_target] == ["failed", "failed"]


@pytest.fixture()
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    if shutil.which("ip") is None or shutil.which("nft") is None:
        pytest.skip("needs ip(8) and nft(8) (Debian iproute2, nftables)")
    name = f"tm-pt-{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {done.stderr.strip()}")
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_enforced_batch_with_one_unparsable_address_blocks_every_other_target(netns: str) -> None:
    action = NftablesAction(table="tmpt", set="blocklist", netns=netns)
    out = action.apply(_req(("10.203.9.9", "10.203.9.300", "10.203.9.10", "fd00::9")), enforce=True)
    assert out.status == "applied", out.detail
    assert set(out.targets) == {"10.203.9.9", "10.203.9.10", "fd00::9"}
    per = {t: s for t, s, _ in out.per_target}
    assert per == {"10.203.9.9": "applied", "10.203.9.10": "applied", "fd00::9": "applied",
                   "10.203.9.300": "failed"}
    listed = " ".join(action.list_elements())
    assert "10.203.9.9" in listed and "10.203.9.10" in listed and "fd00::9" in listed
    back = action.rollback(out.state, enforce=True)
    assert back.status == "rolled_back"
    assert "10.203.9.9" not in " ".join(action.list_elements())
