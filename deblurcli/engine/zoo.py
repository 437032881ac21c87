"""The model table and the resolution of a model reference to a verified local file.

A reference is one of:

- ``name`` or ``name@tag`` — an entry of the model table (``weights/manifest.json``, extended by
  the JSON file named in ``DEBLURCLI_MODEL_TABLE``). The file is taken from the shipped
  ``weights/`` folder when it is there, otherwise downloaded from the Hugging Face Hub at the
  entry's pinned 40-hex revision (``--offline``: from the local cache only).

Shipped weights live in the top-level ``weights/`` folder of the source checkout; a wheel
carries the same folder inside the package (``deblurcli/weights``), and :data:`WEIGHTS_DIR`
finds whichever is there. ``train export`` writes only into a checkout (or ``--weights-dir``),
never into an installed package.
- a path to a local ``.safetensors`` file.

Every file resolved from the table is checked against the sha256 and size recorded there; a
mismatching file is never used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deblurcli import __version__
from deblurcli.engine.checkpoint import sha256_file
from deblurcli.errors import ChecksumMismatchError, ModelUnavailableError, UsageError

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _source_checkout_weights() -> Path | None:
    """``weights/`` beside the package when it runs from a source checkout (has pyproject)."""
    root = _PACKAGE_DIR.parent
    return root / "weights" if (root / "pyproject.toml").is_file() else None


def _weights_dir() -> Path:
    installed = _PACKAGE_DIR / "weights"  # where a wheel puts the top-level weights/ folder
    if (installed / "manifest.json").is_file():
        return installed
    return _source_checkout_weights() or installed


WEIGHTS_DIR = _weights_dir()
"""The shipped weights: ``weights/`` of the checkout, or its copy inside an installed wheel."""
MANIFEST_PATH = WEIGHTS_DIR / "manifest.json"
CHECKOUT_WEIGHTS_DIR = _source_checkout_weights()
"""Where ``train export`` writes by default: the checkout's ``weights/`` (None when installed)."""
TABLE_ENV = "DEBLURCLI_MODEL_TABLE"
_REVISION = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class HubLocation:
    """Where a checkpoint lives on the Hub; ``revision`` is a full commit hash."""

    repo_id: str
    filename: str
    revision: str


