"""Playbooks: YAML rules that match incidents and list ordered, parameterised actions.

A file holds one playbook (``name``/``match``/``actions`` at the top) or several (``playbooks: [...]``).
The schema is a set of pydantic models with ``extra="forbid"``; a file that does not fit is rejected
at load time with ``FILE:LINE:COL: field PATH: problem``, the line taken from PyYAML's node marks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trustmesh._safeload import load_yaml_node
from trustmesh.errors import PlaybookError
from trustmesh.records import Incident

__all__ = [
    "ACTION_TYPES", "DEFAULT_PLAYBOOKS", "ActionStep", "Match", "Playbook", "PlaybookSet"]

#: The playbooks shipped with trustmesh (used when a configuration names none).
DEFAULT_PLAYBOOKS = Path(__file__).resolve().parent / "default_playbooks.yaml"

ACTION_TYPES = ("nftables", "quarantine", "webhook", "notify")
_MAX_TTL_S = 7 * 24 * 3600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NftablesParams(_Strict):
    """Parameters of an ``nftables`` step: what to block and how."""

    target: Literal["source", "destination", "flow"] = "source"
    verdict: Literal["drop", "reject"] = "drop"


class QuarantineParams(_Strict):
    """Parameters of a ``quarantine`` step: which side of the incident is the device to isolate."""

    target: Literal["source", "destination"] = "destination"


class WebhookParams(_Strict):
    """Parameters of a ``webhook`` step (the URL belongs to the configured action, not the playbook)."""

    include_alert_ids: bool = True


class NotifyParams(_Strict):
    """Parameters of a ``notify`` step."""

    message: str = Field(default="incident {incident_id}: {technique_id} severity {severity}", max_length=500)


class _Step(_Strict):
    ttl_s: int | None = Field(default=None, gt=0, le=_MAX_TTL_S)
    approval: bool = False


class NftablesStep(_Step):
    type: Literal["nftables"]
    params: NftablesParams = NftablesParams()
    ttl_s: int | None = Field(default=900, gt=0, le=_MAX_TTL_S)


class QuarantineStep(_Step):
    type: Literal["quarantine"]
    params: QuarantineParams = QuarantineParams()
    ttl_s: int | None = Field(default=3600, gt=0, le=_MAX_TTL_S)


class WebhookStep(_Step):
    type: Literal["webhook"]
    params: WebhookParams = WebhookParams()


class NotifyStep(_Step):
    type: Literal["notify"]
    params: NotifyParams = NotifyParams()


ActionStep = Annotated[
    NftablesStep | QuarantineStep | WebhookStep | NotifyStep, Field(discriminator="type")
]


class Match(_Strict):
    """Conditions on incident fields; every condition given must hold (empty match = every incident)."""

    technique: list[str] | None = None
    predicted_class: list[str] | None = None
    min_severity: int = Field(default=1, ge=1, le=4)
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    min_alerts: int = Field(default=1, ge=1)
    source_cidr: list[str] | None = None
    destination_cidr: list[str] | None = None

    @field_validator("technique")
    @classmethod
    def _technique_ids(cls, value: list[str] | None) -> list[str] | None:
        for item in value or ():
            if not (item.startswith("T") and item[1:5].isdigit() and len(item) in (5, 9)):
                raise ValueError(f"{item!r} is not a MITRE ATT&CK technique id like T1046 or T1499.002")
        return value

    @field_validator("source_cidr", "destination_cidr")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        for item in value or ():
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP network ({exc})") from None
        return value

    def matches(self, incident: Incident) -> bool:
        """Return True when the incident meets every condition."""
        if self.technique is not None:
            tech = incident.technique_id or ""
            if not any(tech == t or tech.startswith(t + ".") for t in self.technique):
                return False
        if self.predicted_class is not None:
            label = (incident.predicted_class or "").lower()
            if label not in {c.lower() for c in self.predicted_class}:
                return False
        if incident.severity < self.min_severity or incident.confidence < self.min_confidence:
            return False
        if incident.alert_count < self.min_alerts:
            return False
        if self.source_cidr is not None and not _any_in(incident.source_ips, self.source_cidr):
            return False
        if self.destination_cidr is not None and not _any_in(incident.destination_ips, self.destination_cidr):
            return False
        return True


def _any_in(addresses: Sequence[str], cidrs: Sequence[str]) -> bool:
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    for addr in addresses:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            continue
        if any(ip.version == n.version and ip in n for n in nets):
            return True
    return False


class Playbook(_Strict):
    """One rule: when ``match`` holds, run ``actions`` in order."""

    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    match: Match = Match()
    actions: list[ActionStep] = Field(min_length=1)

    def step_id(self, index: int) -> str:
        """Return the stable id ``NAME#INDEX`` of one step (what the LLM may choose from)."""
        return f"{self.name}#{index}"

    @classmethod
    def load(cls, path: Path | str) -> Playbook:
        """Load a file holding exactly one playbook; raise PlaybookError naming line and field."""
        pbs = PlaybookSet.load(path)
        if len(pbs.playbooks) != 1:
            raise PlaybookError(f"{path}: expected one playbook, found {len(pbs.playbooks)}")
        return pbs.playbooks[0]


