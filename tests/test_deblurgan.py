"""DeblurGAN and its edge / feedback variants: sizes, critic, gradient penalty, edges, feedback,
overfitting, training loop, method rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from _models import overfit
from _train_data import tiny_config, write_images
from safetensors.torch import load_file
from torch import nn

from deblurcli import archs, methods
from deblurcli.archs import REGISTRY
from deblurcli.archs.deblurgan import (
    PRESETS,
    VARIANTS,
    DeblurGAN,
    DeblurGANConfig,
    ResBlock,
    canny_edges,
    preset,
    widen_state,
)
from deblurcli.train import losses
from deblurcli.train.config import ConfigError
from deblurcli.train.discriminator import build_discriminator
from deblurcli.train.loop import fit, iteration_objective

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIG_OF = {"deblurgan": "deblurgan_cpu.toml", "deblurgan-edge": "deblurgan_edge_cpu.toml",
             "deblurgan-feedback": "deblurgan_feedback_cpu.toml"}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def test_resblocks_have_two_convs_and_the_parameters_match_the_spec_arithmetic() -> None:
    model = DeblurGAN(preset("paper"))
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 9
    assert all(sum(isinstance(m, nn.Conv2d) for m in b.modules()) == 2 for b in blocks)
    assert not any(isinstance(m, nn.InstanceNorm2d) and m.affine for m in model.modules())
    expected = (_conv(3, 64, 7) + _conv(64, 128, 3) + _conv(128, 256, 3)  # encoder
                + 9 * 2 * _conv(256, 256, 3)  # two convs per block (the official code: one)
                + _conv(256, 128, 3) + _conv(128, 64, 3) + _conv(64, 3, 7))  # decoder
    assert _count(model) == expected == 11_378_179  # models.md §3.4: 11.38 M
    assert expected - 9 * _conv(256, 256, 3) == 6_067_459  # the official bug's 6.07 M
    assert _count(DeblurGAN(preset("paper", "deblurgan-edge"))) == expected + 64 * 49
    lstm = 4 * (512 * 256 * 9 + 256)  # models.md §3.4: ≈ 4.72 M
    assert _count(DeblurGAN(preset("paper", "deblurgan-feedback"))) == expected + lstm


def test_output_is_the_clamped_global_residual_in_unit_range() -> None:
    model = DeblurGAN(DeblurGANConfig(width=4, blocks=1)).eval()
    with torch.no_grad():
        model.decoder[-2].weight.zero_()
        model.decoder[-2].bias.fill_(5.0)  # tanh(5) ≈ 1: adds ≈ 1 on [-1, 1], ≈ 0.5 on [0, 1]
        x = torch.rand(1, 3, 12, 20)
        out = model(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, (x + 0.5 * torch.tanh(torch.tensor(5.0))).clamp(max=1.0))


def _critic(width: int = 64) -> nn.Module:
    from deblurcli.train.config import load_config

    lc = load_config(CONFIGS / "deblurgan_cpu.toml").loss
    assert (lc.gan, lc.gp_weight, lc.critic_steps) == ("wgan-gp", 10.0, 5)
    return build_discriminator(lc.discriminator, 3, width, lc.disc_config)


def test_the_critic_is_unconditional_and_has_no_sigmoid() -> None:
    critic = _critic()
    assert not getattr(critic, "conditional", False)
    assert not any(isinstance(m, (nn.Sigmoid, nn.Tanh)) for m in critic.modules())
    assert isinstance(list(critic.modules())[-1], nn.Conv2d)
    assert any(isinstance(m, nn.InstanceNorm2d) for m in critic.modules())
    assert abs(_count(critic) - 2.76e6) < 0.01e6  # models.md §3.4: 2.76 M
    with torch.no_grad():
        scores = critic(torch.randn(2, 3, 64, 64) * 50)
    assert scores.min() < 0 or scores.max() > 1  # raw Wasserstein scores, not probabilities


def test_gradient_penalty_matches_finite_differences_on_a_tiny_critic() -> None:
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 3)).double()
    real, fake = torch.rand(2, 3, 6, 6, dtype=torch.float64), torch.rand(2, 3, 6, 6,
                                                                         dtype=torch.float64)
    penalty = losses.gradient_penalty(critic, real, fake,
                                      generator=torch.Generator().manual_seed(7))
    eps = torch.rand(2, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    mixed = eps * real + (1 - eps) * fake
    grad = torch.zeros_like(mixed)
    h = 1e-6
    with torch.no_grad():
        for index in np.ndindex(*mixed.shape):
            step = torch.zeros_like(mixed)
            step[index] = h
            grad[index] = ((critic(mixed + step).sum() - critic(mixed - step).sum()) / (2 * h))
    expected = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert abs(penalty.item() - expected.item()) < 1e-7 * max(1.0, expected.item())
    # and its gradient reaches the critic's weights (double backward), checked numerically
    def penalty_of(weight: torch.Tensor) -> torch.Tensor:
        def call(x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(critic[1](critic[0](x)), weight, critic[2].bias)

        return losses.gradient_penalty(call, real, fake,  # type: ignore[arg-type]
                                       generator=torch.Generator().manual_seed(7))

    w0 = critic[2].weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(penalty_of, (w0,), eps=1e-6, atol=1e-6)


def _smooth_pair(seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    sharp = F.interpolate(torch.rand(2, 3, size // 4, size // 4), size=size, mode="bicubic")
    sharp = sharp.clamp(0, 1)
    blurry = F.avg_pool2d(sharp, 5, stride=1, padding=2, count_include_pad=False)
    return blurry, sharp


def test_canny_agrees_with_opencv_given_the_same_gradients() -> None:
    cv2 = pytest.importorskip("cv2")
    from deblurcli.archs.deblurgan import _gaussian_blur

    torch.manual_seed(0)
    x = F.interpolate(torch.rand(1, 3, 24, 32), size=(96, 128), mode="bicubic").clamp(0, 1)
    ours = canny_edges(x)[0, 0].numpy().astype(bool)
    gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    padded = F.pad(_gaussian_blur(gray, 1.4), (1, 1, 1, 1), mode="replicate")
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gx = F.conv2d(padded, sobel.view(1, 1, 3, 3))[0, 0].numpy()
    gy = F.conv2d(padded, sobel.t().reshape(1, 1, 3, 3))[0, 0].numpy()
    scale = 3000 / np.hypot(gx, gy).max()
    dx, dy = np.round(gx * scale).astype(np.int16), np.round(gy * scale).astype(np.int16)
    top = np.hypot(dx.astype(float), dy.astype(float)).max()
    theirs = cv2.Canny(dx, dy, 0.1 * top, 0.2 * top, L2gradient=True) > 0
    assert ours.sum() > 100 and (ours & theirs).sum() / (ours | theirs).sum() > 0.95
    # a flat image has no edges; a step edge gives a one-pixel line
    assert canny_edges(torch.full((1, 3, 16, 16), 0.5)).sum() == 0
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1
    assert canny_edges(step)[0, 0, 4:12].sum(dim=1).eq(1).all()


def test_canny_hysteresis_by_components_equals_growing_by_dilation() -> None:
    # a batch of two textured images with long weak chains; the cap of 10**9 sweeps forces the
    # iterative growth (it stops at convergence), the default takes the one-pass labelling
    torch.manual_seed(1)
    x = F.interpolate(torch.rand(2, 3, 20, 28), size=(90, 125), mode="bicubic").clamp(0, 1)
    one_pass = canny_edges(x, low=0.05, high=0.3)
    grown = canny_edges(x, low=0.05, high=0.3, max_sweeps=10**9)
    assert one_pass.sum() > 100
    assert torch.equal(one_pass, grown)
    # weak pixels with no strong neighbour in their component stay off
    assert canny_edges(x, low=0.05, high=0.99).sum() < canny_edges(x, low=0.05, high=0.3).sum()


def test_the_edge_channel_is_the_canny_map_of_the_blurred_input() -> None:
    blurry, sharp = _smooth_pair()
    model = DeblurGAN(DeblurGANConfig(width=4, blocks=1, edge_input=True)).eval()
    seen: list[torch.Tensor] = []
    first = model.encoder[1]
    assert isinstance(first, nn.Conv2d) and first.in_channels == 4
    handle = first.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        model(blurry)
    handle.remove()
    fourth = seen[0][:, 3:, 3:-3, 3:-3]  # the reflect-padded generator input
    assert set(fourth.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(fourth, 2 * canny_edges(blurry) - 1)
    assert not torch.equal(fourth, 2 * canny_edges(sharp) - 1)  # not the (unavailable) sharp one
    torch.testing.assert_close(seen[0][:, :3, 3:-3, 3:-3], 2 * blurry - 1)


def test_feedback_gives_one_output_per_iteration_and_carries_the_state_over() -> None:
    torch.manual_seed(0)
    model = DeblurGAN(DeblurGANConfig(width=4, blocks=1, feedback_iterations=4)).eval()
    x = torch.rand(2, 3, 16, 20)
    with torch.no_grad():
        outputs = model.forward_iterations(x)
        assert len(outputs) == 4 and torch.equal(model(x), outputs[-1])
        scaled = model.generator_input(x)
        features = model.encoder(scaled)
        state = model.init_state(features)
        chained = []
        for _ in range(4):
            out, state = model.iterate(features, scaled, state)
            chained.append(out)
        fresh, _ = model.iterate(features, scaled, model.init_state(features))
    assert all(torch.equal(a, b) for a, b in zip(outputs, chained, strict=True))
    assert torch.equal(fresh, outputs[0])  # with a fresh state iteration 2 would repeat 1 …
    assert all((outputs[i] - outputs[0]).abs().max() > 1e-6 for i in (1, 2, 3))  # … it does not
    assert model.training_outputs() == []  # eval mode keeps nothing
    model.train()
    last = model(x)
    kept = model.training_outputs()
    assert len(kept) == 4 and kept[-1] is last and model.training_outputs() == []
    plain = DeblurGAN(DeblurGANConfig(width=4, blocks=1)).train()
    plain(x)
    assert plain.training_outputs() == [] and len(plain.forward_iterations(x)) == 1


def test_the_loss_of_the_feedback_variant_is_the_mean_over_iterations() -> None:
    model = DeblurGAN(DeblurGANConfig(width=4, blocks=1, feedback_iterations=3)).train()
    blurry, sharp = _smooth_pair(size=16)
    objective = losses.PixelObjective(l1=1.0, charbonnier=0.0)
    out = model(blurry)
    outputs, loss, parts = iteration_objective(objective, model, out, sharp, None)
    each = [losses.l1_loss(o, sharp).item() for o in outputs]
    assert len(outputs) == 3 and outputs[-1] is out
    mean = sum(each) / 3
    assert abs(loss.item() - mean) < 1e-6 and abs(parts["l1"].item() - mean) < 1e-6


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_tiny_model_overfits_two_pairs(variant: str) -> None:
    blurry, sharp = _smooth_pair(seed=1)
    torch.manual_seed(0)
    model = DeblurGAN(DeblurGANConfig(width=8, blocks=1, dropout=0.0, **VARIANTS[variant]))
    objective = losses.PixelObjective(l1=1.0, charbonnier=0.0)

    def loss_of(m: torch.nn.Module) -> torch.Tensor:
        return iteration_objective(objective, m, m(blurry), sharp, None)[1]

    before, after = overfit(model, blurry, sharp, loss_of, steps=80)
    assert after < 0.3 * before, (before, after)


def test_perceptual_conv3_3_is_an_mse_and_falls_back_to_l1_without_weights(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from safetensors.torch import save_file

    net = losses.FeatureNet()
    path = tmp_path / "vgg.safetensors"
    save_file({f"layers.{k}": v.contiguous() for k, v in net.layers.state_dict().items()},
              str(path))
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    objective = losses.PixelObjective(charbonnier=0.0, perceptual=1.0,
                                      perceptual_weights=str(path), perceptual_layer="conv3_3")
    _, parts = objective(x, y)
    loaded = objective.perceptual.net  # type: ignore[union-attr]
    features = loaded.layers[:15]  # conv3_3 in torchvision's vgg19().features numbering

    def norm(t: torch.Tensor) -> torch.Tensor:
        return (t - loaded.mean) / loaded.std

    assert isinstance(features[-1], nn.Conv2d) and features[-1].out_channels == 256
    expected = (features(norm(x)) - features(norm(y))).pow(2).mean()
    torch.testing.assert_close(parts["perceptual"], expected)
    with caplog.at_level("WARNING"):
        _, parts = losses.PixelObjective(charbonnier=0.0, perceptual=1.0,
                                         perceptual_fallback="l1",
                                         perceptual_layer="conv3_3")(x, y)
    assert set(parts) == {"l1"} and "VGG19" in caplog.text


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_config_is_the_cpu_preset_and_trains_through_the_loop_with_5_critic_steps(
        variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from _train_data import write_images

    import deblurcli.train.discriminator as discriminator
    from deblurcli.train.config import load_config
    from deblurcli.train.loop import fit

    path = CONFIGS / CONFIG_OF[variant]
    cfg = load_config(path)
    assert cfg.model.arch == "deblurgan"
    assert cfg.data.pack == ".pack/shake_mixed_pairs.safetensors"
    assert DeblurGANConfig(**cfg.model.config) == preset("cpu", variant)
    assert 0 < cfg.loss.gan_start < cfg.run.steps and cfg.loss.perceptual_fallback == "l1"
    calls = []
    real_build = discriminator.build_discriminator

    def counting(*args: object, **kwargs: object) -> nn.Module:
        disc = real_build(*args, **kwargs)  # type: ignore[arg-type]
        disc.register_forward_hook(lambda *_: calls.append(1))
        return disc

    monkeypatch.setattr(discriminator, "build_discriminator", counting)
    images = tmp_path / "sharp"
    write_images(images, 2, size=(48, 48))
    overrides = {
        "data.kind": '"synthetic"', "data.sharp": f'"{images}"', "data.crop": 32,
        "data.batch_size": 2, "data.kernel_size": 9, "data.kernel_min": 5, "data.frames_prob": 0,
        "data.varying_prob": 0, "data.object_prob": 0, "data.clip_prob": 0,
        "run.steps": 2, "run.log_every": 1, "run.val_every": 0, "run.num_threads": 1,
        "checkpoint.every": 2, "loss.gan_start": 1, "loss.disc_width": 4,
        "model.config.width": 4, "model.config.blocks": 1,
    }
    fit(load_config(path, [f"{k}={v}" for k, v in overrides.items()]), tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    first, second = (line for line in log if line["kind"] == "train")
    assert "gan_g" not in first and {"l1", "gan_g", "gan_d"} <= set(second)  # content, then GAN
    iterations = cfg.model.config["feedback_iterations"] or 1
    assert len(calls) == iterations + 5 * 3  # G: each iteration; 5 × (real, fake, penalty)
    assert (tmp_path / "run" / "checkpoints").is_dir()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_method_rows_exist_and_unreleased_weights_exit_4(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from deblurcli.cli.app import main
    from deblurcli.engine import load_model_table

    row = methods.get(name, "network")
    assert row.arch == "deblurgan" and row.checkpoint.startswith(f"{name}@cpu-v")
    assert methods.network_for_arch("deblurgan", name) == row
    assert "deblurgan" in REGISTRY and set(PRESETS) == {"paper", "cpu"}
    if row.checkpoint in {e.ref for e in load_model_table().entries}:
        pytest.skip(f"{row.checkpoint} is released")
    photo = tmp_path / "in.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photo)
    with pytest.raises(SystemExit) as exit_info:
        main(["deblur", str(photo), "--method", name, "-o", str(tmp_path / "o.png"), "--offline"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 4 and "train export" in err and row.checkpoint in err, err


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_released_weights_are_their_variant_and_restore_a_photo(name: str) -> None:
    """A shipped checkpoint carries its variant's switches (so `--method NAME` runs the model it
    names), and it changes a photo without leaving [0, 1]."""
    from deblurcli.engine import load_model, load_model_table

    checkpoint = methods.get(name, "network").checkpoint
    if checkpoint not in {e.ref for e in load_model_table().entries}:
        pytest.skip(f"{checkpoint} is not released")
    restorer = load_model(checkpoint, device="cpu", offline=True)
    assert restorer.model.config == preset("cpu", name)
    torch.manual_seed(0)
    x = F.avg_pool2d(torch.rand(1, 3, 36, 44), 3, stride=1, padding=1)  # a soft photo-like image
    with torch.no_grad():
        y = restorer(x, tile=None)
    assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert (y - x).abs().mean() > 1e-3


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_checkpoint_round_trip_and_restorer_on_odd_sizes(variant: str, tmp_path: Path) -> None:
    from deblurcli.archs import config_of
    from deblurcli.engine import ModelInfo, load_checkpoint, save_checkpoint
    from deblurcli.engine.restorer import Restorer

    torch.manual_seed(0)
    model = DeblurGAN(DeblurGANConfig(width=4, blocks=1, edge_thresholds=(0.05, 0.3),
                                      **VARIANTS[variant])).eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, ModelInfo.for_model("deblurgan", model))
    loaded = load_checkpoint(path)
    assert config_of(loaded.model) == config_of(model) and loaded.model.config == model.config
    assert loaded.info.size_multiple == 4 and loaded.info.tiling == "discouraged"
    restorer = Restorer(loaded.model, loaded.info, device=torch.device("cpu"), dtype=torch.float32)
    for channels in (3, 1):
        x = torch.rand(1, channels, 21, 30)
        out = restorer(x, tile=None)
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def _randomised(config: DeblurGANConfig, seed: int = 0) -> DeblurGAN:
    """A generator with every weight and bias drawn at random (a trained model is not the
    near-identity of a fresh one, so a wrong channel map shows)."""
    torch.manual_seed(seed)
    model = DeblurGAN(config)
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.normal_(0.0, 0.2)
    return model.eval()


@pytest.mark.parametrize(
    "options",
    [{}, {"edge_input": True}, {"dropout": 0.5}],
    ids=["plain", "edge", "dropout"],
)
def test_widening_computes_the_same_function(options: dict[str, object]) -> None:
    old = {"width": 4, "blocks": 2, **options}
    new = {**old, "width": 7}
    parent = _randomised(DeblurGANConfig(**old))
    child = DeblurGAN(DeblurGANConfig(**new)).eval()
    child.load_state_dict(widen_state(parent.state_dict(), old, new, seed=3))
    x = torch.rand(2, 3, 32, 24)
    with torch.no_grad():
        expected, got = parent(x), child(x)
    assert child.encoder[1].out_channels == 7 and child.blocks[0].body[1].out_channels == 28
    assert torch.allclose(got, expected, atol=1e-5)
    # the copies of a channel get different gradients, so training separates them
    child.train()
    child(x).square().mean().backward()
    grad = child.encoder[1].weight.grad
    assert grad is not None
    weight = child.encoder[1].weight
    source = next(j for j in range(4) if torch.equal(weight[4], weight[j]))
    assert not torch.allclose(grad[4], grad[source])


def test_widening_leaves_other_changes_to_the_shape_check_and_refuses_feedback() -> None:
    state = DeblurGAN(DeblurGANConfig(width=4, blocks=1)).state_dict()
    assert widen_state(state, {"width": 4, "blocks": 1}, {"width": 4, "blocks": 2}) is state
    assert widen_state(state, {"width": 4, "blocks": 1}, {"width": 3, "blocks": 1}) is state
    with pytest.raises(ValueError, match="feedback"):
        widen_state(state, {"width": 4, "feedback_iterations": 2},
                    {"width": 6, "feedback_iterations": 2})


def test_a_run_grows_a_narrower_parent_into_the_same_function(tmp_path: Path) -> None:
    images = tmp_path / "sharp"
    write_images(images, count=4)
    parent_options = {"run.steps": 2, "run.val_every": 0}
    parent = fit(tiny_config(images, "deblurgan", **parent_options), tmp_path / "parent")
    child_options = {**parent_options, "run.steps": 1, "optim.lr": 0.0, "model.ema_decay": 0.0,
                     "run.init": str(tmp_path / "parent"), "model.config.width": 6}
    with pytest.raises(ConfigError, match="init_grow"):  # growing must be asked for
        fit(tiny_config(images, "deblurgan", **child_options), tmp_path / "refused")
    child = fit(tiny_config(images, "deblurgan", **child_options, **{"run.init_grow": True}),
                tmp_path / "child")
    models = []
    for run, width in ((parent, 4), (child, 6)):
        model = archs.build("deblurgan", {**REGISTRY["deblurgan"].tiny_config, "width": width})
        model.load_state_dict(load_file(str(run.checkpoint / "model.safetensors")))  # type: ignore[operator]
        models.append(model.eval())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(models[0](x), models[1](x), atol=1e-5)
