"""The dataset registry: every staged public dataset, its files, sha256s, origin and ground truth.

Facts (file names, sha256 of the stored file, row counts, attacker/victim addresses, origins) are taken
from the staging README (``../shared/datasets/README.md``); docs/datasets.md repeats them for users.
Loading a dataset always verifies the sha256 of every file it reads first (cached by device, inode,
ctime, size and mtime, see ``_hashing``: a rewrite with the old mtime restored still changes the
ctime), so a model is never trained on a silently corrupted copy.

Parsed tables are cached as Parquet under ``Settings().cache_dir / "datasets"``, keyed by the sha256
of the input files and a format version; a changed file changes the key, so the cache cannot go stale.
The sidecar JSON records the Parquet file's own sha256, so a damaged cache entry is rebuilt. The cache
directory is trusted like the user's home (whoever can write it can also edit the installed code);
pass ``use_cache=False`` to parse from the verified source files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import pandas as pd

from trustmesh.config import DATA_HINT, find_data_dir, load_settings
from trustmesh.errors import DatasetError, InputError
from trustmesh.flows._hashing import digest_files, sha256_file
from trustmesh.flows._tables import BENIGN, LabelledTable, build_table, clean_frame, read_frame

__all__ = [
    "DATASETS",
    "NSL_KDD_CATEGORIES",
    "NSL_KDD_COLUMNS",
    "DatasetFile",
    "DatasetSpec",
    "FileStatus",
    "GroundTruth",
    "check_dataset",
    "dataset_path",
    "load_dataset",
    "verify_dataset",
]

log = logging.getLogger(__name__)

DatasetKind = Literal["table", "telemetry", "pcap", "zeek", "suricata"]

_CACHE_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class DatasetFile:
    """One stored file: path relative to the data dir, sha256 of the stored bytes, size, rows."""

    path: str
    sha256: str
    size: int
    rows: int | None = None


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Documented ground truth of a capture or log, used to check detections.

    ``attackers`` are the hosts that perform the malicious activity (scanner, brute-forcer, C2
    controller or infected host talking to its C2); ``victims`` the hosts attacked or contacted.
    An empty ``victims`` means "many / random hosts".
    """

    attackers: tuple[str, ...] = ()
    victims: tuple[str, ...] = ()
    attacker_macs: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    benign_hosts: tuple[str, ...] = ()
    behaviour: str = ""
    expected: str = ""
    #: False for link-layer attacks (ARP scan/poisoning) that no IP flow carries: no flow is malicious.
    in_ip_flows: bool = True

    def is_malicious_flow(self, src_ip: str, dst_ip: str, src_port: int = -1, dst_port: int = -1) -> bool:
        """Return True when a flow runs between an attacker and a victim (either direction).

        With ``ports`` documented, the attacker-side flow must also use one of them (as destination or
        source port), so an infected host's own benign DNS/NTP traffic is not counted as the attack.
        Flows to documented ``benign_hosts`` are never malicious.
        """
        a, v = set(self.attackers), set(self.victims)
        if not self.in_ip_flows:
            return False
        if src_ip in self.benign_hosts or dst_ip in self.benign_hosts:
            return False
        if src_ip in a:
            peer_ok = not v or dst_ip in v or dst_ip in a
        elif dst_ip in a:
            peer_ok = not v or src_ip in v
        else:
            return False
        if not peer_ok:
            return False
        if self.ports and dst_port >= 0:
            return dst_port in self.ports or src_port in self.ports
        return True


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """A registered dataset: its files, splits, where to obtain it and (for captures) ground truth."""

    name: str
    kind: DatasetKind
    description: str
    files: tuple[DatasetFile, ...]
    origin: str
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_split: str | None = None
    ground_truth: GroundTruth | None = None
    citation: str = ""

    def files_for(self, split: str | None) -> tuple[DatasetFile, ...]:
        """Return the files a split reads (all files when ``split`` is None and no default exists)."""
        if split is None:
            split = self.default_split
        if split is None:
            return self.files
        if split not in self.splits:
            raise ValueError(
                f"dataset {self.name!r} has no split {split!r}; splits: {', '.join(self.splits) or '(none)'}"
            )
        wanted = set(self.splits[split])
        return tuple(f for f in self.files if f.path in wanted)


