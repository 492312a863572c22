"""The live meter's fan-out rule (``_early_export_plugin``), on a small capture crafted here.

The capture is written byte by byte (Ethernet / IPv4 / TCP or UDP headers; no payload checks in the
meter) and metered by nfstream with the same plugin a live interface uses, so the rule is tested on
real packets without a network: a scanner whose probes fail (some reset, some never answered), a
UDP prober that is never answered, and a busy but benign client whose connections are all answered.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
import pytest

from trustmesh.detect import BehaviourEngine
from trustmesh.flows import iter_pcap
from trustmesh.flows._pcap import _early_export_plugin, _install_meter_hooks, _iter_streamer, _streamer

SCANNER, UDP_PROBER, CLIENT = "192.0.2.66", "192.0.2.77", "192.0.2.10"
VICTIM, SERVER = "198.51.100.5", "198.51.100.80"
SYN, RST, ACK = 0x02, 0x04, 0x10


def _ip(addr: str) -> bytes:
    return bytes(int(x) for x in addr.split("."))


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, _ip(src), _ip(dst))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + l4


def _tcp(src: str, sport: int, dst: str, dport: int, flags: int, payload: bytes = b"") -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 64240, 0, 0)
    return _frame(src, dst, 6, header + payload)


def _udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"probe") -> bytes:
    return _frame(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def _write(path: Path, packets: list[tuple[float, bytes]]) -> Path:
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, frame in sorted(packets, key=lambda p: p[0]):
            fh.write(struct.pack("<IIII", int(t), int(round((t % 1) * 1e6)), len(frame), len(frame)) + frame)
    return path


def _capture(tmp_path: Path) -> Path:
    t0 = 1_700_000_000.0
    pk: list[tuple[float, bytes]] = []
    for i in range(300):  # a SYN scan: 2 ms apart; odd ports answer RST, even ones are filtered
        t = t0 + 0.002 * i
        pk.append((t, _tcp(SCANNER, 40000, VICTIM, 1000 + i, SYN)))
        if i % 2:
            pk.append((t + 0.0005, _tcp(VICTIM, 1000 + i, SCANNER, 40000, RST | ACK)))
    for i in range(150):  # a UDP prober: 150 ports, 3 ms apart, no answers at all
        pk.append((t0 + 0.1 + 0.003 * i, _udp(UDP_PROBER, 50000, VICTIM, 2000 + i)))
    for i in range(200):  # a busy client: 200 requests in 0.8 s, every one answered
        t = t0 + 0.004 * i
        pk.append((t, _tcp(CLIENT, 30000 + i, SERVER, 443, SYN)))
        pk.append((t + 0.001, _tcp(SERVER, 443, CLIENT, 30000 + i, SYN | ACK)))
        pk.append((t + 0.0015, _tcp(CLIENT, 30000 + i, SERVER, 443, ACK)))
        pk.append((t + 0.002, _tcp(CLIENT, 30000 + i, SERVER, 443, ACK | 0x08, b"GET /%d" % i)))
        pk.append((t + 0.0025, _tcp(SERVER, 443, CLIENT, 30000 + i, ACK | 0x08, b"200 ok")))
    return _write(tmp_path / "fanout.pcap", pk)


def _meter(path: Path, fanout: int | None, cap: int = 1000) -> pd.DataFrame:
    _install_meter_hooks()  # as iter_interface does: the meter's cache order and answer deadlines
    streamer = _streamer(str(path), udps=[_early_export_plugin(cap, fanout)], idle_timeout=120)
    batches = _iter_streamer(streamer, 10_000, str(path))
    try:
        return pd.concat(list(batches), ignore_index=True)
    finally:
        batches.close()


def test_failing_sources_get_first_packet_exports_and_answered_ones_never(tmp_path: Path) -> None:
    # Arrange
    path = _capture(tmp_path)

    # Act
    flows = _meter(path, 32)

    # Assert: the scanner's later probes are one-packet flows (exported at their first packet) and
    # the victim's RSTs that answer them were turned round: every TCP flow of the scan has the
    # scanner as its source, and no port is counted twice as a SYN probe
    scan = flows[(flows["src_ip"] == SCANNER) | (flows["dst_ip"] == SCANNER)]
    assert set(scan["src_ip"]) == {SCANNER}, scan[["src_ip", "dst_ip", "conn_state"]]
    heads = scan[scan["syn"] > 0]
    assert sorted(heads["dst_port"]) == list(range(1000, 1300))  # one flow with the SYN per port
    early = heads[(heads["src_pkts"] == 1) & (heads["dst_pkts"] == 0)]
    assert len(early) >= 200, heads["conn_state"].value_counts()  # the first ~64 waited, the rest did not
    assert (early["conn_state"] == "S0").all()
    tails = scan[scan["syn"] == 0]
    assert len(tails) >= 60 and (tails["src_pkts"] == 0).all() and (tails["dst_pkts"] == 1).all()
    assert len(tails) + (heads["conn_state"] == "REJ").sum() == 150  # each RST once: in its probe or a tail
    # the UDP prober's later datagrams too; the busy client's connections stay whole (5 packets each)
    udp = flows[flows["src_ip"] == UDP_PROBER]
    assert len(udp) == 150 and (udp["src_pkts"] == 1).all()
    client = flows[flows["src_ip"] == CLIENT]
    assert len(client) == 200 and (client["src_pkts"] + client["dst_pkts"] == 5).all()
    assert not ((flows["src_ip"] == SERVER) | (flows["src_ip"] == VICTIM)).any()
    # the filtered probes left at their answer deadline (or first packet), not at the end of the
    # capture with the client's idle connections (the flows come in export order)
    before_client = heads.index < client.index.min()
    assert ((heads["conn_state"] == "S0") & before_client).sum() >= 140, heads[~before_client]


def test_first_packet_flows_are_detected_as_a_scan_and_the_victim_is_not_an_actor(tmp_path: Path) -> None:
    # Arrange
    flows = _meter(_capture(tmp_path), 32)

    # Act
    verdicts = BehaviourEngine().detect(flows)

    # Assert: port scans by the scanner and the UDP prober; nothing against the victim, the server or
    # the benign client
    by_host = {(v.host, v.kind) for v in verdicts}
    assert (SCANNER, "port-scan") in by_host and (UDP_PROBER, "port-scan") in by_host, by_host
    assert {h for h, _ in by_host}.isdisjoint({VICTIM, SERVER, CLIENT}), by_host


def test_the_rule_off_and_the_offline_reader_give_whole_flows(tmp_path: Path) -> None:
    # Arrange
    path = _capture(tmp_path)

    # Act: the plugin without the fan-out rule, and iter_pcap (files never use the plugin)
    off = _meter(path, None)
    gen = iter_pcap(path)
    try:
        offline = pd.concat(list(gen), ignore_index=True)
    finally:
        gen.close()

    # Assert: one flow per probe or connection, RSTs inside their probe's flow (REJ), no tails
    for flows in (off, offline):
        assert len(flows) == 300 + 150 + 200
        scan = flows[flows["src_ip"] == SCANNER]
        assert scan["conn_state"].value_counts().to_dict() == {"REJ": 150, "S0": 150}
        assert not (flows["src_ip"] == VICTIM).any()


@pytest.mark.parametrize("bad", [-1])
def test_a_negative_fanout_is_off(tmp_path: Path, bad: int) -> None:
    # a non-positive fan-out leaves the rule off (the config refuses it before it gets here)
    flows = _meter(_capture(tmp_path), bad)
    assert (flows[flows["src_ip"] == SCANNER]["conn_state"].isin(["REJ", "S0"])).all()


def test_parts_of_a_capped_flow_begun_in_one_millisecond_get_distinct_stable_uids(tmp_path: Path) -> None:
    # Arrange: 1,200 datagrams of one port pair, 0.5 us apart (all in the same millisecond), as a
    # fast sender on loopback makes them; the packet cap is 500
    t0 = 1_700_000_000.0
    path = _write(tmp_path / "burst.pcap",
                  [(t0 + 0.0000005 * i, _udp(CLIENT, 5000, SERVER, 6000)) for i in range(1200)])

    # Act: meter it twice
    first, again = _meter(path, None, 500), _meter(path, None, 500)

    # Assert: parts of 500, 500 and 200 packets, one first-seen millisecond, three distinct uids, and
    # the same uids on the second run (a uid still names the same flow of the same capture)
    assert sorted(first["src_pkts"]) == [200, 500, 500]
    assert first["ts"].nunique() == 1
    assert first["uid"].nunique() == 3 and all(u.startswith("N") and len(u) == 18 for u in first["uid"])
    assert list(first["uid"]) == list(again["uid"])
