"""Redis stream sink against a real redis-server started on a free loopback port."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustmesh.errors import SinkError
from trustmesh.records import Alert, FlowId, ModelId
from trustmesh.sinks import RedisStreamSink, SinkSet

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path), "--requirepass", "tm-test-pw"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not start")
        yield f"redis://:tm-test-pw@127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def _alert(i: int) -> Alert:
    return Alert(alert_id=f"alr-{i}", timestamp=1622987986.0 + i, flow_id=FlowId(f"f{i}"), model_id=ModelId("m"),
                 score=0.9, threshold=0.5, source_ip="10.0.0.9", destination_ip="10.0.0.1", destination_port=22,
                 source_port=40000 + i, transport="tcp", severity=2, technique_id="T1110")


def test_xadd_documents_to_a_stream(redis_url: str) -> None:
    import redis

    sink = RedisStreamSink(redis_url, stream="tm:alerts", maxlen=1000)
    docs = [_alert(i).to_ecs(created=1.7e9) for i in range(5)]
    sink.emit(docs[:3])
    sink.emit(docs[3:])
    sink.close()
    client = redis.Redis.from_url(redis_url)
    entries = client.xrange("tm:alerts")
    client.close()
    assert len(entries) == 5
    assert [json.loads(fields[b"doc"]) for _, fields in entries] == docs
    assert {fields[b"kind"] for _, fields in entries} == {b"alert"}
    assert "tm-test-pw" not in sink.name


def test_redis_down_is_counted_not_fatal(redis_url: str) -> None:
    wrong = redis_url.replace("tm-test-pw", "wrong-password")
    sinks = SinkSet([(RedisStreamSink(wrong, stream="tm:x", timeout_s=2), ["alert"])])
    problems = sinks.publish([_alert(0).to_ecs(created=0)])
    assert problems and "wrong-password" not in problems[0]
    (stats,) = sinks.stats().values()
    assert stats["failed"] == 1 and stats["sent"] == 0
    with pytest.raises(SinkError):
        RedisStreamSink("redis://127.0.0.1:9/0", timeout_s=1).emit([_alert(0).to_ecs(created=0)])
