"""Every package re-exports a sorted ``__all__`` whose names exist (small public surface)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import trustmesh

PACKAGES = sorted(
    m.name for m in pkgutil.walk_packages(trustmesh.__path__, "trustmesh.") if m.ispkg and "._" not in m.name
)


@pytest.mark.parametrize("name", ["trustmesh", *PACKAGES])
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert list(exported) == sorted(exported), f"{name}.__all__ is not sorted"
    missing = [item for item in exported if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
