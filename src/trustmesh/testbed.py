"""A three-namespace test network (device, attacker, gateway) built from veth pairs.

::

    [DEV] eth0 10.203.1.2 ── to-dev 10.203.1.1 [GW] 10.203.2.1 to-atk ── eth0 10.203.2.2 [ATK]
                                                      (forwards)                   + 10.203.2.3 (benign peer)

Every command runs inside a namespace (``ip -n NS`` / ``ip netns exec NS``); the host's own
interfaces and ruleset are never touched, and every address lives only inside these namespaces.
Namespace names get a random suffix so parallel runs do not collide. Used by the integration tests
and by ``trustmesh bench respond --containment-runs N`` (needs root, iproute2 and nftables).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

from trustmesh._procs import stop_group

__all__ = ["ATK_IP", "ATTACKS", "BENIGN_IP", "DEV_IP", "GW_ATK_IP", "GW_DEV_IP", "PEER_IP", "Testbed", "netns_unavailable"]

DEV_IP, GW_DEV_IP = "10.203.1.2", "10.203.1.1"
ATK_IP, GW_ATK_IP = "10.203.2.2", "10.203.2.1"
PEER_IP = "10.203.2.3"  # a benign host on the attacker's segment the device talks to

_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(b"ok")
    finally:
        c.close()
"""

_CLIENT = r"""
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[4]))
if sys.argv[3]:
    s.bind((sys.argv[3], 0))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("OK" if s.recv(2) == b"ok" else "BADREPLY")
except ConnectionRefusedError:
    print("REFUSED")
except OSError as e:
    print("FAIL", type(e).__name__)
"""


def netns_unavailable(tools: tuple[str, ...] = ("ip", "nft")) -> str | None:
    """Return why the testbed cannot run here (not root, tools missing, netns refused), or None.

    ``tools`` are the programs the caller needs; nft is also probed inside a namespace when listed.
    """
    if os.geteuid() != 0:
        return "needs root to create network namespaces (run as root, as CI does)"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool!r} not found (apt-get install -y iproute2 nftables)"
    probe = f"tmprobe{secrets.token_hex(4)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    try:
        if "nft" not in tools:
            return None
        nft = subprocess.run(["ip", "netns", "exec", probe, "nft", "list", "ruleset"], capture_output=True,
                             text=True, check=False)
        if nft.returncode != 0:
            return f"nft does not work inside a namespace here: {nft.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


