"""Realise a scenario for one seed: addresses, host counts, ports, timing and tool options.

Everything the seed decides is drawn here from one ``random.Random(seed)``, in a fixed order, so the
same scenario and seed always give the same plan (and so the same commands); the runner only executes
it. Nothing here needs root.
"""

from __future__ import annotations

import ipaddress
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from trustmesh.lab._scenario import AttackSpec, BenignSpec, FloatSpan, IntSpan, Scenario

__all__ = ["TECHNIQUES", "LabPlan", "PlannedAttack", "PlannedBenign", "PlannedHost", "plan_scenario"]

#: technique id -> name (MITRE ATT&CK)
TECHNIQUES = {
    "T1018": "Remote System Discovery",
    "T1021": "Remote Services",
    "T1046": "Network Service Discovery",
    "T1110": "Brute Force",
    "T1498": "Network Denial of Service",
    "T1499": "Endpoint Denial of Service",
    "T1595.003": "Active Scanning: Wordlist Scanning",
}

_PORTS = {"ssh": (22, 22, 2222, 22022), "http": (80, 8080, 8000, 8081), "mqtt": (1883, 1883, 1884, 2883),
          "dns": (53,), "iperf3": (5201, 5201, 5202, 5301)}
_USERS = ("pi", "operator", "svc", "maint", "iotadmin", "field", "ops")
_DOMAINS = ("lab", "home.arpa", "site.internal", "plant.lan", "corp.test")
_UAS = ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
        "curl/7.88.1", "python-requests/2.32.3", "Wget/1.21.3")
#: common passwords (public knowledge) for brute-force wordlists
_PASSWORDS = ("123456", "password", "12345678", "qwerty", "123456789", "12345", "1234", "111111", "1234567",
              "dragon", "123123", "baseball", "abc123", "football", "monkey", "letmein", "shadow", "master",
              "666666", "qwertyuiop", "123321", "mustang", "1234567890", "michael", "654321", "superman",
              "1qaz2wsx", "7777777", "121212", "000000", "qazwsx", "123qwe", "killer", "trustno1", "jordan",
              "jennifer", "zxcvbnm", "asdfgh", "hunter", "buster", "soccer", "harley", "batman", "andrew",
              "tigger", "sunshine", "iloveyou", "2000", "charlie", "robert", "thomas", "hockey", "ranger",
              "daniel", "starwars", "klaster", "112233", "george", "computer", "michelle", "jessica", "pepper",
              "1111", "zxcvbn", "555555", "11111111", "131313", "freedom", "777777", "pass", "maggie", "159753",
              "aaaaaa", "ginger", "princess", "joshua", "cheese", "amanda", "summer", "love", "ashley", "nicole",
              "chelsea", "biteme", "matthew", "access", "yankees", "987654321", "dallas", "austin", "thunder",
              "taylor", "matrix", "admin", "raspberry", "root", "toor", "default", "changeme", "guest", "ubnt")
#: web paths (common directory names) for enumeration wordlists
_PATHS = ("admin", "login", "wp-admin", "wp-login.php", "backup", "backups", "config", "api", "api/v1",
          "uploads", "images", "img", "css", "js", "static", "assets", "test", "tmp", "old", "new", "dev",
          "phpmyadmin", "server-status", "cgi-bin", ".git", ".env", ".htaccess", "robots.txt", "sitemap.xml",
          "index.php", "index.html", "about.html", "status.html", "dashboard", "panel", "cpanel", "manager",
          "console", "shell", "debug", "logs", "log", "data", "db", "database", "sql", "dump", "private",
          "secret", "hidden", "portal", "user", "users", "account", "register", "signup", "signin", "auth",
          "oauth", "download", "downloads", "files", "file", "docs", "doc", "help", "support", "contact",
          "blog", "news", "shop", "cart", "search", "home", "main", "web", "site", "www", "mail", "webmail",
          "setup", "install", "update", "upgrade", "firmware", "device", "devices", "camera", "stream",
          "video", "cgi", "bin", "include", "inc", "lib", "src", "vendor", "node_modules", "package.json",
          "composer.json", "web.config", "config.php", "settings", "system", "sys", "info.php", "phpinfo.php",
          "test.php", "demo", "staging", "prod", "beta", "v2", "graphql", "swagger", "swagger.json", "metrics",
          "health", "actuator", "jenkins", "grafana", "kibana", "solr", "jmx-console", "invoker", "status",
          "stats", "monitor", "mqtt", "ws", "socket", "rpc", "xmlrpc.php", "feed", "rss", "archive", "export")
