"""The dataset registry: sha256 verification (good, corrupted, missing), caching and the loaders."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from trustmesh.errors import DatasetError, InputError
from trustmesh.flows import (
    CANONICAL_FEATURES,
    DATASETS,
    NSL_KDD_CATEGORIES,
    check_dataset,
    load_dataset,
    verify_dataset,
)
from trustmesh.flows import _hashing

pytestmark = pytest.mark.needs_data

SMALL = "zeek-slips-test10"
SMALL_REL = "logs/zeek/slips-test10-mixed/conn.log.gz"


def _copy(data_dir: Path, tmp_path: Path, rel: str = SMALL_REL) -> Path:
    dst = tmp_path / rel
    dst.parent.mkdir(parents=True)
    shutil.copy(data_dir / rel, dst)
    return dst


def test_registry_covers_the_readme(data_dir: Path) -> None:
    readme = (data_dir / "README.md").read_text(encoding="utf-8")
    shas = set(re.findall(r"`([0-9a-f]{64})`", readme))
    registered = {f.sha256 for spec in DATASETS.values() for f in spec.files}

    # every stored-file sha256 in the registry appears in the README (decompressed hashes are extra)
    assert registered <= shas
    assert len(registered) == 29
    assert DATASETS["pcap-synscan"].ground_truth is not None
    assert DATASETS["pcap-synscan"].ground_truth.attackers == ("172.16.0.8",)
    assert DATASETS["pcap-ssh-bruteforce"].ground_truth.victims == ("147.32.80.37",)  # type: ignore[union-attr]
    for spec in DATASETS.values():
        assert spec.origin and spec.files


def test_verify_all_staged_files(data_dir: Path) -> None:
    for name in DATASETS:
        paths = verify_dataset(name, data_dir)
        assert all(p.is_file() for p in paths)


def test_verify_good_corrupted_and_missing_copy(data_dir: Path, tmp_path: Path) -> None:
    copy = _copy(data_dir, tmp_path)
    assert verify_dataset(SMALL, tmp_path) == (copy,)

    raw = bytearray(copy.read_bytes())
    raw[100] ^= 0xFF
    copy.write_bytes(bytes(raw))
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # never reuse the cached hash
    with pytest.raises(DatasetError) as err:
        verify_dataset(SMALL, tmp_path)
    msg = str(err.value)
    assert str(copy) in msg and "sha256 mismatch" in msg
    assert DATASETS[SMALL].files[0].sha256 in msg
    assert "stratosphereips/StratosphereLinuxIPS" in msg  # where to obtain it

    copy.unlink()
    with pytest.raises(DatasetError, match=r"conn\.log\.gz: missing .*obtain it from"):
        verify_dataset(SMALL, tmp_path)
    assert [s.status for s in check_dataset(SMALL, tmp_path)] == ["missing"]


def test_verification_is_cached_by_path_size_mtime(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _copy(data_dir, tmp_path)
    calls: list[Path] = []
    real = _hashing._hash_stream

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(_hashing, "_hash_stream", counting)
    verify_dataset(SMALL, tmp_path)
    verify_dataset(SMALL, tmp_path)
    assert len(calls) == 1

    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    verify_dataset(SMALL, tmp_path)
    assert len(calls) == 2


def test_unknown_dataset_and_split(data_dir: Path) -> None:
    with pytest.raises(InputError, match="unknown dataset 'nope'"):
        load_dataset("nope", data_dir=data_dir)
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_dataset("nsl-kdd", split="dev", data_dir=data_dir)


def test_load_refuses_corrupted_file(data_dir: Path, tmp_path: Path) -> None:
    copy = _copy(data_dir, tmp_path, "nsl-kdd/KDDTest-21.txt.gz")
    copy.write_bytes(copy.read_bytes()[:-10])

    with pytest.raises(DatasetError, match="KDDTest-21.txt.gz: sha256 mismatch"):
        load_dataset("nsl-kdd", split="test-21", data_dir=tmp_path)


def test_nsl_kdd_splits_and_categories(data_dir: Path) -> None:
    test = load_dataset("nsl-kdd", split="test", data_dir=data_dir)
    hard = load_dataset("nsl-kdd", split="test-21", data_dir=data_dir)

    assert test.features.shape == (22_544, 41)
    assert "difficulty" in test.dropped_columns and "label" in test.dropped_columns
    assert test.labels.nunique() == 38
    assert int(test.is_attack.sum()) == 12_833
    assert test.attack_category is not None
    # the grouping reproduces the README's KDDTest+ category counts
    assert test.attack_category.value_counts().to_dict() == {
        "benign": 9_711, "DoS": 7_458, "R2L": 2_754, "Probe": 2_421, "U2R": 200,
    }  # fmt: skip
    assert set(NSL_KDD_CATEGORIES.values()) == {"DoS", "Probe", "R2L", "U2R"}
    assert (hard.labels == "benign").sum() == 2_152
    assert test.features["protocol_type"].isin(["tcp", "udp", "icmp"]).all()
    assert test.name == "nsl-kdd:test" and len(test.digest) == 64


def test_unsw_nb15(data_dir: Path) -> None:
    t = load_dataset("unsw-nb15", data_dir=data_dir)

    assert t.features.shape == (82_332, 42)
    assert "id" in t.dropped_columns and "id" not in t.features.columns
    assert "attack_cat" not in t.features.columns and "label" not in t.features.columns
    assert int(t.is_attack.sum()) == 45_332
    assert t.labels.value_counts()["Worms"] == 44
    assert (t.labels == "benign").sum() == 37_000


def test_ton_iot_network_and_parquet_cache(data_dir: Path, _isolated_cache: Path) -> None:
    first = load_dataset("ton-iot-network", data_dir=data_dir)
    cached = load_dataset("ton-iot-network", data_dir=data_dir)

    assert first.features.shape[0] == 211_043
    assert {"src_ip", "dst_ip", "src_port"} <= set(first.dropped_columns)
    assert "dst_port" in first.features.columns and "conn_state" in first.features.columns
    assert first.labels.value_counts().to_dict()["benign"] == 50_000
    assert int(first.is_attack.sum()) == 161_043
    assert any((_isolated_cache / "datasets").glob("ton-iot-network-all-*.parquet"))
    assert cached.features.equals(first.features) and cached.labels.equals(first.labels)
    assert (cached.features.dtypes == first.features.dtypes).all()
    assert np.array_equal(cached.is_attack, first.is_attack) and cached.digest == first.digest


def test_ton_iot_telemetry_per_device_and_all(data_dir: Path) -> None:
    fridge = load_dataset("ton-iot-telemetry", split="fridge", data_dir=data_dir)
    every = load_dataset("ton-iot-telemetry", data_dir=data_dir)

    assert len(fridge) == 39_944
    assert list(fridge.features.columns) == ["fridge_temperature", "temp_condition"]
    assert {"date", "time"} <= set(fridge.dropped_columns)
    assert (fridge.labels == "benign").sum() == 15_000
    assert len(every) == sum(f.rows or 0 for f in DATASETS["ton-iot-telemetry"].files)
    assert every.features["device"].nunique() == 7
    assert len(every.files) == 7


def test_capture_datasets_labelled_from_ground_truth(data_dir: Path) -> None:
    scan = load_dataset("pcap-ssh-bruteforce", data_dir=data_dir)
    ctu = load_dataset("zeek-ctu-sme-11", data_dir=data_dir)

    assert list(scan.features.columns) == list(CANONICAL_FEATURES)
    assert scan.is_attack.all() and len(scan) == 67  # README: 67 TCP connections, all attacker->victim
    assert int(ctu.is_attack.sum()) == 719
    assert (ctu.labels == "unknown").sum() == 3
    with pytest.raises(InputError, match="no labels and no documented attacker"):
        load_dataset("suricata-test6", data_dir=data_dir)


def test_no_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("trustmesh.flows._datasets.find_data_dir", lambda explicit=None: None)
    with pytest.raises(DatasetError, match="no dataset directory found"):
        verify_dataset("nsl-kdd")


def test_docs_list_every_registered_file_and_ground_truth() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "datasets.md").read_text(encoding="utf-8")

    for spec in DATASETS.values():
        assert f"`{spec.name}`" in doc
        for f in spec.files:
            assert f.sha256 in doc, f"docs/datasets.md lacks {f.path}"
        if spec.ground_truth is not None:
            for host in spec.ground_truth.attackers + spec.ground_truth.victims:
                assert host in doc


def test_ground_truth_flow_rule() -> None:
    rat = DATASETS["pcap-ratinfected"].ground_truth
    c2 = DATASETS["pcap-test7-malicious"].ground_truth
    arp = DATASETS["pcap-arppoison"].ground_truth
    beacon = DATASETS["pcap-test-cc-beacon"].ground_truth
    assert rat is not None and c2 is not None and arp is not None and beacon is not None

    # either direction between attacker and victim, on a documented port
    assert rat.is_malicious_flow("172.16.0.114", "172.16.0.111", 1042, 4433)
    assert rat.is_malicious_flow("172.16.0.111", "172.16.0.114", 6645, 1050)
    assert not rat.is_malicious_flow("172.16.0.114", "172.16.0.111", 1042, 80)
    assert not rat.is_malicious_flow("172.16.0.114", "8.8.8.8", 1042, 4433)
    # "many victims": any peer, but only the scanned ports; the infected host's own DNS is benign
    assert c2.is_malicious_flow("192.168.2.16", "203.0.113.9", 40000, 23)
    assert not c2.is_malicious_flow("192.168.2.16", "203.0.113.9", 40000, 53)
    # documented benign hosts never count; link-layer attacks have no malicious IP flow
    assert not beacon.is_malicious_flow("147.32.80.37", "147.32.80.9", 5000, 443)
    assert not arp.is_malicious_flow("172.16.0.105", "172.16.0.107", 1, 80)


def test_damaged_parquet_cache_is_rebuilt(data_dir: Path, _isolated_cache: Path) -> None:
    first = load_dataset("nsl-kdd", split="test-21", data_dir=data_dir)
    (entry,) = (_isolated_cache / "datasets").glob("nsl-kdd-test-21-*.parquet")
    entry.write_bytes(entry.read_bytes()[:-100] + b"\0" * 100)

    again = load_dataset("nsl-kdd", split="test-21", data_dir=data_dir)

    assert again.features.equals(first.features) and again.labels.equals(first.labels)
    assert again.attack_category is not None and first.attack_category is not None
    assert again.attack_category.equals(first.attack_category)
