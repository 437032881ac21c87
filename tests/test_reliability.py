"""Regression corpus of issue 12: nothing lost, nothing silently replaced.

One test per defect found by the hostile-user review (numbered as in the issue), plus a
two-process test that runs two writers into one folder. Tiny images, the tiny model.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from deblurcli.cli.app import main
from deblurcli.io import Image, read_image, write_image

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(args: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def _img(path: Path, size: int = 16, channels: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.random((size, size, channels)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, Image(pixels=pixels, dtype=np.dtype(np.uint8)))
    return path


def _folder(root: Path, names: tuple[str, ...] = ("a.png", "b.png", "c.png")) -> Path:
    for seed, name in enumerate(names):
        _img(root / name, seed=seed)
    return root


def _pixels(path: Path) -> np.ndarray:
    with PILImage.open(path) as img:
        return np.asarray(img).astype(np.int32)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _forged_png(width: int, height: int) -> bytes:
    """A PNG header claiming a huge size, with no real pixel data."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"IDAT", b"") + _png_chunk(b"IEND", b"")


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".deblurcli-tmp-" in p.name]


def _fake_blind(calls: list[dict[str, Any]] | None = None) -> Any:
    from deblurcli.optim.blind import BlindOutput

    def run(pixels: np.ndarray, **kwargs: Any) -> BlindOutput:
        if calls is not None:
            calls.append(kwargs)
        k = np.zeros((5, 5))
        k[2, 1:4] = 1 / 3
        return BlindOutput(pixels * 0.5, k, {"method": kwargs["method"]})

    return run


# --- High: silent data loss ------------------------------------------------------------------


