"""Autoguidance of the learned prior's sampler (training/prior.py): D = D_guide + w (D - D_guide)
at every solver step, checked against a plain loop over CodePrior.denoise."""

from __future__ import annotations

import math

import pytest
import torch

from birdvae.training.config import PriorConfig
from birdvae.training.prior import CodePrior, GuideError, Sampler, check_guide

DIM = 12


def perturbed(cfg: PriorConfig, seed: int) -> CodePrior:
    torch.manual_seed(seed)
    prior = CodePrior(DIM, cfg)
    with torch.no_grad():
        for parameter in prior.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
        prior.mean.copy_(torch.linspace(-1, 1, DIM))
        prior.std.copy_(torch.linspace(0.5, 2, DIM))
    return prior.eval()


@pytest.fixture(scope="module")
def pair() -> tuple[CodePrior, CodePrior]:
    good = perturbed(PriorConfig(width=32, blocks=3, steps=5), seed=1)
    guide = perturbed(PriorConfig(width=16, blocks=1, steps=5), seed=2)
    return good, guide


@torch.no_grad()
def reference(good: CodePrior, guide: CodePrior, w: float, noise: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M) written out over the public denoisers, guided as the paper says."""
    sigmas = good.sigmas()
    x, previous = noise * sigmas[0], None
    for i in range(len(sigmas) - 1):
        level = torch.full((len(x),), sigmas[i])
        strong, weak = good.denoise(x, level), guide.denoise(x, level)
        denoised = weak + w * (strong - weak)
        if sigmas[i + 1] == 0:
            x = denoised
            break
        h = math.log(sigmas[i] / sigmas[i + 1])
        estimate = denoised
        if previous is not None:
            r = math.log(sigmas[i - 1] / sigmas[i]) / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (sigmas[i + 1] / sigmas[i]) * x - math.expm1(-h) * estimate
        previous = denoised
    return good.mean + good.std * x


@pytest.mark.parametrize("w", [1.0, 2.0, 3.5])
def test_the_guided_sampler_is_the_guided_solver(pair, w):
    good, guide = pair
    noise = torch.randn(7, DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = Sampler(good, guide, w)(noise)
    torch.testing.assert_close(got, reference(good, guide, w, noise), rtol=1e-4, atol=1e-5)


def test_guidance_moves_the_draws_and_a_prior_guiding_itself_does_not(pair):
    good, guide = pair
    noise = torch.randn(5, DIM, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = Sampler(good)(noise)
        guided = Sampler(good, guide, 2.0)(noise)
        itself = Sampler(good, good, 3.0)(noise)
    assert (guided - plain).abs().max() > 1e-2
    torch.testing.assert_close(itself, plain, rtol=1e-4, atol=1e-5)


def test_a_guide_over_other_codes_or_a_weight_below_one_is_refused(pair):
    good, guide = pair
    with pytest.raises(GuideError, match="at least 1"):
        check_guide(good, guide, 0.5)
    other = perturbed(PriorConfig(width=16, blocks=1, steps=5), seed=2)
    with torch.no_grad():
        other.std.mul_(1.5)
    with pytest.raises(GuideError, match="standardised on other codes"):
        Sampler(good, other, 2.0)
    smaller = CodePrior(DIM - 1, PriorConfig(width=16, blocks=1))
    with pytest.raises(GuideError, match="11 numbers"):
        check_guide(good, smaller, 2.0)