@dataclass(frozen=True, slots=True)
class FileStatus:
    """The state of one registered file in a data directory."""

    dataset: str
    path: Path
    expected_sha256: str
    status: Literal["ok", "missing", "corrupted", "unchecked"]
    actual_sha256: str | None
    origin: str

    def problem(self) -> str:
        """Return a one-line description of the problem ('' when ok)."""
        if self.status == "missing":
            return f"{self.path}: missing (dataset {self.dataset}); obtain it from: {self.origin}"
        if self.status == "corrupted":
            return (
                f"{self.path}: sha256 mismatch (dataset {self.dataset}): expected {self.expected_sha256}, "
                f"got {self.actual_sha256}; obtain a good copy from: {self.origin}"
            )
        return ""


# ------------------------------------------------------------------------------------------ registry

NSL_KDD_COLUMNS: tuple[str, ...] = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land", "wrong_fragment",
    "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised", "root_shell", "su_attempted",
    "num_root", "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds",
    "is_host_login", "is_guest_login", "count", "srv_count", "serror_rate", "srv_serror_rate",
    "rerror_rate", "srv_rerror_rate", "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate",
    "dst_host_count", "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate", "label", "difficulty",
)  # fmt: skip

# The usual grouping of NSL-KDD attack names (Tavallaee et al. 2009 and the KDD'99 task description).
# The rare names added in the test set follow the most common assignment in the literature; with it the
# category counts equal those in the staging README (KDDTest+: DoS 7,458, Probe 2,421, R2L 2,754,
# U2R 200). Papers differ for httptunnel/snmp*: here httptunnel is U2R, snmpgetattack/snmpguess R2L.
NSL_KDD_CATEGORIES: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(
            ("back", "land", "neptune", "pod", "smurf", "teardrop", "apache2", "mailbomb", "processtable",
             "udpstorm"), "DoS"),
        **dict.fromkeys(("ipsweep", "nmap", "portsweep", "satan", "mscan", "saint"), "Probe"),
        **dict.fromkeys(
            ("ftp_write", "guess_passwd", "imap", "multihop", "phf", "spy", "warezclient", "warezmaster",
             "named", "sendmail", "snmpgetattack", "snmpguess", "xlock", "xsnoop", "worm"), "R2L"),
        **dict.fromkeys(
            ("buffer_overflow", "loadmodule", "perl", "rootkit", "httptunnel", "ps", "sqlattack", "xterm"),
            "U2R"),
    }
)  # fmt: skip

_SLIPS = (
    "GitHub stratosphereips/StratosphereLinuxIPS (Slips), folder dataset/ "
    "(https://github.com/stratosphereips/StratosphereLinuxIPS); GPL-2.0-only; Stratosphere Lab, CTU Prague"
)
_PPA = (
    "GitHub chrissanders/packets (https://github.com/chrissanders/packets), Chris Sanders, "
    "'Practical Packet Analysis' (No Starch Press)"
)

_TELEMETRY_DEVICES: tuple[tuple[str, str, str, int, int], ...] = (
    ("fridge", "Fridge", "94824f410a1872f94402b6dcc5a0f03e9a55a1ffaa4f984a9b47682ca367f7ce", 149031, 39944),
    ("gps_tracker", "GPS_Tracker", "5296d3919252f4e1f9cd0fb885d4d6d55fd7b85a7053c387e5aeae25c64bdfa3", 535413, 38960),
    ("garage_door", "Garage_Door", "c9b369b0dc267736195d123c2a770a77329f8df6885e59a764b381ea981ec295", 61277, 39587),
    ("modbus", "Modbus", "f26413185ed601f09ff68d81272b7ff2e52aed30ef77864b2811a8a3e4ede9f0", 165386, 31106),
    ("motion_light", "Motion_Light", "f4a988ffbc12805afbe6758ad714b15d31dcd8bcad0b17efff7c14f19d0695d7", 84062, 39488),
    ("thermostat", "Thermostat", "535962ce45627ecb706d8d7b72a2f2ea58407844182b6a29e7ed140d9a917d52", 258968, 32774),
    ("weather", "Weather", "6d44f0478dd19fa1bf4b581a9026442f3f0824086c8504ca17349eeed7381474", 487550, 39260),
)  # fmt: skip


def _pcap(
    name: str, path: str, sha: str, size: int, packets: int, origin: str, gt: GroundTruth, desc: str
) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        kind="pcap",
        description=desc,
        files=(DatasetFile(path, sha, size, None),),
        origin=origin,
        ground_truth=gt,
        citation=f"{packets} packets",
    )


