"""The method table drives every method list: deblur, deconvolve, deconvolve-blind, bench, help."""

from __future__ import annotations

import inspect

import pytest

from deblurcli import methods
from deblurcli.errors import UsageError

NETWORKS = methods.names("network")
NON_BLIND = methods.names("non-blind")
BLIND = methods.names("blind")


def _help(*args: str) -> str:
    from typer.testing import CliRunner

    from deblurcli.cli.app import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_table_rows_are_complete_and_unique() -> None:
    assert len(methods.TABLE) == len(methods.METHODS)
    for row in methods.METHODS:
        assert row.kind in methods.KINDS and row.description and row.inputs in (1, 2)
        if row.kind == "network":
            assert row.arch and row.arch_module and row.checkpoint
    for kind, name in methods.DEFAULT_METHOD.items():
        assert methods.TABLE[name].kind == kind


def test_every_network_row_is_a_registered_architecture_and_a_table_checkpoint() -> None:
    from deblurcli.archs import REGISTRY
    from deblurcli.engine import load_method
    from deblurcli.engine.zoo import load_model_table, parse_reference
    from deblurcli.errors import ModelUnavailableError

    assert sorted(REGISTRY) == sorted({m.arch for m in methods.of_kind("network")})
    table = load_model_table()
    for row in methods.of_kind("network"):
        assert row.checkpoint is not None
        name, tag = parse_reference(row.checkpoint)
        if not any(e.name == name and e.tag == tag for e in table.entries):
            # a family whose weights are not released yet says how to make them
            with pytest.raises(ModelUnavailableError, match="train export"):
                load_method(row.name, table=table)
            continue
        assert table.find(name, tag).arch == row.arch
    default = methods.TABLE[methods.DEFAULT_METHOD["network"]]
    assert default.checkpoint in {e.ref for e in table.entries}  # the default ships
    assert table.default == default.name  # `deblur` without --method runs the same family


def test_solvers_are_the_table_and_take_exactly_its_options() -> None:
    from deblurcli import deconv
    from deblurcli.optim import vdip

    assert list(deconv.METHODS) == NON_BLIND
    for name, solver in deconv.METHODS.items():
        signature = {
            p.name: p.default for p in inspect.signature(solver).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        assert signature == methods.TABLE[name].defaults(), name
    assert list(vdip.METHODS) == BLIND


def test_bench_registry_and_every_help_list_every_method() -> None:
    from deblurcli.bench.methods import REGISTRY

    assert list(REGISTRY) == methods.names()
    for command in (("bench", "quality"), ("bench", "speed")):
        text = _help(*command)
        assert all(name in text for name in methods.names()), command
    assert all(name in _help("deblur") for name in NETWORKS)
    assert all(name in _help("deconvolve") for name in NON_BLIND)
    assert all(name in _help("deconvolve-blind") for name in BLIND)


def test_get_rejects_unknown_names_and_other_kinds_listing_valid_ones() -> None:
    assert methods.get("resunet", "network").arch == "residual_unet"
    with pytest.raises(UsageError, match="known: nafnet, resunet"):
        methods.get("no-such-net", "network")
    wrong_kind = r"non-blind method \(`deblurcli deconvolve`\); --method here takes nafnet, resunet"
    with pytest.raises(UsageError, match=wrong_kind):
        methods.get("wiener", "network")


def test_key_value_parser_types_by_schema_or_by_inference() -> None:
    assert methods.parse_params(["weight=2e-4", "iterations=50", "boundary=wrap", "clip=false",
                                 "beta-max=8"]) == {
        "weight": 2e-4, "iterations": 50, "boundary": "wrap", "clip": False, "beta_max": 8}
    schema = methods.TABLE["hyperlaplacian"].param_map
    parsed = methods.parse_params(["weight=1", "clip=no", "boundary=smooth"], schema)
    assert parsed == {"weight": 1.0, "clip": False, "boundary": "smooth"}
    assert isinstance(parsed["weight"], float)
    bad = (["weight"], ["=1"], ["nope=1"], ["weight=x"], ["clip=maybe"], ["boundary=zero"])
    for items in bad:
        with pytest.raises(UsageError):
            methods.parse_params(items, schema)
    with pytest.raises(UsageError, match="known: alpha"):
        methods.parse_params(["weight=1"], schema, reserved=("weight",))


def test_schema_of_a_dataclass_types_fields_by_their_defaults() -> None:
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        steps: int = 3
        lam: float | None = None
        flag: bool = False
        milestones: tuple[int, ...] = (1, 2)
        color: str = "rgb"

    parsed = methods.parse_params(["steps=4", "lam=0.5", "flag=true", "milestones=5,6",
                                   "color=y"], methods.schema_of(Cfg()))
    assert parsed == {"steps": 4, "lam": 0.5, "flag": True, "milestones": (5, 6), "color": "y"}


def test_deconvolve_keeps_a_solver_type_error_a_bug_not_a_usage_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from deblurcli import deconv

    def broken(blurred: object, kernel: object, *, balance: float = 1.0) -> None:
        raise TypeError("a bug inside the solver")

    monkeypatch.setitem(deconv.METHODS, "wiener", broken)
    image, kernel = np.zeros((8, 8), np.float32), np.ones((3, 3))
    with pytest.raises(TypeError, match="a bug"):
        deconv.deconvolve(image, kernel, method="wiener", balance=0.1)
    with pytest.raises(deconv.DeconvolutionParameterError, match="does not take weight"):
        deconv.deconvolve(image, kernel, method="wiener", weight=0.1)