def test_01_output_written_meanwhile_by_another_run_is_reported_exists_and_kept(
    model_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inputs, out = _folder(tmp_path / "in"), tmp_path / "out"
    import deblurcli.io as dio

    real = dio.encode_image

    def other_run_wins_b(path: Any, image: Any, **kwargs: Any) -> bytes:
        if Path(path).name == "b.png":  # another process writes b.png after our pre-flight
            Path(path).write_bytes(b"written by the other run")
        return real(path, image, **kwargs)

    monkeypatch.setattr(dio, "encode_image", other_run_wins_b)
    code, out_json, err = run_cli(["deblur", inputs, "-o", out, "--json"], capsys)
    assert code == 3
    assert (out / "b.png").read_bytes() == b"written by the other run"
    items = {Path(i["input"]).name: i for i in json.loads(out_json)["items"]}
    assert items["a.png"]["status"] == items["c.png"]["status"] == "ok"
    assert items["b.png"]["status"] == "failed" and "already exists" in items["b.png"]["error"]
    assert str(out / "b.png") in err and _no_temp_files(out)
    # --skip-existing turns the lost race into a skip (exit 0), still replacing nothing
    (out / "b.png").unlink()
    monkeypatch.setattr(dio, "encode_image", other_run_wins_b)
    code, out_json, _ = run_cli(["deblur", inputs, "-o", out, "--json", "--skip-existing"],
                                capsys)
    assert code == 0 and (out / "b.png").read_bytes() == b"written by the other run"
    assert json.loads(out_json)["summary"] == {"ok": 0, "skipped": 3, "failed": 0}


def test_01_two_processes_writing_one_folder_replace_nothing(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    names = tuple(f"im{i}.png" for i in range(6))
    inputs, out, go = _folder(tmp_path / "in", names), tmp_path / "out", tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "import deblurcli.io as dio\n"
        "from deblurcli.cli.app import main\n"
        "real = dio.encode_image\n"
        "def slow(*a, **k):\n"
        "    time.sleep(0.05)\n"
        "    return real(*a, **k)\n"
        "dio.encode_image = slow\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.002)\n"
        "main(sys.argv[1:])\n"
    )
    args = ["deblur", str(inputs), "-o", str(out), "--model", str(tiny_checkpoint), "--json",
            "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    time.sleep(1.0)
    go.touch()
    results = [p.communicate(timeout=240) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 3], [3, 3], [0, 2]), results
    written: dict[str, int] = {}
    for (stdout, _), proc in zip(results, procs, strict=True):
        if proc.returncode == 2:  # started after the other had written everything
            continue
        for item in json.loads(stdout)["items"]:
            if item["status"] == "ok":
                written[item["output"]] = written.get(item["output"], 0) + 1
            else:
                assert "already exists" in item["error"]
    assert sorted(written) == sorted(str(out / n) for n in names)
    assert set(written.values()) == {1}  # each file written by exactly one process
    assert sorted(p.name for p in out.iterdir()) == sorted(names) and _no_temp_files(out)


def test_02_blind_kernel_files_never_collide_with_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from deblurcli.optim import blind

    monkeypatch.setattr(blind, "deconvolve_blind", lambda *a, **k: pytest.fail("computed"))
    inputs = _folder(tmp_path / "in", ("a.png", "a_kernel.png"))
    code, _, err = run_cli(["deconvolve-blind", inputs, "-o", tmp_path / "out"], capsys)
    assert code == 2 and "a_kernel.png" in err and not (tmp_path / "out").exists()
    single = _img(tmp_path / "p.png")
    code, _, err = run_cli(["deconvolve-blind", single, "-o", tmp_path / "o.png",
                            "--kernel-out", tmp_path / "o.png"], capsys)
    assert code == 2 and "o.png" in err and not (tmp_path / "o.png").exists()
    # beside the inputs (no -o): an output that is another input is refused too
    beside = _folder(tmp_path / "beside", ("x.png", "x_deblurred.png"))
    code, _, _ = run_cli(["deconvolve-blind", beside], capsys)
    assert code == 2


def test_03_palette_kernel_png_is_read_as_brightness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deblurcli.kernels import read_kernel

    indices = np.ones((5, 5), np.uint8)
    indices[2, 2] = 0  # palette entry 0 is white, entry 1 black: a delta by brightness
    kernel_png = PILImage.fromarray(indices, "P")
    kernel_png.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    kernel_png.save(tmp_path / "k.png")
    expected = np.zeros((5, 5))
    expected[2, 2] = 1
    np.testing.assert_allclose(read_kernel(tmp_path / "k.png"), expected)
    src, out = _img(tmp_path / "in.png"), tmp_path / "out.png"
    code, _, _ = run_cli(["blur", src, "-o", out, "--kernel", tmp_path / "k.png"], capsys)
    assert code == 0 and np.array_equal(_pixels(out), _pixels(src))


# --- Medium ----------------------------------------------------------------------------------


def test_04_blind_kernel_write_failure_fails_that_item_only_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import deblurcli._atomic as atomic
    from deblurcli.optim import blind

    monkeypatch.setattr(blind, "deconvolve_blind", _fake_blind())
    real = atomic._fsync

    def disk_full_for_a_kernel(path: Path) -> None:
        if path.name.startswith(".a_kernel") and path.suffix == ".txt":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path)

    monkeypatch.setattr(atomic, "_fsync", disk_full_for_a_kernel)
    inputs, out = _folder(tmp_path / "in", ("a.png", "b.png")), tmp_path / "out"
    code, out_json, err = run_cli(["deconvolve-blind", inputs, "-o", out, "--json",
                                   "--kernel-size", "5"], capsys)
    assert code == 3
    assert str(out / "a_kernel.txt") in err and "No space left" in err
    assert sorted(p.name for p in out.iterdir()) == ["b.png", "b_kernel.png", "b_kernel.txt"]
    monkeypatch.setattr(atomic, "_fsync", real)  # the rerun is not refused: a's files are absent
    code, _, _ = run_cli(["deconvolve-blind", inputs, "-o", out, "--skip-existing",
                          "--kernel-size", "5"], capsys)
    assert code == 0 and (out / "a_kernel.txt").exists()


def test_05_kernel_whose_sum_overflows_is_normalised_not_black(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "huge.txt").write_text("1e308 1e308 1e308\n" * 3)
    (tmp_path / "box.txt").write_text("1 1 1\n" * 3)
    src = _img(tmp_path / "in.png")
    for name in ("huge", "box"):
        code, _, _ = run_cli(["blur", src, "-o", tmp_path / f"{name}.png", "--kernel",
                              tmp_path / f"{name}.txt"], capsys)
        assert code == 0
    assert _pixels(tmp_path / "huge.png").mean() > 50
    assert np.array_equal(_pixels(tmp_path / "huge.png"), _pixels(tmp_path / "box.png"))
    (tmp_path / "inf.txt").write_text("1 inf\n1 1\n")
    code, _, err = run_cli(["blur", src, "-o", tmp_path / "inf.png", "--kernel",
                            tmp_path / "inf.txt"], capsys)
    assert code == 2 and "inf.txt" in err