def _build_registry() -> dict[str, DatasetSpec]:
    specs: list[DatasetSpec] = []
    kdd_files = (
        DatasetFile("nsl-kdd/KDDTrain+.txt.gz",
                    "39e78eaceffb1a183af002b4994b100b69795895bfbf67cfc62dabd4c9b76d4e", 2047387, 125973),
        DatasetFile("nsl-kdd/KDDTest+.txt.gz",
                    "1ebe1079af669e3c35ef7be25b5bafde1e47951244d1b4834682b14a22238da1", 373913, 22544),
        DatasetFile("nsl-kdd/KDDTest-21.txt.gz",
                    "cf79d2eab7d8cc749e7c088260c0297cbb26d95062d27d1f8c761f4eeac3327a", 198239, 11850),
        DatasetFile("nsl-kdd/KDDTrain+_20Percent.txt.gz",
                    "fc113da7acc7e3006f0c3bf00c9ba5c052be44b00af3b1951beff90694bf66ff", 410194, 25192),
    )  # fmt: skip
    specs.append(
        DatasetSpec(
            name="nsl-kdd",
            kind="table",
            description="NSL-KDD connection records (41 features, 23/38 attack names, 4 categories)",
            files=kdd_files,
            origin=(
                "Canadian Institute for Cybersecurity, https://www.unb.ca/cic/datasets/nsl.html; staged copy "
                "from GitHub mekkheir/Dataset NSL_KDD.zip @ ac0e7dddad3326d8103f8ae8a3881f3ef2a36b62 "
                "(gzip -9 -n of the .txt files)"
            ),
            splits={
                "train": ("nsl-kdd/KDDTrain+.txt.gz",),
                "test": ("nsl-kdd/KDDTest+.txt.gz",),
                "test-21": ("nsl-kdd/KDDTest-21.txt.gz",),
                "train-20": ("nsl-kdd/KDDTrain+_20Percent.txt.gz",),
            },
            default_split="train",
            citation="Tavallaee et al., 'A Detailed Analysis of the KDD CUP 99 Data Set', IEEE CISDA 2009",
        )
    )
    specs.append(
        DatasetSpec(
            name="unsw-nb15",
            kind="table",
            description="UNSW-NB15 official testing partition (no official split here: stratify yourself)",
            files=(
                DatasetFile(
                    "unsw-nb15/UNSW_NB15_testing-set.csv.gz",
                    "611e2b334b3980ce1a7208a5ca55f751472b9dc47b8382e19b6bf89701ca31f7",
                    3832616,
                    82332,
                ),
            ),
            origin=(
                "UNSW Canberra, https://research.unsw.edu.au/projects/unsw-nb15-dataset "
                "('Training and Testing Sets/UNSW_NB15_testing-set.csv'); staged copy from GitHub "
                "Moe433/Assignment_1 @ 65e21bc9c290ef3edab0e27c011f2e41a63fedce (Kaggle re-upload, renamed)"
            ),
            splits={"test": ("unsw-nb15/UNSW_NB15_testing-set.csv.gz",)},
            default_split="test",
            citation="Moustafa & Slay, 'UNSW-NB15 ...', MilCIS 2015",
        )
    )
    specs.append(
        DatasetSpec(
            name="ton-iot-network",
            kind="table",
            description="TON_IoT Train_Test_Network (211,043 Zeek-derived flows, 10 classes)",
            files=(
                DatasetFile(
                    "ton-iot/network/train_test_network.csv.gz",
                    "208ef72e36aaaa7e73922b7afececde294aacfcb3ce886bdc3e81c5246a028da",
                    1643582,
                    211043,
                ),
            ),
            origin=(
                "UNSW Canberra, https://research.unsw.edu.au/projects/toniot-datasets "
                "(Train_Test_datasets/Train_Test_Network_dataset/train_test_network.csv); staged copy from "
                "GitHub Elenasanzdelgado/Sistema-What-If TON_IoT.zip @ d2d73cc5b09743e57601e0a32b9114242a606ed6"
            ),
            citation="Moustafa, 'Network TON_IoT datasets', Sustainable Cities and Society 72 (2021)",
        )
    )
    specs.append(
        DatasetSpec(
            name="ton-iot-telemetry",
            kind="telemetry",
            description="TON_IoT IoT/IIoT sensor telemetry, one file per device (7 devices); not flows",
            files=tuple(
                DatasetFile(f"ton-iot/iot-telemetry/Train_Test_IoT_{fname}.csv.gz", sha, size, rows)
                for _, fname, sha, size, rows in _TELEMETRY_DEVICES
            ),
            origin=(
                "UNSW Canberra, https://research.unsw.edu.au/projects/toniot-datasets "
                "(Train_Test_datasets/Train_Test_IoT_dataset); staged copy from GitHub robpickerill/ton-iot "
                "@ 18cd41fba18d84e4e85154948cfb318b92547804"
            ),
            splits={
                key: (f"ton-iot/iot-telemetry/Train_Test_IoT_{fname}.csv.gz",)
                for key, fname, _, _, _ in _TELEMETRY_DEVICES
            },
            citation="Alsaedi et al., 'TON_IoT Telemetry Dataset', IEEE Access 8 (2020)",
        )
    )
    base = "pcaps/stratosphere-slips/"
    specs += [
        _pcap("pcap-test7-malicious", base + "test7-malicious.pcap",
              "cd864709778a7449955671315d1ccc3c6694bb120732c6f60fa9ba01e5c962cb", 339844, 2000,
              _SLIPS + " @ 90f2067b5881d60673a2740d2dbc76cdf9c46793",
              GroundTruth(attackers=("192.168.2.16",), ports=(23, 2323, 8080, 9527),
                          benign_hosts=("192.168.2.1", "8.8.8.8"),
                          behaviour="Mirai-style telnet SYN scanning of 137 random public IPs plus benign "
                                    "background (DHCP, NTP, mDNS, DNS, SSH from the gateway)",
                          expected="Slips: >=290 analysed profiles"),
              "IoT botnet scanning from an infected Raspberry Pi, with benign background"),
        _pcap("pcap-test8-arp-scan", base + "test8-malicious.pcap",
              "191da8b6eba7846750df8b8d2dbca9664cabdcce0f51978349de5c764e3e6361", 31513, 534,
              _SLIPS + " @ 90f2067b5881d60673a2740d2dbc76cdf9c46793",
              GroundTruth(attackers=("192.168.1.247",),
                          behaviour="ARP scan of 192.168.1.0/24 (517 requests; ARP is not an IP flow)",
                          in_ip_flows=False,
                          expected="Slips: 'performing an arp scan'"),
              "ARP scan with a few benign QUIC packets"),
        _pcap("pcap-test12-icmp-portscan", base + "test12-icmp-portscan.pcap",
              "10d34605bb8df0dfae615f04a8f17b578eb490d85f49d1fb7e08aed767ce2108", 2170, 37,
              _SLIPS + " @ 42397bb98f047aae8e23f3f2e235e3febcbd61c7",
              GroundTruth(attackers=("192.168.1.109",), behaviour="ICMP echo sweep across 192.168.1.0/24"),
              "ICMP echo sweep"),
        _pcap("pcap-ssh-bruteforce", base + "malicious-ssh-bruteforce.pcap",
              "a57f410ea701bded501b6fdcec255ac29a0bbc04476e85e07ecee259948c95ad", 265964, 1178,
              _SLIPS + " (dataset/test19-malicious-ssh) @ a82669c8864734c83b1273e58805fa9c6f024e4f",
              GroundTruth(attackers=("147.32.80.40",), victims=("147.32.80.37",), ports=(902,),
                          behaviour="nmap -p 902 --script ssh-brute, 1 user x 40 passwords, 67 TCP connections"),
              "SSH brute force"),
        _pcap("pcap-test-cc-beacon", base + "test-cc-capture-2.pcap",
              "03e3e0b3e47fcb8801870fc00fd8f7e8f1924bb5398c4ecf28f811eaaf62cdbc", 264119, 1084,
              _SLIPS + " (dataset/test-cc) @ fe025cdcc5eadf753d9c0d7c675fcd561e5e33b9",
              GroundTruth(attackers=("147.32.80.37",), victims=("141.193.213.20",), ports=(443,),
                          benign_hosts=("147.32.80.9",),
                          behaviour="scripted beaconing: curl https://testing.com every 2-3 s (C2 periodicity test)"),
              "beaconing / C2 periodicity test"),
    ]  # fmt: skip
    base = "pcaps/practical-packet-analysis/"
    specs += [
        _pcap("pcap-synscan", base + "synscan.pcapng",
              "3ef7a9011bcc2901080d3800d52fd5bb5cbcc1aeb8b5943bed3810868400aa58", 185072, 2011,
              _PPA + " @ 8dfc36f3595e0a8497bef8ce929dfa0a6fac08ba",
              GroundTruth(attackers=("172.16.0.8",), victims=("64.13.134.52",),
                          behaviour="nmap-style TCP SYN scan of ~1,000 ports (1,994 SYNs, 12 SYN/ACKs, 5 RSTs)"),
              "TCP SYN port scan"),
        _pcap("pcap-arppoison", base + "arppoison.pcapng",
              "dca79a2a9a454ba03c979ba8c778afa316979471450c448761ec626dc94cf40a", 67860, 165,
              _PPA + " @ 8dfc36f3595e0a8497bef8ce929dfa0a6fac08ba",
              GroundTruth(attackers=("172.16.0.105",), victims=("172.16.0.107", "172.16.0.1"),
                          attacker_macs=("00:25:b3:bf:91:ee",), in_ip_flows=False,
                          behaviour="ARP cache poisoning: attacker MAC claims gateway 172.16.0.1 to victim "
                                    "172.16.0.107 (MAC 00:21:70:c0:56:f0); victim HTTP/DNS then flows via it"),
              "ARP cache poisoning / MITM"),
        _pcap("pcap-http-dvwa-sqli", base + "http_dvwa_sqlinjection.pcapng",
              "09f674a52703aaa23fa73fa47fd2e23030a5649815395dc6c11242e1e01f1102", 10100, 35,
              _PPA + " @ c12d0207cf41ce2caf289aff3994429a91db223a",
              GroundTruth(attackers=("10.2.2.101",), victims=("10.2.2.104",), ports=(80,),
                          behaviour="SQL injection against DVWA over HTTP"),
              "SQL injection against DVWA"),
        _pcap("pcap-ratinfected", base + "ratinfected.pcapng",
              "afa59870b971e72d7df5a42e5d7e1b86cb72ade8ab602482a2495b56bd74e5c6", 585032, 779,
              _PPA + " @ 8dfc36f3595e0a8497bef8ce929dfa0a6fac08ba",
              GroundTruth(attackers=("172.16.0.111",), victims=("172.16.0.114",),
                          ports=(4433, 6641, 6642, 6643, 6644, 6645, 6646, 6647, 6648),
                          behaviour="RAT C2: infected XP host 172.16.0.114 talks to controller 172.16.0.111 "
                                    "on tcp/4433 and 6641-6648 (plaintext 'ANABILGI|...')"),
              "RAT command-and-control"),
        _pcap("pcap-ftp-crack", base + "ftp-crack.pcap",
              "501e6e35317d2d3150eba8f64d0ce90cc6de20a321fe43c4a7b5c5ce0f5f4f21", 1612950, 19730,
              _PPA + " (refs/pull/2/head, unmerged PR) @ 5bf3c579ab13c65e99bdb252308f49a3796a306f",
              # The shared README names 10.121.70.151 as the attacker, but the packets say otherwise:
              # every USER/PASS command (2,810) is sent by 10.234.125.254 to port 21 of 10.121.70.151,
              # and every "530 Login incorrect" (1,410) comes from 10.121.70.151:21. Ground truth here
              # follows the packets.
              GroundTruth(attackers=("10.234.125.254",), victims=("10.121.70.151",), ports=(21,),
                          behaviour="FTP password brute force: 1,404 USER/PASS attempts, 1,410 x 530 "
                                    "(README swaps attacker and server; the payloads show this direction)"),
              "FTP password brute force"),
    ]  # fmt: skip
    zeek = "logs/zeek/"
    specs += [
        DatasetSpec(
            name="zeek-ctu-sme-11",
            kind="zeek",
            description="hand-labelled Zeek conn.log (CTU-SME-11 excerpt, RemcosRAT exfiltration)",
            files=(
                DatasetFile(zeek + "ctu-sme-11-win-excerpt/conn.log.labeled.gz",
                            "ecd099befd3f0f91ff2764f96d9702b1b82d1ec62e4977cc4fc2848430135d24", 23158, 766),
                DatasetFile(zeek + "ctu-sme-11-win-excerpt/dns.log.labeled.gz",
                            "e2b074670119ef8c084178cafd8b3b4b871c3671862840e85e0e6f5fe73f722e", 464, 22),
                DatasetFile(zeek + "ctu-sme-11-win-excerpt/labels.config",
                            "1d5568102430962edd53d49c519a5f3319ec3f4b3d453dcaae1fa028f6e9c15a", 6435, None),
            ),
            origin=_SLIPS + " (dataset/test18-malicious-ctu-sme-11-win) @ da3414b6abf9a42f0abc56787bfd7833a8a031a6;"
            " full capture: CTU-SME-11, Zenodo record 7958259",
            splits={"conn": (zeek + "ctu-sme-11-win-excerpt/conn.log.labeled.gz",)},
            default_split="conn",
            ground_truth=GroundTruth(
                attackers=("192.168.1.107",), victims=("66.63.168.35",),
                behaviour="Malware_data_exfiltration-RemcosRAT: 719 Malicious, 44 Benign, 3 Unknown flows; "
                          "C2 rule for 178.237.33.50 has no flows in this excerpt",
            ),
        ),
        DatasetSpec(
            name="zeek-slips-test9",
            kind="zeek",
            description="Zeek conn.log in JSON lines, mixed traffic from a Windows VM; relative ts; unlabelled",
            files=(DatasetFile(zeek + "slips-test9-mixed/conn.log.gz",
                               "331c5c79021dbf60b0ab0fa272585edea8a1d1571797dc9fd0bf72b86e8ec549", 30120, 576),),
            origin=_SLIPS + " (dataset/test9-mixed-zeek-dir/conn.log) @ a6f7acf2351c1ce808fa642afa99c34eba689fe8",
            ground_truth=GroundTruth(
                attackers=("10.0.2.15",), victims=("194.132.197.198",), ports=(80,),
                behaviour="Windows VM 10.0.2.15 (VirtualBox NAT) with mixed benign and malicious traffic",
                expected="Slips: non-HTTP established connection to port 80, destination IP 194.132.197.198",
            ),
        ),
        DatasetSpec(
            name="zeek-slips-test10",
            kind="zeek",
            description="Zeek conn.log TSV (stray leading TAB quirk), CTU network 2020-10-06; unlabelled",
            files=(DatasetFile(zeek + "slips-test10-mixed/conn.log.gz",
                               "de53cd6942292f90e636b015d4eb710b8bbc6968dbc038c26b445466e28e58a1", 5660, 141),),
            origin=_SLIPS + " (dataset/test10-mixed-zeek-dir/conn.log) @ 813159f064359313850847f53e0890ae7b85d983",
            ground_truth=GroundTruth(expected="Slips: non-SSL established connection"),
        ),
        DatasetSpec(
            name="suricata-test6",
            kind="suricata",
            description="Suricata EVE JSON, 5,000 events (3,512 flow) from an internet-exposed host; unlabelled",
            files=(DatasetFile("logs/suricata/test6-malicious.suricata.json.gz",
                               "fa3ca9eba0c139b15775fd6b2f3bef8855d9fa4dcf3ccdb7afed72da479f85cb", 206219, 5000),),
            origin=_SLIPS + " (dataset/test6-malicious.suricata.json) @ f236d2e935f8a46814924d5fa606dce04d468832",
            ground_truth=GroundTruth(
                victims=("192.168.1.129", "192.168.1.132"), ports=(1433,),
                behaviour="mostly inbound scanning of 192.168.1.129 / 192.168.1.132 (e.g. MSSQL 1433) from "
                          "many poor-reputation IPs",
                expected="Slips: vertical port scan; connection to unknown destination port; "
                         "connecting to private IP",
            ),
        ),
    ]  # fmt: skip
    return {s.name: s for s in specs}


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(_build_registry())


