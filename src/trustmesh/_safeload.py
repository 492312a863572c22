"""Load untrusted YAML and JSON with size, depth and alias limits: the one place every loader goes.

YAML anchors and aliases let a few hundred bytes describe a document of billions of nodes (the
"billion laughs" alias bomb); PyYAML builds such a document lazily as a graph, but anything that
walks it afterwards (duplicate-key checks, pydantic validation, ``json.dumps``) expands it. So the
composed node graph is measured *before* it is constructed: the number of aliases, the depth and the
number of nodes the document would have once every alias is expanded are all bounded, and a
recursive alias (a node that contains itself) is refused. JSON has no aliases, but deep nesting
reaches Python's recursion limit in ``json.loads`` and in every consumer, so depth and size are
bounded as well. Every refusal is one ``InputError`` (or the caller's subclass) naming the source.
"""

from __future__ import annotations

import json
import re
import math
from dataclasses import dataclass
from typing import Any

import yaml

from trustmesh.errors import InputError, TrustmeshError

__all__ = ["JsonLimits", "YamlLimits", "check_depth", "load_json", "load_yaml", "load_yaml_node"]


@dataclass(frozen=True, slots=True)
class YamlLimits:
    """Bounds on one YAML document (defaults fit every playbook and scenario file by a wide margin)."""

    max_bytes: int = 1 << 20
    max_aliases: int = 100
    max_nodes: int = 100_000  # after expanding every alias
    max_depth: int = 64


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """Bounds on one JSON document."""

    max_bytes: int = 8 << 20
    max_depth: int = 64


def _where(source: str, mark: Any, columns: bool = True) -> str:
    if mark is None:
        return source
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if columns else f"{source}:{mark.line + 1}"


def _measure(root: yaml.Node, source: str, limits: YamlLimits, error: type[TrustmeshError]) -> None:
    """Refuse a composed graph whose expansion is too big, too deep or recursive (no expansion done)."""
    expanded: dict[int, int] = {}  # id(node) -> nodes in its expansion
    on_path: set[int] = set()
    # iterative post-order walk: (node, depth, children pushed?)
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            if isinstance(node, yaml.MappingNode):
                kids = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                kids = list(node.value)
            else:
                kids = []
            total = 1 + sum(expanded[id(k)] for k in kids)
            if total > limits.max_nodes:
                raise error(f"{_where(source, node.start_mark)}: document expands to more than "
                            f"{limits.max_nodes} nodes (alias expansion bomb?)")
            expanded[key] = total
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise error(f"{_where(source, node.start_mark)}: recursive alias (a node that contains itself)")
        if depth > limits.max_depth:
            raise error(f"{_where(source, node.start_mark)}: nested deeper than {limits.max_depth} levels")
        on_path.add(key)
        stack.append((node, depth, True))
        if isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        else:
            kids = []
        for kid in kids:
            if id(kid) in on_path:
                raise error(f"{_where(source, kid.start_mark)}: recursive alias (a node that contains itself)")
            stack.append((kid, depth + 1, False))


class _CountingLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no stubs here
    """SafeLoader that counts aliases while composing and stops past the limit."""

    max_aliases = 100

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self.max_aliases:
                event = self.peek_event()
                raise yaml.YAMLError(f"more than {self.max_aliases} aliases at line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)


def load_yaml_node(text: str | bytes, source: str = "<string>", *, limits: YamlLimits | None = None,
                   error: type[TrustmeshError] = InputError, columns: bool = True) -> tuple[yaml.Node | None, Any]:
    """Compose and construct one YAML document safely; return ``(node graph, Python value)``.

    The node graph (with line/column marks) lets callers point at the offending line of a value.
    ``columns=False`` names ``FILE:LINE`` instead of ``FILE:LINE:COL`` in syntax errors.
    Raises ``error`` (an ``InputError`` subclass) naming ``source``, line and column on any problem.
    """
    lim = limits or YamlLimits()
    if isinstance(text, bytes):
        if len(text) > lim.max_bytes:
            raise error(f"{source}: {len(text)} bytes, more than the {lim.max_bytes} allowed for YAML")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{source}: not UTF-8 text (byte {exc.start})") from None
    if len(text) > lim.max_bytes:
        raise error(f"{source}: {len(text)} characters, more than the {lim.max_bytes} allowed for YAML")
    loader_cls = type("_Loader", (_CountingLoader,), {"max_aliases": lim.max_aliases})
    try:
        loader = loader_cls(text)  # the reader refuses control characters already here
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _measure(node, source, lim, error)
        value = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{_where(source, mark, columns)}: not valid YAML: {problem}") from None
    except RecursionError:
        raise error(f"{source}: YAML nested too deeply") from None
    except (ValueError, TypeError, OverflowError, AttributeError, KeyError, IndexError) as exc:
        # PyYAML's constructors fail this way on e.g. "!!timestamp" with no date or a huge "!!int"
        raise error(f"{source}: cannot build a YAML value ({exc})") from None
    finally:
        loader.dispose()
    return node, value


def load_yaml(text: str | bytes, source: str = "<string>", *, limits: YamlLimits | None = None,
              error: type[TrustmeshError] = InputError) -> Any:
    """Return the Python value of one YAML document, refusing alias bombs, deep or huge documents."""
    return load_yaml_node(text, source, limits=limits, error=error)[1]


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_too_deep(text: str, max_depth: int) -> bool:
    """Return whether JSON text nests containers deeper than ``max_depth``, without parsing it.

    Checked *before* ``json.loads``: a dependency (py_ecc, pulled in by eth-tester) raises Python's
    recursion limit to 100,000, and then the C JSON decoder overflows the C stack on deeply nested input
    (a segfault) instead of raising ``RecursionError``. Text with fewer brackets than ``max_depth`` is
    answered without a scan.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        ch = token.group()
        if ch in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def check_depth(value: Any, max_depth: int, source: str = "<value>",
                error: type[TrustmeshError] = InputError) -> None:
    """Raise ``error`` when containers in ``value`` nest deeper than ``max_depth`` (iterative walk)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise error(f"{source}: nested deeper than {max_depth} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def load_json(text: str | bytes, source: str = "<string>", *, limits: JsonLimits | None = None,
              error: type[TrustmeshError] = InputError) -> Any:
    """Parse one JSON document strictly: bounded size and depth, finite numbers, no NaN/Infinity.

    Raises ``error`` naming ``source`` and the problem; never ``RecursionError`` or ``ValueError``.
    """
    lim = limits or JsonLimits()
    if len(text) > lim.max_bytes:
        raise error(f"{source}: {len(text)} bytes of JSON, more than the {lim.max_bytes} allowed")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{source}: JSON is not UTF-8 (byte {exc.start})") from None
    if json_too_deep(text, lim.max_depth):
        raise error(f"{source}: JSON nested deeper than {lim.max_depth} levels")
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_float)
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise error(f"{source}: JSON nested deeper than {lim.max_depth} levels") from None
    except ValueError as exc:  # parse_constant/parse_float refusals, int digit limits
        raise error(f"{source}: not acceptable JSON ({exc})") from None
    check_depth(value, lim.max_depth, source, error)
    return value
