"""Energy model: RAPL measurement when readable, else a documented CPU-time power model.

Measured energy comes from the Linux powercap interface (Intel RAPL package domains,
``/sys/class/powercap/intel-rapl:*/energy_uj``). When it cannot be read (containers, VMs, AMD
without the driver) energy is *estimated* as CPU time x (TDP share per core): ``E = t_cpu * W_core``,
where ``W_core`` defaults to 10 W (a 200 W server part with 20 cores, or a 45 W laptop part with
4 cores plus uncore share); every figure says which method produced it.

For neural and spiking detectors the module also gives operation-count estimates at 45 nm
(M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014): a 32-bit
floating-point multiply-accumulate costs 3.7 pJ + 0.9 pJ = 4.6 pJ, a synaptic operation (one 32-bit
floating-point add) 0.9 pJ. Published per-SOP figures of neuromorphic chips give a second view:
Intel Loihi 23.6 pJ/SOP (M. Davies et al., "Loihi: A Neuromorphic Manycore Processor with On-Chip
Learning", IEEE Micro 38(1), 2018) and IBM TrueNorth 26 pJ/SOP (P. A. Merolla et al., "A million
spiking-neuron integrated circuit with a scalable communication network and interface", Science 345,
2014). These are estimates of arithmetic energy only (no memory traffic), labelled as such.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MAC_PJ",
    "OPS_CITATIONS",
    "SOP_PJ",
    "SOP_PJ_LOIHI",
    "SOP_PJ_TRUENORTH",
    "EnergyMeter",
    "EnergyReading",
    "op_energy",
]

#: 32-bit float multiply (3.7 pJ) + add (0.9 pJ) at 45 nm, Horowitz ISSCC 2014.
MAC_PJ = 4.6
#: 32-bit float add at 45 nm, Horowitz ISSCC 2014 (one synaptic accumulate).
SOP_PJ = 0.9
#: Intel Loihi energy per synaptic operation, Davies et al., IEEE Micro 2018.
SOP_PJ_LOIHI = 23.6
#: IBM TrueNorth energy per synaptic event, Merolla et al., Science 2014.
SOP_PJ_TRUENORTH = 26.0

OPS_CITATIONS: dict[str, str] = {
    "mac_45nm": "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014: "
    "fp32 mult 3.7 pJ + fp32 add 0.9 pJ = 4.6 pJ/MAC at 45 nm",
    "sop_45nm": "M. Horowitz, ISSCC 2014: fp32 add 0.9 pJ per synaptic accumulate at 45 nm",
    "loihi": "M. Davies et al., 'Loihi: A Neuromorphic Manycore Processor with On-Chip Learning', "
    "IEEE Micro 38(1), 2018: 23.6 pJ per synaptic operation",
    "truenorth": "P. A. Merolla et al., 'A million spiking-neuron integrated circuit ...', Science 345, "
    "2014: 26 pJ per synaptic event",
}

_RAPL_ROOT = Path("/sys/class/powercap")


def op_energy(*, macs: float = 0.0, sops: float = 0.0) -> dict[str, float]:
    """Return operation-count energy estimates in joules for ``macs`` MACs and ``sops`` SOPs."""
    if macs < 0 or sops < 0:
        raise ValueError(f"operation counts must be >= 0, got macs={macs}, sops={sops}")
    return {
        "mac_45nm_j": macs * MAC_PJ * 1e-12,
        "sop_45nm_j": sops * SOP_PJ * 1e-12,
        "sop_loihi_j": sops * SOP_PJ_LOIHI * 1e-12,
        "sop_truenorth_j": sops * SOP_PJ_TRUENORTH * 1e-12,
    }


def _rapl_domains(root: Path = _RAPL_ROOT) -> list[Path]:
    """Return readable top-level RAPL package domains (sub-domains would double count)."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    for d in sorted(root.glob("intel-rapl:*")):
        if d.name.count(":") != 1:
            continue
        f = d / "energy_uj"
        try:
            int(f.read_text().strip())
        except (OSError, ValueError):
            continue
        found.append(f)
    return found


