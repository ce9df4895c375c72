"""The learned prior: a small diffusion model over the VAE's codes, and the fixed sampler that
turns noise into codes in one deterministic graph (``prior.onnx``).

A VAE's codes do not fill N(0, I): they crowd into the regions real birds encode to, and a
code drawn from N(0, I) or a Gaussian mixture lands between them, where the decoder draws an
average of birds. A denoiser trained on the codes the frozen encoder gives (of flipped and
shifted photos, with their posterior noise) learns where they lie; sampling it is a fixed number
of solver steps, each the same computation over its own row of constants, so the exported graph
is one loop over one traced step (export/sampler.py) that takes the runtime's seeded noise and
draws nothing itself.

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
        self.embed = nn.Sequential(FourierEmbedding(), nn.Linear(EMBED_DIM, EMBED_DIM), nn.SiLU())
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
            "prior from the same --init checkpoint, --data, --seed and --prior-keep"
        )


def solver_label(steps: int) -> str:
    """How the sampler is named in an exported model's manifest and graph metadata."""
    return f"DPM-Solver++(2M), {steps} steps"


class Sampler(nn.Module):
    """DPM-Solver++(2M) over a CodePrior's fixed noise levels: noise [N, D] -> codes [N, D].

    Deterministic, and every noise-level-dependent number (preconditioning, FiLM, the solver's
    weights) is computed here once and kept in tables with a row per step, so every step is the
    same computation, ``step``, reading its own row: traced once, that is the body of the
    ``Loop`` in ``prior.onnx`` (export/sampler.py), a chain of matrix products, norms and
    activations. With a ``guide`` (check_guide) and ``guidance`` w > 1 each step autoguides:
    since both denoisers share EDM's c_skip x term, D = D_guide + w (D - D_guide) is
    c_skip x + c_out (w F - (w - 1) F_guide), one more (small) network per step.
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
        self.steps = len(self.sigmas) - 1
        device = prior.mean.device
        with torch.no_grad():
            levels = torch.tensor(self.sigmas[:-1], device=device).reshape(-1, 1)
            c_skip, c_out, c_in, c_noise = preconditioning(levels)
            solver = torch.tensor(solver_weights(self.sigmas), device=device)
            self.register_buffer("weights", torch.cat([c_skip, c_out, c_in, solver], dim=1))
            films = prior.net.films(c_noise)
            self.register_buffer("gains", _stacked(films, 0, device))
            self.register_buffer("shifts", _stacked(films, 1, device))
            guide_films = self.guide.net.films(c_noise) if self.guide else []
            self.register_buffer("guide_gains", _stacked(guide_films, 0, device))
            self.register_buffer("guide_shifts", _stacked(guide_films, 1, device))

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        """The solver's starting point: noise [N, D] scaled to the highest noise level."""
        return noise * self.sigmas[0]

    def step(
        self, index: torch.Tensor, x: torch.Tensor, previous: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Solver step ``index`` (an int64 tensor of one element): (x, the previous step's
        denoised code) -> (the next x, this step's denoised code). The first step's previous
        code is zeros, which its weights ignore."""
        row = torch.index_select(self.weights, 0, index.reshape(1))
        c_skip, c_out, c_in, keep, take, fresh, stale = row.unbind(1)
        out = self.prior.net.trunk(c_in[:, None] * x, self._films(index, self.gains, self.shifts))
        if self.guide is not None:
            films = self._films(index, self.guide_gains, self.guide_shifts)
            guided = self.guide.net.trunk(c_in[:, None] * x, films)
            out = self.guidance * out - (self.guidance - 1) * guided
        denoised = c_skip[:, None] * x + c_out[:, None] * out
        estimate = fresh[:, None] * denoised + stale[:, None] * previous
        return keep[:, None] * x + take[:, None] * estimate, denoised

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised codes back to the encoder's scale."""
        return self.prior.mean + self.prior.std * x

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        x = self.start(noise)
        previous = torch.zeros_like(x)
        for i in range(self.steps):
            index = torch.tensor([i], device=x.device)
            x, previous = self.step(index, x, previous)
        return self.finish(x)

    @staticmethod
    def _films(
        index: torch.Tensor, gains: torch.Tensor, shifts: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's FiLM gain and shift [1, width] at step ``index``."""
        gain = torch.index_select(gains, 0, index.reshape(1))
        shift = torch.index_select(shifts, 0, index.reshape(1))
        return [(gain[:, b], shift[:, b]) for b in range(gains.shape[1])]


def solver_weights(sigmas: list[float]) -> list[list[float]]:
    """DPM-Solver++(2M)'s update at each step as four numbers (keep, take, fresh, stale):
    x_next = keep x + take (fresh D + stale D_previous). Written so for every step, the first
    (first order: no previous D) and the last (to sigma 0: x_next = D) included, so one traced
    step serves them all."""
    rows = []
    for i in range(len(sigmas) - 1):
        sigma, following = sigmas[i], sigmas[i + 1]
        if following == 0:
            rows.append([0.0, 1.0, 1.0, 0.0])
            continue
        h = math.log(sigma / following)
        fresh, stale = 1.0, 0.0
        if i > 0:
            r = math.log(sigmas[i - 1] / sigma) / h
            fresh, stale = 1 + 1 / (2 * r), -1 / (2 * r)
        rows.append([following / sigma, -math.expm1(-h), fresh, stale])
    return rows


def _stacked(
    films: list[tuple[torch.Tensor, torch.Tensor]], part: int, device: torch.device
) -> torch.Tensor:
    """FiLM gains (part 0) or shifts (1) of every block at every step: [steps, blocks, width]
    (an empty placeholder without a guide, so every sampler has the same buffers)."""
    if not films:
        return torch.zeros(0, 0, 0, device=device)
    return torch.stack([pair[part] for pair in films], dim=1).contiguous()
