"""``deblur --method``, ``models list|info|verify`` and the tiling policy under out-of-memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deblurcli import methods
from deblurcli.cli.app import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    pixels = (np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("name", methods.names("network"))
def test_deblur_method_runs_the_familys_default_checkpoint(
    name: str, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import deblurcli.engine as engine

    loaded: list[str] = []
    real = engine.load_model

    def spy(ref: str, **kwargs: object) -> object:
        loaded.append(ref)
        return real(ref, **kwargs)

    monkeypatch.setattr(engine, "load_model", spy)
    code, _, err = run_cli(["deblur", str(photo), "--method", name, "-o",
                            str(tmp_path / "out.png"), "--offline"], capsys)
    checkpoint = methods.TABLE[name].checkpoint
    assert checkpoint is not None
    if methods.TABLE[name].inputs == 2:  # a reference method: deblur refuses before loading
        assert code == 2 and "deblur-ref" in err and not loaded, err
        return
    released = {e.ref for e in engine.load_model_table().entries}
    if checkpoint not in released:  # weights not released yet: exit 4 saying how to get them
        assert code == 4 and "train export" in err and checkpoint in err, err
        return
    assert code == 0, err
    assert loaded == [checkpoint] and (tmp_path / "out.png").is_file()


def test_deblur_unknown_method_exits_2_listing_the_known_ones(
        photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["deblur", str(photo), "--method", "nope"], capsys)
    assert code == 2 and all(name in err for name in methods.names("network"))
    code, _, err = run_cli(["deblur", str(photo), "--method", "wiener"], capsys)
    assert code == 2 and "deblurcli deconvolve" in err
    code, _, err = run_cli(["deblur", str(photo), "--method", "resunet", "--model", "x@y"], capsys)
    assert code == 2 and "not both" in err


def test_deblur_method_without_weights_exits_4_saying_how_to_get_them(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a family whose checkpoint is not in the model table (not released yet)
    empty = tmp_path / "empty.json"
    empty.write_text('{"models": []}')
    monkeypatch.setenv("DEBLURCLI_MODEL_TABLE", str(empty))
    monkeypatch.setattr("deblurcli.engine.zoo.MANIFEST_PATH", tmp_path / "absent.json")
    code, _, err = run_cli(["deblur", str(photo), "--method", "resunet"], capsys)
    assert code == 4 and "train export" in err
    # a released checkpoint that is neither shipped nor cached (offline)
    entry = {"name": "resunet", "tag": "synth-v1", "arch": "residual_unet", "size": 1,
             "sha256": "0" * 64, "hub": {"repo_id": "deblurcli/none", "filename": "x.safetensors",
                                         "revision": "a" * 40}}
    empty.write_text(json.dumps({"models": [entry]}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code, _, err = run_cli(["deblur", str(photo), "--method", "resunet", "--offline",
                            "--cache-dir", str(tmp_path / "hub")], capsys)
    assert code == 4 and "models download resunet@synth-v1" in err


def test_models_list_shows_methods_and_checkpoints(
        model_table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["models", "list", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and [m["name"] for m in doc["methods"]] == methods.names()
    assert doc["default_checkpoint"] == "tiny@test" and doc["models"][0]["default"]
    code, _, err = run_cli(["models", "list"], capsys)
    assert code == 0 and all(name in err for name in methods.names()) and "tiny@test" in err


def test_models_info_reports_default_and_summarises_without_json(
        model_table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["models", "info", "tiny"], capsys)
    assert code == 0 and out == "" and "default   yes" in err and len(err.splitlines()) < 12
    code, out, _ = run_cli(["models", "info", "tiny@test", "--json"], capsys)
    assert code == 0 and json.loads(out)["entry"]["default"] is True


def test_models_verify_reports_a_corrupt_cached_file_and_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a hand-built Hugging Face cache holding a file whose bytes do not match the table
    revision = "b" * 40
    snapshot = tmp_path / "hub" / "models--org--m" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    cached = snapshot / "m.safetensors"
    cached.write_bytes(b"not the checkpoint")
    (tmp_path / "hub" / "models--org--m" / "refs").mkdir()
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"models": [{
        "name": "m", "tag": "t", "arch": "residual_unet", "size": 18, "sha256": "0" * 64,
        "hub": {"repo_id": "org/m", "filename": "m.safetensors", "revision": revision}}]}))
    monkeypatch.setenv("DEBLURCLI_MODEL_TABLE", str(table))
    monkeypatch.setattr("deblurcli.engine.zoo.MANIFEST_PATH", tmp_path / "absent.json")
    code, out, _ = run_cli(["models", "verify", "--json", "--cache-dir", str(tmp_path / "hub")],
                           capsys)
    assert code == 5 and json.loads(out)["models"][0]["status"] == "corrupt"
    assert cached.read_bytes() == b"not the checkpoint"  # reported, not deleted


def test_deblur_refuses_a_finishing_network_that_reads_a_guide(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deblurcli.archs.nafnet import NAFNet, NAFNetConfig
    from deblurcli.engine import ModelInfo, save_checkpoint

    model = NAFNet(NAFNetConfig(width=4, encoder_blocks=(1,), middle_blocks=1,
                                decoder_blocks=(1,), guide_channels=6))
    path = tmp_path / "guided.safetensors"
    save_checkpoint(path, model, ModelInfo.for_model("nafnet", model))
    out = tmp_path / "out.png"
    code, _, err = run_cli(["deblur", str(photo), "--model", str(path), "-o", str(out)], capsys)
    assert code == 2 and "deconvolve-blind" in err and "--finish" in err, err
    assert not out.exists()