class _SetDoc(_Strict):
    version: Literal[1] = 1
    playbooks: list[Playbook] = Field(min_length=1)


class PlaybookSet:
    """An ordered list of playbooks; the first whose match holds decides (like firewall rules)."""

    def __init__(self, playbooks: Sequence[Playbook]) -> None:
        names = [p.name for p in playbooks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise PlaybookError(f"playbook names must be unique; repeated: {', '.join(dupes)}")
        self.playbooks: tuple[Playbook, ...] = tuple(playbooks)

    def __iter__(self) -> Iterator[Playbook]:
        return iter(self.playbooks)

    def __len__(self) -> int:
        return len(self.playbooks)

    def get(self, name: str) -> Playbook:
        """Return the playbook called ``name``."""
        for pb in self.playbooks:
            if pb.name == name:
                return pb
        raise PlaybookError(f"no playbook named {name!r}")

    def matching(self, incident: Incident) -> list[Playbook]:
        """Return every playbook whose match holds, in file order."""
        return [pb for pb in self.playbooks if pb.match.matches(incident)]

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> PlaybookSet:
        """Parse and validate YAML text; raise PlaybookError with ``source:line:col`` on any problem."""
        root, data = load_yaml_node(text, source, error=PlaybookError)
        if root is None:
            raise PlaybookError(f"{source}: empty playbook file")
        _reject_duplicate_keys(root, source)
        if isinstance(data, dict) and "playbooks" not in data:
            data, root = {"playbooks": [data]}, _wrap(root)
        try:
            doc = _SetDoc.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err["loc"])
            node = _node_at(root, loc)
            mark = node.start_mark
            more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
            raise PlaybookError(
                f"{source}:{mark.line + 1}:{mark.column + 1}: field {_dotted(root, loc)}: {err['msg']}{more}"
            ) from None
        return cls(doc.playbooks)

    @classmethod
    def load(cls, path: Path | str | Sequence[Path | str]) -> PlaybookSet:
        """Load a playbook file, a directory of ``*.yaml``/``*.yml`` files, or a list of either."""
        paths: list[Path] = []
        for item in [path] if isinstance(path, (str, Path)) else list(path):
            p = Path(item)
            if p.is_dir():
                paths.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
            else:
                paths.append(p)
        books: list[Playbook] = []
        for p in paths:
            try:
                text = p.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise PlaybookError(f"{p}: playbook file not found") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise PlaybookError(f"{p}: cannot read playbook ({exc})") from None
            books.extend(cls.from_yaml(text, str(p)).playbooks)
        if not books:
            raise PlaybookError(f"{path}: no playbooks found")
        return cls(books)


def _wrap(node: yaml.Node) -> yaml.Node:
    # a single-playbook document is validated as {"playbooks": [doc]}; mirror that in the node tree
    key = yaml.ScalarNode("tag:yaml.org,2002:str", "playbooks", node.start_mark, node.start_mark)
    seq = yaml.SequenceNode("tag:yaml.org,2002:seq", [node], node.start_mark, node.end_mark)
    return yaml.MappingNode("tag:yaml.org,2002:map", [(key, seq)], node.start_mark, node.end_mark)


def _node_at(root: yaml.Node, loc: tuple[Any, ...]) -> yaml.Node:
    """Walk the composed YAML tree along a pydantic error location; stop at the deepest node found."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if found is None:
                if isinstance(part, str) and part in ACTION_TYPES:
                    continue  # the discriminated-union tag pydantic inserts into the location
                # an unknown (extra) field: point at its key
                key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
                return key if key is not None else node
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            continue
    return node


def _dotted(root: yaml.Node, loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ACTION_TYPES and out.endswith("]"):
            continue  # union tag, not a field
        else:
            out += ("." if out else "") + str(part)
    return out or "<document>"


def _reject_duplicate_keys(node: yaml.Node, source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(getattr(key, "value", ""))
            if name in seen:
                m = key.start_mark
                raise PlaybookError(f"{source}:{m.line + 1}:{m.column + 1}: field {name!r} is given twice")
            seen.add(name)
            _reject_duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(item, source)
