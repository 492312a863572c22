"""The blueprint's HTML report opens in headless Chromium with every section filled and no empty plot."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trustmesh.evaluate import SECTIONS, load_config, run_blueprint

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.needs_data
def test_report_renders_in_headless_chromium(data_dir: Path, tmp_path: Path,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    # Arrange: a real blueprint run on the tiny test profile
    # same folder as tests/evaluate/test_eval_blueprint.py: sections it finished are reused from the cache
    out = tmp_path_factory.getbasetemp() / "eval-blueprint-test-profile"
    run_blueprint(load_config("test"), out, data_dir=data_dir, ledger_dir=tmp_path / "ledger")
    html = out / "report.html"
    profile_dir = tmp_path / "chromium-profile"
    # Act: let the page load (and its figure check run), then dump the live DOM
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile_dir}",
         "--virtual-time-budget=5000", "--dump-dom", html.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    shutil.rmtree(profile_dir, ignore_errors=True)
    dom = result.stdout
    # Assert: the browser rendered the page
    assert result.returncode == 0, result.stderr[-2000:]
    assert "<h1>trustmesh security evaluation blueprint</h1>" in dom
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None
    checked = re.search(r'data-images-checked="(\d+)"', body.group(1))
    broken = re.search(r'data-broken-images="(\d+)"', body.group(1))
    assert checked and broken, "the page's load handler did not run"
    assert int(checked.group(1)) > 0 and int(broken.group(1)) == 0
    # every section is present and filled: a plot when it ran, the reason when it was skipped
    for name in SECTIONS:
        m = re.search(rf'<section id="sec-{name}" data-status="(\w+)">(.*?)</section>', dom, re.S)
        assert m, f"section {name} missing from the rendered page"
        status, inner = m.groups()
        assert status in ("ok", "skipped"), (name, inner[:500])
        if status == "ok":
            assert "<img" in inner, f"section {name} has no figure"
        else:
            assert "skipped:" in inner
    # every figure decoded in the browser and is not blank
    imgs = re.findall(r"<img[^>]*>", dom)
    for tag in imgs:
        width = re.search(r'data-natural-width="(\d+)"', tag)
        assert width and int(width.group(1)) > 0, tag[:120]
        data = re.search(r'src="data:image/png;base64,([^"]+)"', tag)
        assert data, tag[:120]
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data.group(1)))).convert("L"))
        assert pixels.std() > 1.0, "a blank figure"
