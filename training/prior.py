"""The learned prior: a small diffusion model over the VAE's codes, and the fixed sampler that
turns noise into codes in one deterministic graph (``prior.onnx``).

A VAE's codes do not fill N(0, I), and the 16 cells of its 4x4 code grid go together (a head
cell next to a body cell, one background across all of them); drawing the cells independently
gives patchworks. A denoiser trained on the codes the frozen encoder gives (of flipped and
shifted photos, with their posterior noise) learns that joint distribution; sampling it is a
fixed number of solver steps, unrolled, so the exported graph takes the runtime's seeded noise
and draws nothing itself.

- Preconditioning and noise levels follow EDM (Karras et al. 2022, "Elucidating the design
  space of diffusion-based generative models"): the denoiser sees inputs and targets of unit
  variance at every noise level, which a small MLP needs to train well in minutes.
- The sampler is DPM-Solver++(2M) (Lu et al. 2022): second order from one network call a step,
  so ten calls give codes the decoder reads as birds.
- The network is an MLP over the whole flat code, so every cell sees every other, with the noise
  level fed in by FiLM. In the exported sampler each step's noise level is a constant, so that
  branch folds away and a step costs the MLP's matrix products alone.
- Optionally the sampler is autoguided (Karras et al. 2024, "Guiding a diffusion model with a
  bad version of itself"): each step's denoised code is pushed away from what a smaller,
  shorter-trained prior over the same codes predicts, D = D_guide + w (D - D_guide). The guide
  makes the same errors, only more of them, so the difference points at what the good prior
  has learned beyond it; draws come out with firmer outlines without collapsing to few birds,
  as a lower temperature does. A guide a sixth the size costs about a quarter more a step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import PriorConfig

SIGMA_DATA = 1.0  # codes are standardised per dimension before the model sees them
P_MEAN, P_STD = -1.2, 1.2  # log-normal training noise levels (EDM's)
EMBED_DIM = 128


class FourierEmbedding(nn.Module):
    """A noise level's c_noise as sines and cosines at fixed random frequencies."""

    def __init__(self, dim: int = EMBED_DIM, scale: float = 16.0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("freqs", torch.randn(dim // 2, generator=generator) * scale)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * c_noise[:, None] * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class Block(nn.Module):
    """h + Linear(SiLU(FiLM(LayerNorm(h)))), the noise level setting FiLM's scale and shift."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(EMBED_DIM, 2 * width)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(width, width)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, gain: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``gain`` is 1 + FiLM's scale: both come from ``modulation``."""
        y = self.norm(h) * gain + shift
        return h + self.linear(self.drop(self.act(y)))

    def modulation(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.film(embedding).chunk(2, dim=1)
        return 1 + scale, shift


class Denoiser(nn.Module):
    """F(c_in x, c_noise): the raw network inside EDM's preconditioning."""

    def __init__(self, dim: int, cfg: PriorConfig) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            FourierEmbedding(), nn.Linear(EMBED_DIM, EMBED_DIM), nn.SiLU()
        )
        self.inp = nn.Linear(dim, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.dropout) for _ in range(cfg.blocks))
        self.out_norm = nn.LayerNorm(cfg.width)
        self.out = nn.Linear(cfg.width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def films(self, c_noise: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's FiLM gain and shift for these noise levels, [N, width] each."""
        embedding = self.embed(c_noise)
        return [block.modulation(embedding) for block in self.blocks]

    def trunk(
        self, x: torch.Tensor, films: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        h = self.inp(x)
        for block, (gain, shift) in zip(self.blocks, films):
            h = block(h, gain, shift)
        return self.out(torch.nn.functional.silu(self.out_norm(h)))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        return self.trunk(x, self.films(c_noise))


def preconditioning(sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """EDM's c_skip, c_out, c_in and c_noise for noise levels ``sigma`` [N, 1]."""
    total = sigma.square() + SIGMA_DATA**2
    return (
        SIGMA_DATA**2 / total,
        sigma * SIGMA_DATA / total.sqrt(),
        1 / total.sqrt(),
        sigma.log().flatten() / 4,
    )


class CodePrior(nn.Module):
    """The learned prior over codes z [N, D]: standardisation, EDM denoiser and sampler.

    ``mean`` and ``std`` standardise each code dimension (set from the training codes by
    ``set_scale``); everything else works on standardised codes.
    """

    def __init__(self, latent_dim: int, cfg: PriorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.latent_dim = latent_dim
        self.net = Denoiser(latent_dim, cfg)
        self.register_buffer("mean", torch.zeros(latent_dim))
        self.register_buffer("std", torch.ones(latent_dim))

    @torch.no_grad()
    def set_scale(self, codes: torch.Tensor) -> None:
        self.mean.copy_(codes.mean(0))
        self.std.copy_(codes.std(0).clamp(min=1e-3))

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x; sigma): the denoised standardised code; sigma [N], a level per row."""
        c_skip, c_out, c_in, c_noise = preconditioning(sigma.reshape(-1, 1))
        return c_skip * x + c_out * self.net(c_in * x, c_noise)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """EDM's weighted denoising loss for a batch of codes z [N, D], per dimension."""
        x = self.standardise(z)
        sigma = (torch.randn(len(x), device=x.device) * P_STD + P_MEAN).exp()
        return self.loss_at(x, sigma, torch.randn_like(x))

    def loss_at(self, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The loss at given noise levels and noise: validation fixes both."""
        weight = (sigma.square() + SIGMA_DATA**2) / (sigma * SIGMA_DATA).square()
        denoised = self.denoise(x + noise * sigma[:, None], sigma)
        return (weight[:, None] * (denoised - x).square()).mean()

    def sigmas(self) -> list[float]:
        """The solver's noise levels, high to low (Karras et al.'s rho schedule), then 0."""
        cfg = self.cfg
        low, high = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
        ramp = [i / max(1, cfg.steps - 1) for i in range(cfg.steps)]
        return [(high + t * (low - high)) ** cfg.rho for t in ramp] + [0.0]

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Codes z [N, D] from standard-normal noise [N, D] (times the temperature)."""
        return Sampler(self)(noise)


class GuideError(ValueError):
    """A guide that cannot guide this prior: it models other codes, or is the wrong size."""


def check_guide(prior: CodePrior, guide: CodePrior, guidance: float) -> None:
    """Raise GuideError unless ``guide`` can autoguide ``prior`` with weight ``guidance``.

    Both denoisers work on standardised codes, so a guide is only meaningful where it was
    standardised the same way: trained on the same encoder's codes, with the same views.
    """
    if not math.isfinite(guidance) or guidance < 1:
        raise GuideError(f"the guidance weight must be at least 1 (1: no guidance), got {guidance}")
    if guide.latent_dim != prior.latent_dim:
        raise GuideError(
            f"the guide models codes of {guide.latent_dim} numbers, the prior {prior.latent_dim}"
        )
    same_scale = torch.allclose(guide.mean, prior.mean, atol=1e-3 * float(prior.std.mean())) and (
        torch.allclose(guide.std, prior.std, rtol=1e-3)
    )
    if not same_scale:
        raise GuideError(
            "the guide was standardised on other codes than the prior: train it with --stage "
            "prior from the same --init checkpoint, data and --prior-views"
        )


class Sampler(nn.Module):
    """DPM-Solver++(2M) over a CodePrior's fixed noise levels: noise [N, D] -> codes [N, D].

    Deterministic, and every noise-level-dependent number (preconditioning, FiLM) is computed
    here once, as a constant: traced, this is the whole of ``prior.onnx``, a chain of matrix
    products, norms and activations. With a ``guide`` (check_guide) and ``guidance`` w > 1 each
    step autoguides: since both denoisers share EDM's c_skip x term, D = D_guide + w (D -
    D_guide) is c_skip x + c_out (w F - (w - 1) F_guide), one more (small) network per step.
    """

    def __init__(
        self, prior: CodePrior, guide: CodePrior | None = None, guidance: float = 1.0
    ) -> None:
        super().__init__()
        if guide is not None:
            check_guide(prior, guide, guidance)
        self.prior = prior
        self.guide = guide if guide is not None and guidance != 1 else None
        self.guidance = float(guidance)
        self.sigmas = prior.sigmas()
        with torch.no_grad():
            levels = torch.tensor(self.sigmas[:-1], device=prior.mean.device).reshape(-1, 1)
            c_skip, c_out, c_in, c_noise = preconditioning(levels)
            self.films = self._constant_films("", prior.net.films(c_noise))
            self.guide_films = (
                self._constant_films("guide_", self.guide.net.films(c_noise)) if self.guide else []
            )
        self.c_skip, self.c_out, self.c_in = (c.flatten().tolist() for c in (c_skip, c_out, c_in))

    def _constant_films(
        self, prefix: str, films: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> list[list[tuple[str, str]]]:
        """One buffer per step and block (each a plain initializer of the graph); their names."""
        names: list[list[tuple[str, str]]] = []
        for step in range(len(self.sigmas) - 1):
            row = []
            for block, (gain, shift) in enumerate(films):
                pair = (f"{prefix}gain_{step}_{block}", f"{prefix}shift_{step}_{block}")
                self.register_buffer(pair[0], gain[step : step + 1].clone())
                self.register_buffer(pair[1], shift[step : step + 1].clone())
                row.append(pair)
            names.append(row)
        return names

    def _network(self, step: int, x: torch.Tensor) -> torch.Tensor:
        """F (or, guided, w F - (w - 1) F_guide) at solver step ``step`` for inputs c_in x."""
        films = [(getattr(self, g), getattr(self, b)) for g, b in self.films[step]]
        out = self.prior.net.trunk(x, films)
        if self.guide is None:
            return out
        films = [(getattr(self, g), getattr(self, b)) for g, b in self.guide_films[step]]
        return self.guidance * out - (self.guidance - 1) * self.guide.net.trunk(x, films)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        sigmas = self.sigmas
        x = noise * sigmas[0]
        previous: torch.Tensor | None = None
        for i in range(len(sigmas) - 1):
            denoised = self.c_skip[i] * x + self.c_out[i] * self._network(i, self.c_in[i] * x)
            sigma, following = sigmas[i], sigmas[i + 1]
            if following == 0:
                x = denoised
                break
            h = math.log(sigma / following)
            if previous is None:
                estimate = denoised
            else:
                r = math.log(sigmas[i - 1] / sigma) / h
                estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
            x = (following / sigma) * x - math.expm1(-h) * estimate
            previous = denoised
        return self.prior.mean + self.prior.std * x
