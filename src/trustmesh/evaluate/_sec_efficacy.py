"""Sections 1 and 1b: detection efficacy per detector and dataset, and cross-dataset transfer."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from trustmesh.evaluate._context import Context
from trustmesh.evaluate._report import Plot, SectionResult, Table, figure_png

__all__ = ["curves", "fpr_at_recall", "run_efficacy", "run_transfer"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fpr_at_recall(is_attack: np.ndarray, scores: np.ndarray, recall: float) -> float | None:
    """Return the lowest FPR of any threshold reaching at least ``recall`` on the attacks."""
    y = np.asarray(is_attack, dtype=bool)
    if not y.any() or y.all():
        return None
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, scores)
    ok = tpr >= recall - 1e-12
    return float(fpr[ok].min()) if ok.any() else None


def curves(is_attack: np.ndarray, scores: np.ndarray) -> dict[str, Any] | None:
    """Return ROC and PR curves (thinned to <= 200 points) or None with one class only."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = np.asarray(is_attack, dtype=bool)
    if not y.any() or y.all():
        return None
    fpr, tpr, _ = roc_curve(y, scores)
    prec, rec, _ = precision_recall_curve(y, scores)

    def thin(a: np.ndarray, b: np.ndarray) -> tuple[list[float], list[float]]:
        idx = np.unique(np.linspace(0, len(a) - 1, min(len(a), 200)).astype(int))
        return [float(v) for v in a[idx]], [float(v) for v in b[idx]]

    f, t = thin(fpr, tpr)
    r, p = thin(rec, prec)
    return {"roc": {"fpr": f, "tpr": t}, "pr": {"recall": r, "precision": p}}


def _slug(*parts: str) -> str:
    return "-".join("".join(c if c.isalnum() else "_" for c in p) for p in parts)


def run_efficacy(ctx: Context) -> SectionResult:
    """Train every configured detector on every dataset and measure it on the held-out test split."""
    plt = _plt()
    from trustmesh.detect import evaluate_detector

    cfg = ctx.config
    rows: list[tuple[Any, ...]] = []
    metrics: dict[str, Any] = {}
    plots: list[Plot] = []
    notes: list[str] = []
    per_class_rows: list[tuple[Any, ...]] = []
    headline: dict[str, Any] = {}
    for dataset in cfg.datasets:
        split = ctx.split(dataset)
        notes.append(f"{dataset}: {split.provenance}")
        fig_roc, ax_roc = plt.subplots(figsize=(5, 4))
        fig_pr, ax_pr = plt.subplots(figsize=(5, 4))
        best: tuple[float, str, Any] | None = None
        metrics[dataset] = {}
        for kind in cfg.detectors:
            det = ctx.detector(kind, dataset)
            t0 = time.perf_counter()
            scores = det.score(split.test.features)
            score_s = time.perf_counter() - t0
            result = evaluate_detector(det, split.test, train=split.train)
            cur = curves(split.test.is_attack, scores)
            at_recall = fpr_at_recall(split.test.is_attack, scores, cfg.fixed_recall)
            result["fpr_at_fixed_recall"] = at_recall
            result["fixed_recall"] = cfg.fixed_recall
            result["curves"] = cur
            result["fit_seconds"] = ctx.fit_seconds.get((kind, dataset))
            result["score_seconds"] = score_s
            metrics[dataset][kind] = result
            rows.append((dataset, kind, result["accuracy"], result["precision"], result["recall"],
                         result["f1"],
                         result["macro_f1"], result["roc_auc"], result["pr_auc"], result["fpr"], at_recall,
                         result["fit_seconds"]))
            if cur is not None:
                ax_roc.plot(cur["roc"]["fpr"], cur["roc"]["tpr"],
                            label=f"{kind} (AUC {result['roc_auc']:.3f})")
                ax_pr.plot(cur["pr"]["recall"], cur["pr"]["precision"],
                           label=f"{kind} (AP {result['pr_auc']:.3f})")
            f1 = float(result["f1"] or 0.0)
            if best is None or f1 > best[0]:
                best = (f1, kind, result)
        ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax_roc.set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"ROC — {dataset}")
        ax_roc.legend(fontsize=7)
        ax_pr.set(xlabel="recall", ylabel="precision", title=f"Precision-recall — {dataset}")
        ax_pr.legend(fontsize=7)
        plots.append(Plot(_slug("efficacy-roc", dataset), f"ROC curves on {dataset} (test split)",
                          figure_png(fig_roc)))
        plots.append(Plot(_slug("efficacy-pr", dataset), f"PR curves on {dataset} (test split)",
                          figure_png(fig_pr)))
        assert best is not None
        f1, kind, result = best
        # one row per class, one recall column per detector
        by_det = {k: {str(c): v for c, v in m.get("per_class", {}).items()}
                  for k, m in metrics[dataset].items()}
        for cls in sorted({c for pcs in by_det.values() for c in pcs}):
            support = next((pcs[cls].get("support") for pcs in by_det.values() if cls in pcs), None)
            per_class_rows.append((dataset, cls, support,
                                   *(by_det[k].get(cls, {}).get("recall") for k in cfg.detectors)))
        headline[f"{dataset} best F1"] = f"{f1:.3f} ({kind})"
        headline[f"{dataset} best macro-F1"] = max(
            (f"{float(m['macro_f1'] or 0):.3f} ({k})" for k, m in metrics[dataset].items()),
            key=lambda s: float(s.split()[0]),
        )
        plots.append(_confusion_plot(plt, dataset, kind, result))
        plots.append(_per_class_plot(plt, dataset, metrics[dataset]))
    table = Table(
        "Efficacy on the test split (attack = positive; threshold calibrated on validation at the target FPR)",
        ("dataset", "detector", "accuracy", "precision", "recall", "F1", "macro-F1", "ROC-AUC", "PR-AUC",
         "FPR",
         f"FPR@recall {cfg.fixed_recall}", "fit s"),
        tuple(rows),
    )
    pc_table = Table("Per-class recall on the test split (binary models: share of the class flagged; multi-class "
                     "models: share classified as that class)",
                     ("dataset", "class", "support",
                      *(f"recall {k}" for k in cfg.detectors)), tuple(per_class_rows))
    notes.append(f"thresholds calibrated to target FPR {cfg.target_fpr} on a validation hold-out of the training split")
    return SectionResult("efficacy", "", "ok", headline=headline, metrics=metrics, tables=(table, pc_table),
                         plots=tuple(plots), notes=tuple(notes))


