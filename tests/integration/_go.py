"""Run the Go programs under tests/go with the Debian Go toolchain and x/mod from /usr/share/gocode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

GO_DIR = Path(__file__).resolve().parents[1] / "go"
GOPATH = Path("/usr/share/gocode")
NOTE_PKG = GOPATH / "src/golang.org/x/mod/sumdb/note/note.go"


def require_go() -> str:
    """Return the go binary, or skip naming the Debian packages that provide it (CI installs them)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go not found: install the Debian packages golang-go and golang-golang-x-mod-dev")
    if not NOTE_PKG.is_file():
        pytest.skip(f"{NOTE_PKG} not found: install the Debian package golang-golang-x-mod-dev")
    return go


def run_notecheck(vectors: list[dict[str, Any]], tmp: Path) -> list[dict[str, Any]]:
    """Open each vector's note with Go's note.Open (tests/go/notecheck) and return its verdicts."""
    go = require_go()
    case_file = tmp / "vectors.json"
    case_file.write_text(json.dumps(vectors), encoding="utf-8")
    binary = tmp / "notecheck"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOFLAGS": "",
           "GOCACHE": str(tmp / "gocache"), "CGO_ENABLED": "0"}
    subprocess.run([go, "build", "-o", str(binary), str(GO_DIR / "notecheck" / "main.go")],
                   check=True, env=env, timeout=300, capture_output=True)
    out = subprocess.run([str(binary), str(case_file)], check=True, capture_output=True, timeout=60)
    results: list[dict[str, Any]] = json.loads(out.stdout)
    return results
