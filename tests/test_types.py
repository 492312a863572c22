"""House style: ``mypy --strict`` is clean on src/ (configuration in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml")],
                            cwd=REPO, capture_output=True, text=True, check=False, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
