"""STIX 2.1 bundles of alerts: a stable producer, deterministic ids, TLP 2.0 markings, no duplicates.

What a bundle holds (docs/soc.md, "STIX 2.1"):

* one ``identity`` for the producer, its id derived from the configured name (the same every run);
* every object marked with the chosen TLP 2.0 level through ``object_marking_refs`` (the published
  marking-definition ids of the OASIS "TLP 2.0" extension, ``extension-definition--60a3c5c5-...``);
* an ``attack-pattern`` per ATT&CK technique seen (external reference ``mitre-attack``, kill chain
  phase from the technique's tactic);
* per *external* source address and technique: an ``indicator`` (``[ipv4-addr:value = '...']``),
  its ``sighting`` (count, first and last seen, the alert ids as external references: each is a
  ledger entry) and an ``indicates`` relationship to the attack pattern. *Internal* sources
  (private, loopback, link-local, or inside ``internal_networks``) are our own hosts: they become a
  ``sighting`` of the attack pattern, never an indicator to block or share.

No observed-data or cyber-observable objects: the interop profile requires ``created_by_ref`` on
every object of a bundle, which STIX 2.1 observables cannot carry; the ECS alerts keep the flows.
Every id is derived from the producer name and the content's key (:func:`_id`), and each object is
emitted once, so the same alerts give the same bundle (byte for byte when their times are epoch
times). Times are the ECS ``@timestamp`` of the alert, so a source with relative times never gives
a 1970 date (see :mod:`trustmesh._ecs`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trustmesh._ecs import _ip
from trustmesh.records import Alert

__all__ = ["TLP_MARKINGS", "stix_bundle", "stix_objects"]

_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/trustmesh/stix")
_TLP_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
#: TLP 2.0 level -> marking-definition id (OASIS cti-stix-common-objects, tlp-2.0).
TLP_MARKINGS = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
_FIXED = "2024-01-01T00:00:00.000Z"  # created/modified of content-free objects (identity, attack patterns)


def _id(kind: str, *key: str) -> str:
    """Return a deterministic id: SHA-256 of the kind and key, shaped as a version 4 UUID.

    STIX 2.1 (and ``stix2-validator --interop``) wants UUIDv4 ids for SDOs and SROs; SCOs keep the
    UUIDv5 ids the spec derives from their contributing properties. Hashing the key keeps the id
    the same whenever the content is the same, so re-exports and re-publishes do not duplicate.
    """
    digest = hashlib.sha256("|".join((str(_NS), kind, *key)).encode("utf-8")).digest()[:16]
    return f"{kind}--{uuid.UUID(bytes=digest, version=4)}"


def _stamp(iso: str) -> str:
    """ECS ``2021-06-06T13:59:46.457984Z`` -> STIX millisecond precision ``2021-06-06T13:59:46.457Z``."""
    return iso[:23] + "Z" if len(iso) > 24 else iso


def _marking(level: str) -> dict[str, Any]:
    return {"type": "marking-definition", "spec_version": "2.1", "id": TLP_MARKINGS[level],
            "created": "2022-10-01T00:00:00.000Z", "name": f"TLP:{level.upper()}",
            "extensions": {_TLP_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": level}}}  # fmt: skip


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Sequence[Any]) -> bool:
    return ip.is_private or ip.is_loopback or ip.is_link_local or any(ip in n for n in nets if n.version == ip.version)


def stix_objects(alerts: Iterable[Alert], *, producer: str = "trustmesh", tlp: str = "amber",
                 internal_networks: Iterable[str] = (), created: float | None = None) -> list[dict[str, Any]]:
    """Return the bundle's objects (plain dicts, each once, in a stable order)."""
    if tlp not in TLP_MARKINGS:
        raise ValueError(f"tlp must be one of {', '.join(TLP_MARKINGS)}, got {tlp!r}")
    if not producer.strip():
        raise ValueError("producer must not be empty")
    nets = [ipaddress.ip_network(n, strict=False) for n in internal_networks]
    marking = TLP_MARKINGS[tlp]
    identity_id = _id("identity", producer)
    common = {"spec_version": "2.1", "created_by_ref": identity_id, "object_marking_refs": [marking]}
    # the TLP 2.0 marking-definition is referenced by its published id, not repeated: the published object
    # has no created_by_ref/modified, which the interop profile would demand of a copy in our bundle
    out: dict[str, dict[str, Any]] = {
        identity_id: {"type": "identity", "spec_version": "2.1", "id": identity_id, "created": _FIXED,
                      "modified": _FIXED, "name": producer, "identity_class": "system",
                      "created_by_ref": identity_id,
                      "description": "trustmesh network detection (ML, behaviour and signature verdicts)",
                      "object_marking_refs": [marking]},  # fmt: skip
    }
    by_host: dict[tuple[str, str | None], list[tuple[str, str, str]]] = {}  # (ip, technique) -> [(alert, time, msg)]
    for alert in alerts:
        src = _ip(alert.source_ip)
        if src is None:
            continue
        ecs = alert.to_ecs(created=created)
        by_host.setdefault((str(src), alert.technique_id), []).append(
            (alert.alert_id, _stamp(ecs["@timestamp"]), ecs["message"]))
    for (host, technique), seen in sorted(by_host.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        times = sorted(t for _, t, _ in seen)
        first, last = times[0], times[-1]
        evidence = [{"source_name": "trustmesh", "external_id": a, "description": m[:300]}
                    for a, _, m in sorted(seen)[:100]]  # the alerts, by id: each is a ledger entry
        ap_id = None
        if technique:
            ap_id = _id("attack-pattern", producer, technique)
            out.setdefault(ap_id, {
                "type": "attack-pattern", "id": ap_id, "created": _FIXED, "modified": _FIXED, **common,
                "name": _technique_name(technique),
                "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": _tactic_phase(technique)}],
                # no url: interop wants a hash beside every url, and ATT&CK is found by its id
                "external_references": [{"source_name": "mitre-attack", "external_id": technique}],
            })  # fmt: skip
        ip = ipaddress.ip_address(host)
        sighting_id = _id("sighting", producer, host, technique or "")
        if _internal(ip, nets):
            if ap_id is None:
                continue  # an internal host and no technique: nothing to share beyond the ECS alerts
            out[sighting_id] = {
                "type": "sighting", "id": sighting_id, "created": first, "modified": last, **common,
                "sighting_of_ref": ap_id, "first_seen": first, "last_seen": last, "count": len(seen),
                "where_sighted_refs": [identity_id], "external_references": evidence,
                "description": f"internal host {host} ({len(seen)} alert(s)); not an indicator: it is ours",
            }  # fmt: skip
            continue
        kind = "ipv4-addr" if ip.version == 4 else "ipv6-addr"
        ind_id = _id("indicator", producer, host, technique or "")
        out[ind_id] = {
            "type": "indicator", "id": ind_id, "created": first, "modified": last, **common,
            "name": f"{host}: {_technique_name(technique) if technique else 'anomalous network activity'}",
            "indicator_types": ["malicious-activity" if technique else "anomalous-activity"],
            "pattern": f"[{kind}:value = '{host}']", "pattern_type": "stix", "valid_from": first,
            "description": f"{len(seen)} trustmesh alert(s) from {host}",
        }  # fmt: skip
        out[sighting_id] = {
            "type": "sighting", "id": sighting_id, "created": first, "modified": last, **common,
            "sighting_of_ref": ind_id, "first_seen": first, "last_seen": last, "count": len(seen),
            "where_sighted_refs": [identity_id], "external_references": evidence,
        }  # fmt: skip
        if ap_id is not None:
            rel_id = _id("relationship", producer, ind_id, "indicates", ap_id)
            out[rel_id] = {"type": "relationship", "id": rel_id, "created": first, "modified": last, **common,
                           "relationship_type": "indicates", "source_ref": ind_id, "target_ref": ap_id}  # fmt: skip
    return list(out.values())


def _tactic_phase(technique: str) -> str:
    from trustmesh._ecs import technique_info

    info = technique_info(technique)
    return info[2].lower().replace(" ", "-") if info else "unknown"


def _technique_name(technique: str) -> str:
    from trustmesh._ecs import technique_info

    info = technique_info(technique)
    return f"{technique} {info[0]}" if info and info[0] else technique


def stix_bundle(alerts: Iterable[Alert], **kwargs: Any) -> dict[str, Any]:
    """Return a STIX 2.1 bundle (a dict) of ``alerts``; keyword arguments as :func:`stix_objects`."""
    objects = stix_objects(alerts, **kwargs)
    ids = "|".join(sorted(o["id"] + "@" + str(o.get("modified", "")) for o in objects))
    return {"type": "bundle", "id": _id("bundle", ids), "objects": objects}


def bundle_json(bundle: Mapping[str, Any]) -> str:
    """Serialise a bundle as compact JSON with sorted keys (stable bytes)."""
    return json.dumps(bundle, sort_keys=True, separators=(",", ":"))
