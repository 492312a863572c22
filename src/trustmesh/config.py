"""Settings: defaults, then a TOML file, then ``TRUSTMESH_*`` environment variables, then flags.

The data directory is resolved as: an explicit ``--data-dir``; ``TRUSTMESH_DATA``; the ``data_dir`` of
the settings file; ``../shared/datasets`` beside the working directory or beside the source checkout,
when present. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustmesh._safeload import json_too_deep
from trustmesh.errors import ConfigError

__all__ = ["DATA_HINT", "MAX_TOML_BYTES", "Settings", "check_field_types", "find_data_dir", "load_settings", "load_toml"]

DATA_HINT = (
    "point TRUSTMESH_DATA (or --data-dir) at a folder laid out like ../shared/datasets "
    "(see docs/datasets.md for where each file comes from)"
)

_ENV_PREFIX = "TRUSTMESH_"
# environment names that do not follow TRUSTMESH_<FIELD>
_ENV_ALIASES = {"TRUSTMESH_DATA": "data_dir"}


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-wide settings; every field can be set in TOML or as ``TRUSTMESH_<FIELD>``."""

    data_dir: Path | None = None
    cache_dir: Path = Path.home() / ".cache" / "trustmesh"
    ledger_dir: Path = Path("trustmesh-ledger")
    log_level: str = "WARNING"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"log_level must be DEBUG/INFO/WARNING/ERROR/CRITICAL, got {self.log_level!r}")


#: Largest settings/pipeline TOML file read (they are a few hundred bytes; this refuses a huge file).
MAX_TOML_BYTES = 1 << 20


_MAX_TOML_DEPTH = 100


def load_toml(path: Path | str, what: str = "settings file") -> dict[str, Any]:
    """Read a TOML file; every failure is one ``ConfigError`` naming the file (never a traceback).

    Refuses a missing or unreadable file, more than ``MAX_TOML_BYTES``, bytes that are not UTF-8,
    invalid TOML and nesting deep enough to exhaust the parser's recursion.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a {what}") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    if len(raw) > MAX_TOML_BYTES:
        raise ConfigError(f"{p}: {len(raw)} bytes, more than the {MAX_TOML_BYTES} allowed for a {what}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}); TOML files must be UTF-8") from None
    # Checked before parsing: once a dependency raised the recursion limit (py_ecc sets 100,000),
    # tomllib's recursion no longer ends in RecursionError on deep arrays (trustmesh._safeload.json_too_deep).
    if json_too_deep(text, _MAX_TOML_DEPTH):
        raise ConfigError(f"{p}: TOML nested too deeply (more than {_MAX_TOML_DEPTH} levels)")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{p}: TOML nested too deeply") from None
    except ValueError as exc:  # an integer literal over Python's 4300-digit conversion limit
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def check_field_types(cls: type, values: dict[str, Any], source: str, prefix: str = "") -> None:
    """Raise ``ConfigError`` naming ``source`` and the key when a TOML value has the wrong type.

    Checks each value against the dataclass field's annotation (``int``, ``float``, ``bool``, ``str``,
    ``Path``, ``tuple``, optional ``X | None``): a string where a number belongs, a table where a string
    belongs, ``true`` where an integer belongs. Keys that are not fields are left to the caller.
    """
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for key, value in values.items():
        kind = fields.get(key)
        if kind is None:
            continue
        parts = {p.strip() for p in kind.split("|")}
        if value is None and "None" in parts:
            continue
        ok = False
        for part in parts:
            if part == "bool":
                ok = ok or isinstance(value, bool)
            elif part == "int":
                ok = ok or (isinstance(value, int) and not isinstance(value, bool))
            elif part == "float":
                ok = ok or (isinstance(value, (int, float)) and not isinstance(value, bool))
            elif part == "str" or part == "Path":
                ok = ok or isinstance(value, (str, Path))
            elif part.startswith("tuple"):
                ok = ok or isinstance(value, (list, tuple))
            else:
                ok = True  # a richer type (a nested config): its own loader checks it
        if not ok:
            want = " or ".join(sorted(p for p in parts if p != "None"))
            raise ConfigError(f"{source}: key {prefix}{key}: expected {want}, got {_type_name(value)} {value!r}"[:300])


def _coerce(name: str, raw: Any, source: str = "environment") -> Any:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if name not in fields:
        raise ConfigError(f"{source}: unknown setting {name!r}; known: {', '.join(sorted(fields))}")
    kind = str(fields[name].type)
    if not source.startswith("environment"):  # TOML values are typed: refuse a wrong type instead of converting it
        check_field_types(Settings, {name: raw}, source)
    try:
        if "Path" in kind:
            return None if raw in (None, "") else Path(str(raw)).expanduser()
        if kind == "int":
            return int(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: setting {name!r}: cannot use {raw!r} ({exc})") from exc


def load_settings(path: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build settings from an optional TOML file (table ``[trustmesh]`` or top level) and the environment."""
    values: dict[str, Any] = {}
    if path is not None:
        doc = load_toml(path)
        table = doc.get("trustmesh", doc)
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: key trustmesh: expected a table, got {_type_name(table)}")
        for key, raw in table.items():
            if isinstance(raw, dict):
                continue  # other sections belong to other components (pipeline, playbooks, ...)
            values[key] = _coerce(key, raw, str(path))
    environ = os.environ if env is None else env
    for key, raw in environ.items():
        if not key.startswith(_ENV_PREFIX):
            continue
        name = _ENV_ALIASES.get(key, key[len(_ENV_PREFIX):].lower())
        if name in {f.name for f in dataclasses.fields(Settings)}:
            values[name] = _coerce(name, raw, f"environment variable {key}")
    try:
        return Settings(**values)
    except ConfigError as exc:
        where = str(path) if path is not None else "environment"
        raise ConfigError(f"{where}: {exc}") from None


def _source_checkout_root() -> Path:
    # src/trustmesh/config.py -> repository root
    return Path(__file__).resolve().parents[2]


def find_data_dir(explicit: Path | str | None = None, settings: Settings | None = None) -> Path | None:
    """Return the dataset folder to use, or None when none can be found (callers explain what is missing)."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("TRUSTMESH_DATA")
    if env:
        return Path(env).expanduser()
    if settings is not None and settings.data_dir is not None:
        return settings.data_dir
    for base in (Path.cwd(), _source_checkout_root()):
        candidate = base.parent / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return None
