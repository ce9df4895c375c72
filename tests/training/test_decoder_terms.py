"""The decoder stage's loss terms, each on a tiny stage or stand-in network, cheap enough to run
with every change (test_stages.py and test_perceptual.py train whole stages: marked slow)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from birdvae.training import perceptual, sharpen
from birdvae.training.decoder_stage import DecoderTrainer

from .conftest import as_launched_by_torchrun, quiet, tiny_stage


@pytest.fixture(scope="module")
def decoder_trainer(vae_checkpoint: Path, tmp_path_factory) -> DecoderTrainer:
    """A decoder stage over the tiny VAE whose adversarial term starts at step 3, without prior
    draws or an anchor (the VAE carries no prior)."""
    config = tiny_stage(vae_checkpoint, "decoder")
    config.sharpen = replace(config.sharpen, gan_start=3, prior_share=0.0, anchor_weight=0.0)
    return DecoderTrainer(config, tmp_path_factory.mktemp("decoder") / "run", log=quiet)


def test_the_adversarial_term_waits_for_its_start(decoder_trainer: DecoderTrainer):
    """Before --gan-start steps the discriminator trains alone: the decoder's loss has no
    adversarial term (its stats no g_loss) until the step it starts."""
    trainer = decoder_trainer
    batch = trainer.train_images[:4]
    for step, started in ((0, False), (2, False), (3, True), (7, True)):
        trainer.step = step
        stats = trainer.train_step(batch)
        assert stats is not None
        assert ("g_loss" in stats) is started and ("gan_weight" in stats) is started, step
        assert "d_loss" in stats


def test_the_adversarial_weight_is_gan_weight_times_the_adaptive_balance(
    decoder_trainer: DecoderTrainer, monkeypatch
):
    """--gan-weight scales the adversarial term: doubling it doubles the term's weight in the
    decoder's loss, on top of the adaptive balance of the two gradients."""
    trainer = decoder_trainer
    torch.manual_seed(0)
    params = trainer.model.decoder(torch.randn(4, trainer.config.model.latent_dim))
    reconstruction = params.square().mean()
    fake_logits = params.mean(dim=(1, 2, 3)) * torch.linspace(-1, 2, 4)
    last = trainer.model.decoder.head.weight
    balance = sharpen.adaptive_weight(reconstruction, -fake_logits.mean(), last)
    assert 0 < float(balance) < 1e4
    weights = []
    for gan_weight in (0.5, 1.0):
        monkeypatch.setattr(trainer.config, "sharpen",
                            replace(trainer.config.sharpen, gan_weight=gan_weight))  # fmt: skip
        adversarial, weight = trainer._adversarial(reconstruction, fake_logits, None)
        assert adversarial.item() == pytest.approx(-fake_logits.mean().item())
        assert float(weight) == pytest.approx(gan_weight * float(balance), rel=1e-5)
        weights.append(float(weight))
    assert weights[1] == pytest.approx(2 * weights[0], rel=1e-6)


class _Identity:
    """Stands in for the species net: one or more stages whose features are the input itself."""

    def __init__(self, stages: int) -> None:
        self.stages = stages

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [images] * self.stages


def test_the_perceptual_distance_compares_feature_directions_not_sizes():
    """LPIPS unit-normalises every position's features across channels: features of the same
    direction are at distance 0 whatever their sizes, orthogonal ones at 2 a stage, opposite
    ones at 4; the sum runs over stages and the mean over positions and the batch."""
    real = torch.zeros(2, 3, 4, 4)
    real[:, 0] = 0.5
    same_way = 7.0 * real
    across = torch.zeros(2, 3, 4, 4)
    across[:, 1] = 3.0
    for stages in (1, 3):
        net = _Identity(stages)
        assert float(perceptual.distance(net, same_way, real)) == pytest.approx(0.0, abs=1e-6)
        assert float(perceptual.distance(net, across, real)) == pytest.approx(2.0 * stages)
        assert float(perceptual.distance(net, -real, real)) == pytest.approx(4.0 * stages)


def test_the_perceptual_distance_of_any_pictures_is_at_most_4_a_stage():
    """Whatever the features' sizes (an untrained net's included), unit vectors are at most 2
    apart, so a stage adds at most 4."""
    torch.manual_seed(0)
    net = perceptual.SpeciesNet(classes=3, width=8).eval()
    with torch.no_grad():
        far = float(perceptual.distance(net, torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)))
    assert 0 < far <= 4 * len(net.channels)


def test_the_decoder_stage_refuses_several_processes_from_python_too(
    vae_checkpoint: Path, tmp_path: Path, monkeypatch
):
    """Only vae-train refused the decoder stage under torchrun; built from Python, each process
    would have trained a discriminator of its own and rank 0's alone been saved. Refused before
    the process group starts: rank 0 alone there would wait for the others for ever."""
    from birdvae.training import loop

    as_launched_by_torchrun(monkeypatch, world=2)

    def join(self, device):
        raise AssertionError("the process group started: rank 0 would wait here for rank 1")

    monkeypatch.setattr(loop._Distributed, "start", join)
    with pytest.raises(loop.TrainingError, match="the decoder stage runs in one process"):
        DecoderTrainer(tiny_stage(vae_checkpoint, "decoder"), tmp_path / "run", log=quiet)
    assert not (tmp_path / "run").exists()
