"""A three-namespace test network (device, attacker, gateway) built from veth pairs.

::

    [DEV] eth0 10.203.1.2 ── to-dev 10.203.1.1 [GW] 10.203.2.1 to-atk ── eth0 10.203.2.2 [ATK]
                                                      (forwards)                   + 10.203.2.3 (benign peer)

Every command runs inside a namespace (``ip -n NS`` / ``ip netns exec NS``); the host's own
interfaces and ruleset are never touched. Namespace names get a random suffix so parallel runs do
not collide. Use ``Testbed`` as a context manager or through the ``testbed`` fixture (cleans up in a
finalizer even when the test fails).

Reuse: ``from netns import Testbed, netns_unavailable`` (tests/integration is on sys.path in pytest's
default rootdir import mode).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

__all__ = ["Testbed", "netns_unavailable", "testbed"]

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


def netns_unavailable() -> str | None:
    """Return why the testbed cannot run here (not root, tools missing, netns refused), or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (run as root, as CI does)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool!r} not found (apt-get install -y iproute2 nftables)"
    probe = f"tmprobe{secrets.token_hex(4)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    try:
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


@pytest.fixture()
def testbed() -> Iterator[Testbed]:
    """A fresh three-namespace network; skipped with the reason when namespaces cannot be made."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    bed = Testbed()
    bed.up()
    try:
        yield bed
    finally:
        bed.close()
