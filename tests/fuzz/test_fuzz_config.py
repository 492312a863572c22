"""Fuzz the text formats people write: playbooks (YAML), TOML settings and pipeline configurations."""

from __future__ import annotations

from pathlib import Path

import pytest
from _fuzz_harness import HOSTILE_NUMBERS, HOSTILE_TEXT, deep, expect_clean, fuzz_settings, mutated_bytes, mutated_lines, tally_for
from hypothesis import given
from hypothesis import strategies as st

from trustmesh.config import load_settings
from trustmesh.pipeline import PipelineConfig
from trustmesh.respond import DEFAULT_PLAYBOOKS, PlaybookSet

REPO = Path(__file__).resolve().parents[2]
YAML_HOSTILE = ["&a [*a]", "*undefined", "!!python/object/apply:os.system ['true']", "!!binary AAA=", "? [a]\n: b",
                "a: &x " + deep(30, "[", "]"), "{" * 200, "- " * 200, "<<: *a", "!!timestamp 2026-99-99",
                "!!int 0x" + "f" * 5000, "!!float 1e400", "%YAML 9.9\n---", "\t- tab"]


@given(data=st.data())
@fuzz_settings(80)
def test_playbooks(data: st.DataObject, tmp_path: Path) -> None:
    lines = DEFAULT_PLAYBOOKS.read_text(encoding="utf-8").splitlines()
    lines = data.draw(mutated_lines(lines, ": "))
    for _ in range(data.draw(st.integers(0, 2))):
        lines.insert(data.draw(st.integers(0, len(lines))), data.draw(st.sampled_from(YAML_HOSTILE)))
    text = "\n".join(lines)
    tally = tally_for("playbook-yaml")
    expect_clean(tally, lambda: PlaybookSet.from_yaml(text, "case.yaml"), text)
    path = tmp_path / "case.yaml"
    raw = data.draw(mutated_bytes(text.encode("utf-8", "surrogatepass"))) if data.draw(st.booleans()) else None
    if raw is not None:
        path.write_bytes(raw)
        expect_clean(tally, lambda: PlaybookSet.load(path), raw[:200])


def test_alias_bomb_is_refused_quickly() -> None:
    rows = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    rows += [f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    bomb = "\n".join(rows) + "\n"
    assert len(bomb.encode()) < 520
    import time

    t0 = time.process_time()
    with pytest.raises(Exception) as err:
        PlaybookSet.from_yaml(bomb, "bomb.yaml")
    assert "expands to more than" in str(err.value) or "aliases" in str(err.value)
    assert time.process_time() - t0 < 5.0  # a generous floor: unbounded expansion takes minutes


@pytest.fixture(scope="module")
def pipeline_toml() -> str:
    return (REPO / "examples" / "trustmesh.toml").read_text(encoding="utf-8")


@given(data=st.data())
@fuzz_settings(80)
def test_toml_configs(data: st.DataObject, pipeline_toml: str, tmp_path: Path) -> None:
    lines = pipeline_toml.splitlines()
    if data.draw(st.booleans()):
        lines = data.draw(mutated_lines(lines, " = "))
    else:  # a typed value of the wrong kind for a known key
        key = data.draw(st.sampled_from(["batch_size", "replay_speed", "origin", "enforce", "sources", "model",
                                         "checkpoint_every", "mqtt_port", "ledger_dir", "replay", "log_level",
                                         "seed", "data_dir"]))
        value = data.draw(st.sampled_from(['"x"', "1", "true", "[1, 2]", "{a = 1}", "1.5", "-1", "1979-05-27",
                                           "inf", "nan", '""', deep(40), "[" + "{a=[" * 30 + "]}" * 30 + "]"]))
        table = data.draw(st.sampled_from(["[pipeline]", "[response]", "[trustmesh]", "[guards]", "[llm]"]))
        lines = [*lines, table, f"{key} = {value}"]
    text = "\n".join(lines) + "\n"
    path = tmp_path / "trustmesh.toml"
    raw = text.encode("utf-8", "surrogatepass")
    if data.draw(st.integers(0, 4)) == 0:
        raw = data.draw(mutated_bytes(raw))
    if data.draw(st.integers(0, 6)) == 0:
        raw = b"a = " + deep(3000).encode()
    path.write_bytes(raw)
    tally = tally_for("toml-config")
    expect_clean(tally, lambda: PipelineConfig.load(path), raw[:300])
    expect_clean(tally, lambda: load_settings(path, env={}), raw[:300])


@given(value=st.sampled_from(HOSTILE_NUMBERS + HOSTILE_TEXT[:12]),
       name=st.sampled_from(["TRUSTMESH_SEED", "TRUSTMESH_LOG_LEVEL", "TRUSTMESH_DATA", "TRUSTMESH_CACHE_DIR"]))
@fuzz_settings(30)
def test_settings_environment(value: str, name: str) -> None:
    expect_clean(tally_for("settings-env"), lambda: load_settings(None, env={name: value.replace("\x00", "")}),
                 (name, value))
