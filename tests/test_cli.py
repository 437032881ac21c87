"""CLI behaviour: exit codes, JSON on stdout, batch robustness, no overwrite, no partial files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from deblurcli.cli.app import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def _png(path: Path, array: np.ndarray) -> Path:
    ok, data = cv2.imencode(".png", array)
    assert ok
    path.write_bytes(data.tobytes())
    return path


@pytest.fixture
def batch_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    _png(folder / "rgb8.png", rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    _png(folder / "deep16.png", rng.integers(0, 65536, (24, 18, 3), dtype=np.uint16))
    _png(folder / "rgba.png", rng.integers(0, 256, (16, 16, 4), dtype=np.uint8))
    rotated = PILImage.fromarray(rng.integers(0, 256, (12, 30, 3), dtype=np.uint8))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    rotated.save(folder / "rotated.jpg", exif=exif.tobytes(), quality=95)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_version_and_help_do_not_import_torch() -> None:
    code = (
        "import sys; from deblurcli.cli.app import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deblurcli ")


@pytest.mark.parametrize(("preset", "expected"), [(None, "1"), ("0", "0")])
def test_cli_turns_on_huge_pages_for_torch_unless_the_user_chose(
    preset: str | None, expected: str
) -> None:
    code = (
        "import os; from deblurcli.cli.app import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print(os.environ.get('THP_MEM_ALLOC_ENABLE'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if preset is not None:
        env["THP_MEM_ALLOC_ENABLE"] = preset
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == expected


def test_batch_with_a_corrupt_file_writes_the_rest_and_exits_3(
    model_table: Path, batch_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run_cli(["deblur", str(batch_folder), "-o", str(out_dir), "--json"], capsys)
    assert code == 3
    doc = json.loads(out)
    status = {Path(i["input"]).name: i["status"] for i in doc["items"]}
    assert status == {"corrupt.png": "failed", "deep16.png": "ok", "rgb8.png": "ok",
                      "rgba.png": "ok", "rotated.jpg": "ok"}
    assert doc["summary"] == {"ok": 4, "skipped": 0, "failed": 1}
    assert "corrupt.png" in err
    deep = cv2.imread(str(out_dir / "deep16.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (24, 18, 3)
    rgba = cv2.imread(str(out_dir / "rgba.png"), cv2.IMREAD_UNCHANGED)
    source_alpha = cv2.imread(str(batch_folder / "rgba.png"), cv2.IMREAD_UNCHANGED)[..., 3]
    assert rgba.shape == (16, 16, 4) and np.array_equal(rgba[..., 3], source_alpha)
    with PILImage.open(out_dir / "rotated.jpg") as rotated:
        assert rotated.size == (12, 30)  # width, height after applying orientation 6
        assert rotated.getexif().get(0x0112, 1) == 1
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == ["deep16.png", "rgb8.png", "rgba.png", "rotated.jpg"]


def test_existing_outputs_are_refused_before_any_compute(
    model_table: Path, batch_folder: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "rgb8.png").write_bytes(b"precious")

    def must_not_load(*args, **kwargs):
        raise AssertionError("model loaded before the pre-flight check")

    monkeypatch.setattr("deblurcli.engine.load_model", must_not_load)
    code, _, err = run_cli(["deblur", str(batch_folder / "rgb8.png"), "-o", str(out_dir)], capsys)
    assert code == 2 and "--overwrite" in err
    assert (out_dir / "rgb8.png").read_bytes() == b"precious"


def test_skip_existing_and_kwargs_reach_the_engine(
    model_table: Path, batch_folder: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "rgb8.png").write_bytes(b"done before")
    import deblurcli.engine as engine

    calls: list[dict] = []
    real = engine.load_model

    def spy(ref, **kwargs):
        calls.append({"ref": ref, **kwargs})
        return real(ref, **kwargs)

    monkeypatch.setattr("deblurcli.engine.load_model", spy)
    args = ["deblur", str(batch_folder / "rgb8.png"), str(batch_folder / "deep16.png"), "-o",
            str(out_dir), "--skip-existing", "--device", "cpu", "--precision", "fp32", "--json"]
    code, out, _ = run_cli(args, capsys)
    assert code == 0
    assert calls == [{"ref": "tiny", "device": "cpu", "precision": "fp32", "offline": False,
                      "cache_dir": None}]
    assert json.loads(out)["summary"] == {"ok": 1, "skipped": 1, "failed": 0}
    assert (out_dir / "rgb8.png").read_bytes() == b"done before"


def test_no_shipped_model_exits_4(tmp_path: Path, batch_folder: Path, capsys, monkeypatch) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text('{"models": []}')
    monkeypatch.setenv("DEBLURCLI_MODEL_TABLE", str(empty))
    monkeypatch.setattr("deblurcli.engine.zoo.MANIFEST_PATH", tmp_path / "absent.json")
    args = ["deblur", str(batch_folder / "rgb8.png"), "-o", str(tmp_path / "o")]
    code, _, err = run_cli(args, capsys)
    assert code == 4 and "no default model" in err


def test_corrupt_shipped_model_exits_5_and_verify_reports_it(
    model_table: Path, tiny_checkpoint: Path, batch_folder: Path, tmp_path: Path, capsys
) -> None:
    data = bytearray(tiny_checkpoint.read_bytes())
    data[200] ^= 0x55
    tiny_checkpoint.write_bytes(bytes(data))
    args = ["deblur", str(batch_folder / "rgb8.png"), "-o", str(tmp_path / "o")]
    code, _, err = run_cli(args, capsys)
    assert code == 5 and "corrupt" in err
    code, out, _ = run_cli(["models", "verify", "tiny", "--json"], capsys)
    assert code == 5 and json.loads(out)["models"][0]["status"] == "corrupt"


def test_models_list_and_info_json(model_table: Path, capsys) -> None:
    code, out, _ = run_cli(["models", "list", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["default"] == "tiny"
    assert [m["ref"] for m in doc["models"]] == ["tiny@test"] and doc["models"][0]["shipped"]
    code, out, _ = run_cli(["models", "info", "tiny", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["arch"] == "residual_unet" and info["config"]["width"] == 4


def test_interrupt_exits_130_and_leaves_no_partial_file(
    model_table: Path, batch_folder: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    def interrupted_fsync(path):  # Ctrl-C while the first result is on its way to the disk
        assert path.stat().st_size > 0
        raise KeyboardInterrupt

    monkeypatch.setattr("deblurcli._atomic._fsync", interrupted_fsync)
    out_dir = tmp_path / "out"
    code, _, _ = run_cli(["deblur", str(batch_folder), "-o", str(out_dir)], capsys)
    assert code == 130
    assert list(out_dir.iterdir()) == []


def test_usage_errors_exit_2(capsys, tmp_path: Path) -> None:
    assert run_cli(["deblur", str(tmp_path / "missing.png")], capsys)[0] == 2
    assert run_cli(["deblur", "x.png", "--tile", "banana"], capsys)[0] == 2
    code, _, err = run_cli(["deblur", "x.png", "--ensemble", "3"], capsys)
    assert code == 2 and "--ensemble" in err
    assert run_cli(["no-such-command"], capsys)[0] == 2
