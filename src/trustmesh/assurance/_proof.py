"""Zero-knowledge proofs of inference: an alert's score came from the committed MLP on committed features.

Built on ezkl (Halo2 + KZG; PyPI ``ezkl``). Three steps:

1. :func:`setup_circuit` exports the MLP's network (its input is the scaled feature vector ``z``) to
   ONNX, lets ezkl choose fixed-point scales from calibration rows, compiles the circuit with the
   weights as *fixed* parameters (so the verifying key commits to them), the input *hashed* (the proof
   reveals only a Poseidon hash of the quantised ``z``) and the logits *public*, and runs the key
   setup. **Trusted-setup caveat:** the structured reference string is generated locally
   (``ezkl.gen_srs``); whoever generated it could forge proofs. It is for testing only; production
   needs the SRS of a public ceremony (e.g. the perpetual powers of tau) checked by its hash.
2. :func:`record_circuit` stores the verifying key, settings and SRS as content-addressed ledger blobs
   and appends a ``model.circuit`` entry binding their sha256 to the model id, artifact sha256 and the
   model's input scaling (so a verifier can recompute ``z`` from the committed raw features).
3. :func:`prove_alert` reads an ``alert`` entry (its ``trustmesh.features_sha256`` and the features
   blob the pipeline stored beside it), proves the inference and **refuses to issue a proof whose
   proven score differs from the float model by more than the tolerance** (a proof of the wrong
   number is valid, so it must be checked against the model). :func:`check_proof` verifies a proof
   against the verifying key whose digest is on the ledger and checks the proven score against the
   alert's score, the proof's input hash against the alert's committed features and the circuit's
   model against the alert's model; it raises :class:`~trustmesh.errors.ProofError`, never returns False.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import rfc8785

from trustmesh.errors import InputError, MissingDependencyError, ProofError
from trustmesh.ledger._canonical import canonical_dumps

__all__ = [
    "CIRCUIT_ENTRY_KIND",
    "Circuit",
    "DEFAULT_TOLERANCE",
    "FEATURES_FORMAT",
    "check_proof",
    "feature_commitments",
    "load_proof",
    "prove_alert",
    "record_circuit",
    "setup_circuit",
]

CIRCUIT_ENTRY_KIND = "model.circuit"
FEATURES_FORMAT = "trustmesh.alert-features/1"
_PROOF_FORMAT = "trustmesh.inference-proof/1"
DEFAULT_TOLERANCE = 0.01  # absolute difference allowed between proven and float scores
_MAX_PROOF_BYTES = 256 * 1024


def _ezkl() -> Any:
    try:
        import ezkl
    except ImportError as exc:
        raise MissingDependencyError("ezkl", "zk") from exc
    return ezkl


def _run(value: Any) -> Any:
    return asyncio.run(value) if asyncio.iscoroutine(value) else value


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _row_values(row: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(float(v)) else float(v) for v in row]


_ROW_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False).encode


def _plain_rows(mat: np.ndarray) -> np.ndarray:
    """Rows whose C-encoded floats become RFC 8785 by dropping ``.0``: finite, no -0.0, none needing an exponent.

    ``repr`` writes every other finite double as ECMAScript does (integral ones with a trailing
    ``.0``); an integral value needs |x| < 1e16 and a fractional one |x| >= 1e-4 to avoid exponents.
    """
    a = np.abs(mat)
    integral = np.equal(np.floor(mat), mat)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(mat) & ~((mat == 0) & np.signbit(mat)) & np.where(integral, a < 1e16, a >= 1e-4)
    out: np.ndarray = ok.all(axis=1)
    return out


def feature_commitments(names: Sequence[str], matrix: np.ndarray) -> tuple[list[str], bytes]:
    """Return one sha256 per encoded feature row and the blob that holds the rows by their digest.

    A row's digest is the sha256 of the RFC 8785 JSON ``{"features": names, "values": row}`` (NaN as
    null). The blob (``trustmesh.alert-features/1``) maps each digest to its row, so a prover can find
    the features an alert entry committed to, and anyone can re-check them against the entry.
    """
    names = [str(n) for n in names]
    digests: list[str] = []
    encoded: dict[str, bytes] = {}
    # canonical_dumps writes the same RFC 8785 bytes as rfc8785.dumps, with the C encoder (ledger/_canonical.py);
    # the keys sort as "features" < "values", so a row's document is the shared prefix, its values and "}"
    names_raw = canonical_dumps(names)[0]
    prefix = b'{"features":' + names_raw + b',"values":'
    mat = np.asarray(matrix, dtype=np.float64)
    plain = cast(list[bool], _plain_rows(mat).tolist())
    for row, fast, values in zip(mat, plain, mat.tolist(), strict=True):
        if fast:  # a list of numbers only: its one change to become RFC 8785 is "1.0" -> "1"
            raw = _ROW_ENCODE(values).encode("ascii").replace(b".0,", b",").replace(b".0]", b"]")
        else:
            raw = canonical_dumps(_row_values(row) if not np.isfinite(row).all() else values)[0]
        d = _sha(prefix + raw + b"}")
        digests.append(d)
        encoded[d] = raw
    # the blob, assembled from the rows' bytes: keys sort "features" < "format" < "rows", digests are hex
    body = b",".join(b'"' + d.encode("ascii") + b'":' + encoded[d] for d in sorted(encoded))
    blob = (b'{"features":' + names_raw + b',"format":' + canonical_dumps(FEATURES_FORMAT)[0]
            + b',"rows":{' + body + b"}}")
    return digests, blob


@dataclass(frozen=True, slots=True)
class Circuit:
    """A compiled inference circuit of one MLP and its keys on disk (``directory``)."""

    directory: Path
    model_id: str
    artifact_sha256: str
    input_scale: int
    output_scale: int
    logrows: int
    setup_seconds: float

    @property
    def vk(self) -> Path:
        return self.directory / "vk.key"

    @property
    def pk(self) -> Path:
        return self.directory / "pk.key"

    @property
    def settings(self) -> Path:
        return self.directory / "settings.json"

    @property
    def compiled(self) -> Path:
        return self.directory / "network.compiled"

    @property
    def srs(self) -> Path:
        return self.directory / "kzg.srs"

    @classmethod
    def open(cls, directory: Path | str) -> Circuit:
        """Open a circuit directory written by :func:`setup_circuit`."""
        d = Path(directory)
        try:
            meta = json.loads((d / "circuit.json").read_text(encoding="utf-8"))
            return cls(d, str(meta["model_id"]), str(meta["artifact_sha256"]), int(meta["input_scale"]),
                       int(meta["output_scale"]), int(meta["logrows"]), float(meta["setup_seconds"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{d}: not a circuit directory from `trustmesh model prove --setup` ({exc})") from None


def _check_mlp(det: Any) -> None:
    if getattr(det, "name", None) != "mlp" or getattr(det, "net", None) is None or det.pre is None:
        raise InputError(f"proofs of inference cover the MLP detector, not {getattr(det, 'name', det)!r}")


def setup_circuit(det: Any, manifest: Any, directory: Path | str, calibration: np.ndarray) -> Circuit:
    """Export, calibrate, compile and key the MLP's circuit into ``directory`` (one-time, per model).

    ``calibration`` holds encoded feature rows (raw, before scaling) that fix the fixed-point ranges.
    """
    import torch

    ezkl = _ezkl()
    _check_mlp(det)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    z = det.pre.transform(np.asarray(calibration, dtype=np.float32))
    n = z.shape[1]
    onnx_path = d / "network.onnx"
    # the TorchScript exporter is the one that needs no onnxscript; torch 2.13 warns that it is legacy
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(det.net.eval(), (torch.zeros(1, n),), str(onnx_path), input_names=["input"],
                          output_names=["logits"], opset_version=17, dynamo=False)
    args = ezkl.PyRunArgs()
    args.input_visibility = "hashed"
    args.param_visibility = "fixed"
    args.output_visibility = "public"
    if not ezkl.gen_settings(str(onnx_path), str(d / "settings.json"), py_run_args=args):
        raise ProofError("ezkl could not generate circuit settings for this network")
    cal = d / "calibration.json"
    # one row holding each column's most extreme calibration value sets the widest fixed-point ranges
    extreme = z[np.argmax(np.abs(z), axis=0), np.arange(n)]
    cal.write_text(json.dumps({"input_data": [[float(v) for v in extreme]]}))
    if not _run(ezkl.calibrate_settings(str(cal), str(onnx_path), str(d / "settings.json"), "resources")):
        raise ProofError("ezkl could not calibrate the circuit")
    if not ezkl.compile_circuit(str(onnx_path), str(d / "network.compiled"), str(d / "settings.json")):
        raise ProofError("ezkl could not compile the circuit")
    settings = json.loads((d / "settings.json").read_text())
    run_args = settings["run_args"]
    logrows = int(run_args["logrows"])
    ezkl.gen_srs(str(d / "kzg.srs"), logrows)  # LOCAL SRS: test-only (see module docstring)
    if not ezkl.setup(str(d / "network.compiled"), str(d / "vk.key"), str(d / "pk.key"), srs_path=str(d / "kzg.srs")):
        raise ProofError("ezkl key setup failed")
    circuit = Circuit(d, manifest.model_id, str(manifest.artifact_sha256), int(run_args["input_scale"]),
                      int(run_args.get("output_scale", run_args["input_scale"]) or run_args["input_scale"]),
                      logrows, time.perf_counter() - started)
    (d / "circuit.json").write_text(json.dumps({
        "model_id": circuit.model_id, "artifact_sha256": circuit.artifact_sha256, "input_scale": circuit.input_scale,
        "output_scale": circuit.output_scale, "logrows": logrows, "setup_seconds": circuit.setup_seconds,
        "preprocessor": det.pre.to_dict(), "features": list(det.feature_names), "classes": list(det.classes_),
    }))
    return circuit


def record_circuit(circuit: Circuit, ledger: Any) -> int:
    """Store vk, settings and SRS as ledger blobs and append the ``model.circuit`` entry; return its index."""
    meta = json.loads((circuit.directory / "circuit.json").read_text())
    digests = {}
    for name, path in (("vk", circuit.vk), ("settings", circuit.settings), ("srs", circuit.srs)):
        digests[f"{name}_sha256"] = str(ledger.put_blob(path.read_bytes()))
    payload = {
        "format": "trustmesh.model-circuit/1", "system": "ezkl", "model_id": circuit.model_id,
        "artifact_sha256": circuit.artifact_sha256, **digests, "logrows": circuit.logrows,
        "input_scale": circuit.input_scale, "output_scale": circuit.output_scale,
        "visibility": {"input": "hashed", "params": "fixed", "output": "public"},
        "preprocessor": meta["preprocessor"], "features": meta["features"], "classes": meta["classes"],
        "srs_origin": "locally generated by ezkl.gen_srs: TEST ONLY (whoever generated it can forge proofs)",
    }
    index = int(ledger.append_one(CIRCUIT_ENTRY_KIND, payload))
    ledger.checkpoint()
    return index


def _score_from_logits(logits: Sequence[float]) -> float:
    arr = np.asarray(logits, dtype=np.float64)
    d = arr[1:] - arr[0]
    return float(1.0 - 1.0 / (1.0 + np.exp(np.clip(d, -700, 700)).sum()))


def _z(pre: dict[str, Any], values: Sequence[float | None]) -> np.ndarray:
    raw = np.asarray([np.nan if v is None else v for v in values], dtype=np.float32)[None, :]
    fill, lo, scale = (np.asarray(pre[k], dtype=np.float32) for k in ("fill", "lo", "scale"))
    x = np.where(np.isnan(raw), fill, raw)
    out = ((np.sign(x) * np.log1p(np.abs(x)) - lo) / scale).astype(np.float32)
    return np.asarray(out[0], dtype=np.float32)


def _input_hash(ezkl: Any, z: np.ndarray, scale: int) -> str:
    felts = [ezkl.float_to_felt(float(v), scale) for v in z]
    return str(ezkl.poseidon_hash(felts)[0])


def _alert(ledger: Any, index: int) -> tuple[dict[str, Any], list[float | None]]:
    entry = ledger.entry(index)
    if entry.kind != "alert":
        raise InputError(f"ledger entry {index} is a {entry.kind!r}, not an alert")
    tm = entry.payload.get("trustmesh") or {}
    sha, blob_id = tm.get("features_sha256"), tm.get("features_blob")
    if not isinstance(sha, str) or not isinstance(blob_id, str):
        raise InputError(f"alert entry {index} commits no flow features (trustmesh.features_sha256/features_blob); "
                         "it was written before proofs of inference existed or by a non-ML detector")
    doc = json.loads(ledger.get_blob(blob_id))
    values = (doc.get("rows") or {}).get(sha)
    if values is None or _sha(rfc8785.dumps({"features": doc["features"], "values": values})) != sha:
        raise ProofError(f"alert entry {index}: the features blob does not hold the committed row {sha[:16]}...")
    return entry.payload, list(values)


def _circuit_entry(ledger: Any, model_id: str) -> tuple[int, dict[str, Any]]:
    for i in range(ledger.size - 1, -1, -1):
        entry = ledger.entry(i)
        if entry.kind == CIRCUIT_ENTRY_KIND and entry.payload.get("model_id") == model_id:
            return i, entry.payload
    raise ProofError(f"no model.circuit entry for model {model_id} on the ledger")


def prove_alert(det: Any, manifest: Any, circuit: Circuit, ledger: Any, index: int,
                *, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Prove the score of alert entry ``index``; return the proof document (refuses a wrong number)."""
    ezkl = _ezkl()
    _check_mlp(det)
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    if circuit.model_id != manifest.model_id:
        raise InputError(f"circuit {circuit.directory} is for model {circuit.model_id}, not {manifest.model_id}")
    payload, values = _alert(ledger, index)
    tm = payload["trustmesh"]
    if tm.get("model_id") != manifest.model_id:
        raise InputError(f"alert {index} was scored by model {tm.get('model_id')}, not {manifest.model_id}")
    circuit_index, circuit_entry = _circuit_entry(ledger, manifest.model_id)
    if circuit_entry.get("vk_sha256") != _sha(circuit.vk.read_bytes()):
        raise InputError(f"{circuit.vk}: verifying key differs from the one recorded at ledger entry {circuit_index}")
    z = _z(det.pre.to_dict(), values)
    float_score = float(det._score_matrix(np.asarray([[np.nan if v is None else v for v in values]],
                                                      dtype=np.float32))[0])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tm-prove-") as tmp:
        t = Path(tmp)
        (t / "input.json").write_text(json.dumps({"input_data": [[float(v) for v in z]]}))
        _run(ezkl.gen_witness(str(t / "input.json"), str(circuit.compiled), str(t / "witness.json"),
                              vk_path=str(circuit.vk), srs_path=str(circuit.srs)))
        witness = json.loads((t / "witness.json").read_text())
        # the witness holds exactly the outputs the proof will expose: check them before proving
        outputs = [str(v) for v in witness["outputs"][0]]
        logits = [float(ezkl.felt_to_float(f, circuit.output_scale)) for f in outputs]
        proven = _score_from_logits(logits)
        if abs(proven - float_score) > tolerance:
            raise ProofError(f"refusing to issue: the circuit computes score {proven:.6f} but the float model gives "
                             f"{float_score:.6f} (tolerance {tolerance})")
        if abs(proven - float(tm["score"])) > tolerance:
            raise ProofError(f"refusing to issue: the circuit's score {proven:.6f} differs from alert {index}'s "
                             f"score {float(tm['score']):.6f} (tolerance {tolerance})")
        ezkl.prove(str(t / "witness.json"), str(circuit.compiled), str(circuit.pk), str(t / "proof.json"),
                   srs_path=str(circuit.srs))
        proof = json.loads((t / "proof.json").read_text())
    prove_seconds = time.perf_counter() - started
    instances = [str(v) for v in proof["instances"][0]]
    if instances[1:] != outputs:
        raise ProofError("refusing to issue: the proof's public outputs differ from the witness that was checked")
    return {
        "format": _PROOF_FORMAT,
        "system": "ezkl",
        "ledger_origin": ledger.origin,
        "alert_index": index,
        "alert_id": payload.get("alert_id") or tm.get("alert_id"),
        "circuit_index": circuit_index,
        "model_id": manifest.model_id,
        "vk_sha256": circuit_entry["vk_sha256"],
        "tolerance": tolerance,
        "proven_logits": logits,
        "proven_score": proven,
        "float_score": float_score,
        "prove_seconds": round(prove_seconds, 3),
        "instances": instances,
        "proof": base64.b64encode(bytes(proof["proof"])).decode("ascii"),
        "version": proof.get("version"),
    }


