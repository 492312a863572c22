"""Section 2b: federated poisoning — the attack suite with and without robust aggregation.

Uses trustmesh.federated's in-process driver (same Site/Coordinator code as the Flower simulation,
without Ray start-up), so many (attack x defence) runs fit the time budget.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from trustmesh.evaluate._context import Context
from trustmesh.evaluate._report import Plot, SectionResult, Table, figure_png

__all__ = ["federated_round_time", "poisoning_section"]

_FL_DATASETS = ("nsl-kdd", "ton-iot-network", "ton-iot-telemetry")


def _api() -> Any:
    """Return the federated entry points (public names first, the defining modules as a fallback)."""
    import trustmesh.federated as fed

    names = ("AttackSpec", "FLConfig", "load_federated_data", "run_inprocess")
    if all(hasattr(fed, n) for n in names):
        return fed
    from types import SimpleNamespace

    from trustmesh.federated._attacks import AttackSpec
    from trustmesh.federated._data import load_federated_data
    from trustmesh.federated._run import FLConfig, run_inprocess

    return SimpleNamespace(AttackSpec=AttackSpec, FLConfig=FLConfig, load_federated_data=load_federated_data,
                           run_inprocess=run_inprocess)


_DATA_CACHE: dict[tuple[str, int, int], Any] = {}


def _data(ctx: Context) -> Any:
    fed = _api()
    cfg = ctx.config
    name = next((d for d in cfg.datasets if d in _FL_DATASETS), "nsl-kdd")
    key = (name, cfg.fl_max_train, cfg.seed)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = fed.load_federated_data(name, ctx.data_dir, max_train=cfg.fl_max_train,
                                                   max_test=cfg.max_test_rows, seed=cfg.seed)
    return _DATA_CACHE[key]


def federated_round_time(ctx: Context, n_sites: int) -> dict[str, Any]:
    """Return the mean wall time of one federated round (FedAvg) with ``n_sites`` sites."""
    fed = _api()
    cfg = ctx.config
    data = _data(ctx)
    t0 = time.perf_counter()
    res = fed.run_inprocess(fed.FLConfig(n_sites=n_sites, rounds=1, seed=cfg.seed), data)
    wall = time.perf_counter() - t0
    rt = list(res.round_times) or [wall]
    return {"sites": n_sites, "round_s": float(np.mean(rt)), "wall_s": wall}


def poisoning_section(ctx: Context) -> SectionResult:
    """Run each attack with FedAvg (no defence) and with each robust aggregator; report accuracy and F1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fed = _api()
    cfg = ctx.config
    data = _data(ctx)
    rows: list[tuple[Any, ...]] = []
    metrics: dict[str, Any] = {"dataset": data.name, "sites": cfg.fl_sites, "rounds": cfg.fl_rounds,
                               "malicious_fraction": cfg.fl_malicious_fraction}

    def run(attack: str | None, agg: str) -> dict[str, Any]:
        spec = None if attack is None else fed.AttackSpec(kind=attack, fraction=cfg.fl_malicious_fraction)
        ctx.step(f"federated {attack or 'clean'} / {agg}")
        res = fed.run_inprocess(fed.FLConfig(n_sites=cfg.fl_sites, rounds=cfg.fl_rounds, aggregator=agg,
                                             attack=spec, seed=cfg.seed), data)
        m = res.metrics
        return {"accuracy": m.get("accuracy"), "f1": m.get("f1", m.get("attack_f1")),
                "macro_f1": m.get("macro_f1"), "backdoor_success": res.backdoor_success,
                "malicious_sites": list(res.malicious_sites)}

    aggs = ("fedavg", *cfg.fl_defences)
    clean = run(None, "fedavg")
    metrics["clean"] = clean
    rows.append(("none", "fedavg", clean["accuracy"], clean["macro_f1"], None))
    grid: dict[str, dict[str, Any]] = {}
    for attack in cfg.fl_attacks:
        grid[attack] = {}
        for agg in aggs:
            r = run(attack, agg)
            grid[attack][agg] = r
            rows.append((attack, agg, r["accuracy"], r["macro_f1"], r["backdoor_success"]))
    metrics["grid"] = grid
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    width = 0.8 / len(aggs)
    for i, agg in enumerate(aggs):
        ax.bar(np.arange(len(cfg.fl_attacks)) + i * width,
               [float(grid[a][agg]["accuracy"] or 0) for a in cfg.fl_attacks],
               width, label=agg)
    ax.axhline(float(clean["accuracy"] or 0), color="k", ls=":", lw=1, label="no attack (fedavg)")
    ax.set_xticks(np.arange(len(cfg.fl_attacks)) + 0.4 - width / 2, cfg.fl_attacks, fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="test accuracy",
           title=f"Poisoning ({cfg.fl_malicious_fraction:.0%} malicious of {cfg.fl_sites} sites)")
    ax.legend(fontsize=6)
    plot = Plot("poisoning-grid", "Global-model accuracy under each attack, per aggregator", figure_png(fig))
    table = Table("Federated poisoning (in-process driver)", ("attack", "aggregator", "accuracy", "macro-F1",
                                                              "backdoor success"), tuple(rows))
    headline: dict[str, Any] = {"clean accuracy": clean["accuracy"]}
    for attack in cfg.fl_attacks:
        def accuracy(a: str, at: str = attack) -> float:
            return float(grid[at][a]["accuracy"] or 0)

        best = max(cfg.fl_defences, key=accuracy)
        headline[f"{attack}: fedavg -> best defence"] = (
            f"{float(grid[attack]['fedavg']['accuracy'] or 0):.3f} -> {float(grid[attack][best]['accuracy'] or 0):.3f} ({best})"
        )
    return SectionResult("poisoning", "", "ok", headline=headline, metrics=metrics, tables=(table,),
                         plots=(plot,))
