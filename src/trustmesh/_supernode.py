"""``python -m trustmesh._supernode ARGS``: Flower 1.41's ``flower-supernode`` with shorter fixed waits.

Flower 1.41's SuperNode main loop (``flwr.supernode.start_client_internal``) sleeps a hard-coded 3 s
whenever a pull from the SuperLink finds no message, and 0.5 s between checks for the ClientApp's
reply; no option or environment variable sets either. A message that arrives just after an empty pull
therefore waits up to 3 s (1.5 s on average) before the site sees it, on every round and on every
SecAgg+ stage. This launcher replaces only those two waits, only inside that module, by
:data:`IDLE_PULL_INTERVAL` and :data:`REPLY_POLL_INTERVAL`, and then calls Flower's own
``flower-supernode`` entry point with the arguments unchanged (TLS, node authentication, the Runtime
API and everything else are Flower's).

The patch is version-checked: any Flower other than 1.41.x, or a 1.41 whose loop no longer has those
two sleeps, stops the launcher with an error (exit 2) instead of running with an unknown patch.
"""

from __future__ import annotations

import inspect
import sys
import time as _time
from types import ModuleType
from typing import Any

__all__ = ["IDLE_PULL_INTERVAL", "LOCAL_PULL_BACKOFF_CAP", "PULL_BACKOFF", "PULL_BACKOFF_CAP", "PULL_MAX_TRIES", "REPLY_POLL_INTERVAL",
           "SUPPORTED_FLOWER", "TRACE_ENV", "main", "patch_object_pulls", "patch_supernode_waits", "trace"]

SUPPORTED_FLOWER = "1.41."
IDLE_PULL_INTERVAL = 0.2  # s between pulls from the SuperLink when none found a message (Flower: 3 s)
REPLY_POLL_INTERVAL = 0.02  # s between checks of the local state for the ClientApp's reply (Flower: 0.5 s)
PULL_BACKOFF = 0.02  # s before the first retry of an object the sender has not finished pushing (Flower: 1 s)
PULL_BACKOFF_CAP = 0.5  # s, the longest wait between such retries (Flower: 10 s)
#: the executor's cap for the same retries against its own SuperNode (a local call): the SuperNode
#: is still pulling the arrays from the SuperLink, and a 0.5 s cap made the executor see them up to
#: 0.5 s after they had arrived
LOCAL_PULL_BACKOFF_CAP = 0.05
#: retries per object; with the shorter waits, enough that Flower's own time limit (PULL_MAX_TIME,
#: 2 h) stays the bound, as it is with Flower's 500 tries of up to 10 s
PULL_MAX_TRIES = 20000
_FLOWER_WAITS = {3: "time.sleep(3)", 0.5: "time.sleep(0.5)"}
#: set to 1 to have the deployed processes print ``trace WALLCLOCK ROLE EVENT`` lines to stderr
#: (one round's timeline across ServerApp, SuperNodes and executors; docs/federated.md)
TRACE_ENV = "TRUSTMESH_FL_TRACE"


def trace(role: str, event: str) -> None:
    """Print one ``trace`` line (wall-clock seconds, comparable across processes) when tracing is on."""
    import os

    if os.environ.get(TRACE_ENV) == "1":
        print(f"trace {_time.time():.4f} {role} {event}", file=sys.stderr, flush=True)


def _check_version() -> str:
    import flwr

    version = str(getattr(flwr, "__version__", ""))
    if not version.startswith(SUPPORTED_FLOWER):
        raise RuntimeError(f"trustmesh._supernode patches Flower {SUPPORTED_FLOWER}x only, found {version!r}; "
                           "check flwr/supernode/start_client_internal.py and update the patch")
    return version


def patch_object_pulls(module: ModuleType, backoff: float = PULL_BACKOFF, cap: float = PULL_BACKOFF_CAP) -> None:
    """Make ``module``'s ``pull_objects`` retry a not-yet-available object after ``backoff`` s, not 1 s.

    Flower 1.41 announces a message before its objects (the model's arrays) are all pushed, and a
    receiver that asks too early backs off 1 s, then 2 s, ...: a fixed ~3 s per message hop. This sets
    only the two backoff arguments of ``flwr.supercore.inflatable.inflatable_utils.pull_objects`` for
    the calls made from ``module`` (the SuperNode loop, the ServerApp's grid). Raises RuntimeError on a
    Flower this was not written for.
    """
    from flwr.supercore.inflatable import inflatable_utils

    version = _check_version()
    real = getattr(module, "pull_objects", None)
    if getattr(real, "__wrapped_by_trustmesh__", False):
        return
    params = inspect.signature(inflatable_utils.pull_objects).parameters
    if real is not inflatable_utils.pull_objects or \
            not {"initial_backoff", "backoff_cap", "max_tries_per_object"} <= set(params):
        raise RuntimeError(f"Flower {version}: {module.__name__}.pull_objects is not inflatable_utils.pull_objects "
                           "with initial_backoff/backoff_cap; update trustmesh._supernode")

    role = module.__name__.rsplit(".", 1)[-1]

    def pull_objects(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("initial_backoff", backoff)
        kwargs.setdefault("backoff_cap", cap)
        kwargs.setdefault("max_tries_per_object", PULL_MAX_TRIES)
        ids = args[0] if args else kwargs.get("object_ids", [])
        trace(role, f"pull_objects start n={len(ids)}")
        got = real(*args, **kwargs)
        trace(role, f"pull_objects done bytes={sum(len(v) for v in got.values())}")
        return got

    pull_objects.__wrapped_by_trustmesh__ = True  # type: ignore[attr-defined]
    setattr(module, "pull_objects", pull_objects)  # noqa: B010 - not an exported name


class _ShorterWaits:
    """The ``time`` module as ``start_client_internal`` sees it, with its two fixed sleeps shortened."""

    def __init__(self, real: ModuleType, waits: dict[float, float]) -> None:
        self._real = real
        self._waits = waits

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        self._real.sleep(self._waits.get(seconds, seconds))


def patch_supernode_waits(idle: float = IDLE_PULL_INTERVAL, reply: float = REPLY_POLL_INTERVAL) -> ModuleType:
    """Shorten the SuperNode loop's idle pull and reply waits; return the patched Flower module.

    Raises RuntimeError on a Flower version or source this patch was not written for.
    """
    from flwr.supernode import start_client_internal as loop

    version = _check_version()
    source = inspect.getsource(loop)
    missing = [text for text in _FLOWER_WAITS.values() if text not in source]
    if missing or getattr(loop, "time", None) is not _time:
        raise RuntimeError(f"Flower {version}: start_client_internal no longer has {missing or 'module time'}; "
                           "update trustmesh._supernode")
    setattr(loop, "time", _ShorterWaits(_time, {3: idle, 0.5: reply}))  # noqa: B010 - not an exported name
    return loop


def main() -> int:
    """Patch, then run ``flower-supernode`` with this process's arguments."""
    try:
        loop = patch_supernode_waits()
        patch_object_pulls(loop)  # the instruction's arrays, pulled from the SuperLink
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from flwr.supernode.cli import flower_supernode

    import os

    if os.environ.get(TRACE_ENV) == "1":
        import logging

        from flwr.common.logger import FLOWER_LOGGER

        class _Trace(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                text = record.getMessage()
                if text.strip():
                    trace("supernode", text[:80])
                return True

        FLOWER_LOGGER.addFilter(_Trace())

    sys.argv[0] = "flower-supernode"
    flower_supernode()
    return 0


if __name__ == "__main__":  # pragma: no cover - started by `fl site`
    raise SystemExit(main())
