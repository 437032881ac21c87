"""The per-image generator networks: published sizes, shape contracts, size guard, kernel net."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from deblurcli.archs.dip_nets import (
    KernelFCN,
    KernelFCNConfig,
    NonLocalBlock,
    SkipNet,
    SkipNetConfig,
    min_input_size,
)

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = SkipNetConfig(in_channels=3, out_channels=6, down_channels=(8, 8, 8),
                     up_channels=(8, 8, 8), skip_channels=(4, 4, 4), nonlocal_from=1)


def test_published_network_size() -> None:
    net = SkipNet(SkipNetConfig(in_channels=3, out_channels=6))
    assert sum(p.numel() for p in net.parameters()) == 2_360_326  # spec §5.1: 2.36 M
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 33
    assert sum(isinstance(m, NonLocalBlock) for m in net.modules()) == 3
    assert min_input_size(net.config) == 33


@pytest.mark.parametrize("size", [(17, 17), (23, 40), (33, 9 + 8)])
def test_tiny_output_shape_and_range(size: tuple[int, int]) -> None:
    net = SkipNet(TINY)
    out = net(torch.rand(1, 3, *size) * 0.1)
    assert out.shape == (1, 6, *size)
    assert bool(((out > 0) & (out < 1)).all())


def test_too_small_input_is_refused() -> None:
    net = SkipNet(TINY)
    assert min_input_size(TINY) == 9
    with pytest.raises(ValueError, match="at least 9"):
        net(torch.rand(1, 3, 8, 20))


def test_nonlocal_block_starts_as_identity() -> None:
    block = NonLocalBlock(8)
    x = torch.randn(1, 8, 6, 7)
    assert torch.equal(block(x), x)


def test_batchnorm_stays_in_training_mode_statistics() -> None:
    """Rendering uses batch statistics of this image: two inputs give unrelated outputs."""
    net = SkipNet(TINY)
    a = net(torch.rand(1, 3, 20, 20))
    assert net.training and a.shape == (1, 6, 20, 20)


def test_kernel_fcn_is_a_kernel() -> None:
    net = KernelFCN(KernelFCNConfig(kernel_size=(19, 25)))
    with torch.no_grad():
        k = net(torch.rand(200) * 0.1)
    assert k.shape == (19, 25)
    assert bool((k >= 0).all())
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-5)
    n = sum(p.numel() for p in net.parameters())
    assert n == 200 * 1000 + 1000 + 1001 * 19 * 25


def test_configs_are_frozen_and_serialisable() -> None:
    cfg = SkipNetConfig()
    assert asdict(cfg)["skip_channels"] == (16,) * 5
    with pytest.raises(AttributeError):
        cfg.in_channels = 8  # type: ignore[misc]
    with pytest.raises(ValueError):
        SkipNetConfig(down_channels=(8, 8), up_channels=(8,), skip_channels=(4, 4))
