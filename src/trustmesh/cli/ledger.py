"""CLI commands: ``trustmesh ledger ...`` (init, append, checkpoint, prove, consistency, verify,
witness, serve) and ``trustmesh bench ledger``."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer

from trustmesh.cli._common import console, err_console, guarded, print_json
from trustmesh.cli._root import app, bench_app
from trustmesh.errors import InputError
from trustmesh.ledger._query import field_values, value_matches

__all__ = ["ledger_app", "witness_app"]

P = ParamSpec("P")
R = TypeVar("R")

ledger_app = typer.Typer(help="Tamper-evident ledger: RFC 9162 log, C2SP checkpoints, witnesses, tiles.",
                         no_args_is_help=True)
witness_app = typer.Typer(help="Run a C2SP tlog-cosignature witness.", no_args_is_help=True)
ledger_app.add_typer(witness_app, name="witness")
app.add_typer(ledger_app, name="ledger")

MAX_LINE_BYTES = 1 << 20
APPEND_CHUNK = 100_000  # entries per durable transaction when appending a large file


def _db_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Report a damaged SQLite file as LogIntegrityError (exit 1) instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import sqlite3

        from trustmesh.errors import LogIntegrityError

        try:
            return func(*args, **kwargs)
        except sqlite3.Error as exc:
            from trustmesh.ledger._store import sqlite_problem

            where = kwargs.get("directory")
            problem = sqlite_problem(Path(str(where)) if where is not None else Path("ledger"), exc)
            if isinstance(problem, LogIntegrityError):  # disk full / read-only / I/O stay environment (exit 3)
                raise LogIntegrityError(f"the ledger database is damaged or locked ({exc})") from None
            raise problem from None

    return wrapper


def _check_sync(value: str) -> str:
    if value.upper() not in {"FULL", "EXTRA", "NORMAL"}:
        raise InputError(f"--synchronous must be FULL, EXTRA or NORMAL, got {value!r}")
    return value.upper()


def _read_entries(source: str) -> list[Any]:
    """Read and validate JSON-lines entries (every line first, so bad input changes nothing)."""
    from trustmesh._safeload import load_json
    from trustmesh.ledger import Entry

    if source == "-":
        stream = sys.stdin.buffer
        name = "<stdin>"
        lines = stream.read().splitlines()
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        lines = path.read_bytes().splitlines()
    entries = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_BYTES:
            raise InputError(f"{name}:{n}: line is longer than {MAX_LINE_BYTES} bytes")
        doc = load_json(raw, f"{name}:{n}")  # depth, size and finite-number limits (trustmesh._safeload)
        try:
            entries.append(Entry.from_dict(doc))
        except InputError as exc:
            raise InputError(f"{name}:{n}: {exc}") from None
    if not entries:
        raise InputError(f"{name}: no entries")
    return entries


@ledger_app.command("init")
@guarded
@_db_errors
def init_command(
    directory: Path = typer.Argument(..., help="Folder for the new ledger."),
    origin: str = typer.Option(..., "--origin", help="Log name: checkpoint origin line and key name, e.g. example.org/log."),
    synchronous: str = typer.Option("FULL", "--synchronous", help="SQLite durability: FULL (default) or NORMAL."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Create a ledger: database, Ed25519 log key (0600) and public verifier key."""
    from trustmesh.ledger import Ledger

    with Ledger.create(directory, origin, synchronous=_check_sync(synchronous)) as led:
        info = {"directory": str(directory), "origin": led.origin, "verifier_key": led.verifier_key}
    if json_out:
        print_json(info)
    else:
        console.print(f"created ledger {directory} (origin {origin})", highlight=False)
        console.print(f"verifier key: {info['verifier_key']}", highlight=False)


