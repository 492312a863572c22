"""Build sinks from ``[[sinks]]`` tables of the run configuration (docs/soc.md lists every key)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trustmesh.errors import ConfigError
from trustmesh.sinks._base import KINDS, Sink, SinkSet, redact_url
from trustmesh.sinks._bulk import BulkSink
from trustmesh.sinks._jsonl import JsonLinesSink
from trustmesh.sinks._redis import RedisStreamSink
from trustmesh.sinks._syslog import SyslogSink
from trustmesh.sinks._webhook import WebhookSink

__all__ = ["SINK_TYPES", "check_sink_spec", "open_sinks", "sink_from_spec", "sink_summary"]

_COMMON = {"type", "kinds"}
#: Keys each sink type takes (besides ``type`` and ``kinds``); values in docs/soc.md.
SINK_TYPES: dict[str, frozenset[str]] = {
    "jsonl": frozenset({"path", "max_bytes", "backups"}),
    "syslog": frozenset({"host", "port", "protocol", "format", "facility", "app_name", "enterprise_id", "timeout_s"}),
    "redis": frozenset({"url", "stream", "maxlen", "timeout_s"}),
    "bulk": frozenset({"path", "url", "index", "incident_index", "op", "timeout_s", "api_key_env", "username",
                       "password_env", "verify_tls"}),
    "webhook": frozenset({"url", "secret_env", "allow_unsigned", "retries", "backoff_s", "max_backoff_s",
                          "timeout_s", "breaker_after", "breaker_s", "deliveries_path", "verify_tls"}),
}
_PATHS = {"path", "deliveries_path"}
_SECRET_IN = {"url"}  # URLs may carry a password: redacted in summaries


def check_sink_spec(spec: Mapping[str, Any], *, where: str = "[[sinks]]", base: Path | None = None) -> dict[str, Any]:
    """Return a checked copy of one sink table (relative paths resolved against ``base``)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: each [[sinks]] entry must be a table")
    kind = spec.get("type")
    if kind not in SINK_TYPES:
        raise ConfigError(f"{where}: type must be one of {', '.join(sorted(SINK_TYPES))}, got {kind!r}")
    unknown = sorted(set(spec) - _COMMON - SINK_TYPES[kind])
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for a {kind} sink; known: "
                          f"{', '.join(sorted(SINK_TYPES[kind] | _COMMON))}")  # fmt: skip
    kinds = spec.get("kinds", list(KINDS))
    if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
        raise ConfigError(f"{where}: kinds must be a non-empty list of {', '.join(KINDS)}, got {kinds!r}")
    out = dict(spec)
    for key in _PATHS & set(out):
        raw = str(out[key])
        if raw != "-" and base is not None and not Path(raw).expanduser().is_absolute():
            out[key] = str(base / raw)
    if kind == "jsonl" and "path" not in out:
        raise ConfigError(f"{where}: a jsonl sink needs path (a file, or \"-\" for stdout)")
    if kind in {"syslog"} and "host" not in out:
        raise ConfigError(f"{where}: a syslog sink needs host")
    if kind == "webhook" and "url" not in out:
        raise ConfigError(f"{where}: a webhook sink needs url")
    try:  # build once to check every value; nothing is opened until the first document
        sink_from_spec(out, state_dir=None, where=where)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return out


def sink_from_spec(spec: Mapping[str, Any], *, state_dir: Path | None, where: str = "[[sinks]]") -> Sink:
    """Build the sink a checked spec describes (the webhook secret is read from the environment here)."""
    args = {k: v for k, v in spec.items() if k not in _COMMON}
    kind = spec["type"]
    if kind == "jsonl":
        return JsonLinesSink(args.pop("path"), **args)
    if kind == "syslog":
        if "format" in args:
            args["fmt"] = args.pop("format")
        return SyslogSink(args.pop("host"), **args)
    if kind == "redis":
        return RedisStreamSink(**args)
    if kind == "bulk":
        return BulkSink(**args)
    secret_env = str(args.pop("secret_env", "TRUSTMESH_WEBHOOK_SECRET"))
    allow_unsigned = bool(args.pop("allow_unsigned", False))
    secret = os.environ.get(secret_env)
    if not secret and not allow_unsigned:
        raise ConfigError(f"{where}: the webhook secret variable {secret_env} is not set (or set "
                          "allow_unsigned = true to send unsigned deliveries)")  # fmt: skip
    if "deliveries_path" not in args and state_dir is not None:
        args["deliveries_path"] = Path(state_dir) / "webhook-deliveries.jsonl"
    return WebhookSink(args.pop("url"), secret=secret.encode() if secret else None, **args)


def open_sinks(specs: Iterable[Mapping[str, Any]], *, state_dir: Path | None = None) -> SinkSet:
    """Build a :class:`SinkSet` from checked specs."""
    built: list[tuple[Sink, Iterable[str]]] = []
    for i, spec in enumerate(specs):
        where = f"[[sinks]] #{i + 1}"
        try:
            built.append((sink_from_spec(spec, state_dir=state_dir, where=where), spec.get("kinds", list(KINDS))))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return SinkSet(built)


def sink_summary(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Return a spec fit for the ledger: URLs without passwords, webhook URLs without their path (a
    webhook's token often is its path); secrets themselves are never in a spec, only variable names."""
    hide_path = spec.get("type") == "webhook"
    return {k: redact_url(str(v), keep_path=not hide_path) if k in _SECRET_IN else v for k, v in spec.items()}
