"""CLI commands: ``trustmesh witness serve`` (a C2SP tlog-witness HTTP server) and
``trustmesh ledger witness collect`` (the log side: ask witnesses over HTTP, store a quorum).

The protocol logic (parsing, checks, status codes, state) is in :mod:`trustmesh.ledger._witness`;
this module only moves bytes over HTTP with the standard library.
"""

from __future__ import annotations

import logging
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import typer

from trustmesh.cli._common import console, err_console, guarded
from trustmesh.cli._root import app
from trustmesh.cli.ledger import witness_app as ledger_witness_app
from trustmesh.errors import InputError

__all__ = ["collect_cosignatures", "make_witness_server", "witness_app"]

log = logging.getLogger(__name__)

witness_app = typer.Typer(help="Serve a C2SP tlog-witness (add-checkpoint over HTTP).", no_args_is_help=True)
app.add_typer(witness_app, name="witness")

MAX_RESPONSE_BYTES = 64 * 1024


def make_witness_server(directory: Path, host: str, port: int, prefix: str = "") -> ThreadingHTTPServer:
    """Return an HTTP server answering ``POST <prefix>/add-checkpoint`` for the witness in ``directory``."""
    from trustmesh.ledger import Witness
    from trustmesh.ledger._witness import MAX_REQUEST_BYTES

    witness = Witness.open(directory)
    route = prefix.rstrip("/") + "/add-checkpoint"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the spec recommends
        server_version = "trustmesh-witness"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
            log.info("%s %s", self.address_string(), format % args)

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if urllib.parse.urlsplit(self.path).path != route:
                self._reply(404, "text/plain; charset=utf-8", b"not found\n")
                return
            length = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding") or length is None or not length.isdigit():
                self.close_connection = True
                self._reply(411, "text/plain; charset=utf-8", b"a Content-Length is required\n")
                return
            if int(length) > MAX_REQUEST_BYTES:
                self.close_connection = True  # the body is not read: drop the connection after answering
                self._reply(413, "text/plain; charset=utf-8", f"body over {MAX_REQUEST_BYTES} bytes\n".encode())
                return
            body = self.rfile.read(int(length))
            answer = witness.handle_add_checkpoint(body)
            self._reply(answer.status, answer.content_type, answer.body)

        def do_GET(self) -> None:  # noqa: N802
            self._reply(405 if urllib.parse.urlsplit(self.path).path == route else 404,
                        "text/plain; charset=utf-8", b"use POST <prefix>/add-checkpoint\n")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