def load_proof(path: Path | str) -> dict[str, Any]:
    """Read a proof document (size-limited strict JSON, format and field types checked)."""
    from trustmesh._safeload import JsonLimits, load_json

    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: proof file not found") from None
    doc = load_json(raw, str(p), limits=JsonLimits(max_bytes=_MAX_PROOF_BYTES))
    if not isinstance(doc, dict) or doc.get("format") != _PROOF_FORMAT:
        raise InputError(f"{p}: not a {_PROOF_FORMAT} document")
    for key, typ in (("alert_index", int), ("circuit_index", int), ("vk_sha256", str), ("proof", str),
                     ("instances", list), ("tolerance", float), ("model_id", str)):
        if not isinstance(doc.get(key), typ) or isinstance(doc.get(key), bool):
            raise InputError(f"{p}: field {key!r} must be a {typ.__name__}")
    if not all(isinstance(v, str) and len(v) == 64 for v in doc["instances"]) or len(doc["instances"]) < 3:
        raise InputError(f"{p}: field 'instances' must list 64-hex-digit field elements")
    if not 0 < doc["tolerance"] < 1:
        raise InputError(f"{p}: field 'tolerance' must be in (0, 1)")
    try:
        base64.b64decode(doc["proof"], validate=True)
    except ValueError:
        raise InputError(f"{p}: field 'proof' is not base64") from None
    return cast(dict[str, Any], doc)