@ledger_app.command("append")
@guarded
@_db_errors
def append_command(
    directory: Path = typer.Argument(..., help="Ledger folder."),
    source: str = typer.Argument(None, help="'-' to read JSON lines from stdin."),
    file: Path | None = typer.Option(None, "--file", "-f", help="JSON-lines file: one {kind, payload, refs?, time?} per line."),
    checkpoint: bool = typer.Option(False, "--checkpoint", help="Sign a new checkpoint after the batch."),
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key",
        help="Name this request: a retry with the same key, input and --batch appends nothing twice and "
             "prints the original indices (the key is stored with each transaction)."),
    batch: int = typer.Option(APPEND_CHUNK, "--batch", help="Entries per durable transaction."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document at the end."),
) -> None:
    """Append entries in durable transactions and print each transaction's leaf indices as it commits."""
    from trustmesh.ledger import Ledger
    from trustmesh.ledger._ledger import check_idempotency_key

    if (file is None) == (source is None):
        raise InputError("give exactly one of --file FILE or '-' (stdin)")
    if source is not None and source != "-":
        raise InputError(f"unexpected argument {source!r}; use --file FILE or '-' for stdin")
    if not 1 <= batch <= 1_000_000:
        raise InputError(f"--batch must be in 1..1000000, got {batch}")
    if idempotency_key is not None:
        check_idempotency_key(idempotency_key)
        if len(idempotency_key) > 180:
            raise InputError("--idempotency-key must be at most 180 characters")
    entries = _read_entries(str(file) if file is not None else "-")  # all validated before any write
    if idempotency_key is None and len(entries) > batch:
        err_console.print("note: without --idempotency-key a retry after an interruption appends the "
                          "committed transactions again", highlight=False)
    with Ledger.open(directory) as led:
        indices: list[int] = []
        for n, start in enumerate(range(0, len(entries), batch)):
            key = None if idempotency_key is None else f"{idempotency_key}#{n}"
            got = led.append(entries[start : start + batch], idempotency_key=key)
            indices.extend(got)
            if not json_out:  # printed as soon as the transaction commits: a kill loses no printed index
                sys.stdout.write("".join(f"{i}\n" for i in got))
                sys.stdout.flush()
        cp = led.checkpoint() if checkpoint else None
    if json_out:
        print_json({"indices": indices, "checkpoint": None if cp is None else cp.to_bytes().decode()})


@ledger_app.command("checkpoint")
@guarded
@_db_errors
def checkpoint_command(
    directory: Path = typer.Argument(..., help="Ledger folder."),
    witness: list[Path] = typer.Option([], "--witness", help="Witness folder to ask for a cosignature (repeatable)."),
    quorum: int = typer.Option(0, "--quorum", help="Fail unless this many witnesses cosign."),
) -> None:
    """Sign a checkpoint of the current size (refusing one inconsistent with the last) and print the note."""
    from trustmesh.ledger import Ledger, Witness

    if not 0 <= quorum <= len(witness):
        raise InputError(f"--quorum must be between 0 and the number of --witness folders ({len(witness)}), got {quorum}")
    witnesses = [Witness.open(w) for w in witness]
    with Ledger.open(directory) as led:
        cp = led.checkpoint(witnesses=witnesses, quorum=quorum)
    sys.stdout.write(cp.to_bytes().decode("utf-8"))


