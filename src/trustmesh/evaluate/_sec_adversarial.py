"""Section 2: evasion attacks (ART FGSM/PGD on neural detectors, HopSkipJump on the GBDT) and poisoning.

Attacks run in a constrained feature space: only numeric flow features move, expressed as
``u = minmax(signed_log(x))`` in [0, 1] (the L-inf budget is in these units); categorical fields never
change, so they stay valid. After every gradient step the point is projected: back into the
epsilon-ball and [0, 1], then to raw values where count features (non-negative integers in the
training data) are rounded and clipped at 0, then back to ``u``. Scores are always taken through the
detector's own pipeline on the projected raw features.

FGSM: I. Goodfellow, J. Shlens, C. Szegedy, ICLR 2015. PGD: A. Madry et al., ICLR 2018.
HopSkipJump: J. Chen, M. Jordan, M. Wainwright, IEEE S&P 2020. Gradient steps come from
adversarial-robustness-toolbox (``FastGradientMethod`` for each step, ``HopSkipJump``).
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any, cast

import numpy as np

from trustmesh.evaluate._context import Context
from trustmesh.evaluate._report import Plot, SectionResult, Table, figure_png

__all__ = ["ConstrainedSpace", "run_adversarial", "run_poisoning"]

log = logging.getLogger(__name__)


class ConstrainedSpace:
    """The attack space of one detector: numeric columns in [0, 1], categoricals frozen."""

    def __init__(self, det: Any, train_matrix: np.ndarray) -> None:
        from trustmesh.detect.snn import SpikeEncoding

        enc = det.encoder
        cats = [j for j, c in enumerate(enc.columns) if c in enc.vocab]
        self.enc = getattr(det, "spike_encoding", None) or SpikeEncoding.fit(train_matrix, cats)
        self.numeric = np.asarray(self.enc.numeric, dtype=np.int64)
        self.integer = np.asarray(self.enc.integer, dtype=bool)

    def to_u(self, matrix: np.ndarray) -> np.ndarray:
        """Return the attackable coordinates of encoded rows."""
        return self.enc.scale_numeric(matrix[:, self.numeric])

    def to_matrix(self, u: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Return ``base`` rows with numeric columns set from ``u`` (counts rounded, >= 0)."""
        raw = self.enc.unscale_numeric(u)
        raw[:, self.integer] = np.maximum(np.round(raw[:, self.integer]), 0.0)
        out = np.array(base, dtype=np.float32, copy=True)
        out[:, self.numeric] = raw.astype(np.float32)
        return out

    def project(self, u: np.ndarray, u0: np.ndarray, eps: float, base: np.ndarray) -> np.ndarray:
        """Project into the eps-ball around ``u0`` and [0, 1], then onto valid raw values."""
        u = np.clip(np.clip(u, u0 - eps, u0 + eps), 0.0, 1.0)
        return self.to_u(self.to_matrix(u, base))


def _logit_fn(det: Any, space: ConstrainedSpace, base: np.ndarray) -> Any:
    """Return a torch module u -> binary logits [benign, attack] for MLP or SNN detectors."""
    import torch

    det_name = det.name
    numeric = torch.from_numpy(space.numeric)
    enc = space.enc

    if det_name == "snn":
        inner = det.logit_module()
        n_num = len(enc.numeric)
        base_inputs = torch.from_numpy(det.spike_inputs(base))

        def full(u: Any, rows: Any) -> Any:
            x = base_inputs[rows].clone()
            x[:, :n_num] = u
            return inner(x)

    elif det_name == "mlp":
        pre = det.pre
        lo, scale = torch.from_numpy(pre.lo), torch.from_numpy(pre.scale)
        span, elo = torch.tensor(enc.span, dtype=torch.float32), torch.tensor(enc.lo, dtype=torch.float32)
        filled = np.where(np.isnan(base), pre.fill, base)
        base_z = torch.from_numpy(((np.sign(filled) * np.log1p(np.abs(filled)) - pre.lo) / pre.scale).astype(np.float32))

        def full(u: Any, rows: Any) -> Any:
            z = base_z[rows].clone()
            t = u * span + elo  # signed log of the raw value
            z[:, numeric] = (t - lo[numeric]) / scale[numeric]
            return det.net(z)

    else:
        raise ValueError(f"no differentiable path for detector {det_name!r}")

    class Binary(torch.nn.Module):
        """Collapse class logits to [benign, attack] (logsumexp over attack classes)."""

        def __init__(self) -> None:
            super().__init__()
            self.rows: Any = None
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, u: Any) -> Any:
            logits = full(u, self.rows[: u.shape[0]])
            return torch.stack([logits[:, 0], torch.logsumexp(logits[:, 1:], dim=1)], dim=1)

    return Binary()


