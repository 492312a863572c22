"""Turn a registered capture or log into a ``LabelledTable`` of canonical flow features.

Labels come from the source when it has them (the hand-labelled CTU conn.log: ``attack_type`` for
malicious flows, ``benign``, ``unknown``; ``is_attack`` is True only for ``malicious`` rows) and
otherwise from the documented ground truth (a flow between a documented attacker and victim, either
direction, is ``"attack"``). Captures whose ground truth names no attacker cannot be labelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trustmesh.errors import InputError
from trustmesh.flows._schema import CANONICAL_FEATURES, IDENTIFIER_COLUMNS
from trustmesh.flows._sources import read_flows
from trustmesh.flows._tables import BENIGN, LabelledTable

if TYPE_CHECKING:
    from trustmesh.flows._datasets import DatasetSpec

__all__ = ["flows_table"]


def flows_table(spec: DatasetSpec, paths: tuple[Path, ...], name: str, digest: str) -> LabelledTable:
    """Read the flows of a capture/log dataset and label them (see module docstring)."""
    flows = pd.concat([read_flows(p) for p in paths], ignore_index=True)
    if "label" in flows.columns:
        label = flows["label"].astype(str)
        is_attack = (label == "malicious").to_numpy()
        labels = pd.Series(
            np.where(label == "malicious", flows["attack_type"].astype(str), label), dtype=object
        ).astype(str)
    else:
        gt = spec.ground_truth
        if gt is None or not gt.attackers:
            raise InputError(
                f"dataset {spec.name!r} has no labels and no documented attacker; "
                "read its flows with open_source() instead"
            )
        is_attack = np.fromiter(
            (
                gt.is_malicious_flow(s, d, int(sp), int(dp))
                for s, d, sp, dp in zip(
                    flows["src_ip"], flows["dst_ip"], flows["src_port"], flows["dst_port"], strict=True
                )
            ),
            dtype=bool,
            count=len(flows),
        )
        labels = pd.Series(np.where(is_attack, "attack", BENIGN), dtype=object).astype(str)
    return LabelledTable(
        name=name,
        features=flows[list(CANONICAL_FEATURES)].reset_index(drop=True),
        labels=labels,
        is_attack=is_attack,
        dropped_columns=IDENTIFIER_COLUMNS,
        files=paths,
        digest=digest,
    )