def check_proof(doc: dict[str, Any], ledger: Any, *, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Verify a proof document against the ledger; raise :class:`ProofError` on any mismatch.

    ``tolerance`` is the verifier's own (the document's claimed tolerance is only reported).
    """
    ezkl = _ezkl()
    index, cindex = int(doc["alert_index"]), int(doc["circuit_index"])
    if not (0 <= index < ledger.size and 0 <= cindex < ledger.size):
        raise ProofError(f"proof cites ledger entries {index}/{cindex} beyond the ledger's size {ledger.size}")
    centry = ledger.entry(cindex)
    if centry.kind != CIRCUIT_ENTRY_KIND:
        raise ProofError(f"ledger entry {cindex} is not a model.circuit entry")
    circuit = centry.payload
    if circuit.get("vk_sha256") != doc["vk_sha256"]:
        raise ProofError(f"proof names verifying key {doc['vk_sha256'][:16]}..., the ledger recorded "
                         f"{str(circuit.get('vk_sha256'))[:16]}... at entry {cindex}")
    payload, values = _alert(ledger, index)
    tm = payload["trustmesh"]
    if tm.get("model_id") != circuit.get("model_id"):
        raise ProofError(f"proof is for model {circuit.get('model_id')}, alert {index} was scored by {tm.get('model_id')}")
    scale = int(circuit["input_scale"])
    if doc["instances"][0] != _input_hash(ezkl, _z(circuit["preprocessor"], values), scale):
        raise ProofError(f"proof's input hash is not the hash of the features alert {index} committed (another flow)")
    logits = [float(ezkl.felt_to_float(f, int(circuit["output_scale"]))) for f in doc["instances"][1:]]
    proven = _score_from_logits(logits)
    if abs(proven - float(tm["score"])) > tolerance:
        raise ProofError(f"proven score {proven:.6f} is not alert {index}'s score {float(tm['score']):.6f} "
                         f"(tolerance {tolerance}): a proof of another score")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tm-verify-") as tmp:
        t = Path(tmp)
        for name in ("vk", "settings", "srs"):
            (t / name).write_bytes(ledger.get_blob(str(circuit[f"{name}_sha256"])))
        raw = base64.b64decode(doc["proof"])
        (t / "proof.json").write_text(json.dumps({
            "protocol": None, "instances": [doc["instances"]], "proof": list(raw), "hex_proof": "0x" + raw.hex(),
            "split": None, "pretty_public_inputs": None, "timestamp": None, "version": doc.get("version"),
        }))
        try:
            ok = ezkl.verify(str(t / "proof.json"), str(t / "settings"), str(t / "vk"), srs_path=str(t / "srs"))
        except Exception as exc:  # ezkl raises RuntimeError/ValueError with its own text on a bad proof
            raise ProofError(f"the zero-knowledge proof does not verify ({str(exc)[:200]})") from None
        if not ok:
            raise ProofError("the zero-knowledge proof does not verify")
    return {"verified": True, "alert_index": index, "model_id": tm.get("model_id"), "proven_score": proven,
            "alert_score": float(tm["score"]), "verify_seconds": round(time.perf_counter() - started, 3)}

