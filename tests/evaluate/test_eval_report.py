"""Report writing: versioned JSON, self-contained HTML, and the resumable section cache."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from trustmesh.evaluate import REPORT_SCHEMA, REPORT_VERSION, Plot, SectionResult, Table  # noqa: E402
from trustmesh.evaluate._cache import SectionCache  # noqa: E402
from trustmesh.evaluate._report import figure_png, write_report  # noqa: E402


def _plot() -> Plot:
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0, 1, 4])
    return Plot("demo-plot", "a demo", figure_png(fig))


def _sections() -> list[SectionResult]:
    ok = SectionResult("efficacy", "1. Efficacy", "ok", headline={"f1": 0.9, "bad": float("nan")},
                       metrics={"x": np.float64(1.5), "nested": {"inf": float("inf")}},
                       tables=(Table("t", ("a", "b"), ((1, "<b>x</b>"),)),), plots=(_plot(),))
    skipped = SectionResult.skipped("poisoning", "2b. Poisoning", "federated package not built")
    return [ok, skipped]


def test_report_json_is_versioned_valid_json_and_hashed(tmp_path: Path) -> None:
    # Act
    jpath, hpath, digest = write_report(tmp_path, {"schema": REPORT_SCHEMA, "schema_version": REPORT_VERSION,
                                                   "profile": "test"}, _sections())
    raw = jpath.read_bytes()
    doc = json.loads(raw)
    # Assert
    assert hashlib.sha256(raw).hexdigest() == digest
    assert doc["schema"] == "trustmesh.blueprint-report" and doc["schema_version"] == 1
    eff, poi = doc["sections"]
    assert eff["headline"]["bad"] is None and eff["metrics"]["nested"]["inf"] is None  # NaN/inf -> null
    assert eff["plots"][0]["file"] == "plots/demo-plot.png"
    assert (tmp_path / "plots" / "demo-plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert poi["status"] == "skipped" and poi["reason"] == "federated package not built"


def test_html_is_self_contained_and_escapes_text(tmp_path: Path) -> None:
    _, hpath, _ = write_report(tmp_path, {"profile": "test"}, _sections())
    html = hpath.read_text()
    # no external resources: every src is an inline data URI
    srcs = re.findall(r'src="([^"]+)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in html and "https://" not in html
    png = base64.b64decode(srcs[0].split(",", 1)[1])
    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert img.std() > 0  # not a blank image
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert 'id="sec-poisoning"' in html and "skipped: federated package not built" in html
    assert 'id="summary-table"' in html


def test_cache_round_trips_ok_sections_only(tmp_path: Path) -> None:
    # Arrange
    cache = SectionCache(tmp_path, "cfg", version="v1")
    ok, skipped = _sections()
    # Act
    cache.put(ok)
    cache.put(skipped)
    got = cache.get("efficacy")
    # Assert
    assert got is not None and got.plots[0].png == ok.plots[0].png and got.headline["f1"] == 0.9
    assert cache.get("poisoning") is None  # skipped sections run again next time
    assert SectionCache(tmp_path, "cfg", version="v2").get("efficacy") is None  # code changed
    assert SectionCache(tmp_path, "other", version="v1").get("efficacy") is None  # config changed


def test_corrupt_cache_entries_are_ignored(tmp_path: Path) -> None:
    cache = SectionCache(tmp_path, "cfg", version="v1")
    cache.put(_sections()[0])
    (entry,) = tmp_path.glob("efficacy-*.json")
    entry.write_text("{not json")
    assert cache.get("efficacy") is None
