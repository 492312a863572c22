"""Idempotency keys on every append path: a retry returns the original indices and appends nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from _ledger_helpers import ORIGIN, make_entries

from trustmesh.errors import InputError
from trustmesh.ledger import Entry, Ledger, audit


def test_retry_with_the_same_key_returns_the_original_indices(ledger_dir: Path) -> None:
    with Ledger.create(ledger_dir, ORIGIN) as led:
        led.append(make_entries(5))
        first = led.append([Entry("alert", {"n": i}) for i in range(3)], idempotency_key="req-1")
        one = led.append_one("incident", {"x": 1}, refs=[5], idempotency_key="req-2")
    with Ledger.open(ledger_dir) as led:  # a fresh handle, as after a restart
        # the retry is stamped with new times: still the same request
        again = led.append([Entry("alert", {"n": i}) for i in range(3)], idempotency_key="req-1")
        assert again == first == [5, 6, 7]
        assert led.append_one("incident", {"x": 1}, refs=[5], idempotency_key="req-2") == one == 8
        assert led.size == 9
        with pytest.raises(InputError, match="already used for a different request"):
            led.append([Entry("alert", {"n": 99})], idempotency_key="req-1")
        with pytest.raises(InputError, match="idempotency key must be"):
            led.append([Entry("alert", {"n": 1})], idempotency_key="has space")
        assert led.append([Entry("alert", {"n": 1})], idempotency_key="req-3") == [9]
        led.checkpoint()
    assert audit(ledger_dir).size == 10


def test_read_only_open_of_a_ledger_with_keys_still_audits(ledger_dir: Path) -> None:
    with Ledger.create(ledger_dir, ORIGIN) as led:
        led.append(make_entries(3), idempotency_key="k")
        led.checkpoint()
    with Ledger.open(ledger_dir, read_only=True) as ro:
        assert ro.size == 3
    assert audit(ledger_dir).checkpoints_verified == 1
