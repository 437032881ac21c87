"""Resuming a run truncates its JSONL log once, not once per line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deblurcli.train import loop


def test_resume_rewrites_the_log_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 101)) + "garbage\n")
    writes: list[bytes] = []
    real = loop.atomic_write_bytes

    def counting(target: Path, data: bytes) -> None:
        writes.append(data)
        real(target, data)

    monkeypatch.setattr(loop, "atomic_write_bytes", counting)
    log = loop._Log(path, True, keep_until=40)
    log.write({"step": 41})
    log.close()
    assert len(writes) == 1
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert steps == list(range(1, 42))
