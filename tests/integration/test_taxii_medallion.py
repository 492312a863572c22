"""`trustmesh stix publish` against a real TAXII 2.1 server: medallion (memory backend) on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.records import Alert, FlowId, ModelId
from trustmesh.sinks import TAXII_MEDIA_TYPE, bundle_json, stix_bundle

pytestmark = pytest.mark.integration

COLLECTION = "2b6ea8a2-7bd8-4d3c-9a5c-2a2a3f0b8c11"
USER, PASSWORD = "trustmesh-test", "not-a-real-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def taxii(tmp_path: Path) -> Iterator[str]:
    exe = Path(sys.executable).with_name("medallion")
    if not exe.exists():
        found = shutil.which("medallion")
        if found is None:
            pytest.skip("medallion not installed (pip install medallion; the test extra has it)")
        exe = Path(found)
    port = _free_port()
    root = f"http://127.0.0.1:{port}/trustmesh/"
    data = {
        "/discovery": {"title": "trustmesh test TAXII", "default": root, "api_roots": [root]},
        "trustmesh": {
            "information": {"title": "trustmesh", "versions": [TAXII_MEDIA_TYPE], "max_content_length": 10_000_000},
            "status": [],
            "collections": [{"id": COLLECTION, "title": "alerts", "can_read": True, "can_write": True,
                             "media_types": ["application/stix+json;version=2.1"], "objects": [], "manifest": []}],
        },
    }
    (tmp_path / "data.json").write_text(json.dumps(data))
    config = {"backend": {"module": "medallion.backends.memory_backend", "module_class": "MemoryBackend",
                          "filename": str(tmp_path / "data.json")},
              "users": {USER: PASSWORD}, "taxii": {"max_page_size": 1000}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    proc = subprocess.Popen([str(exe), "--host", "127.0.0.1", "--port", str(port), str(tmp_path / "config.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/taxii2/", headers={"Accept": TAXII_MEDIA_TYPE},
                              auth=(USER, PASSWORD), timeout=1)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("medallion did not start")
        yield root
    finally:
        proc.terminate()
        proc.wait(10)


def _alerts() -> list[Alert]:
    return [Alert(alert_id=f"alr-{i}", timestamp=1622987986.0 + i, flow_id=FlowId(f"f{i}"), model_id=ModelId("m"),
                  score=0.95, threshold=0.5, source_ip=f"203.0.113.{i % 5 + 1}", destination_ip="192.168.1.129",
                  source_port=40000 + i, destination_port=1433, transport="tcp", severity=3,
                  technique_id="T1046" if i % 2 else None) for i in range(20)]


def test_publish_adds_every_object_once(taxii: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = stix_bundle(_alerts(), producer="gw-test", created=1.7e9)
    path = tmp_path / "bundle.json"
    path.write_text(bundle_json(bundle))
    monkeypatch.setenv("TM_TEST_TAXII_PW", PASSWORD)
    args = ["stix", "publish", str(path), "--url", taxii, "--collection", COLLECTION, "--user", USER,
            "--password-env", "TM_TEST_TAXII_PW", "--max-objects", "7", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    totals = json.loads(result.stdout)
    assert totals["success_count"] == totals["total_count"] == len(bundle["objects"])
    assert len(totals["status_ids"]) == -(-len(bundle["objects"]) // 7)  # chunked requests

    got = httpx.get(f"{taxii}collections/{COLLECTION}/objects/", headers={"Accept": TAXII_MEDIA_TYPE},
                    auth=(USER, PASSWORD), timeout=10).json()["objects"]
    assert sorted(o["id"] for o in got) == sorted(o["id"] for o in bundle["objects"])

    again = CliRunner().invoke(app, args)  # the same bundle again: same ids and versions, so nothing is added
    assert again.exit_code == 2 and "refused" in again.output
    got = httpx.get(f"{taxii}collections/{COLLECTION}/objects/", headers={"Accept": TAXII_MEDIA_TYPE},
                    auth=(USER, PASSWORD), timeout=10).json()["objects"]
    assert len(got) == len(bundle["objects"])


def test_wrong_password_and_bad_bundle_are_one_line(taxii: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(bundle_json(stix_bundle(_alerts()[:2], created=1.7e9)))
    monkeypatch.setenv("TM_TEST_TAXII_PW", "wrong")
    result = CliRunner().invoke(app, ["stix", "publish", str(path), "--url", taxii, "--collection", COLLECTION,
                                      "--user", USER, "--password-env", "TM_TEST_TAXII_PW"])
    assert result.exit_code == 2 and "HTTP 401" in result.output and "wrong" not in result.output
    path.write_text('{"type": "indicator"}')
    result = CliRunner().invoke(app, ["stix", "publish", str(path), "--url", taxii, "--collection", COLLECTION])
    assert result.exit_code == 2 and "not a STIX bundle" in result.output
