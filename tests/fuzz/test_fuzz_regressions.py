"""One test per defect the fuzz harness (and the issue's measurements) found; each failed before its fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustmesh.cli._app import app
from trustmesh.config import load_settings
from trustmesh.errors import CheckpointError, ConfigError, InputError, PlaybookError
from trustmesh.flows import load_table, open_source
from trustmesh.ledger import Checkpoint, Entry, Ledger, NoteSigner, NoteVerifier
from trustmesh.pipeline import PipelineConfig
from trustmesh.respond import PlaybookSet

runner = CliRunner()


def test_table_column_with_only_missing_values_loads(tmp_path: Path) -> None:
    # was IndexError in the text branch of the column coercion
    p = tmp_path / "t.csv"
    p.write_text("a,b,label\n-,1,normal\n-,2,attack\n(empty),3,normal\n")
    table = load_table(p)
    assert len(table) == 3


def test_table_integers_beyond_int64_are_not_wrapped(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("a,b,label\n99999999999999999999,1,normal\n18446744073709551615,2,attack\n5,3,normal\n")
    table = load_table(p)
    col = table.features["a"] if hasattr(table, "features") else table.X["a"]
    assert (col.dropna() > 0).all()  # wrapping made them -9223372036854775808


def test_library_errors_with_newlines_become_one_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,2\n1,2,3,4\n")
    with pytest.raises(InputError) as err:
        list(open_source(p).iter_batches())
    assert "\n" not in str(err.value)


def test_error_line_with_rich_markup_characters_prints_as_is(tmp_path: Path) -> None:
    bad = tmp_path / "[bold]x.yaml"
    bad.write_text('"[/oops]": 1\nname: a\n')
    done = runner.invoke(app, ["playbook", "validate", str(bad)])
    assert done.exit_code == 2, done.output
    assert "[bold]x.yaml" in done.output and "Traceback" not in done.output  # rich used to eat "[bold]"


def test_yaml_control_characters_are_a_playbook_error() -> None:
    with pytest.raises(PlaybookError, match=r"case.yaml: not valid YAML"):
        PlaybookSet.from_yaml("name: a\x00b\n", "case.yaml")


def test_yaml_alias_bomb_of_418_bytes_is_refused_in_well_under_a_second(tmp_path: Path) -> None:
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    rows += [f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(rows) + "\n")
    code = ("import sys, time\nfrom trustmesh.respond import PlaybookSet\nt = time.process_time()\n"
            "try:\n    PlaybookSet.load(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "print(time.process_time() - t)\n")
    done = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=120)
    kind, *_ = done.stdout.split()
    assert kind == "PlaybookError" and "expands to more than" in done.stdout
    assert float(done.stdout.split()[-1]) < 1.0


def test_recursive_yaml_alias_is_refused() -> None:
    with pytest.raises(PlaybookError, match="recursive alias|aliases|expands"):
        PlaybookSet.from_yaml("a: &a [*a]\n", "r.yaml")


def test_non_ascii_checkpoint_root_line_is_a_checkpoint_error(tmp_path: Path) -> None:
    with Ledger.create(tmp_path / "l", "re.example/log") as led:
        led.append([Entry(kind="note", payload={"i": 1}, time=1.0)])
        cp = led.checkpoint()
    text = cp.to_bytes().decode()
    lines = text.split("\n")
    lines[2] = "\ufeff" + lines[2]
    with pytest.raises(CheckpointError, match="root hash is not base64"):
        Checkpoint.from_bytes("\n".join(lines).encode())


def test_non_utf8_key_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    key = tmp_path / "log.key"
    key.write_bytes(b"PRIVATE+KEY+\xff\xfe+00000000+AAAA\n")
    key.chmod(0o600)
    with pytest.raises(InputError, match=r"log.key: private key file is not UTF-8"):
        NoteSigner.load(key)


def test_verifier_key_with_undecodable_name_is_refused() -> None:
    good = NoteSigner.generate("k.example/a").verifier.to_vkey()
    bad = "k\udcff" + good[len("k"):]
    with pytest.raises(InputError):
        NoteVerifier.from_vkey(bad)


def test_entry_refs_must_be_a_list() -> None:
    with pytest.raises(InputError, match="entry.refs"):
        Entry.from_dict({"kind": "alert", "payload": {}, "refs": 1e308})


def test_toml_deep_nesting_non_utf8_and_wrong_types_name_file_and_key(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="deep.toml: TOML nested too deeply"):
        load_settings(deep, env={})
    with pytest.raises(ConfigError, match="deep.toml"):
        PipelineConfig.load(deep)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[trustmesh]\nlog_level = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="latin.toml: not UTF-8"):
        load_settings(latin, env={})
    typed = tmp_path / "typed.toml"
    typed.write_text('[pipeline]\nbatch_size = "many"\n')
    with pytest.raises(ConfigError, match=r"typed.toml: key batch_size: expected int, got a string 'many'"):
        PipelineConfig.load(typed)
    typed.write_text('[trustmesh]\nseed = [1]\n')
    with pytest.raises(ConfigError, match=r"typed.toml: key seed: expected int, got an array"):
        load_settings(typed, env={})
    typed.write_text('[pipeline]\nreplay_speed = true\n')
    with pytest.raises(ConfigError, match=r"key replay_speed: expected float, got a boolean"):
        PipelineConfig.load(typed)


def test_run_with_a_wrong_typed_config_key_is_one_line_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[pipeline]\ncheckpoint_every = {a = 1}\n')
    done = runner.invoke(app, ["run", "--config", str(cfg)])
    assert done.exit_code == 2 and "checkpoint_every" in done.output and "Traceback" not in done.output


def test_json_loader_limits() -> None:
    from trustmesh._safeload import load_json

    with pytest.raises(InputError, match="nested deeper"):
        load_json("[" * 100 + "]" * 100, "x.json")
    with pytest.raises(InputError, match="nested deeper"):
        load_json("[" * 100_000 + "]" * 100_000, "x.json")
    with pytest.raises(InputError, match="not acceptable JSON"):
        load_json('{"a": 1e400}', "x.json")
    with pytest.raises(InputError, match="not acceptable JSON"):
        load_json('{"a": NaN}', "x.json")
    assert load_json(json.dumps({"a": [1, {"b": 2}]}), "x.json") == {"a": [1, {"b": 2}]}


def test_lab_scenario_alias_bomb_is_refused() -> None:
    from trustmesh.lab import parse_scenario

    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    rows += [f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    with pytest.raises(InputError, match="scenario.yaml:.*expands to more than"):
        parse_scenario("\n".join(rows) + "\n", "scenario.yaml")


def test_yaml_timestamp_tag_without_a_date_is_a_playbook_error() -> None:
    # found by the long fuzz run: PyYAML's timestamp constructor raised AttributeError
    with pytest.raises(PlaybookError, match="case.yaml: cannot build a YAML value"):
        PlaybookSet.from_yaml("# a comment\n!!timestamp\n", "case.yaml")


def test_toml_integer_over_the_digit_limit_is_a_config_error(tmp_path: Path) -> None:
    # found by the long fuzz run: tomllib raised ValueError (int max str digits)
    p = tmp_path / "huge.toml"
    p.write_text("[pipeline]\norigin = " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match="huge.toml: not valid TOML"):
        PipelineConfig.load(p)


def test_non_ascii_signature_line_is_a_checkpoint_error(tmp_path: Path) -> None:
    # found by the long fuzz run: a BOM inside a signature's base64 raised ValueError
    with Ledger.create(tmp_path / "l", "re.example/log") as led:
        led.append([Entry(kind="note", payload={"i": 1}, time=1.0)])
        cp = led.checkpoint()
    text = cp.to_bytes().decode()
    head, sig = text.rsplit("\n\n", 1)
    name, blob = sig[len("\u2014 "):].split(" ", 1)
    bad = f"{head}\n\n\u2014 {name} \ufeff{blob}".encode()
    with pytest.raises(CheckpointError, match="is not base64"):
        Checkpoint.from_bytes(bad)
