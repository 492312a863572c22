"""Stop helper processes that run in their own session (nfstream meters, Flower, gateways in tests)."""

from __future__ import annotations

import os
import signal
import subprocess

__all__ = ["stop_group"]


def stop_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 15.0) -> int:
    """SIGTERM the process group led by ``proc``, SIGKILL it after ``timeout`` s; return the exit code.

    ``proc`` must have been started with ``start_new_session=True`` so its children (which it may
    not reap itself) share its group and stop with it.
    """
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return int(proc.returncode)
