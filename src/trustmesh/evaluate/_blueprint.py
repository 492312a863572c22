"""The Security Evaluation Blueprint runner: a registry of independent sections, cached and reported.

Each section is a function ``(Context) -> SectionResult``. A section whose dependency is missing
(a package not yet installed, a component not yet built, no datasets) returns a clearly labelled
``skipped`` result with the reason; one that fails unexpectedly is reported as ``error`` with the
exception — never with made-up numbers. Finished sections are cached under ``DIR/.cache``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trustmesh.errors import ConfigError, MissingDependencyError, TrustmeshError
from trustmesh.evaluate._cache import SectionCache, code_version, environment
from trustmesh.evaluate._config import SECTION_NAMES, BlueprintConfig
from trustmesh.evaluate._context import Context
from trustmesh.evaluate._report import REPORT_SCHEMA, REPORT_VERSION, SectionResult, write_report

__all__ = ["BlueprintOutcome", "SECTIONS", "Skip", "check_config", "run_blueprint"]

log = logging.getLogger(__name__)

SectionFn = Callable[[Context], SectionResult]


class Skip(Exception):
    """Raised inside a section to skip it with a reason (a dependency is missing)."""


@dataclass(frozen=True, slots=True)
class BlueprintOutcome:
    """What ``run_blueprint`` wrote and found."""

    report_json: Path
    report_html: Path
    report_sha256: str
    sections: tuple[SectionResult, ...]
    ledger: dict[str, Any] | None

    @property
    def statuses(self) -> dict[str, str]:
        """Return section name -> status."""
        return {s.name: s.status for s in self.sections}


def _registry() -> dict[str, tuple[str, SectionFn]]:
    from trustmesh.evaluate import _sec_adversarial, _sec_cost, _sec_efficacy, _sec_integrity, _sec_spiking

    return {
        "efficacy": ("1. Efficacy", _sec_efficacy.run_efficacy),
        "transfer": ("1b. Cross-dataset transfer", _sec_efficacy.run_transfer),
        "spiking": ("1c. Spiking detector vs MLP of the same size", _sec_spiking.run_spiking),
        "adversarial": ("2. Adversarial robustness (evasion)", _sec_adversarial.run_adversarial),
        "poisoning": ("2b. Poisoning (federated)", _sec_adversarial.run_poisoning),
        "integrity": ("3. Integrity (ledger)", _sec_integrity.run_integrity),
        "cost": ("4. Cost and scalability", _sec_cost.run_cost),
        "energy": ("5. Energy", _sec_cost.run_energy),
    }


#: Section names in report order (the registry is resolved lazily to keep imports light).
SECTIONS: tuple[str, ...] = SECTION_NAMES


def check_config(config: BlueprintConfig, data_dir: Path | None) -> None:
    """Reject configs naming unknown datasets or detectors, before any work starts."""
    try:
        from trustmesh.flows import DATASETS as _datasets

        DATASETS: Mapping[str, Any] | None = _datasets  # noqa: N806
    except ImportError:
        DATASETS = None  # noqa: N806 - flows not built yet: the data sections will skip
    if DATASETS is not None:
        unknown = [d for d in config.datasets if d not in DATASETS]
        if unknown:
            raise ConfigError(f"blueprint config: unknown dataset(s) {unknown}; known: {', '.join(sorted(DATASETS))}")
        bad_sources = [d for d in config.transfer_sources if d not in DATASETS or DATASETS[d].kind not in ("zeek", "pcap")]
        if bad_sources:
            raise ConfigError(f"blueprint config: transfer_sources {bad_sources} are not registered pcap/zeek datasets")
        not_tables = [d for d in config.datasets if DATASETS[d].kind != "table"]
        if not_tables:
            raise ConfigError(
                f"blueprint config: datasets {not_tables} are not labelled flow tables; the efficacy "
                "section needs kind 'table' datasets (pcaps and logs are used by the transfer section)"
            )
    try:
        from trustmesh.detect import DETECTOR_KINDS as _kinds

        DETECTOR_KINDS: tuple[str, ...] = _kinds  # noqa: N806
    except ImportError:
        DETECTOR_KINDS = ()  # noqa: N806
    known = {*DETECTOR_KINDS, "snn"}
    if DETECTOR_KINDS:
        unknown_det = [d for d in config.detectors if d not in known]
        if unknown_det:
            raise ConfigError(f"blueprint config: unknown detector(s) {unknown_det}; known: {', '.join(sorted(known))}")
    if data_dir is not None and not data_dir.is_dir():
        raise ConfigError(f"data_dir {data_dir}: not a directory")


def _cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _run_one(name: str, title: str, fn: SectionFn, ctx: Context) -> SectionResult:
    t0 = time.perf_counter()
    c0 = _cpu_s()
    try:
        result = fn(ctx)
    except Skip as exc:
        result = SectionResult.skipped(name, title, str(exc))
    except MissingDependencyError as exc:
        result = SectionResult.skipped(name, title, str(exc))
    except ImportError as exc:
        result = SectionResult.skipped(name, title, f"dependency not available: {exc}")
    except TrustmeshError as exc:
        result = SectionResult(name, title, "error", reason=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug in a section must not lose the other sections' results
        log.error("section %s failed:\n%s", name, traceback.format_exc())
        result = SectionResult(name, title, "error", reason=f"{type(exc).__name__}: {exc}")
    return replace(result, name=name, title=title, seconds=round(time.perf_counter() - t0, 3),
                   cpu_seconds=round(_cpu_s() - c0, 3))


def _headline_figures(sections: tuple[SectionResult, ...]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for s in sections:
        for k, v in s.headline.items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                figures[f"{s.name}.{k}"] = v
    return figures


def _append_to_ledger(ledger_dir: Path, report_sha256: str, doc: dict[str, Any],
                      sections: tuple[SectionResult, ...]) -> dict[str, Any]:
    """Append the signed evaluation record and checkpoint; return a receipt."""
    from trustmesh.ledger import Ledger

    if (ledger_dir / "ledger.sqlite").exists():
        ledger = Ledger.open(ledger_dir)
    else:
        ledger = Ledger.create(ledger_dir, "trustmesh.local/evaluation")
    with ledger:
        payload = {
            "schema": REPORT_SCHEMA,
            "schema_version": REPORT_VERSION,
            "report_sha256": report_sha256,
            "profile": doc["profile"],
            "config_sha256": doc["config_sha256"],
            "code_version": doc["environment"]["code_version"],
            "commit": doc["environment"]["commit"],
            "statuses": {s.name: s.status for s in sections},
            "headline": _headline_figures(sections),
        }
        index = ledger.append_one("evaluation", payload)
        cp = ledger.checkpoint()
        return {
            "ledger_dir": str(ledger_dir),
            "origin": ledger.origin,
            "index": index,
            "tree_size": cp.size,
            "root_hash": cp.root_hash.hex(),
            "report_sha256": report_sha256,
        }


def run_blueprint(
    config: BlueprintConfig,
    out_dir: Path,
    *,
    data_dir: Path | None = None,
    ledger_dir: Path | None = None,
    on_section: Callable[[str, str], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> BlueprintOutcome:
    """Run every configured section (cached ones are reused) and write the report.

    ``ledger_dir`` receives the evaluation record (created if absent); None skips the ledger step.
    ``on_section(name, status)`` is called as each section finishes, for progress bars.
    """
    check_config(config, data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = SectionCache(out_dir / ".cache", config.digest())
    ctx = Context(config, data_dir, out_dir / ".work", ledger_dir=ledger_dir, on_progress=on_progress)
    registry = _registry()
    results: list[SectionResult] = []
    for name in SECTION_NAMES:
        title, fn = registry[name]
        if name not in config.sections:
            results.append(SectionResult.skipped(name, title, "not selected in the config's sections"))
            continue
        cached = cache.get(name)
        if cached is not None:
            results.append(replace(cached, notes=(*cached.notes, "reused from the resumable cache")))
            if on_section:
                on_section(name, "cached")
            continue
        result = _run_one(name, title, fn, ctx)
        cache.put(result)
        results.append(result)
        if on_section:
            on_section(name, result.status)
    sections = tuple(results)
    doc: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "profile": config.profile,
        "config": config.to_dict(),
        "config_sha256": config.digest(),
        "code_version": code_version(),
        "environment": environment(),
        "energy_method": ctx.meter.describe(),
        "summary": [{"section": s.name, "title": s.title, "status": s.status, "reason": s.reason,
                     "headline": s.headline} for s in sections],
    }
    json_path, html_path, digest = write_report(out_dir, doc, sections)
    receipt = None
    if ledger_dir is not None:
        receipt = _append_to_ledger(ledger_dir, digest, doc, sections)
        import json

        (out_dir / "ledger-receipt.json").write_text(json.dumps(receipt, indent=2, sort_keys=True) + "\n")
        # re-render the HTML with the receipt; report.json (the hashed document) stays as written
        from trustmesh.evaluate._report import _json_safe, render_html

        html_doc = _json_safe({**doc, "ledger": receipt, "sections": [s.to_dict() for s in sections]})
        html_path.write_text(render_html(html_doc, sections, digest), encoding="utf-8")
    return BlueprintOutcome(json_path, html_path, digest, sections, receipt)
