"""The method table: every restoration method deblurcli knows, in one place.

What a user types is a *method* (``resunet``, ``hyperlaplacian``, ``vdip-sparse``); what the
engine loads for a network is an *architecture* plus a *checkpoint*. This table joins them, and
everything that lists or validates methods reads it: ``deblur --method``, ``deconvolve --method``,
``deconvolve-blind --method``, ``bench --method``, the architecture registry
(:data:`deblurcli.archs.REGISTRY`), training configs (``model.arch``), ``models list`` and every
``--help`` listing. Nothing else enumerates methods. The module imports neither torch nor numpy.

Each row (:class:`MethodSpec`) says:

- ``name`` — what the user types;
- ``kind`` — ``network`` (a trained family, run by ``deblur``; ``deblur-ref`` for those with
  2 inputs), ``non-blind`` (needs the blur kernel, run by ``deconvolve``), ``blind`` (estimates
  the kernel, run by ``deconvolve-blind``), ``reference`` (measures the kernel against a sharp
  reference photo, run by ``deblur-ref``) or ``baseline`` (``bench`` only);
- ``description`` — one line for listings;
- ``inputs`` — 1 (the blurry image) or 2 (blurry image + sharp reference);
- ``params`` — the options it accepts, with types and defaults (``--param KEY=VALUE`` and the
  dedicated flags are checked against them);
- for networks, ``arch`` (the architecture id stored in checkpoints), ``arch_module`` (the file
  that defines it) and ``checkpoint`` (the default ``name@tag`` of the model table,
  ``weights/manifest.json``).

Adding a network family is one file plus one row:

1. write ``deblurcli/archs/<family>.py`` — the ``nn.Module``, its config dataclass and a
   module-level ``SPEC = ArchSpec(...)`` (see :mod:`deblurcli.archs.residual_unet`);
2. add one ``_network(...)`` row to :data:`METHODS` below naming that module.

The architecture registry, the training config check, ``deblur --method``, ``bench --method``, the
help texts and the tests (which parametrise over this table) pick it up from there. Once a
checkpoint is exported (``deblurcli train export``) under the row's ``checkpoint`` name, ``deblur
--method <family>`` runs it. Non-blind solvers live in :mod:`deblurcli.deconv` and blind ones in
:mod:`deblurcli.optim`; a new one there is likewise its implementation plus one row here.

The single ``KEY=VALUE`` parser of the package is :func:`parse_params`; it and the training
config's ``--set a.b=value`` (:func:`deblurcli.train.config.apply_overrides`) split items with
:func:`split_key_value`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from deblurcli.errors import UsageError

Kind = Literal["network", "non-blind", "blind", "reference", "baseline"]
ParamType = Literal["int", "float", "str", "bool", "ints", "floats"]

KINDS: tuple[Kind, ...] = ("network", "non-blind", "blind", "reference", "baseline")


@dataclass(frozen=True)
class Param:
    """One option a method accepts."""

    name: str
    """Keyword name (``snake_case``); ``--param`` also accepts ``kebab-case``."""
    type: ParamType
    """How a ``KEY=VALUE`` string is converted (``ints``/``floats``: comma-separated)."""
    default: Any
    """Value used when the option is not given (``None``: chosen by the method)."""
    help: str = ""
    choices: tuple[str, ...] = ()
    """Allowed values of a ``str`` option (empty: any)."""

    def convert(self, raw: str, *, flag: str = "--param") -> Any:
        """Convert ``raw`` to this option's type.

        Raises:
            UsageError: the value does not fit the type or the choices.
        """
        return _convert(self.name, self.type, raw, flag=flag, choices=self.choices)


@dataclass(frozen=True)
class MethodSpec:
    """One row of the method table."""

    name: str
    kind: Kind
    description: str
    inputs: int = 1
    """1: the blurry image only; 2: blurry image plus a sharp reference."""
    params: tuple[Param, ...] = ()
    arch: str | None = None
    """Networks: the architecture id (stored in every checkpoint's metadata)."""
    arch_module: str | None = None
    """Networks: the module defining ``SPEC`` for ``arch``."""
    checkpoint: str | None = None
    """Networks: the default checkpoint, ``name@tag`` in the model table."""

    @property
    def param_map(self) -> dict[str, Param]:
        """Options by name."""
        return {p.name: p for p in self.params}

    def defaults(self) -> dict[str, Any]:
        """Every option with its default value."""
        return {p.name: p.default for p in self.params}


def _p(name: str, type_: ParamType, default: Any, help_: str = "",
       choices: tuple[str, ...] = ()) -> Param:
    return Param(name, type_, default, help_, choices)


def _network(name: str, *, arch: str, module: str, checkpoint: str, description: str,
             inputs: int = 1) -> MethodSpec:
    params = (
        _p("tile", "str", "auto", "auto, 0 (never tile) or a tile size in pixels"),
        _p("overlap", "int", None, "pixels shared by neighbouring tiles (default: model's need)"),
        _p("ensemble", "int", 1, "average over N flipped/transposed copies (1, 2, 4 or 8)"),
    )
    return MethodSpec(name, "network", description, inputs, params, arch, module, checkpoint)


_BLIND_PARAMS = (
    _p("preset", "str", "fast", "fast (seconds to minutes) or paper (hours on a CPU)",
       ("fast", "paper")),
    _p("kernel_size", "str", None, "odd N or HxW; default: measured (fast), 21 (paper)"),
    _p("iterations", "int", None, "paper: main steps (5000); fast: sweeps or steps per level"),
    _p("seed", "int", 0, "seed; CPU runs with the same seed are identical"),
    _p("restarts", "int", None,
       "re-runs with the next seed after a degenerate result (default: 2 fast, 0 paper)"),
    _p("finish", "str", None,
       "fast: network that finishes the restoration (name@tag or file; none: off)"),
)


_SOLVER_COMMON = (
    _p("clip", "bool", True, "clamp the result to [0, 1]"),
    _p("max_pixels", "int", 1 << 23, "pixel budget of one FFT problem; larger planes are tiled"),
    _p("overlap", "int", None, "tile overlap in pixels (default: max(64, 6 x kernel size))"),
)


def _blind(name: str, description: str) -> MethodSpec:
    return MethodSpec(name, "blind", description, 1, _BLIND_PARAMS)


METHODS: tuple[MethodSpec, ...] = (
    # --- networks: one row per family (the file is named by ``module``) ---
    _network(
        "nafnet", arch="nafnet", module="deblurcli.archs.nafnet", checkpoint="nafnet@cpu-v5",
        description="NAFNet U-net of gated activation-free blocks (Chen et al. 2022): the default",
    ),
    _network(
        "resunet", arch="residual_unet", module="deblurcli.archs.residual_unet",
        checkpoint="resunet@synth-v1",
        description="residual U-net baseline trained on synthetic blur; weak on real blur",
    ),
    _network(
        "uml-in", arch="uml_in", module="deblurcli.archs.uml_in", checkpoint="uml-in@cpu-v2",
        description="two-branch invertible wavelet U-net: the sharp inverse decodes blur latents",
    ),
    _network(
        "ref", arch="ref_deblur", module="deblurcli.archs.ref_deblur", checkpoint="ref@cpu-v1",
        description="reference-based: a sharp photo of the same scene guides it (deblur-ref)",
        inputs=2,
    ),
    _network(
        "pix2pix", arch="pix2pix", module="deblurcli.archs.pix2pix", checkpoint="pix2pix@cpu-v4",
        description="Pix2Pix U-net GAN with self-attention and global residual (GAN paper)",
    ),
    _network(
        "rir", arch="rir", module="deblurcli.archs.rir", checkpoint="rir@cpu-v2",
        description="residual-in-residual GAN generator with channel and self-attention",
    ),
    _network(
        "deblurgan", arch="deblurgan", module="deblurcli.archs.deblurgan",
        checkpoint="deblurgan@cpu-v4",
        description="DeblurGAN: ResNet generator with a WGAN-GP critic (Kupyn et al. 2018)",
    ),
    _network(
        "deblurgan-edge", arch="deblurgan", module="deblurcli.archs.deblurgan",
        checkpoint="deblurgan-edge@cpu-v1",
        description="DeblurGAN with a Canny edge map of the blurred photo as a 4th input channel",
    ),
    _network(
        "deblurgan-feedback", arch="deblurgan", module="deblurcli.archs.deblurgan",
        checkpoint="deblurgan-feedback@cpu-v1",
        description="DeblurGAN with a ConvLSTM feedback loop: the photo iterated 4 times",
    ),
    # --- non-blind: the blur kernel is known (deblurcli.deconv) ---
    MethodSpec("hyperlaplacian", "non-blind",
               "hyper-Laplacian prior (Krishnan & Fergus 2009): best quality, the default",
               params=(
                   _p("weight", "float", 1.25e-4, "prior weight; larger is smoother"),
                   _p("alpha", "float", 2 / 3, "exponent of the gradient prior, in (0, 1]"),
                   _p("beta_start", "float", 1.0, "first splitting weight"),
                   _p("beta_max", "float", 2.0**10, "last splitting weight"),
                   _p("beta_rate", "float", 2 * 2**0.5, "factor between splitting weights"),
                   _p("inner_iterations", "int", 1, "alternations per splitting weight"),
                   _p("cg_iterations", "int", 3, "conjugate-gradient steps (masked boundary)"),
                   _p("boundary", "str", "masked", "masked, smooth or wrap",
                      ("masked", "smooth", "wrap")),
                   *_SOLVER_COMMON,
               )),
    MethodSpec("rl", "non-blind", "Richardson–Lucy, optionally damped by total variation",
               params=(
                   _p("iterations", "int", 100, "multiplicative updates; more is sharper"),
                   _p("tv_weight", "float", 0.0, "total-variation damping (0: off)"),
                   _p("boundary", "str", "masked", "masked or wrap", ("masked", "wrap")),
                   *_SOLVER_COMMON,
               )),
    MethodSpec("wiener", "non-blind", "Wiener filter with a gradient prior: one FFT, fastest",
               params=(
                   _p("balance", "float", 8e-3, "regularisation; larger is smoother"),
                   _p("boundary", "str", "smooth", "smooth or wrap", ("smooth", "wrap")),
                   *_SOLVER_COMMON,
               )),
    # --- blind: the kernel is estimated from the photo (deblurcli.optim) ---
    _blind("vdip-sparse", "variational DIP, sparse prior: best in the paper, the default"),
    _blind("vdip-extreme", "variational DIP, extreme-channel prior"),
    _blind("vdip-std", "variational DIP without an image prior"),
    _blind("dip", "deep image prior (SelfDeblur)"),
    _blind("dip-sparse", "deep image prior with the sparse prior"),
    _blind("dip-extreme", "deep image prior with the extreme-channel prior"),
    # --- reference: the kernel is measured against a sharp photo (deblurcli.optim.reference) ---
    MethodSpec("ref-kernel", "reference",
               "kernel measured against the reference, then deconvolution; the ref network "
               "where one kernel does not explain the photo: the default", inputs=2,
               params=(
                   _p("kernel_size", "int", 65, "side of the estimated kernel (odd)"),
                   _p("fallback", "str", "ref", "when one kernel does not fit: ref (the "
                      "network) or none (the photo unchanged)", ("ref", "none")),
                   _p("max_misfit", "float", 4.0,
                      "largest robust residual of the fit, in units of the photo's noise"),
                   _p("min_explained", "float", 0.95,
                      "smallest share of the photo's variance the fit must explain"),
                   _p("flow", "float", 0.0,
                      "bursts with parallax: also align by an optical flow smoothed over this "
                      "many px (8 measured); 0: one affine map"),
               )),
    # --- baselines (bench only) ---
    MethodSpec("identity", "baseline", "the blurred input itself"),
)
"""The method table (order is the order of every listing)."""

TABLE: dict[str, MethodSpec] = {m.name: m for m in METHODS}
"""Method name → row."""

DEFAULT_METHOD: dict[Kind, str] = {
    "network": "nafnet", "non-blind": "hyperlaplacian", "blind": "vdip-sparse",
    "reference": "ref-kernel", "baseline": "identity",
}
"""What each command runs when no ``--method`` is given."""

COMMAND: dict[Kind, str] = {
    "network": "deblur", "non-blind": "deconvolve", "blind": "deconvolve-blind",
    "reference": "deblur-ref", "baseline": "bench quality",
}
"""The command that runs each kind (``bench`` runs them all)."""


def names(*kinds: Kind) -> list[str]:
    """Method names of the given kinds (all kinds when none), in table order."""
    return [m.name for m in METHODS if not kinds or m.kind in kinds]


def of_kind(*kinds: Kind) -> list[MethodSpec]:
    """Rows of the given kinds, in table order."""
    return [m for m in METHODS if m.kind in kinds]


def get(name: str, *kinds: Kind, flag: str = "--method") -> MethodSpec:
    """The row called ``name``, restricted to ``kinds`` when given.

    Raises:
        UsageError: unknown name, or a method of another kind; the message lists the valid ones.
    """
    spec = TABLE.get(name)
    if spec is None or (kinds and spec.kind not in kinds):
        valid = ", ".join(names(*kinds))
        if spec is not None:
            raise UsageError(f"{name} is a {spec.kind} method (`deblurcli {COMMAND[spec.kind]}`); "
                             f"{flag} here takes {valid}")
        raise UsageError(f"unknown method {name!r} for {flag}; known: {valid}")
    return spec


def network_for_arch(arch: str, checkpoint_name: str | None = None) -> MethodSpec | None:
    """The network row whose architecture id is ``arch``.

    Several rows may share an architecture (``deblurgan``, ``deblurgan-edge``): given the name of
    a checkpoint, the row whose default checkpoint has that name wins.
    """
    rows = [m for m in METHODS if m.kind == "network" and m.arch == arch]
    named = [m for m in rows if checkpoint_name and (m.checkpoint or "").split("@")[0]
             == checkpoint_name]
    return (named or rows or [None])[0]


def listing(*kinds: Kind) -> str:
    """``name (description); ...`` for help texts."""
    return "; ".join(f"{m.name} ({m.description})" for m in of_kind(*(kinds or KINDS)))


# ----------------------------------------------------------------------------------------------
# KEY=VALUE
# ----------------------------------------------------------------------------------------------

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _convert(key: str, type_: ParamType, raw: str, *, flag: str,
             choices: Sequence[str] = ()) -> Any:
    text = raw.strip()
    try:
        if type_ == "bool":
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(text)
            return text.lower() in _TRUE
        if type_ == "int":
            return int(text)
        if type_ == "float":
            return float(text)
        if type_ in ("ints", "floats"):
            cast = int if type_ == "ints" else float
            return tuple(cast(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{flag} {key}={raw}: expected {_TYPE_WORDS[type_]}") from None
    if choices and text not in choices:
        raise UsageError(f"{flag} {key}={raw}: use one of {', '.join(choices)}")
    return text


_TYPE_WORDS = {
    "int": "an integer", "float": "a number", "str": "text", "bool": "true or false",
    "ints": "comma-separated integers", "floats": "comma-separated numbers",
}


def _infer(raw: str) -> Any:
    """Type of an undeclared value: int, then float, then true/false, else the string."""
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            continue
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return raw


def split_key_value(
    item: str, *, flag: str = "--param", form: str = "KEY=VALUE"
) -> tuple[str, str]:
    """Split one ``KEY=VALUE`` string at its first ``=``: the one place deblurcli does this.

    The key is stripped of surrounding spaces; the value is returned as written, so
    ``out=runs/a=b`` gives ``("out", "runs/a=b")``. A dotted key (``optim.lr``) may not have an
    empty part.

    Args:
        item: One command-line item.
        flag: The option name for messages (``--param``, ``--set``).
        form: What the option expects, for messages (``SECTION.KEY=VALUE, e.g. optim.lr=1e-4``).

    Returns:
        ``(key, value)``.

    Raises:
        UsageError: no ``=``, an empty key or an empty part of a dotted key, as
            ``{flag} {item!r}: expected {form}``.
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or not all(key.split(".")):
        raise UsageError(f"{flag} {item!r}: expected {form}")
    return key, raw


def parse_params(
    items: Iterable[str] | None,
    schema: Mapping[str, Param] | None = None,
    *,
    flag: str = "--param",
    reserved: Iterable[str] = (),
) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings into a typed dict — the one such parser of deblurcli.

    Keys may be written ``snake_case`` or ``kebab-case``. With a ``schema`` every key must be in
    it and the value is converted to the declared type (``bool``: true/false/1/0/yes/no;
    ``ints``: ``10,20``); without one the type is inferred (int, float, true/false, text).

    Args:
        items: The strings, e.g. ``["weight=2e-4", "boundary=wrap"]``.
        schema: Accepted options by name.
        flag: The option name for messages (``--param``, ``--set``).
        reserved: Keys that exist but may not be set this way (set by dedicated flags).

    Raises:
        UsageError: no ``=``, an unknown or reserved key, or a value of the wrong type.
    """
    reserved = set(reserved)
    out: dict[str, Any] = {}
    for item in items or []:
        key, raw = split_key_value(item, flag=flag)
        key = key.replace("-", "_")
        if schema is not None and (key not in schema or key in reserved):
            known = ", ".join(sorted(set(schema) - reserved)) or "none"
            raise UsageError(f"{flag} {item!r}: unknown key {key!r}; known: {known}")
        out[key] = schema[key].convert(raw, flag=flag) if schema is not None else _infer(raw)
    return out


def schema_of(config: Any) -> dict[str, Param]:
    """The ``KEY=VALUE`` schema of a dataclass instance: its fields, typed by their defaults.

    ``None`` defaults are taken as numbers; tuples as comma-separated integers.
    """
    schema: dict[str, Param] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        type_: ParamType
        if isinstance(value, bool):
            type_ = "bool"
        elif isinstance(value, int):
            type_ = "int"
        elif isinstance(value, float) or value is None:
            type_ = "float"
        elif isinstance(value, tuple):
            type_ = "ints"
        elif isinstance(value, str):
            type_ = "str"
        else:
            continue  # nested structures are not settable from the command line
        schema[f.name] = Param(f.name, type_, value)
    return schema


__all__ = [
    "DEFAULT_METHOD",
    "KINDS",
    "METHODS",
    "TABLE",
    "MethodSpec",
    "Param",
    "get",
    "listing",
    "names",
    "network_for_arch",
    "of_kind",
    "parse_params",
    "schema_of",
    "split_key_value",
]
