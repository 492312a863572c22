"""Every source on the real staged files maps into exactly the canonical schema, with sane values."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trustmesh.errors import InputError
from trustmesh.flows import (
    CANONICAL_COLUMNS,
    FlowSource,
    PcapSource,
    SuricataEveSource,
    TableSource,
    ZeekConnSource,
    check_capture,
    iter_pcap,
    nfstream_to_canonical,
    open_source,
    read_flows,
    read_pcap,
    read_suricata_eve,
    read_zeek_conn,
    ton_iot_to_canonical,
    validate_canonical,
)
from trustmesh.flows._tables import read_frame

pytestmark = pytest.mark.needs_data

PPA = "pcaps/practical-packet-analysis"
SLIPS = "pcaps/stratosphere-slips"


def _check(df: pd.DataFrame, labelled: bool = False) -> None:
    validate_canonical(df)
    extra = list(df.columns[len(CANONICAL_COLUMNS):])
    assert extra == (["label", "attack_type"] if labelled else [])
    assert (df["duration"].dropna() >= 0).all()
    assert (df[["src_bytes", "dst_bytes", "src_pkts", "dst_pkts"]].dropna() >= 0).all().all()
    assert df["uid"].is_unique


# ------------------------------------------------------------------------------------------ pcap


def test_pcap_synscan_matches_ground_truth(data_dir: Path) -> None:
    flows = read_pcap(data_dir / PPA / "synscan.pcapng")

    _check(flows)
    # README: 1,994 SYNs from 172.16.0.8 to 64.13.134.52, 12 SYN/ACKs, 5 RSTs
    assert len(flows) > 1900
    assert set(flows["src_ip"]) == {"172.16.0.8"}
    assert set(flows["dst_ip"]) == {"64.13.134.52"}
    assert (flows["proto"] == "tcp").all()
    assert (flows["conn_state"] == "S0").mean() > 0.95
    assert (flows["conn_state"] == "REJ").sum() >= 1
    # unanswered scan flows have no responder packets: responder statistics are undefined (NaN)
    s0 = flows[flows["conn_state"] == "S0"]
    assert (s0["dst_pkts"] == 0).all() and s0["dst_pkt_size_mean"].isna().all()
    assert flows["syn"].min() >= 1


def test_pcap_http_flows_have_service_payload_and_stats(data_dir: Path) -> None:
    flows = read_pcap(data_dir / PPA / "http_dvwa_sqlinjection.pcapng")

    _check(flows)
    assert set(flows["service"]) == {"http"}
    assert (flows["dst_port"] == 80).all()
    assert (flows["conn_state"] == "SF").all()
    assert (flows["src_bytes"] > 0).all() and (flows["dst_bytes"] > 0).all()
    assert (flows["src_pkt_size_max"] >= flows["src_pkt_size_mean"]).all()
    assert (flows["src_iat_mean"] > 0).all()
    assert np.isclose(flows["ts"].min(), 1491423344.641)  # 2017-04-05 20:15:44 UTC per the README


def test_pcap_icmp_sweep(data_dir: Path) -> None:
    flows = read_pcap(data_dir / SLIPS / "test12-icmp-portscan.pcap")

    _check(flows)
    assert set(flows["proto"]) == {"icmp"}
    assert "192.168.1.109" in set(flows["src_ip"])
    assert (flows["conn_state"] == "OTH").all()


def test_iter_pcap_streams_batches(data_dir: Path) -> None:
    batches = list(iter_pcap(data_dir / PPA / "synscan.pcapng", batch_size=500))

    assert len(batches) >= 4
    assert all(len(b) <= 500 for b in batches)
    whole = read_pcap(data_dir / PPA / "synscan.pcapng")
    assert sum(len(b) for b in batches) == len(whole)
    assert set(pd.concat(batches)["uid"]) == set(whole["uid"])  # uids are deterministic


def test_nfstream_mapping_rejects_table_without_statistics() -> None:
    with pytest.raises(InputError, match="statistical_analysis"):
        nfstream_to_canonical(pd.DataFrame({"protocol": [6]}))


def test_truncated_pcap_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    src = (data_dir / PPA / "ftp-crack.pcap").read_bytes()
    half = tmp_path / "half.pcap"
    half.write_bytes(src[: len(src) // 2])

    with pytest.raises(InputError, match=r"half\.pcap: truncated capture"):
        read_pcap(half)
    # nfstream alone would silently return the first half; on request we meter it anyway
    partial = read_pcap(half, allow_truncated=True)
    full = read_pcap(data_dir / PPA / "ftp-crack.pcap")
    assert 0 < len(partial) <= len(full)
    assert partial["src_pkts"].sum() + partial["dst_pkts"].sum() < full["src_pkts"].sum() + full["dst_pkts"].sum()


def test_truncated_pcapng_and_garbage_are_clear_errors(data_dir: Path, tmp_path: Path) -> None:
    src = (data_dir / PPA / "synscan.pcapng").read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(src[: len(src) // 2])
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes((data_dir / SLIPS / "test7-malicious.pcap").read_bytes()[:24] + bytes(range(256)) * 8)
    noise = tmp_path / "noise.pcapng"
    noise.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\xff" * 300)

    with pytest.raises(InputError, match="cut.pcapng: truncated capture"):
        read_pcap(cut)
    with pytest.raises(InputError, match="garbage.pcap: (corrupt|truncated) capture"):
        read_pcap(garbage)
    with pytest.raises(InputError, match="noise.pcapng"):
        check_capture(noise)


def test_header_only_pcap_gives_empty_canonical_frame(data_dir: Path, tmp_path: Path) -> None:
    p = tmp_path / "hdr.pcap"
    p.write_bytes((data_dir / SLIPS / "test7-malicious.pcap").read_bytes()[:24])

    flows = read_pcap(p)

    assert flows.empty
    validate_canonical(flows)


# ------------------------------------------------------------------------------------------ zeek


def test_zeek_tsv_with_stray_tab_and_ipv6(data_dir: Path) -> None:
    flows = read_zeek_conn(data_dir / "logs/zeek/slips-test10-mixed/conn.log.gz")

    _check(flows)
    assert len(flows) == 141
    assert flows["src_ip"].str.contains(":").any()  # IPv6 rows
    assert flows.loc[0, "uid"] == "CNgrt04tHika5Pgpfi"
    assert flows.loc[0, "service"] == "dns" and flows.loc[0, "conn_state"] == "SF"
    assert flows["syn"].isna().all()  # Zeek logs no flag counts


def test_zeek_labelled_tsv_maps_labels(data_dir: Path) -> None:
    flows = read_zeek_conn(data_dir / "logs/zeek/ctu-sme-11-win-excerpt/conn.log.labeled.gz")

    _check(flows, labelled=True)
    assert flows["label"].value_counts().to_dict() == {"malicious": 719, "benign": 44, "unknown": 3}
    mal = flows[flows["label"] == "malicious"]
    assert set(mal["src_ip"]) == {"192.168.1.107"} and set(mal["dst_ip"]) == {"66.63.168.35"}
    assert mal["attack_type"].str.contains("RemcosRAT").all()
    assert (flows.loc[flows["label"] == "benign", "attack_type"] == "benign").all()


def test_zeek_json_lines(data_dir: Path) -> None:
    flows = read_zeek_conn(data_dir / "logs/zeek/slips-test9-mixed/conn.log.gz")

    _check(flows)
    assert len(flows) == 576
    assert flows["ts"].between(18, 273).all()  # relative timestamps, per the README
    hit = flows[(flows["dst_ip"] == "194.132.197.198") & (flows["dst_port"] == 80)]
    assert len(hit) >= 1


def test_zeek_tsv_plain_text_and_errors(tmp_path: Path, data_dir: Path) -> None:
    plain = tmp_path / "conn.log"
    with gzip.open(data_dir / "logs/zeek/slips-test10-mixed/conn.log.gz", "rt") as fh:
        plain.write_text(fh.read())
    assert len(read_zeek_conn(plain)) == 141

    bad = tmp_path / "bad.log"
    bad.write_text("#separator \\x09\n#fields\tts\tuid\n1.0\tC1\textra\n")
    with pytest.raises(InputError, match=r"bad.log:3: 3 fields"):
        read_zeek_conn(bad)
    empty = tmp_path / "empty.log"
    empty.write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_zeek_conn(empty)


# -------------------------------------------------------------------------------------- suricata


def test_suricata_eve_flow_events(data_dir: Path) -> None:
    flows = read_suricata_eve(data_dir / "logs/suricata/test6-malicious.suricata.json.gz")

    _check(flows)
    assert len(flows) == 3512  # README: 3,512 flow events of 5,000
    assert set(flows["proto"]) <= {"tcp", "udp", "icmp"}
    assert flows["ts"].between(1622930000, 1623100000).all()  # 2021-06-06/07
    assert {"192.168.1.129", "192.168.1.132"} & set(flows["dst_ip"])
    assert (flows["conn_state"] == "REJ").sum() > 100  # inbound scanning gets rejected
    assert ((flows["dst_port"] == 1433) & (flows["dst_ip"] == "192.168.1.129")).any()


# --------------------------------------------------------------------------------------- TON_IoT


def test_ton_iot_network_to_canonical(data_dir: Path) -> None:
    raw = read_frame(data_dir / "ton-iot/network/train_test_network.csv.gz")

    flows = ton_iot_to_canonical(raw)

    _check(flows, labelled=True)
    assert len(flows) == 211_043
    assert (flows["label"] == "malicious").sum() == 161_043
    assert flows["attack_type"].value_counts()["mitm"] == 1_043
    assert (flows["attack_type"] == "benign").sum() == 50_000
    assert flows["ts"].isna().all()  # this release has no timestamps
    assert flows.loc[0, "conn_state"] == "OTH" and flows.loc[0, "src_pkts"] == 108


def test_ton_iot_rejects_other_tables() -> None:
    with pytest.raises(InputError, match="not a TON_IoT network table"):
        ton_iot_to_canonical(pd.DataFrame({"a": [1]}))


# ---------------------------------------------------------------------------------- open_source


@pytest.mark.parametrize(
    ("rel", "kind"),
    [
        (f"{PPA}/synscan.pcapng", PcapSource),
        (f"{SLIPS}/test12-icmp-portscan.pcap", PcapSource),
        ("logs/zeek/slips-test10-mixed/conn.log.gz", ZeekConnSource),
        ("logs/zeek/slips-test9-mixed/conn.log.gz", ZeekConnSource),
        ("logs/zeek/ctu-sme-11-win-excerpt", ZeekConnSource),
        ("logs/suricata/test6-malicious.suricata.json.gz", SuricataEveSource),
    ],
)
def test_open_source_detects_kind(data_dir: Path, rel: str, kind: type) -> None:
    src = open_source(data_dir / rel)

    assert isinstance(src, kind)
    assert isinstance(src, FlowSource)
    batch = next(iter(src.iter_batches(50)))
    assert 0 < len(batch) <= 50
    assert tuple(batch.columns[: len(CANONICAL_COLUMNS)]) == CANONICAL_COLUMNS


def test_open_source_tables(tmp_path: Path, data_dir: Path) -> None:
    canon = read_zeek_conn(data_dir / "logs/zeek/slips-test10-mixed/conn.log.gz")
    pq = tmp_path / "flows.parquet"
    canon.to_parquet(pq)
    ton = tmp_path / "ton.csv"
    pd.read_csv(data_dir / "ton-iot/network/train_test_network.csv.gz", nrows=300, encoding="utf-8-sig").to_csv(
        ton, index=False
    )

    from_pq = read_flows(pq)
    src = open_source(ton)

    assert isinstance(open_source(pq), TableSource)
    pd.testing.assert_frame_equal(from_pq, canon)
    batches = list(src.iter_batches(100))
    assert [len(b) for b in batches] == [100, 100, 100]
    assert set(batches[0].columns[-2:]) == {"label", "attack_type"}


def test_open_source_rejects_unknown_inputs(tmp_path: Path, data_dir: Path) -> None:
    rnd = tmp_path / "random.bin"
    rnd.write_bytes(bytes(range(256)) * 4)
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    kdd = data_dir / "nsl-kdd/KDDTest-21.txt.gz"
    gz_pcap = tmp_path / "x.pcap.gz"
    with gzip.open(gz_pcap, "wb") as fh:
        fh.write((data_dir / SLIPS / "test12-icmp-portscan.pcap").read_bytes())
    nodir = tmp_path / "empty-dir"
    nodir.mkdir()
    other_json = tmp_path / "x.json"
    other_json.write_text('{"a": 1}\n')

    with pytest.raises(InputError, match="random.bin: binary data"):
        open_source(rnd)
    with pytest.raises(InputError, match="empty"):
        open_source(empty)
    with pytest.raises(InputError, match="gzip-compressed capture"):
        open_source(gz_pcap)
    with pytest.raises(InputError, match="holds no conn.log"):
        open_source(nodir)
    with pytest.raises(InputError, match="neither Zeek conn"):
        open_source(other_json)
    with pytest.raises(InputError, match="no such file"):
        open_source(tmp_path / "absent.pcap")
    with pytest.raises(InputError, match="not a flow table"):
        list(open_source(kdd).iter_batches())


def test_zeek_dir_with_rotated_logs(tmp_path: Path, data_dir: Path) -> None:
    for name in ("conn.00:00:00-01:00:00.log.gz", "conn.01:00:00-02:00:00.log.gz"):
        shutil.copy(data_dir / "logs/zeek/slips-test10-mixed/conn.log.gz", tmp_path / name)

    flows = read_flows(tmp_path)

    assert len(flows) == 2 * 141


def test_zeek_iot23_space_joined_label_columns(tmp_path: Path) -> None:
    fields = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
              "orig_bytes", "resp_bytes", "conn_state"]  # fmt: skip
    row = ["1545403816.96", "CrDn63WjJEmrWGjqf", "192.168.1.195", "41040", "185.244.25.235", "80", "tcp", "-",
           "3.139211", "0", "0", "S0"]  # fmt: skip
    log = tmp_path / "conn.log.labeled"
    log.write_text(
        "#separator \\x09\n#unset_field\t-\n#empty_field\t(empty)\n"
        "#fields\t" + "\t".join(fields) + "\ttunnel_parents   label   detailed-label\n"
        + "\t".join(row) + "\t-   Malicious   PartOfAHorizontalPortScan\n"
        + "\t".join(row).replace("CrDn63WjJEmrWGjqf", "C2") + "\t-   Benign   -\n"
    )

    flows = read_zeek_conn(log)

    _check(flows, labelled=True)
    assert flows["label"].tolist() == ["malicious", "benign"]
    assert flows["attack_type"].tolist() == ["PartOfAHorizontalPortScan", "benign"]
    assert flows.loc[0, "conn_state"] == "S0" and np.isnan(flows.loc[0, "syn"])


def test_zeek_json_iso_timestamps(tmp_path: Path) -> None:
    log = tmp_path / "conn.json"
    log.write_text(
        '{"ts":"2020-10-06T15:32:46.785668Z","uid":"C1","id.orig_h":"10.0.0.1","id.orig_p":5,'
        '"id.resp_h":"10.0.0.2","id.resp_p":53,"proto":"udp","conn_state":"SF"}\n'
    )

    flows = read_zeek_conn(log)

    assert flows.loc[0, "ts"] == pytest.approx(1601998366.785668)
    assert flows.loc[0, "service"] == "-" and np.isnan(flows.loc[0, "duration"])


def test_allow_truncated_on_garbage_is_still_a_clean_error(tmp_path: Path) -> None:
    noise = tmp_path / "noise.pcapng"
    noise.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\xff" * 300)

    with pytest.raises(InputError, match="noise.pcapng"):
        read_pcap(noise, allow_truncated=True)


def test_live_mapping_equals_nfstream_dataframe_mapping(data_dir: Path) -> None:
    # Live interfaces use the same nfstream_to_canonical mapping; check it against nfstream's own table.
    from nfstream import NFStreamer

    path = data_dir / PPA / "http_dvwa_sqlinjection.pcapng"
    table = NFStreamer(source=str(path), statistical_analysis=True, n_meters=1, accounting_mode=3).to_pandas()

    mapped = nfstream_to_canonical(table).sort_values("ts").reset_index(drop=True)

    pd.testing.assert_frame_equal(mapped, read_pcap(path))


def test_stopping_early_leaves_no_meter_process(data_dir: Path) -> None:
    import multiprocessing

    batches = iter_pcap(data_dir / PPA / "synscan.pcapng", batch_size=10)
    assert len(next(batches)) == 10

    batches.close()

    assert multiprocessing.active_children() == []


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="live capture needs root")
def test_live_loopback_capture() -> None:
    import socket
    import threading

    from trustmesh.flows import iter_interface

    stop = threading.Event()

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                s.sendto(b"x" * 100, ("127.0.0.1", 39_999))
                stop.wait(0.05)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    flows = iter_interface("lo", 1, bpf_filter="udp and port 39999", idle_timeout=1, active_timeout=1)
    try:
        batch = next(flows)
    finally:
        stop.set()
        flows.close()
        sender.join()

    validate_canonical(batch)
    row = batch.iloc[0]
    assert (row["src_ip"], row["dst_ip"], row["dst_port"], row["proto"]) == ("127.0.0.1", "127.0.0.1", 39_999, "udp")
    assert row["src_pkts"] >= 2 and row["src_bytes"] == 100 * row["src_pkts"]
    assert row["conn_state"] == "S0"  # nothing answers on that port