# ------------------------------------------------------------------------------------- verification


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def _resolve_dir(data_dir: Path | str | None) -> Path:
    found = find_data_dir(data_dir)
    if found is None:
        raise DatasetError(f"no dataset directory found; {DATA_HINT}")
    return found


def dataset_path(name: str, data_dir: Path | str | None = None, split: str | None = None) -> Path:
    """Return the path of a single-file dataset (or split), verified. Used for pcaps and logs."""
    spec = _spec(name)
    files = spec.files_for(split)
    paths = verify_dataset(name, data_dir, split=split)
    if len(files) != 1:
        raise InputError(f"dataset {name!r} has {len(files)} files; name a split ({', '.join(spec.splits)})")
    return paths[0]


def check_dataset(
    name: str, data_dir: Path | str | None = None, *, split: str | None = None, hash_files: bool = True,
    full: bool = False,
) -> list[FileStatus]:
    """Return the status of every file of a dataset (never raises for missing/corrupted files).

    ``full=True`` rehashes every file, ignoring the hash cache.
    """
    spec = _spec(name)
    root = _resolve_dir(data_dir)
    out: list[FileStatus] = []
    for f in spec.files_for(split) if split is not None else spec.files:
        p = root / f.path
        if not p.is_file():
            out.append(FileStatus(name, p, f.sha256, "missing", None, spec.origin))
            continue
        if not hash_files:
            out.append(FileStatus(name, p, f.sha256, "unchecked", None, spec.origin))
            continue
        actual = sha256_file(p, full=full)
        status: Literal["ok", "corrupted"] = "ok" if actual == f.sha256 else "corrupted"
        out.append(FileStatus(name, p, f.sha256, status, actual, spec.origin))
    return out


