"""The decoder stage's perceptual distance: a species classifier trained at the stage's start,
whose feature maps compare a reconstruction with its photo."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from birdvae.training import checkpoint, perceptual
from birdvae.training.cli import train_command
from birdvae.training.decoder_stage import DecoderTrainer
from birdvae.training.loop import TrainingError
from birdvae.training.runfolder import LAST

from .conftest import quiet, tiny_stage, write_images

pytestmark = pytest.mark.slow


def test_the_distance_is_zero_for_the_same_picture_and_grows_with_change():
    torch.manual_seed(0)
    net = perceptual.SpeciesNet(classes=3, width=8).eval()
    real = torch.rand(4, 3, 16, 16)
    near = (real + 0.02 * torch.randn_like(real)).clamp(0, 1)
    far = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        same = float(perceptual.distance(net, real, real))
        closer = float(perceptual.distance(net, near, real))
        further = float(perceptual.distance(net, far, real))
    assert same == pytest.approx(0.0, abs=1e-6) and 0 < closer < further
    fake = far.clone().requires_grad_(True)
    perceptual.distance(net, fake, real).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_the_species_net_learns_to_tell_the_species_apart_then_freezes():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(128) % 2
    # Species 0 has a red patch, species 1 a blue one, at random places; the rest is noise.
    images = torch.randint(0, 100, (128, 3, 16, 16), generator=generator, dtype=torch.uint8)
    corners = torch.randint(0, 10, (128, 2), generator=generator).tolist()
    for i, (y, x) in enumerate(corners):
        images[i, 0 if labels[i] == 0 else 2, y : y + 6, x : x + 6] = 250
    lines: list[str] = []
    before = torch.get_rng_state()
    net = perceptual.train_species_net(images, labels, 2, epochs=6, seed=0, log=lines.append)
    assert torch.equal(torch.get_rng_state(), before), "it drew from the caller's random stream"
    assert lines and "training accuracy" in lines[-1]
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    with torch.no_grad():
        predicted = net(images.float() / 255.0).argmax(1)
    assert (predicted == labels).float().mean() > 0.9


def test_the_decoder_stage_learns_with_the_distance_and_resumes_its_features(
    vae_checkpoint, tmp_path
):
    torch.manual_seed(0)
    config = tiny_stage(vae_checkpoint, "decoder", epochs=2)
    config.sharpen.perceptual_weight, config.sharpen.perceptual_epochs = 0.5, 1
    config.sharpen.projected_weight, config.sharpen.gan_start = 1.0, 2
    off = DecoderTrainer(tiny_stage(vae_checkpoint, "decoder"), tmp_path / "off", log=quiet)
    assert off.species_net is None and off.projected is None
    half = DecoderTrainer(config, tmp_path / "d", log=quiet)
    trained = {k: v.clone() for k, v in half.species_net.state_dict().items()}
    heads = [p.clone() for p in half.projected.parameters()]
    stop_at = half.steps_per_epoch + 1
    metrics = half.fit(on_step=lambda t: t.request_stop() if t.step == stop_at else None)
    assert metrics["train_perceptual"] > 0
    # The heads learn; the species net under them stays as it was trained.
    assert any(not torch.equal(a, b) for a, b in zip(heads, half.projected.parameters()))
    state = checkpoint.load(tmp_path / "d" / LAST)
    assert all(torch.equal(state["species_net"][k], v) for k, v in trained.items())
    resumed = DecoderTrainer(config, tmp_path / "d", state, log=quiet)
    # The resumed run compares in the features it started with, not in a new net's.
    assert all(torch.equal(resumed.species_net.state_dict()[k], v) for k, v in trained.items())
    saved_heads = state["projected"]
    assert all(torch.equal(resumed.projected.state_dict()[k], v) for k, v in saved_heads.items())
    resumed.fit()
    assert checkpoint.load(tmp_path / "d" / LAST)["epoch"] == 2


def test_the_projected_discriminator_alone_trains_without_the_distance(vae_checkpoint, tmp_path):
    config = tiny_stage(vae_checkpoint, "decoder", epochs=1)
    config.sharpen.perceptual_epochs = 1
    config.sharpen.projected_weight, config.sharpen.gan_start = 1.0, 0
    trainer = DecoderTrainer(config, tmp_path / "p", log=quiet)
    heads = [p.clone() for p in trainer.projected.parameters()]
    metrics = trainer.fit()
    assert "train_perceptual" not in metrics
    assert any(not torch.equal(a, b) for a, b in zip(heads, trainer.projected.parameters()))


def test_one_species_is_a_clear_error(vae_checkpoint, tmp_path):
    write_images(tmp_path / "flat", 24, seed=3)
    config = tiny_stage(vae_checkpoint, "decoder", epochs=1, data=[str(tmp_path / "flat")])
    config.sharpen.perceptual_weight = 1.0
    with pytest.raises(TrainingError, match="two or more species"):
        DecoderTrainer(config, tmp_path / "d", log=quiet)
    result = CliRunner().invoke(
        train_command,
        ["--stage", "vae", "--data", str(tmp_path / "flat"), "--perceptual-weight", "1",
         "-o", str(tmp_path / "run")],
    )  # fmt: skip
    assert result.exit_code == 2 and "only for --stage decoder" in result.output
