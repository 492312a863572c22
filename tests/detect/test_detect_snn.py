"""The spiking detector: conformance suite, spike/SOP accounting, encodings and artifact checks."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trustmesh.detect import BaseDetector
from trustmesh.detect.checks import check_detector
from trustmesh.detect.snn import SpikeEncoding, SpikingDetector
from trustmesh.errors import ModelError


def _data(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Flows with counts, a rate, a categorical protocol; attacks have many packets and few bytes."""
    rng = np.random.default_rng(seed)
    label = rng.choice(["benign", "scan", "dos"], size=n, p=[0.5, 0.3, 0.2])
    pkts = np.where(label == "benign", rng.integers(1, 20, n), rng.integers(40, 400, n))
    byts = np.where(label == "scan", rng.integers(40, 80, n), rng.integers(200, 50_000, n))
    X = pd.DataFrame({
        "src_pkts": pkts,
        "src_bytes": byts,
        "duration": rng.exponential(2.0, n),
        "proto": rng.choice(["tcp", "udp", "icmp"], size=n),
    })
    return X, label


def _small(**kw: object) -> SpikingDetector:
    return SpikingDetector(hidden=(12, 6), steps=6, epochs=6, batch_size=32, learning_rate=1e-2, seed=1,
                           **kw)  # type: ignore[arg-type]


def test_snn_passes_the_detector_conformance_suite() -> None:
    X, y = _data(120)
    # raises AssertionError naming the first failing property
    check_detector(lambda: SpikingDetector(hidden=(8,), steps=4, epochs=2, batch_size=32, seed=2), X, y)


def test_snn_learns_a_separable_task() -> None:
    X, y = _data(600)
    Xt, yt = _data(300, seed=5)
    det = _small().fit(X, y)
    acc = float(np.mean(det.predict(Xt) == (yt != "benign")))
    assert acc > 0.85
    assert det.classes_ == ("benign", "dos", "scan")


def test_spike_stats_count_synaptic_operations_per_inference() -> None:
    # Arrange
    X, y = _data()
    det = _small().fit(X, y)
    # Act
    det.score(X)
    st = det.last_spike_stats
    # Assert
    assert st is not None and st.flows == len(X) and st.steps == 6
    sizes = det.layer_sizes
    assert sizes == (det.spike_encoding.width, 12, 6, 3)  # type: ignore[union-attr]
    # SOPs = spikes arriving at each layer x that layer's fan-out
    expected = sum(s * fan for s, fan in zip(st.spikes_per_layer, sizes[1:], strict=True))
    assert st.sops == pytest.approx(expected)
    assert st.equivalent_macs == sizes[0] * 12 + 12 * 6 + 6 * 3
    # rate coding: input spikes per flow cannot exceed steps x inputs
    assert 0 < st.spikes_per_layer[0] <= 6 * sizes[0]


def test_latency_coding_fires_at_most_once_per_input() -> None:
    X, y = _data()
    det = _small(encoding="latency").fit(X, y)
    det.score(X)
    st = det.last_spike_stats
    assert st is not None
    inputs = det.spike_inputs(det.encode(X))
    assert st.spikes_per_layer[0] == pytest.approx(float((inputs > 0).sum(axis=1).mean()))


def test_spike_encoding_maps_to_unit_interval_and_inverts() -> None:
    X, _ = _data()
    det = _small().fit(X, _data()[1])
    enc = det.spike_encoding
    assert enc is not None
    m = det.encode(X)
    u = enc.transform(m)
    assert u.min() >= 0.0 and u.max() <= 1.0
    raw = m[:, list(enc.numeric)]
    back = enc.unscale_numeric(enc.scale_numeric(raw))
    assert np.allclose(back, raw, rtol=1e-4, atol=1e-3)
    assert enc.integer[list(enc.numeric).index(0)]  # src_pkts is a count


def test_saved_model_is_a_zip_without_pickles_and_loads_via_the_base_class(tmp_path: Path) -> None:
    X, y = _data()
    det = _small().fit(X, y)
    path = tmp_path / "snn.tm"
    det.save(path)
    names = zipfile.ZipFile(path).namelist()
    assert "detector.json" in names and all(n.endswith((".json", ".npy")) for n in names)
    again = BaseDetector.load(path)
    assert isinstance(again, SpikingDetector)
    assert np.array_equal(again.score(X), det.score(X))


def test_tampered_weights_are_rejected(tmp_path: Path) -> None:
    # Arrange: a weight array of the wrong shape inside an otherwise valid artifact
    X, y = _data()
    det = _small().fit(X, y)
    path = tmp_path / "snn.tm"
    det.save(path)
    bad = tmp_path / "bad.tm"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "readout.weight.npy":
                import io

                buf = io.BytesIO()
                np.save(buf, np.zeros((2, 2), dtype=np.float32), allow_pickle=False)
                data = buf.getvalue()
            dst.writestr(name, data)
    # Act / Assert
    with pytest.raises(ModelError):
        SpikingDetector.load(bad)


def test_encoding_state_that_does_not_match_the_encoder_is_rejected() -> None:
    enc = SpikeEncoding((0, 1), (0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (True, False), ((2, 3),))
    SpikeEncoding.from_dict(enc.to_dict(), 3)
    with pytest.raises(ModelError):
        SpikeEncoding.from_dict(enc.to_dict(), 4)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [({"steps": 0}, "steps"), ({"hidden": ()}, "hidden"), ({"encoding": "phase"}, "encoding"),
     ({"beta": 1.5}, "beta"), ({"learning_rate": 0}, "learning_rate")],
)
def test_bad_parameters_are_rejected_early(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        SpikingDetector(**kw)  # type: ignore[arg-type]


def test_unfitted_detector_refuses_to_score() -> None:
    X, _ = _data(10)
    with pytest.raises(ModelError):
        SpikingDetector().score(X)
