"""The training loop: the loss falls, resume after SIGKILL is bit-exact, run-folder safety."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from _train_data import tiny_config, train_until_killed, write_images
from safetensors.torch import load_file

from deblurcli.errors import UsageError
from deblurcli.train import checkpointing, data
from deblurcli.train.config import ConfigError
from deblurcli.train.loop import StepInfo, fit, lr_factor
from deblurcli.train.losses import charbonnier_loss

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("train") / "sharp"
    write_images(folder, 6)
    return folder


def test_tiny_model_loss_falls_in_20_steps(images: Path, tmp_path: Path) -> None:
    cfg = tiny_config(images)
    events: list[StepInfo] = []
    result = fit(cfg, tmp_path / "run", on_step=events.append)
    assert result.step == 20 and result.model is not None
    assert [e.step for e in events if e.kind == "checkpoint"] == [10, 20]
    # the loss on a fixed batch, before (the untrained net is the identity) and after training
    batch = [data.SyntheticPairs(cfg.data, seed=99)[i] for i in range(8)]
    blurry = torch.stack([b["blurry"] for b in batch])
    sharp = torch.stack([b["sharp"] for b in batch])
    with torch.no_grad():
        after = charbonnier_loss(result.model.eval()(blurry), sharp)
    before = charbonnier_loss(blurry, sharp)
    assert after < 0.9 * before
    val = [e.values for e in events if e.kind == "val"][-1]
    assert val["psnr"] > val["psnr_input"] + 0.3 and val["psnr_ema"] > val["psnr_input"]
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "train"] == list(range(1, 21))
    assert {"loss", "charbonnier", "lr", "it_s", "wall"} <= set(lines[0])
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["run"]["steps"] == 20


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_only_where_the_cpu_has_native_bf16(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, native: bool,
) -> None:
    """On an AVX2-only CPU bf16 autocast is ~13x slower: `run.cpu_bf16` falls back to float32."""
    import deblurcli.train.loop as loop

    monkeypatch.setattr(loop, "cpu_bf16_is_native", lambda: native)
    opened: list[torch.dtype] = []
    real_autocast = torch.autocast

    def recording_autocast(device_type: str, dtype: torch.dtype, **kwargs: object):
        opened.append(dtype)
        return real_autocast(device_type, dtype=dtype, **kwargs)

    monkeypatch.setattr(loop.torch, "autocast", recording_autocast)
    cfg = tiny_config(images, **{"run.steps": 2, "run.val_every": 0, "run.cpu_bf16": True,
                                 "run.device": "cpu"})
    with caplog.at_level("WARNING", logger="deblurcli.train.loop"):
        fit(cfg, tmp_path / "run")
    warned = any("run.cpu_bf16 ignored" in r.getMessage() for r in caplog.records)
    assert opened == ([torch.bfloat16] if native else [])
    assert warned is not native
    session = json.loads((tmp_path / "run" / "run.json").read_text())["sessions"][-1]
    assert session["hardware"]["cpu_bf16_native"] is native


def test_resume_after_sigkill_matches_uninterrupted_run(images: Path, tmp_path: Path) -> None:
    options = {"run.steps": 12, "run.val_every": 0, "checkpoint.every": 6, "loss.fft": 0.1}
    cfg = tiny_config(images, **options)
    reference = fit(cfg, tmp_path / "whole")
    train_until_killed(images, tmp_path / "killed", options, kill_at=9)  # 3 steps after step 6
    assert checkpointing.latest_checkpoint(tmp_path / "killed") == (
        tmp_path / "killed" / "checkpoints" / "step_00000006"
    )
    with pytest.raises(UsageError, match="--resume"):
        fit(cfg, tmp_path / "killed")
    resumed = fit(cfg, tmp_path / "killed", resume=True)
    assert resumed.step == 12
    for name in ("model", "ema"):
        a = load_file(str(reference.checkpoint / f"{name}.safetensors"))  # type: ignore[operator]
        b = load_file(str(resumed.checkpoint / f"{name}.safetensors"))  # type: ignore[operator]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    log = [
        json.loads(line) for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in log] == list(range(1, 13))  # lines after the checkpoint were redone
    sessions = json.loads((tmp_path / "killed" / "run.json").read_text())["sessions"]
    assert [s["resumed_from"] for s in sessions] == [0, 6]


def test_resume_refuses_a_changed_config(images: Path, tmp_path: Path) -> None:
    cfg = tiny_config(images, **{"run.steps": 2, "run.val_every": 0, "checkpoint.every": 2})
    fit(cfg, tmp_path / "run")
    changed = tiny_config(images, **{"run.steps": 2, "run.val_every": 0, "optim.lr": 1.0})
    with pytest.raises(ConfigError, match="optim.lr"):
        fit(changed, tmp_path / "run", resume=True)
    longer = tiny_config(images, **{"run.steps": 3, "run.val_every": 0, "checkpoint.every": 2})
    assert fit(longer, tmp_path / "run", resume=True).step == 3


def test_gan_step_runs(images: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        images,
        **{
            "run.steps": 2,
            "run.val_every": 0,
            "loss.gan": "wgan-gp",
            "loss.gan_start": 1,
            "loss.disc_width": 4,
        },
    )
    events: list[StepInfo] = []
    fit(cfg, tmp_path / "run", on_step=events.append)
    train = [e.values for e in events if e.kind == "train"]
    assert "gan_d" not in train[0] and {"gan_g", "gan_d"} <= set(train[1])
    assert (tmp_path / "run" / "checkpoints" / "step_00000002" / "disc.safetensors").is_file()


@pytest.mark.parametrize(
    ("values", "steps", "expected"),
    [
        (
            {"schedule.kind": "constant", "schedule.warmup_steps": 4},
            [0, 1, 3, 10],
            [0.25, 0.5, 1, 1],
        ),
        (
            {"schedule.kind": "cosine", "schedule.min_lr_ratio": 0.0},
            [0, 10, 20, 30],
            [1, 0.5, 0, 0],
        ),
        (
            {"schedule.kind": "multistep", "schedule.milestones": [0.5], "schedule.gamma": 0.1},
            [0, 9, 10, 30],
            [1, 1, 0.1, 0.1],
        ),
    ],
)
def test_lr_schedules(
    images: Path, values: dict[str, object], steps: list[int], expected: list[float]
) -> None:
    cfg = tiny_config(images, **{"run.steps": 20, **values})
    assert [lr_factor(s, cfg) for s in steps] == pytest.approx(expected, abs=1e-9)


def test_lr_schedule_follows_the_time_budget_when_it_is_ahead(images: Path) -> None:
    cfg = tiny_config(images, **{"run.steps": 20, "schedule.kind": "cosine",
                                 "schedule.min_lr_ratio": 0.0, "schedule.warmup_steps": 0})
    assert lr_factor(0, cfg, time_fraction=0.5) == pytest.approx(0.5)
    assert lr_factor(0, cfg, time_fraction=1.0) == pytest.approx(0.0)
    assert lr_factor(10, cfg, time_fraction=0.1) == pytest.approx(0.5)  # steps ahead: steps rule
    step = tiny_config(images, **{"run.steps": 20, "schedule.kind": "multistep",
                                  "schedule.milestones": [0.5], "schedule.gamma": 0.1})
    assert lr_factor(0, step, time_fraction=0.6) == pytest.approx(0.1)


def test_a_spent_time_budget_ends_the_run_checkpointed_and_resumable(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deblurcli.train.loop as loop

    ticks = itertools.count()
    monkeypatch.setattr(loop.time, "monotonic", lambda: float(next(ticks)))  # each call: 1 s
    cfg = tiny_config(images, **{"run.minutes": 0.5, "run.steps": 1000})
    events: list[StepInfo] = []
    result = fit(cfg, tmp_path / "run", on_step=events.append)
    assert 1 < result.step < 30  # stopped by the 30 s budget long before 1000 steps
    assert [e.step for e in events if e.kind == "checkpoint"][-1] == result.step
    assert [e.step for e in events if e.kind == "val"][-1] == result.step
    resumed = fit(cfg, tmp_path / "run", resume=True)
    assert resumed.step > result.step
