"""TON_IoT network records (Zeek-derived ``train_test_network.csv``) -> canonical flows.

TON_IoT's network CSV already uses Zeek conn.log semantics under different names (``src_ip``,
``src_bytes`` = Zeek ``orig_bytes``, ``src_pkts`` = ``orig_pkts``, ...). It has no timestamp or uid in
the Train_Test release: ``ts`` is taken from a ``ts`` column when present (full release) and is NaN
otherwise; ``uid`` is ``T<row number>`` (stable for a given file). TCP flag counts and per-packet
statistics are not in the data and are NaN. ``label`` is ``benign``/``malicious`` (from ``label``
0/1) and ``attack_type`` the ``type`` column with ``normal`` renamed ``benign``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trustmesh.errors import InputError
from trustmesh.flows._schema import to_canonical

__all__ = ["TON_REQUIRED", "ton_iot_to_canonical"]

TON_REQUIRED = ("src_ip", "src_port", "dst_ip", "dst_port", "proto", "conn_state", "src_bytes", "dst_bytes")


def ton_iot_to_canonical(df: pd.DataFrame, *, start: int = 0, source: str = "TON_IoT network") -> pd.DataFrame:
    """Map raw TON_IoT network columns to the canonical schema (+ ``label``/``attack_type``).

    ``start`` offsets the generated ``uid`` row numbers when mapping a file batch by batch.
    """
    df = df.rename(columns=lambda c: str(c).replace("\ufeff", "").strip())
    missing = [c for c in TON_REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"{source}: not a TON_IoT network table (missing {', '.join(missing)})")
    n = len(df)
    out = df[[c for c in df.columns if c in {"src_ip", "src_port", "dst_ip", "dst_port", "proto", "service",
                                             "duration", "src_bytes", "dst_bytes", "src_pkts", "dst_pkts",
                                             "conn_state", "ts"}]].copy()  # fmt: skip
    for col in ("service", "conn_state"):
        if col in out.columns:
            s = out[col].astype("str").str.strip()
            out[col] = s.where(out[col].notna() & (s != ""), "-")
    out["uid"] = [f"T{i}" for i in range(start, start + n)]
    if "type" in df.columns:
        typ = df["type"].astype("str").str.strip().str.lower()
        out["attack_type"] = typ.where(typ != "normal", "benign")
    if "label" in df.columns:
        lab = pd.to_numeric(df["label"], errors="coerce")
        out["label"] = np.where(lab.fillna(0).to_numpy() > 0, "malicious", "benign")
        if "attack_type" not in out.columns:
            out["attack_type"] = out["label"]
    elif "attack_type" in out.columns:
        out["label"] = np.where(out["attack_type"] == "benign", "benign", "malicious")
    return to_canonical(out, source=source)
