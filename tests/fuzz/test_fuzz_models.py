"""Fuzz model artifacts: a real trained artifact with flipped, cut or spliced bytes must be refused cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fuzz_harness import expect_clean, fuzz_settings, mutated_bytes, tally_for
from hypothesis import given
from hypothesis import strategies as st

from trustmesh.detect import IsolationForestDetector, load_model, save_model
from trustmesh.flows import CANONICAL_FEATURES, read_zeek_conn

ZEEK = "logs/zeek/slips-test10-mixed/conn.log.gz"


@pytest.fixture(scope="module")
def artifact(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes | None, str]:
    flows = read_zeek_conn(data_dir / ZEEK)
    det = IsolationForestDetector(seed=0).fit(flows[list(CANONICAL_FEATURES)])
    path = tmp_path_factory.mktemp("model") / "iforest.model"
    save_model(det, path)
    sidecars = [p for p in path.parent.iterdir() if p != path]
    manifest = sidecars[0].read_bytes() if sidecars else None
    return path.read_bytes(), manifest, sidecars[0].name if sidecars else ""


@given(data=st.data())
@fuzz_settings(40)
def test_model_artifacts(data: st.DataObject, artifact: tuple[bytes, bytes | None, str], tmp_path: Path) -> None:
    body, manifest, manifest_name = artifact
    path = tmp_path / "iforest.model"
    target = data.draw(st.sampled_from(["body", "manifest"] if manifest is not None else ["body"]))
    path.write_bytes(data.draw(mutated_bytes(body)) if target == "body" else body)
    if manifest is not None:
        (tmp_path / manifest_name).write_bytes(data.draw(mutated_bytes(manifest)) if target == "manifest"
                                               else manifest)
    tally = tally_for("model-artifact")
    loaded = expect_clean(tally, lambda: load_model(path), target)
    if loaded is not None:  # a mutation the digest cannot see (none expected) must still score sanely
        det, _ = loaded
        X = pd.DataFrame({c: [0.0] for c in CANONICAL_FEATURES})
        scores = det.score(X.astype({c: "str" for c in ("proto", "service", "conn_state")}))
        assert np.all((scores >= 0) & (scores <= 1))
