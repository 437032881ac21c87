"""`bench train`: the machine peak is the best rate seen, and the rows' share of it uses that."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deblurcli.bench import training
from deblurcli.train.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_fastest_keeps_the_quickest_call_after_the_warmup(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 5.0, 10.0, 10.5, 20.0, 23.0])  # timed calls of 5, 0.5 and 3 s
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    calls: list[int] = []
    assert training._fastest(lambda: calls.append(1), repeats=3, warmup=2) == 0.5
    assert len(calls) == 5  # two untimed, three timed


def test_the_peak_is_the_higher_of_two_readings_and_rows_use_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([
        {"conv3x3_gflops": 100.0, "matmul_gflops": 300.0, "cpu_capability": "X",
         "cpu_bf16_native": False},
        {"conv3x3_gflops": 250.0, "matmul_gflops": 200.0, "cpu_capability": "X",
         "cpu_bf16_native": False},
    ])
    monkeypatch.setattr(training, "machine_peak", lambda threads: next(readings))
    monkeypatch.setattr(training, "step_flops", lambda cfg: 50e9)

    def fake_variant(cfg: Any, variant: Any, **_: Any) -> dict[str, Any]:
        return {"variant": variant.name, "step_s": 0.5}

    monkeypatch.setattr(training, "run_variant", fake_variant)
    seen: list[dict[str, Any]] = []
    cfg = load_config(CONFIGS / "nafnet_cpu.toml", [])
    doc = training.run_training_benchmark(cfg, ["channels-last"], on_row=seen.append)
    assert doc["peak"]["conv3x3_gflops"] == 250.0
    assert doc["peak"]["matmul_gflops"] == 300.0
    assert [r["conv3x3_gflops"] for r in doc["peak"]["readings"]] == [100.0, 250.0]
    (row,) = doc["rows"]
    assert row["gflops"] == pytest.approx(100.0)  # 50 GFLOP in 0.5 s
    assert row["of_conv_peak"] == pytest.approx(0.4)  # of 250, not of the slow first reading
    assert seen == [row]
