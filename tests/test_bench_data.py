"""bench presets find their data through --data DIR or DEBLURCLI_DATA, and say so when missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deblurcli.cli.app import main

DATA = Path(os.environ.get("DEBLURCLI_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data"))


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_missing_preset_data_is_exit_2_naming_both_ways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEBLURCLI_DATA", raising=False)
    code, _, err = _run(["bench", "quality", "--preset", "levin", "--method", "identity",
                         "--data", str(tmp_path)], capsys)
    assert code == 2 and "--data" in err and "DEBLURCLI_DATA" in err
    monkeypatch.setenv("DEBLURCLI_DATA", str(tmp_path / "nowhere"))
    code, _, err = _run(["bench", "quality", "--preset", "levin", "--method", "identity"], capsys)
    assert code == 2 and "nowhere" in err


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "levin09").is_dir(), reason="shared data absent")
def test_data_option_wins_over_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEBLURCLI_DATA", str(tmp_path / "nowhere"))
    code, out, err = _run(["bench", "quality", "--preset", "levin", "--data", str(DATA),
                           "--method", "identity", "--limit", "1", "--json", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads(out)["results"][0]["count"] == 1


def test_more_than_one_preset_is_exit_2_not_the_last_one_silently(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(["bench", "quality", "--preset", "shake", "--preset", "gopro_dev",
                           "--method", "identity"], capsys)
    assert code == 2 and "one --preset per run" in err and "shake, gopro_dev" in err
    assert out == ""
