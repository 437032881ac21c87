"""``deblurcli models``: the methods, and the checkpoints of the model table (list, info,
download, verify)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from deblurcli import methods
from deblurcli.cli import _options as opt
from deblurcli.cli._console import err_console, info, print_json

app = typer.Typer(
    no_args_is_help=True,
    help="Methods and checkpoints: list them, inspect, download and verify weights.\n\n"
    "Examples:\n\n  deblurcli models list\n\n  deblurcli models info resunet",
)

RefsArg = Annotated[
    Optional[list[str]],
    typer.Argument(metavar="NAME[@TAG]...", show_default=False,
                   help="Models (name or name@tag); default: every model."),
]


def _default_ref(table: Any) -> str | None:
    """``name@tag`` of the checkpoint ``deblur`` runs when given no model."""
    from deblurcli.engine.zoo import parse_reference

    if table.default is None:
        return None
    try:
        return str(table.find(*parse_reference(table.default)).ref)
    except Exception:  # a table whose default names nothing: no default
        return None


def _entry_json(entry: Any, default_ref: str | None) -> dict[str, Any]:
    row = methods.network_for_arch(entry.arch, entry.name)
    return {
        "ref": entry.ref, "name": entry.name, "tag": entry.tag, "arch": entry.arch,
        "method": None if row is None else row.name,
        "description": entry.description, "size": entry.size, "sha256": entry.sha256,
        "shipped": entry.file is not None and entry.file.is_file(),
        "hub": None if entry.hub is None else vars(entry.hub),
        "default": entry.ref == default_ref,
        **entry.details,
    }


def _method_json(row: methods.MethodSpec) -> dict[str, Any]:
    return {
        "name": row.name, "kind": row.kind, "description": row.description,
        "inputs": row.inputs, "command": f"deblurcli {methods.COMMAND[row.kind]}",
        "arch": row.arch, "checkpoint": row.checkpoint,
        "options": [{"name": p.name, "type": p.type, "default": p.default,
                     "choices": list(p.choices), "help": p.help} for p in row.params],
    }


def _selected(refs: list[str] | None) -> tuple[Any, list[Any]]:
    from deblurcli.engine.zoo import load_model_table, parse_reference

    table = load_model_table()
    if not refs:
        return table, list(table.entries)
    return table, [table.find(*parse_reference(ref)) for ref in refs]


@app.command("list")
def list_models(json_output: opt.JsonOpt = False) -> None:
    """List the methods (networks, non-blind and blind solvers) and the checkpoints.

    Examples:

      deblurcli models list

      deblurcli models list --json | jq '.methods[] | select(.kind == "network")'
    """
    from rich.table import Table

    table, entries = _selected(None)
    default_ref = _default_ref(table)
    if json_output:
        print_json({
            "methods": [_method_json(m) for m in methods.METHODS],
            "default": table.default,
            "default_checkpoint": default_ref,
            "models": [_entry_json(e, default_ref) for e in entries],
        })
        return
    view = Table("method", "kind", "command", "description", title="methods")
    for m in methods.METHODS:
        extra = f" (checkpoint {m.checkpoint})" if m.checkpoint else ""
        view.add_row(m.name, m.kind, methods.COMMAND[m.kind], m.description + extra)
    err_console.print(view)
    if not entries:
        info("no checkpoints in the model table yet")
        return
    view = Table("checkpoint", "method", "size", "source", "description", title="checkpoints")
    for e in entries:
        shipped = e.file is not None and e.file.is_file()
        source = "shipped" if shipped else "hub" if e.hub else "missing"
        star = " (default)" if e.ref == default_ref else ""
        row = methods.network_for_arch(e.arch, e.name)
        view.add_row(e.ref + star, row.name if row else e.arch, f"{e.size / 1e6:.1f} MB", source,
                     e.description)
    err_console.print(view)


def _summary(document: dict[str, Any]) -> list[str]:
    entry = document["entry"] or {}
    lines = [f"{document['ref']}: {entry.get('description') or document['arch']}"]
    lines.append(f"  file      {document['path']} ({document['source']})")
    method = entry.get("method") or document["arch"]
    config = ", ".join(f"{k}={v}" for k, v in document["config"].items())
    lines.append(f"  method    {method} (architecture {document['arch']}: {config})")
    if entry:
        lines.append(f"  default   {'yes' if entry['default'] else 'no'}; "
                     f"sha256 {entry['sha256'][:16]}…, {entry['size'] / 1e6:.1f} MB")
    descriptor = document["info"]
    if descriptor:
        lines.append(f"  runs      inputs {descriptor.get('inputs')}, size multiple "
                     f"{descriptor.get('size_multiple')}, tiling {descriptor.get('tiling')}, "
                     f"bf16 {descriptor.get('supports_bf16')}, "
                     f"fp16 {descriptor.get('supports_fp16')}")
    metrics = entry.get("metrics")
    for name, scores in (metrics.items() if isinstance(metrics, dict) else []):
        if isinstance(scores, dict) and "psnr" in scores:
            lines.append(f"  {name:<9} PSNR {scores.get('psnr_input')} → {scores['psnr']} dB, "
                         f"SSIM {scores.get('ssim_input')} → {scores.get('ssim')} "
                         f"({scores.get('images')} images)")
    lines.append("  (everything recorded, training command and data included: --json)")
    return lines


@app.command("info")
def model_info(
    ref: Annotated[str, typer.Argument(metavar="NAME[@TAG]|FILE",
                                       help="Model name, name@tag or .safetensors path.")],
    offline: opt.OfflineOpt = False,
    cache_dir: opt.CacheDirOpt = None,
    json_output: opt.JsonOpt = False,
) -> None:
    """Summarise a checkpoint: method, file, default, descriptor and measured quality.

    Examples:

      deblurcli models info resunet

      deblurcli models info resunet@synth-v1 --json | jq .entry.training
    """
    import json

    from deblurcli.engine import read_metadata, resolve
    from deblurcli.engine.zoo import load_model_table

    resolved = resolve(ref, offline=offline, cache_dir=cache_dir)
    metadata = read_metadata(resolved.path)
    default_ref = _default_ref(load_model_table())
    document = {
        "ref": ref, "path": str(resolved.path), "source": resolved.source,
        "arch": metadata["arch"], "config": json.loads(metadata.get("config", "{}")),
        "info": json.loads(metadata.get("info", "{}")),
        "train": json.loads(metadata["train"]) if "train" in metadata else None,
        "entry": None if resolved.entry is None else _entry_json(resolved.entry, default_ref),
    }
    if json_output:
        print_json(document)
        return
    for line in _summary(document):
        err_console.print(line, markup=False)


@app.command("download")
def download(
    refs: RefsArg = None,
    cache_dir: opt.CacheDirOpt = None,
    json_output: opt.JsonOpt = False,
) -> None:
    """Fetch models into the Hugging Face cache (pinned revision, sha256 checked).

    Shipped models need no download.

    Example:

      deblurcli models download resunet@synth-v1
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
    """Check the size and sha256 of shipped and cached model files, offline.

    Only reports: a corrupt file is left where it is (exit code 5); `models download` fetches
    it again. Models neither shipped nor cached are reported missing.

    Example:

      deblurcli models verify --json
    """
    from deblurcli.engine.zoo import verify_entry
    from deblurcli.errors import EXIT_CHECKSUM

    _, entries = _selected(refs)
    results = []
    for entry in entries:
        found = verify_entry(entry, cache_dir=cache_dir)
        where = f" {found.path}" if found.path else ""
        info(f"{entry.ref}: {found.status}{where} ({found.detail})")
        results.append({"ref": entry.ref, "status": found.status,
                        "path": None if found.path is None else str(found.path),
                        "detail": found.detail})
    if json_output:
        print_json({"models": results})
    if any(r["status"] == "corrupt" for r in results):
        raise typer.Exit(EXIT_CHECKSUM)