def verify_dataset(name: str, data_dir: Path | str | None = None, *, split: str | None = None) -> tuple[Path, ...]:
    """Verify the sha256 of every file of a dataset (or one split); return the verified paths.

    Raises ``DatasetError`` naming each missing or corrupted file, expected vs actual sha256, and
    where to obtain a good copy. Hashes are cached by (device, inode, ctime, size, mtime), so repeated
    calls on unchanged files do not rehash; any write to a file (even one that restores its mtime)
    changes its ctime and forces a rehash.
    """
    statuses = check_dataset(name, data_dir, split=split)
    problems = [s.problem() for s in statuses if s.status != "ok"]
    if problems:
        raise DatasetError("; ".join(problems))
    return tuple(s.path for s in statuses)


# ------------------------------------------------------------------------------------------ loading


def _cache_paths(key: str) -> tuple[Path, Path] | None:
    try:
        base = load_settings().cache_dir / "datasets"
    except Exception:  # a bad setting disables the cache; loading still works
        return None
    return base / f"{key}.parquet", base / f"{key}.json"


def _cache_load(key: str, name: str, files: tuple[Path, ...], digest: str) -> LabelledTable | None:
    paths = _cache_paths(key)
    if paths is None or not paths[0].is_file() or not paths[1].is_file():
        return None
    try:
        meta = json.loads(paths[1].read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            return None
        frame = pd.read_parquet(paths[0])
    except Exception as exc:  # a damaged cache entry is ignored and rebuilt
        log.info("ignoring damaged dataset cache %s: %s", paths[0], exc)
        return None
    if (
        meta.get("digest") != digest
        or len(frame) != meta.get("rows")
        or meta.get("parquet_sha256") != sha256_file(paths[0])
    ):
        return None
    labels = frame.pop("__label__").astype(str)
    is_attack = frame.pop("__is_attack__").to_numpy(dtype=bool)
    cat = frame.pop("__category__").astype(str) if "__category__" in frame.columns else None
    return LabelledTable(
        name=name, features=frame, labels=labels, is_attack=is_attack,
        dropped_columns=tuple(meta["dropped_columns"]), files=files, digest=digest, attack_category=cat,
    )  # fmt: skip


def _cache_store(key: str, table: LabelledTable) -> None:
    paths = _cache_paths(key)
    if paths is None:
        return
    frame = table.features.copy()
    frame["__label__"] = table.labels.to_numpy()
    frame["__is_attack__"] = table.is_attack
    if table.attack_category is not None:
        frame["__category__"] = table.attack_category.to_numpy()
    meta: dict[str, Any] = {"digest": table.digest, "rows": len(table), "dropped_columns": list(table.dropped_columns)}
    try:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        tmp = paths[0].with_suffix(f".{os.getpid()}.tmp")
        frame.to_parquet(tmp, index=False)
        meta["parquet_sha256"] = sha256_file(tmp)
        os.replace(tmp, paths[0])
        tmp_meta = paths[1].with_suffix(f".{os.getpid()}.tmp")
        tmp_meta.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp_meta, paths[1])
    except Exception as exc:  # read-only cache dir, or a type pyarrow cannot store: skip caching
        log.info("cannot cache dataset %s: %s", key, exc)


