from __future__ import annotations

import torch

from birdvae.training.evaluate import fit_gaussian_sigma


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
