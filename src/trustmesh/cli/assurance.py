"""CLI commands ``trustmesh model passport|verify|certify|prove|check-proof`` (docs/assurance.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from trustmesh.cli._common import console, guarded, print_json
from trustmesh.cli._root import app
from trustmesh.errors import InputError

__all__ = ["model_app"]

model_app = typer.Typer(help="Verifiable models: passports, robustness certificates, proofs of inference.",
                        no_args_is_help=True)
app.add_typer(model_app, name="model")

_DEFAULT_KEY = Path("passport.skey")


def _signer(path: Path) -> Any:
    from trustmesh.ledger import NoteSigner

    if path.exists():
        return NoteSigner.load(path)
    signer = NoteSigner.generate("trustmesh-passport")
    path.parent.mkdir(parents=True, exist_ok=True)
    signer.save(path)  # mode 0600
    return signer


def _table(spec: str, data_dir: Path | None = None) -> Any:
    """Load a labelled table from a path (CSV/Parquet/glob) or a registered dataset name."""
    from trustmesh.flows import load_dataset, load_table

    p = Path(spec)
    if p.exists() or any(ch in spec for ch in "*?/"):
        return load_table(p)
    return load_dataset(spec, data_dir=data_dir)


def _epsilons(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--epsilons must be comma-separated numbers, got {text!r}") from None
    if not values or any(not (0 <= v <= 1) for v in values):
        raise InputError(f"--epsilons must be numbers in [0, 1], got {text!r}")
    return values


def certify_table(model: Path, spec: str, epsilons: list[float], rows: int, seed: int,
                  data_dir: Path | None = None) -> dict[str, Any]:
    """Certify ``model`` on a balanced sample of ``rows`` rows of a table; return the certificate document."""
    import numpy as np

    from trustmesh.assurance import certify
    from trustmesh.detect import load_model
    from trustmesh.detect.snn import SpikeEncoding
    from trustmesh.evaluate._energy import cpu_count

    if rows < 2:
        raise InputError(f"--rows must be >= 2, got {rows}")
    det, manifest = load_model(model)
    table = _table(spec, data_dir)
    rng = np.random.default_rng(seed)
    y_all = np.asarray(table.is_attack, dtype=bool)
    order = rng.permutation(len(y_all))
    space_idx, pool = order[: min(2000, len(order) // 2)], order[min(2000, len(order) // 2):]
    att, ben = pool[y_all[pool]], pool[~y_all[pool]]
    half = min(rows // 2, len(att), len(ben))
    if half == 0:
        raise InputError(f"{spec}: the table needs both attack and benign rows to certify")
    pick = np.sort(np.concatenate([att[:half], ben[:half]]))
    enc = det.encoder
    if enc is None:
        raise InputError(f"{model}: model has no feature encoder")
    space_matrix = det.encode(table.features.iloc[np.sort(space_idx)], fill_missing=True)
    space = getattr(det, "spike_encoding", None) or SpikeEncoding.fit(
        space_matrix, [j for j, c in enumerate(enc.columns) if c in enc.vocab])
    matrix = det.encode(table.features.iloc[pick], fill_missing=True)
    started = time.perf_counter()
    cert = certify(det, manifest, matrix, y_all[pick], epsilons, space,
                   sample={"table": spec, "table_digest": getattr(table, "digest", None), "seed": seed,
                           "space_rows": int(len(space_idx))})
    doc = cert.to_dict()
    doc["seconds_total"] = round(time.perf_counter() - started, 3)
    doc["cpus"] = cpu_count()
    return doc


@model_app.command("certify")
@guarded
def certify_cmd(
    model: Path = typer.Argument(..., help="Model file (MODEL plus MODEL.manifest.json)."),
    input_spec: str = typer.Option(..., "--input", help="Labelled table (path or registered dataset name)."),
    epsilons: str = typer.Option("0.01,0.05,0.1", "--epsilons", help="Comma-separated L-inf budgets."),
    rows: int = typer.Option(100, "--rows", help="Rows to certify (half attack, half benign)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    out: Path | None = typer.Option(None, "--out", help="Write the certificate JSON here."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Dataset folder (default: auto)."),
    json_out: bool = typer.Option(False, "--json", help="Print the certificate as JSON."),
) -> None:
    """Certify robustness: exact (GBDT, dtai-veritas) or CROWN bounds (MLP) over a table sample."""
    doc = certify_table(model, input_spec, _epsilons(epsilons), rows, seed, data_dir)
    if out is not None:
        out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if json_out:
        print_json(doc)
        return
    console.print(f"{doc['kind']} {doc['model_id']} ({doc['method']}): clean accuracy {doc['clean_accuracy']:.3f} "
                  f"on {doc['rows']} rows, {doc['seconds_total']:.2f} s", highlight=False)
    for r in doc["results"]:
        console.print(f"  eps={r['epsilon']:<6g} certified accuracy {r['certified_accuracy']:.3f}  "
                      f"attack detection {r['certified_attack_detection']}  ({r['seconds']:.2f} s)", highlight=False)


def _energy(model: Path, spec: str | None, data_dir: Path | None) -> dict[str, Any]:
    from trustmesh.assurance import energy_profile
    from trustmesh.detect import load_model
    from trustmesh.evaluate._energy import EnergyMeter, op_energy

    if spec is None:
        return {"measured": False, "reason": "no --input table given to measure energy on"}
    det, _ = load_model(model)
    table = _table(spec, data_dir)
    sample = table.features.iloc[: min(1000, len(table.features))]
    return energy_profile(det, sample, meter=EnergyMeter(), op_energy=op_energy)


def _load_cert(path: Path) -> dict[str, Any]:
    from trustmesh._safeload import load_json

    try:
        doc = load_json(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: certificate file not found") from None
    if not isinstance(doc, dict) or doc.get("format") != "trustmesh.robustness-certificate/1":
        raise InputError(f"{path}: not a trustmesh.robustness-certificate/1 document")
    return doc


@model_app.command("passport")
@guarded
def passport_cmd(
    model: Path = typer.Argument(..., help="Model file."),
    out: Path = typer.Option(..., "--out", help="Passport JSON to write."),
    ledger: Path | None = typer.Option(None, "--ledger", help="Append a model.passport entry to this ledger."),
    key: Path = typer.Option(_DEFAULT_KEY, "--key", help="Ed25519 signing key (created 0600 if missing)."),
    certificate: list[Path] = typer.Option([], "--certificate", help="Robustness certificate JSON (repeatable)."),
    input_spec: str | None = typer.Option(None, "--input", help="Table to measure energy per inference on."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Dataset folder (default: auto)."),
    json_out: bool = typer.Option(False, "--json", help="Print the passport as JSON."),
) -> None:
    """Build, sign and (with --ledger) record a model passport."""
    from trustmesh.assurance import build_passport, record_passport
    from trustmesh.detect._artifact import read_manifest

    manifest = read_manifest(model)
    certs = [_load_cert(p) for p in certificate]
    for p, c in zip(certificate, certs, strict=True):
        if c.get("artifact_sha256") != manifest.artifact_sha256:
            raise InputError(f"{p}: certificate is for artifact {str(c.get('artifact_sha256'))[:16]}..., "
                             f"not {model}")
    passport = build_passport(model, _signer(key), robustness=certs, energy=_energy(model, input_spec, data_dir))
    if ledger is not None:
        from trustmesh.ledger import Ledger

        with Ledger.open(ledger) as led:
            passport = record_passport(passport, led)
    passport.write(out)
    if json_out:
        print_json(passport.to_dict())
        return
    where = "" if passport.ledger is None else f", ledger entry {passport.ledger['index']}"
    console.print(f"passport {out} for {passport.model_id} (sha256 {passport.digest[:16]}...{where})",
                  highlight=False)


@model_app.command("verify")
@guarded
def verify_cmd(
    passport_path: Path = typer.Argument(..., help="Passport JSON."),
    model: Path | None = typer.Option(None, "--model", help="Recompute the artifact and manifest fields."),
    ledger: Path | None = typer.Option(None, "--ledger", help="Check the ledger entry under a signed checkpoint."),
    signer: str | None = typer.Option(None, "--signer", help="Pin the signer's verifier key (vkey)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Verify a passport; exit 1 naming the field on any mismatch."""
    from trustmesh.assurance import Passport, verify_passport

    started = time.perf_counter()
    passport = Passport.load(passport_path)
    verify_passport(passport, model_path=model, ledger_dir=ledger, signer_vkey=signer)
    checked = ["signature"] + (["model"] if model else []) + (["ledger"] if ledger else [])
    doc = {"verified": True, "passport": str(passport_path), "model_id": passport.model_id, "checked": checked,
           "seconds": round(time.perf_counter() - started, 3)}
    if json_out:
        print_json(doc)
        return
    console.print(f"verified: passport of {passport.model_id} ({', '.join(checked)})", highlight=False)