def _gradient_attack(det: Any, space: ConstrainedSpace, base: np.ndarray, y: np.ndarray, eps: float,
                     steps: int) -> np.ndarray:
    """Return adversarial matrices for ``base`` rows (FGSM when steps == 1, else PGD with projection)."""
    import torch
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import PyTorchClassifier

    u0 = space.to_u(base)
    if eps == 0:
        return space.to_matrix(u0, base)
    model = _logit_fn(det, space, base)
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(u0.shape[1],),
                            nb_classes=2, clip_values=(0.0, 1.0), device_type="cpu")
    step = eps if steps == 1 else 2.5 * eps / steps  # Madry et al.'s step size rule
    labels = np.eye(2, dtype=np.float32)[y.astype(int)]
    u = u0.copy()
    batch = 256
    for _ in range(steps):
        out = np.empty_like(u)
        for s in range(0, len(u), batch):
            model.rows = torch.arange(s, min(s + batch, len(u)))
            fgm = FastGradientMethod(clf, eps=step, eps_step=step, batch_size=batch)
            out[s : s + batch] = fgm.generate(u[s : s + batch], y=labels[s : s + batch])
        u = space.project(out, u0, eps, base)
    return space.to_matrix(u, base)


def _hsj_attack(det: Any, space: ConstrainedSpace, base: np.ndarray, benign_u: np.ndarray, cfg: Any,
                seed: int) -> list[dict[str, Any]]:
    """Run HopSkipJump (black box, decision only) on each detected attack row; return per-row results.

    The attack starts from the closest benign test flow (in ``u``) that the detector, given this row's
    frozen categorical fields, already calls benign — HopSkipJump then walks it towards the attack row
    along the decision boundary. ART draws its random directions from NumPy's global generator, so it
    is seeded here (and the previous state restored) to keep runs reproducible.
    """
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import BlackBoxClassifier

    results = []
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        for i in range(len(base)):
            row = base[i : i + 1]
            u0 = space.to_u(row)

            def predict(u: np.ndarray, row: np.ndarray = row) -> np.ndarray:
                m = space.to_matrix(np.clip(u, 0.0, 1.0), np.repeat(row, len(u), axis=0))
                flagged = det.score_matrix(m) >= det.threshold
                return cast(np.ndarray, np.eye(2, dtype=np.float32)[flagged.astype(int)])

            start_ok = predict(benign_u)[:, 1] == 0
            if not start_ok.any():
                results.append({"evaded": False, "linf": None, "l2": None, "queries": len(benign_u),
                                "seconds": 0.0,
                                "note": "no benign starting point under this row's categorical fields"})
                continue
            cands = benign_u[start_ok]
            init = cands[np.argmin(np.abs(cands - u0).max(axis=1))][None, :]
            clf = BlackBoxClassifier(predict, input_shape=(u0.shape[1],), nb_classes=2,
                                     clip_values=(0.0, 1.0))
            attack = HopSkipJump(clf, targeted=False, norm=np.inf, max_iter=cfg.hsj_max_iter,
                                 max_eval=cfg.hsj_max_eval, init_eval=10, init_size=100, verbose=False)
            queries = [len(benign_u)]
            original = clf.predict

            def counting(x: np.ndarray, *a: Any, original: Any = original, **k: Any) -> np.ndarray:
                queries[0] += len(x)
                return cast(np.ndarray, original(x, *a, **k))

            clf.predict = counting
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                adv = attack.generate(u0, y=np.array([[0.0, 1.0]], dtype=np.float32), x_adv_init=init)
            u_adv = space.to_u(space.to_matrix(adv, row))  # projection onto valid raw values
            evaded = bool(det.score_matrix(space.to_matrix(u_adv, row))[0] < det.threshold)
            results.append({"evaded": evaded, "linf": float(np.abs(u_adv - u0).max()),
                            "l2": float(np.linalg.norm(u_adv - u0)), "queries": queries[0],
                            "seconds": time.perf_counter() - t0})
    finally:
        np.random.set_state(saved)
    return results


