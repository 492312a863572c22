"""The default pcap model's recipe: byte units on both sides, spread scores, the corroborated alert policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trustmesh.detect._default import DEFAULT_ALERT_POLICY, DEFAULT_FEATURES, DEFAULT_MODEL_VERSION, _train
from trustmesh.pipeline import detect_flows, ml_alert_mask

TON = "ton-iot/network/train_test_network.csv.gz"
CC = "pcaps/stratosphere-slips/test-cc-capture-2.pcap"  # HTTPS beacons + DNS, no scans or floods
SYN = "pcaps/practical-packet-analysis/synscan.pcapng"


def _need(data_dir: Path, rel: str) -> Path:
    path = data_dir / rel
    if not path.exists():
        pytest.skip(f"optional: {path} not staged")
    return path


def test_ton_iot_bytes_are_payload_bytes(data_dir: Path) -> None:
    raw = pd.read_csv(_need(data_dir, TON), encoding="utf-8-sig", low_memory=False,
                      usecols=["proto", "src_bytes", "src_pkts", "src_ip_bytes"])
    udp = raw[(raw["proto"] == "udp") & (raw["src_pkts"] > 0)]
    headers = (udp["src_ip_bytes"] - udp["src_bytes"]) / udp["src_pkts"]
    # IPv4 (20) + UDP (8) header bytes per datagram: src_bytes counts payload only (Zeek orig_bytes)
    assert float(np.median(headers)) == 28.0 and float((headers >= 28).mean()) == 1.0


def test_capture_bytes_are_payload_bytes(data_dir: Path) -> None:
    import nfstream

    from trustmesh.flows import read_pcap

    path = _need(data_dir, CC)
    ours = read_pcap(path)
    ip_level = nfstream.NFStreamer(source=str(path), n_meters=1, accounting_mode=1).to_pandas()
    dns = ours[ours["dst_port"] == 53].sort_values("ts").head(10)
    ip_dns = ip_level[ip_level["dst_port"] == 53].sort_values("bidirectional_first_seen_ms").head(10)
    assert len(dns) == len(ip_dns) >= 5
    # the same DNS flows: IP-level bytes minus 28 header bytes per packet = the canonical src_bytes
    assert np.allclose(dns["src_bytes"].to_numpy(), (ip_dns["src2dst_bytes"] - 28 * ip_dns["src2dst_packets"]).to_numpy())


@pytest.fixture(scope="module")
def small_default(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    csv = _need(data_dir, TON)
    return _train(csv, "0" * 64, tmp_path_factory.mktemp("model") / "default.tm", max_rows=12_000)


def test_recipe_is_multiclass_with_policy_and_spread_scores(small_default: tuple[object, object],
                                                           data_dir: Path) -> None:
    from trustmesh.flows import read_pcap

    det, manifest = small_default
    assert manifest.training["recipe"] == f"default-pcap-model/{DEFAULT_MODEL_VERSION}"  # type: ignore[attr-defined]
    assert manifest.training["alert_policy"] == DEFAULT_ALERT_POLICY  # type: ignore[attr-defined]
    assert "dst_port" not in DEFAULT_FEATURES and set(det.feature_names) == set(DEFAULT_FEATURES)  # type: ignore[attr-defined]
    assert {"scanning", "ddos", "password"} <= set(det.classes_)  # type: ignore[attr-defined]
    beacons = det.score(read_pcap(_need(data_dir, CC)), fill_missing=True)  # type: ignore[attr-defined]
    scan = det.score(read_pcap(_need(data_dir, SYN)), fill_missing=True)  # type: ignore[attr-defined]
    assert ((beacons >= 0) & (beacons <= 1)).all() and ((scan >= 0) & (scan <= 1)).all()
    # not "0.95-1.0 for everything": benign-shaped flows land across the range, scan probes above them
    assert float(np.mean(beacons >= 0.95)) < 0.8
    assert float(np.quantile(beacons, 0.9) - np.quantile(beacons, 0.1)) > 0.2
    assert float(np.median(scan)) > float(np.median(beacons))


def test_model_alerts_need_a_behaviour_verdict(small_default: tuple[object, object], data_dir: Path) -> None:
    from trustmesh.flows import read_pcap

    det, manifest = small_default
    beacons = read_pcap(_need(data_dir, CC))
    found = detect_flows(beacons, det, manifest, source_name="cc")  # type: ignore[arg-type]
    raw_hits = int((found.scores >= det.threshold).sum())  # type: ignore[attr-defined]
    assert found.verdicts == [] and found.ml_alerts == [] and found.alerts == []
    scan = read_pcap(_need(data_dir, SYN))
    found = detect_flows(scan, det, manifest, source_name="syn")  # type: ignore[arg-type]
    assert [v.kind for v in found.verdicts] == ["port-scan"]
    assert all(a.source_ip == "172.16.0.8" and a.destination_ip == "64.13.134.52" for a in found.ml_alerts)
    assert len(found.behaviour_alerts) == len(scan)
    assert raw_hits >= 0  # the policy, not the threshold, kept the beacons quiet


def test_alert_mask_without_policy_and_with_spans() -> None:
    flows = pd.DataFrame({"ts": [10.0, 10.5, 500.0, 10.2], "src_ip": ["a", "a", "a", "b"],
                          "dst_ip": ["v", "w", "v", "v"]})
    scores = np.array([0.9, 0.9, 0.9, 0.9])
    assert ml_alert_mask(flows, scores, 0.5, None).tolist() == [True] * 4
    policy = {"mode": "corroborated", "standalone": None}
    spans = {"a": (9.0, 20.0, frozenset({"v"}))}
    assert ml_alert_mask(flows, scores, 0.5, policy, spans).tolist() == [True, False, False, False]
    assert ml_alert_mask(flows, scores, 0.5, {"mode": "corroborated", "standalone": 0.8}).all()


def test_committed_lab_captures_end_to_end(small_default: tuple[object, object], tmp_path: Path) -> None:
    """The lab bench over the small committed lab runs (tests' own seeds 7 and 8)."""
    from trustmesh.evaluate._lab import bench_lab_runs

    lab = Path(__file__).resolve().parents[1] / "data" / "lab"
    runs = [lab / "mini-site-s7", lab / "mini-benign-s8"]
    if not all((r / "capture.pcap").exists() for r in runs):
        pytest.skip("optional: committed lab captures (tests/data/lab) not present")
    det, manifest = small_default
    model = tmp_path / "m.tm"
    from trustmesh.detect import save_model

    save_model(det, model, data_digest="0" * 64, training=dict(manifest.training))  # type: ignore[attr-defined,arg-type]
    doc = bench_lab_runs(runs, model=model)
    site, benign = doc["runs"]
    assert benign["attacks"] == [] and benign["incidents"] == 0 and benign["benign_fpr"] == 0.0
    assert site["benign_fpr"] <= 0.05 and site["false_incidents"] == 0
    for attack in site["attacks"]:
        assert attack["flagged"] and attack["technique_ok"], attack
        if attack["kind"] not in ("web-enumeration", "lateral-movement"):
            assert attack["blocked"], attack
    assert doc["summary"]["benign_only_incidents"] == 0 and doc["alert_policy"]["mode"] == "corroborated"