@witness_app.command("serve")
@guarded
def serve_command(
    directory: Path = typer.Argument(..., help="Witness folder (from `trustmesh ledger witness init`)."),
    port: int = typer.Option(8081, "--port", help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (default: loopback only)."),
    prefix: str = typer.Option("", "--prefix", help="Submission prefix, e.g. /witness (default: none)."),
) -> None:
    """Answer C2SP tlog-witness add-checkpoint requests; state (last cosigned size per log) persists."""
    if not 0 < port < 65536:
        raise InputError(f"--port must be in 1..65535, got {port}")
    if prefix and not prefix.startswith("/"):
        raise InputError(f"--prefix must start with '/', got {prefix!r}")
    server = make_witness_server(directory, host, port, prefix)
    console.print(f"witness serving on http://{host}:{server.server_address[1]}{prefix.rstrip('/')}/add-checkpoint",
                  highlight=False)
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _post(url: str, body: bytes, timeout: float) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain; charset=utf-8"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - scheme checked by the caller
            return int(resp.status), resp.headers.get("Content-Type", ""), resp.read(MAX_RESPONSE_BYTES)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.headers.get("Content-Type", ""), exc.read(MAX_RESPONSE_BYTES)


def collect_cosignatures(led: Any, witnesses: list[tuple[str, str]], quorum: int, *, timeout: float = 10.0) -> Any:
    """Ask each ``(url, witness vkey)`` to cosign the latest checkpoint; store what verifies; enforce ``quorum``.

    Follows the tlog-witness client rules: start from old size 0, and on 409 retry once from the
    size the witness reports, with a consistency proof. Lines by other keys are ignored; a line by
    the witness's key must verify before it is stored. Raise WitnessError (after storing what it
    got) if fewer than ``quorum`` distinct witnesses cosigned.
    """
    from trustmesh.errors import SignatureError, WitnessError
    from trustmesh.ledger import NoteVerifier
    from trustmesh.ledger._note import SignedNote
    from trustmesh.ledger._witness import SIZE_CONTENT_TYPE, distinct_witness_keys

    cp = led.latest_checkpoint()
    if cp is None:
        raise InputError(f"{led.directory}: no checkpoint yet; run `trustmesh ledger checkpoint`")
    keys = distinct_witness_keys([k for _, k in witnesses])
    if not 0 <= quorum <= len(keys):
        raise InputError(f"--quorum must be in [0, {len(keys)}] (distinct witness keys), got {quorum}")
    got, errors, used = [], [], []
    for url, vkey in witnesses:
        key = NoteVerifier.from_vkey(vkey)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise InputError(f"witness URL must be http(s)://..., got {url!r}")
        endpoint = url.rstrip("/") + "/add-checkpoint"
        old = 0
        try:
            for _attempt in range(2):
                proof = led.prove_consistency(old, cp.size).path if 0 < old < cp.size else ()
                body = (f"old {old}\n" + "".join(_b64(h) + "\n" for h in proof) + "\n").encode() + cp.to_bytes()
                status, ctype, answer = _post(endpoint, body, timeout)
                if status == 409 and ctype.split(";")[0].strip() == SIZE_CONTENT_TYPE and old == 0:
                    text = answer.decode("ascii", "replace").strip()
                    if not text.isdigit() or int(text) > cp.size:
                        raise WitnessError(f"witness knows size {text[:30]!r}, beyond this checkpoint ({cp.size})")
                    old = int(text)
                    continue
                break
            if status != 200:
                raise WitnessError(f"HTTP {status}: {answer[:200].decode('utf-8', 'replace').strip()}")
            note = SignedNote.from_bytes(cp.to_bytes() + answer)
            line = note.signature_by(key)
            if line is None:
                raise WitnessError("the response carries no cosignature by the configured witness key")
            key.verify_note_signature(cp.body(), line.signature)
            got.append(line)
            used.append(key)
        except (OSError, WitnessError, SignatureError, InputError) as exc:
            errors.append(f"{url}: {exc}")
            err_console.print(f"warning: witness {url}: {exc}", highlight=False, soft_wrap=True)
    merged = led.add_cosignatures(cp.with_signatures(tuple(got)), used) if got else cp
    count = len(distinct_witness_keys(used))
    if count < quorum:
        raise WitnessError(f"only {count} of the required {quorum} witnesses cosigned size {cp.size}: "
                           + "; ".join(errors), index=cp.size)
    return merged


def _b64(h: bytes) -> str:
    import base64

    return base64.b64encode(h).decode("ascii")


def _vkey_arg(value: str) -> str:
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        return path.read_text(encoding="utf-8").strip()
    return value


@ledger_witness_app.command("collect")
@guarded
def collect_command(
    directory: Path = typer.Argument(..., help="Ledger folder whose latest checkpoint to get cosigned."),
    witness_url: list[str] = typer.Option([], "--witness-url", help="Witness submission prefix URL (repeatable)."),
    witness_key: list[str] = typer.Option([], "--witness-key", help="That witness's verifier key, or @FILE "
                                          "(repeatable, in the same order as --witness-url)."),
    quorum: int = typer.Option(1, "--quorum", help="Fail (exit 1) unless this many distinct witnesses cosign."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds per HTTP request."),
) -> None:
    """Collect tlog-witness cosignatures over HTTP for the latest checkpoint, store them, print the note."""
    from trustmesh.ledger import Ledger

    if not witness_url or len(witness_url) != len(witness_key):
        raise InputError("give one --witness-key per --witness-url (at least one pair)")
    if not 0 < timeout <= 300:
        raise InputError(f"--timeout must be in (0, 300], got {timeout}")
    pairs = [(u, _vkey_arg(k)) for u, k in zip(witness_url, witness_key, strict=True)]
    with Ledger.open(directory) as led:
        merged = collect_cosignatures(led, pairs, quorum, timeout=timeout)
    sys.stdout.write(merged.to_bytes().decode("utf-8"))
