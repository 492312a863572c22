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

__all__ = ["console", "err_console", "fail", "guarded", "print_json", "progress", "setup_logging"]

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
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def guarded(func: Callable[P, R]) -> Callable[P, R]:
    """Turn any TrustmeshError (and common OS errors) raised by a command into one line and exit 2.

    Verification failures exit 1 so scripts can tell "does not verify" from "bad input".
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from trustmesh.errors import VerificationError

        try:
            return func(*args, **kwargs)
        except VerificationError as exc:
            name = type(exc).__name__
            raise fail(f"{name}: {exc}", code=1) from None
        except TrustmeshError as exc:
            raise fail(str(exc)) from None
        except FileNotFoundError as exc:
            raise fail(f"{exc.filename}: no such file or directory") from None
        except PermissionError as exc:
            raise fail(f"{exc.filename}: permission denied") from None
        except KeyboardInterrupt:
            raise fail("interrupted", code=130) from None

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
