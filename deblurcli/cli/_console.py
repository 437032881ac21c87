"""The CLI's output streams: humans read stderr (rich), programs read stdout (JSON only).

``NO_COLOR`` is honoured by rich itself; progress bars are hidden when stderr is not a terminal
or ``--no-progress``/``--quiet`` is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

err_console = Console(stderr=True, highlight=False)
"""Console for everything meant for a person: progress, warnings, errors, tables."""
if not err_console.is_terminal and "COLUMNS" not in os.environ:
    err_console.width = 132  # logs and pipes: don't squeeze tables into 80 columns


def print_json(document: Any) -> bool:
    """Write one machine-readable JSON document to stdout (and only this goes to stdout).

    A reader that has gone away (``| head``, a closed pipe) costs a warning line on stderr, not
    a traceback: stdout is pointed at ``os.devnull`` so the interpreter's final flush is quiet,
    and the command keeps its own exit code. Returns whether the document was delivered.
    """
    try:
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # ValueError: stdout already closed
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        warn("stdout was closed before the JSON summary could be written")
        return False
    return True


def warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)


def info(message: str, *, quiet: bool = False) -> None:
    """Print a one-line status message on stderr unless ``quiet``."""
    if not quiet:
        err_console.print(message, soft_wrap=True)


def error_line(message: str) -> None:
    """Print a one-line error on stderr."""
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)


def progress_enabled(no_progress: bool, quiet: bool) -> bool:
    """Whether to draw progress bars: only for a terminal, and not when asked to be quiet."""
    return not (no_progress or quiet) and err_console.is_terminal