_SSH_COMMANDS = ("uptime", "uname -a", "df -h", "ls -la", "cat /etc/hostname", "free -m", "id", "date")

_LAN_PORTS = ("21", "22", "23", "80", "443", "445", "554", "1883", "2222", "3389", "5000", "8080", "8443", "8883")


@dataclass(frozen=True, slots=True)
class PlannedHost:
    """One host (one namespace): ``name`` is the group name plus an index when the group has several."""

    name: str
    group: str
    role: str
    zone: str
    ip: str
    mac: str
    services: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlannedBenign:
    """One benign generator process on one host."""

    id: str
    kind: str
    tool: str
    host: str
    server: str
    port: int
    start: float
    agent: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PlannedAttack:
    """One attack: the command, what it targets, and the labelling rule (protocols, ports, targets)."""

    id: str
    kind: str
    variant: str
    tool: str
    argv: list[str]
    technique_id: str
    technique_name: str
    attacker: str
    victims: list[str]
    targets: list[str]
    protos: list[str]
    ports: list[int] | None
    at: float
    timeout: float
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LabPlan:
    """A scenario realised for one seed."""

    scenario: str
    seed: int
    duration: float
    lan: str
    lan_gateway: str
    outside: str
    outside_gateway: str
    domain: str
    user: str
    password: str
    hosts: list[PlannedHost]
    benign: list[PlannedBenign]
    attacks: list[PlannedAttack]
    site_pages: int
    sshd_max_auth_tries: int = 6

    def host(self, name: str) -> PlannedHost:
        """Return the host called ``name``."""
        return next(h for h in self.hosts if h.name == name)

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """Return the plan as JSON-ready data; the lab password only with ``secrets=True``."""
        d = asdict(self)
        if not secrets:
            d.pop("password")
        for a in d["attacks"]:
            a.pop("files")
        return d


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _draw(rng: random.Random, v: FloatSpan) -> float:
    return round(rng.uniform(v[0], v[1]), 2) if isinstance(v, tuple) else float(v)


def _draw_int(rng: random.Random, v: IntSpan) -> int:
    return rng.randint(v[0], v[1]) if isinstance(v, tuple) else int(v)


