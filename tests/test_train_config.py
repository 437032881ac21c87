"""Training config: TOML + --set overrides, typed parsing, and typos failing before any data."""

from __future__ import annotations

from pathlib import Path

import pytest

from deblurcli import methods
from deblurcli.cli.app import main
from deblurcli.errors import UsageError
from deblurcli.train.config import (
    SET_FORM,
    ConfigError,
    TrainConfig,
    apply_overrides,
    diff,
    load_config,
    parse_value,
)

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "residual_unet_synth.toml"


def test_defaults_are_valid() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, TrainConfig)
    assert cfg.model.arch == "residual_unet"


def test_recipe_loads() -> None:
    cfg = load_config(RECIPE)
    assert cfg.model.config["width"] == 16
    assert cfg.data.kind == "synthetic" and cfg.loss.charbonnier == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("1e-4", 1e-4),
        ("true", True),
        ('["motion"]', ["motion"]),
        ('"a b"', "a b"),
        ("../shared/data/x", "../shared/data/x"),
        ("runs/a=b", "runs/a=b"),
    ],
)
def test_parse_value(text: str, expected: object) -> None:
    assert parse_value(text) == expected


def test_overrides_are_typed_and_nested(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[optim]\nlr = 1e-3\n[model.config]\nwidth = 8\n")
    cfg = load_config(
        path,
        [
            "optim.lr=5e-4",
            "model.config.levels=2",
            "run.steps=7",
            'data.kernel_kinds=["motion"]',
            "optim.grad_clip=1",
        ],
    )
    assert cfg.optim.lr == 5e-4 and cfg.run.steps == 7
    assert cfg.model.config == {"width": 8, "levels": 2}
    assert cfg.data.kernel_kinds == ["motion"]
    assert isinstance(cfg.optim.grad_clip, float)  # int accepted for float
    assert diff(load_config(path), cfg) == [
        "data.kernel_kinds",
        "model.config",
        "optim.grad_clip",
        "optim.lr",
        "run.steps",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optim.lrr=1"],
            "unknown key(s) optim.lrr in [optim]; valid: betas, disc_lr, grad_clip, lr",
        ),
        (["optimiser.lr=1"], "unknown key(s) optimiser in the top level; valid: checkpoint, data"),
        (
            ["model.config.widht=8"],
            "unknown residual_unet config key(s) widht; valid: blocks_per_level",
        ),
        (["model.arch=nope"], "unknown architecture 'nope'"),
        (["run.steps=many"], "run.steps: expected int, got str 'many'"),
        (["run.steps=1.5"], "run.steps: expected int"),
        (["run.amp=1"], "run.amp: expected bool"),
        (["data.kind=video"], "data.kind: 'video' is not one of 'synthetic', 'pack', 'paired'"),
        (["data.kernel_kinds=[1]"], "data.kernel_kinds[0]: expected str"),
        (["model.config.width=wide"], "model.config.width: expected int"),
        (["data.crop=100"], "data.crop=100 must be a positive multiple of 8"),
        (["data.kernel_size=8"], "data.kernel_size=8 must be odd"),
        (["data.frames=[9, 7]"], "data.frames=[9, 7] must be [low, high]"),
        (["optim"], "expected SECTION.KEY=VALUE"),
        (["optim.lr.x=1"], "optim.lr: expected float, got dict"),
    ],
)
def test_errors_name_the_problem(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nsteps = 3\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_apply_overrides_does_not_mutate() -> None:
    values = {"run": {"steps": 1}}
    assert apply_overrides(values, ["run.steps=2"]) == {"run": {"steps": 2}}
    assert values == {"run": {"steps": 1}}


def test_set_and_param_split_items_with_the_one_key_value_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    split = methods.split_key_value

    def spy(item: str, **kwargs: str) -> tuple[str, str]:
        seen.append(item)
        return split(item, **kwargs)

    monkeypatch.setattr(methods, "split_key_value", spy)
    assert apply_overrides({}, ["data.sharp=runs/a=b"]) == {"data": {"sharp": "runs/a=b"}}
    assert methods.parse_params(["out=runs/a=b"]) == {"out": "runs/a=b"}
    assert seen == ["data.sharp=runs/a=b", "out=runs/a=b"]
    # a missing '=' is refused in the same words by both, naming the flag and what it expects
    with pytest.raises(ConfigError) as by_set:
        apply_overrides({}, ["optim"])
    with pytest.raises(UsageError) as by_param:
        methods.parse_params(["optim"], flag="--set")
    assert str(by_set.value) == f"--set 'optim': expected {SET_FORM}"
    assert str(by_param.value) == "--set 'optim': expected KEY=VALUE"


def test_cli_typo_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import deblurcli.train.data as data_module
    import deblurcli.train.loop as loop_module

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("data or training started despite a config error")

    monkeypatch.setattr(loop_module, "fit", boom)
    monkeypatch.setattr(data_module, "make_dataset", boom)
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["train", "run", str(RECIPE), "--set", "optim.lrr=1", "--run-dir", str(tmp_path / "r")]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "unknown key(s) optim.lrr" in err and "valid: betas" in err
    assert not (tmp_path / "r").exists()


def test_cli_passes_overrides_to_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import deblurcli.train.loop as loop_module

    seen: dict[str, object] = {}

    def fake_fit(cfg: TrainConfig, run_dir: Path, *, resume: bool, on_step: object) -> object:
        seen.update(cfg=cfg, run_dir=run_dir, resume=resume)
        return loop_module.FitResult(run_dir=run_dir, step=0, checkpoint=None, wall_seconds=0.0)

    monkeypatch.setattr(loop_module, "fit", fake_fit)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "run",
                str(RECIPE),
                "--set",
                "run.steps=3",
                "--resume",
                "--no-progress",
                "--blurred",
                str(tmp_path / "b"),
                "--sharp",
                str(tmp_path / "s"),
            ]
        )
    assert exit_info.value.code == 0
    cfg = seen["cfg"]
    assert isinstance(cfg, TrainConfig)
    assert (
        cfg.run.steps == 3 and cfg.data.kind == "paired" and cfg.data.blurred == str(tmp_path / "b")
    )
    assert seen["run_dir"] == Path("runs") / "residual_unet_synth" and seen["resume"] is True


def test_finishing_config_trains_on_restorations_and_validates_on_them(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from deblurcli.io import Image, write_image
    from deblurcli.train.config import recipe_of
    from deblurcli.train.data import build_val_set

    cfg = load_config(RECIPE.parent / "nafnet_finish.toml")
    recipe = recipe_of(cfg.data)
    assert recipe.deconvolve_prob == 1.0 and recipe.kernel_error_max > 0
    assert cfg.val.deconvolve and cfg.run.init.startswith("nafnet@")
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(96, 96, 3)), 0), 1)
    smooth = ((smooth - smooth.min()) / np.ptp(smooth)).astype(np.float32)
    write_image(tmp_path / "a.png", Image(pixels=smooth, dtype=np.dtype(np.uint8)))
    val = cfg.val.__class__(sharp=str(tmp_path), count=1, crop=32, kernel_size=15)
    plain = build_val_set(val)
    restored = build_val_set(cfg.val.__class__(**{**val.__dict__, "deconvolve": True}))
    assert plain is not None and restored is not None
    assert torch.equal(plain.sharp, restored.sharp)
    assert not torch.equal(plain.blurry, restored.blurry)
