"""Bad records in every flow source: skipped, counted, reported with FILE:LINE and field; never wrapped."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from trustmesh.errors import DatasetError, InputError
from trustmesh.flows import open_source, read_zeek_conn
from trustmesh.flows._records import BadRecordLog
from trustmesh.flows._suricata import iter_suricata_eve
from trustmesh.flows._zeek import iter_zeek_conn

_TSV_HEAD = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tduration\torig_bytes\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tinterval\tcount\n"
)


def _tsv_row(port: str, duration: str = "0.5", uid: str = "C1") -> str:
    return f"1.0\t{uid}\t10.0.0.1\t{port}\t10.0.0.2\t80\ttcp\t{duration}\t10\n"


def test_zeek_tsv_bad_ports_and_numbers_are_skipped_with_file_line_and_field(tmp_path: Path) -> None:
    log = tmp_path / "conn.log"
    bad = ["1e400", "inf", "-1", "99999999999999999999", "65536", "80.5", "http"]
    body = _tsv_row("1234", uid="Cgood1")
    body += "".join(_tsv_row(p, uid=f"Cbad{i}") for i, p in enumerate(bad))
    body += _tsv_row("22", duration="1e400", uid="Cbadnum")
    body += _tsv_row("443", uid="Cgood2")
    log.write_text(_TSV_HEAD + body)
    source = open_source(log)
    flows = pd.concat(list(source.iter_batches(3)), ignore_index=True)
    assert flows["uid"].tolist() == ["Cgood1", "Cgood2"]
    assert flows["src_port"].tolist() == [1234, 443]  # nothing wrapped to a negative or huge port
    assert source.bad_records.count == len(bad) + 1
    msgs = [str(b) for b in source.bad_records.examples]
    assert msgs[0] == f"{log}:8: field src_port: port outside 0..65535 ('1e400')"
    assert any(m.startswith(f"{log}:11: field src_port: port outside 0..65535 ('99999999999999999999')") for m in msgs)
    assert any(m.startswith(f"{log}:15: field duration: number is not finite") for m in msgs)
    assert source.bad_records.by_field["src_port"] == len(bad)


def test_strict_parsers_raise_the_same_message_without_a_handler(tmp_path: Path) -> None:
    log = tmp_path / "conn.log"
    log.write_text(_TSV_HEAD + _tsv_row("inf"))
    with pytest.raises(InputError, match=r"conn.log:7: field src_port: port outside 0..65535"):
        read_zeek_conn(log)


def test_zeek_bad_separator_header_is_one_error_naming_the_line(tmp_path: Path) -> None:
    for sep in ("\\x", "", "\\xZZ", "ab"):
        log = tmp_path / "conn.log"
        log.write_text(f"#separator {sep}\n#fields\tts\tuid\n1\tC\n")
        with pytest.raises(InputError, match=r"conn.log:1: bad '#separator' header"):
            list(iter_zeek_conn(log, on_bad_record=BadRecordLog()))


def test_zeek_json_bad_lines_deep_nesting_and_infinite_ports(tmp_path: Path) -> None:
    good = {"ts": 1.0, "uid": "C1", "id.orig_h": "10.0.0.1", "id.orig_p": 1, "id.resp_h": "10.0.0.2",
            "id.resp_p": 80, "proto": "tcp"}
    lines = [json.dumps(good),
             json.dumps({**good, "uid": "Cx"}).replace('"id.orig_p": 1', '"id.orig_p": 1e400'),
             json.dumps({**good, "uid": "Cy", "id.resp_p": -5}),
             "[" * 5000 + "]" * 5000,
             '{"a":' * 100 + "1" + "}" * 100,
             json.dumps({**good, "uid": "Cz", "id.orig_p": 2 ** 70}),
             "{broken",
             json.dumps({**good, "uid": "C2", "id.orig_p": 2})]
    log = tmp_path / "conn.json"
    log.write_text("\n".join(lines) + "\n")
    seen = BadRecordLog()
    flows = pd.concat(list(iter_zeek_conn(log, on_bad_record=seen)), ignore_index=True)
    assert flows["uid"].tolist() == ["C1", "C2"]
    by_line = {b.line: b for b in seen.examples}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7]
    assert by_line[2].field == "src_port" and by_line[3].field == "dst_port" and by_line[6].field == "src_port"
    assert str(by_line[3]).endswith("port outside 0..65535 (-5)")
    assert "nested deeper" in by_line[4].problem and "nested deeper" in by_line[5].problem
    assert "not JSON" in by_line[7].problem


def test_suricata_eve_bad_records_are_skipped_and_the_rest_scored(tmp_path: Path, data_dir: Path) -> None:
    with gzip.open(data_dir / "logs/suricata/test6-malicious.suricata.json.gz", "rt", encoding="utf-8") as fh:
        lines = [ln for ln in fh.read().splitlines()[:400]]
    flows_in = [ln for ln in lines if json.loads(ln)["event_type"] == "flow"]
    rec = json.loads(flows_in[0])
    hostile = [
        json.dumps({**rec, "src_port": 1e400}).replace("Infinity", "1e400"),
        json.dumps({**rec, "dest_port": 70000}),
        json.dumps({**rec, "flow": {**rec["flow"], "bytes_toserver": 1e400}}).replace("Infinity", "1e400"),
        json.dumps({**rec, "flow": {**rec["flow"], "start": "yesterday"}}),
        json.dumps({**rec, "flow": "not an object"}),
        json.dumps({"no_event_type": 1}),
        '{"event_type": "flow", "x": ' + "[" * 3000 + "]" * 3000 + "}",
        '{"event_type": "flow", "src_port": NaN}',
    ]
    eve = tmp_path / "eve.json"
    eve.write_text("\n".join([*lines[:50], *hostile, *lines[50:]]) + "\n")
    seen = BadRecordLog()
    got = pd.concat(list(iter_suricata_eve(eve, on_bad_record=seen)), ignore_index=True)
    assert len(got) == len(flows_in)
    assert seen.count == len(hostile)
    by_line = {b.line: b.field for b in seen.examples}
    assert sorted(by_line) == list(range(51, 51 + len(hostile)))
    assert [by_line[i] for i in range(51, 56)] == ["src_port", "dst_port", "src_bytes", "flow.start", "flow"]
    assert got["src_port"].between(0, 65535).all() and got["dst_port"].between(0, 65535).all()


def test_table_source_skips_rows_with_overflowing_numbers_and_bad_ports(tmp_path: Path) -> None:
    cols = "ts,uid,src_ip,src_port,dst_ip,dst_port,proto,duration,src_bytes\n"
    rows = ["1,A,10.0.0.1,1,10.0.0.2,80,tcp,0.1,5",
            "2,B,10.0.0.1,1,10.0.0.2,80,tcp,1e309,5",
            "3,C,10.0.0.1,-7,10.0.0.2,80,tcp,0.1,5",
            "4,D,10.0.0.1,1,10.0.0.2,99999999999999999999,tcp,0.1,5",
            "5,E,10.0.0.1,2,10.0.0.2,443,tcp,0.2,7"]
    table = tmp_path / "flows.csv"
    table.write_text(cols + "\n".join(rows) + "\n")
    source = open_source(table)
    flows = pd.concat(list(source.iter_batches()), ignore_index=True)
    assert flows["uid"].tolist() == ["A", "E"]
    assert [(b.line, b.field) for b in source.bad_records.examples] == [
        (3, "duration"), (4, "src_port"), (5, "dst_port")]


def test_bad_record_log_keeps_a_bounded_number_and_counts_the_rest() -> None:
    from trustmesh.flows._records import BadRecord

    seen = BadRecordLog(keep=2)
    for i in range(5):
        seen(BadRecord("f", i, "src_port", "bad"))
    assert seen.count == 5 and len(seen.examples) == 2 and seen.dropped == 3
    assert [b.line for b in seen.drain()] == [0, 1]
    assert seen.drain() == []


def test_dataset_with_one_flipped_bit_and_the_old_mtime_is_refused(tmp_path: Path, data_dir: Path) -> None:
    from trustmesh.cli._app import app
    from trustmesh.flows import load_dataset, verify_dataset
    from typer.testing import CliRunner

    rel = Path("logs/zeek/slips-test10-mixed/conn.log.gz")
    (tmp_path / rel.parent).mkdir(parents=True)
    copy = tmp_path / rel
    shutil.copy2(data_dir / rel, copy)
    verify_dataset("zeek-slips-test10", tmp_path)  # hashes it once; the cache now holds the good digest
    st = copy.stat()
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    copy.write_bytes(bytes(raw))
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime as before
    assert copy.stat().st_mtime_ns == st.st_mtime_ns and copy.stat().st_size == st.st_size
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        verify_dataset("zeek-slips-test10", tmp_path)
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        load_dataset("zeek-slips-test10", data_dir=tmp_path, use_cache=False)
    result = CliRunner().invoke(app, ["datasets", "verify", "zeek-slips-test10", "--data-dir", str(tmp_path), "--full"])
    assert result.exit_code == 1 and "sha256 mismatch" in result.output


def test_non_text_values_in_text_fields_are_measured_not_crashed_on(tmp_path: Path) -> None:
    # found by the fuzz suite: a number where the uid belongs hit a read-only length array
    rows = [{"ts": 1.0, "uid": 12345, "id.orig_h": "10.0.0.1", "id.orig_p": 1, "id.resp_h": "10.0.0.2",
             "id.resp_p": 80, "proto": "tcp"},
            {"ts": 2.0, "uid": ["x" * 2000], "id.orig_h": "10.0.0.1", "id.orig_p": 1, "id.resp_h": "10.0.0.2",
             "id.resp_p": 80, "proto": "tcp"}]
    log = tmp_path / "conn.json"
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    seen = BadRecordLog()
    flows = pd.concat(list(iter_zeek_conn(log, on_bad_record=seen)), ignore_index=True)
    assert flows["uid"].tolist() == ["12345"]
    assert [(b.line, b.field) for b in seen.examples] == [(2, "uid")]
