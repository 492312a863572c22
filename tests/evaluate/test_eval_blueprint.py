"""The blueprint end to end on the tiny "test" profile: every section, the cache, the ledger record."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustmesh.cli._app import app
from trustmesh.evaluate import SECTIONS, load_config, run_blueprint
from trustmesh.ledger import Ledger, audit, verify_inclusion


@pytest.fixture(scope="module")
def report(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """Run the test profile once for this module (sections cached under the session's base temp)."""
    # shared with tests/integration/test_report_chromium.py: a second run in the session hits the cache
    out = tmp_path_factory.getbasetemp() / "eval-blueprint-test-profile"
    ledger = tmp_path_factory.mktemp("blueprint-ledger") / "ledger"
    t0 = time.perf_counter()
    run_blueprint(load_config("test"), out, data_dir=data_dir, ledger_dir=ledger)
    return out, ledger, time.perf_counter() - t0


@pytest.mark.slow
@pytest.mark.needs_data
def test_every_section_runs_and_none_is_faked(report: tuple[Path, Path, float]) -> None:
    out, _, _ = report
    doc = json.loads((out / "report.json").read_text())
    statuses = {s["name"]: s for s in doc["sections"]}
    assert list(statuses) == list(SECTIONS)
    for name, s in statuses.items():
        # a section either ran (with headline figures and at least one plot) or says why it did not
        assert s["status"] in ("ok", "skipped"), (name, s["reason"])
        if s["status"] == "ok":
            assert s["headline"] and s["plots"], name
        else:
            assert s["reason"] and not s["headline"], name
    # sections that depend only on built components must have run
    for name in ("efficacy", "spiking", "adversarial", "integrity", "cost", "energy"):
        assert statuses[name]["status"] == "ok", (name, statuses[name]["reason"])


@pytest.mark.slow
@pytest.mark.needs_data
def test_sane_floors_on_the_numbers(report: tuple[Path, Path, float]) -> None:
    out, _, _ = report
    sec = {s["name"]: s for s in json.loads((out / "report.json").read_text())["sections"]}
    eff = sec["efficacy"]["metrics"]["nsl-kdd"]
    assert eff["gbdt"]["roc_auc"] > 0.8  # even 600 rows of NSL-KDD separate well
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in eff.values())
    assert sec["integrity"]["headline"]["tamper detection rate"] == 1.0
    assert sec["integrity"]["metrics"]["split_view"]["witness_detection_rate"] == 1.0
    adv = sec["adversarial"]["metrics"]["mlp/FGSM"]["accuracy"]
    assert adv[0] >= adv[-1]  # eps=0 is the clean accuracy; a larger budget cannot help the detector much
    snn = sec["spiking"]["metrics"]["nsl-kdd"]["snn"]
    sizes = snn["spike_stats"]["layer_sizes"]
    assert snn["ops_per_inference"]["sops"] > 0 and sizes[1:] == [16, 8, sizes[-1]]
    energy = sec["energy"]["metrics"]
    assert energy["method"]["method"] in ("rapl", "cpu-time-model")
    assert all(v["joules_per_inference"] > 0 for v in energy["inference"].values())
    growth = sec["cost"]["metrics"]["ledger"]["growth"]["proof_bytes"]
    assert growth is not None and growth["power_law"]["b"] < 0.5  # proofs grow ~log n, far below linear


@pytest.mark.slow
@pytest.mark.needs_data
def test_evaluation_record_is_in_the_ledger_and_verifies(report: tuple[Path, Path, float]) -> None:
    out, ledger_dir, _ = report
    receipt = json.loads((out / "ledger-receipt.json").read_text())
    digest = hashlib.sha256((out / "report.json").read_bytes()).hexdigest()
    assert receipt["report_sha256"] == digest
    audit(ledger_dir)  # raises on any inconsistency
    with Ledger.open(ledger_dir, read_only=True) as led:
        entry = led.entry(receipt["index"])
        cp = led.latest_checkpoint()
        assert cp is not None and cp.size == receipt["tree_size"]
        verify_inclusion(led.prove_inclusion(receipt["index"]), cp, led.entry_bytes(receipt["index"]))
    assert entry.kind == "evaluation" and entry.payload["report_sha256"] == digest
    assert entry.payload["statuses"]["integrity"] == "ok"


@pytest.mark.slow
@pytest.mark.needs_data
def test_rerun_reuses_the_cache(report: tuple[Path, Path, float], data_dir: Path) -> None:
    out, _, _ = report
    outcome = run_blueprint(load_config("test"), out, data_dir=data_dir, ledger_dir=None)
    notes = {s.name: s.notes for s in outcome.sections if s.status == "ok"}
    assert notes and all("reused from the resumable cache" in n for n in notes.values())


def test_cli_rejects_a_bad_config_before_any_work(tmp_path: Path) -> None:
    # Arrange
    cfg = tmp_path / "bad.toml"
    cfg.write_text('detectors = ["gbdt", "telepathy"]\n')
    out = tmp_path / "out"
    # Act
    args = ["eval", "blueprint", "--profile", "test", "--config", str(cfg), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    # Assert
    assert result.exit_code == 2
    assert "telepathy" in result.output
    assert not out.exists()


def test_cli_rejects_an_unknown_dataset_and_profile(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('datasets = ["cic-ids-3000"]\n')
    r1 = CliRunner().invoke(app, ["eval", "blueprint", "--config", str(cfg), "--out", str(tmp_path / "o")])
    r2 = CliRunner().invoke(app, ["eval", "blueprint", "--profile", "enormous", "--out", str(tmp_path / "o")])
    assert r1.exit_code == 2 and "cic-ids-3000" in r1.output
    assert r2.exit_code == 2 and "unknown profile" in r2.output
    assert not (tmp_path / "o").exists()
