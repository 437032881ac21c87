"""Export: a run becomes a verified model-table entry `deblur` can resolve; pack via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _train_data import tiny_config, write_images

from deblurcli.cli.app import main
from deblurcli.engine import load_checkpoint
from deblurcli.engine.checkpoint import sha256_file
from deblurcli.engine.zoo import load_model_table, resolve
from deblurcli.errors import UsageError
from deblurcli.train.export import export_run
from deblurcli.train.loop import fit


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    write_images(root / "sharp", 4)
    cfg = tiny_config(root / "sharp", **{"run.steps": 3, "run.val_every": 0, "checkpoint.every": 3})
    fit(cfg, root / "run")
    write_images(root / "pairs", 2, size=(36, 44))  # stand-in for gopro_dev: X.png + X_gt.png
    write_images(root / "pairs", 2, size=(36, 44), suffix="_gt")
    return root / "run"


def test_export_writes_verified_entry(run: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    entry = export_run(
        run,
        name="tiny",
        tag="t1",
        weights_dir=weights,
        make_default=True,
        gopro_dir=run.parent / "pairs",
    )
    target = weights / "tiny-t1.safetensors"
    assert entry["file"] == target.name and entry["sha256"] == sha256_file(target)
    assert entry["size"] == target.stat().st_size and entry["default_tag"] is True
    training = entry["training"]
    assert training["steps"] == 3 and training["weights"] == "ema"
    assert training["data"]["kind"] == "synthetic" and training["hardware"]["device"] == "cpu"
    assert training["wall_time_s"] > 0 and len(training["command"]) == 1
    assert entry["config"] == json.loads(load_checkpoint(target).metadata["config"])
    metrics = entry["metrics"]
    assert metrics["val"]["images"] == 2 and metrics["gopro_dev"]["images"] == 2
    assert {"psnr_input", "ssim_input", "psnr", "ssim"} <= set(metrics["val"])
    assert json.loads(load_checkpoint(target).metadata["train"])["steps"] == 3
    table = load_model_table(weights / "manifest.json")
    assert table.default == "tiny"
    assert resolve("tiny", table=table).path == target  # sha256 and size verified by resolve


def test_reexport_replaces_and_moves_default_tag(run: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    export_run(run, name="tiny", tag="t1", weights_dir=weights)
    export_run(run, name="tiny", tag="t1", weights_dir=weights, use_ema=False)
    export_run(run, name="tiny", tag="t2", weights_dir=weights)
    document = json.loads((weights / "manifest.json").read_text())
    assert [(m["tag"], m["default_tag"]) for m in document["models"]] == [
        ("t1", False),
        ("t2", True),
    ]
    assert document["models"][0]["training"]["weights"] == "raw" and document["default"] is None
    # --keep-default-tag adds t3 beside the default t2; `tiny` still resolves to t2
    export_run(run, name="tiny", tag="t3", weights_dir=weights, tag_default=False)
    document = json.loads((weights / "manifest.json").read_text())
    assert [(m["tag"], m["default_tag"]) for m in document["models"]] == [
        ("t1", False), ("t2", True), ("t3", False),
    ]
    table = load_model_table(weights / "manifest.json")
    assert resolve("tiny", table=table).path.name == "tiny-t2.safetensors"
    # ... but the first tag of a name is always its default
    export_run(run, name="other", tag="o1", weights_dir=weights, tag_default=False)
    document = json.loads((weights / "manifest.json").read_text())
    assert document["models"][-1]["default_tag"] is True


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no checkpoint"):
        export_run(tmp_path, name="tiny", tag="t1", weights_dir=tmp_path)
    with pytest.raises(UsageError, match="invalid model reference"):
        export_run(tmp_path, name="Bad Name", tag="t1", weights_dir=tmp_path)


def test_cli_export_and_pack(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import deblurcli.engine.zoo as zoo

    export = ["train", "export", str(run), "--name", "tiny", "--tag", "cli", "--default", "--json"]
    monkeypatch.setattr(zoo, "CHECKOUT_WEIGHTS_DIR", None)  # as installed: never written to
    with pytest.raises(SystemExit) as exit_info:
        main(export)
    assert exit_info.value.code == 2 and "--weights-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*export, "--weights-dir", str(tmp_path / "w")])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    assert json.loads(out)["name"] == "tiny" and "exported tiny@cli" in err
    assert json.loads((tmp_path / "w" / "manifest.json").read_text())["default"] == "tiny"
    pack = tmp_path / "p.safetensors"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "pack-sharp",
                str(run.parent / "sharp"),
                "-o",
                str(pack),
                "--crop",
                "40",
                "--per-image",
                "1",
            ]
        )
    assert exit_info.value.code == 0 and pack.is_file()
    assert "wrote 4 crops" in capsys.readouterr().err