def _subnet(rng: random.Random, prefix: int, avoid: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    blocks = (ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv4Network("172.16.0.0/12"))
    for _ in range(1000):
        block = rng.choice(blocks)
        n_sub = 2 ** (prefix - block.prefixlen)
        net = ipaddress.IPv4Network(f"{block.network_address + rng.randrange(n_sub) * 2 ** (32 - prefix)}/{prefix}")
        # stay clear of .0.0/16-style "first" networks people hard-code, and of other lab subnets
        if net.network_address.packed[1:3] == b"\x00\x00" or any(net.overlaps(a) for a in avoid):
            continue
        return net
    raise AssertionError("no free subnet found")  # pragma: no cover - 2^14+ choices


def _mac(rng: random.Random) -> str:
    return ":".join(f"{b:02x}" for b in [0x02, *(rng.randrange(256) for _ in range(5))])


class _Planner:
    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.s = scenario
        self.seed = seed
        self.rng = random.Random(f"trustmesh-lab/{scenario.name}/{seed}")
        self.hosts: list[PlannedHost] = []
        self.groups: dict[str, list[PlannedHost]] = {}
        self._turns: dict[str, int] = {}

    def network(self) -> None:
        rng = self.rng
        self.lan = _subnet(rng, _draw_int(rng, self.s.lan_prefix), [])
        self.outside = _subnet(rng, rng.choice((24, 25, 26)), [self.lan])
        self.lan_addrs = list(self.lan.hosts())
        self.out_addrs = list(self.outside.hosts())
        self.lan_gw = str(rng.choice((self.lan_addrs[0], self.lan_addrs[-1], rng.choice(self.lan_addrs))))
        self.out_gw = str(rng.choice((self.out_addrs[0], self.out_addrs[-1])))
        self.domain = rng.choice(_DOMAINS)
        self.user = rng.choice(_USERS)
        self.password = f"{rng.choice(('Blue', 'Quartz', 'Delta', 'North'))}-{rng.randrange(10**6):06d}!"
        self.ports = {k: rng.choice(v) for k, v in _PORTS.items()}
        self.iot_ssh = rng.choice((22, 2222))
        used = {self.lan_gw, self.out_gw}
        for spec in self.s.hosts:
            n = _draw_int(rng, spec.count)
            members = []
            pool = self.lan_addrs if spec.where == "lan" else self.out_addrs
            for i in range(n):
                ip = str(rng.choice(pool))
                while ip in used:
                    ip = str(rng.choice(pool))
                used.add(ip)
                services: dict[str, int] = {str(k): (self.iot_ssh if k == "ssh" and spec.role == "iot" else self.ports[k])
                            for k in spec.services}
                name = spec.name if n == 1 else f"{spec.name}{i + 1}"
                h = PlannedHost(name, spec.name, spec.role, spec.where, ip, _mac(rng), services)
                members.append(h)
            self.hosts.extend(members)
            self.groups[spec.name] = members

    # -- benign ------------------------------------------------------------------------------
    def benign(self) -> list[PlannedBenign]:
        out: list[PlannedBenign] = []
        for spec in self.s.benign:
            server = self.rng.choice(self.groups[spec.to])
            for g in spec.from_:
                for h in self.groups[g]:
                    if h.name == server.name:
                        continue
                    out.append(self._benign(spec, h, server, f"b{len(out) + 1}"))
        return out

    def _benign(self, spec: BenignSpec, h: PlannedHost, server: PlannedHost, bid: str) -> PlannedBenign:
        rng = self.rng
        defaults = {"mqtt-telemetry": (1.0, 5.0), "dns-lookups": (2.0, 8.0), "http-browsing": (3.0, 10.0),
                    "ssh-logins": (10.0, 30.0), "bulk-transfer": (15.0, 35.0)}
        interval = _draw(rng, spec.interval if spec.interval is not None else defaults[spec.kind])
        start = _draw(rng, spec.start)
        args: dict[str, Any] = {"server": server.ip, "interval": interval, "seed": rng.randrange(2**31)}
        if spec.kind == "mqtt-telemetry":
            tool, agent, port = "paho-mqtt", "mqtt-telemetry", server.services["mqtt"]
            args.update(user=self.user, client_id=f"{h.name}-{rng.randrange(10**4)}",
                        topic=f"site/{h.group}/{h.name}/telemetry", qos=rng.choice((0, 0, 1)),
                        keepalive=rng.choice((15, 30, 60)), pad=rng.choice((0, 16, 64, 200)),
                        mode=rng.choice(("persistent", "reconnect")))
            if args["mode"] == "reconnect":
                args["interval"] = round(interval * rng.uniform(1.5, 3.0), 2)
        elif spec.kind == "dns-lookups":
            tool, agent, port = "python-dns", "dns-lookups", server.services["dns"]
            names = [f"{x.name}.{self.domain}" for x in self.hosts if x.zone == "lan"]
            names += [f"{w}.{self.domain}" for w in rng.sample(("ntp", "update", "time", "cloud", "api"), 2)]
            args.update(names=names, aaaa=rng.choice((0.0, 0.3, 0.6)))
        elif spec.kind == "http-browsing":
            tool, agent, port = "python-http.client", "http-browsing", server.services["http"]
            args.update(ua=rng.choice(_UAS[:2]))
        elif spec.kind == "ssh-logins":
            tool, agent, port = "sshpass+ssh", "ssh-logins", server.services["ssh"]
            args.update(user=self.user, targets=[[server.ip, port]], commands=list(_SSH_COMMANDS))
        else:
            methods = [m for m, svc in (("iperf3", "iperf3"), ("scp", "ssh")) if svc in server.services]
            method = rng.choice(methods)
            tool, agent = ("iperf3", "bulk-transfer") if method == "iperf3" else ("sshpass+scp", "bulk-transfer")
            port = server.services["iperf3" if method == "iperf3" else "ssh"]
            args.update(method=method, port=port, user=self.user, rate_mbit=rng.choice((5, 10, 20)),
                        bytes=[rng.choice((200_000, 400_000)), rng.choice((1_000_000, 2_000_000))])
        args["port"] = port
        return PlannedBenign(bid, spec.kind, tool, h.ip, server.ip, port, start, agent, args)

    # -- attacks -----------------------------------------------------------------------------
    def attacks(self) -> list[PlannedAttack]:
        return [self._attack(spec, f"a{i + 1}") for i, spec in enumerate(self.s.attacks)]

    def _lan_hosts(self) -> list[str]:
        return [h.ip for h in self.hosts if h.zone == "lan"] + [self.lan_gw]

    def _attack(self, spec: AttackSpec, aid: str) -> PlannedAttack:
        rng = self.rng
        variant = rng.choice(spec.variants)
        # spread a group's attacks over its members (so one address rarely runs two tools at once)
        members = self.groups[spec.from_]
        turn = self._turns.setdefault(spec.from_, rng.randrange(len(members)))
        self._turns[spec.from_] = turn + 1
        attacker = members[turn % len(members)]
        if spec.to == "lan":
            victim = None
        else:
            choices = [h for h in self.groups[spec.to] if h.name != attacker.name]
            victim = rng.choice(choices)
        at = _draw(rng, spec.at)
        kind = spec.kind
        files: dict[str, str] = {}
        params: dict[str, Any] = {}
        ports: list[int] | None = None
        lan_cidr = str(self.lan)
        if victim is not None:
            targets, victims = [f"{victim.ip}/32"], [victim.ip]
        else:
            targets, victims = [lan_cidr], sorted(ip for ip in self._lan_hosts() if ip != attacker.ip)
        technique = "T1046"
        if kind == "port-scan":
            tool = "nmap"
            assert victim is not None
            timing = rng.choice(("-T3", "-T4", "-T4", "-T5"))
            if variant in ("syn", "connect"):
                ports_opt = rng.choice((["-p", f"1-{rng.choice((1024, 2048, 4096))}"],
                                        ["--top-ports", str(rng.choice((100, 300, 1000)))],
                                        ["-p", f"{rng.randint(1, 20)}-{rng.randint(900, 3000)}"]))
                argv = ["nmap", "-n", "-Pn", "-sS" if variant == "syn" else "-sT", *ports_opt, "--max-retries",
                        str(rng.choice((1, 2))), timing, victim.ip]
                protos = ["tcp"]
            elif variant == "udp":
                argv = ["nmap", "-n", "-Pn", "-sU", "--top-ports", str(rng.choice((20, 40, 60, 100))),
                        "--max-retries", str(rng.choice((0, 1))), "-T4", victim.ip]
                protos = ["udp", "icmp"]
            else:
                slow = rng.choice((["-T2"], ["--scan-delay", f"{rng.choice((300, 500, 800))}ms"]))
                n = rng.choice((12, 16, 24)) if slow == ["-T2"] else rng.choice((15, 25, 35))
                argv = ["nmap", "-n", "-Pn", rng.choice(("-sS", "-sT")), *slow, "--top-ports", str(n),
                        "--max-retries", "0", victim.ip]
                protos = ["tcp"]
            params = {"timing": timing}
        elif kind == "host-sweep":
            tool = "nmap"
            arp = [] if attacker.zone == "outside" else ["--disable-arp-ping"]
            target = victim.ip if victim is not None else lan_cidr
            if variant == "ping":
                probes = rng.choice(([], ["-PE"], ["-PE", "-PP"], ["-PS22,80,443", "-PE"]))
                argv = ["nmap", "-n", "-sn", *probes, *arp, "-T4", "--max-retries", "1", target]
                protos = ["icmp", "tcp"]
                technique = "T1018"
            else:
                plist = sorted(rng.sample(_LAN_PORTS, rng.randint(2, 5)), key=int)
                argv = ["nmap", "-n", "-Pn", "-sS", "-p", ",".join(plist), "--max-retries", "1",
                        "--max-rtt-timeout", "300ms", "-T4", target]
                protos, ports = ["tcp"], [int(p) for p in plist]
        elif kind in ("syn-flood", "udp-flood", "icmp-flood"):
            tool = "hping3"
            assert victim is not None
            rate = rng.choice((200, 300, 500, 800))
            seconds = rng.choice((5.0, 8.0, 12.0))
            if spec.rate is not None:
                rate = _draw_int(rng, spec.rate)
            if spec.seconds is not None:
                seconds = _draw(rng, spec.seconds)
            count = max(1, round(rate * seconds))
            flag = {"syn-flood": ["-S"], "udp-flood": ["--udp"], "icmp-flood": ["--icmp"]}[kind]
            argv = ["hping3", *flag, "-c", str(count), "-i", f"u{1_000_000 // rate}"]
            if kind != "icmp-flood":
                svc = [p for k, p in victim.services.items() if k in (("ssh", "http", "mqtt") if kind == "syn-flood"
                                                                       else ("dns",))]
                if kind == "udp-flood" and rng.random() < 0.5:
                    svc = []  # half the UDP floods hit a closed port: the victim answers ICMP unreachables
                port = rng.choice(svc) if svc else rng.randint(1024, 60000)
                argv += ["-p", str(port)]
                technique = "T1499" if svc else "T1498"
                protos = ["tcp"] if kind == "syn-flood" else ["udp", "icmp"]
                params["port"] = port
            else:
                technique, protos = "T1498", ["icmp"]
            if kind != "syn-flood":
                argv += ["-d", str(rng.choice((32, 64, 256, 512)))]
            argv += ["-q", victim.ip]
            params.update(rate_pps=rate, packets=count)
        elif kind == "brute-force":
            assert victim is not None
            technique = "T1110"
            words = self._wordlist(rng.randint(40, 100) if variant != "ssh-slow" else rng.randint(5, 8))
            files["passwords.txt"] = "\n".join(words) + "\n"
            params["wordlist_size"] = len(words)
            params["wordlist_has_password"] = self.password in words
            if variant in ("ssh", "ssh-slow"):
                tool = "hydra"
                port = victim.services["ssh"]
                # -w: hydra waits that long each time sshd drops a connection after MaxAuthTries guesses
                speed = (["-t", str(rng.choice((4, 6, 8))), "-w", str(rng.choice((1, 2, 3)))] if variant == "ssh"
                         else ["-c", str(rng.choice((2, 3))), "-w", "2"])
                argv = ["hydra", "-I", "-l", self.user, "-P", "{work}/passwords.txt", *speed, "-s", str(port),
                        f"ssh://{victim.ip}"]
            else:
                tool = "paho-mqtt"
                port = victim.services["mqtt"]
                argv = ["{python}", "{agent}", "mqtt-brute", _json({
                    "server": victim.ip, "port": port, "user": self.user, "wordlist": "{work}/passwords.txt",
                    "delay": rng.choice((0.0, 0.05, 0.2)), "client_prefix": rng.choice(("mqtt-", "x", "cli"))})]
            protos, ports = ["tcp"], [port]
        elif kind == "web-enumeration":
            assert victim is not None
            technique = "T1595.003"
            port = victim.services["http"]
            words = rng.sample(_PATHS, rng.randint(60, min(150, len(_PATHS))))
            files["words.txt"] = "\n".join(words) + "\n"
            ua = rng.choice(_UAS)
            params["wordlist_size"] = len(words)
            if variant == "python":
                tool = "python-http.client"
                exts = rng.choice(([""], ["", ".php"], ["", ".bak", ".html"]))
                argv = ["{python}", "{agent}", "http-enum", _json({
                    "server": victim.ip, "port": port, "wordlist": "{work}/words.txt", "extensions": exts,
                    "delay": rng.choice((0.0, 0.01, 0.05)), "ua": ua})]
            else:
                tool = "curl"
                argv = ["sh", "-c", f'while read -r w; do curl -s -o /dev/null -m 3 -A "{ua}" '
                        f'"http://{victim.ip}:{port}/$w"; done < {{work}}/words.txt']
            protos, ports = ["tcp"], [port]
        else:  # lateral-movement from an inside host
            if variant == "scan":
                tool = "nmap"
                plist = sorted(rng.sample(_LAN_PORTS, rng.randint(3, 7)), key=int)
                target = victim.ip if victim is not None else lan_cidr
                argv = ["nmap", "-n", rng.choice(("-sT", "-sS")), "-p", ",".join(plist), "--max-retries", "1",
                        "-T4", target]
                protos, ports = ["tcp"], [int(p) for p in plist]
            else:
                technique = "T1021"
                tool = "sshpass+ssh"
                pool = [h for h in self.hosts if "ssh" in h.services and h.name != attacker.name
                        and h.zone == "lan" and (victim is None or h.name == victim.name)]
                chosen = rng.sample(pool, min(len(pool), rng.randint(2, 4)))
                targets = [f"{h.ip}/32" for h in chosen]
                victims = sorted(h.ip for h in chosen)
                argv = ["{python}", "{agent}", "ssh-logins", _json({
                    "targets": [[h.ip, h.services["ssh"]] for h in chosen], "user": self.user, "once": True,
                    "commands": ["id; uname -a", "cat /etc/passwd", "ls -la ~", "ps aux"],
                    "delay": rng.choice((0.5, 1.0, 2.0)), "seed": rng.randrange(2**31),
                    "sessions": rng.choice((1, 2, 3))})]
                protos, ports = ["tcp"], sorted({h.services["ssh"] for h in chosen})
        return PlannedAttack(aid, kind, variant, tool, argv, technique, TECHNIQUES[technique], attacker.ip,
                             victims, targets, protos, ports, at, spec.timeout, params, files)

    def _wordlist(self, n: int) -> list[str]:
        words = self.rng.sample(_PASSWORDS, min(n, len(_PASSWORDS)))
        if self.rng.random() < 0.3:  # sometimes the right password is in the list (hydra then stops there)
            words.insert(self.rng.randrange(len(words) // 2, len(words) + 1), self.password)
        return words


def plan_scenario(scenario: Scenario, seed: int, *, duration: float | None = None) -> LabPlan:
    """Realise ``scenario`` for ``seed`` (deterministic); ``duration`` overrides the drawn run length."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    p = _Planner(scenario, seed)
    p.network()
    drawn = _draw(p.rng, scenario.duration)
    benign = p.benign()
    attacks = p.attacks()
    return LabPlan(scenario.name, seed, float(duration) if duration is not None else drawn, str(p.lan), p.lan_gw,
                   str(p.outside), p.out_gw, p.domain, p.user, p.password, p.hosts, benign, attacks,
                   p.rng.randint(4, 12),
                   # hydra waits out its -w timeout each time sshd drops a connection after MaxAuthTries
                   p.rng.choice((6, 6, 10)))
