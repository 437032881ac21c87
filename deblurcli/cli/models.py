"""``deblurcli models``: list, inspect, download and verify the models of the model table."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from deblurcli.cli import _options as opt
from deblurcli.cli._console import err_console, info, print_json

app = typer.Typer(
    no_args_is_help=True,
    help="List, inspect, download and verify models (shipped in weights/ or on the Hub).",
)

RefsArg = Annotated[
    Optional[list[str]],
    typer.Argument(help="Model names (name or name@tag); default: every model.",
                   show_default=False),
]


def _entry_json(entry: Any, default: str | None) -> dict[str, Any]:
    return {
        "ref": entry.ref, "name": entry.name, "tag": entry.tag, "arch": entry.arch,
        "description": entry.description, "size": entry.size, "sha256": entry.sha256,
        "shipped": entry.file is not None and entry.file.is_file(),
        "hub": None if entry.hub is None else vars(entry.hub),
        "default": entry.name == default,
        **entry.details,
    }


def _selected(refs: list[str] | None) -> tuple[Any, list[Any]]:
    from deblurcli.engine.zoo import load_model_table, parse_reference

    table = load_model_table()
    if not refs:
        return table, list(table.entries)
    return table, [table.find(*parse_reference(ref)) for ref in refs]


@app.command("list")
def list_models(json_output: opt.JsonOpt = False) -> None:
    """List known models: name@tag, architecture, size and where the file comes from."""
    from rich.table import Table

    table, entries = _selected(None)
    if json_output:
        models = [_entry_json(e, table.default) for e in entries]
        print_json({"default": table.default, "models": models})
        return
    if not entries:
        info("no models in the model table yet")
        return
    view = Table("model", "arch", "size", "source", "description")
    for e in entries:
        shipped = e.file is not None and e.file.is_file()
        source = "shipped" if shipped else "hub" if e.hub else "missing"
        star = " (default)" if e.name == table.default else ""
        view.add_row(e.ref + star, e.arch, f"{e.size / 1e6:.1f} MB", source, e.description)
    err_console.print(view)


@app.command("info")
def model_info(
    ref: Annotated[str, typer.Argument(help="Model name, name@tag or .safetensors path.")],
    offline: opt.OfflineOpt = False,
    cache_dir: opt.CacheDirOpt = None,
    json_output: opt.JsonOpt = False,
) -> None:
    """Show a model's table entry, descriptor and stored architecture config."""
    import json

    from deblurcli.engine import read_metadata, resolve

    resolved = resolve(ref, offline=offline, cache_dir=cache_dir)
    metadata = read_metadata(resolved.path)
    document = {
        "ref": ref, "path": str(resolved.path), "source": resolved.source,
        "arch": metadata["arch"], "config": json.loads(metadata.get("config", "{}")),
        "info": json.loads(metadata.get("info", "{}")),
        "train": json.loads(metadata["train"]) if "train" in metadata else None,
        "entry": None if resolved.entry is None else _entry_json(resolved.entry, None),
    }
    if json_output:
        print_json(document)
    else:
        err_console.print_json(data=document)


@app.command("download")
def download(
    refs: RefsArg = None,
    cache_dir: opt.CacheDirOpt = None,
    json_output: opt.JsonOpt = False,
) -> None:
    """Fetch models into the Hugging Face cache (pinned revision, sha256 checked).

    Shipped models need no download. Example: deblurcli models download resunet@synth-v1
    """
    from deblurcli.engine import resolve

    table, entries = _selected(refs)
    results = []
    for entry in entries:
        resolved = resolve(entry.ref, table=table, cache_dir=cache_dir)
        info(f"{entry.ref}: {resolved.source} {resolved.path} (sha256 ok)")
        results.append({"ref": entry.ref, "path": str(resolved.path), "source": resolved.source})
    if json_output:
        print_json({"models": results})


@app.command("verify")
def verify(
    refs: RefsArg = None,
    cache_dir: opt.CacheDirOpt = None,
    json_output: opt.JsonOpt = False,
) -> None:
    """Check the sha256 of shipped and cached model files without any network access.

    Exit code 5 when any file is corrupt; models neither shipped nor cached are reported missing.
    """
    from deblurcli.engine import resolve
    from deblurcli.errors import EXIT_CHECKSUM, ChecksumMismatchError, ModelUnavailableError

    table, entries = _selected(refs)
    results, corrupt = [], False
    for entry in entries:
        try:
            resolved = resolve(entry.ref, table=table, offline=True, cache_dir=cache_dir)
            status, detail = "ok", str(resolved.path)
        except ChecksumMismatchError as exc:
            status, detail, corrupt = "corrupt", str(exc), True
        except ModelUnavailableError as exc:
            status, detail = "missing", str(exc)
        info(f"{entry.ref}: {status} ({detail})")
        results.append({"ref": entry.ref, "status": status, "detail": detail})
    if json_output:
        print_json({"models": results})
    if corrupt:
        raise typer.Exit(EXIT_CHECKSUM)