def _alert_ref(text: str) -> tuple[Path, int]:
    directory, sep, index = text.rpartition(":")
    if not sep or not index.isdigit():
        raise InputError(f"--alert must be LEDGER_DIR:INDEX, got {text!r}")
    return Path(directory), int(index)


@model_app.command("prove")
@guarded
def prove_cmd(
    model: Path = typer.Argument(..., help="MLP model file."),
    alert: str = typer.Option(..., "--alert", help="LEDGER_DIR:INDEX of the alert entry to prove."),
    out: Path = typer.Option(..., "--out", help="Proof JSON to write."),
    circuit_dir: Path | None = typer.Option(None, "--circuit", help="Circuit folder (default MODEL.zk; set up once)."),
    input_spec: str | None = typer.Option(None, "--input", help="Table whose rows calibrate a new circuit."),
    tolerance: float = typer.Option(0.01, "--tolerance", help="Largest proven-vs-float score difference allowed."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Dataset folder (default: auto)."),
    json_out: bool = typer.Option(False, "--json", help="Print the proof summary as JSON."),
) -> None:
    """Prove in zero knowledge that an alert's score came from the committed MLP (ezkl; local SRS: test-only)."""
    import numpy as np

    from trustmesh.assurance import Circuit, prove_alert, record_circuit, setup_circuit
    from trustmesh.assurance._proof import CIRCUIT_ENTRY_KIND
    from trustmesh.detect import load_model
    from trustmesh.ledger import Ledger

    if not 0 < tolerance < 1:
        raise InputError(f"--tolerance must be in (0, 1), got {tolerance}")
    ledger_dir, index = _alert_ref(alert)
    det, manifest = load_model(model)
    cdir = circuit_dir or model.with_name(model.name + ".zk")
    with Ledger.open(ledger_dir) as led:
        if (cdir / "circuit.json").is_file():
            circuit = Circuit.open(cdir)
        else:
            if input_spec is not None:
                rows = det.encode(_table(input_spec, data_dir).features.iloc[:2000], fill_missing=True)
            else:
                from trustmesh.assurance._proof import _alert

                rows = np.asarray([[np.nan if v is None else v for v in _alert(led, index)[1]]], dtype=np.float32)
            circuit = setup_circuit(det, manifest, cdir, rows)
        recorded = any(led.entry(i).kind == CIRCUIT_ENTRY_KIND and led.entry(i).payload.get("vk_sha256")
                       and led.entry(i).payload.get("model_id") == manifest.model_id for i in range(led.size))
        if not recorded:
            record_circuit(circuit, led)
        doc = prove_alert(det, manifest, circuit, led, index, tolerance=tolerance)
    out.write_text(json.dumps(doc, sort_keys=True) + "\n", encoding="utf-8")
    if json_out:
        print_json({k: v for k, v in doc.items() if k not in ("proof", "instances")} | {"bytes": out.stat().st_size})
        return
    console.print(f"proof {out} ({out.stat().st_size} bytes): alert {index} score {doc['proven_score']:.6f} "
                  f"(float {doc['float_score']:.6f}), proved in {doc['prove_seconds']:.1f} s", highlight=False)


@model_app.command("check-proof")
@guarded
def check_proof_cmd(
    proof: Path = typer.Argument(..., help="Proof JSON from `trustmesh model prove`."),
    ledger: Path = typer.Option(..., "--ledger", help="Ledger holding the alert and the model.circuit entry."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Verify a proof of inference against the verifying key recorded on the ledger; exit 1 if it fails."""
    from trustmesh.assurance import check_proof, load_proof
    from trustmesh.ledger import Ledger

    doc = load_proof(proof)
    with Ledger.open(ledger, read_only=True) as led:
        result = check_proof(doc, led)
    if json_out:
        print_json(result)
        return
    console.print(f"verified: alert {result['alert_index']} score {result['alert_score']:.6f} came from model "
                  f"{result['model_id']} (proof checked in {result['verify_seconds']:.2f} s)", highlight=False)
