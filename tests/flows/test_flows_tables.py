"""load_table on messy real-world table shapes: BOM, CRLF, repeated headers, inf/NaN, globs, errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustmesh.errors import InputError
from trustmesh.flows import LabelledTable, load_table

CIC_HEADER = "Flow ID, Source IP, Source Port, Destination IP, Destination Port, Timestamp, Flow Duration, Flow Bytes/s, Label"


def _cic_rows(n: int, label: str, start: int = 0) -> list[str]:
    return [
        f"10.0.0.{i % 5}-10.0.1.1-{1000 + i}-80-6,10.0.0.{i % 5},{1000 + i},10.0.1.1,80,"
        f"3/7/2017 8:{i % 60:02d},{100 + i},{(i + 1) * 2.5},{label}"
        for i in range(start, start + n)
    ]


def test_cic_style_csv_bom_crlf_repeated_header_inf(tmp_path: Path) -> None:
    lines = [CIC_HEADER, *_cic_rows(5, "BENIGN"), CIC_HEADER, *_cic_rows(4, "DDoS", 5)]
    lines[3] = lines[3].rsplit(",", 2)[0] + ",Infinity,BENIGN"
    lines[4] = lines[4].rsplit(",", 2)[0] + ",NaN,BENIGN"
    path = tmp_path / "cic.csv"
    path.write_bytes("\ufeff".encode() + "\r\n".join(lines).encode() + b"\r\n")

    table = load_table(path)

    assert len(table) == 9  # the repeated header row is gone
    assert table.labels.value_counts().to_dict() == {"benign": 5, "DDoS": 4}
    assert table.is_attack.sum() == 4 and table.is_attack.dtype == np.bool_
    assert list(table.features.columns) == ["Destination Port", "Flow Duration", "Flow Bytes/s"]
    assert set(table.dropped_columns) == {"Label", "Flow ID", "Source IP", "Source Port", "Destination IP",
                                          "Timestamp"}  # fmt: skip
    assert table.features["Flow Duration"].dtype == np.int64
    rate = table.features["Flow Bytes/s"]
    assert rate.dtype == np.float64 and rate.isna().sum() == 2 and np.isfinite(rate.dropna()).all()
    assert len(table.digest) == 64


def test_multiclass_column_preferred_over_binary(tmp_path: Path) -> None:
    df = pd.DataFrame({"dur": [1.0, 2.0, 3.0, 4.0], "attack_cat": ["Normal", "DoS", "Exploits", "Normal"],
                       "label": [0, 1, 1, 0]})  # fmt: skip
    df.to_csv(tmp_path / "t.csv", index=False)

    table = load_table(tmp_path / "t.csv")

    assert table.labels.tolist() == ["benign", "DoS", "Exploits", "benign"]
    assert table.is_attack.tolist() == [False, True, True, False]
    assert list(table.features.columns) == ["dur"]  # binary label dropped too: it would leak
    assert set(table.dropped_columns) == {"attack_cat", "label"}


def test_binary_only_label_and_explicit_options(tmp_path: Path) -> None:
    df = pd.DataFrame({"x": [1, 2, 3], "y": [0.5, 0.1, 0.2], "malicious": [0, 1, 0], "src_port": [1, 2, 3],
                       "id": [7, 8, 9]})  # fmt: skip
    df.to_csv(tmp_path / "b.csv", index=False)

    auto = load_table(tmp_path / "b.csv")
    kept = load_table(tmp_path / "b.csv", keep_columns=("src_port",))
    custom = load_table(tmp_path / "b.csv", label_column="x", benign_label=2)

    assert auto.labels.tolist() == ["benign", "attack", "benign"]
    assert set(auto.dropped_columns) == {"malicious", "src_port", "id"}
    assert "src_port" in kept.features.columns and "src_port" not in kept.dropped_columns
    assert custom.is_attack.tolist() == [True, False, True]
    assert list(custom.features.columns) == ["y"]  # the chosen label and every label-like column go
    with pytest.raises(InputError, match="keep_columns not in the table: nope"):
        load_table(tmp_path / "b.csv", keep_columns=("nope",))
    with pytest.raises(InputError, match="benign_label 'zzz' not found"):
        load_table(tmp_path / "b.csv", benign_label="zzz")


def test_ip_valued_columns_are_dropped_whatever_their_name(tmp_path: Path) -> None:
    df = pd.DataFrame({"peer": ["192.168.1.1", "fe80::1", "10.0.0.2"], "bytes": [1, 2, 3],
                       "class": ["normal", "scan", "scan"]})  # fmt: skip
    df.to_csv(tmp_path / "ip.csv", index=False)

    table = load_table(tmp_path / "ip.csv")

    assert "peer" in table.dropped_columns and list(table.features.columns) == ["bytes"]


def test_mixed_types_stay_text_and_spaces_are_stripped(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(" a , b ,label \n1, x ,normal\n2,3,attack\n-,4,normal\n")

    table = load_table(tmp_path / "m.csv")

    assert list(table.features.columns) == ["a", "b"]
    assert table.features["a"].dtype == np.float64 and np.isnan(table.features["a"][2])
    assert table.features["b"].tolist() == ["x", "3", "4"]


def test_glob_dir_gzip_and_parquet(tmp_path: Path) -> None:
    d = tmp_path / "many"
    d.mkdir()
    header = "Flow Duration,Label"
    (d / "mon.csv").write_text("\n".join([header, "1,BENIGN", "2,PortScan"]) + "\n")
    with gzip.open(d / "tue.csv.gz", "wt") as fh:
        fh.write("\n".join([header, "3,BENIGN", "4,DoS Hulk"]) + "\n")
    pd.DataFrame({"Flow Duration": [5], "Label": ["BENIGN"]}).to_parquet(d / "wed.parquet")

    by_dir = load_table(d)
    by_glob = load_table(str(d / "*.csv*"))
    by_pq = load_table(d / "wed.parquet")

    assert len(by_dir) == 5 and len(by_dir.files) == 3
    assert sorted(by_dir.features["Flow Duration"]) == [1, 2, 3, 4, 5]
    assert len(by_glob) == 4 and by_glob.digest != by_dir.digest
    assert by_pq.labels.tolist() == ["benign"]


def test_subset_by_positions_and_mask(tmp_path: Path) -> None:
    pd.DataFrame({"x": range(6), "label": ["normal", "a", "b"] * 2}).to_csv(tmp_path / "s.csv", index=False)
    table = load_table(tmp_path / "s.csv")

    part = table.subset(np.array([1, 4]))
    masked = table.subset(table.is_attack)

    assert isinstance(part, LabelledTable)
    assert part.features["x"].tolist() == [1, 4] and part.labels.tolist() == ["a", "a"]
    assert part.features.index.tolist() == [0, 1]
    assert masked.is_attack.all() and len(masked) == 4
    assert part.digest == table.digest and part.files == table.files
    with pytest.raises(ValueError, match="boolean mask has length"):
        table.subset(np.array([True]))


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "file is empty"),
        (b"a,b,label\n", "no data rows"),
        (b"\x00\x01\x02binary\xff" * 50, "binary data"),
        (b"PAR1garbagegarbagePAR1", "unreadable Parquet"),
        (b"\x1f\x8b\x08\x00garbage", "gzip"),
        (b"x,y\n1,2\n", "no label column found .*columns are: x, y"),
        (b"x,label\n1,foo\n2,bar\n", "cannot tell the benign class"),
    ],
)
def test_bad_tables_raise_input_error_naming_file(tmp_path: Path, content: bytes, pattern: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)

    with pytest.raises(InputError, match=f"bad.csv.*{pattern}"):
        load_table(path)


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="glob matches no files"):
        load_table(str(tmp_path / "*.csv"))
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="holds no CSV"):
        load_table(tmp_path / "d")


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-(10**9), 10**9),
        min_size=2, max_size=30,
    ),
    bom=st.booleans(),
    crlf=st.booleans(),
)
def test_numeric_columns_round_trip(tmp_path_factory: pytest.TempPathFactory, values: list[float],
                                    bom: bool, crlf: bool) -> None:  # fmt: skip
    labels = ["normal" if i % 2 else "attack" for i in range(len(values))]
    text = "v,label\n" + "".join(f"{v!r},{lab}\n" for v, lab in zip(values, labels, strict=True))
    if crlf:
        text = text.replace("\n", "\r\n")
    path = tmp_path_factory.mktemp("rt") / "t.csv"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())

    table = load_table(path)

    assert np.allclose(table.features["v"].to_numpy(dtype=float), np.asarray(values, dtype=float), rtol=1e-12)
    assert table.is_attack.tolist() == [lab == "attack" for lab in labels]
