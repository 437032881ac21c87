"""The CLI's output streams: humans read stderr (rich), programs read stdout (JSON only).

``NO_COLOR`` is honoured by rich itself; progress bars are hidden when stderr is not a terminal
or ``--no-progress``/``--quiet`` is given.
"""

from __future__ import annotations

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


def print_json(document: Any) -> None:
    """Write one machine-readable JSON document to stdout (and only this goes to stdout)."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


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
