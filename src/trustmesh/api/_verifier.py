"""Ed25519 request signatures checked in a second process, next to ``ledger serve``'s event loop.

The server's event loop and its group-commit writer share one interpreter lock, and checking a
request's Ed25519 signature (OpenSSL, about 100 us on the 2-core build machine) was the largest
piece of the loop's work per request. :class:`SignatureChecker` sends the signatures that arrive in
one pass of the loop to a child process in one write (public key, signature, message), and the
child answers with one byte per signature. The check is the same ``Ed25519PublicKey.verify`` over
the same bytes; only where it runs changes. If the child dies, the checks are done in the server
again (logged once), so a request is never accepted unchecked.

Run as ``python -m trustmesh.api._verifier`` it is that child: it reads frames from stdin until EOF
(the server closed the pipe or died) and writes the answers to stdout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["SignatureChecker"]

log = logging.getLogger(__name__)

_HEAD: Final = struct.Struct(">II")  # payload bytes, items
_ITEM: Final = struct.Struct(">H")  # message bytes (then 32 bytes of key, 64 of signature, the message)
MAX_MESSAGE: Final = 8 << 10  # a signed request string is a few hundred bytes (fields are bounded)
MAX_BATCH: Final = 512  # signatures per frame


def _verify(keys: dict[bytes, Ed25519PublicKey], public: bytes, sig: bytes, message: bytes) -> bool:
    key = keys.get(public)
    if key is None:
        try:
            key = Ed25519PublicKey.from_public_bytes(public)
        except ValueError:
            return False
        if len(keys) < 10_000:
            keys[public] = key
    try:
        key.verify(sig, message)
    except InvalidSignature:
        return False
    return True


class SignatureChecker:
    """Check Ed25519 signatures in a child process; each result is delivered on ``loop``.

    Call :meth:`check` from the loop's thread; ``done(ok)`` is called on the loop, in order. A
    batch goes out at the end of the current pass of the loop (one write for every request that
    arrived in it).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._keys: dict[bytes, Ed25519PublicKey] = {}
        self._pending: list[tuple[bytes, bytes, bytes, Callable[[bool], None]]] = []
        self._sent: deque[list[tuple[bytes, bytes, bytes, Callable[[bool], None]]]] = deque()
        self._scheduled = False
        self._buf = bytearray()
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "trustmesh.api._verifier"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            bufsize=0, close_fds=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self._out, False)
        loop.add_reader(self._out, self._readable)

    @property
    def alive(self) -> bool:
        """Whether the child process is doing the checks (else they are done here)."""
        return self.proc is not None

    def check(self, public: bytes, sig: bytes, message: bytes, done: Callable[[bool], None]) -> None:
        """Check ``sig`` over ``message`` with the 32-byte Ed25519 key ``public``; call ``done(ok)`` on the loop."""
        if self.proc is None or len(public) != 32 or len(sig) != 64 or len(message) > MAX_MESSAGE:
            ok = len(sig) == 64 and _verify(self._keys, public, sig, message)
            self.loop.call_soon(done, ok)
            return
        self._pending.append((public, sig, message, done))
        if len(self._pending) >= MAX_BATCH:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self.proc is None:
            self._here(batch)
            return
        parts = []
        for public, sig, message, _ in batch:
            parts += [_ITEM.pack(len(message)), public, sig, message]
        payload = b"".join(parts)
        data = memoryview(_HEAD.pack(len(payload), len(batch)) + payload)
        self._sent.append(batch)
        try:
            while data:  # a blocking pipe: a frame is at most MAX_BATCH * ~8 KiB; the child reads at once
                n = os.write(self._in, data)
                data = data[n:]
        except OSError as exc:
            self._died(f"writing to it failed ({exc})")

    def _readable(self) -> None:
        try:
            data = os.read(self._out, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._died(f"reading from it failed ({exc})")
            return
        if not data:
            self._died("it exited")
            return
        self._buf += data
        while len(self._buf) >= 4:
            n = int.from_bytes(self._buf[:4], "big")
            if len(self._buf) < 4 + n:
                return
            results, self._buf = bytes(self._buf[4:4 + n]), self._buf[4 + n:]
            if not self._sent or len(self._sent[0]) != n:
                self._died("its answer does not match the batch sent")
                return
            for item, ok in zip(self._sent.popleft(), results, strict=True):
                item[3](ok == 1)

    def _here(self, batch: list[tuple[bytes, bytes, bytes, Callable[[bool], None]]]) -> None:
        for public, sig, message, done in batch:
            done(_verify(self._keys, public, sig, message))

    def _died(self, why: str) -> None:
        """Check what the child had not answered here, and every later signature too."""
        if self.proc is None:
            return
        log.error("the signature-checking process stopped (%s); checking signatures in the server", why)
        self._stop_child()
        while self._sent:
            self._here(self._sent.popleft())

    def _stop_child(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            self.loop.remove_reader(self._out)
        except (RuntimeError, ValueError):  # pragma: no cover - the loop is closed already
            pass
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - it exits on EOF
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Answer what is outstanding (checked here) and stop the child."""
        batch, self._pending = self._pending, []
        self._stop_child()
        while self._sent:
            self._here(self._sent.popleft())
        self._here(batch)


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        more = stream.read(n - got)
        if not more:
            return None
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def main() -> int:
    """Child side: answer frames from stdin until EOF."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    keys: dict[bytes, Ed25519PublicKey] = {}
    while True:
        head = _read_exactly(inp, _HEAD.size)
        if head is None:
            return 0
        size, count = _HEAD.unpack(head)
        if count > MAX_BATCH or size > MAX_BATCH * (2 + 96 + MAX_MESSAGE):
            return 2
        payload = _read_exactly(inp, size)
        if payload is None:
            return 0
        results = bytearray()
        off = 0
        for _ in range(count):
            (length,) = _ITEM.unpack_from(payload, off)
            public, sig = payload[off + 2:off + 34], payload[off + 34:off + 98]
            message = payload[off + 98:off + 98 + length]
            off += 98 + length
            results.append(1 if _verify(keys, public, sig, message) else 0)
        out.write(len(results).to_bytes(4, "big") + bytes(results))
        out.flush()


if __name__ == "__main__":
    raise SystemExit(main())