def _forged_checkpoint(path: Path, tiny_model: torch.nn.Module, **metadata: str) -> Path:
    from safetensors.torch import save_file

    from deblurcli.archs import config_of
    from deblurcli.engine import ModelInfo

    base = {"format": "pt", "deblurcli.format": "1", "arch": "residual_unet",
            "config": json.dumps(config_of(tiny_model)),
            "info": ModelInfo.for_model("residual_unet", tiny_model).to_json()}
    save_file(dict(tiny_model.state_dict()), str(path), metadata={**base, **metadata})
    return path


def test_06_forged_config_is_refused_before_the_network_is_built(
    tmp_path: Path, tiny_model: torch.nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    from deblurcli.engine.checkpoint import load_checkpoint
    from deblurcli.errors import CheckpointError

    config = json.dumps({"in_channels": 3, "width": 4096, "levels": 3, "blocks_per_level": 2})
    forged = _forged_checkpoint(tmp_path / "forged.safetensors", tiny_model, config=config)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="parameters"):
        load_checkpoint(forged)
    assert time.perf_counter() - started < 5
    code, _, err = run_cli(["deblur", _img(tmp_path / "x.png"), "-o", tmp_path / "y.png",
                            "--model", forged], capsys)
    assert code == 5 and "forged.safetensors" in err


def test_07_huge_file_after_a_jpeg_signature_fails_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deblurcli.errors import ImageFormatError

    zeros = tmp_path / "zeros.jpg"
    with open(zeros, "wb") as handle:  # sparse: 2 GiB that take no disk space
        handle.write(b"\xff\xd8\xff")
        handle.truncate(2 << 30)
    started = time.perf_counter()
    with pytest.raises(ImageFormatError, match="zeros.jpg"):
        read_image(zeros)
    padded = tmp_path / "padded.png"  # a real image followed by a huge run of zeros
    with open(padded, "wb") as handle:
        handle.write(_img(tmp_path / "small.png").read_bytes())
        handle.truncate(1 << 30)
    with pytest.raises(ImageFormatError, match="padded.png"):
        read_image(padded)
    assert time.perf_counter() - started < 5
    code, _, err = run_cli(["blur", zeros, _img(tmp_path / "ok.png"), "-o", tmp_path / "out",
                            "--kernel-size", "5"], capsys)
    assert code == 3 and "zeros.jpg" in err and (tmp_path / "out" / "ok.png").exists()