def _confusion_plot(plt: Any, dataset: str, kind: str, result: dict[str, Any]) -> Plot:
    bc = result.get("binary_confusion") or {}
    mat = np.array([[bc.get("tn", 0), bc.get("fp", 0)], [bc.get("fn", 0), bc.get("tp", 0)]], dtype=float)
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(mat, cmap="Blues")
    for (i, j), v in np.ndenumerate(mat):
        ax.text(j, i, f"{int(v)}", ha="center", va="center", color="black")
    ax.set_xticks([0, 1], ["benign", "attack"])
    ax.set_yticks([0, 1], ["benign", "attack"])
    ax.set(xlabel="predicted", ylabel="true", title=f"{kind} on {dataset}")
    return Plot(_slug("efficacy-confusion", dataset),
                f"Confusion matrix of the best detector ({kind}) on {dataset}",
                figure_png(fig))


def _per_class_plot(plt: Any, dataset: str, by_detector: dict[str, Any]) -> Plot:
    classes = sorted({str(c) for m in by_detector.values() for c in m.get("per_class", {})})
    shown = classes[:25]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(len(by_detector), 1)
    for i, (kind, m) in enumerate(by_detector.items()):
        pc = {str(k): v for k, v in m.get("per_class", {}).items()}
        vals = [float(pc.get(c, {}).get("recall") or 0.0) for c in shown]
        ax.bar(np.arange(len(shown)) + i * width, vals, width, label=kind)
    ax.set_xticks(np.arange(len(shown)) + 0.4 - width / 2, shown, rotation=70, fontsize=6)
    ax.set(ylabel="recall", ylim=(0, 1.05), title=f"Per-class recall — {dataset}"
           + (f" (first {len(shown)} of {len(classes)} classes)" if len(classes) > len(shown) else ""))
    ax.legend(fontsize=6)
    return Plot(_slug("efficacy-per-class", dataset), f"Per-class recall on {dataset}", figure_png(fig))


