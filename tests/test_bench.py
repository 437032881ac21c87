"""Benchmarks: folder-pair quality (table/JSON/CSV), speed rows, the deblur method, Levin preset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deblurcli.bench import datasets, methods, quality, report, speed
from deblurcli.cli.app import main

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(os.environ.get("DEBLURCLI_DATA", REPO.parent / "shared" / "data"))


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return int(info.value.code or 0), capsys.readouterr().out


@pytest.fixture
def pairs(tmp_path: Path) -> tuple[Path, Path]:
    """Two 32×32 grey pairs (blurred = box-smoothed sharp) with matching names, one unmatched."""
    blurred, sharp = tmp_path / "blurred", tmp_path / "sharp"
    blurred.mkdir(), sharp.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        img = (rng.random((32, 32)) > 0.5).astype(np.float32)
        soft = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1)) / 3
        Image.fromarray((img * 255).astype(np.uint8)).save(sharp / f"{name}.png")
        Image.fromarray((soft * 255).astype(np.uint8)).save(blurred / f"{name}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(blurred / "unmatched.png")
    return blurred, sharp


def test_folder_pairs_quality_json_csv(pairs: tuple[Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    blurred, sharp = pairs
    csv = tmp_path / "q.csv"
    code, out = _run(capsys, "bench", "quality", "--blurred", blurred, "--sharp", sharp,
                     "--method", "identity", "--json", "--csv", csv, "--quiet")
    assert code == 0
    doc = json.loads(out)
    assert doc["dataset"]["count"] == 2 and doc["dataset"]["protocol"] == "full"
    (result,) = doc["results"]
    assert result["method"] == "identity" and [i["name"] for i in result["items"]] == ["a", "b"]
    assert 0 < result["mean"]["psnr"] < 40 and 0 < result["mean"]["ssim"] < 1
    assert csv.read_text().splitlines()[0].startswith("method,image,psnr,ssim")


def test_quality_table_and_kernel_rules(pairs: tuple[Path, Path]) -> None:
    ds = datasets.folder_pairs(*pairs)
    res = quality.run_quality(ds, ["identity"], methods.MethodConfig(device="cpu"))
    table = report.quality_table(res)
    assert table.row_count == 3  # two images and the mean
    with pytest.raises(Exception, match="needs --ground-truth-kernel"):
        quality.run_quality(ds, ["wiener"], methods.MethodConfig(device="cpu"))
    with pytest.raises(Exception, match="no ground-truth kernels"):
        quality.run_quality(ds, ["identity"], methods.MethodConfig(device="cpu"),
                            kernel="ground-truth")


def test_speed_rows_and_plot(tmp_path: Path) -> None:
    rows = speed.run_speed(["wiener"], methods.MethodConfig(device="cpu"), [(32, 32)],
                           repeats=1, warmup=0, channels=1)
    (row,) = rows
    assert (row.height, row.width, row.repeats, row.device) == (32, 32, 1, "cpu")
    assert row.median_s > 0 and row.megapixels_per_s > 0 and row.precision == "fp32"
    assert speed.parse_sizes("512, 64x32") == [(512, 512), (32, 64)]
    from deblurcli.bench.plot import plot_speed

    assert plot_speed(rows, tmp_path / "s.png").stat().st_size > 0


def test_deblur_method_uses_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, object] = {}

    def fake_load_model(ref: str, **kw: object) -> object:
        calls.update(ref=ref, **kw)
        return lambda x: (x * 0.5).cpu()

    monkeypatch.setattr("deblurcli.engine.load_model", fake_load_model)
    prepared = methods.get_method("resunet").build(methods.MethodConfig(device="cpu", model="m@t"))
    y = prepared.run(torch.ones(1, 3, 8, 8), None)
    assert calls["ref"] == "m@t" and calls["device"] == "cpu"
    assert torch.allclose(y, torch.full((1, 3, 8, 8), 0.5))


def test_blind_methods_get_the_true_kernel_for_its_size_only(pairs: tuple[Path, Path]) -> None:
    seen: list[tuple[int, ...] | None] = []

    def build(config: methods.MethodConfig) -> methods.Prepared:
        def run(x: torch.Tensor, kernel: torch.Tensor | None) -> torch.Tensor:
            seen.append(None if kernel is None else tuple(kernel.shape))
            return x
        return methods.Prepared(run, torch.device("cpu"), torch.float32, "recorder")

    blind = methods.Method("recorder", "records its kernel", "size", build)
    cfg = methods.MethodConfig(device="cpu")
    synthetic = datasets.synthetic(pairs[1], seed=3, kernel_size=7)
    # no --ground-truth-kernel needed: a blind method sees each sample's true kernel (its size)
    quality.run_quality(synthetic, [blind], cfg)
    # without true kernels it runs with none (its default size), and --kernel FILE wins
    quality.run_quality(datasets.folder_pairs(*pairs), [blind], cfg)
    quality.run_quality(synthetic, [blind], cfg, kernel=np.ones((5, 3)) / 15)
    assert seen == [(7, 7)] * 2 + [None] * 2 + [(5, 3)] * 2


def test_bench_help_lists_every_method() -> None:
    from typer.testing import CliRunner

    from deblurcli.cli.app import app

    text = " ".join(CliRunner().invoke(app, ["bench", "quality", "--help"],
                                       env={"COLUMNS": "400"}).output.split())
    for name in methods.REGISTRY:
        assert name in text


def test_synthetic_preset_is_seeded(pairs: tuple[Path, Path]) -> None:
    a = datasets.synthetic(pairs[1], seed=3, kernel_size=7).samples[0].load()
    b = datasets.synthetic(pairs[1], seed=3, kernel_size=7).samples[0].load()
    assert np.array_equal(a.blurred, b.blurred)
    assert a.kernel is not None and a.kernel.shape == (7, 7)


@pytest.mark.data
@pytest.mark.skipif(not (_data_dir() / "levin09").is_dir(), reason="shared data absent")
def test_levin_preset_orientation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBLURCLI_DATA", str(_data_dir()))
    ds = datasets.levin()
    assert len(ds.samples) == 32 and ds.protocol == "shift" and ds.crop == 15
    res = quality.run_quality(ds.head(1), ["wiener"], methods.MethodConfig(device="cpu"),
                              kernel="ground-truth", error_ratio=False)
    assert res[0].items[0].psnr > 30  # 32.8 dB; the kernel rotated by 180° gives 26.7 dB
