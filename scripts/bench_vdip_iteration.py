"""Per-iteration CPU time of the faithful VDIP/DIP loop: ours vs the published architecture.

"Ours" is :func:`deblurcli.optim.vdip.fit` (paper preset). "Published" re-creates, from the spec
(``specs/vdip.md`` §4–§5), how the reference scripts compute one iteration: the same networks in
the default (NCHW) memory layout, and the VDIP likelihood with its six residual terms evaluated
literally (two extra blurs of the derivative images), i.e. without our algebraic folding.
Both run one thread; times are process-CPU seconds per step (≈ wall time on an idle core), the
first step of every phase excluded. Example::

    python scripts/bench_vdip_iteration.py --image im1_kernel1_img.png --kernel-size 19 --steps 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from deblurcli.archs.dip_nets import KernelFCN, KernelFCNConfig, SkipNet
from deblurcli.io import read_image
from deblurcli.optim import fit, ops, paper_config
from deblurcli.optim.vdip import _sparse_prior


def ours(y: torch.Tensor, method: str, ksize: int, steps: int) -> dict[str, list[float]]:
    """CPU seconds per step of our loop, by phase."""
    cfg = paper_config(method, (ksize, ksize))
    pre = steps if cfg.prefit else 0
    cfg = replace(cfg, prefit=pre, iters=2 * steps, ssim_from=steps)
    times: dict[str, list[float]] = {}
    last = [time.process_time()]

    def on_step(info: object) -> None:
        now = time.process_time()
        times.setdefault(info.phase, []).append(now - last[0])  # type: ignore[attr-defined]
        last[0] = now

    fit(y, cfg, on_step=on_step, seed=0)
    return {k: v[1:] for k, v in times.items()}


def published(y: torch.Tensor, method: str, ksize: int, steps: int) -> dict[str, list[float]]:
    """CPU seconds per step of a literal re-creation of the reference iteration."""
    cfg = paper_config(method, (ksize, ksize))
    c, h, w = y.shape[1:]
    hp, wp = h + ksize - 1, w + ksize - 1
    torch.manual_seed(0)
    sigma_head = method.startswith("vdip")
    net = SkipNet(replace(cfg.net, in_channels=cfg.input_channels,
                          out_channels=2 * c if sigma_head else c))
    knet = KernelFCN(KernelFCNConfig(kernel_size=(ksize, ksize)))
    z = torch.rand(1, cfg.input_channels, hp, wp) * 0.1
    zk = torch.rand(200) * 0.1
    opt = torch.optim.Adam([{"params": net.parameters(), "lr": 1e-2},
                            {"params": knet.parameters(), "lr": 1e-4}])
    window = ops.gaussian_window()

    def conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # grouped conv, as published
        return F.conv2d(x, k[None, None].expand(x.shape[1], 1, -1, -1), groups=x.shape[1])

    def dv(t: torch.Tensor) -> torch.Tensor:
        return t[..., 1:, :] - t[..., :-1, :]

    def dh(t: torch.Tensor) -> torch.Tensor:
        return t[..., :, 1:] - t[..., :, :-1]

    phases = (["prefit"] * (steps if cfg.prefit else 0) + [("vb" if sigma_head else "mse")] * steps
              + ["ssim"] * steps)
    times: dict[str, list[float]] = {}
    for phase in phases:
        start = time.process_time()
        inp = z + (1e-3 * torch.randn_like(z) if cfg.reg_noise else 0)
        out = net(inp)
        mu, sigma = (out[:, :c], out[:, c:]) if sigma_head else (out, None)
        k = knet(zk)
        if phase == "prefit":
            t, lft = (ksize - 1) // 2, (ksize - 1) // 2
            crop = out[..., t : t + h, lft : lft + w]
            target = torch.cat([y, torch.zeros_like(y)], 1) if sigma_head else y
            loss = F.mse_loss(crop, target) + F.mse_loss(k, torch.full_like(k, 1 / ksize**2))
        elif phase == "ssim":
            loss = 1 - ops.ssim_same(conv(mu, k), y, window)
        elif phase == "mse":
            loss = F.mse_loss(conv(mu, k), y)
        else:
            assert sigma is not None
            x = mu + sigma * torch.randn_like(mu)
            r = conv(x, k) - y
            n = x.numel()
            energy = (0.5 * r.square().sum() + 0.25 * dv(r).square().sum()
                      + 0.25 * dh(r).square().sum()
                      + 0.125 * (dv(dv(r)).square().sum() + dh(dv(r)).square().sum()
                                 + dh(dh(r)).square().sum() + dv(dh(r)).square().sum())
                      + 0.25 * (conv(dv(x), k) - dv(y)).square().sum()
                      + 0.25 * (conv(dh(x), k) - dh(y)).square().sum())
            reg = (-torch.log(sigma.clamp_min(1e-45)).mean() + _sparse_prior(mu, sigma)
                   + 5 * k.square().sum())
            loss = energy / n + 0.1 * reg
        opt.zero_grad()
        loss.backward()
        if all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None):
            opt.step()
        times.setdefault(phase, []).append(time.process_time() - start)
    return {k: v[1:] for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True, help="blurry image (grey or RGB)")
    parser.add_argument("--kernel-size", type=int, default=19)
    parser.add_argument("--method", default="vdip-sparse", choices=["vdip-sparse", "dip"])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per phase (+1 warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pixels = read_image(args.image).pixels
    y = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    if args.method.startswith("vdip") and y.shape[1] == 1:
        y = y.expand(1, 3, -1, -1).contiguous()  # VDIP reads grey images as RGB
    report: dict[str, object] = {"image": str(args.image), "method": args.method,
                                 "kernel_size": args.kernel_size, "threads": args.threads,
                                 "torch": torch.__version__}
    for name, fn in (("published", published), ("ours", ours)):
        runs = fn(y, args.method, args.kernel_size, args.steps + 1)
        report[name] = {phase: {"mean": statistics.mean(v), "median": statistics.median(v),
                                "n": len(v)} for phase, v in runs.items()}
    ours_r, pub_r = report["ours"], report["published"]
    report["ratio_ours_over_published"] = {  # type: ignore[index]
        phase: ours_r[phase]["mean"] / pub_r[phase]["mean"]  # type: ignore[index]
        for phase in pub_r  # type: ignore[union-attr]
    }
    print(json.dumps(report, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
