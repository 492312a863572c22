"""The whole loop on a real network: a gateway running ``trustmesh run`` on its interface detects a
port scan and a connection flood, drops the attacker with nftables inside the gateway namespace,
lets the device's benign traffic through, lets the TTL expire the block, and records it all.

Needs root, iproute2 and nftables (CI installs them); skipped with the reason otherwise. Every
address lives inside namespaces this test creates; the host's ruleset is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netns import ATK_IP, DEV_IP, GW_ATK_IP, GW_DEV_IP, PEER_IP, Testbed, testbed  # noqa: F401
from trustmesh._procs import stop_group
from trustmesh.ledger import Ledger, audit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TTL_S = 8

PLAYBOOK = f"""
version: 1
playbooks:
  - name: contain-attacker
    description: Drop any source the detector is confident about, briefly (test TTL).
    match:
      min_confidence: 0.5
    actions:
      - type: nftables
        params: {{target: source, verdict: drop}}
        ttl_s: {TTL_S}
"""


def _config(tmp_path: Path, model: Path | None, data_dir: Path) -> Path:
    (tmp_path / "playbook.yaml").write_text(PLAYBOOK, encoding="utf-8")
    model_line = f'model = "{model}"\n' if model else f'data_dir = "{data_dir}"\n'
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        "[pipeline]\n" + model_line +
        'origin = "testbed.example/gw"\nsources = ["iface:to-atk"]\nbatch_size = 256\nlive_idle_timeout = 1\n'
        "[response]\n"
        'playbooks = ["playbook.yaml"]\nenforce = true\n'
        "[guards]\n"
        f'allowlist = ["{GW_ATK_IP}", "{GW_DEV_IP}", "{DEV_IP}"]\nmin_confidence = 0.5\n'
        "max_blocks_per_minute = 100\n", encoding="utf-8")
    return cfg


def _blocked(bed: Testbed, address: str) -> bool:
    out = bed.exec(bed.gw, "nft", "list", "table", "inet", "trustmesh", check=False).stdout
    return address in out


def _explain(bed: Testbed, ledger_dir: Path, tmp_path: Path) -> str:
    """Say why the attacker is not blocked: what the gateway recorded and what nft holds."""
    lines = ["attacker was not blocked"]
    try:
        with Ledger.open(ledger_dir, read_only=True) as ledger:
            for i in range(ledger.size):
                e = ledger.entry(i)
                if e.kind in {"decision", "action_result", "pipeline.error"}:
                    lines.append(f"{i} {e.kind} {e.payload}")
                elif e.kind == "alert" and len(lines) < 5:
                    lines.append(f"{i} alert {e.payload['source']['ip']} -> {e.payload['destination'].get('port')}")
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        lines.append(f"(ledger unreadable: {exc})")
    lines.append(bed.exec(bed.gw, "nft", "list", "ruleset", check=False).stdout[-1500:])
    lines.append((tmp_path / "gw.log").read_text()[-2000:])
    return "\n".join(lines)


def test_gateway_contains_scanner_and_keeps_benign_traffic(testbed: Testbed, tmp_path: Path,  # noqa: F811
                                                           policy_model: Path, data_dir: Path) -> None:
    bed = testbed
    bed.serve(bed.dev, DEV_IP, 8080)  # the IoT device's service
    bed.serve(bed.atk, PEER_IP, 9000)  # a benign server the device talks to, on the attacker's segment
    assert bed.connect(bed.dev, PEER_IP, 9000, source=DEV_IP) == "OK"
    assert bed.connect(bed.atk, DEV_IP, 8080, source=ATK_IP) == "OK"

    cfg = _config(tmp_path, policy_model, data_dir)
    exe = Path(sys.executable).with_name("trustmesh")
    log = (tmp_path / "gw.log").open("w")
    gw = subprocess.Popen(["ip", "netns", "exec", bed.gw, str(exe), "run", "--config", str(cfg), "--json"],
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    attack: subprocess.Popen[bytes] | None = None
    try:
        ledger_dir = tmp_path / "trustmesh-ledger"
        assert bed.wait_for(lambda: (ledger_dir / "ledger.sqlite").exists(), timeout=120), "gateway did not start"
        time.sleep(3)  # let nfstream open the capture
        scan_started = time.monotonic()
        # a real TCP connect port scan, then a connection flood against the device's service, running
        # in the background while we watch the gateway's ruleset
        attack = subprocess.Popen(
            ["ip", "netns", "exec", bed.atk, sys.executable, "-c",
             "import socket, time\n"
             "for port in list(range(1, 400)) + [8080] * 300:\n"
             "    s = socket.socket(); s.settimeout(0.2)\n"
             f"    s.bind(('{ATK_IP}', 0))\n"
             f"    try: s.connect(('{DEV_IP}', port))\n"
             "    except OSError: pass\n"
             "    s.close()\n"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert bed.wait_for(lambda: _blocked(bed, ATK_IP), timeout=60), _explain(bed, ledger_dir, tmp_path)
        blocked_after = time.monotonic() - scan_started

        assert bed.connect(bed.atk, DEV_IP, 8080, source=ATK_IP, timeout=1.0).startswith("FAIL")
        assert bed.connect(bed.dev, PEER_IP, 9000, source=DEV_IP) == "OK", "benign traffic must still flow"
        assert not _blocked(bed, DEV_IP) and not _blocked(bed, PEER_IP)
        # stop the attack: otherwise its remaining connects after the TTL would (rightly) be blocked again
        attack.kill()
        attack.wait()

        # the kernel removes the element when its TTL ends
        assert bed.wait_for(lambda: not _blocked(bed, ATK_IP), timeout=TTL_S + 15), "TTL did not expire the block"
        assert bed.connect(bed.atk, DEV_IP, 8080, source=ATK_IP) == "OK"
    finally:
        if attack is not None:
            attack.kill()
            attack.wait()
        stop_group(gw, timeout=60)
        log.close()
    assert gw.returncode == 130, (tmp_path / "gw.log").read_text()[-3000:]
    audit(ledger_dir)
    with Ledger.open(ledger_dir, read_only=True) as ledger:
        entries = [ledger.entry(i) for i in range(ledger.size)]
    applied = [e for e in entries if e.kind == "action_result" and e.payload["status"] == "applied"]
    assert applied and ATK_IP in applied[0].payload["targets"]
    assert any(e.kind == "alert" and e.payload["source"]["ip"] == ATK_IP for e in entries)
    assert blocked_after < 120
