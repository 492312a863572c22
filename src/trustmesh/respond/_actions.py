"""Response actions: nftables, quarantine (isolation set + MQTT), webhook, notify.

Every action is dry-run unless called with ``enforce=True``; in dry-run it reports exactly what it
would do (the commands, the message) and touches nothing outside the process. Actions never raise
for an operational failure (nft error, unreachable endpoint): they return an ``Outcome`` with
``status="failed"`` and a clear ``detail``, so one broken action cannot crash the caller.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from trustmesh.errors import ActionError, MissingDependencyError
from trustmesh.records import Incident

__all__ = [
    "Action",
    "ActionRequest",
    "NftablesAction",
    "NotifyAction",
    "Outcome",
    "QuarantineAction",
    "WebhookAction",
    "action_from_spec",
]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,23}$")
_NETNS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOPIC = re.compile(r"^[^#+\x00]{1,200}$")


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One step to carry out: the incident, the resolved targets, parameters and TTL."""

    action_id: str
    incident: Incident
    action: str
    targets: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    ttl_s: int | None = None
    playbook: str | None = None
    step: int | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an action did: status (applied/dry_run/failed/denied/noop), detail and the exact commands."""

    status: str
    detail: str
    targets: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    state: dict[str, Any] = field(default_factory=dict)  # what rollback needs
    #: one ``(target, status, detail)`` per requested target, for actions that apply per target
    per_target: tuple[tuple[str, str, str], ...] = ()


@runtime_checkable
class Action(Protocol):
    """A response action plug-in (see ``Guarded`` for the wrapper that enforces guardrails)."""

    kind: str  # the playbook step type it serves
    blocks: bool  # True when it cuts traffic (guards: allowlist, host cap, confidence)

    def apply(self, request: ActionRequest, *, enforce: bool) -> Outcome:
        """Carry out the request (dry-run unless ``enforce``)."""
        ...

    def rollback(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """Undo an earlier apply, given the ``Outcome.state`` it returned."""
        ...

    def expire(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """Do what the TTL end needs beyond what the kernel does by itself."""
        ...

    def spec(self) -> dict[str, Any]:
        """Return a JSON config that ``action_from_spec`` turns back into an equal action."""
        ...


def _check_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ActionError(f"target {value!r} is not an IP address") from None


def _run(argv: list[str], stdin: str | None = None,
         timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)


class NftablesAction:
    """Block addresses or flows with elements in nftables sets that carry a per-element ``timeout``.

    The table ``inet TABLE`` holds, for each verdict (``drop``, ``reject``: suffix ``_rej``), an IPv4
    set ``SET``, an IPv6 set ``SET6`` and a flow set ``SET_flow`` (saddr . daddr . l4proto . dport),
    all with ``flags timeout``; base chains ``SET_input`` and ``SET_forward`` match them, so several
    actions (a blocklist, a quarantine set) can share one table. The kernel removes an
    element when its TTL ends (nft(8), "SETS"); rollback deletes the element early. ``netns`` runs
    every command through ``ip netns exec NETNS``, which is how tests act inside a namespace.
    """

    kind = "nftables"
    blocks = True

    def __init__(self, table: str = "trustmesh", set: str = "blocklist", netns: str | None = None,
                 *, nft: str = "nft", ip: str = "ip", priority: int = -10) -> None:
        if not _NAME.match(table):
            raise ValueError(f"table must match {_NAME.pattern}, got {table!r}")
        if not _NAME.match(set) or len(set) > 20:
            raise ValueError(f"set must match {_NAME.pattern} and be at most 20 characters, got {set!r}")
        if netns is not None and not _NETNS.match(netns):
            raise ValueError(f"netns must match {_NETNS.pattern}, got {netns!r}")
        self.table, self.set, self.netns = table, set, netns
        self.nft, self.ip, self.priority = nft, ip, priority
        self._ready = False  # table known to exist (skips the probe on later applies)

    def spec(self) -> dict[str, Any]:
        """Return the config to rebuild this action."""
        return {"kind": self.kind, "table": self.table, "set": self.set, "netns": self.netns,
                "nft": self.nft, "ip": self.ip, "priority": self.priority}

    def _argv(self, *args: str) -> list[str]:
        prefix = [self.ip, "netns", "exec", self.netns] if self.netns else []
        return [*prefix, self.nft, *args]

    def _set_name(self, kind: str, verdict: str) -> str:
        base = {"v4": self.set, "v6": f"{self.set}6", "flow": f"{self.set}_flow"}[kind]
        return base if verdict == "drop" else f"{base}_rej"

    def ruleset(self) -> str:
        """Return the nft script that creates the table, sets and chains."""
        sets, rules_in, rules_fwd = [], [], []
        for verdict in ("drop", "reject"):
            v4, v6, fl = (self._set_name(k, verdict) for k in ("v4", "v6", "flow"))
            sets += [
                f"  set {v4} {{ type ipv4_addr; flags timeout; }}",
                f"  set {v6} {{ type ipv6_addr; flags timeout; }}",
                f"  set {fl} {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags timeout; }}",
            ]
            rules_in += [f"    ip saddr @{v4} {verdict}", f"    ip6 saddr @{v6} {verdict}",
                         f"    ip saddr . ip daddr . meta l4proto . th dport @{fl} {verdict}"]
            rules_fwd += [f"    ip saddr @{v4} {verdict}", f"    ip daddr @{v4} {verdict}",
                          f"    ip6 saddr @{v6} {verdict}", f"    ip6 daddr @{v6} {verdict}",
                          f"    ip saddr . ip daddr . meta l4proto . th dport @{fl} {verdict}"]
        hook = "type filter hook {} priority " + str(self.priority) + "; policy accept;"
        # chains are named after the set so several actions (blocklist, quarantine) share one table
        return "\n".join([
            f"table inet {self.table} {{", *sets,
            f"  chain {self.set}_input {{", "    " + hook.format("input"), *rules_in, "  }",
            f"  chain {self.set}_forward {{", "    " + hook.format("forward"), *rules_fwd, "  }",
            "}", "",
        ])

    def _ensure(self) -> list[str]:
        """Create this action's sets and chains once (an existing set is left as it is)."""
        probe = self._argv("list", "set", "inet", self.table, self.set)
        if _run(probe).returncode == 0:
            self._ready = True
            return []
        argv = self._argv("-f", "-")
        done = _run(argv, stdin=self.ruleset())
        if done.returncode != 0:
            raise ActionError(f"nft could not create table inet {self.table}: {done.stderr.strip()}")
        self._ready = True
        return [" ".join(argv) + " <<< (table definition)"]

    def elements(self, request: ActionRequest) -> list[tuple[str, str]]:
        """Return ``(set name, element)`` pairs for the request's targets (ActionError on the first bad one)."""
        good, bad = self.elements_per_target(request)
        if bad:
            raise ActionError(bad[0][1])
        return [(s, e) for _, s, e in good]

    def elements_per_target(self, request: ActionRequest) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        """Split the targets into ``(target, set, element)`` to add and ``(target, problem)`` refused.

        A target that does not parse is refused on its own; the others still get their element.
        """
        verdict = str(request.params.get("verdict", "drop"))
        if verdict not in {"drop", "reject"}:
            raise ActionError(f"verdict must be drop or reject, got {verdict!r}")
        good: list[tuple[str, str, str]] = []
        bad: list[tuple[str, str]] = []
        flows = request.params.get("target") == "flow"
        for item in request.targets:
            try:
                if flows:
                    src, dst, proto, port = _parse_flow(item)
                    good.append((item, self._set_name("flow", verdict), f"{src} . {dst} . {proto} . {port}"))
                else:
                    ip = _check_ip(item)
                    good.append((item, self._set_name("v4" if ip.version == 4 else "v6", verdict), str(ip)))
            except ActionError as exc:
                bad.append((item, str(exc)))
        return good, bad

    def apply(self, request: ActionRequest, *, enforce: bool) -> Outcome:
        """Add one set element per target, with ``timeout TTLs`` when the request has a TTL.

        Targets are applied one by one in effect: a target that does not parse, or that nft refuses,
        fails alone (``per_target`` gives each target's result) and every other target is still
        blocked. The good elements run as one ``nft -f -`` script; if nft refuses that script, each
        element is retried on its own so one bad element cannot leave the rest unblocked.
        """
        try:
            good, bad = self.elements_per_target(request)
        except ActionError as exc:
            return Outcome("failed", str(exc), request.targets,
                           per_target=tuple((t, "failed", str(exc)) for t in request.targets))
        refused = [(t, "failed", why) for t, why in bad]
        if not good:
            if not refused:
                return Outcome("noop", "no targets to block", ())
            return Outcome("failed", "; ".join(d for _, _, d in refused), request.targets, per_target=tuple(refused))
        ttl = f" timeout {int(request.ttl_s)}s" if request.ttl_s else ""
        cmds = [self._argv("add", "element", "inet", self.table, s, f"{{ {e}{ttl} }}") for _, s, e in good]
        shown = tuple(" ".join(c) for c in cmds)
        if not enforce:
            state = {"spec": self.spec(), "elements": [[s, e] for _, s, e in good]}
            per = tuple((t, "dry_run", f"would add {e}") for t, _, e in good) + tuple(refused)
            return Outcome("dry_run", f"would add {len(cmds)} element(s) to inet {self.table}" + _refused(refused),
                           tuple(t for t, _, _ in good), shown, state, per)
        lines = [f"add element inet {self.table} {s} {{ {e}{ttl} }}\n" for _, s, e in good]
        try:
            setup = [] if self._ready else self._ensure()
            done = _run(self._argv("-f", "-"), stdin="".join(lines))
            if done.returncode != 0 and "No such file or directory" in done.stderr:
                setup = self._ensure()  # the table was deleted behind our back: recreate, retry once
                done = _run(self._argv("-f", "-"), stdin="".join(lines))
            if done.returncode == 0:
                results = [(t, "applied", f"added {e}") for t, _, e in good]
            else:  # nft refused the batch (all or none): find which element it refuses, apply the rest
                results = []
                for (t, _, e), line in zip(good, lines, strict=True):
                    one = _run(self._argv("-f", "-"), stdin=line)
                    results.append((t, "applied", f"added {e}") if one.returncode == 0
                                   else (t, "failed", f"nft failed: {one.stderr.strip() or one.returncode}"))
        except FileNotFoundError as exc:
            return Outcome("failed", f"cannot run {exc.filename!r}: not installed or not on PATH",
                           request.targets, shown, per_target=tuple(refused))
        except (ActionError, subprocess.TimeoutExpired, OSError) as exc:
            return Outcome("failed", str(exc), request.targets, shown, per_target=tuple(refused))
        applied = [(t, s, e) for (t, s, e), r in zip(good, results, strict=True) if r[1] == "applied"]
        failed = [r for r in results if r[1] == "failed"] + refused
        per = tuple(results) + tuple(refused)
        if not applied:
            return Outcome("failed", "; ".join(f"{t}: {d}" for t, _, d in failed), request.targets,
                           tuple(setup) + shown, per_target=per)
        state = {"spec": self.spec(), "elements": [[s, e] for _, s, e in applied]}
        return Outcome("applied", f"added {len(applied)} element(s) to inet {self.table}" + _refused(failed),
                       tuple(t for t, _, _ in applied), tuple(setup) + shown, state, per)

    def rollback(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """Delete the elements an apply added; an element already expired counts as removed."""
        elements = [(str(s), str(e)) for s, e in state.get("elements", [])]
        cmds = [self._argv("delete", "element", "inet", self.table, s, f"{{ {e} }}") for s, e in elements]
        shown = tuple(" ".join(c) for c in cmds)
        if not enforce:
            return Outcome("dry_run", f"would delete {len(cmds)} element(s)", (), shown)
        gone = 0
        try:
            for argv in cmds:
                done = _run(argv)
                if done.returncode != 0:
                    if "No such file or directory" in done.stderr:
                        gone += 1  # the kernel already removed it (TTL) or it was never added
                        continue
                    return Outcome("failed", f"nft failed: {done.stderr.strip()}", (), shown)
        except (FileNotFoundError, subprocess.TimeoutExpired, OSError) as exc:
            return Outcome("failed", f"nft could not run: {exc}", (), shown)
        note = f" ({gone} had already expired)" if gone else ""
        return Outcome("rolled_back", f"deleted {len(cmds) - gone} element(s){note}", (), shown)

    def expire(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """Nothing to do: the kernel removed the elements when their timeout ended."""
        return Outcome("expired", "set elements removed by the kernel's per-element timeout")

    def list_elements(self) -> list[str]:
        """Return the elements currently in the table's sets (as nft prints them)."""
        done = _run(self._argv("-j", "list", "table", "inet", self.table))
        if done.returncode != 0:
            raise ActionError(f"nft list table inet {self.table} failed: {done.stderr.strip()}")
        out: list[str] = []
        for item in json.loads(done.stdout).get("nftables", []):
            for elem in item.get("set", {}).get("elem", []) or []:
                value = elem.get("elem", {}).get("val", elem) if isinstance(elem, dict) else elem
                out.append(json.dumps(value) if not isinstance(value, str) else value)
        return out

    def delete_table(self) -> None:
        """Remove the whole table (used by tests and ``teardown``)."""
        self._ready = False
        done = _run(self._argv("delete", "table", "inet", self.table))
        if done.returncode != 0 and "No such file or directory" not in done.stderr:
            raise ActionError(f"nft delete table inet {self.table} failed: {done.stderr.strip()}")


def _refused(failed: Sequence[tuple[str, str, str]]) -> str:
    if not failed:
        return ""
    shown = "; ".join(f"{t!r}: {d}" for t, _, d in failed[:5])
    return f"; {len(failed)} target(s) not blocked: {shown}" + (" ..." if len(failed) > 5 else "")


def _parse_flow(item: str) -> tuple[str, str, str, int]:
    # flows are written "SRC>DST/PROTO:PORT" by the responder (IPv4 only: the flow set is ipv4_addr)
    m = re.fullmatch(r"([^>]+)>([^/]+)/(tcp|udp|sctp):(\d{1,5})", item)
    if m is None:
        raise ActionError(f"flow target {item!r} is not SRC>DST/PROTO:PORT")
    src, dst = _check_ip(m.group(1)), _check_ip(m.group(2))
    if src.version != 4 or dst.version != 4:
        raise ActionError(f"flow target {item!r}: flow blocking supports IPv4 only")
    port = int(m.group(4))
    if not 0 < port < 65536:
        raise ActionError(f"flow target {item!r}: port must be 1..65535")
    return str(src), str(dst), m.group(3), port


class QuarantineAction:
    """Move a device into an isolation set and tell device gateways over MQTT (paho-mqtt, QoS 1).

    Message: JSON ``{"command": "isolate"|"release", "device", "incident_id", "ttl_s", "issued_at"}``
    on ``TOPIC/DEVICE``. ``isolation`` (an NftablesAction, usually set ``quarantine``) is optional:
    without it only the MQTT message is sent. The TTL end publishes ``release`` (``expire``).
    """

    kind = "quarantine"
    blocks = True

    def __init__(self, broker: str = "127.0.0.1", port: int = 1883, topic: str = "trustmesh/quarantine",
                 *, isolation: NftablesAction | None = None, client_id: str = "trustmesh-responder",
                 timeout_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, got {port}")
        if not _TOPIC.match(topic):
            raise ValueError(f"topic must be 1..200 chars without MQTT wildcards, got {topic!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.broker, self.port, self.topic = broker, port, topic.rstrip("/")
        self.isolation, self.client_id, self.timeout_s = isolation, client_id, timeout_s
        self.clock = clock  # stamps issued_at; a parameter so output is reproducible in tests

    def spec(self) -> dict[str, Any]:
        """Return the config to rebuild this action."""
        return {"kind": self.kind, "broker": self.broker, "port": self.port, "topic": self.topic,
                "client_id": self.client_id, "timeout_s": self.timeout_s,
                "isolation": self.isolation.spec() if self.isolation else None}

    def _messages(self, devices: tuple[str, ...], command: str, incident_id: str,
                  ttl_s: int | None) -> list[tuple[str, bytes]]:
        now = self.clock()
        return [(f"{self.topic}/{d}", json.dumps(
            {"command": command, "device": d, "incident_id": incident_id, "ttl_s": ttl_s, "issued_at": now},
            sort_keys=True).encode()) for d in devices]

    def publish(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish messages with QoS 1 and wait for each PUBACK; raise ActionError on any failure."""
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:
            raise MissingDependencyError("paho-mqtt", "respond") from None
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv311)
        where = f"MQTT broker {self.broker}:{self.port}"
        try:
            rc = client.connect(self.broker, self.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise ActionError(f"{where} unreachable: {exc}") from None
        if rc != 0:
            raise ActionError(f"{where} refused the connection (rc={rc})")
        client.loop_start()
        try:
            for topic, payload in messages:
                info = client.publish(topic, payload, qos=1)
                info.wait_for_publish(timeout=self.timeout_s)
                if not info.is_published():
                    raise ActionError(f"{where}: no PUBACK for {topic} within {self.timeout_s} s")
        except (RuntimeError, ValueError) as exc:
            raise ActionError(f"{where}: publish failed: {exc}") from None
        finally:
            client.disconnect()
            client.loop_stop()

    def apply(self, request: ActionRequest, *, enforce: bool) -> Outcome:
        """Isolate each target device (nft set, if configured) and publish ``isolate`` for it."""
        try:
            devices = tuple(str(_check_ip(t)) for t in request.targets)
        except ActionError as exc:
            return Outcome("failed", str(exc), request.targets)
        if not devices:
            return Outcome("noop", "no device to quarantine", ())
        msgs = self._messages(devices, "isolate", request.incident.incident_id, request.ttl_s)
        shown = [f"mqtt publish {t} {p.decode()}" for t, p in msgs]
        state: dict[str, Any] = {"spec": self.spec(), "devices": list(devices),
                                 "incident_id": request.incident.incident_id}
        nft_cmds: tuple[str, ...] = ()
        if self.isolation is not None:
            sub = ActionRequest(request.action_id, request.incident, "nftables", devices,
                                {"target": "source", "verdict": "drop"}, request.ttl_s)
            done = self.isolation.apply(sub, enforce=enforce)
            nft_cmds, state["isolation"] = done.commands, done.state
            if done.status == "failed":
                return Outcome("failed", f"isolation set: {done.detail}", devices, nft_cmds, state)
        if not enforce:
            return Outcome("dry_run", f"would isolate {len(devices)} device(s)", devices,
                           nft_cmds + tuple(shown), state)
        try:
            self.publish(msgs)
        except (ActionError, MissingDependencyError) as exc:
            if self.isolation is not None:
                # the devices ARE isolated: report applied so the block is kept for rollback and expiry
                return Outcome("applied", f"isolated {len(devices)} device(s) in the isolation set, but the "
                               f"gateways were not told: {exc}", devices, nft_cmds + tuple(shown), state)
            return Outcome("failed", str(exc), devices, nft_cmds + tuple(shown), state)
        return Outcome("applied", f"isolated {len(devices)} device(s) and notified {self.topic}", devices,
                       nft_cmds + tuple(shown), state)

    def _release(self, state: dict[str, Any], *, enforce: bool, status: str) -> Outcome:
        devices = tuple(str(d) for d in state.get("devices", []))
        msgs = self._messages(devices, "release", str(state.get("incident_id", "")), None)
        shown = tuple(f"mqtt publish {t} {p.decode()}" for t, p in msgs)
        if not enforce:
            return Outcome("dry_run", f"would release {len(devices)} device(s)", devices, shown)
        try:
            self.publish(msgs)
        except (ActionError, MissingDependencyError) as exc:
            return Outcome("failed", str(exc), devices, shown)
        return Outcome(status, f"released {len(devices)} device(s)", devices, shown)

    def rollback(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """Delete the isolation elements and publish ``release``."""
        cmds: tuple[str, ...] = ()
        if self.isolation is not None and state.get("isolation"):
            done = self.isolation.rollback(state["isolation"], enforce=enforce)
            cmds = done.commands
            if done.status == "failed":
                return Outcome("failed", f"isolation set: {done.detail}", (), cmds)
        out = self._release(state, enforce=enforce, status="rolled_back")
        if out.status == "failed" and cmds and enforce:
            # the isolation is lifted even though the gateways could not be told: say both
            return Outcome("rolled_back", f"isolation removed, but the gateways were not told: {out.detail}",
                           out.targets, cmds + out.commands)
        return Outcome(out.status, out.detail, out.targets, cmds + out.commands)

    def expire(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """The kernel dropped the isolation elements; tell the gateways to release the devices."""
        return self._release(state, enforce=enforce, status="expired")


class WebhookAction:
    """POST the incident as JSON to an HTTP(S) endpoint; any 2xx answer counts as delivered."""

    kind = "webhook"
    blocks = False

    def __init__(self, url: str, *, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> None:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.url, self.timeout_s, self.headers = url, timeout_s, dict(headers or {})

    def spec(self) -> dict[str, Any]:
        """Return the config to rebuild this action (header values are not stored: they may be secret)."""
        return {"kind": self.kind, "url": self.url, "timeout_s": self.timeout_s}

    def apply(self, request: ActionRequest, *, enforce: bool) -> Outcome:
        """POST ``{"incident": ..., "action_id", "playbook", "step"}`` as JSON."""
        doc: dict[str, Any] = {"incident": request.incident.to_dict(), "action_id": request.action_id,
               "playbook": request.playbook, "step": request.step}
        if not request.params.get("include_alert_ids", True):
            doc["incident"].pop("alert_ids", None)
        body = json.dumps(doc, sort_keys=True).encode()
        shown = (f"POST {self.url} ({len(body)} bytes application/json)",)
        if not enforce:
            return Outcome("dry_run", f"would POST the incident to {self.url}", (), shown)
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **self.headers})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 (scheme checked)
                code = resp.status
        except urllib.error.HTTPError as exc:
            return Outcome("failed", f"webhook {self.url} answered HTTP {exc.code}", (), shown)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            return Outcome("failed", f"webhook {self.url} unreachable: {reason}", (), shown)
        if not 200 <= code < 300:
            return Outcome("failed", f"webhook {self.url} answered HTTP {code}", (), shown)
        return Outcome("applied", f"webhook {self.url} answered HTTP {code}", (), shown)

    def rollback(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """A delivered message cannot be taken back."""
        return Outcome("noop", "a webhook delivery cannot be rolled back")

    def expire(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """Nothing expires."""
        return Outcome("noop", "a webhook delivery has no TTL")


class NotifyAction:
    """Write a one-line notice to stdout, syslog (RFC 3164 via ``/dev/log`` or UDP) or the logger."""

    kind = "notify"
    blocks = False

    def __init__(self, channel: str = "stdout", *, syslog_address: str | tuple[str,
                                                                               int] = "/dev/log") -> None:
        if channel not in {"stdout", "syslog", "log"}:
            raise ValueError(f"channel must be stdout, syslog or log, got {channel!r}")
        self.channel, self.syslog_address = channel, syslog_address

    def spec(self) -> dict[str, Any]:
        """Return the config to rebuild this action."""
        addr = list(self.syslog_address) if isinstance(self.syslog_address, tuple) else self.syslog_address
        return {"kind": self.kind, "channel": self.channel, "syslog_address": addr}

    def apply(self, request: ActionRequest, *, enforce: bool) -> Outcome:
        """Format the step's message with the incident's fields and emit it."""
        inc = request.incident
        fields = {k: v for k, v in inc.to_dict().items() if isinstance(v, (str, int, float)) or v is None}
        try:
            text = str(request.params.get("message", "incident {incident_id}")).format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            return Outcome("failed", f"notify message template: {exc!r}")
        line = f"trustmesh: {text}"
        shown = (f"{self.channel}: {line}",)
        if not enforce:
            return Outcome("dry_run", f"would write to {self.channel}", (), shown)
        try:
            if self.channel == "stdout":
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            elif self.channel == "log":
                log.warning("%s", line)
            else:
                self._syslog(line)
        except OSError as exc:
            return Outcome("failed", f"{self.channel} unavailable: {exc}", (), shown)
        return Outcome("applied", f"wrote to {self.channel}", (), shown)

    def _syslog(self, line: str) -> None:
        # RFC 3164 framing, facility user (1) and severity warning (4): PRI = 1 * 8 + 4 = 12.
        # Written by hand because logging's SysLogHandler swallows send errors into stderr.
        data = f"<12>{line}".encode("utf-8", "replace")
        if isinstance(self.syslog_address, str):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.syslog_address)
                sock.send(data)
        else:
            host, port = self.syslog_address
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(data, (host, int(port)))

    def rollback(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """A notice cannot be taken back."""
        return Outcome("noop", "a notice cannot be rolled back")

    def expire(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """Nothing expires."""
        return Outcome("noop", "a notice has no TTL")


def action_from_spec(spec: dict[str, Any]) -> Action:
    """Rebuild an action from ``Action.spec()`` (used to approve or roll back in another process)."""
    kind = spec.get("kind")
    args = {k: v for k, v in spec.items() if k != "kind"}
    try:
        if kind == "nftables":
            return NftablesAction(args.pop("table"), args.pop("set"), args.pop("netns"), **args)
        if kind == "quarantine":
            iso = args.pop("isolation", None)
            isolation = action_from_spec(iso) if iso else None
            if isolation is not None and not isinstance(isolation, NftablesAction):
                raise ValueError("isolation must be an nftables action")
            return QuarantineAction(args.pop("broker"), args.pop("port"), args.pop("topic"),
                                    isolation=isolation, **args)
        if kind == "webhook":
            return WebhookAction(args.pop("url"), **args)
        if kind == "notify":
            addr = args.pop("syslog_address", "/dev/log")
            return NotifyAction(args.pop("channel"), syslog_address=tuple(addr) if isinstance(addr,
                                                                                              list) else addr)
    except (KeyError, TypeError, ValueError) as exc:
        raise ActionError(f"stored action config for {kind!r} is invalid: {exc}") from None
    raise ActionError(f"unknown action kind {kind!r}; known: nftables, quarantine, webhook, notify")


def tool_available(name: str) -> bool:
    """Return True when an executable is on PATH (nft, ip)."""
    return shutil.which(name) is not None