@dataclass(frozen=True)
class ModelEntry:
    """One row of the model table."""

    name: str
    tag: str
    sha256: str
    size: int
    arch: str
    description: str = ""
    default_tag: bool = False
    """``name`` without ``@tag`` resolves to the entry with ``default_tag`` set."""
    file: Path | None = None
    """Shipped file (absolute), if any."""
    hub: HubLocation | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Everything else recorded (training command, data, metrics …)."""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.tag}"


@dataclass(frozen=True)
class ModelTable:
    """All known entries, and the model ``deblur`` uses when none is named."""

    entries: tuple[ModelEntry, ...]
    default: str | None = None

    def find(self, name: str, tag: str | None) -> ModelEntry:
        """The entry for ``name[@tag]``, or ModelUnavailableError listing what exists."""
        candidates = [e for e in self.entries if e.name == name]
        if tag is not None:
            candidates = [e for e in candidates if e.tag == tag]
        elif len(candidates) > 1:
            candidates = [e for e in candidates if e.default_tag] or candidates[:1]
        if not candidates:
            wanted = f"{name}@{tag}" if tag else name
            same_name = [e.tag for e in self.entries if e.name == name]
            if same_name:  # a known model, an unknown tag: its tags are the useful list
                raise ModelUnavailableError(
                    f"unknown model {wanted!r}; {name} has the tags {', '.join(same_name)} "
                    f"(see `deblurcli models info {name}`)")
            known = ", ".join(e.ref for e in self.entries) or "none"
            raise ModelUnavailableError(
                f"unknown model {wanted!r}; known models: {known} (see `deblurcli models list`)"
            )
        return candidates[0]


def _parse_entry(raw: dict[str, Any], base_dir: Path) -> ModelEntry:
    hub = raw.get("hub")
    hub_location = None
    if hub:
        if not _REVISION.match(str(hub.get("revision", ""))):
            raise ValueError(f"{raw.get('name')}: hub revision must be a 40-hex commit hash")
        hub_location = HubLocation(hub["repo_id"], hub["filename"], hub["revision"])
    known = {"name", "tag", "sha256", "size", "arch", "description", "default_tag", "file", "hub"}
    return ModelEntry(
        name=raw["name"],
        tag=raw["tag"],
        sha256=raw["sha256"].lower(),
        size=int(raw["size"]),
        arch=raw["arch"],
        description=raw.get("description", ""),
        default_tag=bool(raw.get("default_tag", False)),
        file=(base_dir / raw["file"]) if raw.get("file") else None,
        hub=hub_location,
        details={k: v for k, v in raw.items() if k not in known},
    )


def read_table_file(path: Path) -> tuple[list[ModelEntry], str | None]:
    """Parse one manifest file; relative ``file`` entries are relative to its folder."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or not isinstance(document.get("models", []), list):
            raise ValueError('expected {"default": ..., "models": [...]}')
        for raw in document.get("models", []):
            if not isinstance(raw, dict):
                raise ValueError(f"a model entry must be an object, got {raw!r}")
            for key in ("name", "tag", "sha256", "arch", "file", "description"):
                if key in raw and raw[key] is not None and not isinstance(raw[key], str):
                    raise ValueError(f"{key} must be text, got {raw[key]!r}")
        entries = [_parse_entry(raw, path.parent) for raw in document.get("models", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: invalid model table: {exc}") from None
    return entries, document.get("default")


def load_model_table(extra: Path | None = None) -> ModelTable:
    """The package manifest plus ``extra`` (default: ``$DEBLURCLI_MODEL_TABLE``); extra wins."""
    entries: dict[str, ModelEntry] = {}
    default = None
    paths = [MANIFEST_PATH]
    extra = extra or (Path(os.environ[TABLE_ENV]) if os.environ.get(TABLE_ENV) else None)
    if extra is not None:
        paths.append(extra)
    for path in paths:
        if not path.exists():
            if path != MANIFEST_PATH:
                raise UsageError(f"{path}: model table not found (from ${TABLE_ENV})")
            continue
        found, found_default = read_table_file(path)
        entries.update({e.ref: e for e in found})
        default = found_default or default
    return ModelTable(tuple(entries.values()), default)


@dataclass(frozen=True)
class ResolvedModel:
    """A verified local checkpoint file and where it came from."""

    path: Path
    entry: ModelEntry | None
    source: str
    """``weights`` (shipped), ``hub`` (downloaded or cached) or ``local`` (a path given)."""


def parse_reference(ref: str) -> tuple[str, str | None]:
    """Split ``name[@tag]``; reject anything else with a message showing valid spellings."""
    name, _, tag = ref.partition("@")
    if not _NAME.match(name) or (tag and not _NAME.match(tag)):
        raise UsageError(
            f"invalid model reference {ref!r}: use a model name such as 'resunet' or "
            "'resunet@synth-v1' (see `deblurcli models list`), or a path to a .safetensors file"
        )
    return name, tag or None


def _verify(path: Path, entry: ModelEntry) -> str | None:
    """Return a reason when ``path`` does not match the table, else None."""
    size = path.stat().st_size
    if size != entry.size:
        return f"size {size} bytes, expected {entry.size}"
    digest = sha256_file(path)
    if digest != entry.sha256:
        return f"sha256 {digest[:16]}…, expected {entry.sha256[:16]}…"
    return None


def _hub_download(
    entry: ModelEntry, *, offline: bool, cache_dir: Path | None, endpoint: str | None,
    force: bool = False,
) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    assert entry.hub is not None
    hub = entry.hub
    where = f"{hub.repo_id}/{hub.filename}@{hub.revision[:12]}"
    try:
        return Path(
            hf_hub_download(
                hub.repo_id, hub.filename, revision=hub.revision, cache_dir=cache_dir,
                local_files_only=offline, force_download=force, endpoint=endpoint,
                library_name="deblurcli", library_version=__version__,
            )
        )
    except LocalEntryNotFoundError:
        if offline:
            raise ModelUnavailableError(
                f"model {entry.ref} is not in the local cache ({where}) and --offline is set; "
                "run `deblurcli models download` with network access first"
            ) from None
        raise ModelUnavailableError(
            f"model {entry.ref}: cannot reach the Hub for {where}") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise ModelUnavailableError(
            f"model {entry.ref}: Hub answered HTTP {status} for {where}"
        ) from None
    except OSError as exc:
        raise ModelUnavailableError(
            f"model {entry.ref}: download of {where} failed: {exc}") from None


@dataclass(frozen=True)
class Verification:
    """What :func:`verify_entry` found for one model."""

    status: str
    """``ok``, ``corrupt`` (size or sha256 differ) or ``missing`` (neither shipped nor cached)."""
    path: Path | None
    detail: str


def verify_entry(entry: ModelEntry, *, cache_dir: Path | None = None) -> Verification:
    """Check a shipped or cached file against the table, offline; never modifies anything."""
    candidates: list[Path] = []
    if entry.file is not None and entry.file.is_file():
        candidates.append(entry.file)
    elif entry.hub is not None:
        from huggingface_hub import try_to_load_from_cache

        hub = entry.hub
        cached = try_to_load_from_cache(hub.repo_id, hub.filename, cache_dir=cache_dir,
                                        revision=hub.revision)
        if isinstance(cached, str):
            candidates.append(Path(cached))
    if not candidates:
        return Verification("missing", None, "neither shipped nor in the Hugging Face cache")
    problem = _verify(candidates[0], entry)
    if problem:
        return Verification("corrupt", candidates[0], problem)
    return Verification("ok", candidates[0], "size and sha256 match")


def _evict(path: Path) -> None:
    """Remove a bad cached file: the snapshot link and the blob it points to."""
    blob = path.resolve()
    for victim in (path, blob):
        with contextlib.suppress(FileNotFoundError):
            victim.unlink()


def resolve(
    ref: str,
    *,
    table: ModelTable | None = None,
    offline: bool = False,
    cache_dir: Path | None = None,
    endpoint: str | None = None,
) -> ResolvedModel:
    """Resolve a model reference to a verified local ``.safetensors`` file.

    Raises:
        UsageError: malformed reference.
        ModelUnavailableError: unknown name, not shipped and not downloadable, offline miss.
        ChecksumMismatchError: the file differs from the table (after one re-download).
    """
    if ref.endswith(".safetensors") or os.sep in ref or "/" in ref:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise ModelUnavailableError(f"{path}: checkpoint file not found")
        return ResolvedModel(path=path, entry=None, source="local")
    table = table or load_model_table()
    entry = table.find(*parse_reference(ref))
    if entry.file is not None and entry.file.is_file():
        problem = _verify(entry.file, entry)
        if problem:
            raise ChecksumMismatchError(
                f"{entry.file}: shipped checkpoint of {entry.ref} is corrupt ({problem}); "
                "reinstall deblurcli"
            )
        return ResolvedModel(path=entry.file, entry=entry, source="weights")
    if entry.hub is None:
        raise ModelUnavailableError(
            f"model {entry.ref} is neither shipped in {WEIGHTS_DIR} nor available on the Hub"
        )
    path = _hub_download(entry, offline=offline, cache_dir=cache_dir, endpoint=endpoint)
    problem = _verify(path, entry)
    if problem and not offline:
        logger.warning("%s: %s; downloading again", path, problem)
        _evict(path)
        path = _hub_download(
            entry, offline=False, cache_dir=cache_dir, endpoint=endpoint, force=True
        )
        problem = _verify(path, entry)
    if problem:
        _evict(path)
        raise ChecksumMismatchError(
            f"model {entry.ref}: downloaded file failed verification ({problem}); "
            "it was deleted and not used"
        )
    return ResolvedModel(path=path, entry=entry, source="hub")
