"""Scenario files: the YAML that describes a lab site, validated with pydantic.

A scenario names host groups (role, how many, which real services they run), benign generators and
attacks. Anything written as a two-element list ``[lo, hi]`` is a range the seed draws from; a list of
variants is a choice the seed makes. Errors name the file, the line and the field.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trustmesh._safeload import load_yaml_node
from trustmesh.errors import InputError

__all__ = [
    "ATTACK_KINDS",
    "ATTACK_VARIANTS",
    "BENIGN_KINDS",
    "SERVICE_KINDS",
    "AttackSpec",
    "BenignSpec",
    "HostSpec",
    "Scenario",
    "list_scenarios",
    "load_scenario",
    "parse_scenario",
]

SERVICE_KINDS = ("dns", "http", "iperf3", "mqtt", "ssh")
BENIGN_KINDS = ("bulk-transfer", "dns-lookups", "http-browsing", "mqtt-telemetry", "ssh-logins")

#: attack kind -> its variants (the tool and technique each runs is in docs/lab.md)
ATTACK_VARIANTS: dict[str, tuple[str, ...]] = {
    "port-scan": ("syn", "connect", "udp", "slow"),
    "host-sweep": ("ping", "tcp"),
    "syn-flood": ("hping3",),
    "udp-flood": ("hping3",),
    "icmp-flood": ("hping3",),
    "brute-force": ("ssh", "ssh-slow", "mqtt"),
    "web-enumeration": ("python", "curl"),
    "lateral-movement": ("scan", "login"),
}
ATTACK_KINDS = tuple(ATTACK_VARIANTS)

#: what each benign generator and attack variant needs on its target host
_BENIGN_NEEDS = {"bulk-transfer": ("iperf3", "ssh"), "dns-lookups": ("dns",), "http-browsing": ("http",),
                 "mqtt-telemetry": ("mqtt",), "ssh-logins": ("ssh",)}
_ATTACK_NEEDS = {("brute-force", "ssh"): "ssh", ("brute-force", "ssh-slow"): "ssh", ("brute-force", "mqtt"): "mqtt",
                 ("web-enumeration", "python"): "http", ("web-enumeration", "curl"): "http",
                 ("syn-flood", "hping3"): "", ("udp-flood", "hping3"): "", ("lateral-movement", "login"): "ssh"}

_NAME = r"^[a-z][a-z0-9-]{0,15}$"
_MAX_DURATION = 300.0


def _span(v: Any, what: str) -> Any:
    if isinstance(v, list):
        if len(v) != 2:
            raise ValueError(f"a {what} range is [lo, hi], got {len(v)} values")
        if v[0] > v[1]:
            raise ValueError(f"range lo > hi: {v}")
        return (v[0], v[1])
    return v


FloatSpan = float | tuple[float, float]
IntSpan = int | tuple[int, int]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class HostSpec(_Model):
    """A group of hosts with one role; ``count`` (or a ``[lo, hi]`` range) instances."""

    name: Annotated[str, Field(pattern=_NAME)]
    role: Literal["server", "iot", "workstation", "attacker"]
    count: IntSpan = 1
    zone: Literal["lan", "outside"] | None = None
    services: tuple[Literal["dns", "http", "iperf3", "mqtt", "ssh"], ...] = ()

    @field_validator("count", mode="before")
    @classmethod
    def _count(cls, v: Any) -> Any:
        return _span(v, "count")

    @field_validator("count")
    @classmethod
    def _count_bounds(cls, v: IntSpan) -> IntSpan:
        lo, hi = v if isinstance(v, tuple) else (v, v)
        if lo < 1 or hi > 12:
            raise ValueError(f"count must be within 1..12, got {v}")
        return v

    @property
    def where(self) -> str:
        """The zone, defaulting to ``outside`` for attackers and ``lan`` for everyone else."""
        return self.zone or ("outside" if self.role == "attacker" else "lan")


def _names(v: Any) -> Any:
    return (v,) if isinstance(v, str) else v


class BenignSpec(_Model):
    """A benign generator: every host of the ``from`` groups talks to the ``to`` host."""

    kind: Literal["bulk-transfer", "dns-lookups", "http-browsing", "mqtt-telemetry", "ssh-logins"]
    from_: Annotated[tuple[str, ...], Field(alias="from", min_length=1)]
    to: str
    interval: FloatSpan | None = None
    start: FloatSpan = (0.5, 3.0)

    _v_from = field_validator("from_", mode="before")(lambda v: _names(v))

    @field_validator("interval", "start", mode="before")
    @classmethod
    def _spans(cls, v: Any) -> Any:
        return _span(v, "time")

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: FloatSpan | None) -> FloatSpan | None:
        if v is not None and (min(v) if isinstance(v, tuple) else v) <= 0.05:
            raise ValueError("interval must be > 0.05 s")
        return v


class AttackSpec(_Model):
    """One attack: ``kind``, a variant (or a list the seed picks from), attacker group, target, start."""

    kind: Literal["port-scan", "host-sweep", "syn-flood", "udp-flood", "icmp-flood", "brute-force",
                  "web-enumeration", "lateral-movement"]
    variant: tuple[str, ...] = ()
    from_: Annotated[str, Field(alias="from")]
    to: str
    at: FloatSpan = (5.0, 20.0)
    timeout: Annotated[float, Field(gt=1.0, le=120.0)] = 60.0
    #: floods only: packets per second and seconds (default: drawn from 200-800 pps for 5-12 s)
    rate: IntSpan | None = None
    seconds: FloatSpan | None = None

    _v_variant = field_validator("variant", mode="before")(lambda v: _names(v))

    @field_validator("at", "rate", "seconds", mode="before")
    @classmethod
    def _at(cls, v: Any) -> Any:
        return _span(v, "value")

    @model_validator(mode="after")
    def _variants(self) -> AttackSpec:
        allowed = ATTACK_VARIANTS[self.kind]
        bad = [v for v in self.variant if v not in allowed]
        if bad:
            raise ValueError(f"variant {bad[0]!r} is not one of {', '.join(allowed)} for {self.kind}")
        if (self.rate is not None or self.seconds is not None) and not self.kind.endswith("-flood"):
            raise ValueError(f"rate and seconds apply to floods only, not {self.kind}")
        for name, v, lo, hi in (("rate", self.rate, 1, 5000), ("seconds", self.seconds, 0.5, 60)):
            if v is not None and not all(lo <= x <= hi for x in (v if isinstance(v, tuple) else (v,))):
                raise ValueError(f"{name} must be within {lo}..{hi}, got {v}")
        return self

    @property
    def variants(self) -> tuple[str, ...]:
        """The variants the seed may choose from (all of the kind's when none are given)."""
        return self.variant or ATTACK_VARIANTS[self.kind]


class Scenario(_Model):
    """A whole lab site: hosts, benign background and attacks over ``duration`` seconds."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")]
    description: str = ""
    duration: FloatSpan = 90.0
    lan_prefix: IntSpan = (23, 25)
    hosts: Annotated[tuple[HostSpec, ...], Field(min_length=1)]
    benign: tuple[BenignSpec, ...] = ()
    attacks: tuple[AttackSpec, ...] = ()

    @field_validator("duration", "lan_prefix", mode="before")
    @classmethod
    def _spans(cls, v: Any) -> Any:
        return _span(v, "value")

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: FloatSpan) -> FloatSpan:
        lo, hi = v if isinstance(v, tuple) else (v, v)
        if lo < 5 or hi > _MAX_DURATION:
            raise ValueError(f"duration must be within 5..{_MAX_DURATION:g} s, got {v}")
        return v

    @field_validator("lan_prefix")
    @classmethod
    def _prefix(cls, v: IntSpan) -> IntSpan:
        lo, hi = v if isinstance(v, tuple) else (v, v)
        if lo < 22 or hi > 27:
            raise ValueError(f"lan_prefix must be within 22..27, got {v}")
        return v

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        groups = {h.name: h for h in self.hosts}
        if len(groups) != len(self.hosts):
            dup = next(h.name for h in self.hosts if sum(g.name == h.name for g in self.hosts) > 1)
            raise ValueError(f"host name {dup!r} is used twice")
        for i, b in enumerate(self.benign):
            for src in b.from_:
                if src not in groups:
                    raise ValueError(f"benign[{i}].from: unknown host {src!r}")
            target = groups.get(b.to)
            if target is None:
                raise ValueError(f"benign[{i}].to: unknown host {b.to!r}")
            if not any(s in target.services for s in _BENIGN_NEEDS[b.kind]):
                raise ValueError(f"benign[{i}].to: {b.kind} needs host {b.to!r} to run "
                                 f"{' or '.join(_BENIGN_NEEDS[b.kind])}")
        shortest = min(self.duration) if isinstance(self.duration, tuple) else self.duration
        for i, a in enumerate(self.attacks):
            latest = max(a.at) if isinstance(a.at, tuple) else a.at
            if latest >= shortest:
                raise ValueError(f"attacks[{i}].at: starts at {latest:g} s, not before the run's end "
                                 f"({shortest:g} s)")
            if a.from_ not in groups:
                raise ValueError(f"attacks[{i}].from: unknown host {a.from_!r}")
            if a.kind == "lateral-movement" and groups[a.from_].where != "lan":
                raise ValueError(f"attacks[{i}].from: lateral movement starts from an inside (lan) host")
            if a.to == "lan":
                if a.kind not in ("host-sweep", "lateral-movement"):
                    raise ValueError(f"attacks[{i}].to: only host-sweep and lateral-movement take 'lan'")
                continue
            target = groups.get(a.to)
            if target is None:
                raise ValueError(f"attacks[{i}].to: unknown host {a.to!r} (a host name, or 'lan')")
            if a.to == a.from_ and groups[a.to].count == 1:
                raise ValueError(f"attacks[{i}].to: a host cannot attack itself")
            for v in a.variants:
                need = _ATTACK_NEEDS.get((a.kind, v))
                if need and need not in target.services:
                    raise ValueError(f"attacks[{i}].to: {a.kind} ({v}) needs host {a.to!r} to run {need}")
        return self


# ------------------------------------------------------------------------------------------ loading


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk the composed YAML tree along a pydantic error location; return the deepest line found."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


_LOC_INDEX = re.compile(r"^\d+$")
_TYPE_TAGS = ("tuple[float, float]", "float", "int", "tuple[int, int]")


def _field(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic location as ``hosts[2].count`` (union member tags dropped)."""
    field = ".".join(f"[{k}]" if isinstance(k, int) or _LOC_INDEX.match(str(k)) else str(k)
                     for k in loc if k not in _TYPE_TAGS)
    return field.replace(".[", "[").replace("from_", "from")


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate scenario YAML; raise ``InputError`` naming ``source``, the line and the field."""
    try:
        node, data = load_yaml_node(text, source, columns=False)  # alias, depth and size limits (trustmesh._safeload)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{source}{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise InputError(f"{source}: a scenario is a YAML mapping (name, hosts, benign, attacks)")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        err = errors[0]
        loc = tuple(err["loc"])
        # a model-level check reports "hosts[2].to: ..." in its message; find that field's line
        msg = str(err["msg"]).removeprefix("Value error, ")
        m = re.match(r"^(\w+)\[(\d+)\]\.(\w+): ", msg)
        if m:
            loc = (*loc, m.group(1), int(m.group(2)), m.group(3))
            msg = msg[m.end():]
        line = _line_of(node, tuple("from" if k == "from_" else k for k in loc))
        field = _field(loc)
        # a value that fails every member of a union (int | [lo, hi]) reports once per member: count fields
        extra = len({_field(tuple(e["loc"])) for e in errors[1:]} - {field, _field(tuple(err["loc"]))})
        more = f" (and {extra} more error{'s' if extra > 1 else ''})" if extra else ""
        raise InputError(f"{source}:{line or 1}: {field or 'scenario'}: {msg}{more}") from None


def _shipped() -> dict[str, Any]:
    root = resources.files("trustmesh.lab") / "scenarios"
    return {p.name.removesuffix(".yaml"): p for p in root.iterdir() if p.name.endswith(".yaml")}


def list_scenarios() -> dict[str, Scenario]:
    """Return the shipped scenarios by name."""
    return {name: parse_scenario(p.read_text(encoding="utf-8"), f"scenarios/{p.name}")
            for name, p in sorted(_shipped().items())}


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a shipped scenario by name, or a scenario file by path."""
    shipped = _shipped()
    key = str(name_or_path)
    if key in shipped:
        return parse_scenario(shipped[key].read_text(encoding="utf-8"), f"scenarios/{key}.yaml")
    p = Path(name_or_path)
    if not p.is_file():
        raise InputError(f"{key}: no such scenario file, and not a shipped scenario "
                         f"({', '.join(sorted(shipped))})")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a UTF-8 text file") from None
    return parse_scenario(text, str(p))
