"""Blueprint configuration: profiles, TOML overrides and errors raised before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustmesh.errors import ConfigError
from trustmesh.evaluate import PROFILES, BlueprintConfig, check_config, load_config


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_loads_and_has_a_stable_digest(profile: str) -> None:
    # Act
    a = load_config(profile)
    b = load_config(profile)
    # Assert
    assert a.profile == profile
    assert a.digest() == b.digest()
    assert len(a.digest()) == 64


def test_profiles_differ_in_size() -> None:
    test, quick, full = load_config("test"), load_config("quick"), load_config("full")
    assert test.max_train_rows < quick.max_train_rows < full.max_train_rows
    assert max(full.ledger_sizes) == 10**7 and max(quick.ledger_sizes) == 10**5


def test_toml_overrides_apply_and_change_the_digest(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "bp.toml"
    path.write_text('[blueprint]\ndetectors = ["gbdt"]\nadv_epsilons = [0.0, 0.1]\nseed = 3\n')
    # Act
    cfg = load_config("test", path)
    # Assert
    assert cfg.detectors == ("gbdt",) and cfg.adv_epsilons == (0.0, 0.1) and cfg.seed == 3
    assert cfg.digest() != load_config("test").digest()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('detectors = ["gbdt", "quantum"]', "quantum"),
        ("adv_epsilons = [0.1, 2.0]", "adv_epsilons"),
        ("adv_epsilons = [-0.1]", "adv_epsilons"),
        ("max_train_rows = 3", "max_train_rows"),
        ("ledger_sizes = [100, 100000000]", "ledger_sizes"),
        ("fl_malicious_fraction = 0.6", "fl_malicious_fraction"),
        ('no_such_setting = 1', "no_such_setting"),
        ('sections = ["efficacy", "astrology"]', "astrology"),
        ('seed = "many"', "seed"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_field(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=needle):
        load_config("quick", path)


def test_unknown_profile_and_bad_files_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile"):
        load_config("huge")
    with pytest.raises(ConfigError, match="not found"):
        load_config("quick", tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("detectors = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config("quick", broken)


def test_check_config_rejects_unknown_datasets_before_work() -> None:
    cfg = load_config("test").with_overrides({"datasets": ["nsl-kdd", "kdd-2049"]})
    with pytest.raises(ConfigError, match="kdd-2049"):
        check_config(cfg, None)


def test_check_config_rejects_non_table_datasets_for_efficacy() -> None:
    cfg = load_config("test").with_overrides({"datasets": ["pcap-synscan"]})
    with pytest.raises(ConfigError, match="pcap-synscan"):
        check_config(cfg, None)


def test_config_is_frozen() -> None:
    cfg = BlueprintConfig()
    with pytest.raises(AttributeError):
        cfg.seed = 4  # type: ignore[misc]
