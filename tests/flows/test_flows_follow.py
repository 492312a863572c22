"""Following growing Zeek and Suricata logs, across rotation, with idle-time batch release."""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
from pathlib import Path

import pytest

from trustmesh.errors import InputError
from trustmesh.flows import follow_source
from trustmesh.flows._follow import follow_lines


def _zeek_lines(data_dir: Path) -> tuple[list[str], list[str]]:
    raw = gzip.open(data_dir / "logs/zeek/slips-test10-mixed/conn.log.gz", "rt", encoding="utf-8").read()
    lines = [ln + "\n" for ln in raw.splitlines()]
    header = [ln for ln in lines if ln.lstrip(" \t").startswith("#") and not ln.startswith("#close")]
    body = [ln for ln in lines if not ln.lstrip(" \t").startswith("#")]
    return header, body


def test_follow_lines_holds_partial_lines_and_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("a\nb", encoding="utf-8")
    it = follow_lines(log, poll_s=0.01)
    assert next(it) == "a\n"
    assert next(it) is None  # "b" has no newline yet: held back
    with log.open("a", encoding="utf-8") as fh:
        fh.write("c\n")
    assert next(it) == "bc\n"
    log.rename(tmp_path / "x.log.1")
    log.write_text("new\n", encoding="utf-8")
    got = [line for line in (next(it) for _ in range(10)) if line is not None]
    assert got == ["new\n"]


def test_follow_zeek_conn_yields_rows_as_they_are_written(tmp_path: Path, data_dir: Path) -> None:
    header, body = _zeek_lines(data_dir)
    log = tmp_path / "conn.log"
    log.write_text("".join(header) + "".join(body[:10]), encoding="utf-8")
    batches = follow_source(tmp_path).iter_batches(1000)
    first = next(batches)
    assert len(first) == 10 and {"src_ip", "dst_port", "duration"} <= set(first.columns)

    def writer() -> None:
        time.sleep(0.3)
        with log.open("a", encoding="utf-8") as fh:
            fh.writelines(body[10:40])
        time.sleep(0.3)
        log.rename(tmp_path / "conn.1.log")  # Zeek rotation: a new file with its own header
        (tmp_path / "conn.log").write_text("".join(header) + "".join(body[40:45]), encoding="utf-8")

    t = threading.Thread(target=writer)
    t.start()
    seen = 10
    deadline = time.monotonic() + 20
    while seen < 45 and time.monotonic() < deadline:
        seen += len(next(batches))
    t.join()
    assert seen == 45


def test_follow_suricata_eve_keeps_only_flow_events(tmp_path: Path, data_dir: Path) -> None:
    events = gzip.open(data_dir / "logs/suricata/test6-malicious.suricata.json.gz", "rt", encoding="utf-8").read()
    lines = events.splitlines()[:300]
    n_flows = sum(json.loads(ln)["event_type"] == "flow" for ln in lines)
    eve = tmp_path / "eve.json"
    eve.write_text("\n".join(lines[:1]) + "\n", encoding="utf-8")
    source = follow_source(eve)
    batches = source.iter_batches(10_000)
    with eve.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines[1:]) + "\n")
    got = 0
    deadline = time.monotonic() + 20
    while got < n_flows and time.monotonic() < deadline:
        got += len(next(batches))
    assert got == n_flows
    # a bad line is skipped and counted (naming FILE:LINE); the flow after it still arrives
    flow_line = next(ln for ln in lines if json.loads(ln)["event_type"] == "flow")
    with eve.open("a", encoding="utf-8") as fh:
        fh.write("{not json\n" + flow_line + "\n")
    more = 0
    deadline = time.monotonic() + 20
    while more < 1 and time.monotonic() < deadline:
        more += len(next(batches))
    assert more == 1
    assert source.bad_records.count == 1
    assert re.fullmatch(r".*eve\.json:\d+: not JSON .*", str(source.bad_records.examples[0]))


def test_only_logs_can_be_followed(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(InputError, match="only Zeek conn.log and Suricata EVE"):
        follow_source(data_dir / "pcaps/practical-packet-analysis/synscan.pcapng")
    with pytest.raises(InputError, match="no conn.log"):
        follow_source(tmp_path)