# ----------------------------------------------------------------------------------------- transfer
def run_transfer(ctx: Context) -> SectionResult:
    """Train on one dataset and test on another, on the columns they share (canonical flow schema)."""
    plt = _plt()
    from trustmesh.detect import evaluate_detector
    from trustmesh.flows import DATASETS, load_dataset

    from trustmesh.evaluate._blueprint import Skip

    cfg = ctx.config
    kind = next((k for k in ("gbdt", "mlp", "snn") if k in cfg.detectors), cfg.detectors[0])
    rows: list[tuple[Any, ...]] = []
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    # canonical-schema sources (labelled Zeek conn.log, pcaps labelled by documented ground truth)
    canonical = [n for n, s in DATASETS.items()
                 if s.kind in ("zeek", "pcap") and (s.kind == "pcap" or s.splits)]
    if cfg.transfer_sources:
        unknown = [n for n in cfg.transfer_sources if n not in canonical]
        if unknown:
            raise Skip(f"transfer_sources {unknown} are not labelled canonical-schema sources; known: {canonical}")
        canonical = list(cfg.transfer_sources)
    tables: dict[str, Any] = {}
    for name in canonical:
        try:
            t = load_dataset(name, data_dir=ctx.data_dir)
        except Exception as exc:  # a capture that cannot be metered here is noted, not fatal
            notes.append(f"{name}: not loaded ({type(exc).__name__}: {exc})")
            continue
        if len(t) >= 2:
            tables[name] = t
    pool_names = [n for n in tables if tables[n].is_attack.any() and (~tables[n].is_attack).any()]
    pairs: list[tuple[str, Any, str, Any]] = []
    if len(tables) >= 2:
        # leave-one-source-out: train on every other canonical source, test on the held-out one
        import pandas as pd

        from trustmesh.flows import LabelledTable

        for held in pool_names or list(tables):
            rest = [tables[n] for n in tables if n != held]
            cols = sorted(set.intersection(*(set(map(str, t.features.columns)) for t in (*rest,
                                                                                         tables[held]))))
            if len(cols) < 3:
                continue
            feats = pd.concat([t.features[cols] for t in rest], ignore_index=True)
            labels = pd.concat([t.labels for t in rest], ignore_index=True)
            train = LabelledTable(name="canonical-rest", features=feats, labels=labels,
                                  is_attack=np.concatenate([t.is_attack for t in rest]), dropped_columns=(),
                                  files=(), digest="")
            test = tables[held]
            pairs.append((f"all canonical sources except {held}", train, held,
                          test.subset(np.arange(len(test)))))
    for a in cfg.datasets:
        for b in cfg.datasets:
            if a != b:
                sa, sb = ctx.split(a), ctx.split(b)
                pairs.append((a, sa.train, b, sb.test))
    for train_name, train, test_name, test in pairs:
        cols = sorted(set(map(str, train.features.columns)) & set(map(str, test.features.columns)))
        if len(cols) < 3:
            rows.append((train_name, test_name, len(cols), None, None, None, None,
                         "fewer than 3 shared columns"))
            continue
        if train.is_attack.all() or not train.is_attack.any():
            rows.append((train_name, test_name, len(cols), None, None, None, None,
                         "training side has one class"))
            continue
        det = ctx.make_detector(kind)
        binary = np.where(train.is_attack, "attack", "benign")  # class names differ across datasets
        det.fit(train.features[cols], binary)
        sub = test.subset(np.arange(len(test)))
        sub_feats = sub.features[cols]
        from trustmesh.flows import LabelledTable

        test_t = LabelledTable(name=test_name, features=sub_feats, labels=pd_labels(sub.is_attack),
                               is_attack=sub.is_attack, dropped_columns=(), files=(), digest="")
        r = evaluate_detector(det, test_t)
        metrics[f"{train_name} -> {test_name}"] = {"shared_columns": cols, **{k: r[k] for k in (
            "accuracy", "precision", "recall", "f1", "roc_auc", "fpr")}}
        rows.append((train_name, test_name, len(cols), r["accuracy"], r["recall"], r["f1"], r["roc_auc"], ""))
    done = [r for r in rows if r[3] is not None]
    if not done:
        raise Skip("no dataset pair shares at least 3 feature columns with both classes on the training side; "
                   f"pairs tried: {[(r[0], r[1], r[2]) for r in rows]}")
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.35 * len(done)))
    labels = [f"{r[0][:38]} → {r[1]}" for r in done]
    ax.barh(np.arange(len(done)), [float(r[5] or 0) for r in done], color="#4c72b0", label="F1")
    ax.barh(np.arange(len(done)) + 0.35, [float(r[6] or 0) for r in done], height=0.35, color="#dd8452",
            label="ROC-AUC")
    ax.set_yticks(np.arange(len(done)), labels, fontsize=6)
    ax.set(xlim=(0, 1.05), xlabel="score", title=f"Cross-dataset transfer ({kind}, shared columns)")
    ax.legend(fontsize=6)
    plot = Plot("transfer-f1", "Transfer F1 / ROC-AUC: train on one source, test on another", figure_png(fig))
    table = Table(f"Transfer ({kind}, binary attack/benign, fixed threshold 0.5)",
                  ("train", "test", "shared columns", "accuracy", "recall", "F1", "ROC-AUC",
                   "note"), tuple(rows))
    best = max(done, key=lambda r: float(r[6] or 0))
    headline = {"pairs evaluated": len(done), "best transfer ROC-AUC": f"{float(best[6] or 0):.3f} "
                f"({best[0][:40]} → {best[1]})"}
    notes.append("canonical-schema sources: " + (", ".join(tables) or "none loaded"))
    return SectionResult("transfer", "", "ok", headline=headline, metrics=metrics, tables=(table,),
                         plots=(plot,),
                         notes=tuple(notes))


def pd_labels(is_attack: np.ndarray) -> Any:
    """Return binary class names as a pandas Series."""
    import pandas as pd

    return pd.Series(np.where(is_attack, "attack", "benign"))
