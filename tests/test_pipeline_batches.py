"""Alerts of a batch go to the ledger together (one append per kind and batch) and every one verifies."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from trustmesh.ledger import Ledger, audit, verify_inclusion
from trustmesh.pipeline import Pipeline, PipelineConfig, open_sources

from _ton_models import ton_gbdt  # type: ignore[import-not-found]

EVE = "logs/suricata/test6-malicious.suricata.json.gz"


@pytest.fixture(scope="module")
def model_path(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ton_gbdt(data_dir, tmp_path_factory.mktemp("model"), 2000, 2)


def test_every_alert_of_a_batch_lands_in_one_append_and_verifies(tmp_path: Path, model_path: Path,
                                                               data_dir: Path) -> None:
    lines = gzip.open(data_dir / EVE, "rt", encoding="utf-8").read().splitlines()[:1500]
    (tmp_path / "eve.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = PipelineConfig(ledger_dir=tmp_path / "ledger", state_dir=tmp_path / "state", model=model_path,
                         batch_size=4096)
    pipe = Pipeline.from_config(cfg)
    calls: list[list[str]] = []  # the entry kinds of each durable append
    real_append = pipe.ledger.append

    def spy(entries: Any, **kw: Any) -> list[int]:
        calls.append([e.kind for e in entries])
        return real_append(entries, **kw)

    pipe.ledger.append = spy  # type: ignore[method-assign]
    alerted: list[tuple[int, str]] = []
    pipe.run(open_sources([str(tmp_path / "eve.json")], cfg),
             on_batch=lambda _n, out: alerted.extend((i, a.alert_id) for i, a in out.alerts))
    summary = pipe.close()

    assert summary.alerts == len(alerted) > 100 and not summary.errors
    alert_calls = [c for c in calls if "alert" in c]
    # the model's and the signatures' alerts: one append each (not one per alert)
    assert len(alert_calls) <= 2 and sum(len(c) for c in alert_calls) == len(alerted)
    assert len(calls) < 20, "a handful of transactions for the whole file"
    assert audit(tmp_path / "ledger").size == summary.last_index + 1
    with Ledger.open(tmp_path / "ledger", read_only=True) as led:
        cp = led.latest_checkpoint()
        assert cp is not None and cp.size == led.size
        cp.verify(led.verifier)
        for index, alert_id in alerted:
            entry = led.entry(index)
            assert entry.kind == "alert" and entry.payload["trustmesh"]["alert_id"] == alert_id
            verify_inclusion(led.prove_inclusion(index, cp.size), cp, led.entry_bytes(index))
    assert len({a for _, a in alerted}) == len(alerted), "no alert recorded twice"
