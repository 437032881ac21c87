"""Help texts that teach: what a flag takes, never the Python type behind it.

Typer prints ``<bool>`` after flags, ``<str>``/``<int range> [x>=0]`` after options and
``{inputs}...`` in usage lines, which reads like syntax to type (``--overwrite true``). This
module, imported by :mod:`deblurcli.cli.app`, makes every command's help say instead:

- flags: nothing after the flag;
- options: their ``metavar`` when one is given (``--tile N|auto``), a choice list as ``a|b``, else
  the option's name in capitals (``--device DEVICE``);
- arguments: their name (``INPUTS...``), and in usage lines ``INPUTS...`` / ``[REFS]...`` without
  braces.

Value ranges are still enforced; the help text of each option states them in words.
"""

from __future__ import annotations

from typing import Any

from typer import core


def _option_metavar(self: Any, ctx: Any) -> str | None:
    if self.is_flag or self.count:
        return None
    if self.metavar is not None:
        return str(self.metavar)
    desc = self.type_descriptor
    if desc.is_choice and desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    longs = [o for o in self.opts if o.startswith("--")]
    name = (longs[0][2:] if longs else self.name or "value").upper().replace("-", "_")
    return name + ("..." if self.nargs != 1 else "")


def _argument_metavar(self: Any, ctx: Any) -> str | None:
    return None  # the name column already shows it


def _argument_usage(self: Any) -> str:
    name = self.metavar if self.metavar is not None else (self.name or "arg").upper()
    if self.nargs != 1 and self.metavar is None:
        name += "..."
    return name if self.required else f"[{name}]"


def _argument_rich_name(self: Any) -> str:
    name = self.metavar if self.metavar is not None else (self.name or "arg").upper()
    return name + ("..." if self.nargs != 1 and self.metavar is None else "")


def _no_range(self: Any) -> None:
    return None


def install() -> None:
    """Patch Typer's help rendering (idempotent; skipped for a Typer without these hooks)."""
    option, argument = core.TyperOption, core.TyperArgument
    hooks = ("display_type_rich", "_get_number_range_help_str")
    if not all(hasattr(option, h) for h in hooks) or not hasattr(argument, "_usage_display_name"):
        return
    option.display_type_rich = _option_metavar  # type: ignore[method-assign]
    option._get_number_range_help_str = _no_range  # type: ignore[method-assign]
    argument.display_type_rich = _argument_metavar  # type: ignore[method-assign]
    argument._get_number_range_help_str = _no_range  # type: ignore[method-assign]
    argument._usage_display_name = _argument_usage  # type: ignore[method-assign]
    if hasattr(argument, "_rich_display_name"):
        argument._rich_display_name = _argument_rich_name  # type: ignore[method-assign]
    if hasattr(argument, "display_name_raw"):
        argument.display_name_raw = property(  # type: ignore[method-assign]
            lambda self: self.metavar if self.metavar is not None else (self.name or "").upper())
