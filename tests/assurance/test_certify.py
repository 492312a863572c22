"""Robustness certificates re-checked against the empirical attacks: a certified row resists them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from trustmesh.assurance import certify, schema_boxes
from trustmesh.detect.snn import SpikeEncoding
from trustmesh.errors import InputError

EPS = [0.01, 0.05, 0.1]


def _space(t: Any) -> SpikeEncoding:
    enc = t.det.encoder
    return SpikeEncoding.fit(t.train_matrix, [j for j, c in enumerate(enc.columns) if c in enc.vocab])


def _sample(t: Any, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    att, ben = np.flatnonzero(t.test_attack)[: n // 2], np.flatnonzero(~t.test_attack)[: n // 2]
    idx = np.sort(np.concatenate([att, ben]))
    return t.det.encode(t.test_features.iloc[idx], fill_missing=True), t.test_attack[idx]


def test_boxes_respect_the_schema(gbdt: Any) -> None:
    space = _space(gbdt)
    m, _ = _sample(gbdt)
    lo, hi = schema_boxes(space, m, 0.1)
    num = np.asarray(space.numeric)
    fixed = [j for j in range(m.shape[1]) if j not in set(num)]
    assert np.array_equal(lo[:, fixed], m[:, fixed], equal_nan=True)
    assert np.array_equal(hi[:, fixed], m[:, fixed], equal_nan=True)
    counts = num[np.asarray(space.integer)]
    assert np.all(lo[:, counts] >= 0) and np.all(lo[:, counts] == np.round(lo[:, counts]))
    assert np.all(lo[:, num] <= hi[:, num])


@pytest.mark.parametrize("kind", ["gbdt", "mlp"])
def test_certified_accuracy_shrinks_with_budget_and_never_exceeds_clean(kind: str, request: pytest.FixtureRequest) -> None:
    t = request.getfixturevalue(kind)
    m, y = _sample(t)
    cert = certify(t.det, t.manifest, m, y, [0.0, *EPS], _space(t))
    acc = cert.certified_accuracy()
    assert acc[0] > 0.5  # most rows are certified at (almost) no budget
    assert all(a >= b for a, b in zip(acc, acc[1:]))
    assert acc[0] <= np.mean(cert.clean_correct)
    doc = cert.to_dict()
    assert doc["method"] == ("veritas-exact" if kind == "gbdt" else "crown")
    assert doc["artifact_sha256"] == t.manifest.artifact_sha256 and len(doc["results"]) == 4


def test_mlp_certified_rows_resist_pgd(mlp: Any) -> None:
    from trustmesh.evaluate._sec_adversarial import ConstrainedSpace, _gradient_attack

    m, y = _sample(mlp)
    space = ConstrainedSpace(mlp.det, mlp.train_matrix)
    budgets = [0.0, 0.0001, 0.001, *EPS]  # CROWN certifies this small MLP only at small budgets
    cert = certify(mlp.det, mlp.manifest, m, y, budgets, space.enc)
    total_certified = 0
    for k, eps in enumerate(budgets):
        adv = _gradient_attack(mlp.det, space, m.astype(np.float32), y, eps, 10)
        survived = (mlp.det.score_matrix(adv) >= mlp.det.threshold) == y
        certified = np.asarray(cert.certified[k])
        total_certified += int(certified.sum())
        assert np.all(survived[certified]), f"eps={eps}: a certified row was broken by PGD"
        assert certified.mean() <= survived.mean()  # certified accuracy <= empirical accuracy
    assert total_certified > 0, cert.certified_accuracy()


def test_gbdt_certified_rows_resist_hopskipjump_and_box_corners(gbdt: Any) -> None:
    from trustmesh.evaluate._sec_adversarial import ConstrainedSpace, _hsj_attack

    m, y = _sample(gbdt)
    space = ConstrainedSpace(gbdt.det, gbdt.train_matrix)
    cert = certify(gbdt.det, gbdt.manifest, m, y, EPS, space.enc)
    flagged = gbdt.det.score_matrix(m.astype(np.float32)) >= gbdt.det.threshold
    rows = np.flatnonzero(y & flagged)[:6]
    benign_u = space.to_u(m[~y].astype(np.float32))
    res = _hsj_attack(gbdt.det, space, m[rows].astype(np.float32), benign_u,
                      SimpleNamespace(hsj_max_iter=5, hsj_max_eval=100), seed=1)
    for k, eps in enumerate(EPS):
        for r, out in zip(rows, res, strict=True):
            if cert.certified[k][r] and out["evaded"]:
                assert out["linf"] > eps, f"HopSkipJump evaded certified row {r} within eps={eps}"
    # exhaustive check on the box's corners and random points for every certified row at the smallest budget
    rng = np.random.default_rng(0)
    lo, hi = (np.asarray(a) for a in _boxes(space.enc, m, EPS[0]))
    for r in np.flatnonzero(cert.certified[0]):
        pts = np.where(rng.random((300, m.shape[1])) < 0.5, lo[r], hi[r])
        inside = lo[r] + (hi[r] - lo[r]) * rng.random(pts.shape)  # NaN fixed fields stay NaN
        pts = np.where(rng.random(pts.shape) < 0.3, inside, pts)
        decisions = gbdt.det.score_matrix(pts.astype(np.float32)) >= gbdt.det.threshold
        assert np.all(decisions == y[r])


def _boxes(enc: Any, m: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = schema_boxes(enc, m, eps)
    num = np.asarray(enc.numeric)
    # stay inside the box after float32 scoring: pull ends in by a float32 ulp
    lo[:, num] = np.nextafter(lo[:, num].astype(np.float32), np.float32(np.inf))
    hi[:, num] = np.nextafter(hi[:, num].astype(np.float32), np.float32(-np.inf))
    return lo, np.maximum(lo, hi)


def test_bad_requests_are_refused(gbdt: Any) -> None:
    m, y = _sample(gbdt)
    with pytest.raises(InputError, match="epsilons"):
        certify(gbdt.det, gbdt.manifest, m, y, [-1.0], _space(gbdt))
    with pytest.raises(InputError, match="one label per row"):
        certify(gbdt.det, gbdt.manifest, m, y[:-1], EPS, _space(gbdt))


def test_cli_certify_writes_a_certificate(gbdt: Any, tmp_path: Path, data_dir: Path) -> None:
    from typer.testing import CliRunner

    from trustmesh.cli import app

    out = tmp_path / "c.json"
    res = CliRunner().invoke(app, ["model", "certify", str(gbdt.path), "--input", "ton-iot-network", "--rows", "20",
                                   "--epsilons", "0.01,0.1", "--out", str(out), "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["rows"] == 20 and [r["epsilon"] for r in doc["results"]] == [0.01, 0.1]
    res = CliRunner().invoke(app, ["model", "certify", str(gbdt.path), "--input", "ton-iot-network",
                                   "--epsilons", "abc", "--data-dir", str(data_dir)])
    assert res.exit_code == 2 and "--epsilons" in res.output