@ledger_app.command("prove")
@guarded
@_db_errors
def prove_command(
    directory: Path = typer.Argument(..., help="Ledger folder."),
    index: int = typer.Option(..., "--index", help="Leaf index."),
    size: int | None = typer.Option(None, "--size", help="Tree size (default: current)."),
    with_refs: bool = typer.Option(False, "--with-refs", help="Also prove every entry this one is based on, "
                                   "transitively (action -> decision -> incident -> alerts -> model)."),
    max_refs: int = typer.Option(500, "--max-refs", help="Stop following references after this many entries."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Print the inclusion proof of a leaf (leafIdx, treeSize, leafHash, root, proof; base64).

    With --with-refs, print the lineage: each referenced entry's kind, a short summary and its own
    inclusion proof against the same tree size, each verified before it is printed.
    """
    from trustmesh.ledger import Ledger, verify_inclusion

    with Ledger.open(directory, read_only=True) as led:
        proof = led.prove_inclusion(index, size)
        doc = proof.to_json()
        lineage: list[dict[str, object]] = []
        if with_refs:
            seen = {index}
            frontier = list(led.entry(index).refs)
            while frontier and len(lineage) < max_refs:
                ref = frontier.pop(0)
                if ref in seen:
                    continue
                seen.add(ref)
                entry = led.entry(ref)
                ref_proof = led.prove_inclusion(ref, proof.tree_size)
                verify_inclusion(ref_proof, proof.root_hash, led.entry_bytes(ref))
                lineage.append({"index": ref, "kind": entry.kind, "summary": _summary(entry.payload),
                                "refs": list(entry.refs), "proof": ref_proof.to_json()})
                frontier.extend(r for r in entry.refs if r not in seen)
            doc = {**doc, "entry": {"kind": led.entry(index).kind, "summary": _summary(led.entry(index).payload),
                                    "refs": list(led.entry(index).refs)}, "lineage": lineage}
    if json_out:
        print_json(doc)
        return
    console.print(f"leaf {doc['leafIdx']} of {doc['treeSize']}: root {doc['root']}", highlight=False)
    for h in doc["proof"]:
        console.print(f"  {h}", highlight=False)
    for item in lineage:
        console.print(f"  <- leaf {item['index']} {item['kind']}: {item['summary']} (inclusion verified)",
                      highlight=False)


def _summary(payload: dict[str, object]) -> str:
    """One line naming what an entry is about (ids, addresses, status) for lineage listings."""
    keys = ("status", "action", "targets", "incident_id", "technique_id", "source_ip", "destination_ip",
            "destination_port", "score", "model_id", "kind", "message")
    parts = [f"{k}={payload[k]}" for k in keys if k in payload and payload[k] not in (None, [], "")]
    return ", ".join(parts)[:200]


@ledger_app.command("consistency")
@guarded
@_db_errors
def consistency_command(
    directory: Path = typer.Argument(..., help="Ledger folder."),
    size1: int = typer.Option(..., "--from", help="Older tree size."),
    size2: int | None = typer.Option(None, "--to", help="Newer tree size (default: current)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Print the consistency proof between two tree sizes (size1, size2, root1, root2, proof; base64)."""
    from trustmesh.ledger import Ledger

    with Ledger.open(directory, read_only=True) as led:
        doc = led.prove_consistency(size1, size2).to_json()
    if json_out:
        print_json(doc)
    else:
        console.print(f"{doc['size1']} -> {doc['size2']}: {doc['root1']} -> {doc['root2']}", highlight=False)
        for h in doc["proof"]:
            console.print(f"  {h}", highlight=False)


@ledger_app.command("check-proof")
@guarded
@_db_errors
def check_proof_command(
    proof_file: Path = typer.Argument(..., help="JSON from `ledger prove --json` or `ledger consistency --json`."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Signed checkpoint note the proof must lead to."),
    log_key: str = typer.Option(..., "--log-key", help="Log verifier key (name+hash+base64) or @FILE (e.g. @DIR/log.pub)."),
    entry: Path | None = typer.Option(None, "--entry", help="File holding the exact entry bytes (inclusion proofs)."),
    old_checkpoint: Path | None = typer.Option(None, "--old-checkpoint", help="Older signed checkpoint (consistency proofs)."),
) -> None:
    """Check a proof offline against signed checkpoints (exit 0 verified, 1 rejected, 2 bad input)."""
    from trustmesh._safeload import load_json
    from trustmesh.ledger import (
        Checkpoint,
        ConsistencyProof,
        InclusionProof,
        NoteVerifier,
        verify_consistency,
        verify_inclusion,
    )

    def _read(path: Path) -> bytes:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        return path.read_bytes()

    key = NoteVerifier.from_vkey(_read(Path(log_key[1:])).decode().strip() if log_key.startswith("@") else log_key)
    cp = Checkpoint.from_bytes(_read(checkpoint))
    cp.verify(key)
    doc = load_json(_read(proof_file), str(proof_file))
    if isinstance(doc, dict) and "leafIdx" in doc:
        inc = InclusionProof.from_json(doc)
        verify_inclusion(inc, cp, None if entry is None else _read(entry))
        console.print(f"OK: leaf {inc.leaf_index} is in {cp.origin} at size {cp.size}", highlight=False)
        return
    cons = ConsistencyProof.from_json(doc)
    if old_checkpoint is None:
        raise InputError("a consistency proof needs --old-checkpoint")
    old = Checkpoint.from_bytes(_read(old_checkpoint))
    old.verify(key)
    verify_consistency(cons, old, cp)
    console.print(f"OK: size {old.size} is a prefix of size {cp.size} in {cp.origin}", highlight=False)


@ledger_app.command("verify")
@guarded
@_db_errors
def verify_command(
    directory: Path = typer.Argument(..., help="Ledger folder."),
    trusted_checkpoint: Path | None = typer.Option(None, "--trusted-checkpoint", help="A checkpoint note you kept earlier."),
    log_key: str | None = typer.Option(None, "--log-key", help="Pin the log's verifier key (name+hash+base64)."),
    witness_key: list[str] = typer.Option([], "--witness-key", help="Witness verifier key (repeatable)."),
    quorum: int = typer.Option(0, "--quorum", help="Witness cosignatures each checkpoint needs."),
    chain: str | None = typer.Option(None, "--chain", help="Also check the chain anchor ('embedded' or a JSON-RPC URL)."),
    require_checkpoint: bool = typer.Option(False, "--require-checkpoint", help="Fail (exit 1) when entries lie "
                                            "past the last signed checkpoint (an unsigned tail)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Recompute the whole log and check it against its checkpoints (exit 0 only if everything verifies).

    The entries past the last signed checkpoint (the unsigned tail) are verified against the recomputed
    tree but nobody has signed them yet; the report says how many there are.
    """
    from trustmesh.errors import CheckpointError
    from trustmesh.ledger import audit

    kept = None
    if trusted_checkpoint is not None:
        if not trusted_checkpoint.is_file():
            raise InputError(f"{trusted_checkpoint}: no such file")
        kept = trusted_checkpoint.read_bytes()
    report = audit(directory, kept, log_key=log_key, witness_keys=witness_key, quorum=quorum)
    doc: dict[str, Any] = report.to_json()
    doc["unsigned_entries"] = int(doc["size"]) - int(doc.get("latest_checkpoint_size") or 0)
    if require_checkpoint and doc["unsigned_entries"] > 0:
        raise CheckpointError(f"{directory}: {doc['unsigned_entries']} entries lie past the last signed checkpoint "
                              f"(size {doc.get('latest_checkpoint_size') or 0} of {doc['size']})")
    if chain is not None:
        try:
            from trustmesh.ledger.anchor import verify_anchor
        except ImportError as exc:
            raise InputError(f"anchoring not available: cannot import trustmesh.ledger.anchor ({exc})") from None
        doc["anchor"] = verify_anchor(Path(directory), chain)
    if json_out:
        print_json(doc)
    else:
        console.print(
            f"OK {doc['origin']}: {doc['size']} entries, root {doc['root']}, "
            f"{doc['checkpoints_verified']} checkpoints verified, {doc['unsigned_entries']} entries past the last "
            "checkpoint"
            + (f", trusted checkpoint of size {doc['trusted_checkpoint_size']} consistent" if kept else "")
            + (", anchor verified" if chain is not None else ""),
            highlight=False,
        )


@witness_app.command("init")
@guarded
@_db_errors
def witness_init_command(
    directory: Path = typer.Argument(..., help="Folder for the witness key and state."),
    name: str = typer.Option(..., "--name", help="Witness key name, e.g. witness.example.org/w1."),
    log_key: list[str] = typer.Option([], "--log-key", help="Verifier key of a log to witness (repeatable)."),
) -> None:
    """Create a witness (Ed25519 cosignature/v1 key, mode 0600) and print its public key."""
    from trustmesh.ledger import Witness

    w = Witness.create(directory, name)
    for k in log_key:
        w.trust_log(k)
    sys.stdout.write(w.verifier_key + "\n")


@witness_app.command("trust")
@guarded
@_db_errors
def witness_trust_command(
    directory: Path = typer.Argument(..., help="Witness folder."),
    log_key: str = typer.Option(..., "--log-key", help="Verifier key of the log (or @DIR/log.pub)."),
) -> None:
    """Add a log the witness will cosign."""
    from trustmesh.ledger import Witness

    key = Path(log_key[1:]).read_text(encoding="utf-8").strip() if log_key.startswith("@") else log_key
    Witness.open(directory).trust_log(key)


@witness_app.command("cosign")
@guarded
@_db_errors
def witness_cosign_command(
    directory: Path = typer.Argument(..., help="Witness folder."),
    ledger: Path = typer.Option(..., "--ledger", help="Ledger folder whose latest checkpoint to cosign."),
) -> None:
    """Verify the ledger's latest checkpoint (with a consistency proof), cosign it, store and print the note."""
    from trustmesh.ledger import Ledger, Witness

    w = Witness.open(directory)
    with Ledger.open(ledger) as led:
        cp = led.latest_checkpoint()
        if cp is None:
            raise InputError(f"{ledger}: no checkpoint yet; run `trustmesh ledger checkpoint {ledger}`")
        old = w.known_size(cp.origin)
        proof = list(led.prove_consistency(old, cp.size).path) if 0 < old < cp.size else []
        line = w.add_checkpoint(cp.to_bytes(), old_size=old, proof=proof)
        merged = led.add_cosignatures(cp.with_signatures((line,)), [w.verifier_key])
    sys.stdout.write(merged.to_bytes().decode("utf-8"))


@ledger_app.command("serve")
@guarded
@_db_errors
def serve_command(
    directory: Path = typer.Argument(..., help="Ledger folder."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (default: loopback only)."),
    client_keys: Path | None = typer.Option(None, "--client-keys", help="File of client verifier keys (one per line) allowed to submit."),
    identity_keys: Path | None = typer.Option(None, "--identity-keys", help="File of client verifier keys that may "
                                              "also submit identity.* entries (signed requests only)."),
    public_host: list[str] = typer.Option([], "--public-host", help="Host[:port] clients address this server by "
                                          "(repeatable); signed requests naming another host are refused."),
    require_all: bool = typer.Option(False, "--require-all", help="Require both a bearer token and a signature."),
) -> None:
    """Serve tlog-tiles, proofs and an authenticated submit endpoint over HTTP.

    Bearer tokens come from the TRUSTMESH_LEDGER_TOKENS environment variable (comma-separated), never
    from the command line; without tokens or client keys, writes are refused. Accepted request
    nonces persist in DIR/api-nonces.sqlite, so a restart does not reopen a replay window.
    """
    try:
        import uvicorn  # noqa: F401 - the api extra (its uvloop runs the server)

        from trustmesh.api import RequestAuth, create_ledger_app
        from trustmesh.api._ledger_http import serve_ledger
    except ImportError as exc:
        from trustmesh.errors import MissingDependencyError

        raise MissingDependencyError(exc.name or "fastapi", "api") from None
    if not 0 < port < 65536:
        raise InputError(f"--port must be in 1..65535, got {port}")
    tokens = [t for t in os.environ.get("TRUSTMESH_LEDGER_TOKENS", "").split(",") if t.strip()]
    def _keys(path: Path | None) -> list[str]:
        if path is None:
            return []
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]

    hosts = list(public_host)
    if host not in ("0.0.0.0", "::"):
        hosts.append(f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")
        if host == "127.0.0.1":
            hosts.append(f"localhost:{port}")
    auth = RequestAuth.from_config(tokens, _keys(client_keys), require_all=require_all,
                                   identity_keys=_keys(identity_keys), allowed_hosts=hosts)
    server_app = create_ledger_app(directory, auth=auth)
    console.print(f"serving {directory} on http://{host}:{port} (writes {'enabled' if auth.configured else 'disabled'})",
                  highlight=False)
    try:
        serve_ledger(server_app, host, port)  # api/_ledger_http.py: submit answered in one write
    finally:
        writer = server_app.state.writer
        writer.close()  # answers what is queued, then stops the group-commit writer
        server_app.state.ledger.close()
        console.print(f"stopped: {writer.requests} add-entries requests in {writer.groups} group commits",
                      highlight=False)


def _run_bench(
    sizes: list[int], *, batch: int, synchronous: str, proofs: int, directory: Path | None, show_progress: bool
) -> dict[str, Any]:
    """Build one log up to max(sizes) in durable batches, timing appends, then proofs at each size."""
    import platform
    import random
    import tempfile
    import time

    from trustmesh.cli._common import progress
    from trustmesh.ledger import Entry, Ledger, verify_consistency, verify_inclusion

    rng = random.Random(0)
    pool_n = min(batch, 50_000)
    t0 = time.perf_counter()
    pool = [Entry("alert", {"flow": f"f{i:08d}", "score": round(rng.random(), 4), "src": "10.0.0.1"},
                  time=1.7e9 + i) for i in range(pool_n)]
    entry_build_us = (time.perf_counter() - t0) / pool_n * 1e6
    top = max(sizes)
    tmp = tempfile.TemporaryDirectory(dir=directory)
    out: dict[str, Any] = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
                           "batch": batch, "synchronous": synchronous, "sizes": []}
    try:
        led = Ledger.create(Path(tmp.name) / "log", "bench.trustmesh/log", synchronous=synchronous)
        append_s = append_cpu = 0.0
        with progress(show_progress) as bar:
            task = bar.add_task("building log", total=top)
            for target in sizes:
                while led.size < target:
                    n = min(batch, target - led.size)
                    chunk = pool[:n] if n <= pool_n else (pool * (n // pool_n + 1))[:n]
                    t, c = time.perf_counter(), time.process_time()
                    led.append(chunk)
                    append_s += time.perf_counter() - t
                    append_cpu += time.process_time() - c
                    bar.update(task, completed=led.size)
                out["sizes"].append(_bench_proofs(led, target, proofs, rng, verify_inclusion, verify_consistency))
        out["append"] = {"entries": top, "seconds": round(append_s, 3), "entries_per_s": top / append_s,
                         "cpu_seconds": round(append_cpu, 3), "entries_per_cpu_s": top / max(append_cpu, 1e-9),
                         "entry_build_us": round(entry_build_us, 2)}
        led.close()
    finally:
        tmp.cleanup()
    from pymerkle import InmemoryTree

    raws = [e.to_bytes() for e in pool]
    tree = InmemoryTree(algorithm="sha256")
    m = min(200_000, top)
    t, c = time.perf_counter(), time.process_time()
    for i in range(m):
        tree.append_entry(raws[i % pool_n])
    pm_rate = m / (time.perf_counter() - t)
    out["append"]["pymerkle_entries_per_cpu_s"] = m / max(time.process_time() - c, 1e-9)
    out["append"]["pymerkle_entries_per_s"] = pm_rate
    out["append"]["pymerkle_entries"] = m
    out["append"]["speedup_vs_pymerkle"] = out["append"]["entries_per_s"] / pm_rate
    out["load_average"] = os.getloadavg()
    return out


def _bench_proofs(led: Any, n: int, count: int, rng: Any, verify_inclusion: Any, verify_consistency: Any) -> dict[str, Any]:
    import time

    led.store.checkpoint_wal()
    disk = led.store.disk_bytes()
    root = led.root(n)
    idx = [rng.randrange(n) for _ in range(count)]
    t, c = time.perf_counter(), time.process_time()
    inc = [led.prove_inclusion(i, n) for i in idx]
    prove_us = (time.perf_counter() - t) / count * 1e6
    prove_cpu_us = (time.process_time() - c) / count * 1e6
    t, c = time.perf_counter(), time.process_time()
    for p in inc:
        verify_inclusion(p, root)
    verify_us = (time.perf_counter() - t) / count * 1e6
    verify_cpu_us = (time.process_time() - c) / count * 1e6
    olds = [rng.randrange(1, n) if n > 1 else 1 for _ in range(count)]
    t, c0 = time.perf_counter(), time.process_time()
    cons = [led.prove_consistency(m, n) for m in olds]
    cprove_us = (time.perf_counter() - t) / count * 1e6
    cprove_cpu_us = (time.process_time() - c0) / count * 1e6
    roots = {m: led.root(m) for m in set(olds)}
    t, c0 = time.perf_counter(), time.process_time()
    for c in cons:
        verify_consistency(c, roots[c.size1], root)
    cverify_us = (time.perf_counter() - t) / count * 1e6
    cverify_cpu_us = (time.process_time() - c0) / count * 1e6
    return {"size": n, "inclusion_prove_us": prove_us, "inclusion_verify_us": verify_us,
            "inclusion_prove_cpu_us": prove_cpu_us, "inclusion_verify_cpu_us": verify_cpu_us,
            "consistency_prove_us": cprove_us, "consistency_verify_us": cverify_us,
            "consistency_prove_cpu_us": cprove_cpu_us, "consistency_verify_cpu_us": cverify_cpu_us,
            "proofs": count, "disk_bytes": disk, "bytes_per_entry": disk / n}


@bench_app.command("ledger")
@guarded
def bench_ledger_command(
    sizes: str = typer.Option("1000000", "--sizes", help="Comma-separated log sizes for proof latency."),
    max_size: int = typer.Option(1_000_000, "--max-size", help="Largest log to build (caps --sizes)."),
    batch: int = typer.Option(50_000, "--batch", help="Entries per durable append batch."),
    synchronous: str = typer.Option("FULL", "--synchronous", help="SQLite durability: FULL or NORMAL."),
    proofs: int = typer.Option(2000, "--proofs", help="Proofs timed per size."),
    directory: Path | None = typer.Option(None, "--dir", help="Where to build the logs (default: a temp folder)."),
    serve_clients: int = typer.Option(0, "--serve-clients", help="Instead: N concurrent clients appending one "
                                      "signed entry per request to a real `ledger serve` (group commit)."),
    serve_seconds: float = typer.Option(10.0, "--serve-seconds", help="How long the --serve-clients run lasts."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Durable append rate (vs pymerkle in memory), proof latency and bytes on disk per entry.

    With ``--serve-clients N``: single-entry appends/s and latency from N concurrent clients to a real
    ``trustmesh ledger serve`` process, and a check that every acknowledged entry is on disk once.
    """
    if serve_clients:
        if not 1 <= serve_clients <= 1000 or not 0 < serve_seconds <= 600:
            raise InputError("--serve-clients must be in 1..1000 and --serve-seconds in (0, 600]")
        from trustmesh.cli._bench_serve import bench_serve

        res = bench_serve(serve_clients, serve_seconds, directory)
        if json_out:
            print_json(res)
        else:
            console.print(f"ledger serve: {res['appends_per_s']:,.0f} single-entry appends/s from {serve_clients} "
                          f"clients; p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms; {res['acknowledged']} "
                          f"acknowledged, ledger size {res['ledger_size']} "
                          f"({'all durable, none twice' if res['durable_and_unique'] else 'MISMATCH'}); "
                          f"load {res['load_average'][0]:.2f}", highlight=False)
        if not res["durable_and_unique"] or res["errors"]:
            raise typer.Exit(1)
        return
    try:
        size_list = sorted({int(x) for x in sizes.split(",") if x.strip()})
    except ValueError:
        raise InputError(f"--sizes must be comma-separated integers, got {sizes!r}") from None
    if not size_list or min(size_list) < 1 or batch < 1 or proofs < 1:
        raise InputError("--sizes, --batch and --proofs must be >= 1")
    report = _run_bench([s for s in size_list if s <= max_size] or [max_size], batch=batch,
                       synchronous=_check_sync(synchronous), proofs=proofs, directory=directory, show_progress=not json_out)
    if json_out:
        print_json(report)
        return
    a = report["append"]
    console.print(f"append: {a['entries_per_s']:,.0f} entries/s durable (batches of {batch}, synchronous={synchronous}); "
                  f"pymerkle in memory {a['pymerkle_entries_per_s']:,.0f}/s -> {a['speedup_vs_pymerkle']:.1f}x", highlight=False)
    for row in report["sizes"]:
        console.print(f"n={row['size']:>10,}: inclusion prove {row['inclusion_prove_us']:.0f} us, verify "
                      f"{row['inclusion_verify_us']:.0f} us; consistency prove {row['consistency_prove_us']:.0f} us, "
                      f"verify {row['consistency_verify_us']:.0f} us; {row['bytes_per_entry']:.0f} B/entry on disk",
                      highlight=False)


# ------------------------------------------------------------------------------------- get / search
# (issue 13, item 7: read the ledger from the CLI; added by the SOC-outputs work, docs/soc.md)


def _entry_doc(led: Any, index: int, *, full: bool) -> dict[str, Any]:
    entry = led.entry(index)
    payload = dict(entry.payload)
    if full and isinstance(payload.get("full_document_sha256"), str):
        # the entry keeps the sha256 of a large payload; get_blob checks the blob against it
        payload = json.loads(led.get_blob(payload["full_document_sha256"]))
    return {"index": index, "kind": entry.kind, "time": entry.time, "refs": list(entry.refs),
            "leaf_hash": led.leaf_hash(index).hex(), "payload": payload}


@ledger_app.command("get")
@guarded
@_db_errors
def get_command(
    directory: Path = typer.Argument(..., help="Ledger folder."),
    index: int = typer.Argument(..., help="Leaf index."),
    full: bool = typer.Option(False, "--full", help="Replace a blob-backed payload by the full, checked document."),
    prove: bool = typer.Option(False, "--prove", help="Add the inclusion proof, verified against the current root."),
) -> None:
    """Print one entry as JSON: index, kind, time, refs, leaf hash and payload (an alert is its ECS document)."""
    from trustmesh.ledger import Ledger, verify_inclusion

    with Ledger.open(directory, read_only=True) as led:
        if not 0 <= index < led.size:
            raise InputError(f"{directory}: index must be in 0..{led.size - 1}, got {index}")
        doc = _entry_doc(led, index, full=full)
        if prove:
            proof = led.prove_inclusion(index)
            verify_inclusion(proof, proof.root_hash, led.entry_bytes(index))
            doc["inclusion"] = proof.to_json()
    print_json(doc)


@ledger_app.command("search")
@guarded
@_db_errors
def search_command(
    directory: Path = typer.Argument(..., help="Ledger folder."),
    kind: list[str] = typer.Option([], "--kind", help="Entry kind (alert, incident, decision, ...); repeatable: any."),
    field: list[str] = typer.Option([], "--field", help="F=V on the payload, F a dotted path (source.ip=1.2.3.4, "
                                    "threat.technique.id=T1046); repeatable: all must match."),
    start: int = typer.Option(0, "--from", help="First leaf index to look at."),
    limit: int = typer.Option(100, "--limit", help="Stop after this many matches (0: no limit)."),
) -> None:
    """Print matching entries as JSON lines (newest last), each as ``trustmesh ledger get`` prints it."""
    from trustmesh.ledger import Ledger

    wanted: list[tuple[str, str]] = []
    for f in field:
        name, sep, value = f.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--field must be NAME=VALUE, got {f!r}")
        wanted.append((name.strip(), value))
    if start < 0 or limit < 0:
        raise InputError("--from and --limit must be >= 0")
    found = 0
    with Ledger.open(directory, read_only=True) as led:
        for i in range(start, led.size):
            entry = led.entry(i)
            if kind and entry.kind not in kind:
                continue
            if not all(any(value_matches(v, value) for v in field_values(entry.payload, name)) for name, value in wanted):
                continue
            sys.stdout.write(json.dumps(_entry_doc(led, i, full=False), sort_keys=True) + "\n")
            found += 1
            if limit and found >= limit:
                break
    sys.stdout.flush()
    err_console.print(f"{found} matching entr{'y' if found == 1 else 'ies'}", highlight=False)
