"""One bad record never stops a run: it is skipped, recorded as pipeline.error (FILE:LINE, field)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from trustmesh.detect import GBDTDetector, save_model
from trustmesh.flows import CANONICAL_FEATURES, ton_iot_to_canonical
from trustmesh.ledger import Ledger, audit
from trustmesh.pipeline import Pipeline, PipelineConfig, open_sources


@pytest.fixture(scope="module")
def small_model(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = pd.read_csv(data_dir / "ton-iot/network/train_test_network.csv.gz", encoding="utf-8-sig",
                      low_memory=False).sample(3000, random_state=3)
    flows = ton_iot_to_canonical(raw)
    det = GBDTDetector(seed=0).fit(flows[list(CANONICAL_FEATURES)], flows["label"].to_numpy() != "benign")
    path = tmp_path_factory.mktemp("model") / "gbdt.model"
    save_model(det, path)
    return path


def test_bad_records_are_ledger_errors_and_every_source_is_read(tmp_path: Path, small_model: Path,
                                                                data_dir: Path) -> None:
    with gzip.open(data_dir / "logs/zeek/slips-test10-mixed/conn.log.gz", "rt", encoding="utf-8") as fh:
        text = fh.read().splitlines()
    data_rows = [i for i, ln in enumerate(text) if ln.strip() and not ln.lstrip().startswith("#")]
    # corrupt three records: a port of 1e400, one of inf, and a negative responder port
    for row, col, value in ((data_rows[3], 3, "1e400"), (data_rows[10], 3, "inf"), (data_rows[20], 5, "-80")):
        parts = text[row].split("\t")
        parts[col] = value
        text[row] = "\t".join(parts)
    bad_log = tmp_path / "conn.log"
    bad_log.write_text("\n".join(text) + "\n")
    eve_lines = gzip.open(data_dir / "logs/suricata/test6-malicious.suricata.json.gz", "rt",
                          encoding="utf-8").read().splitlines()[:200]
    n_eve_flows = sum(json.loads(ln)["event_type"] == "flow" for ln in eve_lines)
    eve = tmp_path / "eve.json"
    eve.write_text("\n".join([eve_lines[0], '{"event_type": "flow", "flow": {"start": ' + "[" * 4000 + "]" * 4000
                              + "}}", *eve_lines[1:]]) + "\n")

    cfg = PipelineConfig(ledger_dir=tmp_path / "ledger", state_dir=tmp_path / "state", model=small_model,
                         batch_size=64)
    pipeline = Pipeline.from_config(cfg)
    pipeline.run(open_sources([str(bad_log), str(eve)], cfg))
    summary = pipeline.close()

    assert summary.flows == len(data_rows) - 3 + n_eve_flows  # both sources read to the end
    with Ledger.open(tmp_path / "ledger", read_only=True) as ledger:
        errors = [ledger.entry(i).payload for i in range(ledger.size) if ledger.entry(i).kind == "pipeline.error"]
    skipped = [(Path(e["file"]).name, e["line"], e["field"]) for e in errors if "skipped bad record" in e["message"]]
    assert skipped == [("conn.log", data_rows[3] + 1, "src_port"), ("conn.log", data_rows[10] + 1, "src_port"),
                       ("conn.log", data_rows[20] + 1, "dst_port"), ("eve.json", 2, None)]
    assert all(f"{e['file']}:{e['line']}" in e["message"] for e in errors if "skipped" in e["message"])
    audit(tmp_path / "ledger")
