"""Section 1c: the spiking detector against the MLP with the same hidden sizes."""

from __future__ import annotations

from typing import Any

import numpy as np

from trustmesh.evaluate._context import Context
from trustmesh.evaluate._energy import op_energy
from trustmesh.evaluate._report import Plot, SectionResult, Table, figure_png

__all__ = ["mlp_macs", "rare_class_recall", "run_spiking"]

# a class is "rare" when it makes up less than this share of the training rows
RARE_SHARE = 0.01


def mlp_macs(det: Any) -> int:
    """Return multiply-accumulates per inference of a torch MLP detector (sum of in x out per Linear)."""
    import torch

    net = getattr(det, "net", None)
    if net is None:
        raise ValueError("detector has no torch network")
    return int(sum(m.in_features * m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)))


def rare_class_recall(
    train_labels: Any, test_labels: Any, flagged: np.ndarray
) -> tuple[float | None, list[str]]:
    """Return the mean detection recall over rare attack classes, and their names.

    A class is rare when it is below ``RARE_SHARE`` of the training rows (but present there: classes
    never seen in training are novel, not rare). Its recall is the share of its test rows flagged.
    """
    train = np.asarray(train_labels).astype(str)
    test = np.asarray(test_labels).astype(str)
    names, counts = np.unique(train, return_counts=True)
    share = dict(zip(names.tolist(), (counts / max(len(train), 1)).tolist(), strict=True))
    rare = sorted(c for c in set(test.tolist()) if c != "benign" and 0 < share.get(c, 0.0) < RARE_SHARE)
    if not rare:
        return None, []
    return float(np.mean([flagged[test == c].mean() for c in rare])), rare


def run_spiking(ctx: Context) -> SectionResult:
    """Compare the SNN with the same-size MLP: accuracy, macro-F1, rare-class recall, SOPs vs MACs, energy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trustmesh.detect import evaluate_detector

    cfg = ctx.config
    rows: list[tuple[Any, ...]] = []
    metrics: dict[str, Any] = {}
    energy_rows: list[tuple[Any, ...]] = []
    for dataset in cfg.datasets:
        split = ctx.split(dataset)
        snn = ctx.detector("snn", dataset)
        mlp = ctx.detector("mlp", dataset)
        sample = split.test.features.iloc[: min(len(split.test), cfg.energy_flows)]
        out: dict[str, Any] = {}
        for kind, det in (("snn", snn), ("mlp", mlp)):
            r = evaluate_detector(det, split.test)
            rare, rare_names = rare_class_recall(split.train.labels, split.test.labels,
                                                 det.predict(split.test.features))
            def infer(d: Any = det) -> Any:
                return d.score(sample)

            reading = ctx.meter.run(infer, min_wall_s=0.3, max_repeats=20)
            per_inf_j = reading.joules / max(len(sample), 1)
            if kind == "snn":
                det.score(sample)
                stats = det.last_spike_stats.to_dict()
                ops = {"sops": stats["sops"], "macs": 0.0}
                est = op_energy(sops=stats["sops"])
                op_j = est["sop_45nm_j"]
            else:
                stats = None
                macs = mlp_macs(det)
                ops = {"sops": 0.0, "macs": float(macs)}
                est = op_energy(macs=macs)
                op_j = est["mac_45nm_j"]
            out[kind] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "f1": r["f1"],
                         "roc_auc": r["roc_auc"],
                         "rare_class_recall": rare, "rare_classes": rare_names, "ops_per_inference": ops,
                         "spike_stats": stats, "op_energy_j": est, "cpu_energy_per_inference_j": per_inf_j,
                         "cpu_energy_method": reading.method, "score_seconds_per_flow": reading.wall_s / len(sample)}
            rows.append((dataset, kind, r["accuracy"], r["macro_f1"], rare, ops["sops"] or None,
                         ops["macs"] or None,
                         op_j * 1e9, per_inf_j * 1e6))
            energy_rows.append((dataset, kind, est["mac_45nm_j"] * 1e9, est["sop_45nm_j"] * 1e9,
                                est["sop_loihi_j"] * 1e9, est["sop_truenorth_j"] * 1e9))
        metrics[dataset] = out
    # plot: accuracy / macro-F1 / rare recall side by side, and ops energy on a log axis
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{r[0]} {r[1]}" for r in rows]
    x = np.arange(len(rows))
    ax1.bar(x - 0.25, [float(r[2] or 0) for r in rows], 0.25, label="accuracy")
    ax1.bar(x, [float(r[3] or 0) for r in rows], 0.25, label="macro-F1")
    ax1.bar(x + 0.25, [float(r[4] or 0) for r in rows], 0.25, label="rare-class detection recall")
    ax1.set_xticks(x, labels, fontsize=6, rotation=30, ha="right")
    ax1.set(ylim=(0, 1.05), title="SNN vs MLP (same hidden sizes)")
    ax1.legend(fontsize=6)
    ax2.bar(x, [float(r[7]) for r in rows], color=["#55a868" if r[1] == "snn" else "#c44e52" for r in rows])
    ax2.set_xticks(x, labels, fontsize=6, rotation=30, ha="right")
    ax2.set(ylabel="nJ per inference (45 nm estimate)", title="SOPs x 0.9 pJ (SNN) vs MACs x 4.6 pJ (MLP)")
    plot = Plot("spiking-vs-mlp", "Spiking detector vs MLP: quality and operation-count energy",
                figure_png(fig))
    table = Table(
        "SNN vs MLP of the same hidden sizes (test split)",
        ("dataset", "model", "accuracy", "macro-F1",
         f"rare-class detection recall (<{RARE_SHARE:.0%} of train)",
         "SOPs/inference", "MACs/inference", "op energy nJ (45 nm est.)", "CPU energy µJ/flow"),
        tuple(rows),
    )
    etable = Table(
        "Operation-count energy estimates per inference, nJ (Horowitz ISSCC 2014; Loihi: Davies et al. 2018; "
        "TrueNorth: Merolla et al. 2014) — estimates, arithmetic only",
        ("dataset", "model", "MACs x 4.6 pJ", "SOPs x 0.9 pJ", "SOPs x 23.6 pJ (Loihi)",
         "SOPs x 26 pJ (TrueNorth)"),
        tuple(energy_rows),
    )
    first = cfg.datasets[0]
    s, m = metrics[first]["snn"], metrics[first]["mlp"]
    headline = {
        f"{first} SNN macro-F1 / MLP macro-F1": f"{float(s['macro_f1'] or 0):.3f} / {float(m['macro_f1'] or 0):.3f}",
        f"{first} SOPs (SNN) vs MACs (MLP)": f"{s['ops_per_inference']['sops']:.0f} vs {m['ops_per_inference']['macs']:.0f}",
        f"{first} op energy nJ SNN vs MLP (est.)": f"{s['op_energy_j']['sop_45nm_j'] * 1e9:.2f} vs "
        f"{m['op_energy_j']['mac_45nm_j'] * 1e9:.2f}",
    }
    notes = (
        f"SNN: {cfg.snn_encoding} coding, {cfg.snn_steps} steps, LIF hidden {list(cfg.snn_hidden)}; "
        f"MLP: ReLU hidden {list(cfg.snn_hidden)} (trustmesh.detect.MLPDetector, multiclass).",
        "SOPs count one accumulate per spike per fan-out synapse over all steps; neuron membrane updates are not "
        "included in the per-SOP figures. CPU energy is the energy model's figure for scoring on this machine.",
    )
    return SectionResult("spiking", "", "ok", headline=headline, metrics=metrics, tables=(table, etable),
                         plots=(plot,), notes=notes)
