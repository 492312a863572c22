"""Security evaluation: the blueprint runner, its report, the energy model and growth fits.

Recipes: :func:`run_blueprint` with a :class:`BlueprintConfig` from :func:`load_config` writes
``report.json`` (schema ``REPORT_SCHEMA`` version ``REPORT_VERSION``, see docs/blueprint.md) and a
self-contained ``report.html``. :class:`EnergyMeter` measures (RAPL) or estimates (CPU time x power
per core) energy; :func:`op_energy` turns MAC/SOP counts into 45 nm and neuromorphic estimates;
:func:`fit_growth` fits power-law and log growth models.
"""

from trustmesh.evaluate._blueprint import SECTIONS, BlueprintOutcome, check_config, run_blueprint
from trustmesh.evaluate._config import KNOWN_DETECTORS, PROFILES, BlueprintConfig, load_config
from trustmesh.evaluate._energy import (
    MAC_PJ,
    OPS_CITATIONS,
    SOP_PJ,
    SOP_PJ_LOIHI,
    SOP_PJ_TRUENORTH,
    EnergyMeter,
    EnergyReading,
    op_energy,
)
from trustmesh.evaluate._growth import GrowthFit, fit_growth
from trustmesh.evaluate._report import REPORT_SCHEMA, REPORT_VERSION, Plot, SectionResult, Table

__all__ = [
    "BlueprintConfig",
    "BlueprintOutcome",
    "EnergyMeter",
    "EnergyReading",
    "GrowthFit",
    "KNOWN_DETECTORS",
    "MAC_PJ",
    "OPS_CITATIONS",
    "PROFILES",
    "Plot",
    "REPORT_SCHEMA",
    "REPORT_VERSION",
    "SECTIONS",
    "SOP_PJ",
    "SOP_PJ_LOIHI",
    "SOP_PJ_TRUENORTH",
    "SectionResult",
    "Table",
    "check_config",
    "fit_growth",
    "load_config",
    "op_energy",
    "run_blueprint",
]
