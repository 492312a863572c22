"""Alert and incident outputs for a SOC: JSON lines, syslog/CEF, Redis streams, bulk NDJSON, webhooks,
STIX 2.1 bundles and TAXII 2.1 publishing.

Every sink takes the ECS 8.x documents of :mod:`trustmesh._ecs` (``Alert.to_ecs()``,
``Incident.to_ecs()``). :class:`SinkSet` fans a batch out and never lets one failing sink stop a
run: failures are counted per sink and returned for the caller to record. ``trustmesh run`` builds
the set from ``[[sinks]]`` tables (:func:`open_sinks`); docs/soc.md describes each sink.
"""

from __future__ import annotations

from trustmesh.sinks._base import KINDS, Sink, SinkSet, SinkStats, doc_kind, redact_url
from trustmesh.sinks._bulk import BulkSink, bulk_body
from trustmesh.sinks._config import SINK_TYPES, check_sink_spec, open_sinks, sink_from_spec, sink_summary
from trustmesh.sinks._jsonl import JsonLinesSink
from trustmesh.sinks._redis import RedisStreamSink
from trustmesh.sinks._stix import TLP_MARKINGS, bundle_json, stix_bundle, stix_objects
from trustmesh.sinks._syslog import SyslogSink, cef_line, syslog_message
from trustmesh.sinks._taxii import TAXII_MEDIA_TYPE, publish_bundle
from trustmesh.sinks._webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink, sign, verify_signature

__all__ = [
    "BulkSink",
    "JsonLinesSink",
    "KINDS",
    "RedisStreamSink",
    "SIGNATURE_HEADER",
    "SINK_TYPES",
    "Sink",
    "SinkSet",
    "SinkStats",
    "SyslogSink",
    "TAXII_MEDIA_TYPE",
    "TIMESTAMP_HEADER",
    "TLP_MARKINGS",
    "WebhookSink",
    "bulk_body",
    "bundle_json",
    "cef_line",
    "check_sink_spec",
    "doc_kind",
    "open_sinks",
    "publish_bundle",
    "redact_url",
    "sign",
    "sink_from_spec",
    "sink_summary",
    "stix_bundle",
    "stix_objects",
    "syslog_message",
    "verify_signature",
]
