"""Deep JSON is refused before parsing, even after a dependency raised Python's recursion limit.

py_ecc (pulled in by eth-tester for the embedded chain) sets ``sys.setrecursionlimit(100000)`` when it is
imported; from then on the C JSON decoder overflows the C stack (a segfault, which once killed the whole
test run) on deeply nested input instead of raising ``RecursionError``. The check runs in a subprocess so
a regression shows as a failed test, not a dead test session.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from trustmesh._safeload import json_too_deep, load_json
from trustmesh.errors import InputError

_PROBE = r"""
import sys
sys.setrecursionlimit(100000)  # what py_ecc does on import
from pathlib import Path
from trustmesh._safeload import load_json
from trustmesh.errors import InputError
from trustmesh.flows._io import json_objects
deep = "[" * 300000 + "]" * 300000
try:
    load_json(deep)
except InputError as exc:
    print("load_json:", exc)
rows = list(json_objects(iter(['{"a": ' + deep + "}", '{"ok": 1}']), Path("eve.json"), on_bad=print))
print("rows:", rows)
"""


def test_deeply_nested_json_is_refused_without_crashing_under_a_raised_recursion_limit() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-500:]}"
    assert "nested deeper than" in done.stdout
    assert "rows: [(2, {'ok': 1})]" in done.stdout  # the bad line is skipped, the next one read


def test_depth_scan_ignores_brackets_inside_strings() -> None:
    assert not json_too_deep('{"a": "[[[[[[[[[[[[[[[[[[[[", "b": [1, [2]]}', 3)
    assert json_too_deep('[[[[1]]]]', 3)
    with pytest.raises(InputError, match="nested deeper"):
        load_json("[" * 100 + "]" * 100)