def _load_nsl_kdd(paths: tuple[Path, ...], name: str, digest: str) -> LabelledTable:
    df = pd.concat([read_frame(p, names=NSL_KDD_COLUMNS) for p in paths], ignore_index=True)
    df = clean_frame(df)
    table = build_table(
        df, name=name, files=paths, label_column="label", benign_label="normal",
        extra_drop=("difficulty",), drop_identifiers=False, digest=digest,
    )  # fmt: skip
    unknown = sorted(set(table.labels.unique()) - set(NSL_KDD_CATEGORIES) - {BENIGN})
    if unknown:
        raise InputError(f"{paths[0]}: NSL-KDD labels without a category: {', '.join(unknown)}")
    cat = table.labels.map(lambda v: NSL_KDD_CATEGORIES.get(v, BENIGN)).astype(str)
    return LabelledTable(
        name=table.name, features=table.features, labels=table.labels, is_attack=table.is_attack,
        dropped_columns=table.dropped_columns, files=table.files, digest=table.digest, attack_category=cat,
    )  # fmt: skip


def _load_telemetry(paths: tuple[Path, ...], name: str, digest: str, keys: dict[Path, str]) -> LabelledTable:
    frames = []
    for p in paths:
        df = clean_frame(read_frame(p))
        if len(paths) > 1:
            df.insert(0, "device", keys[p])
        frames.append(df)
    df = pd.concat(frames, ignore_index=True, sort=False) if len(frames) > 1 else frames[0]
    return build_table(
        df, name=name, files=paths, label_column="type", benign_label="normal", digest=digest,
    )  # fmt: skip