def run_adversarial(ctx: Context) -> SectionResult:
    """Accuracy vs L-inf budget under FGSM/PGD (neural detectors) and HopSkipJump (GBDT)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trustmesh.evaluate._blueprint import Skip

    cfg = ctx.config
    dataset = cfg.datasets[0]
    split = ctx.split(dataset)
    rng = ctx.rng(7)
    neural = [k for k in cfg.detectors if k in ("mlp", "snn")]
    if not neural and "gbdt" not in cfg.detectors:
        raise Skip("no attackable detector configured (needs mlp, snn or gbdt)")
    test = split.test
    # balanced sample: half attack, half benign rows of the test split
    att = np.flatnonzero(test.is_attack)
    ben = np.flatnonzero(~test.is_attack)
    n_half = min(cfg.adv_samples // 2, len(att), len(ben))
    idx = np.sort(np.concatenate([rng.choice(att, n_half, replace=False),
                                  rng.choice(ben, n_half, replace=False)]))
    y = test.is_attack[idx]
    metrics: dict[str, Any] = {"dataset": dataset, "samples": int(len(idx)),
                               "epsilons": list(cfg.adv_epsilons)}
    rows: list[tuple[Any, ...]] = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in neural:
        det = ctx.detector(kind, dataset)
        base = det.encode(test.features.iloc[idx])
        space = ConstrainedSpace(det, det.encode(split.train.features))
        for attack, steps in (("FGSM", 1), (f"PGD-{cfg.adv_pgd_steps}", cfg.adv_pgd_steps)):
            accs, det_rates = [], []
            for eps in cfg.adv_epsilons:
                ctx.step(f"{attack} on {kind}, eps={eps}")
                adv = _gradient_attack(det, space, base, y, float(eps), steps)
                flagged = det.score_matrix(adv) >= det.threshold
                acc = float(np.mean(flagged == y))
                rate = float(np.mean(flagged[y])) if y.any() else None
                accs.append(acc)
                det_rates.append(rate)
                rows.append((kind, attack, eps, acc, rate))
            metrics[f"{kind}/{attack}"] = {"accuracy": accs, "attack_detection_rate": det_rates}
            ax.plot(cfg.adv_epsilons, accs, marker="o", label=f"{kind} {attack}")
        if kind == "mlp":  # certified accuracy (CROWN) on the same rows, beside the attacks (docs/assurance.md)
            cert = _certified(det, base, y, cfg.adv_epsilons, space, metrics.get(f"{kind}/PGD-{cfg.adv_pgd_steps}"))
            metrics[f"{kind}/certified"] = cert
            rows += [(kind, "certified (CROWN bound)", e, a, r) for e, a, r in
                     zip(cfg.adv_epsilons, cert["accuracy"], cert["attack_detection_rate"], strict=True)]
    if "gbdt" in cfg.detectors and cfg.hsj_samples > 0:
        det = ctx.detector("gbdt", dataset)
        base_all = det.encode(test.features.iloc[att])
        detected = np.flatnonzero(det.score_matrix(base_all) >= det.threshold)
        pick: np.ndarray | list[int] = rng.choice(detected, size=min(cfg.hsj_samples, len(detected)),
                          replace=False) if len(detected) else []
        space = ConstrainedSpace(det, det.encode(split.train.features))
        ctx.step(f"HopSkipJump on gbdt ({len(pick)} rows)")
        benign_rows = rng.choice(ben, size=min(200, len(ben)), replace=False)
        benign_u = space.to_u(det.encode(test.features.iloc[np.sort(benign_rows)]))
        res = _hsj_attack(det, space, base_all[np.sort(np.asarray(pick, dtype=int))], benign_u, cfg, cfg.seed)
        still = []
        for eps in cfg.adv_epsilons:
            evaded = [bool(r["evaded"]) and float(r["linf"]) <= eps + 1e-9 for r in res]
            hsj_rate = 1.0 - float(np.mean(evaded)) if res else None
            still.append(hsj_rate)
            rows.append(("gbdt", "HopSkipJump (black box)", eps, None, hsj_rate))
        metrics["gbdt/HopSkipJump"] = {"per_row": res, "attack_detection_rate": still,
                                       "success_rate": float(np.mean([r["evaded"] for r in res])) if res else None,
                                       "median_linf_evaded": float(np.median([r["linf"] for r in res if r["evaded"]]))
                                       if any(r["evaded"] for r in res) else None,
                                       "median_queries": float(np.median([r["queries"] for r in res])) if res else None}
        picked = base_all[np.sort(np.asarray(pick, dtype=int))]
        if len(picked):  # exact certificates (dtai-veritas) on the rows HopSkipJump attacked
            cert = _certified(det, picked, np.ones(len(picked), dtype=bool), cfg.adv_epsilons, space,
                              {"attack_detection_rate": still})
            metrics["gbdt/certified"] = cert
            rows += [("gbdt", "certified (exact, veritas)", e, None, r) for e, r in
                     zip(cfg.adv_epsilons, cert["attack_detection_rate"], strict=True)]
        if res:
            # res is non-empty here, so every detection rate in ``still`` is a float.
            ax.plot(cfg.adv_epsilons, cast(list[float], still), marker="s", ls="--", label="gbdt HopSkipJump (detection rate)")
    ax.set(xlabel="L-inf budget ε (scaled feature units)", ylabel="accuracy / detection rate",
           ylim=(-0.02, 1.02),
           title=f"Robustness vs budget — {dataset}")
    ax.legend(fontsize=7)
    plot = Plot("adversarial-budget", f"Accuracy vs perturbation budget on {dataset}", figure_png(fig))
    table = Table("Evasion results (balanced test sample; HopSkipJump rows: detection rate of attacked attack rows)",
                  ("detector", "attack", "epsilon", "accuracy", "attack detection rate"), tuple(rows))
    headline: dict[str, Any] = {}
    eps_max = max(cfg.adv_epsilons)
    for key, m in metrics.items():
        if isinstance(m, dict) and "accuracy" in m:
            headline[f"{key} accuracy at ε={eps_max}"] = m["accuracy"][-1] if cfg.adv_epsilons[-1] == eps_max \
                else m["accuracy"][int(np.argmax(cfg.adv_epsilons))]
    if "gbdt/HopSkipJump" in metrics:
        hsj = metrics["gbdt/HopSkipJump"]
        headline["gbdt HopSkipJump success rate (unbounded)"] = hsj["success_rate"]
        headline["gbdt HopSkipJump median L-inf of evasions"] = hsj["median_linf_evaded"]
        headline[f"gbdt detection rate under HopSkipJump at ε={eps_max}"] = hsj["attack_detection_rate"][
            int(np.argmax(cfg.adv_epsilons))]
    notes = ("Budgets are L-inf in the [0, 1] signed-log min-max space of numeric features; categorical fields are "
             "frozen; counts are rounded to non-negative integers after every step (projection).",
             "Certified rows: a lower bound over every attack in the budget (CROWN for the MLP, exact dtai-veritas "
             "search for the GBDT; docs/assurance.md); certified <= empirical must hold, the gap is in the metrics.")
    return SectionResult("adversarial", "", "ok", headline=headline, metrics=metrics, tables=(table,),
                         plots=(plot,), notes=notes)


def _certified(det: Any, base: np.ndarray, y: np.ndarray, epsilons: Any, space: ConstrainedSpace,
               empirical: dict[str, Any] | None) -> dict[str, Any]:
    """Certified accuracy/detection per budget (trustmesh.assurance) and the gap to the empirical attack."""
    from trustmesh.assurance import certify
    from trustmesh.detect import Manifest

    stub = Manifest(model_id="blueprint", kind=det.name, features=tuple(det.feature_names), classes=tuple(det.classes_),
                    threshold=float(det.threshold), seed=0, params={}, encoder={}, data_digest=None,
                    artifact_sha256=cast(Any, "0" * 64), created="")
    cert = certify(det, stub, base, y, [float(e) for e in epsilons], space.enc)
    acc = cert.certified_accuracy()
    det_rates = [float(np.mean(np.asarray(c)[y])) if y.any() else None for c in cert.certified]
    out: dict[str, Any] = {"method": cert.method, "accuracy": acc, "attack_detection_rate": det_rates,
                           "seconds": list(cert.seconds)}
    if empirical is not None:
        emp = empirical.get("accuracy") or empirical.get("attack_detection_rate") or []
        mine = acc if empirical.get("accuracy") else det_rates
        out["gap_to_empirical"] = [None if e is None or c is None else float(e) - float(c)
                                   for e, c in zip(emp, mine, strict=False)]
        out["certified_le_empirical"] = all(g is None or g >= -1e-9 for g in out["gap_to_empirical"])
    return out


def run_poisoning(ctx: Context) -> SectionResult:
    """Run the federated attack suite with and without robust aggregation (needs trustmesh.federated)."""
    from trustmesh.evaluate._sec_poisoning import poisoning_section

    return poisoning_section(ctx)
