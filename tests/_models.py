"""Shared helpers of the architecture tests: perturbed weights and the two-pair overfit loop."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def perturbed(model: nn.Module, scale: float = 0.1) -> nn.Module:
    """``model`` in eval mode with ``scale``·N(0, 1) added to every parameter, so that zero-init
    layers (identity at init) no longer hide what the rest computes."""
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def overfit(model: nn.Module, blurry: torch.Tensor, sharp: torch.Tensor,
            loss_of: Callable[[nn.Module], torch.Tensor], *, steps: int,
            lr: float = 3e-3) -> tuple[float, float]:
    """Train ``model`` (train mode, Adam) for ``steps`` steps of ``loss_of(model)``.

    Returns the MSE to ``sharp`` of the blurry input and of the eval-mode output afterwards.
    """
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    before = float((blurry - sharp).pow(2).mean())
    for _ in range(steps):
        loss = loss_of(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float((model.eval()(blurry) - sharp).pow(2).mean())
    return before, after
