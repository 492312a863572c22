"""Score drift against a site baseline's stored benign score quantiles (real Zeek traffic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trustmesh.detect._baseline import SiteBaselineDetector, fit_site_baseline
from trustmesh.detect._drift import ScoreReference, model_drift, score_drift
from trustmesh.errors import ModelError
from trustmesh.flows import read_flows

ZEEK_SITE = "logs/zeek/slips-test9-mixed/conn.log.gz"


@pytest.fixture(scope="module")
def site(data_dir: Path) -> tuple[pd.DataFrame, SiteBaselineDetector]:
    flows = read_flows(data_dir / ZEEK_SITE)
    det, _ = fit_site_baseline(flows, check_attacks=False)
    return flows, det


def test_same_traffic_does_not_drift(site: tuple[pd.DataFrame, SiteBaselineDetector]) -> None:
    flows, det = site
    doc = model_drift(det, det.score(flows))
    assert doc is not None and doc["checked"] and not doc["drifted"]
    assert doc["psi"] < 0.1


def test_shifted_traffic_drifts(site: tuple[pd.DataFrame, SiteBaselineDetector]) -> None:
    flows, det = site
    # the same hosts and services, but every transfer 30x larger and 10x longer: the flow shapes moved
    shifted = flows.assign(src_bytes=flows["src_bytes"] * 30, dst_bytes=flows["dst_bytes"] * 30,
                           duration=flows["duration"] * 10)
    doc = model_drift(det, det.score(shifted))
    assert doc is not None and doc["checked"] and doc["drifted"], doc
    assert doc["psi"] > 0.25 and doc["ks"] > doc["ks_critical"]


def test_too_few_flows_are_not_judged(site: tuple[pd.DataFrame, SiteBaselineDetector]) -> None:
    flows, det = site
    assert det.reference is not None
    assert score_drift(det.reference, det.score(flows.iloc[:50])) is None
    doc = model_drift(det, det.score(flows.iloc[:50]))
    assert doc is not None and doc["checked"] is False and doc["drifted"] is False


def test_detector_without_reference_gives_none() -> None:
    assert model_drift(object(), np.zeros(500)) is None


def test_reference_round_trip_and_validation(site: tuple[pd.DataFrame, SiteBaselineDetector]) -> None:
    _, det = site
    assert det.reference is not None
    assert ScoreReference.from_dict(det.reference.to_dict()) == det.reference
    for bad in ({"quantiles": [0.5, 0.2], "n": 3}, {"quantiles": [0.1, 1.5], "n": 3}, {"quantiles": [0.1], "n": 1},
                {"quantiles": [0.1, 0.2], "n": 0}, {"n": 3}, {"quantiles": "x", "n": 3}):
        with pytest.raises(ModelError):
            ScoreReference.from_dict(bad)
    with pytest.raises(ValueError, match="psi_limit"):
        score_drift(det.reference, np.zeros(500), psi_limit=0)
