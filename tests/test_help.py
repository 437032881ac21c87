"""Help that teaches: no type metavars, no braces, examples that copy-paste at 100 columns."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from deblurcli.cli.app import app

TYPE_METAVAR = re.compile(r"<(bool|str|int|float|path|file|dir|list|text)\b")


def _commands() -> list[tuple[list[str], object]]:
    found: list[tuple[list[str], object]] = []

    def walk(command: object, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = _commands()


def _examples(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines()
            if line.strip().startswith(("deblurcli ", "torchrun "))]


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "deblurcli"
                                                          for p, _ in COMMANDS])
def test_help_at_100_columns(path: list[str], command: object) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert not TYPE_METAVAR.search(text), TYPE_METAVAR.search(text)
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage
    assert "…" not in text  # nothing truncated
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 100
    shown = {line.strip() for line in text.splitlines()}
    examples = _examples(getattr(command, "help", None))
    assert examples, f"{' '.join(path) or 'deblurcli'} has no example"
    for example in examples:
        assert example in shown, f"example wrapped or missing: {example}"
    broken = [line for line in (getattr(command, "help", None) or "").splitlines()
              if line.strip().startswith("-")]
    assert not broken, f"an example continues on another line: {broken}"


def test_flags_take_no_value_in_help() -> None:
    result = CliRunner().invoke(app, ["deblur", "--help"], env={"COLUMNS": "100"})
    line = next(x for x in result.output.splitlines() if "--overwrite" in x)
    assert line.split("--overwrite")[1].split()[0] == "Replace"