class Testbed:
    """Create the device / attacker / gateway namespaces; ``close`` removes them."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, prefix: str = "tm") -> None:
        suffix = secrets.token_hex(4)
        self.dev, self.atk, self.gw = (f"{prefix}-{role}-{suffix}" for role in ("dev", "atk", "gw"))
        self._procs: list[subprocess.Popen[str]] = []
        self._made: list[str] = []

    # -- plumbing ----------------------------------------------------------------------------
    @staticmethod
    def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done

    def exec(self, ns: str, *argv: str, check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside namespace ``ns``."""
        done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=False,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"[{ns}] {' '.join(argv)} failed: {done.stderr.strip()}")
        return done

    def up(self) -> Testbed:
        """Build the network; on any failure tear down what was made and re-raise."""
        try:
            for ns in (self.gw, self.dev, self.atk):
                self._sh("ip", "netns", "add", ns)
                self._made.append(ns)
                self._sh("ip", "-n", ns, "link", "set", "lo", "up")
            # veth pairs are created inside GW with the peer moved straight into DEV/ATK: never on the host
            self._sh("ip", "-n", self.gw, "link", "add", "to-dev", "type", "veth", "peer", "name", "eth0",
                     "netns", self.dev)
            self._sh("ip", "-n", self.gw, "link", "add", "to-atk", "type", "veth", "peer", "name", "eth0",
                     "netns", self.atk)
            for ns, dev, cidr in ((self.gw, "to-dev", f"{GW_DEV_IP}/24"), (self.gw, "to-atk",
                                                                           f"{GW_ATK_IP}/24"),
                                  (self.dev, "eth0", f"{DEV_IP}/24"), (self.atk, "eth0", f"{ATK_IP}/24"),
                                  (self.atk, "eth0", f"{PEER_IP}/24")):
                self._sh("ip", "-n", ns, "addr", "add", cidr, "dev", dev)
                self._sh("ip", "-n", ns, "link", "set", dev, "up")
            self._sh("ip", "-n", self.dev, "route", "add", "default", "via", GW_DEV_IP)
            self._sh("ip", "-n", self.atk, "route", "add", "default", "via", GW_ATK_IP)
            # /proc/sys/net is per network namespace: this enables forwarding in GW only
            self.exec(self.gw, sys.executable, "-c",
                      "open('/proc/sys/net/ipv4/ip_forward','w').write('1')")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop servers and delete the namespaces (their veths go with them)."""
        for proc in self._procs:
            proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        self._procs.clear()
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._made.clear()

    def __enter__(self) -> Testbed:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- traffic -----------------------------------------------------------------------------
    def serve(self, ns: str, addr: str, port: int) -> None:
        """Start a TCP server in ``ns`` that answers ``ok`` to every connection."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", _SERVER, addr, str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"TCP server in {ns} on {addr}:{port} did not start")

    def connect(self, ns: str, addr: str, port: int, *, source: str = "", timeout: float = 1.0) -> str:
        """TCP-connect from ``ns``; return ``OK``, ``REFUSED`` or ``FAIL <error>``."""
        done = self.exec(ns, sys.executable, "-c", _CLIENT, addr, str(port), source, str(timeout),
                         timeout=timeout + 20)
        return done.stdout.strip()

    def wait_for(self, predicate: object, timeout: float, interval: float = 0.25) -> bool:
        """Poll ``predicate()`` until true or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return True
            time.sleep(interval)
        return bool(predicate())  # type: ignore[operator]


_PROBE_ATTACK = r"""
import socket, sys, time
src, dst = sys.argv[1], sys.argv[2]
print(f"{time.monotonic():.6f}", flush=True)  # the attack's first packet is sent right after this
for port in range(1, 61):
    s = socket.socket(); s.settimeout(0.3); s.bind((src, 0))
    try:
        s.connect((dst, port))
    except OSError:
        pass
    s.close()
# keep probing (bounded): a closed port answers RST at once; once the drop is active a probe times out
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    s = socket.socket(); s.settimeout(0.2); s.bind((src, 0))
    sent = time.monotonic()
    try:
        s.connect((dst, 1))
    except socket.timeout:
        print(f"{sent:.6f}", flush=True)  # this probe got no answer: the attacker is cut off
        break
    except OSError:
        pass
    finally:
        s.close()
    time.sleep(0.02)
"""

_NMAP_ATTACK = r"""
import subprocess, sys, time
src, dst = sys.argv[1], sys.argv[2]
print(f"{time.monotonic():.6f}", flush=True)  # nmap's first probe follows within its start-up
# a SYN scan of the 1,000 most common ports from the attacker's address (bounded)
subprocess.run(["nmap", "-sS", "-Pn", "-n", "-T4", "--top-ports", "1000", "-S", src, "-e", "eth0", dst],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
"""

# Probes for the attacks that do not probe themselves (nmap-udp, syn-flood, filtered): a thread of the
# attack script connects from the attacker's address to the device's open service every 50 ms and
# prints the send time of the first connect that got no answer within 0.25 s (the attacker is cut
# off), or "-" after 15 s without one, so the bench's read of that line is bounded. Its connections
# are answered, so they never count as failed attempts of the attacker (``_FanOut``).
_PROBER = r"""
import socket, threading
def _probe(src, dst):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        s = socket.socket(); s.settimeout(0.25); s.bind((src, 0))
        sent = time.monotonic()
        try:
            s.connect((dst, 8080))
        except socket.timeout:
            print(f"{sent:.6f}", flush=True)
            return
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.05)
    print("-", flush=True)
