"""Proofs of inference with ezkl: a real proof verifies; another model, flow or score fails; wrong numbers refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trustmesh.errors import InputError, ProofError
from trustmesh.ledger import Ledger

pytest.importorskip("ezkl", reason="ezkl (extra zk) is not installed")


@pytest.fixture(scope="module")
def proved(ton: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from trustmesh.assurance import feature_commitments, prove_alert, record_circuit, setup_circuit
    from trustmesh.detect import load_model, make_detector, save_model

    root = tmp_path_factory.mktemp("zk")
    rng = np.random.default_rng(11)
    idx = np.sort(rng.permutation(len(ton.features))[:1500])
    X, y = ton.features.iloc[idx], ton.is_attack[idx]
    det = make_detector("mlp", seed=2, hidden=[8], epochs=3).fit(X, y)
    det.calibrate(X, y, 0.05)
    save_model(det, root / "m.tm")
    det, manifest = load_model(root / "m.tm")
    matrix = det.encode(X, fill_missing=True)
    scores = det.score_matrix(matrix)
    att = np.flatnonzero(scores >= det.threshold)[:2]
    digests, blob = feature_commitments(list(det.feature_names), matrix[att])
    led = Ledger.create(root / "led", "zk.test/log")
    blob_id = str(led.put_blob(blob))

    def alert(i: int, score: float, model_id: str = manifest.model_id) -> int:
        return led.append_one("alert", {"alert_id": f"alr-{i}-{score}", "trustmesh": {
            "model_id": model_id, "score": score, "features_sha256": digests[i], "features_blob": blob_id}})

    real = alert(0, float(scores[att[0]]))
    other_flow = alert(1, float(scores[att[0]]))  # the same score, another flow's features
    other_score = alert(0, 0.123)
    other_model = alert(0, float(scores[att[0]]), model_id="tm-00000000000000000000")
    circuit = setup_circuit(det, manifest, root / "circuit", matrix[:500])
    record_circuit(circuit, led)
    doc = prove_alert(det, manifest, circuit, led, real)
    return {"doc": doc, "led": led, "det": det, "manifest": manifest, "circuit": circuit, "root": root,
            "real": real, "other_flow": other_flow, "other_score": other_score, "other_model": other_model}


@pytest.mark.slow
def test_real_proof_verifies_and_is_small(proved: dict[str, Any]) -> None:
    from trustmesh.assurance import check_proof

    result = check_proof(proved["doc"], proved["led"])
    assert result["verified"] and abs(result["proven_score"] - result["alert_score"]) <= 0.01
    assert len(json.dumps(proved["doc"])) < 8000
    assert proved["doc"]["proven_score"] == pytest.approx(proved["doc"]["float_score"], abs=0.01)


@pytest.mark.slow
@pytest.mark.parametrize(("target", "message"), [("other_flow", "another flow"), ("other_score", "another score"),
                                                 ("other_model", "is for model")])
def test_proof_retargeted_to_another_alert_fails(proved: dict[str, Any], target: str, message: str) -> None:
    from trustmesh.assurance import check_proof

    doc = {**proved["doc"], "alert_index": proved[target]}
    with pytest.raises(ProofError, match=message):
        check_proof(doc, proved["led"])


@pytest.mark.slow
def test_tampered_proof_bytes_and_output_fail(proved: dict[str, Any]) -> None:
    import base64

    from trustmesh.assurance import check_proof

    raw = bytearray(base64.b64decode(proved["doc"]["proof"]))
    raw[100] ^= 0xFF
    with pytest.raises(ProofError, match="does not verify"):
        check_proof({**proved["doc"], "proof": base64.b64encode(bytes(raw)).decode()}, proved["led"])
    with pytest.raises(ProofError):
        check_proof({**proved["doc"], "vk_sha256": "00" * 32}, proved["led"])


@pytest.mark.slow
def test_prover_refuses_a_proven_number_that_differs_from_the_float_model(proved: dict[str, Any]) -> None:
    from trustmesh.assurance import prove_alert

    # fixed-point quantisation always moves the proven score a little: a tolerance below it must refuse
    gap = abs(proved["doc"]["proven_score"] - proved["doc"]["float_score"])
    assert gap > 0
    with pytest.raises(ProofError, match="refusing to issue"):
        prove_alert(proved["det"], proved["manifest"], proved["circuit"], proved["led"], proved["real"],
                    tolerance=gap / 2)


def test_alert_without_committed_features_is_refused(tmp_path: Path) -> None:
    from trustmesh.assurance._proof import _alert

    with Ledger.create(tmp_path / "l", "a.test/log") as led:
        i = led.append_one("alert", {"trustmesh": {"model_id": "m", "score": 0.9}})
        with pytest.raises(InputError, match="commits no flow features"):
            _alert(led, i)


def test_feature_commitment_is_canonical() -> None:
    from trustmesh.assurance import feature_commitments

    m = np.array([[1.0, np.nan], [2.0, 3.0]])
    digests, blob = feature_commitments(["a", "b"], m)
    again, _ = feature_commitments(["a", "b"], m.copy())
    assert digests == again and len(set(digests)) == 2
    assert json.loads(blob)["rows"][digests[0]] == [1.0, None]
