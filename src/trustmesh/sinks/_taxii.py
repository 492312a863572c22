"""Publish a STIX 2.1 bundle to a TAXII 2.1 collection ("Add Objects", TAXII 2.1 section 5.5).

``POST <api-root>/collections/<id>/objects/`` with ``Content-Type: application/taxii+json;version=2.1``
and an envelope ``{"objects": [...]}``; the server answers 202 with a status resource, which is
polled at ``<api-root>/status/<status-id>/`` until it is no longer ``pending``. Objects go in chunks
(``max_objects`` per request) so a large bundle stays under the server's ``max_content_length``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from trustmesh.errors import InputError, MissingDependencyError, SinkError
from trustmesh.sinks._base import redact_url

__all__ = ["TAXII_MEDIA_TYPE", "publish_bundle"]

TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"


def publish_bundle(bundle: Mapping[str, Any], *, url: str, collection: str, username: str | None = None,
                   password: str | None = None, timeout_s: float = 30.0, max_objects: int = 500,
                   poll_s: float = 0.5, max_wait_s: float = 60.0, verify_tls: bool = True,
                   sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Add every object of ``bundle`` to the collection; return the totals of the status resources.

    ``url`` is the TAXII API root (``https://taxii.example.org/api1/``). Raises :class:`SinkError`
    when the server refuses a request or reports failed objects, :class:`InputError` for a bundle
    that is not a STIX bundle.
    """
    if bundle.get("type") != "bundle" or not isinstance(bundle.get("objects"), list):
        raise InputError("not a STIX bundle (type must be 'bundle' with an objects list)")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--url must be an http:// or https:// TAXII API root, got {redact_url(url)!r}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    try:
        import httpx
    except ImportError as exc:
        raise MissingDependencyError("httpx", "stix") from exc
    root = url.rstrip("/") + "/"
    headers = {"Accept": TAXII_MEDIA_TYPE, "Content-Type": TAXII_MEDIA_TYPE}
    auth = (username, password or "") if username else None
    objects = bundle["objects"]
    totals: dict[str, Any] = {"total_count": 0, "success_count": 0, "failure_count": 0, "pending_count": 0,
                              "status_ids": [], "failures": []}  # fmt: skip
    with httpx.Client(timeout=timeout_s, verify=verify_tls, auth=auth) as client:
        for start in range(0, len(objects), max_objects):
            body = json.dumps({"objects": objects[start:start + max_objects]}, separators=(",", ":"))
            target = f"{root}collections/{collection}/objects/"
            try:
                resp = client.post(target, content=body.encode("utf-8"), headers=headers)
            except httpx.HTTPError as exc:
                raise SinkError(f"POST {redact_url(target)} failed: {exc}") from exc
            if resp.status_code != 202:
                raise SinkError(f"POST {redact_url(target)} answered HTTP {resp.status_code}: {resp.text[:200]}")
            status = resp.json()
            waited = 0.0
            while status.get("status") == "pending" and waited < max_wait_s:
                sleep(poll_s)
                waited += poll_s
                poll = client.get(f"{root}status/{status['id']}/", headers={"Accept": TAXII_MEDIA_TYPE})
                if poll.status_code != 200:
                    raise SinkError(f"status {status['id']} answered HTTP {poll.status_code}")
                status = poll.json()
            for key in ("total_count", "success_count", "failure_count", "pending_count"):
                totals[key] += int(status.get(key, 0))
            totals["status_ids"].append(status.get("id"))
            totals["failures"] += status.get("failures", [])[:20]
    if totals["failure_count"]:
        raise SinkError(f"TAXII server refused {totals['failure_count']} of {totals['total_count']} object(s): "
                        f"{json.dumps(totals['failures'][:3])[:300]}")  # fmt: skip
    return totals
