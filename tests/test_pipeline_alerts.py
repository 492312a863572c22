"""Behaviour alerts take their flow details from the batch's columns: the same values a per-row read gave."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from trustmesh.detect import BehaviourVerdict
from trustmesh.pipeline import alerts_from_verdicts


def test_behaviour_alerts_read_flow_details_from_the_batch_columns() -> None:
    flows = pd.DataFrame({
        "ts": [1622987986.5, 1622987987.25, np.nan, 1622987990.0],
        "uid": ["a", "b", "c", "d"],
        "src_ip": ["10.0.0.9", "10.0.0.9", "10.0.0.9", "192.168.1.5"],  # d: the actor is the responder
        "src_port": pd.Series([40001, None, 40003, 21], dtype=object),
        "dst_ip": ["192.168.1.5", "192.168.1.6", "192.168.1.7", "10.0.0.9"],
        "dst_port": pd.Series([21.0, 22.0, np.nan, 40004.0]),
        "proto": ["tcp", "tcp", None, "tcp"],
        "service": ["ftp", "-", "ssh", "ftp"],
    })
    v = BehaviourVerdict(kind="brute-force", host="10.0.0.9", technique_id="T1110", technique_name="Brute Force",
                         confidence=0.9, first_seen=1622987980.0, last_seen=1622987990.0,
                         victims=("192.168.1.5",), flow_uids=("a", "b", "c", "d", "gone"), evidence={"attempts": 4})
    alerts = {str(a.flow_id): a for a in alerts_from_verdicts([v], flows, source_name="s", seen=set())}
    assert sorted(alerts) == ["a", "b", "c", "d", "gone"]
    a, b, c, d = alerts["a"], alerts["b"], alerts["c"], alerts["d"]
    assert (a.timestamp, a.source_ip, a.source_port, a.destination_ip, a.destination_port, a.transport,
            a.application) == (1622987986.5, "10.0.0.9", 40001, "192.168.1.5", 21, "tcp", "ftp")
    assert (b.timestamp, b.source_port, b.destination_port, b.application) == (1622987987.25, None, 22, None)
    assert (c.timestamp, c.destination_port, c.transport, c.application) == (v.first_seen, None, None, "ssh")
    # the engine re-oriented d: the actor becomes the source, ports swap with the addresses
    assert (d.source_ip, d.source_port, d.destination_ip, d.destination_port) == ("10.0.0.9", 40004, "192.168.1.5", 21)
    gone = alerts["gone"]  # no longer in the batch and no ref: the verdict itself is the evidence
    assert (gone.source_ip, gone.destination_ip, gone.timestamp) == ("10.0.0.9", "192.168.1.5", v.first_seen)
    assert all(x.technique_id == "T1110" and math.isclose(x.score, 0.9) for x in alerts.values())
