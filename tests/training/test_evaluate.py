from __future__ import annotations

import pytest
import torch

from birdvae.training.config import ModelConfig
from birdvae.training.evaluate import (
    SIGMA_RANGE,
    evaluate,
    fit_gaussian_sigma,
    reconstruction_grid,
)
from birdvae.training.likelihood import bits_per_dim, to_unit
from birdvae.training.model import VAE


class _KnownMean:
    """Stands in for a VAE whose mean image for each photo is known exactly."""

    def __init__(self, means: torch.Tensor) -> None:
        self.means = means

    def eval(self) -> None:
        pass

    def encoder(self, unit: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.means[: len(unit)], None

    def decode_image(self, z: torch.Tensor) -> torch.Tensor:
        return z


def test_fitted_sigma_recovers_the_noise_that_made_the_photos():
    generator = torch.Generator().manual_seed(0)
    means = torch.rand(64, 3, 16, 16, generator=generator) * 0.6 + 0.2
    for sigma in (0.02, 0.08, 0.3):
        noisy = means + sigma * torch.randn(means.shape, generator=generator)
        photos = (noisy * 255).round().clamp(0, 255).to(torch.uint8)
        fitted = fit_gaussian_sigma(_KnownMean(means), photos, torch.device("cpu"))
        assert abs(fitted / sigma - 1) < 0.05, (sigma, fitted)


def test_fitted_sigma_stops_at_the_ends_of_its_range():
    generator = torch.Generator().manual_seed(1)
    means = torch.rand(32, 3, 8, 8, generator=generator) * 0.6 + 0.2
    exact = (means * 255).round().to(torch.uint8)  # noise-free: the best sigma is the smallest
    assert fit_gaussian_sigma(_KnownMean(means), exact, torch.device("cpu")) == pytest.approx(
        SIGMA_RANGE[0]
    )
    # every pixel black or white around grey means: the wider the Gaussian, the more of it falls
    # in the end bins, so the best sigma is the largest the range allows
    grey = torch.full((32, 3, 8, 8), 0.5)
    extremes = (torch.rand(grey.shape, generator=generator) < 0.5).to(torch.uint8) * 255
    assert fit_gaussian_sigma(_KnownMean(grey), extremes, torch.device("cpu")) == pytest.approx(
        SIGMA_RANGE[1]
    )


class _Inverting:
    """Stands in for a VAE that reconstructs each photo as its negative."""

    def eval(self) -> None:
        pass

    def encoder(self, unit: torch.Tensor) -> tuple[torch.Tensor, None]:
        return unit, None

    def decode_image(self, z: torch.Tensor) -> torch.Tensor:
        return 1 - z


def test_each_reconstruction_sits_under_its_photo_when_the_last_row_is_short():
    photos = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    grid = reconstruction_grid(_Inverting(), photos, columns=8)
    unit = to_unit(photos)
    assert grid.shape == (32, 3, 4, 4)  # two rows of 8 photos, each with its row of 8 below
    for i in range(10):
        row, column = divmod(i, 8)
        assert torch.equal(grid[16 * row + column], unit[i])
        assert torch.equal(grid[16 * row + 8 + column], 1 - unit[i])
    for blank in [*range(18, 24), *range(26, 32)]:
        assert not grid[blank].any()


class _Posterior(torch.nn.Module):
    """An encoder whose q(z|x) is N(mean, 1) in every dimension, whatever the photo."""

    def __init__(self, mean: float, dim: int) -> None:
        super().__init__()
        self.mean, self.dim = mean, dim

    def forward(self, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = unit.new_zeros(len(unit), self.dim)
        return zeros + self.mean, zeros


class _IgnoresTheCode(torch.nn.Module):
    """A decoder whose p(x|z) is the same for every code: p(x|z) = p(x)."""

    def __init__(self, params: torch.Tensor) -> None:
        super().__init__()
        self.params = params

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.params.expand(len(z), *self.params.shape[1:])


def _known_vae(posterior_mean: float) -> tuple[VAE, torch.Tensor, float]:
    """A VAE whose every figure is known, some photos, and their NLL in nats a photo."""
    vae = VAE(ModelConfig(image_size=8, latent_dim=5, encoder_width=8, decoder_width=8))
    generator = torch.Generator().manual_seed(0)
    params = torch.cat([torch.rand(1, 3, 8, 8, generator=generator),
                        torch.full((1, 3, 8, 8), -2.5)], 1)  # fmt: skip
    vae.encoder, vae.decoder = _Posterior(posterior_mean, 5), _IgnoresTheCode(params)
    photos = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=generator)
    nll = float(vae.likelihood.nll(params.expand(6, -1, -1, -1), photos).mean())
    return vae, photos, nll


def test_bits_per_dim_is_the_whole_negative_elbo():
    """bpd = reconstruction + KL: with q(z|x) = N(1, I) the KL is 1/2 nat a latent dimension."""
    vae, photos, nll = _known_vae(posterior_mean=1.0)
    scores = evaluate(vae, photos, torch.device("cpu"))
    assert scores.recon_bpd == pytest.approx(bits_per_dim(nll, 8), rel=1e-5)
    assert scores.kl_bpd == pytest.approx(bits_per_dim(0.5 * 5, 8), rel=1e-5)
    assert scores.kl_bpd > 0
    assert scores.bpd == pytest.approx(scores.recon_bpd + scores.kl_bpd, rel=1e-6)


@pytest.mark.parametrize("samples", [1, 4])
def test_the_importance_weighted_bound_is_exact_where_every_weight_is_p_of_x(samples):
    """With q(z|x) the prior and p(x|z) = p(x) every weight p(x, z) / q(z|x) is p(x), so the
    bound -log (1/K sum_k w_k) is -log p(x) for any K (not -log p(x) - log K)."""
    vae, photos, nll = _known_vae(posterior_mean=0.0)
    scores = evaluate(vae, photos, torch.device("cpu"), iw_samples=samples)
    assert scores.kl_bpd == pytest.approx(0.0, abs=1e-9)
    assert scores.iw_bpd == pytest.approx(bits_per_dim(nll, 8), rel=1e-5)
    assert scores.iw_bpd == pytest.approx(scores.bpd, rel=1e-5)


@pytest.mark.parametrize("samples", [0, 3])
def test_every_picture_decoded_is_reported_for_the_progress_bar(samples):
    """vae-eval's bar counts pictures decoded: one a photo for the ELBO, then ``samples`` more
    for the IW bound, in batches, so its total is reached exactly when scoring ends."""
    vae, photos, _ = _known_vae(posterior_mean=0.0)
    reported: list[int] = []
    evaluate(vae, photos, torch.device("cpu"), batch_size=3, iw_samples=samples,
             on_decoded=reported.append)  # fmt: skip
    assert sum(reported) == len(photos) * (1 + samples)
    assert max(reported) <= 3
