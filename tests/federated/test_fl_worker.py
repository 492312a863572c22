"""The site worker behind deployed ClientApps: frames, errors, and one bad request not stopping it."""

from __future__ import annotations

import socket
import stat
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trustmesh.errors import FederatedError
from trustmesh._fl_worker import fit_remote, serve_worker


def _fit(spec: dict[str, Any], k: int, arrays: list[np.ndarray], config: dict[str, Any]) -> Any:
    if spec.get("fail"):
        raise ValueError("partition-id 7 outside 0..2")
    return [a * 2 for a in arrays], 10 * k + int(config["round"]), {"seen": spec["name"]}


def _start(path: Path, requests: int) -> threading.Thread:
    thread = threading.Thread(target=serve_worker, args=(path, _fit), kwargs={"max_requests": requests}, daemon=True)
    thread.start()
    return thread


def test_worker_trains_forwarded_rounds_and_reports_errors(tmp_path: Path) -> None:
    path = tmp_path / "w.sock"
    thread = _start(path, 4)
    params = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, dtype=np.float32)]

    weights, n, metrics = fit_remote(str(path), {"name": "run"}, 2, params, {"round": 3, "blob": b"x"})
    with pytest.raises(FederatedError, match="partition-id 7 outside"):
        fit_remote(str(path), {"fail": True}, 0, params, {"round": 1})
    # a malformed frame is answered with an error and the worker serves the next request
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(str(path))
        raw.sendall(struct.pack(">II", 4, 0) + b"[1]\n")
        raw.recv(4096)
    again = fit_remote(str(path), {"name": "run"}, 1, params, {"round": 1})
    thread.join(timeout=30)

    np.testing.assert_array_equal(weights[0], params[0] * 2)
    assert n == 23 and metrics["seen"] == "run" and metrics["fit_seconds"] >= 0
    assert again[1] == 11
    assert not thread.is_alive()


def test_worker_socket_is_private_to_the_site(tmp_path: Path) -> None:
    path = tmp_path / "w.sock"
    thread = _start(path, 1)
    fit_remote(str(path), {"name": "run"}, 0, [np.zeros(2, dtype=np.float32)], {"round": 1})
    thread.join(timeout=30)

    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_unreachable_worker_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FederatedError, match="not reachable"):
        fit_remote(str(tmp_path / "none.sock"), {}, 0, [], {}, connect_timeout=0.3)


def test_deployed_clientapp_routes_our_secure_aggregation_messages() -> None:
    from trustmesh._fl_worker import SECAGG_RECORD
    from trustmesh.federated._secagg_flower import RECORD_KEY

    assert SECAGG_RECORD == RECORD_KEY
