"""Ground truth of a lab run (``truth.json``) and the per-flow labels derived from it.

A flow is an attack flow when it belongs to an attack's conversation: the attacker and one of the
attack's ``targets`` are its two ends, its protocol is one the attack's tool sends (or the ICMP errors
it provokes), its destination port is one the attack aims at (when the attack names ports) and it
starts while the attack's process ran (``start - slack`` .. ``end + slack``); among several matching
attacks the most recently started one wins. ICMP flows (no ports: a meter folds an echo flood into
the flow an earlier ping opened) match when their span overlaps the attack. Everything else is
benign. The rule uses addresses, ports and times only, so flows metered by any tool (nfstream, Zeek)
from the same capture get the same labels.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trustmesh.errors import InputError

__all__ = ["TRUTH_FORMAT", "GroundTruth", "TruthAttack", "TruthBenign", "TruthHost", "label_flows", "load_truth",
           "match_attacks"]

TRUTH_FORMAT = "trustmesh-lab-truth/1"

#: seconds of slack around an attack's measured process window (process start/exit vs packet times)
SLACK_S = 1.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TruthHost(_Model):
    """A host of the site: its address, role and the services it ran (kind -> port)."""

    name: str
    ip: str
    role: Literal["server", "iot", "workstation", "attacker", "gateway"]
    zone: Literal["lan", "outside"]
    mac: str = ""
    services: dict[str, int] = Field(default_factory=dict)


class TruthAttack(_Model):
    """One attack as it ran: the real command, who, against what, and its measured time window."""

    id: str
    kind: Literal["port-scan", "host-sweep", "syn-flood", "udp-flood", "icmp-flood", "brute-force",
                  "web-enumeration", "lateral-movement"]
    variant: str
    tool: str
    argv: list[str]
    technique_id: str
    technique_name: str
    sub_technique: str = ""
    attacker: str
    victims: list[str]
    targets: list[str]
    protos: list[str]
    ports: list[int] | None
    start: float
    end: float
    exit_code: int | None
    timed_out: bool = False
    params: dict[str, Any] = Field(default_factory=dict)


class TruthBenign(_Model):
    """One benign generator process: what it did, from which host to which server, and when."""

    id: str
    kind: str
    tool: str
    host: str
    server: str
    port: int
    start: float
    end: float
    params: dict[str, Any] = Field(default_factory=dict)


class GroundTruth(_Model):
    """The whole ``truth.json``; construct it with ``load_truth`` or ``GroundTruth.from_json``."""

    format: Literal["trustmesh-lab-truth/1"] = "trustmesh-lab-truth/1"
    scenario: str
    seed: int
    start: float
    end: float
    lan: str
    outside: str
    gateway: dict[str, str]
    domain: str
    capture: dict[str, Any]
    hosts: list[TruthHost]
    attacks: list[TruthAttack]
    benign: list[TruthBenign]
    summary: dict[str, Any] = Field(default_factory=dict)
    flows: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "truth.json") -> GroundTruth:
        """Parse and check a truth document; raise ``InputError`` naming ``source`` and the field."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{source}: not valid JSON: {exc}") from None
        try:
            truth = cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "document"
            raise InputError(f"{source}: {field}: {err['msg']}") from None
        for a in truth.attacks:
            for t in a.targets:
                try:
                    ipaddress.ip_network(t, strict=False)
                except ValueError:
                    raise InputError(f"{source}: attacks.{a.id}.targets: {t!r} is not an address or CIDR") from None
            if a.end < a.start:
                raise InputError(f"{source}: attacks.{a.id}: end {a.end} is before start {a.start}")
        return truth

    @property
    def attackers(self) -> list[str]:
        """Every address that ran an attack, sorted."""
        return sorted({a.attacker for a in self.attacks})

    def host_role(self, ip: str) -> str | None:
        """Return the role of the host at ``ip`` (None when it is not a lab host)."""
        return next((h.role for h in self.hosts if h.ip == ip), None)


def load_truth(path: Path | str) -> GroundTruth:
    """Load and check a lab run's ``truth.json`` (or the run folder that holds it)."""
    p = Path(path)
    if p.is_dir():
        p = p / "truth.json"
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    return GroundTruth.from_json(raw, str(p))


def _in_nets(ips: pd.Series, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> np.ndarray:
    uniq = ips.unique()
    hit = set()
    for ip in uniq:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if any(addr in n for n in nets):
            hit.add(ip)
    return np.asarray(ips.isin(hit).to_numpy(), dtype=bool)


def match_attacks(flows: pd.DataFrame, truth: GroundTruth, *, slack: float = SLACK_S) -> pd.Series:
    """Return, per flow, the id of the attack whose conversation it belongs to, or "".

    When several attacks match (one attacker running two tools at one victim at once), the one that started
    most recently before the flow wins: a flood or scan started during a slow brute force owns the flows
    that follow it.
    """
    need = ("ts", "src_ip", "dst_ip", "dst_port", "proto")
    missing = [c for c in need if c not in flows.columns]
    if missing:
        raise InputError(f"flows: missing columns for labelling: {', '.join(missing)}")
    out = np.full(len(flows), "", dtype=object)
    if flows.empty:
        return pd.Series(out, index=flows.index, dtype="str")
    ts = flows["ts"].astype(float).to_numpy()
    src = flows["src_ip"].astype(str)
    dst = flows["dst_ip"].astype(str)
    proto = flows["proto"].astype(str).str.lower().to_numpy()
    dport = flows["dst_port"].to_numpy()
    dur = (flows["duration"].astype(float).fillna(0.0).to_numpy() if "duration" in flows.columns
           else np.zeros(len(flows)))
    icmp = proto == "icmp"
    for a in sorted(truth.attacks, key=lambda a: (a.start, a.id)):
        nets = [ipaddress.ip_network(t, strict=False) for t in a.targets]
        in_time = (ts >= a.start - slack) & (ts <= a.end + slack)
        # ICMP has no ports, so a meter folds an echo flood into the flow an earlier ping to the same host
        # opened: for ICMP the flow's span overlapping the attack counts too
        in_time |= icmp & (ts <= a.end + slack) & (ts + dur >= a.start - slack)
        protos = np.isin(proto, a.protos)
        outbound = (src == a.attacker).to_numpy() & _in_nets(dst, nets)
        if a.ports is not None:
            outbound &= np.isin(dport, a.ports) | (proto == "icmp")
        # flows a target opens towards the attacker during the attack: ICMP errors the probes provoke
        inbound = (dst == a.attacker).to_numpy() & _in_nets(src, nets) & (proto == "icmp")
        hit = in_time & protos & (outbound | inbound) & ((out == "") | (ts >= a.start - slack) | icmp)
        out[hit] = a.id
    return pd.Series(out, index=flows.index, dtype="str")


def label_flows(flows: pd.DataFrame, truth: GroundTruth) -> pd.DataFrame:
    """Return ``flows`` with ``label`` ("benign"/"attack"), ``attack_type`` (the attack kind or "benign")
    and ``technique_id`` ("" for benign flows) columns set from the ground truth (``flows`` is not mutated)."""
    ids = match_attacks(flows, truth)
    by_id = {a.id: a for a in truth.attacks}
    out = flows.copy()
    is_attack = (ids != "").to_numpy()
    out["label"] = np.where(is_attack, "attack", "benign")
    out["attack_type"] = [by_id[i].kind if i else "benign" for i in ids]
    out["technique_id"] = [by_id[i].technique_id if i else "" for i in ids]
    return out
