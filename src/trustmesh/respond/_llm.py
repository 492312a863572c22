"""Optional LLM triage through an OpenAI-compatible ``POST /v1/chat/completions`` endpoint.

The model receives the incident and the ids of the playbook steps it may choose from, and must answer
with one JSON object ``{"actions": [STEP_ID, ...], "rationale": "...", "confidence": 0..1}``. Any other
answer (HTTP error, timeout, not JSON, schema mismatch, an id not in the allowed list) gives a proposal
with ``status="rejected"`` and the reason; the rule-based playbook then decides. The model can only
pick from the ids it was given, so it can never start an action outside the allowlist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trustmesh.records import Incident, TriageProposal

__all__ = ["LLMTriage"]

log = logging.getLogger(__name__)

_SYSTEM = (
    "You triage network security incidents for an IoT/OT network. You are given an incident and the "
    "list of response steps you may choose from, each with an id. Answer with ONE JSON object and nothing "
    'else: {"actions": [ids of the steps to run, possibly empty], "rationale": "<one or two sentences>", '
    '"confidence": <number 0..1>}. Use only ids from the list.'
)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    actions: list[str] = Field(max_length=64)
    rationale: str = Field(default="", max_length=2000)
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)


class LLMTriage:
    """Ask an OpenAI-compatible chat model which allowed steps to take for an incident.

    Parameters
    ----------
    url:
        Base URL (``http://host:port`` or ``.../v1``) or the full ``.../v1/chat/completions`` URL.
    model:
        The model name sent in the request.
    timeout:
        Seconds to wait for the whole answer.
    api_key:
        Sent as ``Authorization: Bearer`` when given; never stored in records.
    """

    def __init__(self, url: str, model: str, timeout: float = 10.0, *, api_key: str | None = None,
                 max_tokens: int = 400) -> None:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
        if not model:
            raise ValueError("model must not be empty")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        base = url.rstrip("/")
        if base.endswith("/chat/completions"):
            self.endpoint = base
        elif base.endswith("/v1"):
            self.endpoint = base + "/chat/completions"
        else:
            self.endpoint = base + "/v1/chat/completions"
        self.model, self.timeout, self._api_key, self.max_tokens = model, timeout, api_key, max_tokens

    def request_body(self, incident: Incident, allowed: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Return the chat-completions request for one incident."""
        user = json.dumps({"incident": incident.to_dict(), "allowed_steps": list(allowed)}, sort_keys=True)
        return {
            "model": self.model,
            "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "response_format": {"type": "json_object"},
        }

    def triage(self, incident: Incident, allowed: Sequence[dict[str, Any]]) -> TriageProposal:
        """Return the model's proposal, accepted only if it is valid JSON naming allowed step ids."""
        allowed_ids = tuple(str(a["id"]) for a in allowed)
        raw: bytes | None = None

        def verdict(status: str, reason: str, actions: tuple[str, ...] = (),
                    rationale: str = "") -> TriageProposal:
            digest = hashlib.sha256(raw).hexdigest() if raw is not None else None
            pid = hashlib.sha256(
                f"{incident.incident_id}\x00{incident.version}\x00{digest}\x00{reason}".encode()
            ).hexdigest()[:16]
            if status == "rejected":
                log.info("LLM triage of %s rejected: %s", incident.incident_id, reason)
            return TriageProposal(
                proposal_id=f"tri-{pid}", incident_id=incident.incident_id, incident_version=incident.version,
                model=self.model, status=status, reason=reason, allowed_actions=allowed_ids,
                proposed_actions=actions, rationale=rationale, response_sha256=digest, timestamp=time.time(),
            )

        body = json.dumps(self.request_body(incident, allowed)).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.endpoint, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (scheme checked)
                raw = resp.read(1_000_000)
        except urllib.error.HTTPError as exc:
            return verdict("rejected", f"LLM endpoint {self.endpoint} answered HTTP {exc.code}")
        except TimeoutError:
            return verdict("rejected", f"LLM endpoint {self.endpoint} timed out after {self.timeout} s")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                return verdict("rejected", f"LLM endpoint {self.endpoint} timed out after {self.timeout} s")
            return verdict("rejected", f"LLM endpoint {self.endpoint} unreachable: {reason}")
        try:
            envelope = json.loads(raw)
            content = envelope["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("message content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return verdict("rejected", f"not a chat-completions response ({type(exc).__name__}: {exc})")
        try:
            doc = json.loads(content)
        except ValueError as exc:
            return verdict("rejected", f"answer is not JSON ({exc})")
        try:
            answer = _Answer.model_validate(doc)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "<answer>"
            return verdict("rejected", f"answer does not match the schema: {where}: {err['msg']}")
        forbidden = [a for a in answer.actions if a not in allowed_ids]
        if forbidden:
            return verdict("rejected", f"answer names actions outside the allowlist: {', '.join(forbidden)}",
                           tuple(answer.actions), answer.rationale)
        if len(set(answer.actions)) != len(answer.actions):
            return verdict("rejected", "answer repeats an action", tuple(answer.actions), answer.rationale)
        return verdict("accepted", "valid answer within the allowlist", tuple(answer.actions),
                       answer.rationale)
