"""Held-out figures for a VAE: negative ELBO in bits/dim, an importance-weighted bound, PSNR.

The blog baseline's BCE is no likelihood over 8-bit pixels; to put it on the same scale its
output is read as the mean of a discretized Gaussian with one scale fitted on training images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from birdvae.runtime.images import psnr_of_mse

from .likelihood import bits_per_dim, discretized_gaussian_nll, to_unit
from .model import VAE, kl_per_dim

SIGMA_RANGE = (0.005, 0.5)
SIGMA_STEPS = 16  # per round of the search; two rounds resolve sigma to about 2%
GRID_COLUMNS = 8  # pictures a row in a run's grids/


@dataclass
class Scores:
    bpd: float  # negative ELBO, bits per sub-pixel
    recon_bpd: float  # its reconstruction part
    kl_bpd: float  # its KL part
    psnr: float  # dB, decoding the posterior mean, averaged over images
    iw_bpd: float | None = None  # importance-weighted bound with ``iw_samples`` samples
    sigma: float | None = None  # the fitted Gaussian scale, for likelihoods that need one

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in self.__dict__.items() if v is not None}


def batches(images: torch.Tensor | np.ndarray, size: int):
    for start in range(0, len(images), size):
        yield images[start : start + size]


def _as_tensor(images: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    return tensor.to(device)


@torch.no_grad()
def fit_gaussian_sigma(
    model: VAE, images: torch.Tensor | np.ndarray, device: torch.device, limit: int = 512
) -> float:
    """The single scale that makes the model's mean image the best discretized Gaussian.

    A coarse log-spaced grid, then a fine one between the best point's neighbours: 32 scores
    where one fine grid would take 120, as precise; training fits sigma every epoch, where a
    120-point fit would be most of the baseline's validation time. The model is put in eval
    mode, the mode it is then scored in (it matters for the baseline's BatchNorm).
    """
    model.eval()
    x = _as_tensor(images[:limit], device)
    mean = model.decode_image(model.encoder(to_unit(x))[0])

    def best_of(low: float, high: float) -> tuple[float, float, float]:
        grid = torch.logspace(math.log10(low), math.log10(high), SIGMA_STEPS).tolist()
        nll = [float(discretized_gaussian_nll(mean, x, s).mean()) for s in grid]
        i = int(np.argmin(nll))
        return grid[max(i - 1, 0)], grid[i], grid[min(i + 1, len(grid) - 1)]

    low, _, high = best_of(*SIGMA_RANGE)
    return best_of(low, high)[1]


def _recon_nll(model: VAE, params: torch.Tensor, x: torch.Tensor, sigma: float | None):
    if model.likelihood.is_discrete:
        return model.likelihood.nll(params, x)
    return discretized_gaussian_nll(model.likelihood.mean(params), x, sigma)


@torch.no_grad()
def evaluate(
    model: VAE,
    images: torch.Tensor | np.ndarray,
    device: torch.device,
    batch_size: int = 256,
    iw_samples: int = 0,
    sigma: float | None = None,
    seed: int = 0,
    on_decoded: Callable[[int], None] | None = None,
) -> Scores:
    """Average figures over ``images`` (uint8 [N, 3, S, S]); deterministic for a seed.
    ``on_decoded`` hears of every batch of pictures decoded, N (1 + ``iw_samples``) in all:
    the IW bound at its largest takes hours, and a caller shows how far it has come."""
    decoded = on_decoded or (lambda count: None)
    if not model.likelihood.is_discrete and sigma is None:
        raise ValueError("a non-discrete likelihood needs a fitted sigma (fit_gaussian_sigma)")
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    size = model.cfg.image_size
    totals = {"recon": 0.0, "kl": 0.0, "psnr": 0.0, "iw": 0.0}
    count = 0
    for x in batches(images, batch_size):
        x = _as_tensor(x, device)
        unit = to_unit(x)
        mean, logvar = model.encoder(unit)
        std = torch.exp(0.5 * logvar)
        z = mean + std * torch.randn(mean.shape, generator=generator, device=device)
        recon = _recon_nll(model, model.decoder(z), x, sigma)
        decoded(len(x))
        kl = kl_per_dim(mean, logvar).sum(1)
        mse = (model.decode_image(mean) - unit).square().flatten(1).mean(1)
        totals["recon"] += float(recon.sum())
        totals["kl"] += float(kl.sum())
        totals["psnr"] += float(psnr_of_mse(mse.clamp(min=1e-10).float().cpu().numpy(), 1.0).sum())
        if iw_samples > 0:
            totals["iw"] += float(
                _iw_nll(model, x, mean, logvar, iw_samples, sigma, generator, decoded).sum()
            )
        count += len(x)
    recon_bpd = bits_per_dim(totals["recon"] / count, size)
    kl_bpd = bits_per_dim(totals["kl"] / count, size)
    return Scores(
        bpd=recon_bpd + kl_bpd,
        recon_bpd=recon_bpd,
        kl_bpd=kl_bpd,
        psnr=totals["psnr"] / count,
        iw_bpd=bits_per_dim(totals["iw"] / count, size) if iw_samples > 0 else None,
        sigma=sigma,
    )


def _iw_nll(
    model: VAE,
    x: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    samples: int,
    sigma: float | None,
    generator: torch.Generator,
    decoded: Callable[[int], None],
) -> torch.Tensor:
    """-log p(x) estimated by importance weighting with q(z|x): a tighter bound than the ELBO."""
    std = torch.exp(0.5 * logvar)
    log_w = []
    for _ in range(samples):
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        z = mean + std * eps
        log_px_z = -_recon_nll(model, model.decoder(z), x, sigma)
        decoded(len(x))
        log_pz = -0.5 * (z.square() + math.log(2 * math.pi)).sum(1)
        log_qz = -0.5 * (eps.square() + logvar + math.log(2 * math.pi)).sum(1)
        log_w.append(log_px_z + log_pz - log_qz)
    return -(torch.logsumexp(torch.stack(log_w), 0) - math.log(samples))


@torch.no_grad()
def reconstruction_grid(
    model: VAE, images: torch.Tensor, columns: int = GRID_COLUMNS
) -> torch.Tensor:
    """Rows of ``columns`` alternate originals and their reconstructions (posterior mean). A
    short last row is filled with black tiles, so each reconstruction stays under its photo
    when the grid is laid out ``columns`` wide."""
    model.eval()
    unit = to_unit(images)
    recon = model.decode_image(model.encoder(unit)[0])
    blank = (-len(unit)) % columns
    if blank:
        unit = torch.cat([unit, unit.new_zeros(blank, *unit.shape[1:])])
        recon = torch.cat([recon, recon.new_zeros(blank, *recon.shape[1:])])
    rows = []
    for start in range(0, len(unit), columns):
        rows += [unit[start : start + columns], recon[start : start + columns]]
    return torch.cat(rows)
