"""Model passports: build, sign, record on the ledger, verify; every changed field is caught and named."""

from __future__ import annotations

import copy
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from trustmesh.assurance import PASSPORT_ENTRY_KIND, Passport, build_passport, record_passport, verify_passport
from trustmesh.errors import ArtifactDigestError, InputError, PassportError
from trustmesh.ledger import Ledger, NoteSigner

CERT = {"format": "trustmesh.robustness-certificate/1", "method": "veritas-exact", "rows": 4,
        "results": [{"epsilon": 0.01, "certified_accuracy": 0.75, "certified_rows": [0, 1, 3]}]}
PROOFS = [{"system": "ezkl", "vk_sha256": "ab" * 32, "input_scale": 13}]
ENERGY = {"detector": "gbdt", "per_inference_j": 1.5e-6, "per_transaction_j": 2e-4, "per_incident_j": 0.02}


@pytest.fixture(scope="module")
def recorded(gbdt: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("passport")
    signer = NoteSigner.generate("trustmesh-passport")
    passport = build_passport(gbdt.path, signer, robustness=[CERT], energy=ENERGY, proofs=PROOFS)
    with Ledger.create(root / "led", "test.local/log") as led:
        led.append_one("model", {"model_id": gbdt.manifest.model_id})
        passport = record_passport(passport, led, refs=(0,))
    out = root / "p.json"
    passport.write(out)
    return out, gbdt.path, root / "led"


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        return [p for k in sorted(doc) for p in _leaves(doc[k], (*path, k))]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _fields() -> list[tuple[Any, ...]]:
    # the leaves of a real passport, read once at collection from a document of the same shape
    sample = {"format": 1, "issued": 1, "signer": {"vkey": 1}, "signature": 1, "ledger": {"origin": 1, "index": 1},
              "model": {k: 1 for k in ("model_id", "kind", "artifact_sha256", "manifest_sha256", "features",
                                       "classes", "threshold")},
              "lineage": {k: 1 for k in ("data_digest", "training", "params", "seed", "versions", "created",
                                         "parents", "federated")},
              "metrics": {"validation": 1}, "robustness": [1], "energy": {k: 1 for k in ENERGY}, "proofs": [{k: 1 for k in PROOFS[0]}]}
    return _leaves(sample)


def _mutate(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1") if value else "x"
    if isinstance(value, list):
        return [*value, "extra"]
    if isinstance(value, dict):
        return {**value, "extra": 1}
    return "changed"


def test_recorded_passport_verifies_against_model_and_ledger(recorded: tuple[Path, Path, Path]) -> None:
    out, model, led = recorded
    passport = Passport.load(out)
    verify_passport(passport, model_path=model, ledger_dir=led)
    with Ledger.open(led, read_only=True) as ledger:
        entry = ledger.entry(passport.ledger["index"] if passport.ledger else -1)
    assert entry.kind == PASSPORT_ENTRY_KIND and entry.refs == (0,)
    assert entry.payload["passport_sha256"] == passport.digest
    assert passport.body["robustness"] == [CERT] and passport.body["energy"]["per_incident_j"] == 0.02
    assert passport.body["model"]["artifact_sha256"] == json.loads(
        Path(str(model) + ".manifest.json").read_text())["artifact_sha256"]


@pytest.mark.parametrize("field", _fields(), ids=lambda p: ".".join(map(str, p)))
def test_any_changed_field_fails_verification(recorded: tuple[Path, Path, Path], tmp_path: Path,
                                              field: tuple[Any, ...]) -> None:
    out, model, led = recorded
    doc = json.loads(out.read_text())
    target = doc
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = _mutate(target[field[-1]])
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(doc))
    with pytest.raises((PassportError, InputError)) as info:
        verify_passport(Passport.load(changed), model_path=model, ledger_dir=led)
    if isinstance(info.value, PassportError):
        assert "passport field" in str(info.value)
        top = str(field[0])
        # the error names the changed section (or the signature/ledger position that binds it)
        assert top in str(info.value) or "signature" in str(info.value) or "ledger" in str(info.value)


def test_signature_alone_catches_a_change_without_model_or_ledger(recorded: tuple[Path, Path, Path],
                                                                   tmp_path: Path) -> None:
    out, _, _ = recorded
    doc = json.loads(out.read_text())
    doc["metrics"]["validation"]["accuracy"] = 0.99
    changed = tmp_path / "c.json"
    changed.write_text(json.dumps(doc))
    with pytest.raises(PassportError, match="signature"):
        verify_passport(Passport.load(changed))


def test_resigned_passport_with_another_key_fails_against_the_ledger(recorded: tuple[Path, Path, Path],
                                                                     tmp_path: Path) -> None:
    out, model, led = recorded
    original = Passport.load(out)
    forged = build_passport(model, NoteSigner.generate("mallory"), robustness=[CERT], energy=ENERGY,
                            proofs=PROOFS, issued=original.body["issued"])
    forged = Passport(forged.body, forged.signature, original.ledger)
    verify_passport(forged)  # self-consistent ...
    with pytest.raises(PassportError, match="signer.vkey"):
        verify_passport(forged, ledger_dir=led)  # ... but not what the ledger recorded


def test_changed_artifact_is_refused(recorded: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out, model, _ = recorded
    copy_model = tmp_path / "m.tm"
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 3] ^= 1
    copy_model.write_bytes(bytes(raw))
    Path(str(copy_model) + ".manifest.json").write_text(Path(str(model) + ".manifest.json").read_text())
    with pytest.raises(ArtifactDigestError):
        verify_passport(Passport.load(out), model_path=copy_model)


def test_unrecorded_passport_fails_ledger_check(gbdt: Any, tmp_path: Path) -> None:
    passport = build_passport(gbdt.path, NoteSigner.generate("k"))
    verify_passport(passport, model_path=gbdt.path)
    with Ledger.create(tmp_path / "led", "x.local/log"):
        pass
    with pytest.raises(PassportError, match="never recorded"):
        verify_passport(passport, ledger_dir=tmp_path / "led")


@pytest.mark.parametrize("text", ["[]", '{"format": "other"}', "{", json.dumps({"format": "trustmesh.model-passport/1"})])
def test_malformed_passport_is_bad_input(tmp_path: Path, text: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(InputError, match="bad.json"):
        Passport.load(p)


def test_cli_passport_verify_and_key_mode(gbdt: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trustmesh.cli import app

    runner = CliRunner()
    with Ledger.create(tmp_path / "led", "cli.local/log"):
        pass
    key, out = tmp_path / "k.skey", tmp_path / "p.json"
    res = runner.invoke(app, ["model", "passport", str(gbdt.path), "--ledger", str(tmp_path / "led"),
                              "--key", str(key), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    res = runner.invoke(app, ["model", "verify", str(out), "--model", str(gbdt.path), "--ledger", str(tmp_path / "led")])
    assert res.exit_code == 0 and "verified" in res.output
    doc = json.loads(out.read_text())
    bad = copy.deepcopy(doc)
    bad["model"]["threshold"] = 0.001
    out.write_text(json.dumps(bad))
    res = runner.invoke(app, ["model", "verify", str(out), "--model", str(gbdt.path)])
    assert res.exit_code == 1 and "model.threshold" in res.output
