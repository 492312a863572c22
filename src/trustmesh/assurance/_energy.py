"""Energy figures of a detector for its passport: per inference, per ledger transaction, per incident.

The energy model itself lives in :mod:`trustmesh.evaluate._energy` (RAPL when readable, else CPU
time x watts per core; operation counts at 45 nm for neural and spiking models). ``assurance`` may
not import ``evaluate`` (docs/architecture.md), so the caller passes the meter and the op-count
function in (the CLI does). Definitions:

* **per inference**: energy to score one flow, measured over a sample (mean of repeated calls);
  for the MLP also MACs x 4.6 pJ, for the SNN the measured synaptic operations x 0.9 pJ (45 nm) and
  x 23.6 pJ (Loihi) — arithmetic only;
* **per transaction**: energy to append one alert-sized entry to a ledger, including its share of
  the batch's SQLite transaction and one signed checkpoint per batch (measured on a scratch ledger);
* **per incident**: ``flows_per_incident x per_inference + entries_per_incident x per_transaction``
  with the stated counts (defaults: 100 flows and 100 alert entries plus 1 incident entry, a scan
  seen by the default model), so the figure is reproducible and its assumptions visible.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "energy_profile",
]


def _macs(det: Any) -> int | None:
    net = getattr(det, "net", None)
    if det.name != "mlp" or net is None:
        return None
    from trustmesh.assurance._bounds import linear_layers

    return int(sum(W.size for W, _ in linear_layers(net)))


def energy_profile(det: Any, sample: pd.DataFrame, *, meter: Any, op_energy: Callable[..., dict[str, float]],
                   flows_per_incident: int = 100, entries_per_incident: int = 101, batch: int = 100) -> dict[str, Any]:
    """Measure energy per inference, per transaction and per incident of ``det`` (see module docstring)."""
    from trustmesh.ledger import Entry, Ledger

    if len(sample) == 0:
        raise ValueError("energy_profile needs a non-empty sample of flows")
    if flows_per_incident < 1 or entries_per_incident < 1 or batch < 1:
        raise ValueError("flows_per_incident, entries_per_incident and batch must be >= 1")
    reading = meter.run(lambda: det.score(sample, fill_missing=True), min_wall_s=0.3, max_repeats=20)
    per_inf = reading.joules / len(sample)
    ops: dict[str, Any] = {}
    macs = _macs(det)
    if macs is not None:
        ops = {"macs": macs, **op_energy(macs=macs)}
    if det.name == "snn":
        det.score(sample, fill_missing=True)
        stats = det.last_spike_stats.to_dict()
        ops = {"sops": stats["sops"], **op_energy(sops=stats["sops"])}
    doc = {"event": {"kind": ["alert"]}, "trustmesh": {"score": 0.9, "model_id": "x" * 24},
           "source": {"ip": "192.0.2.1", "port": 40000}, "destination": {"ip": "192.0.2.2", "port": 22},
           "features_sha256": "0" * 64}
    with tempfile.TemporaryDirectory(prefix="tm-energy-") as tmp:
        led = Ledger.create(tmp, "energy.probe/log")
        try:
            def append() -> None:
                led.append([Entry(kind="alert", payload=doc) for _ in range(batch)])
                led.checkpoint()

            tx = meter.run(append, min_wall_s=0.3, max_repeats=5)
        finally:
            led.close()
    per_tx = tx.joules / batch
    return {
        "detector": det.name,
        "method": reading.method,
        "meter": meter.describe(),
        "per_inference_j": per_inf,
        "per_inference_seconds": reading.wall_s / len(sample),
        "per_inference_ops": ops,
        "per_transaction_j": per_tx,
        "per_transaction_seconds": tx.wall_s / batch,
        "per_incident_j": flows_per_incident * per_inf + entries_per_incident * per_tx,
        "per_incident_assumption": {"flows": flows_per_incident, "ledger_entries": entries_per_incident,
                                    "formula": "flows x per_inference + ledger_entries x per_transaction"},
        "sample_flows": int(len(sample)),
        "sample_is_finite": bool(np.isfinite(per_inf)),
    }
