"""Pipeline configuration: :class:`PipelineConfig`, loadable from one TOML file (docs/pipeline.md)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustmesh.config import check_field_types, load_toml
from trustmesh.errors import ConfigError
from trustmesh.sinks import check_sink_spec, sink_summary
from trustmesh.respond import Guards

# --------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Everything ``trustmesh run`` needs; loadable from one TOML file (see examples/trustmesh.toml)."""

    ledger_dir: Path
    state_dir: Path
    origin: str = "trustmesh.local/log"
    model: Path | None = None  # None: the built-in default pcap model
    data_dir: Path | None = None  # where the default model's training data lives
    sources: tuple[str, ...] = ()
    playbooks: tuple[Path, ...] = ()
    enforce: bool = False
    replay: str = "fast"  # "fast" or "recorded" (sleep to the flows' own timing)
    replay_speed: float = 1.0
    batch_size: int = 1024
    checkpoint_every: int = 10_000  # entries; also at the end of each source and at shutdown
    checkpoint_interval_s: float = 10.0  # s; a checkpoint is signed once this long passed with new entries
    micro_batch_s: float = 0.03  # s; live/follow/stream flows are scored in batches cut by size or by this wait
    # a shared ledger served by `trustmesh ledger serve` (several workers append to one log) instead of
    # ledger_dir: its URL and this worker's client signing key (NoteSigner file, mode 0600)
    ledger_url: str | None = None
    ledger_key: Path | None = None
    correlation_window_s: float = 300.0
    live_idle_timeout: int = 1  # s; live flows are emitted after this much silence (fast containment)
    live_active_timeout: int = 30  # s; long-lived live flows are emitted at least this often
    early_packets: int = 1000  # live flows are also emitted once they have this many packets (both directions)
    # live: a source whose flow attempts fail (unanswered or reset) this often within 1 s has its further new
    # flows emitted at their first packet while it keeps this rate (scans, floods; 0: off; docs/pipeline.md)
    early_fanout: int = 32
    nft_table: str = "trustmesh"
    nft_set: str = "blocklist"
    nft_netns: str | None = None
    webhook_url: str | None = None
    mqtt_broker: str | None = None
    mqtt_port: int = 1883
    mqtt_topic: str = "trustmesh/quarantine"
    llm_url: str | None = None
    llm_model: str | None = None
    guards: Guards = field(default_factory=Guards)
    sinks: tuple[dict[str, Any], ...] = ()  # [[sinks]] tables, checked by trustmesh.sinks (docs/soc.md)
    # [baseline] (docs/baseline.md): learn a site baseline over the first baseline_s seconds of flow
    # time, then detect with it; drift of a site-baseline model's scores is checked every drift_window flows
    baseline_s: float | None = None
    baseline_target_fpr: float = 0.01
    baseline_out: Path | None = None  # default: state_dir / "site-baseline.tm"
    drift_window: int = 2000
    # proofs of inference (docs/assurance.md): the share of model alerts queued for `trustmesh model prove`
    # (state_dir/prove-queue.jsonl), and whether the model must carry a passport that verifies
    prove_sample_rate: float = 0.0
    require_passport: bool = False

    def __post_init__(self) -> None:
        if self.replay not in {"fast", "recorded"}:
            raise ConfigError(f"replay must be 'fast' or 'recorded', got {self.replay!r}")
        if not self.replay_speed > 0:
            raise ConfigError(f"replay_speed must be > 0, got {self.replay_speed}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if isinstance(self.checkpoint_interval_s, bool) or not 0 < self.checkpoint_interval_s <= 86_400:
            raise ConfigError(f"checkpoint_interval_s must be in (0, 86400] seconds, got {self.checkpoint_interval_s!r}")
        if isinstance(self.micro_batch_s, bool) or not 0 <= self.micro_batch_s <= 5:
            raise ConfigError(f"micro_batch_s must be in [0, 5] seconds, got {self.micro_batch_s!r}")
        if isinstance(self.early_packets, bool) or not 2 <= self.early_packets <= 1_000_000:
            raise ConfigError(f"early_packets must be in [2, 1000000] packets, got {self.early_packets!r}")
        if isinstance(self.early_fanout, bool) or not (self.early_fanout == 0 or 2 <= self.early_fanout <= 100_000):
            raise ConfigError(f"early_fanout must be 0 (off) or in [2, 100000] attempts, got {self.early_fanout!r}")
        if (self.ledger_url is None) != (self.ledger_key is None):
            raise ConfigError("pipeline.ledger_url and pipeline.ledger_key must be given together")
        if self.ledger_url is not None and not str(self.ledger_url).startswith("http://"):
            raise ConfigError(f"pipeline.ledger_url must be http://HOST:PORT, got {self.ledger_url!r}")
        if (self.llm_url is None) != (self.llm_model is None):
            raise ConfigError("llm.url and llm.model must be given together")
        if self.baseline_s is not None and not self.baseline_s > 0:
            raise ConfigError(f"baseline.duration_s must be > 0, got {self.baseline_s}")
        if not 0.0 < self.baseline_target_fpr < 0.5:
            raise ConfigError(f"baseline.target_fpr must be in (0, 0.5), got {self.baseline_target_fpr}")
        if self.drift_window < 100:
            raise ConfigError(f"baseline.drift_window must be >= 100 flows, got {self.drift_window}")
        if isinstance(self.prove_sample_rate, bool) or not 0.0 <= self.prove_sample_rate <= 1.0:
            raise ConfigError(f"pipeline.prove_sample_rate must be in [0, 1], got {self.prove_sample_rate!r}")

    @classmethod
    def load(cls, path: Path | str, **overrides: Any) -> PipelineConfig:
        """Read ``[pipeline]``, ``[response]``, ``[guards]`` and ``[llm]`` tables from a TOML file.

        Relative paths are taken relative to the file's folder. Unknown keys are refused by name.
        """
        path = Path(path)
        doc = load_toml(path, "configuration file")  # one ConfigError naming the file for every failure
        base = path.parent
        sink_tables = doc.pop("sinks", [])  # [[sinks]]: alert and incident outputs (docs/soc.md)
        if not isinstance(sink_tables, list):
            raise ConfigError(f"{path}: sinks must be an array of tables ([[sinks]])")
        known = {"pipeline", "response", "guards", "llm", "trustmesh", "api"}  # [api]: trustmesh serve
        known |= {"baseline"}  # [baseline]: learn-then-detect (docs/baseline.md)
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        pipe = dict(doc.get("pipeline", {}))
        resp = dict(doc.get("response", {}))
        llm = dict(doc.get("llm", {}))

        def rel(p: str) -> Path:
            q = Path(p).expanduser()
            return q if q.is_absolute() else base / q

        simple = {"origin", "replay", "replay_speed", "batch_size", "checkpoint_every", "correlation_window_s",
                  "live_idle_timeout", "live_active_timeout", "checkpoint_interval_s", "micro_batch_s", "ledger_url",
                  "prove_sample_rate", "require_passport", "early_packets",
                  "early_fanout"}
        for key, raw in pipe.items():
            if key in {"ledger_dir", "state_dir", "model", "data_dir", "ledger_key"}:
                values[key] = rel(str(raw))
            elif key == "sources":
                if not isinstance(raw, list):
                    raise ConfigError(f"{path}: pipeline.sources must be a list of paths or interfaces")
                values[key] = tuple(_source_spec(str(s), rel) for s in raw)
            elif key in simple:
                values[key] = raw
            else:
                raise ConfigError(f"{path}: unknown key pipeline.{key}")
        for key, raw in resp.items():
            if key == "playbooks":
                values[key] = tuple(rel(str(p)) for p in (raw if isinstance(raw, list) else [raw]))
            elif key in {"enforce", "nft_table", "nft_set", "nft_netns", "webhook_url", "mqtt_broker",
                         "mqtt_port", "mqtt_topic"}:
                values[key] = raw
            else:
                raise ConfigError(f"{path}: unknown key response.{key}")
        for key, raw in llm.items():
            if key not in {"url", "model"}:
                raise ConfigError(f"{path}: unknown key llm.{key} (the API key comes from TRUSTMESH_LLM_API_KEY)")
            values[f"llm_{key}"] = raw
        for key, raw in dict(doc.get("baseline", {})).items():
            names = {"duration_s": "baseline_s", "target_fpr": "baseline_target_fpr", "out": "baseline_out",
                     "drift_window": "drift_window"}
            if key not in names:
                raise ConfigError(f"{path}: unknown key baseline.{key}; known: {', '.join(sorted(names))}")
            if key == "out":
                raw = rel(str(raw))
            elif isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ConfigError(f"{path}: baseline.{key} must be a number, got {raw!r}")
            values[names[key]] = raw
        if "guards" in doc:
            try:
                values["guards"] = Guards.from_dict(dict(doc["guards"]))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{path}: [guards]: {exc}") from None
        values["sinks"] = tuple(check_sink_spec(s, where=f"{path}: [[sinks]] #{i + 1}", base=base)
                                for i, s in enumerate(sink_tables))
        values.update({k: v for k, v in overrides.items() if v is not None})
        values.setdefault("ledger_dir", base / "trustmesh-ledger")
        values.setdefault("state_dir", base / "trustmesh-state")
        try:
            check_field_types(cls, values, str(path))  # a wrong-typed key is named, not a traceback
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def summary(self) -> dict[str, Any]:
        """Return the settings worth recording in the ledger (no secrets: the LLM key is never here)."""
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["guards"] = self.guards.to_dict()
        doc["sinks"] = [sink_summary(s) for s in self.sinks]
        return _json_ready(doc)


def _json_ready(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``doc`` with every value made JSON-native (paths, tuples and the like become str/list)."""
    out: dict[str, Any] = json.loads(json.dumps(doc, default=str))
    return out


def _source_spec(spec: str, rel: Callable[[str], Path]) -> str:
    if spec.startswith(("iface:", "redis://", "rediss://")):
        return spec
    if spec.startswith("follow:"):
        return "follow:" + str(rel(spec[len("follow:"):]))
    return str(rel(spec))
