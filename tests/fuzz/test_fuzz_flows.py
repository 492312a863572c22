"""Fuzz every flow parser with mutations of real records: Zeek TSV/JSON, Suricata EVE, CSV/Parquet, pcap."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from _fuzz_harness import HOSTILE_NUMBERS, deep, expect_clean, fuzz_settings, mutated_bytes, mutated_json, mutated_lines, tally_for
from hypothesis import given
from hypothesis import strategies as st

from trustmesh.flows import BadRecordLog, load_table, open_source, read_pcap

ZEEK = "logs/zeek/slips-test10-mixed/conn.log.gz"
ZEEK_LABELED = "logs/zeek/ctu-sme-11-win-excerpt/conn.log.labeled.gz"
EVE = "logs/suricata/test6-malicious.suricata.json.gz"
TON = "ton-iot/network/train_test_network.csv.gz"
PCAP = "pcaps/stratosphere-slips/test12-icmp-portscan.pcap"


def _text(data_dir: Path, rel: str, n: int) -> list[str]:
    with gzip.open(data_dir / rel, "rt", encoding="utf-8") as fh:
        return [next(fh).rstrip("\n") for _ in range(n)]


def _consume(path: Path) -> int:
    """Read a source the way the pipeline does (bad records skipped) and check what comes out."""
    source = open_source(path)
    rows = 0
    for batch in source.iter_batches(64):
        rows += len(batch)
        if len(batch):
            assert batch["src_port"].between(0, 65535).all() and batch["dst_port"].between(0, 65535).all()
    log = getattr(source, "bad_records", None)
    if isinstance(log, BadRecordLog):
        for bad in log.examples:
            assert str(bad).startswith(str(path)), str(bad)
    return rows


@pytest.fixture(scope="module")
def zeek_tsv(data_dir: Path) -> list[str]:
    return _text(data_dir, ZEEK, 40)


@pytest.fixture(scope="module")
def zeek_labeled(data_dir: Path) -> list[str]:
    return _text(data_dir, ZEEK_LABELED, 30)


@pytest.fixture(scope="module")
def eve_lines(data_dir: Path) -> list[str]:
    return _text(data_dir, EVE, 60)


@given(data=st.data())
@fuzz_settings(60)
def test_zeek_tsv(data: st.DataObject, zeek_tsv: list[str], zeek_labeled: list[str], tmp_path: Path) -> None:
    seed = data.draw(st.sampled_from([zeek_tsv, zeek_labeled]))
    lines = data.draw(mutated_lines(seed, "\t"))
    if data.draw(st.booleans()):  # hostile header values
        lines.insert(0, "#separator " + data.draw(st.sampled_from(["\\x", "\\xZZ", "", "ab", "\\x2c", "\\u0000"])))
    path = tmp_path / "conn.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    expect_clean(tally_for("zeek-tsv"), lambda: _consume(path), lines)


@given(data=st.data())
@fuzz_settings(60)
def test_zeek_json(data: st.DataObject, zeek_tsv: list[str], tmp_path: Path) -> None:
    fields = next(ln for ln in zeek_tsv if ln.lstrip().startswith("#fields")).split("\t")[1:]
    rows = [ln.split("\t") for ln in zeek_tsv if ln and not ln.lstrip().startswith("#")]
    docs = [dict(zip(fields, r, strict=False)) for r in rows[:20]]
    for d in docs:
        for k in ("id.orig_p", "id.resp_p", "duration", "orig_bytes", "ts"):
            try:
                d[k] = json.loads(d[k]) if d.get(k, "-") != "-" else None
            except (json.JSONDecodeError, KeyError):
                pass
    out = []
    for d in docs:
        if data.draw(st.integers(0, 3)) == 0:
            out.append(json.dumps(data.draw(mutated_json(d))))
        else:
            out.append(json.dumps(d))
    if data.draw(st.booleans()):
        out.insert(data.draw(st.integers(0, len(out))), data.draw(st.sampled_from(
            ['{"id.orig_p": ' + deep(3000) + "}", "[1,2]", '"text"', "{bad", '{"id.orig_p": NaN}',
             '{"id.orig_h": "a", "id.resp_h": "b", "proto": "tcp", "id.orig_p": 1e400}'])))
    path = tmp_path / "conn.json"
    path.write_text("\n".join(out) + "\n", encoding="utf-8", errors="surrogatepass")
    expect_clean(tally_for("zeek-json"), lambda: _consume(path), out)


@given(data=st.data())
@fuzz_settings(60)
def test_suricata_eve(data: st.DataObject, eve_lines: list[str], tmp_path: Path) -> None:
    out = []
    for ln in eve_lines:
        if data.draw(st.integers(0, 5)) == 0:
            out.append(json.dumps(data.draw(mutated_json(json.loads(ln)))))
        else:
            out.append(ln)
    if data.draw(st.booleans()):
        out = data.draw(mutated_lines(out, ","))
    path = tmp_path / "eve.json"
    path.write_text("\n".join(out) + "\n", encoding="utf-8", errors="surrogatepass")
    if not out or '"event_type"' not in out[0]:
        path.write_text(json.dumps({"event_type": "stats"}) + "\n" + path.read_text(errors="replace"))
    expect_clean(tally_for("suricata-eve"), lambda: _consume(path), out)


@pytest.fixture(scope="module")
def ton_head(data_dir: Path) -> list[str]:
    return _text(data_dir, TON, 60)


@given(data=st.data())
@fuzz_settings(40)
def test_csv_tables(data: st.DataObject, ton_head: list[str], tmp_path: Path) -> None:
    lines = data.draw(mutated_lines(ton_head, ","))
    path = tmp_path / "flows.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    tally = tally_for("csv-table")
    expect_clean(tally, lambda: _consume(path), lines)
    expect_clean(tally, lambda: load_table(path), lines)


@given(data=st.data())
@fuzz_settings(25)
def test_parquet_tables(data: st.DataObject, ton_head: list[str], tmp_path: Path) -> None:
    frame = pd.read_csv(io.StringIO("\n".join(ton_head)))
    col = data.draw(st.sampled_from(["src_port", "dst_port", "duration", "src_bytes", "proto"]))
    value = data.draw(st.sampled_from([1e308 * 10, -1, 2 ** 63 - 1, float("nan"), "x", None] + HOSTILE_NUMBERS[:5]))
    frame[col] = frame[col].astype(object)
    frame.loc[data.draw(st.integers(0, len(frame) - 1)), col] = value
    path = tmp_path / "flows.parquet"
    try:
        frame.astype({col: "str"} if isinstance(value, str) else {}).to_parquet(path)
    except Exception:  # noqa: BLE001 - a frame pyarrow cannot write is not a parser case
        frame[col] = frame[col].astype("str")
        frame.to_parquet(path)
    raw = path.read_bytes()
    if data.draw(st.booleans()):
        raw = data.draw(mutated_bytes(raw))
        path.write_bytes(raw)
    tally = tally_for("parquet-table")
    expect_clean(tally, lambda: _consume(path), (col, value))
    expect_clean(tally, lambda: load_table(path), (col, value))


@given(data=st.data())
@fuzz_settings(8)
def test_pcap_reader(data: st.DataObject, data_dir: Path, tmp_path: Path) -> None:
    raw = data.draw(mutated_bytes((data_dir / PCAP).read_bytes()))
    path = tmp_path / "case.pcap"
    path.write_bytes(raw)
    expect_clean(tally_for("pcap"), lambda: len(read_pcap(path)), raw[:64])
