"""Approximate Zeek's ``conn_state`` from per-direction TCP flag observations.

Zeek derives ``conn_state`` from its TCP state machine (see Zeek's ``base/protocols/conn/main.zeek``
documentation of the ``conn_state`` codes). Flow meters such as nfstream and Suricata only report which
flags each direction sent, so the state is rebuilt from those facts, in this order:

==========  ===================================================================================
code        rule used here (orig = originator, resp = responder; "SYN" = SYN without ACK or SYN/ACK)
==========  ===================================================================================
OTH         no SYN seen from either side (mid-stream), or any non-TCP/UDP protocol (ICMP, ...)
REJ         orig SYN, no resp SYN, resp RST
RSTOS0      orig SYN, no resp SYN, orig RST
SH          orig SYN, no resp SYN, orig FIN
S0          orig SYN, no resp SYN, nothing else from resp (resp packets = 0)
RSTRH       no orig SYN, resp SYN, resp RST
SHR         no orig SYN, resp SYN, resp FIN
RSTO        both SYNs, orig RST
RSTR        both SYNs, resp RST
SF          both SYNs, both FINs
S2 / S3     both SYNs, only orig FIN / only resp FIN
S1          both SYNs, no FIN or RST
UDP         S0 when the responder sent nothing, else SF (as Zeek reports UDP "connections")
==========  ===================================================================================

Known differences from Zeek: Zeek checks that the handshake completes (the orig ACK after SYN/ACK) and
the order of FIN and RST; a flag-count view cannot, so for example a RST after a completed FIN
exchange reads as RSTO/RSTR here where Zeek may say SF. Partial-handshake cases where the responder
sends non-SYN packets to an orig SYN are reported as OTH.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["derive_conn_state"]

BoolArray = npt.NDArray[np.bool_]


def derive_conn_state(
    proto: npt.ArrayLike,
    src_syn: npt.ArrayLike,
    dst_syn: npt.ArrayLike,
    src_fin: npt.ArrayLike,
    dst_fin: npt.ArrayLike,
    src_rst: npt.ArrayLike,
    dst_rst: npt.ArrayLike,
    dst_pkts: npt.ArrayLike,
) -> npt.NDArray[np.object_]:
    """Return Zeek-style conn_state codes (object array of str) from per-direction flag presence."""
    p = np.asarray(proto, dtype=object).astype(str)
    ss, ds = np.asarray(src_syn, dtype=float) > 0, np.asarray(dst_syn, dtype=float) > 0
    sf, df_ = np.asarray(src_fin, dtype=float) > 0, np.asarray(dst_fin, dtype=float) > 0
    sr, dr = np.asarray(src_rst, dtype=float) > 0, np.asarray(dst_rst, dtype=float) > 0
    dp = np.nan_to_num(np.asarray(dst_pkts, dtype=float)) > 0
    tcp = p == "tcp"
    udp = p == "udp"
    only_orig = ss & ~ds
    only_resp = ~ss & ds
    both = ss & ds
    conditions = [
        udp & ~dp,
        udp,
        ~tcp,
        ~ss & ~ds,
        only_orig & dr,
        only_orig & sr,
        only_orig & sf,
        only_orig & ~dp,
        only_orig,
        only_resp & dr,
        only_resp & df_,
        only_resp,
        both & sr,
        both & dr,
        both & sf & df_,
        both & sf,
        both & df_,
    ]
    choices = ["S0", "SF", "OTH", "OTH", "REJ", "RSTOS0", "SH", "S0", "OTH", "RSTRH", "SHR", "OTH",
               "RSTO", "RSTR", "SF", "S2", "S3"]  # fmt: skip
    out: npt.NDArray[np.object_] = np.select(conditions, choices, default="S1").astype(object)
    return out
