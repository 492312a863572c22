"""Shared CLI plumbing: one-line errors, JSON output, logging, progress bars."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from trustmesh.errors import TrustmeshError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_ENVIRONMENT",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_VERIFIED",
    "classify",
    "console",
    "err_console",
    "fail",
    "guarded",
    "print_json",
    "progress",
    "setup_logging",
]

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)


def setup_logging(verbose: int) -> None:
    """Configure root logging on stderr: -v INFO, -vv DEBUG."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line on stderr and return the Exit to raise."""
    from rich.markup import escape

    one_line = " ".join(message.split())  # a message is one line, whatever a library put in it
    # escaped: a file name or value like "[/x]" inside the message must not be read as rich markup
    err_console.print(f"[bold red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


#: Exit codes shared by every command (documented in README "Exit codes" and errors.py).
EXIT_NOT_VERIFIED = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130


def classify(exc: BaseException) -> tuple[int, str] | None:
    """Return ``(exit code, one-line message)`` for an error a command may raise, or None for a bug.

    ``VerificationError`` -> 1 (does not verify); ``EnvironmentProblem`` and the OS errors that describe
    the machine (disk full, read-only media, permissions) -> 3, naming the path; every other
    ``TrustmeshError`` and input-shaped OS error -> 2 (bad input).
    """
    import sqlite3

    from trustmesh.errors import EnvironmentProblem, VerificationError

    if isinstance(exc, VerificationError):
        return EXIT_NOT_VERIFIED, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, EnvironmentProblem):
        return EXIT_ENVIRONMENT, f"environment: {exc}"
    if isinstance(exc, TrustmeshError):
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, FileNotFoundError):
        return EXIT_BAD_INPUT, f"{exc.filename}: no such file or directory"
    if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError)):
        return EXIT_BAD_INPUT, f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, OSError):
        env = EnvironmentProblem.from_os_error(exc)
        if env is not None:
            return EXIT_ENVIRONMENT, f"environment: {env}"
        return EXIT_ENVIRONMENT, f"environment: {exc.filename or 'I/O'}: {exc.strerror or exc}"
    if isinstance(exc, sqlite3.OperationalError):  # escaped the ledger's own translation
        return EXIT_ENVIRONMENT, f"environment: database: {exc}"
    if isinstance(exc, UnicodeDecodeError):
        return EXIT_BAD_INPUT, f"input is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, RecursionError):
        return EXIT_BAD_INPUT, "input is nested too deeply"
    return None


def guarded(func: Callable[P, R]) -> Callable[P, R]:
    """Turn any TrustmeshError (and OS errors) raised by a command into one line and its exit code.

    Exit 1: does not verify; 2: bad input; 3: the environment (disk full, read-only, permissions);
    130: interrupted. See :func:`classify`.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            raise fail("interrupted", code=EXIT_INTERRUPTED) from None
        except (TrustmeshError, OSError, UnicodeDecodeError, RecursionError) as exc:
            known = classify(exc)
            if known is None:  # pragma: no cover - classify knows every type caught here
                raise
            raise fail(known[1], code=known[0]) from None
        except Exception as exc:
            import sqlite3

            if isinstance(exc, sqlite3.OperationalError):
                code, message = classify(exc) or (EXIT_ENVIRONMENT, str(exc))
                raise fail(message, code=code) from None
            raise

    return wrapper


def print_json(obj: Any) -> None:
    """Write one JSON document to stdout (no rich markup)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def progress(enabled: bool = True) -> Iterator[Progress]:
    """A rich progress bar on stderr; disabled (silent) for --json runs or when not a terminal."""
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not enabled,
    )
    with bar:
        yield bar
