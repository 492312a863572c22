"""A contained actor's further flows: scored and counted, summarised per batch, never dropped from the record."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trustmesh.detect import GBDTDetector, load_model, save_model
from trustmesh.flows import CANONICAL_FEATURES, ton_iot_to_canonical
from trustmesh.ledger import Ledger
from trustmesh.pipeline import Pipeline, PipelineConfig
from trustmesh.respond import Guards
from trustmesh.testbed import netns_unavailable

FIRST, SECOND = "10.77.0.5", "10.77.0.6"


@pytest.fixture(scope="module")
def model_and_attacks(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    raw = pd.read_csv(data_dir / "ton-iot/network/train_test_network.csv.gz", encoding="utf-8-sig",
                      low_memory=False).sample(4000, random_state=5)
    flows = ton_iot_to_canonical(raw)
    detector = GBDTDetector(seed=0).fit(flows[list(CANONICAL_FEATURES)], flows["label"].to_numpy())
    path = tmp_path_factory.mktemp("model") / "gbdt.model"
    save_model(detector, path)
    attacks = flows[flows["attack_type"] == "scanning"].reset_index(drop=True)
    return path, attacks.iloc[:300].copy()


@pytest.fixture()
def netns() -> Iterator[str]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    name = f"tm-sup-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=20)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


def _batch(attacks: pd.DataFrame, rows: slice, src: str, tag: str) -> pd.DataFrame:
    frame = attacks.iloc[rows].copy().reset_index(drop=True)
    frame["src_ip"] = src
    frame["uid"] = [f"{tag}-{i}" for i in range(len(frame))]
    frame["ts"] = 1_790_000_000.0 + rows.start + 0.01 * np.arange(len(frame))  # one scan, flow after flow
    return frame


def _blocked(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "set", "inet", "trustmesh", "blocklist"],
                          capture_output=True, text=True, timeout=20).stdout


def test_contained_actor_is_summarised_and_a_new_attacker_still_gets_alert_and_block(
        tmp_path: Path, netns: str, model_and_attacks: tuple[Path, pd.DataFrame]) -> None:
    model, attacks = model_and_attacks
    playbook = tmp_path / "playbook.yaml"
    playbook.write_text("version: 1\nplaybooks:\n  - name: contain\n    match: {min_confidence: 0.5}\n"
                        "    actions:\n      - type: nftables\n        params: {target: source, verdict: drop}\n"
                        "        ttl_s: 120\n", encoding="utf-8")
    cfg = PipelineConfig(ledger_dir=tmp_path / "ledger", state_dir=tmp_path / "state", model=model,
                         playbooks=(playbook,), enforce=True, nft_netns=netns,
                         guards=Guards(min_confidence=0.5, max_blocks_per_minute=1000))
    detector = load_model(model)[0]
    with Pipeline.from_config(cfg) as pipe:
        first = pipe.process(_batch(attacks, slice(0, 60), FIRST, "a"), "test")
        assert first.alerts and not first.suppressed
        applied = [r for _, r in first.records if r["kind"] == "action_result" and r["status"] == "applied"]
        assert applied and {t for r in applied for t in r["targets"]} == {FIRST}
        assert FIRST in _blocked(netns)

        # the contained actor goes on: no alert or responder pass per flow, one summary with the counts
        more = _batch(attacks, slice(60, 160), FIRST, "b")
        hits = np.asarray(detector.score(more, fill_missing=True)) >= detector.threshold
        assert hits.sum() >= 20  # the material really would alert
        second = pipe.process(more, "test")
        assert second.alerts == [] and second.incidents == [] and second.records == []
        assert len(second.suppressed) == 1
        leaf, summary = second.suppressed[0]
        assert summary["actor"] == FIRST and summary["flows"] == len(more)
        assert summary["model_alerts"] == int(hits.sum())
        uids = sorted(more["uid"][hits].tolist())
        if summary["behaviour_alerts"] == 0:
            digest = hashlib.sha256("".join(u + "\n" for u in uids).encode()).hexdigest()
            assert summary["flow_uids_sha256"] == digest and summary["flow_uids"] == len(uids)
        assert summary["first_ts"] == pytest.approx(float(more["ts"].min()))
        assert summary["last_ts"] == pytest.approx(float(more["ts"].max()))

        # a new attacker in the same batch as more of the contained one: its own alerts and its own block
        mixed = pd.concat([_batch(attacks, slice(160, 220), SECOND, "c"),
                           _batch(attacks, slice(220, 260), FIRST, "d")], ignore_index=True)
        third = pipe.process(mixed, "test")
        assert third.alerts and {a.source_ip for _, a in third.alerts} == {SECOND}
        applied = [r for _, r in third.records if r["kind"] == "action_result" and r["status"] == "applied"]
        assert applied and {t for r in applied for t in r["targets"]} == {SECOND}
        assert SECOND in _blocked(netns)
        assert [s["actor"] for _, s in third.suppressed] == [FIRST]
        assert third.suppressed[0][1]["flows"] == 40

        # once the drop is rolled back the actor is no longer contained: its flows alert again
        for incident_id in {r["incident_id"] for _, r in first.records if r["kind"] == "action_result"}:
            pipe.responder.rollback(incident_id)
        pipe.expire_actions()  # records the rollback results on the ledger
        assert FIRST not in _blocked(netns)
        fourth = pipe.process(_batch(attacks, slice(260, 300), FIRST, "e"), "test")
        assert fourth.alerts and not fourth.suppressed
        total = pipe.summary.flows
    assert total == 60 + 100 + 100 + 40  # every flow counted, summarised or not
    ledger = Ledger.open(tmp_path / "ledger")
    try:
        entry = ledger.entry(leaf)
        assert entry.kind == "alert.suppressed" and entry.payload["model_alerts"] == int(hits.sum())
        result_leaf = next(i for i in entry.refs if ledger.entry(i).kind == "action_result")
        assert ledger.entry(result_leaf).payload["targets"] == [FIRST]
    finally:
        ledger.close()
