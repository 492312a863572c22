"""Run a lab plan: build the site, start services and generators, run the attacks, capture, label.

The order: namespaces and services come up and are probed; tcpdump starts on the gateway's bridge;
benign generators start at their offsets; each attack's real tool runs at its offset under its own
process group with a hard timeout, and its ``start``/``end`` are measured around that process. After
``duration`` (and the last attack) generators stop, tcpdump is stopped and flushed, the namespaces go,
and the capture is metered with nfstream (``trustmesh.flows.read_pcap``) and labelled from the truth.
Every namespace, process, /etc/netns file and temp file is removed on success, error and Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trustmesh._procs import stop_group
from trustmesh.errors import EnvironmentProblem, InputError
from trustmesh.lab._net import LabNetwork
from trustmesh.lab._plan import LabPlan, PlannedAttack, PlannedBenign
from trustmesh.lab._services import start_services, wait_ready
from trustmesh.lab._truth import TRUTH_FORMAT, GroundTruth, label_flows, match_attacks
from trustmesh.testbed import netns_unavailable

__all__ = ["LabResult", "lab_unavailable", "required_tools", "run_plan"]

log = logging.getLogger(__name__)

_AGENT = Path(__file__).with_name("_agent.py")
_SUB = {"brute-force": "T1110.001", "lateral-movement/login": "T1021.004"}


def required_tools(plan: LabPlan) -> list[str]:
    """Return the system tools ``plan`` needs."""
    tools = {"ip", "tcpdump", "sysctl"}
    svc = {k for h in plan.hosts for k in h.services}
    if "ssh" in svc:
        tools |= {"/usr/sbin/sshd", "ssh-keygen", "openssl"}
    if "mqtt" in svc:
        tools |= {"mosquitto", "mosquitto_passwd"}
    if "dns" in svc:
        tools.add("dnsmasq")
    if "iperf3" in svc:
        tools.add("iperf3")
    for b in plan.benign:
        if b.kind == "ssh-logins" or b.tool == "sshpass+scp":
            tools |= {"sshpass", "ssh", "scp"}
    for a in plan.attacks:
        if a.argv[0] not in ("{python}",):
            tools.add(a.argv[0] if a.argv[0] != "sh" else "curl")
        if a.tool == "sshpass+ssh":
            tools |= {"sshpass", "ssh"}
    return sorted(tools)


def lab_unavailable(plan: LabPlan | None = None) -> str | None:
    """Return why the lab cannot run here (not root, a tool missing), or None."""
    if os.geteuid() != 0:
        return "the lab needs root to create network namespaces (run as root, as CI does)"
    for tool in required_tools(plan) if plan is not None else ["ip", "tcpdump", "nmap", "hping3", "hydra"]:
        if shutil.which(tool) is None and not Path(tool).exists():
            return f"{tool!r} not found (apt-get install the lab's tools: see docs/lab.md)"
    return netns_unavailable(tools=("ip",))  # can this machine actually make a namespace?


@dataclass
class _Running:
    item: PlannedAttack | PlannedBenign
    proc: subprocess.Popen[bytes]
    start: float
    deadline: float
    end: float | None = None
    timed_out: bool = False
    log: Any = None


@dataclass(frozen=True, slots=True)
class LabResult:
    """Where a run wrote its files, and its ground truth."""

    out: Path
    truth: GroundTruth
    wall_s: float
    flows: int = 0
    attack_flows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _argv(a: PlannedAttack, work: Path) -> list[str]:
    subs = {"{python}": sys.executable, "{agent}": str(_AGENT)}
    return [subs.get(x, x).replace("{work}", str(work)) for x in a.argv]


def _spawn_agent(net: LabNetwork, plan: LabPlan, ns: str, argv: list[str], until: float, work: Path,
                 stderr: Any) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(work),
           "TM_LAB_PASSWORD": plan.password, "TM_LAB_UNTIL": f"{until:.3f}", "LC_ALL": "C.UTF-8"}
    return net.spawn(ns, argv, cwd=str(work), env=env, stderr=stderr)


def _ns_of(net: LabNetwork, plan: LabPlan, ip: str) -> str:
    return net.ns[next(h.name for h in plan.hosts if h.ip == ip)]


def _tcpdump_stats(text: str) -> dict[str, int]:
    stats = {}
    for key in ("captured", "received by filter", "dropped by kernel"):
        m = re.search(rf"(\d+) packets? {key}", text)
        if m:
            stats[key.replace(" ", "_")] = int(m.group(1))
    return stats


def run_plan(plan: LabPlan, out: Path, *, force: bool = False, progress: Any = None) -> LabResult:
    """Execute ``plan``, writing ``capture.pcap``, ``truth.json``, ``flows.parquet`` and ``labels.csv``."""
    wall0 = time.monotonic()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out must be a folder")
    if not force and any((out / n).exists() for n in ("capture.pcap", "truth.json")):
        raise InputError(f"{out}: already holds a lab run (capture.pcap/truth.json); use --force to replace it")
    reason = lab_unavailable(plan)
    if reason is not None:
        raise EnvironmentProblem(f"lab: {reason}")
    out.mkdir(parents=True, exist_ok=True)
    for n in ("capture.pcap", "truth.json", "flows.parquet", "labels.csv"):
        (out / n).unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix="trustmesh-lab-"))
    work.chmod(0o755)  # daemons that drop privileges (mosquitto) read their files from here
    pcap = out / "capture.pcap"
    net = LabNetwork(plan)
    if progress is not None:
        progress(f"namespaces {net.gw.removesuffix('-gw')}-*")
    ok = False
    try:
        net.up()
        for a in plan.attacks:
            for name, text in a.files.items():
                (work / name).write_text(text, encoding="utf-8")
                (work / name).chmod(0o644)
        wait_ready(net, start_services(net, plan, work))
        time.sleep(0.5)  # UDP services (dnsmasq) have no handshake to probe
        tcpdump_err = (work / "tcpdump.err").open("w+b")
        tcpdump = net.spawn(net.gw, ["tcpdump", "-i", "br0", "-Q", "in", "-n", "-U", "-s", "0", "-Z", "root",
                                     "-w", str(pcap)], stderr=tcpdump_err.fileno())
        deadline = time.monotonic() + 10
        while b"listening on" not in (work / "tcpdump.err").read_bytes():
            if tcpdump.poll() is not None or time.monotonic() > deadline:
                raise EnvironmentProblem(f"lab: tcpdump did not start: {(work / 'tcpdump.err').read_text().strip()}")
            time.sleep(0.05)
        time.sleep(0.3)
        t0 = time.time()
        done_attacks, done_benign = _timeline(net, plan, work, t0, progress)
        time.sleep(1.5)  # let closing handshakes and the last replies reach the capture
        t_end = time.time()
        stop_group(tcpdump, timeout=10)
        tcpdump_err.seek(0)
        stats = _tcpdump_stats(tcpdump_err.read().decode(errors="replace"))
        tcpdump_err.close()
        net.close()
        truth = _truth(plan, t0, t_end, done_attacks, done_benign, stats, net)
        result = _label_and_write(out, truth, wall0)
        ok = True
        return result
    finally:
        # no signal may cut the cleanup short (a killed process group delivers SIGTERM more than once)
        masked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            net.close()
            shutil.rmtree(work, ignore_errors=True)
            if not ok:
                pcap.unlink(missing_ok=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, masked)


def _timeline(net: LabNetwork, plan: LabPlan, work: Path, t0: float, progress: Any
              ) -> tuple[list[_Running], list[_Running]]:
    events: list[tuple[float, PlannedAttack | PlannedBenign]] = sorted(
        [(b.start, b) for b in plan.benign] + [(a.at, a) for a in plan.attacks], key=lambda e: (e[0], e[1].id))
    end_benign = t0 + plan.duration
    running: list[_Running] = []
    attacks: list[_Running] = []
    benign: list[_Running] = []
    i = 0
    while True:
        now = time.time()
        while i < len(events) and t0 + events[i][0] <= now:
            item = events[i][1]
            i += 1
            ns = _ns_of(net, plan, item.attacker if isinstance(item, PlannedAttack) else item.host)
            if isinstance(item, PlannedAttack):
                until = time.time() + item.timeout
                errlog = (work / f"{item.id}.err").open("wb")
                start = time.time()
                proc = _spawn_agent(net, plan, ns, _argv(item, work), until, work, errlog.fileno())
                r = _Running(item, proc, start, until, log=errlog)
                attacks.append(r)
                log.info("attack %s %s started: %s", item.id, item.kind, " ".join(item.argv))
                if progress is not None:
                    progress(f"{now - t0:6.1f}s attack {item.id} {item.kind} ({item.variant}) started")
            else:
                argv = [sys.executable, str(_AGENT), item.agent, json.dumps(item.args, sort_keys=True)]
                start = time.time()
                proc = _spawn_agent(net, plan, ns, argv, end_benign, work, subprocess.DEVNULL)
                r = _Running(item, proc, start, end_benign + 5)
                benign.append(r)
            running.append(r)
        for r in running:
            if r.end is None:
                if r.proc.poll() is not None:
                    r.end = time.time()
                elif time.time() > r.deadline:
                    r.timed_out = True
                    stop_group(r.proc, timeout=3)
                    r.end = time.time()
                if r.end is not None and isinstance(r.item, PlannedAttack) and progress is not None:
                    progress(f"{r.end - t0:6.1f}s attack {r.item.id} {r.item.kind} ended "
                             f"(exit {r.proc.returncode}{', timed out' if r.timed_out else ''})")
        pending_attacks = i < len(events) and any(isinstance(e[1], PlannedAttack) for e in events[i:])
        if time.time() >= end_benign and not pending_attacks and all(r.end is not None for r in attacks):
            break
        time.sleep(0.05)
    for r in benign:
        if r.end is None:
            stop_group(r.proc, timeout=5)
            r.end = time.time()
    for r in attacks:
        if r.log is not None:
            r.log.close()
    return attacks, benign


def _truth(plan: LabPlan, t0: float, t_end: float, attacks: list[_Running], benign: list[_Running],
           stats: dict[str, int], net: LabNetwork) -> GroundTruth:
    hosts = [{"name": h.name, "ip": h.ip, "role": h.role, "zone": h.zone, "mac": h.mac, "services": h.services}
             for h in plan.hosts]
    hosts += [{"name": "gateway", "ip": plan.lan_gateway, "role": "gateway", "zone": "lan"},
              {"name": "gateway-outside", "ip": plan.outside_gateway, "role": "gateway", "zone": "outside"}]
    t_attacks = []
    for r in attacks:
        a = r.item
        assert isinstance(a, PlannedAttack) and r.end is not None
        sub = _SUB.get(f"{a.kind}/{a.variant}", _SUB.get(a.kind, ""))
        t_attacks.append({
            "id": a.id, "kind": a.kind, "variant": a.variant, "tool": a.tool, "argv": a.argv,
            "technique_id": a.technique_id, "technique_name": a.technique_name, "sub_technique": sub,
            "attacker": a.attacker, "victims": a.victims, "targets": a.targets, "protos": a.protos,
            "ports": a.ports, "start": round(r.start, 6), "end": round(r.end, 6),
            "exit_code": r.proc.returncode, "timed_out": r.timed_out, "params": a.params})
    t_benign = []
    for r in benign:
        b = r.item
        assert isinstance(b, PlannedBenign) and r.end is not None
        params = {k: v for k, v in b.args.items() if k not in ("server", "port", "seed")}
        t_benign.append({"id": b.id, "kind": b.kind, "tool": b.tool, "host": b.host, "server": b.server,
                         "port": b.port, "start": round(r.start, 6), "end": round(r.end, 6), "params": params})
    doc = {"format": TRUTH_FORMAT, "scenario": plan.scenario, "seed": plan.seed, "start": round(t0, 6),
           "end": round(t_end, 6), "lan": plan.lan, "outside": plan.outside,
           "gateway": {"lan": plan.lan_gateway, "outside": plan.outside_gateway}, "domain": plan.domain,
           "capture": {"file": "capture.pcap", "tool": "tcpdump", "interface": "br0 (gateway bridge, inbound)",
                       "namespace": net.gw, **stats},
           "hosts": hosts, "attacks": t_attacks, "benign": t_benign}
    return GroundTruth.model_validate(doc)


def _label_and_write(out: Path, truth: GroundTruth, wall0: float) -> LabResult:
    from trustmesh.flows import read_pcap

    flows = read_pcap(out / "capture.pcap")
    labelled = label_flows(flows, truth)
    ids = match_attacks(flows, truth)
    labelled["attack_id"] = ids.to_numpy()
    cols = ["uid", "ts", "src_ip", "src_port", "dst_ip", "dst_port", "proto", "label", "attack_type",
            "technique_id", "attack_id"]
    labelled.to_parquet(out / "flows.parquet", index=False)
    labelled[cols].to_csv(out / "labels.csv", index=False)
    by_attack = {a.id: int((ids == a.id).sum()) for a in truth.attacks}
    summary = {"flows": len(flows), "attack_flows": int((labelled["label"] == "attack").sum()),
               "benign_flows": int((labelled["label"] == "benign").sum()), "flows_by_attack": by_attack,
               "flows_by_type": {str(k): int(v) for k, v in labelled["attack_type"].value_counts().items()},
               "benign_hosts": sorted({h.ip for h in truth.hosts if h.role not in ("attacker", "gateway")}),
               "attackers": truth.attackers, "labelled_by": "trustmesh.lab.label_flows over trustmesh.flows.read_pcap"}
    rows = labelled[cols].to_dict(orient="records")
    truth = truth.model_copy(update={"summary": summary, "flows": rows})
    tmp = out / "truth.json.tmp"
    tmp.write_text(truth.model_dump_json(indent=1), encoding="utf-8")
    tmp.replace(out / "truth.json")
    return LabResult(out, truth, round(time.monotonic() - wall0, 2), len(flows), int((ids != "").sum()))
