"""Redis stream source specs: parsed into their parts, refused by name when wrong, no password shown."""

from __future__ import annotations

import pytest

from trustmesh.errors import InputError
from trustmesh.flows import parse_redis_spec


def test_spec_parts_and_a_name_without_password_or_consumer() -> None:
    spec = parse_redis_spec("redis://:s3cret@10.0.0.5:6380/2/suricata?group=tm&consumer=w1&claim_idle_ms=500")
    assert (spec.host, spec.port, spec.db, spec.stream, spec.group, spec.consumer) == (
        "10.0.0.5", 6380, 2, "suricata", "tm", "w1")
    assert spec.password == "s3cret" and spec.claim_idle_ms == 500
    assert "s3cret" not in spec.name and "w1" not in spec.name  # alert ids must not depend on the worker
    assert parse_redis_spec("redis://h/eve?group=g").port == 6379


@pytest.mark.parametrize(("spec", "needle"), [
    ("redis://h:6379/eve", "group=NAME is required"),
    ("redis://h:6379/eve?group=g&bogus=1", "unknown parameter"),
    ("redis://h:6379/a/b/c?group=g", "/STREAM or /DB/STREAM"),
    ("redis://h:6379/eve?group=g&block_ms=x", "block_ms"),
    ("redis://h:99999/eve?group=g", "port"),
    ("http://h/eve?group=g", "redis://"),
])
def test_bad_specs_are_refused_by_name(spec: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        parse_redis_spec(spec)


def test_a_password_never_appears_in_the_error() -> None:
    with pytest.raises(InputError) as exc:
        parse_redis_spec("redis://:hunter22@h:6379/eve")
    assert "hunter22" not in str(exc.value)
