"""Training data: determinism per (seed, index), sharding, paired/GoPro/frame sources, packs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _train_data import tiny_config, write_images

from deblurcli.errors import UsageError
from deblurcli.train import data


@pytest.fixture
def images(tmp_path: Path) -> Path:
    write_images(tmp_path / "sharp", 5)
    return tmp_path / "sharp"


def test_synthetic_pairs_are_a_function_of_seed_and_index(images: Path) -> None:
    cfg = tiny_config(images).data
    first, again = data.SyntheticPairs(cfg, seed=3), data.SyntheticPairs(cfg, seed=3)
    a, b = first[7], again[7]
    assert a["blurry"].shape == a["sharp"].shape == (3, 32, 32)
    assert torch.equal(a["blurry"], b["blurry"]) and torch.equal(a["sharp"], b["sharp"])
    assert not torch.equal(first[8]["sharp"], a["sharp"])
    assert not torch.equal(data.SyntheticPairs(cfg, seed=4)[7]["blurry"], a["blurry"])
    assert float(a["blurry"].min()) >= 0.0 and float(a["blurry"].max()) <= 1.0
    assert float((a["blurry"] - a["sharp"]).abs().mean()) > 1e-3  # it is actually blurred


def test_every_epoch_visits_every_image_once(images: Path) -> None:
    ds = data.SyntheticPairs(tiny_config(images).data, seed=0)
    assert sorted(ds._item(i) for i in range(5)) == list(range(5))
    assert [ds._item(i) for i in range(5)] != [ds._item(i) for i in range(5, 10)]


def test_step_sampler_shards_and_resumes() -> None:
    whole = list(data.StepSampler(0, 4, batch_size=3, rank=0, world=2))
    other = list(data.StepSampler(0, 4, batch_size=3, rank=1, world=2))
    assert not {i for b in whole for i in b} & {i for b in other for i in b}
    assert list(data.StepSampler(2, 4, batch_size=3, rank=0, world=2)) == whole[2:]
    assert len(data.StepSampler(2, 4, 3)) == 2


def test_loader_is_independent_of_worker_count(images: Path) -> None:
    cfg = tiny_config(images).data
    ds = data.SyntheticPairs(cfg, seed=0)
    batches = []
    for workers in (0, 2):
        loader = data.make_loader(
            ds, dataclasses.replace(cfg, workers=workers), start_step=1, stop_step=3
        )
        batches.append([b["blurry"] for b in loader])
    assert len(batches[0]) == 2
    assert all(torch.equal(x, y) for x, y in zip(*batches, strict=True))


def test_paired_folders_and_gt_suffix(tmp_path: Path) -> None:
    write_images(tmp_path / "blur", 3)
    write_images(tmp_path / "sharp", 3)
    write_images(tmp_path / "sharp", 1, seed=9, suffix="_extra")
    pairs = data.find_pairs(tmp_path / "blur", tmp_path / "sharp")
    assert [(b.name, s.name) for b, s in pairs] == [(f"img0{i}.png",) * 2 for i in range(3)]
    write_images(tmp_path / "flat", 2)
    write_images(tmp_path / "flat", 2, suffix="_gt")
    assert [s.name for _, s in data.find_pairs(tmp_path / "flat")] == [
        "img00_gt.png",
        "img01_gt.png",
    ]
    write_images(tmp_path / "other", 1, suffix="_x")
    with pytest.raises(UsageError, match="no matching"):
        data.find_pairs(tmp_path / "blur", tmp_path / "other")


def test_paired_crops_are_aligned(tmp_path: Path) -> None:
    for seq in ("A", "B"):  # GoPro layout with identical blur/sharp files: crops must match
        write_images(tmp_path / "gopro" / seq / "blur", 2, seed=ord(seq))
        write_images(tmp_path / "gopro" / seq / "sharp", 2, seed=ord(seq))
    cfg = tiny_config(tmp_path, **{"data.kind": "gopro", "data.root": str(tmp_path / "gopro")}).data
    ds = data.make_dataset(cfg, seed=0)
    assert len(ds) == 4
    sample = ds[5]
    assert sample["blurry"].shape == (3, 32, 32)
    assert torch.equal(sample["blurry"], sample["sharp"])


def test_frame_averages_with_reference(tmp_path: Path) -> None:
    folder = tmp_path / "frames" / "SEQ"
    folder.mkdir(parents=True)
    for i in range(20):  # a bright bar moving one pixel per frame
        frame = np.zeros((40, 48, 3), np.uint8)
        frame[:, 10 + i : 13 + i] = 255
        cv2.imwrite(str(folder / f"{i + 1:06d}.png"), frame)
    cfg = tiny_config(
        tmp_path,
        **{
            "data.kind": "frames",
            "data.root": str(tmp_path / "frames"),
            "data.reference": True,
            "data.reference_distance": [3, 5],
            "data.flips": False,
        },
    )
    sample = data.make_dataset(cfg.data, seed=0)[0]
    assert set(sample) == {"blurry", "sharp", "reference"}
    sharp_cols = (sample["sharp"][0].mean(0) > 0.5).sum()
    blur_cols = (sample["blurry"][0].mean(0) > 0.01).sum()
    assert sharp_cols == 3 and blur_cols > 3  # the average is wider than one frame's bar
    assert not torch.equal(sample["reference"], sample["sharp"])


def test_pack_round_trip(images: Path, tmp_path: Path) -> None:
    pack = tmp_path / ".pack" / "p.safetensors"
    assert data.build_pack([images], pack, crop=48, per_image=2, quality=95) == 10
    source = data.open_sharp_source(str(pack))
    assert len(source) == 10 and source[3].shape == (48, 48, 3)
    cfg = tiny_config(tmp_path, **{"data.sharp": str(pack)}).data
    assert data.make_dataset(cfg, seed=0)[4]["sharp"].shape == (3, 32, 32)
    with pytest.raises(UsageError, match="pack file not found"):
        data.open_sharp_source(str(tmp_path / "missing.safetensors"))


def test_val_set_is_fixed_and_skips_small_images(images: Path) -> None:
    write_images(images / "small", 1, size=(20, 20))
    cfg = tiny_config(images, **{"val.count": 3}).val
    first, second = data.build_val_set(cfg), data.build_val_set(cfg)
    assert first is not None and second is not None
    assert first.blurry.shape == (3, 3, 40, 40) and first.names == second.names
    assert torch.equal(first.blurry, second.blurry) and torch.equal(first.sharp, second.sharp)
    assert not any("small" in n for n in first.names)
    assert data.build_val_set(dataclasses.replace(cfg, kind="none")) is None
    with pytest.raises(UsageError, match="at least"):
        data.build_val_set(dataclasses.replace(cfg, crop=400))


def test_missing_folders_are_usage_errors(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, **{"data.sharp": str(tmp_path / "nope")}).data
    with pytest.raises(UsageError, match="not a directory"):
        data.make_dataset(cfg, seed=0)
    with pytest.raises(UsageError, match="data.blurred"):
        data.make_dataset(dataclasses.replace(cfg, kind="paired"), seed=0)
