"""Real services for lab hosts: OpenSSH sshd, python http.server, mosquitto, dnsmasq, iperf3.

Each ``start_*`` writes its configuration under the run's work folder and starts the daemon in the
host's namespace through ``LabNetwork.spawn`` (so ``close`` stops it). The lab's SSH user exists only
inside the namespaces that run sshd: ``/etc/netns/NS/{passwd,shadow,group}`` are copies of the host's
files plus that user, bind-mounted by ``ip netns exec``.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from trustmesh.errors import EnvironmentProblem
from trustmesh.lab._net import LabNetwork
from trustmesh.lab._plan import LabPlan, PlannedHost

__all__ = ["start_services", "wait_ready"]

_UID = 61_337


def _hash_password(password: str, salt: str) -> str:
    done = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password, capture_output=True,
                          text=True, check=False, timeout=10)
    if done.returncode != 0:
        raise EnvironmentProblem(f"lab: openssl passwd failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _ssh(net: LabNetwork, plan: LabPlan, h: PlannedHost, work: Path, pw_hash: str) -> None:
    ns = net.ns[h.name]
    d = work / f"ssh-{h.name}"
    d.mkdir()
    home = d / "home"
    home.mkdir()
    subprocess.run(["chown", f"{_UID}:{_UID}", str(home)], check=False)
    key = d / "host_ed25519"
    net.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    passwd = Path("/etc/passwd").read_text(encoding="utf-8")
    shadow = Path("/etc/shadow").read_text(encoding="utf-8") if Path("/etc/shadow").exists() else ""
    group = Path("/etc/group").read_text(encoding="utf-8")
    net.etc_file(ns, "passwd", passwd + f"{plan.user}:x:{_UID}:{_UID}:lab user:{home}:/bin/sh\n")
    net.etc_file(ns, "shadow", shadow + f"{plan.user}:{pw_hash}:19000:0:99999:7:::\n", mode=0o600)
    net.etc_file(ns, "group", group + f"{plan.user}:x:{_UID}:\n")
    port = h.services["ssh"]
    cfg = d / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress {h.ip}\nHostKey {key}\nPidFile none\nUsePAM no\n"
        "PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\n"
        f"PermitRootLogin no\nStrictModes no\nMaxAuthTries {plan.sshd_max_auth_tries}\nMaxStartups 200\nMaxSessions 20\n"
        "LoginGraceTime 20\nAuthorizedKeysFile none\nX11Forwarding no\nAllowTcpForwarding no\n"
        f"AllowUsers {plan.user}\nSubsystem sftp internal-sftp\nLogLevel ERROR\n", encoding="utf-8")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    net.spawn(ns, ["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)])


def _site(d: Path, pages: int, rng: random.Random, title: str) -> None:
    d.mkdir()
    links = [f"page{i}.html" for i in range(pages)] + ["style.css"] + [f"img{i}.png" for i in range(pages // 2)]
    body = "".join(f'<li><a href="/{p}">{p}</a></li>' for p in links if p.endswith(".html"))
    imgs = "".join(f'<img src="/img{i}.png">' for i in range(pages // 2))
    (d / "index.html").write_text(f'<html><head><title>{title}</title><link rel="stylesheet" href="/style.css">'
                                  f"</head><body><h1>{title}</h1><ul>{body}</ul>{imgs}</body></html>",
                                  encoding="utf-8")
    (d / "style.css").write_text("body{font-family:sans-serif}" * rng.randint(5, 40), encoding="utf-8")
    for i in range(pages):
        text = " ".join(rng.choice(("sensor", "status", "uptime", "reading", "device", "site", "report"))
                        for _ in range(rng.randint(50, 3000)))
        (d / f"page{i}.html").write_text(f'<html><body><a href="/">home</a><p>{text}</p></body></html>',
                                         encoding="utf-8")
    for i in range(pages // 2):
        (d / f"img{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randint(2_000, 60_000)))


def start_services(net: LabNetwork, plan: LabPlan, work: Path) -> list[tuple[str, int]]:
    """Start every planned service; return the TCP (address, port) pairs to wait for."""
    rng = random.Random(f"site/{plan.scenario}/{plan.seed}")
    tcp: list[tuple[str, int]] = []
    pw_hash = ""
    for h in plan.hosts:
        ns = net.ns[h.name]
        if "ssh" in h.services:
            pw_hash = pw_hash or _hash_password(plan.password, f"{rng.randrange(16**8):08x}")
            _ssh(net, plan, h, work, pw_hash)
            tcp.append((h.ip, h.services["ssh"]))
        if "http" in h.services:
            site = work / f"www-{h.name}"
            _site(site, plan.site_pages, rng, f"{h.name} status")
            net.spawn(ns, [sys.executable, "-m", "http.server", str(h.services["http"]), "--bind", h.ip,
                           "--directory", str(site)])
            tcp.append((h.ip, h.services["http"]))
        if "mqtt" in h.services:
            pwfile = work / f"mqtt-{h.name}.passwd"
            net.sh("mosquitto_passwd", "-c", "-b", str(pwfile), plan.user, plan.password)
            pwfile.chmod(0o644)  # mosquitto drops to its own user before reading it
            cfg = work / f"mqtt-{h.name}.conf"
            cfg.write_text(f"listener {h.services['mqtt']} {h.ip}\nallow_anonymous false\npassword_file {pwfile}\n"
                           "persistence false\nlog_dest none\n", encoding="utf-8")
            cfg.chmod(0o644)
            net.spawn(ns, ["mosquitto", "-c", str(cfg)])
            tcp.append((h.ip, h.services["mqtt"]))
        if "dns" in h.services:
            hosts = work / f"dns-{h.name}.hosts"
            hosts.write_text("".join(f"{x.ip} {x.name}.{plan.domain} {x.name}\n" for x in plan.hosts
                                     if x.zone == "lan"), encoding="utf-8")
            hosts.chmod(0o644)
            net.spawn(ns, ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                           "--bind-interfaces", f"--listen-address={h.ip}", f"--port={h.services['dns']}",
                           f"--addn-hosts={hosts}", f"--local=/{plan.domain}/", f"--pid-file={work}/dns-{h.name}.pid",
                           "--user=root", "--cache-size=0"])
        if "iperf3" in h.services:
            net.spawn(ns, ["iperf3", "-s", "-B", h.ip, "-p", str(h.services["iperf3"])])
            tcp.append((h.ip, h.services["iperf3"]))
    dns = [h for h in plan.hosts if "dns" in h.services]
    for h in plan.hosts:
        if dns:
            net.etc_file(net.ns[h.name], "resolv.conf", f"nameserver {dns[0].ip}\nsearch {plan.domain}\n")
    return tcp


_PROBE = r"""
import socket, sys, time
pairs = [(a, int(p)) for a, p in (x.split(":") for x in sys.argv[2:])]
deadline = time.time() + float(sys.argv[1])
left = list(pairs)
while left and time.time() < deadline:
    for a, p in list(left):
        s = socket.socket(); s.settimeout(0.5)
        try:
            s.connect((a, p)); left.remove((a, p))
        except OSError:
            pass
        finally:
            s.close()
    time.sleep(0.2)
print(" ".join(f"{a}:{p}" for a, p in left))
"""


def wait_ready(net: LabNetwork, pairs: list[tuple[str, int]], timeout: float = 20.0) -> None:
    """Wait until every TCP service accepts connections (probed from the gateway); raise when not."""
    if not pairs:
        return
    left = net.exec(net.gw, sys.executable, "-c", _PROBE, str(timeout), *(f"{a}:{p}" for a, p in pairs),
                    timeout=timeout + 15).strip()
    if left:
        raise EnvironmentProblem(f"lab: services did not start within {timeout:g} s: {left}")
