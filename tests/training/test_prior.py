"""The learned prior's arithmetic (training/prior.py) and what its stage trains and validates on
(training/prior_stage.py): small and exact, so they run with every change, not only the slow
stage runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from birdvae.training.config import PriorConfig
from birdvae.training.prior import SIGMA_DATA, CodePrior, preconditioning

from .conftest import quiet, tiny_stage


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0, 80.0])
def test_the_preconditioning_is_edms(sigma):
    """Karras et al. 2022, table 1: a denoiser trained with other constants (or a noise level
    fed as sigma rather than ln sigma / 4) is not the one the exported sampler assumes."""
    c_skip, c_out, c_in, c_noise = preconditioning(torch.tensor([[sigma]], dtype=torch.float64))
    total = sigma**2 + SIGMA_DATA**2
    assert c_skip.item() == pytest.approx(SIGMA_DATA**2 / total)
    assert c_out.item() == pytest.approx(sigma * SIGMA_DATA / math.sqrt(total))
    assert c_in.item() == pytest.approx(1 / math.sqrt(total))
    assert c_noise.shape == (1,) and c_noise.item() == pytest.approx(math.log(sigma) / 4)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 3.0])
def test_the_loss_weighs_each_noise_level_as_edm_does(sigma):
    """A denoiser off by delta everywhere costs lambda(sigma) delta^2 a dimension, with
    lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2: the weight that gives every noise
    level the same unit-variance target."""
    prior = CodePrior(6, PriorConfig(width=16, blocks=1))
    delta = 0.1
    prior.denoise = lambda x, sigma: torch.full_like(x, 0.7) + delta  # the data is all 0.7
    x = torch.full((5, 6), 0.7)
    loss = prior.loss_at(x, torch.full((5,), sigma), torch.randn(5, 6))
    weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
    assert loss.item() == pytest.approx(weight * delta**2, rel=1e-5)


@pytest.mark.parametrize("steps", [2, 5, 10])
def test_the_solvers_noise_levels_run_from_sigma_max_to_sigma_min_then_zero(steps):
    """Karras et al.'s rho schedule: ``steps`` levels whose ends are sigma_max and sigma_min
    exactly (a ramp that stops short leaves the last step's noise in every code), then 0."""
    cfg = PriorConfig(steps=steps, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    sigmas = CodePrior(4, cfg).sigmas()
    assert len(sigmas) == steps + 1 and sigmas[-1] == 0.0
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-2] == pytest.approx(0.002)
    assert all(a > b for a, b in zip(sigmas, sigmas[1:]))
    middle = ((80.0 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7  # t = 1/2 of the ramp
    if steps % 2:
        assert sigmas[steps // 2] == pytest.approx(middle)


def test_the_prior_can_learn_only_the_clearest_photos():
    """--prior-keep: the share of photos the rater rates highest, in their order."""
    from birdvae.runtime.selection import load_rater
    from birdvae.training.prior_stage import _clearest

    generator = torch.Generator().manual_seed(0)
    photos = torch.randint(0, 256, (10, 3, 16, 16), generator=generator, dtype=torch.uint8)
    photos[3] = 200  # a plain background...
    photos[3, :, 5:11, 5:11] = 20  # ...with a dark shape in the middle
    kept = _clearest(photos, 0.3)
    scores = load_rater(threads=1)(photos.float().div(255).numpy())
    best = sorted(torch.tensor(scores).argsort(descending=True)[:3].tolist())
    assert len(kept) == 3 and torch.equal(kept, photos[best])
    assert _clearest(photos, 1.0) is photos


def test_the_prior_stage_validates_the_weight_average_it_ships(vae_checkpoint: Path, tmp_path):
    """val_prior_loss picks best.pt, whose prior is the weight average: the raw prior's loss
    would pick the epoch by weights that are never exported."""
    from birdvae.training.prior_stage import PriorTrainer

    trainer = PriorTrainer(tiny_stage(vae_checkpoint, "prior"), tmp_path / "run", log=quiet)
    with torch.no_grad():  # the raw prior moves away from its average
        for parameter in trainer.prior.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)

    def loss(prior: CodePrior, inputs: tuple[torch.Tensor, ...]) -> float:
        z, sigmas, noise = inputs
        with torch.no_grad():
            return float(prior.eval().loss_at(prior.standardise(z), sigmas, noise))

    averaged = loss(trainer.prior_ema.module, trainer._val_inputs)
    raw = loss(trainer.prior, trainer._val_inputs)
    assert abs(raw - averaged) > 0.01 * averaged
    figures = trainer._validate()
    assert figures["val_prior_loss"] == pytest.approx(averaged, rel=1e-5)
    assert figures["train_fixed_prior_loss"] == pytest.approx(
        loss(trainer.prior_ema.module, trainer._train_inputs), rel=1e-5
    )
    assert trainer.prior.training  # handed back to training
