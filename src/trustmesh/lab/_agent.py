"""Traffic agents the lab runs inside its namespaces (a plain script: no trustmesh imports).

Run as ``python _agent.py KIND JSON``; each agent is bounded by the ``until`` epoch second (and by its
own counts), talks only to the addresses it is given and exits 0. Kinds: ``mqtt-telemetry``,
``mqtt-brute``, ``dns-lookups``, ``http-browsing``, ``http-enum``, ``ssh-logins``, ``bulk-transfer``.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time
from typing import Any


def _password() -> str:
    # the lab password travels in the environment, never on a command line the truth file records
    return os.environ.get("TM_LAB_PASSWORD", "")


def _sleep_until(t: float, until: float) -> bool:
    """Sleep until ``t``; return False when ``until`` comes first."""
    if t >= until:
        time.sleep(max(0.0, until - time.time()))
        return False
    time.sleep(max(0.0, t - time.time()))
    return True


def _next(rng: random.Random, interval: float) -> float:
    return time.time() + interval * rng.uniform(0.6, 1.4)


def _reading(a: dict[str, Any], rng: random.Random, seq: int) -> str:
    return json.dumps({"device": a["client_id"], "seq": seq, "ts": round(time.time(), 3),
                       "temp": round(rng.gauss(21.0, 2.0), 2), "hum": round(rng.uniform(30, 60), 1),
                       "pad": "x" * rng.randint(0, a["pad"])})


def mqtt_telemetry(a: dict[str, Any], rng: random.Random) -> None:
    import paho.mqtt.client as mqtt

    def client() -> Any:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
                        client_id=a["client_id"])
        c.username_pw_set(a["user"], _password())
        c.connect(a["server"], a["port"], keepalive=a["keepalive"])
        c.loop_start()
        return c

    seq = 0
    if a.get("mode") == "reconnect":  # battery devices: wake, connect, publish a burst, disconnect
        while _sleep_until(_next(rng, a["interval"]), a["until"]):
            try:
                c = client()
            except OSError:
                continue
            for _ in range(rng.randint(1, 3)):
                seq += 1
                c.publish(a["topic"], _reading(a, rng, seq), qos=a["qos"]).wait_for_publish(2.0)
            c.loop_stop()
            c.disconnect()
        return
    c = client()
    try:
        while _sleep_until(_next(rng, a["interval"]), a["until"]):
            seq += 1
            c.publish(a["topic"], _reading(a, rng, seq), qos=a["qos"])
    finally:
        c.loop_stop()
        c.disconnect()


def mqtt_brute(a: dict[str, Any], rng: random.Random) -> None:
    import paho.mqtt.client as mqtt

    with open(a["wordlist"], encoding="utf-8") as fh:
        words = [w.strip() for w in fh if w.strip()]
    for i, word in enumerate(words):
        if time.time() >= a["until"]:
            break
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
                        client_id=f"{a['client_prefix']}{i}")
        c.username_pw_set(a["user"], word)
        try:
            c.connect(a["server"], a["port"], keepalive=10)
            c.loop(timeout=1.0)
            c.loop(timeout=0.5)
            c.disconnect()
        except OSError:
            pass
        time.sleep(a["delay"])


def _dns_query(name: str, qtype: int, qid: int) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def dns_lookups(a: dict[str, Any], rng: random.Random) -> None:
    while _sleep_until(_next(rng, a["interval"]), a["until"]):
        # a fresh socket (so a fresh source port) per lookup, as glibc's stub resolver does
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2.0)
            name = rng.choice(a["names"])
            for qtype in (1, 28) if rng.random() < a["aaaa"] else (1,):
                s.sendto(_dns_query(name, qtype, rng.randrange(65536)), (a["server"], a["port"]))
                try:
                    s.recvfrom(2048)
                except OSError:
                    pass


def _get(server: str, port: int, path: str, ua: str, timeout: float = 5.0) -> bytes:
    conn = http.client.HTTPConnection(server, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": ua, "Accept": "*/*"})
        return conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return b""
    finally:
        conn.close()


def http_browsing(a: dict[str, Any], rng: random.Random) -> None:
    while _sleep_until(_next(rng, a["interval"]), a["until"]):
        page = _get(a["server"], a["port"], "/", a["ua"])
        links = re.findall(rb'(?:href|src)="/?([^"#]+)"', page)
        for link in rng.sample(links, min(len(links), rng.randint(1, 4))):
            time.sleep(rng.uniform(0.05, 0.8))
            _get(a["server"], a["port"], "/" + link.decode(), a["ua"])


def http_enum(a: dict[str, Any], rng: random.Random) -> None:
    with open(a["wordlist"], encoding="utf-8") as fh:
        words = [w.strip() for w in fh if w.strip()]
    for word in words:
        for ext in a["extensions"]:
            if time.time() >= a["until"]:
                return
            _get(a["server"], a["port"], f"/{word}{ext}", a["ua"], timeout=3.0)
            if a["delay"]:
                time.sleep(a["delay"])


def _ssh(a: dict[str, Any], host: str, port: int, command: str, timeout: float) -> None:
    argv = ["sshpass", "-e", "ssh", "-p", str(port), "-o", "StrictHostKeyChecking=no", "-o",
            "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "PubkeyAuthentication=no",
            "-o", "PreferredAuthentications=password", "-o", "ConnectTimeout=5", f"{a['user']}@{host}", command]
    env = {**os.environ, "SSHPASS": _password()}
    try:
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
                       check=False)
    except subprocess.TimeoutExpired:
        pass


def ssh_logins(a: dict[str, Any], rng: random.Random) -> None:
    if a.get("once"):  # an attacker with stolen credentials: one pass over the targets
        for host, port in a["targets"]:
            for _ in range(rng.randint(1, a.get("sessions", 1))):
                if time.time() >= a["until"]:
                    return
                _ssh(a, host, port, rng.choice(a["commands"]), min(20.0, max(1.0, a["until"] - time.time())))
                time.sleep(a["delay"])
        return
    while _sleep_until(_next(rng, a["interval"]), a["until"]):
        host, port = rng.choice(a["targets"])
        _ssh(a, host, port, rng.choice(a["commands"]), min(20.0, max(1.0, a["until"] - time.time())))


def bulk_transfer(a: dict[str, Any], rng: random.Random) -> None:
    while _sleep_until(_next(rng, a["interval"]), a["until"]):
        left = a["until"] - time.time()
        if left < 3:
            return
        size = rng.randint(a["bytes"][0], a["bytes"][1])
        if a["method"] == "iperf3":
            argv = ["iperf3", "-c", a["server"], "-p", str(a["port"]), "-n", str(size), "-b", f"{a['rate_mbit']}M",
                    "--connect-timeout", "3000"] + (["-R"] if rng.random() < 0.4 else [])
            env = None
        else:
            src = os.path.join(a["work"], f"blob-{size}")
            if not os.path.exists(src):
                with open(src, "wb") as fh:
                    fh.write(rng.randbytes(size))
            argv = ["sshpass", "-e", "scp", "-q", "-P", str(a["port"]), "-o", "StrictHostKeyChecking=no", "-o",
                    "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "PreferredAuthentications=password",
                    "-l", str(a["rate_mbit"] * 1000), src, f"{a['user']}@{a['server']}:upload-{rng.randrange(1000)}"]
            env = {**os.environ, "SSHPASS": _password()}
        try:
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=max(2.0, left - 1), check=False)
        except subprocess.TimeoutExpired:
            pass


AGENTS = {"mqtt-telemetry": mqtt_telemetry, "mqtt-brute": mqtt_brute, "dns-lookups": dns_lookups,
          "http-browsing": http_browsing, "http-enum": http_enum, "ssh-logins": ssh_logins,
          "bulk-transfer": bulk_transfer}


def main() -> int:
    kind, args = sys.argv[1], json.loads(sys.argv[2])
    rng = random.Random(args.get("seed", 0))
    args.setdefault("until", float(os.environ.get("TM_LAB_UNTIL", time.time() + 60)))
    try:
        AGENTS[kind](args, rng)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
