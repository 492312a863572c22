"""Flow sources, the canonical flow schema, the dataset registry and labelled-table loaders.

Sources (pcap/pcapng and live interfaces via nfstream, Zeek conn.log, Suricata EVE, flow tables) all
yield DataFrames with exactly ``CANONICAL_COLUMNS`` (docs/flow-schema.md). ``load_dataset`` loads a
registered public dataset after verifying every file's sha256; ``load_table`` loads any labelled
CSV/Parquet table (docs/datasets.md).
"""

from __future__ import annotations

from trustmesh.flows._connstate import derive_conn_state
from trustmesh.flows._datasets import (
    DATASETS,
    NSL_KDD_CATEGORIES,
    NSL_KDD_COLUMNS,
    DatasetFile,
    DatasetSpec,
    FileStatus,
    GroundTruth,
    check_dataset,
    dataset_path,
    load_dataset,
    verify_dataset,
)
from trustmesh.flows._features import FeatureEncoder
from trustmesh.flows._pcap import check_capture, iter_interface, iter_pcap, nfstream_to_canonical, read_pcap
from trustmesh.flows._records import BadRecord, BadRecordHandler, BadRecordLog
from trustmesh.flows._redis import RedisStreamSource, parse_redis_spec
from trustmesh.flows._open import LazySource
from trustmesh.flows._schema import (
    CANONICAL_COLUMNS,
    CANONICAL_DTYPES,
    CANONICAL_FEATURES,
    CATEGORICAL_FEATURES,
    IDENTIFIER_COLUMNS,
    LABEL_COLUMNS,
    empty_canonical,
    to_canonical,
    validate_canonical,
)
from trustmesh.flows._sources import (
    FlowSource,
    InterfaceSource,
    PcapSource,
    SuricataEveSource,
    TableSource,
    ZeekConnSource,
    detect_kind,
    follow_source,
    open_source,
    read_flows,
)
from trustmesh.flows._suricata import follow_suricata_eve, iter_suricata_eve, read_suricata_eve
from trustmesh.flows._suricata_alerts import (
    SURICATA_MODEL_ID,
    eve_alert,
    fuse_signature,
    fused_eve_alerts,
    iter_eve_alerts,
    technique_for_signature,
)
from trustmesh.flows._tables import LabelledTable, load_table
from trustmesh.flows._ton import ton_iot_to_canonical
from trustmesh.flows._zeek import follow_zeek_conn, iter_zeek_conn, read_zeek_conn

__all__ = [
    "BadRecord",
    "BadRecordHandler",
    "BadRecordLog",
    "CANONICAL_COLUMNS",
    "CANONICAL_DTYPES",
    "CANONICAL_FEATURES",
    "CATEGORICAL_FEATURES",
    "DATASETS",
    "DatasetFile",
    "DatasetSpec",
    "FeatureEncoder",
    "FileStatus",
    "FlowSource",
    "GroundTruth",
    "IDENTIFIER_COLUMNS",
    "InterfaceSource",
    "LABEL_COLUMNS",
    "LabelledTable",
    "LazySource",
    "NSL_KDD_CATEGORIES",
    "NSL_KDD_COLUMNS",
    "PcapSource",
    "RedisStreamSource",
    "SURICATA_MODEL_ID",
    "SuricataEveSource",
    "TableSource",
    "ZeekConnSource",
    "check_capture",
    "check_dataset",
    "dataset_path",
    "derive_conn_state",
    "detect_kind",
    "empty_canonical",
    "eve_alert",
    "follow_source",
    "follow_suricata_eve",
    "follow_zeek_conn",
    "fuse_signature",
    "fused_eve_alerts",
    "iter_eve_alerts",
    "iter_interface",
    "iter_pcap",
    "iter_suricata_eve",
    "iter_zeek_conn",
    "load_dataset",
    "load_table",
    "nfstream_to_canonical",
    "open_source",
    "parse_redis_spec",
    "read_flows",
    "read_pcap",
    "read_suricata_eve",
    "read_zeek_conn",
    "technique_for_signature",
    "to_canonical",
    "ton_iot_to_canonical",
    "validate_canonical",
    "verify_dataset",
]
