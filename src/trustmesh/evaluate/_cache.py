"""Resumable per-section cache under ``DIR/.cache`` and the environment record.

A finished section is stored as JSON (plots inline) in ``DIR/.cache/<section>-<key>.json``, where the
key hashes the config digest and the code version (sha256 over trustmesh's own source files), so a
rerun after an interruption skips finished sections and any code or config change recomputes them.
Skipped sections are not cached: they run again once their dependency exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from trustmesh.evaluate._report import SectionResult

__all__ = ["SectionCache", "code_version", "environment"]

log = logging.getLogger(__name__)

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@cache
def code_version() -> str:
    """Return sha256 over every trustmesh source file (path + bytes), in sorted order."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE_ROOT.rglob("*.py")):
        h.update(str(path.relative_to(_PACKAGE_ROOT)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


class SectionCache:
    """Store and fetch finished sections keyed by (section, config digest, code version)."""

    def __init__(self, root: Path, config_digest: str, version: str | None = None) -> None:
        self.root = root
        self.key = hashlib.sha256(f"{config_digest}:{version or code_version()}".encode()).hexdigest()[:24]

    def _path(self, section: str) -> Path:
        return self.root / f"{section}-{self.key}.json"

    def get(self, section: str) -> SectionResult | None:
        """Return the cached result of ``section`` or None (a corrupt entry is ignored and logged)."""
        path = self._path(section)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            result = SectionResult.from_dict(doc)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring corrupt cache entry %s: %s", path, exc)
            return None
        return result if result.name == section and result.status == "ok" else None

    def put(self, result: SectionResult) -> None:
        """Store an ``ok`` result atomically (write + rename)."""
        if result.status != "ok":
            return
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(result.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result.to_dict(inline_plots=True), default=str), encoding="utf-8")
        os.replace(tmp, path)


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True, timeout=10, check=False)
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Return versions, CPU, memory and commit of the machine running the blueprint."""
    versions: dict[str, Any] = {}
    for pkg in ("trustmesh", "numpy", "pandas", "scikit-learn", "lightgbm", "torch", "snntorch",
                "adversarial-robustness-toolbox", "flwr", "matplotlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
        mem_gib: float | None = round(mem_kb / 2**20, 2)
    except (OSError, StopIteration, ValueError):
        mem_gib = None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cpus = os.cpu_count() or 1
    return {
        "trustmesh": versions.pop("trustmesh"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpus_usable": cpus,
        "memory_gib": mem_gib,
        "commit": _git_commit(_PACKAGE_ROOT.parents[1]),
        "code_version": code_version(),
        "versions": versions,
    }
