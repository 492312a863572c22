from __future__ import annotations

from pathlib import Path

import pytest

from trustmesh.config import find_data_dir, load_settings
from trustmesh.errors import ConfigError


def test_toml_then_environment_override(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[trustmesh]\nseed = 7\nlog_level = "INFO"\ndata_dir = "/x"\n', encoding="utf-8")
    s = load_settings(cfg, env={"TRUSTMESH_SEED": "9", "TRUSTMESH_DATA": "/y"})
    assert s.seed == 9
    assert s.log_level == "INFO"
    assert s.data_dir == Path("/y")


def test_unknown_setting_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text("colour = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="colour"):
        load_settings(cfg, env={})


def test_bad_toml_names_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("seed = = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_settings(cfg, env={})


def test_explicit_data_dir_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTMESH_DATA", "/elsewhere")
    assert find_data_dir(tmp_path) == tmp_path
    assert find_data_dir() == Path("/elsewhere")
