"""NAFNet: box means, identity at init, odd sizes, tiling, overfitting, config, checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from _models import overfit, perturbed

from deblurcli.archs import REGISTRY, config_of
from deblurcli.archs.nafnet import NAFNet, NAFNetConfig, box_mean
from deblurcli.engine import ModelInfo, load_checkpoint, read_metadata, save_checkpoint
from deblurcli.engine.restorer import Restorer
from deblurcli.errors import UsageError

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = REGISTRY["nafnet"].tiny_config


def _randomised(config: NAFNetConfig, scale: float = 0.1) -> NAFNet:
    """A model far from the identity (β, γ and the last convolution start at zero)."""
    return perturbed(NAFNet(config), scale)  # type: ignore[return-value]


@pytest.mark.parametrize("window", [1, 3, 7, 12])
def test_box_mean_is_the_average_over_pixels_inside_the_image(window: int) -> None:
    x = torch.rand(2, 3, 19, 26)
    odd = window // 2 * 2 + 1
    expected = F.avg_pool2d(x, odd, stride=1, padding=odd // 2, count_include_pad=False)
    assert (box_mean(x, window) - expected).abs().max() < 1e-5


def test_box_mean_is_the_whole_image_mean_when_every_box_covers_the_image() -> None:
    x = torch.rand(1, 2, 9, 6)
    for window in (0, 16, 40):
        assert box_mean(x, window).shape == (1, 2, 1, 1)
        assert torch.allclose(box_mean(x, window), x.mean(dim=(2, 3), keepdim=True))
    assert box_mean(x, 15).shape == x.shape  # radius 7 < 8 rows: local


def test_untrained_model_is_the_identity_and_odd_sizes_come_back_whole() -> None:
    model = NAFNet(NAFNetConfig(**TINY)).eval()
    info = ModelInfo.for_model("nafnet", model)
    restorer = Restorer(model, info, device=torch.device("cpu"), dtype=torch.float32)
    x = torch.rand(1, 3, 37, 53)
    assert torch.equal(restorer(x, tile=None), x)
    randomised = Restorer(_randomised(NAFNetConfig(**TINY)), info, device=torch.device("cpu"),
                          dtype=torch.float32)
    out = randomised(x, tile=None)
    assert out.shape == x.shape and (out - x).abs().max() > 1e-2


def test_blocks_sit_where_the_config_puts_them() -> None:
    config = NAFNetConfig(width=4, encoder_blocks=(1, 2, 3), middle_blocks=4,
                          decoder_blocks=(2, 1, 1))
    model = NAFNet(config)
    assert [len(stage) for stage in model.encoders] == [1, 2, 3]
    assert [len(stage) for stage in model.decoders] == [2, 1, 1]
    assert len(model.middle) == 4 and model.size_multiple == 8
    assert model.middle[0].norm1.weight.numel() == 4 * 2**3
    with pytest.raises(ValueError, match="same length"):
        NAFNetConfig(encoder_blocks=(1, 1), decoder_blocks=(1,))


def test_tiled_equals_untiled_with_a_local_attention_window() -> None:
    # an 8-px attention window: each of the 5 blocks looks at most 4 px (in input pixels) beyond
    # its convolutions, so everything a pixel sees lies well inside 40 px
    model = _randomised(NAFNetConfig(**{**TINY, "attention_window": 8}), scale=0.05)
    info = ModelInfo.for_model("nafnet", model)
    restorer = Restorer(model, info, device=torch.device("cpu"), dtype=torch.float32)
    x = torch.rand(1, 3, 90, 517)
    whole = restorer(x, tile=None)
    tiled = restorer(x, tile=240, overlap=160)
    assert restorer.last_run.tile == 240 and (whole - x).abs().max() > 1e-2
    assert (tiled - whole).abs().max() < 1e-4


def test_a_tiny_model_overfits_two_pairs() -> None:
    torch.manual_seed(0)
    sharp = F.interpolate(torch.rand(2, 3, 8, 8), size=32, mode="bicubic").clamp(0, 1)
    blurry = F.avg_pool2d(sharp, 5, stride=1, padding=2, count_include_pad=False)
    model = NAFNet(NAFNetConfig(width=8, encoder_blocks=(1, 1), middle_blocks=1,
                                decoder_blocks=(1, 1)))
    before, after = overfit(model, blurry, sharp, lambda m: (m(blurry) - sharp).pow(2).mean(),
                            steps=80)
    assert after < 0.3 * before, (before, after)


def test_a_model_grown_by_blocks_computes_what_it_did_before() -> None:
    # run.init_grow: blocks appended to a stage start with beta = gamma = 0, so the warm start
    # is the same function, whatever the new blocks' other weights are
    from deblurcli.train.loop import load_grown

    small = _randomised(NAFNetConfig(**TINY))
    grown_config = NAFNetConfig(**{**TINY, "encoder_blocks": (1, 3), "middle_blocks": 2})
    grown = NAFNet(grown_config).eval()
    added = load_grown(grown, small.state_dict(), allow_new=True)
    assert added and all(name.startswith(("encoders.1.1.", "encoders.1.2.", "middle.1."))
                         for name in added)
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        assert (grown(x) - small(x)).abs().max() < 1e-6


def test_a_guided_model_grown_from_an_unguided_one_computes_what_it_did_before() -> None:
    # the guide's input convolution starts at zero: warm-starting a guided finishing network
    # from an unguided one (run.init_grow) starts from exactly the parent's function
    from deblurcli.train.loop import load_grown

    plain = _randomised(NAFNetConfig(**TINY))
    guided = NAFNet(NAFNetConfig(**{**TINY, "guide_channels": 6})).eval()
    assert load_grown(guided, plain.state_dict(), allow_new=True) == ["guide_head.weight"]
    x, guide = torch.rand(1, 3, 24, 40), torch.rand(1, 6, 24, 40)
    with torch.no_grad():
        assert (guided(torch.cat([x, guide], 1)) - plain(x)).abs().max() < 1e-6
    info = ModelInfo.for_model("nafnet", guided)
    assert info.guide_channels == 6 and info.in_channels == info.out_channels == 3
    # the engine tiles the guide with the image, and refuses to run without it
    guided = _randomised(NAFNetConfig(**{**TINY, "guide_channels": 6, "attention_window": 8}),
                         scale=0.05)
    restorer = Restorer(guided, info, device=torch.device("cpu"), dtype=torch.float32)
    x, guide = torch.rand(1, 3, 70, 301), torch.rand(1, 6, 70, 301)
    whole = restorer(x, guide=guide, tile=None)
    assert whole.shape == x.shape
    assert (restorer(x, guide=guide, tile=160, overlap=120) - whole).abs().max() < 1e-4
    assert (restorer(x, guide=torch.zeros_like(guide), tile=None) - whole).abs().max() > 1e-3
    with pytest.raises(UsageError, match="guide"):
        restorer(x)
    with pytest.raises(UsageError, match="guide"):
        restorer(x, guide=guide[:, :3])
    with pytest.raises(UsageError, match="takes no guide"):
        Restorer(plain, ModelInfo.for_model("nafnet", plain), device=torch.device("cpu"),
                 dtype=torch.float32)(x, guide=guide)


def test_checkpoint_round_trip_keeps_config_and_outputs(tmp_path: Path) -> None:
    model = _randomised(NAFNetConfig(**{**TINY, "attention_window": 12}))
    path = tmp_path / "naf.safetensors"
    save_checkpoint(path, model, ModelInfo.for_model("nafnet", model))
    meta = read_metadata(path)
    assert meta["arch"] == "nafnet"
    assert json.loads(meta["config"]) == json.loads(json.dumps(config_of(model)))
    loaded = load_checkpoint(path)
    assert config_of(loaded.model) == config_of(model)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(x), model(x))


def test_training_config_builds_the_cpu_preset() -> None:
    from deblurcli.train.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "nafnet_cpu.toml")
    assert cfg.model.arch == "nafnet"
    model = REGISTRY["nafnet"].build(cfg.model.config)
    window = model.config.attention_window
    assert model.size_multiple == 16
    assert window == 0 or window >= 2 * cfg.data.crop  # training crops see their global mean
