"""Blueprint configuration: named profiles, TOML overrides and up-front validation.

Every knob that changes a number in the report lives here, so the config hash (with the code
version) identifies a result. ``validate`` runs before any work starts: an unknown dataset, detector
or section, or an impossible budget, is a ``ConfigError`` naming the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustmesh.errors import ConfigError

__all__ = [
    "KNOWN_DETECTORS",
    "PROFILES",
    "SECTION_NAMES",
    "BlueprintConfig",
    "load_config",
]

#: Sections in report order (the runner's registry uses the same names).
SECTION_NAMES: tuple[str, ...] = (
    "efficacy",
    "transfer",
    "spiking",
    "adversarial",
    "poisoning",
    "integrity",
    "cost",
    "energy",
)

#: Detector kinds the blueprint knows how to build ("snn" is trustmesh.detect.snn).
KNOWN_DETECTORS: tuple[str, ...] = ("autoencoder", "ensemble", "gbdt", "iforest", "mlp", "snn")

# Largest log the integrity/cost sections will build: the issue asks for 10^3..10^7.
_MAX_LEDGER_SIZE = 10**7


@dataclass(frozen=True, slots=True)
class BlueprintConfig:
    """All settings of one blueprint run (see docs/blueprint.md for each field)."""

    profile: str = "quick"
    seed: int = 0
    datasets: tuple[str, ...] = ("nsl-kdd", "unsw-nb15", "ton-iot-network")
    detectors: tuple[str, ...] = ("gbdt", "iforest", "mlp", "autoencoder", "snn")
    sections: tuple[str, ...] = SECTION_NAMES
    max_train_rows: int = 8000
    max_test_rows: int = 4000
    target_fpr: float = 0.01
    fixed_recall: float = 0.95
    # canonical-schema sources for the transfer section (empty = every labelled capture and Zeek log)
    transfer_sources: tuple[str, ...] = ()
    # spiking detector
    snn_hidden: tuple[int, ...] = (64, 32)
    snn_steps: int = 16
    snn_epochs: int = 6
    snn_encoding: str = "rate"
    # adversarial robustness
    adv_epsilons: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
    adv_samples: int = 400
    adv_pgd_steps: int = 10
    hsj_samples: int = 10
    hsj_max_iter: int = 10
    hsj_max_eval: int = 500
    # poisoning (federated)
    fl_sites: int = 5
    fl_rounds: int = 3
    fl_malicious_fraction: float = 0.2
    fl_attacks: tuple[str, ...] = ("sign-flip", "scaling", "label-flip", "backdoor")
    fl_defences: tuple[str, ...] = ("median", "trimmed-mean", "multikrum", "fltrust")
    fl_max_train: int = 6000
    # integrity
    tamper_trials: int = 30
    integrity_entries: int = 300
    # cost and scalability
    batch_sizes: tuple[int, ...] = (1, 10, 100, 1000, 4000)
    ledger_sizes: tuple[int, ...] = (1000, 10000, 100000)
    fl_site_counts: tuple[int, ...] = (2, 4, 8)
    latency_repeats: int = 5
    # energy
    watts_per_core: float = 10.0
    energy_flows: int = 2000

    def __post_init__(self) -> None:
        self.validate_shape()

    def validate_shape(self) -> None:
        """Check every field's range (no dependency look-ups); raise ConfigError naming the field."""

        def need(cond: bool, name: str, rule: str, value: Any) -> None:
            if not cond:
                raise ConfigError(f"blueprint config: {name} must be {rule}, got {value!r}")

        need(self.profile in PROFILES or self.profile == "custom", "profile",
             f"one of {', '.join(sorted(PROFILES))}", self.profile)
        need(bool(self.datasets), "datasets", "a non-empty list", list(self.datasets))
        need(bool(self.detectors), "detectors", "a non-empty list", list(self.detectors))
        unknown = [d for d in self.detectors if d not in KNOWN_DETECTORS]
        need(not unknown, "detectors", f"drawn from {', '.join(KNOWN_DETECTORS)} (unknown: {unknown})",
             list(self.detectors))
        bad_sections = [s for s in self.sections if s not in SECTION_NAMES]
        need(not bad_sections, "sections", f"drawn from {', '.join(SECTION_NAMES)} (unknown: {bad_sections})",
             list(self.sections))
        need(self.max_train_rows >= 50, "max_train_rows", ">= 50", self.max_train_rows)
        need(self.max_test_rows >= 20, "max_test_rows", ">= 20", self.max_test_rows)
        need(0.0 < self.target_fpr < 1.0, "target_fpr", "in (0, 1)", self.target_fpr)
        need(0.0 < self.fixed_recall <= 1.0, "fixed_recall", "in (0, 1]", self.fixed_recall)
        need(bool(self.snn_hidden) and all(h >= 1 for h in self.snn_hidden), "snn_hidden",
             "non-empty widths >= 1", list(self.snn_hidden))
        need(1 <= self.snn_steps <= 256, "snn_steps", "in 1..256", self.snn_steps)
        need(self.snn_epochs >= 1, "snn_epochs", ">= 1", self.snn_epochs)
        need(self.snn_encoding in ("rate", "latency"), "snn_encoding", "'rate' or 'latency'",
             self.snn_encoding)
        # perturbation budgets live in the detectors' [0, 1] feature space: above 1 is meaningless
        need(bool(self.adv_epsilons) and all(0.0 <= e <= 1.0 for e in self.adv_epsilons), "adv_epsilons",
             "non-empty, each in [0, 1] (L-inf budget in scaled feature space)", list(self.adv_epsilons))
        need(self.adv_samples >= 2, "adv_samples", ">= 2", self.adv_samples)
        need(self.adv_pgd_steps >= 1, "adv_pgd_steps", ">= 1", self.adv_pgd_steps)
        need(self.hsj_samples >= 0, "hsj_samples", ">= 0", self.hsj_samples)
        need(self.hsj_max_iter >= 1, "hsj_max_iter", ">= 1", self.hsj_max_iter)
        need(self.hsj_max_eval >= 10, "hsj_max_eval", ">= 10", self.hsj_max_eval)
        need(self.fl_sites >= 2, "fl_sites", ">= 2", self.fl_sites)
        need(self.fl_rounds >= 1, "fl_rounds", ">= 1", self.fl_rounds)
        need(0.0 <= self.fl_malicious_fraction < 0.5, "fl_malicious_fraction", "in [0, 0.5)",
             self.fl_malicious_fraction)
        need(bool(self.fl_attacks), "fl_attacks", "a non-empty list", list(self.fl_attacks))
        need(bool(self.fl_defences), "fl_defences", "a non-empty list", list(self.fl_defences))
        need(self.fl_max_train >= 100, "fl_max_train", ">= 100", self.fl_max_train)
        need(self.tamper_trials >= 1, "tamper_trials", ">= 1", self.tamper_trials)
        need(self.integrity_entries >= 8, "integrity_entries", ">= 8", self.integrity_entries)
        need(bool(self.batch_sizes) and all(b >= 1 for b in self.batch_sizes), "batch_sizes",
             "non-empty, each >= 1", list(self.batch_sizes))
        need(bool(self.ledger_sizes) and all(1 <= n <= _MAX_LEDGER_SIZE for n in self.ledger_sizes),
             "ledger_sizes", f"non-empty, each in 1..{_MAX_LEDGER_SIZE}", list(self.ledger_sizes))
        need(bool(self.fl_site_counts) and all(n >= 2 for n in self.fl_site_counts), "fl_site_counts",
             "non-empty, each >= 2", list(self.fl_site_counts))
        need(self.latency_repeats >= 1, "latency_repeats", ">= 1", self.latency_repeats)
        need(0.0 < self.watts_per_core <= 500.0, "watts_per_core", "in (0, 500]", self.watts_per_core)
        need(self.energy_flows >= 10, "energy_flows", ">= 10", self.energy_flows)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (tuples as lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    def digest(self) -> str:
        """Return the sha256 of the canonical JSON of the config."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def with_overrides(self, overrides: dict[str, Any], source: str = "overrides") -> BlueprintConfig:
        """Return a copy with ``overrides`` applied (lists become tuples); unknown keys are errors."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        values = self.to_dict()
        for key, raw in overrides.items():
            if key not in fields:
                raise ConfigError(f"{source}: unknown blueprint setting {key!r}; known: {', '.join(sorted(fields))}")
            default = values[key]
            try:
                if isinstance(default, list):
                    if not isinstance(raw, list):
                        raise TypeError("expected a list")
                    kind = type(default[0]) if default else str
                    values[key] = [kind(x) for x in raw]
                elif isinstance(default, bool) or not isinstance(default, (int, float, str)):
                    values[key] = raw
                else:
                    if isinstance(raw, (list, dict)):
                        raise TypeError("expected a scalar")
                    values[key] = type(default)(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{source}: setting {key!r} cannot be {raw!r} ({exc})") from exc
        fields_: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return BlueprintConfig(**fields_)


PROFILES: dict[str, dict[str, Any]] = {
    # tiny: for the test-suite (seconds); numbers from it are not meaningful
    "test": {
        "datasets": ["nsl-kdd"],
        "detectors": ["gbdt", "mlp", "snn"],
        "max_train_rows": 600,
        "max_test_rows": 300,
        "transfer_sources": ["zeek-ctu-sme-11", "pcap-test7-malicious", "pcap-ssh-bruteforce"],
        "snn_hidden": [16, 8],
        "snn_steps": 6,
        "snn_epochs": 2,
        "adv_epsilons": [0.0, 0.05, 0.2],
        "adv_samples": 40,
        "adv_pgd_steps": 3,
        "hsj_samples": 2,
        "hsj_max_iter": 2,
        "hsj_max_eval": 50,
        "fl_sites": 3,
        "fl_rounds": 1,
        "fl_malicious_fraction": 0.34,
        "fl_attacks": ["sign-flip"],
        "fl_defences": ["median"],
        "fl_max_train": 900,
        "tamper_trials": 6,
        "integrity_entries": 40,
        "batch_sizes": [1, 10, 100],
        "ledger_sizes": [100, 1000],
        "fl_site_counts": [2, 3],
        "latency_repeats": 2,
        "energy_flows": 200,
    },
    "quick": {},
    "full": {
        "detectors": ["gbdt", "iforest", "mlp", "autoencoder", "ensemble", "snn"],
        "max_train_rows": 60000,
        "max_test_rows": 30000,
        "snn_epochs": 10,
        "adv_samples": 2000,
        "adv_pgd_steps": 20,
        "hsj_samples": 50,
        "hsj_max_iter": 30,
        "hsj_max_eval": 2000,
        "fl_sites": 10,
        "fl_rounds": 10,
        "fl_attacks": ["sign-flip", "scaling", "label-flip", "gaussian", "backdoor"],
        "fl_max_train": 40000,
        "tamper_trials": 200,
        "integrity_entries": 3000,
        "batch_sizes": [1, 10, 100, 1000, 10000],
        "ledger_sizes": [1000, 10000, 100000, 1000000, 10000000],
        "fl_site_counts": [2, 4, 8, 16],
        "latency_repeats": 10,
        "energy_flows": 20000,
    },
}


def load_config(profile: str = "quick", path: Path | None = None) -> BlueprintConfig:
    """Build a config from a named profile, then a TOML file (top level or ``[blueprint]`` table)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(sorted(PROFILES))}")
    config = BlueprintConfig().with_overrides({"profile": profile, **PROFILES[profile]}, f"profile {profile}")
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        table = doc.get("blueprint", doc)
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [blueprint] must be a table")
        config = config.with_overrides(dict(table), str(path))
    return config