_prober = threading.Thread(target=_probe, args=(src, dst), daemon=True)
_prober.start()
"""
_PROBER_END = "\n_prober.join()  # the attack tool may end first (hping3 after ~1 s): the probes go on\n"

_FILTERED_ATTACK = _NMAP_ATTACK.replace(
    'print(f"{time.monotonic():.6f}", flush=True)  # nmap\'s first probe follows within its start-up\n',
    'print(f"{time.monotonic():.6f}", flush=True)\n' + _PROBER) + _PROBER_END

_NMAP_UDP_ATTACK = r"""
import subprocess, sys, time
src, dst = sys.argv[1], sys.argv[2]
print(f"{time.monotonic():.6f}", flush=True)
""" + _PROBER + r"""
# a UDP scan of the 100 most common UDP ports (bounded: one retry, 40 s at most)
subprocess.run(["nmap", "-sU", "-Pn", "-n", "-T4", "--top-ports", "100", "--max-retries", "1",
                "--host-timeout", "40s", "-S", src, "-e", "eth0", dst],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
""" + _PROBER_END

_SYN_FLOOD_ATTACK = r"""
import subprocess, sys, time
src, dst = sys.argv[1], sys.argv[2]
print(f"{time.monotonic():.6f}", flush=True)
""" + _PROBER + r"""
# 2,000 SYNs to the device's open service, one every 0.5 ms, each from the next source port (a new flow)
subprocess.run(["hping3", "-S", "-p", "8080", "-c", "2000", "-i", "u500", "-a", src, "-I", "eth0", dst],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
""" + _PROBER_END

#: The attacks ``measure_containment`` can run (``connect``: the default; ``nmap-syn``, ``nmap-udp`` and
#: ``filtered`` need nmap, ``syn-flood`` hping3).
ATTACKS = ("connect", "nmap-syn", "nmap-udp", "syn-flood", "filtered")
_ATTACK_TOOLS = {"nmap-syn": "nmap", "nmap-udp": "nmap", "filtered": "nmap", "syn-flood": "hping3"}
# the victim's own firewall for ``filtered``: every TCP port but its service is dropped unanswered
_FILTER_RULES = ("add table inet tmvictim\n"
                 "add chain inet tmvictim input { type filter hook input priority 0; policy accept; }\n"
                 "add rule inet tmvictim input tcp dport != 8080 drop\n")

_BURN = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end: pass\n"


_HEARTBEAT = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while True:
    s.sendto(b"telemetry", (sys.argv[1], 9999))
    time.sleep(0.05)
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


_BENIGN_CLIENT = r"""
import socket, sys, time
# a benign host on the attacker's segment uses the device's service every 200 ms (bounded by the caller)
while True:
    s = socket.socket(); s.settimeout(1.0); s.bind((sys.argv[1], 0))
    try:
        s.connect((sys.argv[2], int(sys.argv[3])))
        s.recv(2)
    except OSError:
        pass
    finally:
        s.close()
    time.sleep(0.2)
"""


class _SetMonitor:
    """Follow ``nft monitor elements`` in a namespace; note when each address first entered a set.

    One long-running ``nft`` instead of polling ``nft list set`` (a process pair per poll, which on a
    2-core gateway competes with the very process being measured).
    """

    def __init__(self, ns: str, set_name: str) -> None:
        import re
        import threading

        self._re = re.compile(rf"^add element inet \S+ {re.escape(set_name)} \{{(?P<body>.*)\}}")
        self.first: dict[str, float] = {}
        self._cond = threading.Condition()
        self._proc = subprocess.Popen(["ip", "netns", "exec", ns, "nft", "monitor", "elements"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, name="tm-nft-monitor", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            at = time.monotonic()
            match = self._re.match(line.strip())
            if match is None:
                continue
            with self._cond:
                for part in match.group("body").split(","):
                    addr = part.strip().split(" ", 1)[0]
                    if addr:
                        self.first.setdefault(addr, at)
                self._cond.notify_all()

    def wait(self, addr: str, timeout: float) -> float | None:
        """Return when ``addr`` entered the set (monotonic), waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while addr not in self.first:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.first[addr]

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait(timeout=10)
        self._thread.join(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


BENIGN_IP = "10.203.2.4"  # a benign client on the attacker's segment (bench only)


def measure_containment(model: str, runs: int, workdir: str, *, ttl_s: int = 120,
                        idle_timeout: int = 1, active_timeout: int = 2, load: int = 0,
                        wait_s: float = 30.0, attack: str = "connect") -> dict[str, object]:
    """Time to contain ``runs`` scans, one after another against one gateway, each from a fresh address.

    Starts ``trustmesh run --enforce`` inside the gateway namespace on the attacker-facing interface
    (default guards: ``min_confidence`` 0.8), then for each run: a new address on the attacker's
    segment scans 60 ports of the device and keeps probing one port every 20 ms. The clock starts at
    the attack's first packet; two times are taken per run: until the address is in the gateway's
    nftables drop set (seen by ``nft monitor``), and until the attacker's probes fail (a probe the
    gateway drops gets no answer). ``runs`` attackers in sequence against the same gateway is the
    point: state the gateway keeps after its first block must not slow or stop later blocks.

    Benign traffic all along: the device sends a UDP telemetry datagram every 50 ms to a peer on the
    attacker's segment (nfstream's live meter advances its clock only when packets arrive), and a
    benign client on that segment uses a TCP service on the device every 200 ms. Every address that
    ever entered the drop set is checked against these benign hosts and the gateway's own addresses.
    With ``load`` K, K CPU burner processes run during the measurement (bounded to 600 s each).

    ``attack="nmap-syn"`` replaces the TCP connect scan with nmap's SYN scan of its 1,000 most
    common ports (other tool, timing and port set than the scan the gateway was tuned on); it does not
    probe afterwards, so only the drop time is taken. The attacks whose probes end without a RST or
    FIN are timed both ways (a thread of the attack connects to the device's open service every 50 ms
    from the attacker's address; the first connect unanswered within 0.25 s marks the probes failing):
    ``nmap-udp`` (nmap's UDP scan of its 100 most common UDP ports: closed ports answer with
    ICMP port unreachable, open or filtered ones not at all), ``syn-flood`` (hping3: 2,000 SYNs to the
    device's open service 0.5 ms apart, each from the next source port, so each is a new flow) and
    ``filtered`` (nmap's SYN scan against a device whose own nftables drops every TCP port but its
    service, so no probe is answered).
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(ATTACKS)}, got {attack!r}")
    tool = _ATTACK_TOOLS.get(attack)
    if tool is not None and shutil.which(tool) is None:
        raise RuntimeError(f"attack {attack} needs {tool} (apt-get install -y {tool})")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if not 0 <= load <= 64:
        raise ValueError(f"load must be in 0..64, got {load}")
    from pathlib import Path

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "playbook.yaml").write_text(
        "version: 1\nplaybooks:\n  - name: contain\n    match: {min_confidence: 0.5}\n    actions:\n"
        f"      - type: nftables\n        params: {{target: source, verdict: drop}}\n        ttl_s: {ttl_s}\n",
        encoding="utf-8")
    (work / "gw.toml").write_text(
        f'[pipeline]\nmodel = "{model}"\norigin = "testbed.example/bench"\nsources = ["iface:to-atk"]\n'
        f'live_idle_timeout = {idle_timeout}\nlive_active_timeout = {active_timeout}\nbatch_size = 256\n'
        '[response]\nplaybooks = ["playbook.yaml"]\nenforce = true\n'
        f'[guards]\nallowlist = ["{GW_ATK_IP}", "{GW_DEV_IP}"]\n'
        "max_blocks_per_minute = 1000\n", encoding="utf-8")
    exe = str(Path(sys.executable).with_name("trustmesh"))
    samples: list[float] = []
    failing: list[float] = []
    per_run: list[dict[str, object]] = []
    ever_blocked: dict[str, float] = {}
    burners: list[subprocess.Popen[bytes]] = []
    benign = (DEV_IP, PEER_IP, BENIGN_IP, GW_ATK_IP, GW_DEV_IP)
    with Testbed(prefix="tmb") as bed:
        bed._sh("ip", "-n", bed.atk, "addr", "add", f"{BENIGN_IP}/24", "dev", "eth0")
        bed.serve(bed.dev, DEV_IP, 8080)
        if attack == "filtered":
            filt = work / "victim.nft"
            filt.write_text(_FILTER_RULES, encoding="utf-8")
            bed.exec(bed.dev, "nft", "-f", str(filt))
        for script, args in ((_HEARTBEAT, (PEER_IP,)), (_BENIGN_CLIENT, (BENIGN_IP, DEV_IP, "8080"))):
            ns = bed.dev if script is _HEARTBEAT else bed.atk
            bed._procs.append(subprocess.Popen(  # type: ignore[arg-type]
                ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        monitor = _SetMonitor(bed.gw, "blocklist")
        log = (work / "gw.log").open("w")
        gw = subprocess.Popen(["ip", "netns", "exec", bed.gw, exe, "run", "--config", str(work / "gw.toml"), "--json"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if not bed.wait_for(lambda: (work / "trustmesh-ledger" / "ledger.sqlite").exists(), timeout=180):
                raise RuntimeError(f"the gateway did not start; see {work / 'gw.log'}")
            time.sleep(3)
            burners = [subprocess.Popen([sys.executable, "-c", _BURN, "600"]) for _ in range(load)]
            for r in range(runs):
                attacker = f"10.203.2.{100 + r}"
                bed._sh("ip", "-n", bed.atk, "addr", "add", f"{attacker}/24", "dev", "eth0")
                script = {"connect": _PROBE_ATTACK, "nmap-udp": _NMAP_UDP_ATTACK,
                          "filtered": _FILTERED_ATTACK,
                          "syn-flood": _SYN_FLOOD_ATTACK}.get(attack, _NMAP_ATTACK)
                proc = subprocess.Popen(["ip", "netns", "exec", bed.atk, sys.executable, "-c", script,
                                         attacker, DEV_IP], stdout=subprocess.PIPE, text=True,
                                        start_new_session=True)  # its own group: nmap dies with it
                assert proc.stdout is not None
                started = float(proc.stdout.readline().strip() or "nan")
                blocked = monitor.wait(attacker, wait_s)
                row: dict[str, object] = {"attacker": attacker, "drop_active_s": None, "probes_failing_s": None}
                if blocked is not None:
                    samples.append(blocked - started)
                    row["drop_active_s"] = round(blocked - started, 4)
                    # the first failing probe ("-": none within the prober's 15 s; nmap-syn does not probe)
                    line = proc.stdout.readline().strip() if attack != "nmap-syn" else ""
                    if line and line != "-":
                        failing.append(float(line) - started)
                        row["probes_failing_s"] = round(float(line) - started, 4)
                per_run.append(row)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole group, also when the leader has exited
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
                proc.stdout.close()
            time.sleep(1.0)  # late verdicts on the benign hosts' last flows still count
            ever_blocked = dict(monitor.first)
        finally:
            for b in burners:
                b.kill()
                b.wait()
            stop_group(gw, timeout=60)
            monitor.close()
            log.close()
    benign_blocked = sorted(ip for ip in ever_blocked if ip in benign)
    doc: dict[str, object] = {
        "runs": runs, "contained": len(samples), "idle_timeout_s": idle_timeout, "load_burners": load,
        "attack": attack, "benign_blocked": benign_blocked,
        "blocked_addresses": sorted(ever_blocked),
        "probes_failing_s": [round(s, 4) for s in failing],
        "active_timeout_s": active_timeout,
        "seconds": [round(s, 4) for s in samples],
        "per_run": per_run,
        "bound": "scan probes to closed ports end with a RST and are exported at once (early export), "
                 "a failing source's further probes at their first packet (fan-out rule); "
                 "the rest is conversion + score + behaviour + decide + nft",
    }
    if samples:
        doc.update(p50_s=round(_percentile(samples, 50), 4), p99_s=round(_percentile(samples, 99), 4),
                   min_s=round(min(samples), 4), max_s=round(max(samples), 4))
    if failing:
        doc.update(probes_fail_p50_s=round(_percentile(failing, 50), 4),
                   probes_fail_p99_s=round(_percentile(failing, 99), 4))
    return doc
