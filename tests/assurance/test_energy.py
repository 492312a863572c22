"""Energy per inference, per transaction and per incident, from the project's energy model."""

from __future__ import annotations

from typing import Any

import pytest

from trustmesh.assurance import energy_profile
from trustmesh.evaluate._energy import EnergyMeter, op_energy


@pytest.mark.parametrize("kind", ["gbdt", "mlp", "snn"])
def test_energy_profile_has_all_three_figures(kind: str, request: pytest.FixtureRequest) -> None:
    t = request.getfixturevalue(kind)
    doc = energy_profile(t.det, t.test_features.iloc[:200], meter=EnergyMeter(prefer_rapl=False), op_energy=op_energy,
                         flows_per_incident=50, entries_per_incident=51, batch=20)
    assert doc["method"] == "cpu-time-model"
    assert 0 < doc["per_inference_j"] < 1 and 0 < doc["per_transaction_j"] < 10
    assert doc["per_incident_j"] == pytest.approx(50 * doc["per_inference_j"] + 51 * doc["per_transaction_j"])
    if kind == "mlp":
        W = [p.numel() for n, p in t.det.net.named_parameters() if n.endswith("weight")]
        assert doc["per_inference_ops"]["macs"] == sum(W)
        assert doc["per_inference_ops"]["mac_45nm_j"] == pytest.approx(sum(W) * 4.6e-12)
    if kind == "snn":  # measured synaptic operations, priced at 45 nm and on Loihi
        sops = doc["per_inference_ops"]["sops"]
        assert sops > 0 and doc["per_inference_ops"]["sop_loihi_j"] == pytest.approx(sops * 23.6e-12)


def test_energy_profile_refuses_an_empty_sample(gbdt: Any) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        energy_profile(gbdt.det, gbdt.test_features.iloc[:0], meter=EnergyMeter(), op_energy=op_energy)
