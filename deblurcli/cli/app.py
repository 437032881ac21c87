"""The ``deblurcli`` Typer application: explicit command registration and central error mapping.

Heavy modules (torch, the engine) are imported inside command bodies, so ``--help`` and
``--version`` answer instantly.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from deblurcli import __version__
from deblurcli.cli import (
    _help,
    bench,
    blur,
    deblur,
    deblur_ref,
    deconvolve,
    deconvolve_blind,
    models,
    train,
)
from deblurcli.cli._console import error_line
from deblurcli.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, DeblurError

_help.install()

EPILOG = (
    "Exit codes: 0 ok · 1 internal error · 2 usage error · 3 some inputs failed · "
    "4 model unavailable · 5 checksum mismatch · 6 out of memory · 130 interrupted.  "
    "Set DEBLURCLI_DEBUG=1 for tracebacks."
)

app = typer.Typer(
    name="deblurcli",
    help="Remove blur from photographs: pretrained networks, blind and non-blind deconvolution, "
    "training and benchmarks.\n\nExamples:\n\n"
    "  deblurcli deblur examples/gopro_blurry.png --method nafnet -o out/gopro_sharp.png\n\n"
    "  deblurcli deconvolve-blind examples/levin_im1_kernel2_blurry.png -o out/levin.png\n\n"
    "  deblurcli models list",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"deblurcli {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Remove blur from photographs."""


app.command("deblur", epilog=EPILOG)(deblur.deblur)
app.command("deblur-ref", epilog=EPILOG)(deblur_ref.deblur_ref)
app.command("blur", epilog=EPILOG)(blur.blur)
app.command("deconvolve", epilog=EPILOG)(deconvolve.deconvolve)
app.command("deconvolve-blind", epilog=EPILOG)(deconvolve_blind.deconvolve_blind)
app.add_typer(models.app, name="models")
app.add_typer(bench.app, name="bench")
app.add_typer(train.app, name="train")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with a documented code; library errors become one-line messages."""
    # PyTorch's CPU allocator backs each buffer of 2 MiB or more with transparent huge pages when
    # this is set (read at its first allocation). Large tiles then cost far fewer page faults:
    # 1 MP inference 1.3-1.4x faster on 2 cores (README, "Speed on the CPU"); =0 opts out.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    command = typer.main.get_command(app)
    debug = os.environ.get("DEBLURCLI_DEBUG", "") not in ("", "0")
    try:
        result = command.main(args=argv, prog_name="deblurcli", standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        error_line("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.TyperException as exc:  # usage errors of the (vendored) Click layer
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            error_line(str(exc))
        sys.exit(getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)
    except DeblurError as exc:
        if debug:
            traceback.print_exc()
        error_line(str(exc))
        sys.exit(exc.exit_code)
    except OSError as exc:  # a file that cannot be read or written (disk full, permission)
        if debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        error_line(f"{where}{exc.strerror or exc}")
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # a bug: say so, exit 1
        if debug:
            traceback.print_exc()
        error_line(f"internal error: {type(exc).__name__}: {exc} (DEBLURCLI_DEBUG=1 for details)")
        sys.exit(EXIT_INTERNAL)
    if result == EXIT_INTERRUPTED:  # Click turns Ctrl-C into a silent return of 130
        error_line("interrupted")
    sys.exit(result if isinstance(result, int) else 0)
