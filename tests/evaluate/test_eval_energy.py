"""Energy model: operation-count estimates, RAPL reading and the CPU-time power model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trustmesh.evaluate import MAC_PJ, SOP_PJ, SOP_PJ_LOIHI, SOP_PJ_TRUENORTH, EnergyMeter, op_energy


def test_op_energy_uses_the_cited_per_operation_figures() -> None:
    # Act
    e = op_energy(macs=1_000_000, sops=2_000_000)
    # Assert: Horowitz 45 nm, Loihi and TrueNorth figures
    assert (MAC_PJ, SOP_PJ, SOP_PJ_LOIHI, SOP_PJ_TRUENORTH) == (4.6, 0.9, 23.6, 26.0)
    assert math.isclose(e["mac_45nm_j"], 4.6e-6)
    assert math.isclose(e["sop_45nm_j"], 1.8e-6)
    assert math.isclose(e["sop_loihi_j"], 47.2e-6)
    assert math.isclose(e["sop_truenorth_j"], 52.0e-6)


def test_op_energy_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="operation counts"):
        op_energy(macs=-1)


def _busy(n: int = 300_000) -> int:
    return sum(i * i for i in range(n))


def test_cpu_time_model_charges_cpu_seconds_times_watts(tmp_path: Path) -> None:
    # Arrange: no powercap tree -> the documented model
    meter = EnergyMeter(watts_per_core=12.5, rapl_root=tmp_path / "none")
    # Act
    with meter.measure() as box:
        _busy()
    r = box[0]
    # Assert
    assert meter.method == "cpu-time-model" and r.method == "cpu-time-model"
    assert r.cpu_s > 0
    assert math.isclose(r.joules, r.cpu_s * 12.5)
    assert "ESTIMATED" in meter.describe()["note"]


def test_rapl_counters_are_used_when_readable(tmp_path: Path) -> None:
    # Arrange: a powercap tree shaped like the kernel's (package domain + a sub-domain that must not count)
    pkg = tmp_path / "intel-rapl:0"
    sub = tmp_path / "intel-rapl:0:0"
    pkg.mkdir()
    sub.mkdir()
    (pkg / "energy_uj").write_text("1000000\n")
    (sub / "energy_uj").write_text("5\n")
    meter = EnergyMeter(rapl_root=tmp_path)
    # Act: the counter advances by 2.5 J during the block
    with meter.measure() as box:
        (pkg / "energy_uj").write_text("3500000\n")
    # Assert
    assert meter.method == "rapl"
    assert box[0].method == "rapl"
    assert math.isclose(box[0].joules, 2.5)


def test_run_reports_energy_per_call(tmp_path: Path) -> None:
    meter = EnergyMeter(watts_per_core=10.0, rapl_root=tmp_path)
    r = meter.run(lambda: _busy(20_000), min_wall_s=0.05, max_repeats=50)
    assert r.joules > 0 and r.wall_s > 0
    assert "calls" in r.note


def test_meter_rejects_bad_power() -> None:
    with pytest.raises(ValueError, match="watts_per_core"):
        EnergyMeter(watts_per_core=0)