@dataclass(frozen=True, slots=True)
class EnergyReading:
    """Energy of one measured block: joules, how they were obtained, and the times behind them."""

    joules: float
    method: str  # "rapl" (measured) or "cpu-time-model" (estimated)
    wall_s: float
    cpu_s: float
    watts_per_core: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "joules": self.joules,
            "method": self.method,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "watts_per_core": self.watts_per_core,
            "note": self.note,
        }


@dataclass
class EnergyMeter:
    """Measure the energy of code blocks with RAPL when readable, else estimate from CPU time.

    RAPL counts the whole package (other processes included), so it is used only when
    ``prefer_rapl`` is set and counters are readable; the CPU-time model charges only this process.
    """

    watts_per_core: float = 10.0
    prefer_rapl: bool = True
    rapl_root: Path = _RAPL_ROOT
    _domains: list[Path] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.watts_per_core <= 0:
            raise ValueError(f"watts_per_core must be > 0, got {self.watts_per_core}")
        self._domains = _rapl_domains(self.rapl_root) if self.prefer_rapl else []

    @property
    def method(self) -> str:
        """Return ``"rapl"`` when counters are readable, else ``"cpu-time-model"``."""
        return "rapl" if self._domains else "cpu-time-model"

    def describe(self) -> dict[str, Any]:
        """Return a JSON-ready description of the method, for the report."""
        if self._domains:
            return {"method": "rapl", "domains": [str(d.parent.name) for d in self._domains],
                    "note": "measured package energy (includes any concurrent load on the machine)"}
        return {
            "method": "cpu-time-model",
            "watts_per_core": self.watts_per_core,
            "note": (
                f"RAPL not readable under {self.rapl_root}; energy ESTIMATED as process CPU time x "
                f"{self.watts_per_core} W per busy core (TDP share per core)"
            ),
        }

    def _read_uj(self) -> int:
        return sum(int(d.read_text().strip()) for d in self._domains)

    @staticmethod
    def _cpu_s() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        # include child threads' time (same process) and children (worker processes we waited for)
        rc = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime + rc.ru_utime + rc.ru_stime

    @contextmanager
    def measure(self) -> Iterator[list[EnergyReading]]:
        """Measure the ``with`` block; the yielded list receives one reading when the block ends."""
        out: list[EnergyReading] = []
        uj0 = self._read_uj() if self._domains else 0
        c0 = self._cpu_s()
        t0 = time.perf_counter()
        yield out
        wall = time.perf_counter() - t0
        cpu = self._cpu_s() - c0
        if self._domains:
            uj = self._read_uj() - uj0
            if uj < 0:  # counter wrapped; fall back rather than report nonsense
                out.append(self._model(wall, cpu, "RAPL counter wrapped during the block"))
            else:
                out.append(EnergyReading(uj * 1e-6, "rapl", wall, cpu))
        else:
            out.append(self._model(wall, cpu))

    def _model(self, wall: float, cpu: float, note: str = "") -> EnergyReading:
        return EnergyReading(cpu * self.watts_per_core, "cpu-time-model", wall, cpu, self.watts_per_core,
                             note)

    def run(self, fn: Callable[[], Any], *, min_wall_s: float = 0.2,
            max_repeats: int = 1000) -> EnergyReading:
        """Call ``fn`` repeatedly until ``min_wall_s`` passes; return the reading per call."""
        if min_wall_s < 0:
            raise ValueError(f"min_wall_s must be >= 0, got {min_wall_s}")
        calls = 0
        with self.measure() as box:
            t0 = time.perf_counter()
            while calls < max_repeats:
                fn()
                calls += 1
                if time.perf_counter() - t0 >= min_wall_s:
                    break
        r = box[0]
        return EnergyReading(r.joules / calls, r.method, r.wall_s / calls, r.cpu_s / calls,
                             r.watts_per_core, f"mean of {calls} calls" + (f"; {r.note}" if r.note else ""))


def cpu_count() -> int:
    """Return the CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
