"""Syslog sink: RFC 5424 messages (JSON or CEF) received by real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest
from _sink_helpers import make_alert, make_incident  # type: ignore[import-not-found]

from trustmesh.errors import SinkError
from trustmesh.sinks import SyslogSink, cef_line

RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    r"(?P<sd>\[[^\]]*\]) \ufeff(?P<msg>.*)$", re.S)


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def test_udp_json_messages_parse_as_rfc5424() -> None:
    listener = _udp()
    port = listener.getsockname()[1]
    sink = SyslogSink("127.0.0.1", port, protocol="udp", facility="local3")
    docs = [make_alert(0).to_ecs(created=0), make_incident().to_ecs(created=0)]
    sink.emit(docs)
    got = [listener.recv(65535).decode("utf-8") for _ in docs]
    sink.close()
    listener.close()
    first = RFC5424.match(got[0])
    assert first is not None, got[0]
    assert int(first["pri"]) == 19 * 8 + 3  # local3, event.severity 3 (high) -> err
    assert first["ts"] == docs[0]["@timestamp"] and first["app"] == "trustmesh" and first["msgid"] == "alert"
    assert 'id="alr-0000"' in first["sd"] and first["sd"].startswith("[trustmesh@32473 ")
    assert json.loads(first["msg"]) == docs[0]
    second = RFC5424.match(got[1])
    assert second is not None and second["msgid"] == "incident"


def test_tcp_octet_counting_and_cef() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = bytearray()

    def accept() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            while chunk := conn.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=accept)
    thread.start()
    sink = SyslogSink("127.0.0.1", server.getsockname()[1], protocol="tcp", fmt="cef")
    docs = [make_alert(i).to_ecs(created=0) for i in range(3)]
    sink.emit(docs)
    sink.close()
    thread.join(5)
    server.close()
    frames, data = [], bytes(received)
    while data:  # RFC 6587: MSG-LEN SP SYSLOG-MSG
        length, _, rest = data.partition(b" ")
        frames.append(rest[: int(length)].decode("utf-8"))
        data = rest[int(length):]
    assert len(frames) == 3
    msg = RFC5424.match(frames[2])
    assert msg is not None
    cef = msg["msg"]
    assert cef.startswith("CEF:0|trustmesh|trustmesh|") and "|ml:m1|" in cef and "|8|" in cef
    assert "src=78.36.196.213" in cef and "dpt=1433" in cef and "cs2=T1046" in cef and "externalId=alr-0002" in cef


def test_cef_escaping() -> None:
    doc = make_alert(0, predicted_class="a|b=c\\d").to_ecs(created=0)
    line = cef_line(doc)
    header = re.split(r"(?<!\\)\|", line, maxsplit=7)
    assert len(header) == 8 and header[5] == "trustmesh ml: a\\|b=c\\\\d"
    assert "cat=a|b\\=c\\\\d" in line  # extension: = and \ escaped, | allowed


def test_unreachable_tcp_is_a_sink_error() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(SinkError, match="cannot send"):
        SyslogSink("127.0.0.1", port, protocol="tcp", timeout_s=2).emit([make_alert().to_ecs(created=0)])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="protocol"):
        SyslogSink("127.0.0.1", protocol="sctp")
    with pytest.raises(ValueError, match="facility"):
        SyslogSink("127.0.0.1", facility="local9")
