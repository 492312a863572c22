"""Section 3: integrity of the ledger — randomized tamper campaign, proof cost, witness split views.

The campaign edits the ledger's SQLite file directly (as an attacker with disk access would):
modifying, deleting, inserting, reordering or truncating entries, flipping bits in hash tiles and
forging checkpoints. Each trial runs :func:`trustmesh.ledger.audit` (with the checkpoint the auditor
kept from before the edit) and counts a detection when it raises a ``VerificationError``. The
required detection rate is 100 %.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from trustmesh.evaluate._context import Context
from trustmesh.evaluate._report import Plot, SectionResult, Table, figure_png
from trustmesh.ledger._store import read_stored_entries, rewrite_stored_entries

__all__ = ["TAMPER_KINDS", "fill_ledger", "pipeline_run", "run_integrity", "tamper_campaign"]

_CAPTURE = "pcap-ssh-bruteforce"  # small labelled capture: the pipeline raises real incidents on it
# canonical-schema sources the fallback pipeline model learns from (never the capture it is run on)
_MODEL_SOURCES = ("zeek-ctu-sme-11", "pcap-test7-malicious", "pcap-synscan", "pcap-ftp-crack")
# captures the integrity section pushes through the pipeline to fill its ledger
_INTEGRITY_SOURCES = (_CAPTURE, "pcap-test-cc-beacon", "pcap-test12-icmp-portscan", "pcap-http-dvwa-sqli")
_MODEL_CACHE: dict[tuple[str, int], tuple[Any, Any, str]] = {}


def pipeline_model(ctx: Context) -> tuple[Any, Any, str]:
    """Return (detector, manifest, description) for the pipeline: the project's default pcap model,
    or, until that exists, a GBDT trained here on other labelled canonical-schema sources."""
    from trustmesh.detect import default_pcap_model

    key = (str(ctx.data_dir), ctx.config.seed)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    try:
        det, manifest = default_pcap_model(ctx.data_dir)
        result = (det, manifest, "the project's default pcap model")
    except NotImplementedError:
        import numpy as np
        import pandas as pd

        from trustmesh.detect import make_detector, save_model
        from trustmesh.flows import load_dataset

        tables = [load_dataset(n, data_dir=ctx.data_dir) for n in _MODEL_SOURCES]
        X = pd.concat([t.features for t in tables], ignore_index=True)
        y = np.concatenate([t.is_attack for t in tables])
        det = make_detector("gbdt", seed=ctx.config.seed).fit(X, y)
        path = ctx.work_dir / "pipeline-model.tm"
        manifest = save_model(det, path, training={"sources": list(_MODEL_SOURCES)})
        result = (det, manifest, f"a GBDT trained by the blueprint on {', '.join(_MODEL_SOURCES)} "
                                 "(detect.default_pcap_model not implemented yet)")
    _MODEL_CACHE[key] = result
    return result


def pipeline_run(ctx: Context, ledger_dir: Path, sources: tuple[str, ...] = (_CAPTURE,)) -> dict[str, Any]:
    """Run the project pipeline (dry-run responses) on a labelled capture into ``ledger_dir``.

    The detector's ``score``, the responder's ``handle`` and the ledger's ``append`` of this pipeline
    instance are wrapped with timers, so the stage times are of the real code on the real path.
    """
    from trustmesh.flows import dataset_path, open_source
    from trustmesh.pipeline import Pipeline, PipelineConfig

    shutil.rmtree(ledger_dir, ignore_errors=True)
    state = ledger_dir.parent / f"{ledger_dir.name}-state"
    shutil.rmtree(state, ignore_errors=True)
    paths = [dataset_path(name, ctx.data_dir) for name in sources]
    config = PipelineConfig(ledger_dir=ledger_dir, state_dir=state, data_dir=ctx.data_dir,
                            origin="trustmesh.local/blueprint-pipeline")
    t_setup = time.perf_counter()
    det, manifest, model_note = pipeline_model(ctx)
    pipe = Pipeline.from_config(config, detector=det, manifest=manifest)
    setup_s = time.perf_counter() - t_setup
    timers = {"score": 0.0, "respond": 0.0, "append": 0.0}
    counts = {"score": 0, "respond": 0, "append": 0}

    def timed(stage: str, fn: Callable[..., Any], size: Callable[..., int]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timers[stage] += time.perf_counter() - t0
                counts[stage] += size(*args, **kwargs)

        return wrapper

    det, responder, ledger = pipe.detector, pipe.responder, pipe.ledger
    # Instrument the live objects' bound methods in place (setattr: mypy forbids assigning to a method).
    setattr(det, "score", timed("score", det.score, lambda X, *a, **k: len(X)))
    setattr(responder, "handle", timed("respond", responder.handle, lambda *a, **k: 1))
    setattr(ledger, "append", timed("append", ledger.append, lambda entries, *a, **k: len(entries)))
    size0 = ledger.size
    t0 = time.perf_counter()
    with pipe:
        summary = pipe.run([open_source(p) for p in paths])
        entries = pipe.ledger.size - size0
    wall = time.perf_counter() - t0
    return {
        "source": ", ".join(sources),
        "model": model_note,
        "seconds": wall,
        "setup_s": setup_s,
        "flows": summary.flows,
        "alerts": summary.alerts,
        "incidents": summary.incidents,
        "decisions": summary.decisions,
        "ledger_entries": entries,
        "score_s": timers["score"],
        "score_items": counts["score"],
        "respond_s": timers["respond"],
        "respond_items": counts["respond"],
        "append_s": timers["append"],
        "append_items": counts["append"],
        "errors": list(summary.errors),
    }


def fill_ledger(ctx: Context, directory: Path, n_entries: int) -> tuple[str, int]:
    """Fill a fresh ledger: through the pipeline when it exists, else with the detector's own alerts.

    Returns a description of how it was filled and the resulting size.
    """
    from trustmesh.ledger import Entry, Ledger

    try:
        run = pipeline_run(ctx, directory, _INTEGRITY_SOURCES)
        with Ledger.open(directory) as led:
            if led.size >= 8:
                led.store.checkpoint_wal()
                return (f"trustmesh.pipeline on {run['source']}: {run['flows']} flows, {run['alerts']} alerts, "
                        f"{run['incidents']} incidents (dry-run responses)", led.size)
    except (ImportError, NotImplementedError) as exc:  # the pipeline (or its default model) is not built yet
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:
        why = "the pipeline run appended fewer than 8 entries"
    shutil.rmtree(directory, ignore_errors=True)
    dataset = ctx.config.datasets[0]
    kind = next((k for k in ("gbdt", "mlp", "snn") if k in ctx.config.detectors), ctx.config.detectors[0])
    det = ctx.detector(kind, dataset)
    test = ctx.split(dataset).test
    scores = det.score(test.features)
    with Ledger.create(directory, "trustmesh.local/blueprint-integrity") as led:
        entries = []
        for i in range(n_entries):
            row = i % len(test)
            entries.append(Entry("alert", {"flow_id": f"{dataset}:{row}", "score": float(scores[row]),
                                           "model_id": kind, "flagged": bool(scores[row] >= det.threshold)},
                                 time=1.7e9 + i))
        half = len(entries) // 2
        led.append(entries[:half])
        led.checkpoint()
        led.append(entries[half:])
        led.checkpoint()
        led.store.checkpoint_wal()
        size = led.size
    return f"the {kind} detector's alerts on {dataset} (pipeline not usable here: {why})", size


# ------------------------------------------------------------------------------------------ edits
def _forged(rng: random.Random) -> bytes:
    from trustmesh.ledger import Entry

    return Entry("forged", {"n": rng.randrange(10**9)}, time=1.0).to_bytes()


def _modify(db: sqlite3.Connection, rng: random.Random) -> None:
    e = read_stored_entries(db)
    i = rng.randrange(len(e))
    raw = bytearray(e[i])
    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    e[i] = bytes(raw)
    rewrite_stored_entries(db, e)


def _replace(db: sqlite3.Connection, rng: random.Random) -> None:
    e = read_stored_entries(db)
    e[rng.randrange(len(e))] = _forged(rng)
    rewrite_stored_entries(db, e)


def _delete(db: sqlite3.Connection, rng: random.Random) -> None:
    e = read_stored_entries(db)
    del e[rng.randrange(len(e))]
    rewrite_stored_entries(db, e)


def _insert(db: sqlite3.Connection, rng: random.Random) -> None:
    e = read_stored_entries(db)
    e.insert(rng.randrange(len(e)), _forged(rng))
    rewrite_stored_entries(db, e)


def _reorder(db: sqlite3.Connection, rng: random.Random) -> None:
    e = read_stored_entries(db)
    i, j = rng.sample(range(len(e)), 2)
    if e[i] == e[j]:
        e[i] = _forged(rng)
    e[i], e[j] = e[j], e[i]
    rewrite_stored_entries(db, e)


def _truncate(db: sqlite3.Connection, rng: random.Random) -> None:
    e = read_stored_entries(db)
    keep = rng.randrange(len(e))
    rewrite_stored_entries(db, e[:keep])
    db.execute("UPDATE meta SET value=? WHERE key='size'", (str(keep),))


def _edit_tile(db: sqlite3.Connection, rng: random.Random) -> None:
    rows = db.execute("SELECT id, data FROM tiles").fetchall()
    key, data = rows[rng.randrange(len(rows))]
    raw = bytearray(data)
    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    db.execute("UPDATE tiles SET data=? WHERE id=?", (bytes(raw), key))


def _forge_checkpoint(db: sqlite3.Connection, rng: random.Random) -> None:
    from trustmesh.ledger import Checkpoint, NoteSigner

    seq, _size, note = rng.choice(db.execute("SELECT seq, size, note FROM checkpoints").fetchall())
    cp = Checkpoint.from_bytes(note)
    if rng.random() < 0.5:  # re-signed by an attacker's key under the same name
        new = Checkpoint.signed(cp.origin, cp.size, cp.root_hash, NoteSigner.generate(cp.origin)).to_bytes()
    else:  # another root under the old signature
        new = Checkpoint(cp.origin, cp.size, bytes(rng.randrange(256) for _ in range(32)), (),
                         cp.signatures).to_bytes()
    db.execute("UPDATE checkpoints SET note=? WHERE seq=?", (new, seq))


TAMPER_KINDS: dict[str, Callable[[sqlite3.Connection, random.Random], None]] = {
    "modify_entry_bit": _modify,
    "replace_entry": _replace,
    "delete_entry": _delete,
    "insert_entry": _insert,
    "reorder_entries": _reorder,
    "truncate_log": _truncate,
    "edit_hash_tile": _edit_tile,
    "forge_checkpoint": _forge_checkpoint,
}


def tamper_campaign(pristine: Path, work: Path, trials: int, seed: int) -> dict[str, Any]:
    """Apply ``trials`` random edits (kinds drawn uniformly) to copies of ``pristine``; audit each."""
    from trustmesh.errors import VerificationError
    from trustmesh.ledger import Ledger, audit

    with Ledger.open(pristine, read_only=True) as led:
        trusted = led.latest_checkpoint()  # what an auditor kept from an earlier visit
    rng = random.Random(seed)
    per_kind: dict[str, dict[str, Any]] = {
        k: {"trials": 0, "detected": 0, "errors": {}} for k in TAMPER_KINDS
    }
    times: list[float] = []
    for t in range(trials):
        kind = sorted(TAMPER_KINDS)[t % len(TAMPER_KINDS)] if t < len(TAMPER_KINDS) else rng.choice(sorted(TAMPER_KINDS))
        d = work / f"trial-{t}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(pristine, d)
        db = sqlite3.connect(d / "ledger.sqlite")
        TAMPER_KINDS[kind](db, rng)
        db.commit()
        db.close()
        per_kind[kind]["trials"] += 1
        t0 = time.perf_counter()
        try:
            audit(d, trusted)
        except VerificationError as exc:
            per_kind[kind]["detected"] += 1
            name = type(exc).__name__
            per_kind[kind]["errors"][name] = per_kind[kind]["errors"].get(name, 0) + 1
        times.append(time.perf_counter() - t0)
        shutil.rmtree(d, ignore_errors=True)
    total = sum(v["trials"] for v in per_kind.values())
    detected = sum(v["detected"] for v in per_kind.values())
    return {"trials": total, "detected": detected, "detection_rate": detected / total if total else None,
            "per_kind": per_kind, "median_audit_s": statistics.median(times) if times else None}


def _split_views(work: Path, trials: int, seed: int) -> dict[str, Any]:
    """Offer forked checkpoints (signed with the log's own key) to 3 witnesses; count refusals."""
    from trustmesh.errors import WitnessError
    from trustmesh.ledger import Checkpoint, Entry, Ledger, NoteSigner, Witness, detect_split_view

    rng = random.Random(seed)
    root = work / "split-view"
    shutil.rmtree(root, ignore_errors=True)
    offered = refused = client_detected = 0
    with Ledger.create(root / "log", "trustmesh.local/blueprint-witness") as led:
        ws = []
        for i in range(3):
            w = Witness.create(root / f"w{i}", f"witness{i}.blueprint.local/w")
            w.trust_log(led.verifier_key)
            ws.append(w)
        led.append([Entry("alert", {"i": i}, time=1.7e9 + i) for i in range(64)])
        honest = led.checkpoint(witnesses=ws, quorum=3)
        signer = NoteSigner.load(root / "log" / "log.key")  # a stolen log key: signatures alone cannot help
        for _ in range(trials):
            grow = rng.random() < 0.5
            size = honest.size + (rng.randrange(1, 32) if grow else 0)
            fork = Checkpoint.signed(led.origin, size, bytes(rng.randrange(256) for _ in range(32)), signer)
            proof = [bytes(rng.randrange(256) for _ in range(32)) for _ in range(6)] if grow else []
            for w in ws:
                offered += 1
                try:
                    w.add_checkpoint(fork.to_bytes(), old_size=honest.size, proof=proof)
                except WitnessError:
                    refused += 1
            try:
                detect_split_view(honest, fork, led.verifier_key, proof=proof or None)
            except WitnessError:
                client_detected += 1
    shutil.rmtree(root, ignore_errors=True)
    return {"forks": trials, "offers": offered, "refused": refused,
            "witness_detection_rate": refused / offered,
            "client_detection_rate": client_detected / trials}


def _proof_costs(directory: Path, samples: int, seed: int) -> dict[str, Any]:
    from trustmesh.ledger import Ledger, verify_consistency, verify_inclusion

    rng = np.random.default_rng(seed)
    with Ledger.open(directory, read_only=True) as led:
        cp = led.latest_checkpoint()
        assert cp is not None, "the pipeline run signs a checkpoint before proof costs are measured"
        n = led.size
        inc_bytes, inc_t, ver_t = [], [], []
        for i in rng.integers(0, n, size=samples):
            t0 = time.perf_counter()
            p = led.prove_inclusion(int(i))
            inc_t.append(time.perf_counter() - t0)
            inc_bytes.append(32 * len(p.audit_path))
            raw = led.entry_bytes(int(i))
            t0 = time.perf_counter()
            verify_inclusion(p, cp, raw)
            ver_t.append(time.perf_counter() - t0)
        old = max(1, n // 2)
        t0 = time.perf_counter()
        cons = led.prove_consistency(old)
        cons_t = time.perf_counter() - t0
        t0 = time.perf_counter()
        verify_consistency(cons, led.root(old), cp)
        cons_v = time.perf_counter() - t0
    return {"log_size": n, "inclusion_proof_bytes_median": float(np.median(inc_bytes)),
            "inclusion_proof_bytes_max": int(max(inc_bytes)), "prove_s_median": float(np.median(inc_t)),
            "verify_s_median": float(np.median(ver_t)), "consistency_proof_bytes": 32 * len(cons.path),
            "consistency_prove_s": cons_t, "consistency_verify_s": cons_v}


def run_integrity(ctx: Context) -> SectionResult:
    """Tamper campaign (must detect 100 %), proof sizes and times, split-view detection by witnesses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = ctx.config
    work = ctx.work_dir / "integrity"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ctx.step("filling the ledger")
    how, size = fill_ledger(ctx, work / "pristine", cfg.integrity_entries)
    ctx.step("tamper campaign")
    campaign = tamper_campaign(work / "pristine", work, cfg.tamper_trials, cfg.seed)
    proofs = _proof_costs(work / "pristine", 50, cfg.seed)
    ctx.step("split-view trials")
    split = _split_views(work, max(1, cfg.tamper_trials // 3), cfg.seed)
    shutil.rmtree(work, ignore_errors=True)
    kinds = sorted(campaign["per_kind"])
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    rates = [campaign["per_kind"][k]["detected"] / max(campaign["per_kind"][k]["trials"], 1) for k in kinds]
    ax.bar(np.arange(len(kinds)), rates, color=["#55a868" if r == 1 else "#c44e52" for r in rates])
    ax.set_xticks(np.arange(len(kinds)), kinds, rotation=35, fontsize=7, ha="right")
    ax.set(ylim=(0, 1.05), ylabel="detection rate",
           title=f"Tamper campaign: {campaign['detected']}/{campaign['trials']} detected")
    plot = Plot("integrity-tamper", "Tamper detection rate per edit kind (audit with a kept checkpoint)",
                figure_png(fig))
    table = Table("Tamper campaign per edit kind", ("edit", "trials", "detected", "errors raised"),
                  tuple((k, campaign["per_kind"][k]["trials"], campaign["per_kind"][k]["detected"],
                         campaign["per_kind"][k]["errors"]) for k in kinds))
    ptable = Table("Proof sizes and verification times", ("quantity", "value"),
                   tuple((k, v) for k, v in proofs.items()))
    stable = Table("Split views (forks signed with the log's own key, offered to 3 witnesses)",
                   ("quantity", "value"),
                   tuple((k, v) for k, v in split.items()))
    headline = {
        "tamper detection rate": campaign["detection_rate"],
        "tamper trials": campaign["trials"],
        "split-view detection (witnesses)": split["witness_detection_rate"],
        "inclusion proof bytes (median)": proofs["inclusion_proof_bytes_median"],
        "verify inclusion s (median)": proofs["verify_s_median"],
    }
    notes = [f"ledger of {size} entries filled by: {how}"]
    status = "ok"
    reason = ""
    if campaign["detection_rate"] != 1.0:
        status, reason = "error", f"tamper detection rate {campaign['detection_rate']:.3f} < 1.0 (required 100 %)"
    return SectionResult("integrity", "", status, reason=reason, headline=headline,  # type: ignore[arg-type]
                         metrics={"campaign": campaign, "proofs": proofs, "split_view": split,
                                  "filled_by": how},
                         tables=(table, ptable, stable), plots=(plot,), notes=tuple(notes))
