"""The checked-in LogAnchor ABI and bytecode are what the pip vyper compiler produces from the source."""

from __future__ import annotations

import json

from trustmesh.ledger.anchor import build, load_artifact


def test_checked_in_artifact_matches_a_fresh_compile() -> None:
    fresh = build.render(build.compile_contract())
    assert build.ARTIFACT.read_text(encoding="utf-8") == fresh, "run python -m trustmesh.ledger.anchor.build"


def test_build_check_mode_reports_up_to_date() -> None:
    assert build.main(["--check"]) == 0


def test_artifact_exposes_the_contract_interface() -> None:
    art = load_artifact()
    names = {item.get("name") for item in art.abi}
    assert {"anchor", "set_key", "latest", "owner", "registered", "Anchored", "KeyRegistered"} <= names
    assert art.compiler.startswith("vyper 0.4")
    assert art.runtime in art.bytecode  # the creation code carries the runtime code verbatim
    doc = json.loads(build.ARTIFACT.read_text(encoding="utf-8"))
    assert doc["bytecode_runtime"].removeprefix("0x") == art.runtime.hex()
