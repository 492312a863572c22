"""Incident response: correlate alerts, match playbooks, run guarded actions, queue approvals.

Everything is dry-run unless ``enforce=True``. Every decision, proposal, action result and rollback is
a record (``trustmesh.records``) that references the incident and alerts it was based on.
"""

from trustmesh.respond._actions import (
    Action,
    ActionRequest,
    NftablesAction,
    NotifyAction,
    Outcome,
    QuarantineAction,
    WebhookAction,
    action_from_spec,
)
from trustmesh.respond._correlate import TECHNIQUES, Correlator, technique_for
from trustmesh.respond._guards import Guarded, Guards, allowlisted
from trustmesh.respond._llm import AlertEvidence, LLMTriage, answer_schema, data_block, untrusted_text
from trustmesh.respond._local_llm import LocalModelServer, file_sha256, find_model, runtime_missing
from trustmesh.respond._playbook import ACTION_TYPES, DEFAULT_PLAYBOOKS, Match, Playbook, PlaybookSet
from trustmesh.respond._queue import ApprovalQueue, PendingApproval, StoredAction, default_state_dir
from trustmesh.respond._responder import (
    Responder,
    ResponseRecord,
    approve,
    expire,
    reject,
    rollback,
    targets_for,
)

__all__ = [
    "ACTION_TYPES",
    "Action",
    "ActionRequest",
    "AlertEvidence",
    "ApprovalQueue",
    "Correlator",
    "DEFAULT_PLAYBOOKS",
    "Guarded",
    "Guards",
    "LLMTriage",
    "LocalModelServer",
    "Match",
    "NftablesAction",
    "NotifyAction",
    "Outcome",
    "PendingApproval",
    "Playbook",
    "PlaybookSet",
    "QuarantineAction",
    "Responder",
    "ResponseRecord",
    "StoredAction",
    "TECHNIQUES",
    "WebhookAction",
    "action_from_spec",
    "allowlisted",
    "answer_schema",
    "approve",
    "data_block",
    "default_state_dir",
    "expire",
    "file_sha256",
    "find_model",
    "reject",
    "rollback",
    "runtime_missing",
    "targets_for",
    "untrusted_text",
]
