"""`deblurcli deconvolve-blind`: argument plumbing (library patched), outputs, JSON, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deblurcli.cli import deconvolve_blind as command
from deblurcli.io import Image, write_image
from deblurcli.optim import blind
from deblurcli.optim.blind import BlindOutput

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def app() -> Any:
    """The real app; the command must be registered there."""
    from deblurcli.cli.app import app as real_app

    assert any(c.callback is command.deconvolve_blind for c in real_app.registered_commands)
    return real_app


def _invoke(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``main(argv)`` (the central error mapping); return (exit code, stdout)."""
    from deblurcli.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, _ = capsys.readouterr()
    return int(exit_info.value.code or 0), out


def _image(path: Path, size: int = 64, channels: int = 1) -> Path:
    rng = np.random.default_rng(0)
    pixels = rng.random((size, size, channels)).astype(np.float32)
    write_image(path, Image(pixels=pixels, dtype=np.dtype(np.uint8)))
    return path


def _fake(calls: list[dict[str, Any]]) -> Any:
    def run(pixels: np.ndarray, **kwargs: Any) -> BlindOutput:
        calls.append(kwargs)
        kwargs["on_progress"](1, 2, 0.5, "level 1/1")
        k = np.zeros((5, 5))
        k[2, 1:4] = 1 / 3
        return BlindOutput(pixels * 0.5, k, {"method": kwargs["method"], "warnings": ["w1"]})

    return run


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every ``blind.deconvolve_blind`` call (patched with a fake)."""
    recorded: list[dict[str, Any]] = []
    monkeypatch.setattr(blind, "deconvolve_blind", _fake(recorded))
    return recorded


def test_kwargs_outputs_and_json(app: Any, tmp_path: Path, calls: list[dict[str, Any]],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    src = _image(tmp_path / "im2_kernel4_img.png")
    out = tmp_path / "out" / "sharp.png"
    code, stdout = _invoke(["deconvolve-blind", str(src), "-o", str(out), "--method", "dip",
                            "--preset", "paper", "--seed", "7", "--iters", "12", "--json",
                            "--device", "cpu", "--param", "prefit=3", "--restarts", "2"],
                           capsys)
    assert code == 0
    assert calls[0]["method"] == "dip" and calls[0]["preset"] == "paper"
    # No benchmark file-name rules in the product: the paper preset's size is its 21 default
    # (the fast preset estimates it, see test_fast_preset_size_is_estimated).
    assert calls[0]["kernel_size"] == (21, 21)
    assert calls[0]["seed"] == 7 and calls[0]["iters"] == 12 and calls[0]["prefit"] == 3
    assert calls[0]["restarts"] == 2
    assert out.exists()
    png, txt = tmp_path / "out" / "sharp_kernel.png", tmp_path / "out" / "sharp_kernel.txt"
    assert png.exists() and np.loadtxt(txt).sum() == pytest.approx(1.0)
    document = json.loads(stdout)
    item = document["items"][0]
    assert document["method"] == "dip" and item["status"] == "ok"
    assert item["details"]["kernel"] == str(txt)


def test_fast_preset_size_is_estimated(app: Any, tmp_path: Path, calls: list[dict[str, Any]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    src = _image(tmp_path / "im2_kernel4_img.png")
    code, _ = _invoke(["deconvolve-blind", str(src), "-o", str(tmp_path / "o.png")], capsys)
    assert code == 0 and calls[0]["kernel_size"] is None
    assert calls[0]["restarts"] is None  # the library's per-preset default (2 for fast)


def test_explicit_kernel_size_and_kernel_out(app: Any, tmp_path: Path,
                                            calls: list[dict[str, Any]],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    src = _image(tmp_path / "photo.png")
    code, _ = _invoke(["deconvolve-blind", str(src), "-o", str(tmp_path / "o.png"),
                       "--kernel-size", "19x25", "--kernel-out", str(tmp_path / "k.npy")], capsys)
    assert code == 0
    assert calls[0]["kernel_size"] == (19, 25)
    assert np.load(tmp_path / "k.npy").shape == (5, 5) and (tmp_path / "k.png").exists()
    # a second run refuses to replace the kernel files
    code, _ = _invoke(["deconvolve-blind", str(src), "-o", str(tmp_path / "o2.png"),
                       "--kernel-size", "19x25", "--kernel-out", str(tmp_path / "k.npy")], capsys)
    assert code == 2


@pytest.mark.parametrize("args", [["--method", "nope"], ["--preset", "slow"],
                                  ["--kernel-size", "20"], ["--param", "nope=1"]])
def test_usage_errors_exit_2(app: Any, tmp_path: Path, args: list[str],
                            capsys: pytest.CaptureFixture[str]) -> None:
    src = _image(tmp_path / "a.png")
    code, _ = _invoke(["deconvolve-blind", str(src), "-o", str(tmp_path / "b.png"), *args], capsys)
    assert code == 2


def test_real_pipeline_smoke_and_too_small_image(app: Any, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    good = _image(tmp_path / "good.png", size=48, channels=3)
    tiny = _image(tmp_path / "tiny.png", size=20)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(_image(tmp_path / "whole.png").read_bytes()[:100])  # truncated PNG
    code, stdout = _invoke(["deconvolve-blind", str(good), str(tiny), str(corrupt),
                            "-o", str(tmp_path / "out"),
                            "--kernel-size", "5", "--iters", "2", "--json", "--no-progress"],
                           capsys)
    assert code == 3  # tiny and corrupt failed, good was written
    items = {Path(i["input"]).name: i for i in json.loads(stdout)["items"]}
    assert items["good.png"]["status"] == "ok" and items["tiny.png"]["status"] == "failed"
    assert items["corrupt.png"]["status"] == "failed"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "good.png", "good_kernel.png", "good_kernel.txt"]
    assert (tmp_path / "out" / "good.png").exists()
    # the kernel written has the size asked for (the estimation margin is cropped off)
    assert np.loadtxt(tmp_path / "out" / "good_kernel.txt").shape == (5, 5)
    assert items["good.png"]["details"]["kernel_size"] == [5, 5]


def test_finish_option_reaches_the_fast_preset_and_a_missing_model_fails_once(
        app: Any, tmp_path: Path, calls: list[dict[str, Any]],
        capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "b.png")
    code, _ = _invoke(["deconvolve-blind", str(a), "-o", str(tmp_path / "o.png"),
                       "--finish", "none"], capsys)
    assert code == 0 and calls[0]["finish"] == "none"
    code, _ = _invoke(["deconvolve-blind", str(a), "-o", str(tmp_path / "p.png"),
                       "--preset", "paper", "--finish", "none"], capsys)
    assert code == 2
    out = tmp_path / "missing"
    code, _ = _invoke(["deconvolve-blind", str(a), str(b), "-o", str(out),
                       "--finish", str(tmp_path / "nowhere.safetensors")], capsys)
    assert code == 4 and len(calls) == 1 and not out.exists()
    # a list of networks is checked whole before any photo: one missing, or a malformed list
    code, _ = _invoke(["deconvolve-blind", str(a), str(b), "-o", str(out), "--finish",
                       f"nafnet-finish@cpu-v2,{tmp_path / 'nowhere.safetensors'}"], capsys)
    assert code == 4 and len(calls) == 1 and not out.exists()
    code, _ = _invoke(["deconvolve-blind", str(a), "-o", str(out), "--finish",
                       "nafnet-finish@cpu-v2,,nafnet-finish@cpu-v3"], capsys)
    assert code == 2 and len(calls) == 1 and not out.exists()
    code, _ = _invoke(["deconvolve-blind", str(a), "-o", str(tmp_path / "q.png"), "--finish",
                       "nafnet-finish@cpu-v2,nafnet-finish@cpu-v3"], capsys)
    assert code == 0 and calls[1]["finish"] == "nafnet-finish@cpu-v2,nafnet-finish@cpu-v3"
