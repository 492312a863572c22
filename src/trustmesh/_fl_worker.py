"""A site's long-running ClientApp executor for deployed runs (``fl site``), and the deployed ClientApp.

Flower 1.41's SuperNode, in its default ``subprocess`` isolation, starts ``flower-superexec``, which
starts a fresh ``flwr-clientapp`` process for every message (that process pulls one task with its
token, runs it and exits: ``flwr.supernode.runtime.run_clientapp``). Importing torch, loading the
site's table and building its model then happen once per round, and the SuperExec's task poll adds
its interval on top.

``fl site`` therefore runs its SuperNode with ``--isolation process`` (Flower's supported mode for a
ClientApp executor that is started outside the SuperNode) and starts this executor next to it. The
executor is SuperExec's acquire loop and ``flwr-clientapp``'s task protocol in one process that stays
up: it acquires each task from the SuperNode's Runtime API (``AcquireTask``, HMAC-authenticated with
the SuperNode's ``--superexec-auth-secret-file``, so no other local process can take the site's
tasks), pulls the message and context with the task's token, runs :data:`client_app` here, and pushes
the reply and the task's final status and context, all through Flower's own Runtime API client and
functions. Torch, the data and the site's model stay loaded across rounds
(:func:`trustmesh.federated._deploy.local_site`), and secure aggregation's client mod keeps its state
in the task's context as it does in ``flwr-clientapp``.

The executor runs only this package's ClientApp, never code from the coordinator's app bundle (FAB):
the coordinator chooses the run's options (its ``spec``), not what a site executes.

:data:`client_app` is also the deployed app's ``clientapp`` component, so a stock ``flower-supernode``
(subprocess isolation) runs the same training, one process per message. This module lives outside
:mod:`trustmesh.federated` so that such a process imports Flower first and the package only when a
task arrives.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["ACQUIRE_METHOD", "TASK_POLL_INTERVAL", "client_app", "main", "run_executor", "run_task"]

SECAGG_RECORD = "trustmesh.secagg"  # federated._secagg_flower.RECORD_KEY (a test keeps them equal)
TASK_POLL_INTERVAL = 0.05  # seconds between AcquireTask calls when the SuperNode has no task (local HTTP)
ACQUIRE_METHOD = "/flwr.proto.Runtime/AcquireTask"  # the call the SuperExec auth secret protects
_log = logging.getLogger(__name__)


def _client_fn(context: Any) -> Any:
    """Train here: the site built once per process and run spec (``federated._deploy.client_fn``)."""
    from trustmesh.federated._deploy import client_fn

    return client_fn(context)


def _maybe_secagg(msg: Any, ctxt: Any, call_next: Any) -> Any:
    """Our secure aggregation's client mod (``federated._secagg_flower``) for its own messages only."""
    if msg.has_content() and SECAGG_RECORD in msg.content.config_records:
        from trustmesh.federated._secagg_flower import make_masking_mod

        return make_masking_mod()(msg, ctxt, call_next)
    return call_next(msg, ctxt)


def _client_app() -> Any:
    from flwr.clientapp import ClientApp

    return ClientApp(client_fn=_client_fn, mods=[_maybe_secagg])


client_app = _client_app()  # the deployed app's `clientapp` component (see `fl serve`)


def _runtime_client(address: str, interceptors: list[Any]) -> Any:
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    return RuntimeHttpClient.from_server_address(server_address=address, insecure=True, root_certificates=None,
                                                 interceptors=interceptors,
                                                 retry_invoker=make_simple_http_retry_invoker())


def _pull_task_input(client: Any) -> tuple[Any, Any]:
    """``run_clientapp.pull_task_input`` with a 20 ms first retry for arrays the SuperNode is still pulling.

    The SuperNode offers a task as soon as the message's metadata is in, before its arrays have
    arrived from the SuperLink; Flower's default backoff (1 s, then 2 s) made every round ~3 s longer.
    """
    from flwr.app import Message
    from flwr.common.serde import context_from_proto
    from flwr.proto.node_pb2 import Node
    from flwr.proto.runtime_pb2 import PullAppMessagesRequest, PullTaskInputRequest
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
    from flwr.supercore.task_identity import TaskIdentity

    from trustmesh._supernode import LOCAL_PULL_BACKOFF_CAP, PULL_BACKOFF, PULL_MAX_TRIES

    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message, initial_backoff=PULL_BACKOFF, backoff_cap=LOCAL_PULL_BACKOFF_CAP,
        max_tries_per_object=PULL_MAX_TRIES)
    message.metadata.__dict__["_message_id"] = tree.object_id  # as run_clientapp: the deflated id
    return message, context


