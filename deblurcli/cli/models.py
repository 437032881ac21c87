"""`deblurcli models` (work in progress)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="List, inspect, download and verify models.")
