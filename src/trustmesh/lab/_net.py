"""The lab's network: one namespace per host on a bridge inside a gateway namespace.

::

    [host ns] eth0 ── vN ─┐
    [host ns] eth0 ── vM ─┤ br0 (GW namespace: LAN and outside gateway addresses, forwards)
    [host ns] eth0 ── vK ─┘      tcpdump -i br0 -Q in: every packet of the site, once

The bridge sees each bridged frame once on ingress, and a routed packet once as it enters the
gateway, so capturing inbound on ``br0`` records every packet exactly once. Every command runs in a
namespace (``ip -n``/``ip netns exec``); the host's own interfaces are never touched. Per-namespace
files (resolv.conf, and passwd/shadow/group for the lab's SSH user) live in ``/etc/netns/NAME``,
which ``ip netns exec`` bind-mounts over /etc for that namespace only.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from trustmesh._procs import stop_group
from trustmesh.errors import EnvironmentProblem
from trustmesh.lab._plan import LabPlan

__all__ = ["LabNetwork"]

log = logging.getLogger(__name__)

_SYSCTLS = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
            # bounded scans: a UDP scan would otherwise wait on the 1/s ICMP unreachable limit
            "net.ipv4.icmp_ratelimit=0")


class LabNetwork:
    """Create the namespaces of a plan; ``close`` removes them, their processes and /etc/netns files."""

    def __init__(self, plan: LabPlan) -> None:
        self.plan = plan
        suffix = secrets.token_hex(3)
        self.gw = f"tml{suffix}-gw"
        self.ns = {h.name: f"tml{suffix}-{i}" for i, h in enumerate(plan.hosts)}
        self._made: list[str] = []
        self._etc: list[Path] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    # -- plumbing ----------------------------------------------------------------------------
    @staticmethod
    def sh(*argv: str, timeout: float = 30) -> str:
        """Run a command on the host side (``ip -n ...``); raise ``EnvironmentProblem`` when it fails."""
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EnvironmentProblem(f"lab: {' '.join(argv)} did not finish within {timeout:g} s") from None
        if done.returncode != 0:
            raise EnvironmentProblem(f"lab: {' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def exec(self, ns: str, *argv: str, timeout: float = 30) -> str:
        """Run a command inside namespace ``ns`` and wait for it."""
        return self.sh("ip", "netns", "exec", ns, *argv, timeout=timeout)

    def spawn(self, ns: str, argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None,
              stdout: int | None = subprocess.DEVNULL, stderr: int | None = subprocess.DEVNULL
              ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``ns`` in its own process group (stopped by ``close`` if still running)."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=cwd, env=dict(env) if env else None,
                                stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs.append(proc)
        return proc

    def etc_file(self, ns: str, name: str, text: str, mode: int = 0o644) -> None:
        """Write ``/etc/netns/NS/NAME``: namespace ``ns`` sees it as ``/etc/NAME``."""
        d = Path("/etc/netns") / ns
        if d not in self._etc:
            d.mkdir(parents=True, exist_ok=True)
            self._etc.append(d)
        p = d / name
        p.write_text(text, encoding="utf-8")
        os.chmod(p, mode)

    # -- build -------------------------------------------------------------------------------
    def up(self) -> LabNetwork:
        """Build the bridge, the gateway and one namespace per host; on failure undo and re-raise."""
        plan = self.plan
        try:
            self._add_ns(self.gw)
            self.sh("ip", "-n", self.gw, "link", "add", "br0", "type", "bridge")
            lan_len = plan.lan.split("/")[1]
            out_len = plan.outside.split("/")[1]
            self.sh("ip", "-n", self.gw, "addr", "add", f"{plan.lan_gateway}/{lan_len}", "dev", "br0")
            self.sh("ip", "-n", self.gw, "addr", "add", f"{plan.outside_gateway}/{out_len}", "dev", "br0")
            self.sh("ip", "-n", self.gw, "link", "set", "br0", "up")
            self.exec(self.gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            for i, h in enumerate(plan.hosts):
                ns = self.ns[h.name]
                self._add_ns(ns)
                port = f"v{i}"
                self.sh("ip", "-n", self.gw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                        "netns", ns)
                self.sh("ip", "-n", self.gw, "link", "set", port, "master", "br0", "up")
                plen, gw = (lan_len, plan.lan_gateway) if h.zone == "lan" else (out_len, plan.outside_gateway)
                self.sh("ip", "-n", ns, "link", "set", "eth0", "address", h.mac)
                self.sh("ip", "-n", ns, "addr", "add", f"{h.ip}/{plen}", "dev", "eth0")
                self.sh("ip", "-n", ns, "link", "set", "eth0", "up")
                self.sh("ip", "-n", ns, "route", "add", "default", "via", gw)
        except BaseException:
            self.close()
            raise
        return self

    def _add_ns(self, ns: str) -> None:
        self.sh("ip", "netns", "add", ns)
        self._made.append(ns)
        self.sh("ip", "-n", ns, "link", "set", "lo", "up")
        self.exec(ns, "sysctl", "-qw", *_SYSCTLS)

    def stop_all(self, timeout: float = 5.0) -> None:
        """Stop every process started with ``spawn`` (whole process groups)."""
        for proc in reversed(self._procs):
            try:
                stop_group(proc, timeout=timeout)
            except OSError as exc:  # pragma: no cover - already reaped elsewhere
                log.debug("stopping %s: %s", proc.args, exc)
        self._procs.clear()

    def close(self) -> None:
        """Stop processes, delete the namespaces (their veths go with them) and the /etc/netns files."""
        self.stop_all()
        for ns in reversed(self._made):
            # kill stragglers that left our process groups (daemons that re-parent themselves)
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
            for pid in pids.stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._made.clear()
        for d in self._etc:
            shutil.rmtree(d, ignore_errors=True)
        self._etc.clear()

    def __enter__(self) -> LabNetwork:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.close()
