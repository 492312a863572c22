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

from trustmesh.errors import ConfigError

__all__ = ["DATA_HINT", "Settings", "find_data_dir", "load_settings"]

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


def _coerce(name: str, raw: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if name not in fields:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(sorted(fields))}")
    kind = str(fields[name].type)
    try:
        if "Path" in kind:
            return None if raw in (None, "") else Path(str(raw)).expanduser()
        if kind == "int":
            return int(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: cannot use {raw!r} ({exc})") from exc


def load_settings(path: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build settings from an optional TOML file (table ``[trustmesh]`` or top level) and the environment."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: settings file not found") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        table = doc.get("trustmesh", doc)
        for key, raw in table.items():
            if isinstance(raw, dict):
                continue  # other sections belong to other components (pipeline, playbooks, ...)
            values[key] = _coerce(key, raw)
    environ = os.environ if env is None else env
    for key, raw in environ.items():
        if not key.startswith(_ENV_PREFIX):
            continue
        name = _ENV_ALIASES.get(key, key[len(_ENV_PREFIX):].lower())
        if name in {f.name for f in dataclasses.fields(Settings)}:
            values[name] = _coerce(name, raw)
    return Settings(**values)


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
