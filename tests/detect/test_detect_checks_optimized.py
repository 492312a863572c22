"""Conformance checks raise even under ``python -O`` (which strips ``assert`` statements)."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys

from trustmesh.detect import checks


def test_checks_module_has_no_assert_statements() -> None:
    tree = ast.parse(inspect.getsource(checks))
    asserts = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert asserts == [], f"bare assert at lines {asserts} vanish under python -O"


def test_a_failing_check_still_fails_under_python_dash_o() -> None:
    code = ("import numpy as np\n"
            "from trustmesh.detect.checks import check_columns\n"
            "class Broken:\n"
            "    def score(self, X):\n"
            "        return np.arange(len(X), dtype=float) * (1 if list(X.columns)[0] == 'a' else 2)\n"
            "import pandas as pd\n"
            "X = pd.DataFrame({'a': [1.0, 2.0, 3.0], 'b': [4.0, 5.0, 6.0]})\n"
            "check_columns(Broken(), X)\n")
    done = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "AssertionError: reordered columns changed the scores" in done.stderr
