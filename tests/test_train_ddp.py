"""DistributedDataParallel: two gloo CPU processes under torchrun end with identical weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from _train_data import write_images
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent

_RANK_SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
import torch
from safetensors.torch import save_file
from _train_data import tiny_config
from deblurcli.train.loop import fit

torch.set_num_threads(1)
cfg = tiny_config({images!r}, **{{"run.steps": 4, "run.val_every": 2, "checkpoint.every": 2}})
result = fit(cfg, {run!r})
state = {{k: v.contiguous() for k, v in result.model.state_dict().items()}}
save_file(state, os.path.join({out!r}, f"rank{{os.environ['RANK']}}.safetensors"))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_gloo_processes_hold_identical_weights(tmp_path: Path) -> None:
    write_images(tmp_path / "sharp", 4)
    script = tmp_path / "rank.py"
    script.write_text(
        _RANK_SCRIPT.format(
            tests=str(REPO / "tests"),
            images=str(tmp_path / "sharp"),
            run=str(tmp_path / "run"),
            out=str(tmp_path),
        )
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(script),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, env=env, capture_output=True, timeout=240)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    initial = torch.zeros_like(rank0["tail.weight"])
    assert not torch.equal(rank0["tail.weight"], initial)  # it did train
    # only rank 0 wrote the log and the checkpoints, and they hold the shared weights
    saved = load_file(str(tmp_path / "run" / "checkpoints" / "step_00000004" / "model.safetensors"))
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)
    sessions = json.loads((tmp_path / "run" / "run.json").read_text())["sessions"]
    assert len(sessions) == 1 and sessions[0]["hardware"]["world_size"] == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4]
