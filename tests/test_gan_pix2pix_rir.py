"""Pix2Pix and RiR (GAN paper, models.md §3.1–3.3): shapes, switches, attention, sizes, training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deblurcli import methods
from deblurcli.archs import REGISTRY, config_of, pix2pix, rir
from deblurcli.archs._gan_blocks import (
    ChannelAttention,
    SelfAttention2d,
    chunked_attention,
    dense_attention,
    has_spectral_norm,
)
from deblurcli.engine import ModelInfo, load_checkpoint, read_metadata, save_checkpoint
from deblurcli.engine.restorer import Restorer
from deblurcli.train.discriminator import ConditionalPatchGAN

pytestmark = pytest.mark.usefixtures("one_thread")
ARCHS = ("pix2pix", "rir")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _tiny(arch: str, **overrides: object) -> nn.Module:
    spec = REGISTRY[arch]
    return spec.build({**spec.tiny_config, **overrides})


def _convs(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("h", "w"), [(37, 53), (8, 13)])
def test_odd_sizes_are_padded_to_the_multiple_and_cropped_back(arch: str, h: int, w: int) -> None:
    model = _tiny(arch).eval()
    assert model.size_multiple == 8
    info = ModelInfo.for_model(arch, model)
    assert info.size_multiple == 8 and info.tiling == "supported"
    restorer = Restorer(model, info, device=torch.device("cpu"), dtype=torch.float32)
    x = torch.rand(1, 3, h, w)
    y = restorer(x, tile=None)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    with pytest.raises(ValueError, match="multiple of 8"):
        model(x)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiled_large_input_matches_the_contract(arch: str) -> None:
    model = _tiny(arch).eval()
    restorer = Restorer(model, ModelInfo.for_model(arch, model), device=torch.device("cpu"),
                        dtype=torch.float32)
    x = torch.rand(1, 3, 75, 301)
    tiled = restorer(x, tile=128, overlap=48)
    assert tiled.shape == x.shape and restorer.last_run.tile == 128


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("enabled", [True, False])
def test_spectral_norm_is_on_every_conv_exactly_when_configured(arch: str, enabled: bool) -> None:
    model = _tiny(arch, spectral_norm=enabled)
    convs = _convs(model)
    assert len(convs) > 10
    assert [has_spectral_norm(c) for c in convs] == [enabled] * len(convs)
    # a buffer-only parametrisation: the parameter count does not change
    assert _count(model) == _count(_tiny(arch, spectral_norm=not enabled))
    disc = ConditionalPatchGAN(width=8, spectral_norm=enabled, attention=True)
    assert [has_spectral_norm(c) for c in _convs(disc)] == [enabled] * len(_convs(disc))


@pytest.mark.parametrize("transposed", [False, True])
def test_spectral_norm_divides_by_the_largest_singular_value(transposed: bool) -> None:
    from deblurcli.archs._gan_blocks import maybe_spectral_norm

    layer = nn.ConvTranspose2d(6, 10, 4, 2, 1) if transposed else nn.Conv2d(6, 10, 3)
    layer = maybe_spectral_norm(layer, True).train()
    for _ in range(200):  # one power iteration per training forward pass
        weight = layer.weight
    matrix = (weight.transpose(0, 1) if transposed else weight).flatten(1).detach()
    assert abs(float(torch.linalg.matrix_norm(matrix, 2)) - 1.0) < 1e-3
    frozen = layer.eval().weight.detach()
    assert torch.equal(frozen, layer.weight.detach())  # eval: u and v stay put
    state = layer.state_dict()
    state["parametrizations.weight.0._u"] *= 0.9  # as after an EMA of the buffers
    layer.load_state_dict(state)
    assert (layer.weight.detach() - frozen).abs().max() < 1e-6


def test_spectral_norm_trains_under_bf16_autocast_with_the_fp32_sigma() -> None:
    """`run.cpu_bf16` once crashed here: bf16 matmuls met the fp32 power-iteration buffers."""
    from deblurcli.archs._gan_blocks import maybe_spectral_norm

    torch.manual_seed(0)
    layer = maybe_spectral_norm(nn.Conv2d(6, 10, 3), True).train()
    reference = layer.weight.detach().clone()  # one power iteration, fp32
    torch.manual_seed(0)
    layer = maybe_spectral_norm(nn.Conv2d(6, 10, 3), True).train()
    x = torch.randn(2, 6, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        weight = layer.weight
    y.float().sum().backward()
    assert weight.dtype == torch.float32
    assert torch.allclose(weight.detach(), reference, atol=1e-4)  # the 2nd iteration barely moves
    assert layer.parametrizations.weight.original.grad is not None


def test_chunked_attention_equals_dense_attention() -> None:
    q, k, v = torch.randn(2, 150, 4), torch.randn(2, 150, 4), torch.randn(2, 150, 16)
    dense = dense_attention(q, k, v)
    for chunk in (1, 7, 64, 1000):
        assert (chunked_attention(q, k, v, chunk) - dense).abs().max() < 1e-5
    block = SelfAttention2d(16, window=0, chunk=13)
    with torch.no_grad():
        block.gamma.fill_(0.7)
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        flat = lambda conv: conv(x).flatten(2).transpose(1, 2)  # noqa: E731
        o = dense_attention(flat(block.g), flat(block.f), flat(block.h))
        expected = x + 0.7 * block.v(o.transpose(1, 2).reshape(2, 16, 9, 11))
        assert (block(x) - expected).abs().max() < 1e-5


def test_self_attention_starts_as_identity_and_windows_large_maps() -> None:
    block = SelfAttention2d(8, window=4)
    x = torch.randn(1, 8, 10, 9)
    assert torch.equal(block(x), x)  # γ starts at 0
    with torch.no_grad():
        block.gamma.fill_(1.0)
        out = block(x)
        # 10×9 > 4²: near-equal windows (rows 0:3, 3:7, 7:10; columns 0:3, 3:6, 6:9)
        window = x[..., 3:7, 0:3]
        alone = SelfAttention2d(8, window=0)
        alone.load_state_dict(block.state_dict())
        assert (out[..., 3:7, 0:3] - alone(window)).abs().max() < 1e-5
        small = x[..., :4, :4]
        assert (block(small) - alone(small)).abs().max() < 1e-6  # 16 positions: global


def test_attention_sites_follow_the_paper() -> None:
    config = pix2pix.preset("paper", self_attention=True, channel_attention=True)
    assert config.encoder_sites() == [4, 7] and config.decoder_sites() == [8, 5, 2]
    with torch.device("meta"):
        model = pix2pix.Pix2Pix(config)
    widths = [m.f.in_channels for m in model.modules() if isinstance(m, SelfAttention2d)]
    assert widths == [256, 512, 512, 1024, 256]  # e4, e7 inputs; d8, d5, d2 inputs
    assert sum(isinstance(m, ChannelAttention) for m in model.modules()) == 6  # + bottleneck


def test_parameter_counts_of_the_paper_presets_without_allocating() -> None:
    with torch.device("meta"):  # nothing allocated; spectral norm adds buffers, not parameters
        plain = pix2pix.Pix2Pix(pix2pix.preset("paper"))
        switches = {**pix2pix.TABLE_ROWS["sa-ca-gr-sn-percep"], "spectral_norm": False}
        full = pix2pix.Pix2Pix(pix2pix.preset("paper", **switches))
        base = rir.RiR(rir.preset("paper", spectral_norm=False))
        large = rir.RiR(rir.preset("large", spectral_norm=False))
        disc = ConditionalPatchGAN()
    assert round(_count(plain) / 1e6, 2) == 54.45  # models.md §3.2: 54.45 M
    assert round(_count(full) / 1e6, 2) == 58.50  # models.md: 58.51 M
    assert round(_count(base) / 1e6, 1) == 232.7  # models.md §3.3: ≈ 232.7 M
    assert round(_count(large) / 1e6) == 936  # ≈ 936 M
    assert round(_count(disc) / 1e6, 2) == 2.77
    assert disc(torch.rand(1, 3, 256, 256, device="meta"),
                torch.rand(1, 3, 256, 256, device="meta")).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_tiny_model_overfits_two_pairs(arch: str) -> None:
    torch.manual_seed(0)
    sharp = nn.functional.interpolate(torch.rand(2, 3, 8, 8), size=32, mode="bicubic").clamp(0, 1)
    blurry = nn.functional.avg_pool2d(sharp, 5, stride=1, padding=2, count_include_pad=False)
    extra = {"dropout": 0.0} if arch == "pix2pix" else {}
    model = _tiny(arch, **extra).train()  # with self-attention, global residual (and RiR: SN)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = float((blurry - sharp).abs().mean())
    losses = []
    for _ in range(80):
        loss = (model(blurry) - sharp).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        after = float((model.eval()(blurry) - sharp).abs().mean())  # BN running statistics
    assert after < 0.6 * before and after < 0.3 * losses[0], (before, losses[0], after)


def test_one_gan_step_moves_both_the_discriminator_and_the_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from _train_data import write_images
    from safetensors.torch import load_file

    import deblurcli.archs as archs_module
    import deblurcli.train.discriminator as disc_module
    from deblurcli.train.config import load_config
    from deblurcli.train.loop import fit

    built: dict[str, dict[str, torch.Tensor]] = {}
    real_build, real_disc = archs_module.build, disc_module.build_discriminator

    def spy_build(arch: str, config: dict | None = None) -> nn.Module:
        model = real_build(arch, config)
        built["g"] = {k: v.clone() for k, v in model.state_dict().items()}
        return model

    def spy_disc(*args: object, **kwargs: object) -> nn.Module:
        disc = real_disc(*args, **kwargs)  # type: ignore[arg-type]
        built["d"] = {k: v.clone() for k, v in disc.state_dict().items()}
        return disc

    monkeypatch.setattr(archs_module, "build", spy_build)
    monkeypatch.setattr(disc_module, "build_discriminator", spy_disc)
    images = tmp_path / "sharp"
    write_images(images, 2, size=(48, 48))
    tiny = {f"model.config.{k}": json.dumps(v) for k, v in REGISTRY["pix2pix"].tiny_config.items()}
    overrides = {
        "data.kind": '"synthetic"', "data.sharp": f'"{images}"', "data.crop": 32,
        "data.batch_size": 2, "data.kernel_size": 9, "data.kernel_min": 5, "data.frames_prob": 0,
        "data.varying_prob": 0, "data.object_prob": 0, "data.clip_prob": 0,
        "run.steps": 1, "run.log_every": 1, "run.val_every": 0, "run.num_threads": 1,
        "checkpoint.every": 1, "loss.gan_start": 0, "loss.disc_width": 8,
        "model.config.levels": 3, "model.ema_decay": 0, **tiny,
    }
    cfg = load_config(CONFIGS / "pix2pix_cpu.toml", [f"{k}={v}" for k, v in overrides.items()])
    assert (cfg.loss.gan, cfg.loss.l1, cfg.loss.gan_weight) == ("vanilla", 100.0, 1.0)
    fit(cfg, tmp_path / "run")
    step = next((tmp_path / "run" / "checkpoints").iterdir())
    g_after, d_after = load_file(str(step / "model.safetensors")), load_file(
        str(step / "disc.safetensors"))
    for before, after in ((built["g"], g_after), (built["d"], d_after)):
        moved = [k for k in after if after[k].dtype.is_floating_point
                 and not torch.equal(after[k], before[k])]
        assert len(moved) > 4, moved
    first = next(k for k in d_after if k.endswith("weight") or k.endswith("original"))
    assert d_after[first].shape[1] == 6  # conditional: [blurry, image]
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert {"l1", "gan_g", "gan_d"} <= set(record)


def test_perceptual_without_vgg_weights_falls_back_to_l1(caplog: pytest.LogCaptureFixture) -> None:
    from deblurcli.train.losses import PixelObjective

    with caplog.at_level(logging.WARNING):
        objective = PixelObjective(perceptual=100.0, perceptual_fallback="l1")
    assert objective.terms["l1"][0] == 100.0 and "perceptual" not in objective.terms
    assert "L1" in caplog.text


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip_keeps_config_and_outputs(arch: str, tmp_path: Path) -> None:
    model = _tiny(arch, spectral_norm=True).train()
    model(torch.rand(2, 3, 16, 16))  # one power iteration, BN statistics
    model.eval()
    path = tmp_path / f"{arch}.safetensors"
    save_checkpoint(path, model, ModelInfo.for_model(arch, model))
    meta = read_metadata(path)
    assert meta["arch"] == arch and json.loads(meta["config"]) == config_of(model)
    loaded = load_checkpoint(path)
    x = torch.rand(1, 3, 24, 16)
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(x), model(x))


@pytest.mark.parametrize(("arch", "module"), [("pix2pix", pix2pix), ("rir", rir)])
def test_training_configs_are_the_cpu_presets(arch: str, module: object) -> None:
    from deblurcli.train.config import load_config

    cfg = load_config(CONFIGS / f"{arch}_cpu.toml")
    assert cfg.model.arch == arch and cfg.data.pack == ".pack/shake_mixed_pairs.safetensors"
    assert REGISTRY[arch].make_config(cfg.model.config) == module.preset("cpu")  # type: ignore[attr-defined]
    assert (cfg.loss.discriminator, cfg.loss.gan, cfg.loss.l1) == ("patchgan70", "vanilla", 100.0)
    assert 0 < cfg.loss.gan_start < cfg.run.steps and cfg.loss.perceptual_fallback == "l1"


def test_every_row_of_the_papers_pix2pix_table_is_a_config() -> None:
    x = torch.rand(1, 3, 32, 32)
    for name, switches in pix2pix.TABLE_ROWS.items():  # the paper's layout, narrow
        model = pix2pix.Pix2Pix(pix2pix.preset("paper", ngf=2, levels=5, **switches)).eval()
        attention = sum(isinstance(m, SelfAttention2d) for m in model.modules())
        assert attention == (0 if name == "pix2pix" else 3)  # e4, d5, d2 for 5 levels
        assert any(map(has_spectral_norm, _convs(model))) == switches.get("spectral_norm", False)
        with torch.no_grad():
            assert model(x).shape == x.shape
    assert pix2pix.PRESETS["cpu"]["self_attention"] and pix2pix.PRESETS["cpu"]["global_residual"]


@pytest.mark.parametrize("name", ARCHS)
def test_method_rows_run_the_shipped_checkpoint_or_exit_4(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deblurcli.cli.app import main
    from deblurcli.engine import load_model_table

    row = methods.get(name, "network")
    shipped = {"pix2pix": "pix2pix@cpu-v4", "rir": "rir@cpu-v2"}[name]
    assert (row.arch, row.checkpoint) == (name, shipped)
    released = row.checkpoint in {e.ref for e in load_model_table().entries}
    photo, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray((np.random.default_rng(0).random((21, 19, 3)) * 255).astype(np.uint8)).save(
        photo)
    with pytest.raises(SystemExit) as exit_info:  # main() always exits with the command's code
        main(["deblur", str(photo), "--method", name, "-o", str(out), "--offline"])
    code, err = exit_info.value.code or 0, capsys.readouterr().err
    if not released:  # not trained and exported yet: exit 4 saying how
        assert code == 4 and "train export" in err and row.checkpoint in err, err
        return
    assert code == 0, err
    with Image.open(out) as result:  # odd size: padded to the size multiple, cropped back
        assert result.size == (19, 21)
