"""Guardrails that wrap every action: allowlist, rate limit, host cap, confidence floor.

``Guarded(action, guards, state)`` is itself an Action (the wrapper pattern): it checks the request,
drops allowlisted targets, trims to the per-incident host cap, and refuses (``status="denied"`` with
the reason) instead of calling the wrapped action when a guard says no. Rate limit and host cap count
what is stored in the state database, so they hold across processes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trustmesh.respond._actions import Action, ActionRequest, Outcome
from trustmesh.respond._queue import ApprovalQueue

__all__ = ["Guarded", "Guards"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Guards:
    """Guard settings.

    Parameters
    ----------
    allowlist:
        Addresses or CIDRs never blocked or quarantined (gateway, DNS servers, the controller).
    protect_controller:
        Also never block loopback and the addresses this host resolves its own name to.
    max_blocks_per_minute:
        Rate limit on blocking actions, counted over the last 60 s in the state database.
    max_hosts_per_incident:
        Cap on how many distinct hosts one incident may block.
    min_confidence:
        Blocking actions are refused for incidents whose confidence is below this ...
    allow_low_confidence:
        ... unless this is True.
    protect_link_local:
        Never block link-local, multicast, broadcast or unspecified addresses: they are neighbour
        discovery, DHCP and routing protocol traffic, and blocking them cuts the segment off.
    """

    allowlist: tuple[str, ...] = ()
    protect_controller: bool = True
    max_blocks_per_minute: int = 30
    max_hosts_per_incident: int = 16
    min_confidence: float = 0.8
    allow_low_confidence: bool = False
    protect_link_local: bool = True

    def __post_init__(self) -> None:
        for item in self.allowlist:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"allowlist entry {item!r} is not an IP address or CIDR") from None
        if self.max_blocks_per_minute < 1:
            raise ValueError(f"max_blocks_per_minute must be >= 1, got {self.max_blocks_per_minute}")
        if self.max_hosts_per_incident < 1:
            raise ValueError(f"max_hosts_per_incident must be >= 1, got {self.max_hosts_per_incident}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON (stored with queued approvals)."""
        d = dataclasses.asdict(self)
        d["allowlist"] = list(self.allowlist)
        return d

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Guards:
        """Rebuild guards from ``to_dict`` output."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"unknown guard settings: {', '.join(unknown)}")
        args = dict(doc)
        if "allowlist" in args:
            args["allowlist"] = tuple(args["allowlist"])
        return cls(**args)

    def networks(self) -> list[Network]:
        """Return the allowlist as networks, plus the controller's own addresses when protected."""
        nets: list[Network] = [ipaddress.ip_network(a, strict=False) for a in self.allowlist]
        if self.protect_controller:
            nets += [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
            nets += [ipaddress.ip_network(a) for a in _own_addresses()]
        if self.protect_link_local:
            nets += [ipaddress.ip_network(n) for n in _LINK_LOCAL]
        return nets


_LINK_LOCAL = ("169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32", "0.0.0.0/32",
               "fe80::/10", "ff00::/8", "::/128")


def _own_addresses() -> set[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return set()
    return {str(info[4][0]).split("%")[0] for info in infos}


def _target_host(target: str) -> str:
    # flow targets are "SRC>DST/PROTO:PORT"; the blocked host is the source
    return target.split(">", 1)[0]


def allowlisted(target: str, nets: Sequence[Network]) -> Network | None:
    """Return the allowlist network that covers a target, or None."""
    addrs = [_target_host(target)]
    if ">" in target:
        addrs.append(target.split(">", 1)[1].split("/", 1)[0])
    for addr in addrs:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            continue
        for net in nets:
            if ip.version == net.version and ip in net:
                return net
    return None


class Guarded:
    """Wrap an action so every apply passes the guards first (and rollback/expire pass through)."""

    def __init__(self, action: Action, guards: Guards, state: ApprovalQueue | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.action, self.guards, self.state, self.clock = action, guards, state, clock
        self.kind, self.blocks = action.kind, action.blocks
        self._recent: list[float] = []  # used when there is no state database

    def spec(self) -> dict[str, Any]:
        """Return the wrapped action's config."""
        return self.action.spec()

    def check(self, request: ActionRequest) -> tuple[ActionRequest | None, list[str]]:
        """Return the request trimmed to what guards allow (None if nothing) and the reasons."""
        if not self.action.blocks:
            return request, []
        g, notes = self.guards, []
        inc = request.incident
        if inc.confidence < g.min_confidence and not g.allow_low_confidence:
            return None, [f"confidence {inc.confidence:.3f} is below min_confidence {g.min_confidence} "
                          "(set allow_low_confidence to act anyway)"]
        nets = g.networks()
        kept: list[str] = []
        for target in request.targets:
            net = allowlisted(target, nets)
            if net is not None:
                notes.append(f"{target} is allowlisted ({net})")
            else:
                kept.append(target)
        if not kept:
            return None, notes or ["no targets"]
        now = self.clock()
        if self.state is not None:
            recent = self.state.blocking_since(now - 60.0)
        else:
            recent = sum(t >= now - 60 for t in self._recent)
        if recent >= g.max_blocks_per_minute:
            return None, [*notes, f"rate limit: {recent} blocking actions in the last 60 s "
                                  f"(max_blocks_per_minute={g.max_blocks_per_minute})"]
        already = self.state.hosts_blocked(inc.incident_id) if self.state else set()
        room = g.max_hosts_per_incident - len({_target_host(t) for t in already})
        fresh_hosts: list[str] = []
        capped: list[str] = []
        final: list[str] = []
        for target in kept:
            host = _target_host(target)
            if host in already or host in fresh_hosts:
                final.append(target)
            elif len(fresh_hosts) < room:
                fresh_hosts.append(host)
                final.append(target)
            else:
                capped.append(target)
        if capped:
            notes.append(f"host cap: {len(capped)} target(s) over max_hosts_per_incident="
                         f"{g.max_hosts_per_incident} not blocked: {', '.join(capped[:5])}")
        if not final:
            return None, notes
        return dataclasses.replace(request, targets=tuple(final)), notes

    def apply(self, request: ActionRequest, *, enforce: bool) -> Outcome:
        """Run the guards, then the wrapped action on what they allow."""
        allowed, notes = self.check(request)
        if allowed is None:
            return Outcome("denied", "; ".join(notes), request.targets)
        out = self.action.apply(allowed, enforce=enforce)
        if self.action.blocks and out.status != "failed":
            self._recent.append(self.clock())
        if notes:
            return dataclasses.replace(out, detail=f"{out.detail} (guards: {'; '.join(notes)})")
        return out

    def rollback(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """Roll back through the wrapped action (guards never block an undo)."""
        return self.action.rollback(state, enforce=enforce)

    def expire(self, state: dict[str, Any], *, enforce: bool) -> Outcome:
        """Expire through the wrapped action."""
        return self.action.expire(state, enforce=enforce)
