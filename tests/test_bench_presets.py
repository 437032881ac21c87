"""The validation presets of learned models: ``shake``, ``gopro_dev`` per sequence, ``city100``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from _train_data import write_images

from deblurcli.bench import datasets, report
from deblurcli.bench.methods import MethodConfig
from deblurcli.bench.quality import run_quality
from deblurcli.errors import UsageError


def test_shake_preset_is_fixed_seeded_camera_shake(tmp_path: Path) -> None:
    write_images(tmp_path / "val", 3, size=(90, 96))
    first = [s.load() for s in datasets.shake(tmp_path / "val").samples]
    again = [s.load() for s in datasets.shake(tmp_path / "val").samples]
    assert len(first) == 3 and datasets.shake(tmp_path / "val").crop == 16
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.blurred, b.blurred)  # the same set on every run
        assert a.kernel is not None and 15 <= a.kernel.shape[0] <= 51
        assert a.blurred.shape == a.sharp.shape == (90, 96, 3)
        residual = a.blurred - a.sharp
        assert float(np.abs(residual).mean()) > 0.005  # blurred, not a copy
    assert len({a.kernel.shape for a in first if a.kernel is not None}) >= 1


def test_gopro_dev_reports_a_mean_per_sequence(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for seq, frames in (("GOPRA", (1, 2)), ("GOPRB", (5,))):
        for f in frames:
            sharp = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
            stem = f"{seq}_st_frame-{f}_n_avg-8"
            cv2.imwrite(str(tmp_path / f"{stem}_gt.png"), sharp)
            cv2.imwrite(str(tmp_path / f"{stem}.png"), cv2.GaussianBlur(sharp, (5, 5), 1.5))
    dataset = datasets.gopro_dev(tmp_path)
    [result] = run_quality(dataset, ["identity"], MethodConfig(device="cpu"))
    assert result.groups() == ["GOPRA", "GOPRB"]
    doc = result.to_dict()
    assert set(doc["group_means"]) == {"GOPRA", "GOPRB"}
    assert doc["group_means"]["GOPRB"]["psnr"] == pytest.approx(result.items[-1].psnr)
    table = report.quality_table([result])
    assert "GOPRA (2)" in table.columns[0]._cells


def test_presets_name_the_missing_data(tmp_path: Path) -> None:
    for preset in ("shake", "gopro_dev", "city100"):
        with pytest.raises(UsageError, match="--data"):
            datasets.open_dataset(preset=preset, data=tmp_path)
