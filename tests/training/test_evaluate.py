from __future__ import annotations

import pytest
import torch

from birdvae.training.evaluate import SIGMA_RANGE, fit_gaussian_sigma, reconstruction_grid
from birdvae.training.likelihood import to_unit


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