def load_dataset(
    name: str, split: str | None = None, data_dir: Path | str | None = None, *, use_cache: bool = True
) -> LabelledTable:
    """Verify and load a registered labelled dataset as a ``LabelledTable``.

    * ``nsl-kdd``: splits ``train`` (default), ``test``, ``test-21``, ``train-20``; ``labels`` are the
      attack names, ``attack_category`` the DoS/Probe/R2L/U2R grouping (``NSL_KDD_CATEGORIES``);
      ``difficulty`` is dropped (it is derived from classifier agreement, not from traffic).
    * ``unsw-nb15``: the official testing partition (split ``test``); ``id`` dropped; labels from
      ``attack_cat``. There is no official split here: stratify it yourself.
    * ``ton-iot-network``: labels from ``type``; ``src_ip, src_port, dst_ip`` (identifiers) dropped.
    * ``ton-iot-telemetry``: split = device (``fridge``, ``gps_tracker``, ``garage_door``, ``modbus``,
      ``motion_light``, ``thermostat``, ``weather``) or None for all devices (union of sensor columns,
      plus a ``device`` column); ``date``/``time`` dropped.
    * ``zeek-ctu-sme-11``: the labelled conn.log in the canonical flow schema (Benign/Malicious labels).
    * pcap/log entries without labels: flows in the canonical schema labelled from the documented
      ground truth (a flow between a documented attacker and victim is ``"attack"``).

    Every file is sha256-verified first (``DatasetError`` if missing or corrupted). Parsed tables are
    cached as Parquet under ``Settings().cache_dir/datasets`` keyed by the files' digest.
    """
    spec = _spec(name)
    files = spec.files_for(split)
    used_split = split if split is not None else spec.default_split
    verify_dataset(name, data_dir, split=used_split)
    root = _resolve_dir(data_dir)
    by_rel = {root / f.path: f for f in files}
    paths = tuple(sorted(by_rel, key=str))
    digest = digest_files(paths)
    table_name = f"{name}:{used_split}" if used_split else name
    key = f"{name}-{used_split or 'all'}-{digest[:32]}-{_CACHE_VERSION}"
    if use_cache:
        cached = _cache_load(key, table_name, paths, digest)
        if cached is not None:
            return cached
    if name == "nsl-kdd":
        table = _load_nsl_kdd(paths, table_name, digest)
    elif spec.kind == "table":
        raw = clean_frame(pd.concat([read_frame(p) for p in paths], ignore_index=True))
        if name == "unsw-nb15":
            table = build_table(raw, name=table_name, files=paths, label_column="attack_cat",
                                benign_label="Normal", digest=digest)  # fmt: skip
        else:  # ton-iot-network
            table = build_table(raw, name=table_name, files=paths, label_column="type",
                                benign_label="normal", digest=digest)  # fmt: skip
    elif spec.kind == "telemetry":
        keys = {root / spec.splits[k][0]: k for k in spec.splits}
        table = _load_telemetry(paths, table_name, digest, keys)
    else:
        from trustmesh.flows._labelled_flows import flows_table

        table = flows_table(spec, paths, table_name, digest)
    if use_cache:
        _cache_store(key, table)
    return table
