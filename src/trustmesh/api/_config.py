"""``trustmesh serve`` settings: the pipeline TOML's ledger/state folders plus its ``[api]`` table.

``serve`` reads the same file as ``trustmesh run``, so both see one ledger and one state folder::

    [pipeline]
    origin = "example.org/trustmesh/gateway-1"
    ledger_dir = "../trustmesh-ledger"
    state_dir = "../trustmesh-state"

    [api]
    host = "127.0.0.1"            # loopback unless you mean it
    port = 8443
    tls_cert = "tls/cert.pem"     # both or neither; without them the server speaks plain HTTP
    tls_key = "tls/key.pem"
    tokens_file = "../trustmesh-state/api-tokens.json"   # default: STATE_DIR/api-tokens.json
    max_body_bytes = 65536
    metrics_public = false        # true: /metrics needs no token (for a scraper on a trusted network)
    reports_dir = "../evaluation" # blueprint report.html/report.json folders shown by the console

Relative paths are relative to the file. Unknown keys are refused by name.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from trustmesh.errors import ConfigError

__all__ = ["ServeConfig"]

DEFAULT_ORIGIN: Final = "trustmesh.local/log"
_API_KEYS: Final = frozenset({"host", "port", "tls_cert", "tls_key", "tokens_file", "max_body_bytes",
                              "metrics_public", "reports_dir"})


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Where the served state lives and how the server listens."""

    ledger_dir: Path
    state_dir: Path
    origin: str | None = None  # None: whatever the ledger is called (a new one: DEFAULT_ORIGIN)
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tokens_file: Path | None = None
    max_body_bytes: int = 65536
    metrics_public: bool = False
    reports_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"api.port must be in 1..65535, got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("api.tls_cert and api.tls_key must be given together")
        if not 256 <= self.max_body_bytes <= 16 << 20:
            raise ConfigError(f"api.max_body_bytes must be in 256..16777216, got {self.max_body_bytes}")

    @property
    def token_path(self) -> Path:
        """The token file (default ``STATE_DIR/api-tokens.json``)."""
        return self.tokens_file if self.tokens_file is not None else self.state_dir / "api-tokens.json"

    @property
    def tls(self) -> bool:
        """Whether the server speaks HTTPS."""
        return self.tls_cert is not None

    @classmethod
    def load(cls, path: Path | str, **overrides: Any) -> ServeConfig:
        """Read the pipeline TOML; ``overrides`` (flags) win when not None."""
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        base = path.parent

        def rel(raw: Any, key: str) -> Path:
            if not isinstance(raw, str) or not raw:
                raise ConfigError(f"{path}: {key} must be a path string")
            p = Path(raw).expanduser()
            return p if p.is_absolute() else base / p

        pipe = doc.get("pipeline", {})
        api = doc.get("api", {})
        if not isinstance(pipe, dict) or not isinstance(api, dict):
            raise ConfigError(f"{path}: [pipeline] and [api] must be tables")
        values: dict[str, Any] = {
            "ledger_dir": rel(pipe["ledger_dir"], "pipeline.ledger_dir") if "ledger_dir" in pipe
            else base / "trustmesh-ledger",
            "state_dir": rel(pipe["state_dir"], "pipeline.state_dir") if "state_dir" in pipe
            else base / "trustmesh-state",
        }
        if "origin" in pipe:
            values["origin"] = str(pipe["origin"])
        for key, raw in api.items():
            if key not in _API_KEYS:
                raise ConfigError(f"{path}: unknown key api.{key}; known: {', '.join(sorted(_API_KEYS))}")
            if key in {"tls_cert", "tls_key", "tokens_file", "reports_dir"}:
                values[key] = rel(raw, f"api.{key}")
            elif key in {"port", "max_body_bytes"}:
                if isinstance(raw, bool) or not isinstance(raw, int):
                    raise ConfigError(f"{path}: api.{key} must be an integer, got {raw!r}")
                values[key] = raw
            elif key == "metrics_public":
                if not isinstance(raw, bool):
                    raise ConfigError(f"{path}: api.metrics_public must be true or false, got {raw!r}")
                values[key] = raw
            else:
                values[key] = str(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