def run_task(address: str, token: str, app: Any = None) -> str:
    """Run one acquired ClientApp task (``token``) against the Runtime API at ``address``; return its status.

    The steps of ``flwr-clientapp`` (``run_clientapp``) without its process exit: pull the task's
    input, run ``app`` (default :data:`client_app`), push the reply (an ``Error`` reply when the app
    raised) and the final status with the context, with Flower's task heartbeat running meanwhile.
    """
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
    from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

    run_app = client_app if app is None else app
    client = _runtime_client(address, [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                                       RuntimeTokenHttpInterceptor(token)])
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    message = context = reply = None
    status, details = str(SubStatus.FAILED), "ClientApp task failed before it started"
    from trustmesh._supernode import trace

    marks = [time.perf_counter()]
    trace("executor", "task acquired")
    try:
        message, context = _pull_task_input(client)
        marks.append(time.perf_counter())
        trace("executor", "task input pulled")
        reply = run_app(message=message, context=context)
        marks.append(time.perf_counter())
        trace("executor", "app done")
        status, details = str(SubStatus.COMPLETED), ""
    except Exception as exc:  # noqa: BLE001 - one failing task must not stop the site
        reason = f"{type(exc)}:<'{exc}'>"
        _log.warning("site executor: task failed: %s", reason)
        details = reason
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        except Exception as exc:  # noqa: BLE001 - the SuperNode times the task out; the site goes on
            _log.warning("site executor: could not push the reply: %s", exc)
            status, details = str(SubStatus.FAILED), f"pushing the reply failed: {exc}"
        push_task_output(client=client, context=context, sub_status=status, details=details)
        marks.append(time.perf_counter())
        trace("executor", "reply and status pushed")
        heartbeat.stop()
        client.close()
    steps = " ".join(f"{name} {b - a:.2f}s" for name, a, b in zip(("pull", "app", "push"), marks, marks[1:],
                                                                    strict=False))
    print(f"site executor: task {status} ({steps})", file=sys.stderr, flush=True)
    return status


def run_executor(address: str, secret: bytes | None, *, app: Any = None, poll: float = TASK_POLL_INTERVAL,
                 max_tasks: int | None = None, deadline: float | None = None) -> int:
    """Acquire and run this site's ClientApp tasks from the SuperNode at ``address``, one at a time.

    ``secret`` is the SuperNode's SuperExec auth secret (None when it runs without one). Runs until
    killed, or until ``max_tasks`` tasks ran or ``time.monotonic()`` passes ``deadline``; returns the
    number of tasks run.
    """
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor, SuperExecAuthHttpInterceptor

    interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if secret:
        interceptors.append(SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods={ACQUIRE_METHOD}))
    client = _runtime_client(address, interceptors)
    done = 0
    try:
        while (max_tasks is None or done < max_tasks) and (deadline is None or time.monotonic() < deadline):
            res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[str(TaskType.CLIENT_APP)]))
            if res.HasField("task") and res.token:
                run_task(address, res.token, app)
                done += 1
                continue
            time.sleep(poll)
    finally:
        client.close()
    return done


def main(argv: list[str] | None = None) -> int:
    """``python -m trustmesh._fl_worker RUNTIME_API [SECRET_FILE]``: run this site's tasks until killed."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m trustmesh._fl_worker RUNTIME_API_HOST:PORT [SECRET_FILE]", file=sys.stderr)
        return 2
    secret = Path(args[1]).read_bytes() if len(args) == 2 else None
    from trustmesh.federated._run import limit_torch_threads

    limit_torch_threads()
    logging.basicConfig(level=os.environ.get("TRUSTMESH_LOG_LEVEL", "WARNING"))
    import trustmesh.federated._deploy  # noqa: F401 - torch and the training code, before the first task

    run_executor(args[0], secret)
    return 0


if __name__ == "__main__":  # pragma: no cover - started by `fl site`
    raise SystemExit(main())