def test_08_temp_files_of_a_killed_run_are_removed_by_the_next_run(
    model_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    script = (
        "import os, signal, sys\n"
        "from deblurcli._atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half an image')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(out / "a.png")], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert not _no_temp_files(out)  # the killed run left its temporary file
    code, _, err = run_cli(["deblur", _folder(tmp_path / "in"), "-o", out], capsys)
    assert code == 0 and "interrupted run" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]


def test_09_blur_checks_save_kernel_before_writing_the_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = _img(tmp_path / "in.png"), tmp_path / "out.png"
    code, _, err = run_cli(["blur", src, "-o", out, "--save-kernel", tmp_path / "k.gif"], capsys)
    assert code == 2 and "k.gif" in err and not out.exists()
    (tmp_path / "k.txt").write_text("keep")
    code, _, err = run_cli(["blur", src, "-o", out, "--save-kernel", tmp_path / "k.txt"], capsys)
    assert code == 2 and "k.txt" in err and not out.exists()
    assert (tmp_path / "k.txt").read_text() == "keep"


def test_10_bench_pair_that_differs_in_size_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _img(tmp_path / "blurred" / "p1.png", size=16)
    _img(tmp_path / "sharp" / "p1.png", size=20)
    _img(tmp_path / "blurred" / "p2.png", channels=1)
    _img(tmp_path / "sharp" / "p2.png", channels=3)
    code, _, err = run_cli(["bench", "quality", "--blurred", tmp_path / "blurred", "--sharp",
                            tmp_path / "sharp", "--method", "identity"], capsys)
    assert code == 2 and "p1" in err


# --- Low -------------------------------------------------------------------------------------


def test_11_write_errors_outside_a_batch_are_not_internal_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(["bench", "speed", "--method", "identity", "--sizes", "16",
                            "--repeats", "1", "--warmup", "0", "--quiet",
                            "--csv", blocker / "rows.csv"], capsys)
    assert code == 2 and "a-file" in err


def test_12_kernel_png_decompression_bomb_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bomb.png").write_bytes(_forged_png(60_000, 60_000))
    started = time.perf_counter()
    code, _, err = run_cli(["blur", _img(tmp_path / "in.png"), "-o", tmp_path / "o.png",
                            "--kernel", tmp_path / "bomb.png"], capsys)
    assert code == 2 and "bomb.png" in err and time.perf_counter() - started < 5
    assert not (tmp_path / "o.png").exists()


def test_13_non_utf8_training_config_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.toml").write_bytes(b'title = "\xff\xfe"\n')
    code, _, err = run_cli(["train", "run", tmp_path / "bad.toml"], capsys)
    assert code == 2 and "bad.toml" in err


def test_14_malformed_model_table_is_not_an_internal_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for text in ('{"models": [{"name": 3}]}', "{", '{"models": 7}'):
        (tmp_path / "table.json").write_text(text)
        monkeypatch.setenv("DEBLURCLI_MODEL_TABLE", str(tmp_path / "table.json"))
        code, _, err = run_cli(["models", "list"], capsys)
        assert code in (2, 4) and "table.json" in err, (text, code, err)


@pytest.mark.parametrize("text", ["[]", '{"models": ["x"]}', '"str"',
                                  '{"models": [{"name": "a", "tag": "b", "sha256": 3, '
                                  '"file": "x.safetensors"}]}'])
def test_14_model_table_of_the_wrong_json_types_is_not_an_internal_error(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "table.json").write_text(text)
    monkeypatch.setenv("DEBLURCLI_MODEL_TABLE", str(tmp_path / "table.json"))
    code, _, err = run_cli(["models", "list"], capsys)
    assert code in (2, 4) and "table.json" in err


@pytest.mark.parametrize("metadata", [
    {"info": "[1, 2]"},
    {"info": '{"arch": "residual_unet", "size_multiple": "eight"}'},
    {"info": '{"arch": "residual_unet", "tiling": 3}'},
    {"config": '"width"'},
    {"config": '{"width": "wide"}'},
    {"config": '{"levels": 1000}'},
    {"config": "not json"},
])
def test_15_checkpoint_with_odd_metadata_types_is_an_integrity_failure(
    tmp_path: Path, tiny_model: torch.nn.Module, metadata: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    forged = _forged_checkpoint(tmp_path / "odd.safetensors", tiny_model, **metadata)
    code, _, err = run_cli(["deblur", _img(tmp_path / "x.png"), "-o", tmp_path / "y.png",
                            "--model", forged], capsys)
    assert code == 5 and "odd.safetensors" in err and "internal error" not in err


@pytest.mark.parametrize("suffix", ["/x", "../up", "a/b", "..", "x\\y"])
def test_16_suffix_cannot_leave_the_output_folder(
    model_table: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    inputs, out = _folder(work / "in", ("a.png",)), work / "out"
    code, _, err = run_cli(["deblur", inputs, "-o", out, "--suffix", suffix], capsys)
    assert code == 2 and "--suffix" in err
    assert sorted(p.name for p in work.rglob("*")) == ["a.png", "in"]


def test_17_output_path_mistakes_are_found_before_any_compute(
    model_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("deblurcli.engine.load_model", lambda *a, **k: pytest.fail("computed"))
    monkeypatch.setattr("deblurcli.engine.load_method", lambda *a, **k: pytest.fail("computed"))
    src = _img(tmp_path / "in.png")
    (tmp_path / "existing.txt").write_text("notes")
    (tmp_path / "a-file").write_text("x")
    for output, needle in ((tmp_path / "out.gif", ".gif"), (tmp_path / "existing.txt", "existing"),
                           (tmp_path / "a-file" / "o.png", "a-file")):
        code, _, err = run_cli(["deblur", src, "-o", output], capsys)
        assert code == 2 and needle in err, (output, err)
    code, _, err = run_cli(["deblur", src, _img(tmp_path / "in2.png"), "-o",
                            tmp_path / "x.png"], capsys)  # -o FILE with several inputs
    assert code == 2 and "x.png" in err and not (tmp_path / "x.png").exists()
    code, _, err = run_cli(["deblur", src, "-o", tmp_path / "y.png", "--format", "jpg"], capsys)
    assert code == 2 and "--format" in err
    assert (tmp_path / "existing.txt").read_text() == "notes"


def test_18_blur_never_replaces_its_input(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = _img(tmp_path / "in.png")
    before = src.read_bytes()
    code, _, err = run_cli(["blur", src, "-o", src, "--overwrite"], capsys)
    assert code == 2 and "in.png" in err and src.read_bytes() == before
    (tmp_path / "k.txt").write_text("0 1 0\n1 1 1\n0 1 0\n")
    kernel_before = (tmp_path / "k.txt").read_text()
    code, _, _ = run_cli(["blur", src, "-o", tmp_path / "o.png", "--kernel", tmp_path / "k.txt",
                          "--save-kernel", tmp_path / "k.txt", "--overwrite"], capsys)
    assert code == 2 and (tmp_path / "k.txt").read_text() == kernel_before


def test_19_lossy_conversions_are_kept_or_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    gray_alpha = (rng.random((12, 12, 2)) * 255).astype(np.uint8)
    PILImage.fromarray(gray_alpha, "LA").save(tmp_path / "la.png")
    code, _, _ = run_cli(["blur", tmp_path / "la.png", "-o", tmp_path / "la_out.png",
                          "--kernel-size", "5"], capsys)
    with PILImage.open(tmp_path / "la_out.png") as out:
        assert code == 0 and out.mode == "LA"
        assert np.array_equal(np.asarray(out)[..., 1], gray_alpha[..., 1])
    tifffile.imwrite(tmp_path / "hdr.tif", (rng.random((8, 8, 3)) * 4).astype(np.float32),
                     photometric="rgb")
    frames = [PILImage.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8))
              for _ in range(3)]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:],
                   lossless=True)
    code, out_json, err = run_cli(["blur", tmp_path / "hdr.tif", tmp_path / "anim.webp", "-o",
                                   tmp_path / "out", "--kernel-size", "5", "--json"], capsys)
    assert code == 0
    warned = {Path(i["input"]).name: " ".join(i["warnings"]) for i in json.loads(out_json)["items"]}
    assert "clipped" in warned["hdr.tif"] and "3 frames" in warned["anim.webp"]
    assert "hdr.tif" in err and "anim.webp" in err


def test_20_fifo_input_or_kernel_is_refused_not_waited_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.mkfifo(tmp_path / "k.txt")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "good.txt").write_text("0 1 0\n1 1 1\n0 1 0\n")

    def hung(*_: Any) -> None:
        raise TimeoutError("blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        code, _, err = run_cli(["deconvolve", _img(tmp_path / "in.png"), "-k", tmp_path / "k.txt",
                                "-o", tmp_path / "o.png"], capsys)
        assert code == 2 and "k.txt" in err
        code, _, err = run_cli(["deconvolve", tmp_path / "pipe.png", "-k", tmp_path / "good.txt",
                                "-o", tmp_path / "o.png"], capsys)
        assert code == 3 and "pipe.png" in err
        from deblurcli.engine.checkpoint import read_metadata
        from deblurcli.errors import CheckpointError

        os.mkfifo(tmp_path / "model.safetensors")
        with pytest.raises(CheckpointError, match="model.safetensors"):
            read_metadata(tmp_path / "model.safetensors")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_21_json_into_a_closed_pipe_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    src = _img(tmp_path / "in.png")
    proc = subprocess.Popen([sys.executable, "-m", "deblurcli", "blur", str(src), "-o",
                             str(tmp_path / "o.png"), "--kernel-size", "5", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader has gone away before the summary is printed
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stdout was closed" in err and "Traceback" not in err
    assert (tmp_path / "o.png").exists()


def test_22_every_error_line_names_its_file(
    model_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "dir.png").mkdir()
    code, _, err = run_cli(["deblur", tmp_path / "dir.png"], capsys)
    assert code == 2 and "dir.png" in err
    from deblurcli.engine.restorer import Restorer
    from deblurcli.errors import UnsupportedImageError

    def mismatch(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedImageError("2-channel input cannot go through the 3-channel model")

    monkeypatch.setattr(Restorer, "__call__", mismatch)
    src = _img(tmp_path / "gray.png", channels=1)
    code, _, err = run_cli(["deblur", src, "-o", tmp_path / "o.png"], capsys)
    assert code == 3 and f"{src}: 2-channel input" in err
    code, _, err = run_cli(["models", "verify", tmp_path / "nothing.safetensors"], capsys)
    assert code != 1 and "nothing.safetensors" in err


def test_23_a_named_non_image_fails_alone_and_is_the_file_named(
    model_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _img(tmp_path / "good.png")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    for extra in ([], ["-o", tmp_path / "out"]):
        code, _, err = run_cli(["deblur", good, notes, *extra], capsys)
        assert code == 3, err
        assert f"{notes}: not an image" in err and "notes_deblurred" not in err
    assert (tmp_path / "good_deblurred.png").exists() and (tmp_path / "out" / "good.png").exists()
    assert not (tmp_path / "notes_deblurred.png").exists()


# --- issue 9, item 4: one batch runner ---------------------------------------------------------


def test_shards_cover_a_folder_exactly_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = tuple(f"s{i}.png" for i in range(9))
    inputs, out = _folder(tmp_path / "in", names), tmp_path / "out"
    seen: list[str] = []
    for k in (1, 2, 3):
        code, out_json, _ = run_cli(["blur", inputs, "-o", out, "--kernel-size", "5", "--json",
                                     "--shard", f"{k}/3"], capsys)
        assert code == 0
        seen += [Path(i["input"]).name for i in json.loads(out_json)["items"]]
    assert sorted(seen) == sorted(names)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for bad in ("0/3", "4/3", "x", "1/0"):
        assert run_cli(["blur", inputs, "-o", out, "--shard", bad], capsys)[0] == 2


def test_deconvolve_takes_folders_and_the_batch_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = _folder(tmp_path / "in")
    (tmp_path / "k.txt").write_text("0 1 0\n1 1 1\n0 1 0\n")
    code, out_json, _ = run_cli(["deconvolve", inputs, "-k", tmp_path / "k.txt", "-o",
                                 tmp_path / "out", "--method", "wiener", "--format", "tif",
                                 "--bit-depth", "16", "--json", "--quiet"], capsys)
    assert code == 0
    doc = json.loads(out_json)
    assert doc["command"] == "deconvolve" and doc["summary"]["ok"] == 3
    assert read_image(tmp_path / "out" / "a.tif").dtype == np.uint16
    code, _, _ = run_cli(["deconvolve", inputs, "-k", tmp_path / "k.txt", "-o",
                          tmp_path / "out", "--format", "tif", "--skip-existing"], capsys)
    assert code == 0


def test_interrupt_prints_one_line(model_table: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import deblurcli.io as dio

    def ctrl_c(*args: Any, **kwargs: Any) -> bytes:
        raise KeyboardInterrupt

    inputs = _folder(tmp_path / "in")
    monkeypatch.setattr(dio, "encode_image", ctrl_c)
    code, _, err = run_cli(["blur", inputs, "-o", tmp_path / "out",
                            "--kernel-size", "5"], capsys)
    assert code == 130
    assert [line for line in err.splitlines() if line.strip()][-1] == "error: interrupted"
    assert "Traceback" not in err and not list((tmp_path / "out").glob("*"))


def test_24_an_output_folder_inside_the_input_folder_is_not_read_back(
    model_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = _folder(tmp_path / "photos", ("a.png", "sub/b.png"))
    out = photos / "out"
    code, _, err = run_cli(["deblur", photos, "-r", "-o", out], capsys)
    assert code == 0, err
    _img(photos / "c.png", seed=5)  # a photo added later; the run is repeated
    for spec in (photos, f"{photos}/**/*.png"):
        code, stdout, err = run_cli(["deblur", spec, "-r", "-o", out, "--skip-existing",
                                     "--json"], capsys)
        assert code == 0, err
        assert not any(str(out) in item["input"] for item in json.loads(stdout)["items"])
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "a.png", "c.png", "sub/b.png"]
    # -o equal to the input folder is still refused, naming the file it would replace
    code, _, err = run_cli(["deblur", out, "-o", out], capsys)
    assert code == 2 and "would replace its input" in err
