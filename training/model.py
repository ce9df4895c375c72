"""The VAE: a residual encoder/decoder built for quality and for fast ONNX Runtime CPU inference,
and the blog post's original network as the ``baseline`` yardstick.

Design choices for the default (``resnet``) architecture:
- no convolution at full resolution: pixel-unshuffle in, pixel-shuffle out (the costliest layers
  of a decoder are the full-resolution ones);
- plain Conv + LeakyReLU + residual Add, no normalisation: every layer fuses in onnxruntime and
  nothing has to be folded at export; residual branches start at zero, so training is stable;
- upsampling by a 1x1 convolution and pixel shuffle, never ConvTranspose, whose onnxruntime CPU
  kernel is slow and fuses with nothing;
- the code a vector from linear layers, the one kind a learned prior over whole codes can draw
  birds from; ``spatial_latent`` makes it a 4x4 grid of cells made and read by 3x3 convolutions
  instead (it reconstructs better and overfits less, but a grid's cells sampled as one vector
  do not make a bird). Either is flat [N, latent_dim] outside.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ConfigError, ModelConfig
from .likelihood import make_likelihood

NEGATIVE_SLOPE = 0.1
LOGVAR_RANGE = (-12.0, 6.0)


def _act() -> nn.Module:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)


class ResBlock(nn.Module):
    """y = act(x + conv(act(conv(x)))), with the second conv starting at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act1 = _act()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act2 = _act()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(x + self.conv2(self.act1(self.conv1(x))))


def _level_widths(image_size: int, width: int, max_width: int) -> list[int]:
    """Channel widths for resolutions S/2, S/4, ..., 4 (doubling per halving, capped)."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ConfigError(f"image size must be a power of two >= 8, got {image_size}")
    levels = int(math.log2(image_size // 8)) + 1  # S/2 ... 4
    return [min(max_width, width * 2**i) for i in range(levels)]


def _grid_channels(cfg: ModelConfig) -> int:
    """Channels of a spatial code: latent_dim spread over the 4x4 grid."""
    if cfg.latent_dim % 16:
        raise ConfigError(
            f"a spatial latent (a 4x4 grid) needs latent_dim divisible by 16, got "
            f"{cfg.latent_dim}; choose another or a global latent"
        )
    return cfg.latent_dim // 16


class ResNetEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        widths = _level_widths(cfg.image_size, cfg.encoder_width, cfg.encoder_max_width)
        layers: list[nn.Module] = [
            nn.PixelUnshuffle(2),  # [3, S, S] -> [12, S/2, S/2]
            nn.Conv2d(12, widths[0], 3, padding=1),
            _act(),
        ]
        for i, width in enumerate(widths):
            layers += [ResBlock(width) for _ in range(cfg.blocks_per_level)]
            if i + 1 < len(widths):
                layers += [nn.Conv2d(width, widths[i + 1], 4, stride=2, padding=1), _act()]
        self.features = nn.Sequential(*layers)
        self.grid_channels = _grid_channels(cfg) if cfg.spatial_latent else 0
        if self.grid_channels:
            self.head: nn.Module = nn.Conv2d(widths[-1], 2 * self.grid_channels, 3, padding=1)
        else:
            self.head = nn.Linear(widths[-1] * 16, 2 * cfg.latent_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(image * 2.0 - 1.0)
        if self.grid_channels:  # channel-major, as the decoder's view reads it back
            mean, logvar = (part.flatten(1) for part in self.head(h).chunk(2, dim=1))
        else:
            mean, logvar = self.head(h.flatten(1)).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)


class ResNetDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig, out_channels: int) -> None:
        super().__init__()
        widths = _level_widths(cfg.image_size, cfg.decoder_width, cfg.decoder_max_width)[::-1]
        self.top = widths[0]
        self.grid_channels = _grid_channels(cfg) if cfg.spatial_latent else 0
        if self.grid_channels:
            self.fc: nn.Module = nn.Conv2d(self.grid_channels, widths[0], 3, padding=1)
        else:
            self.fc = nn.Linear(cfg.latent_dim, widths[0] * 16)
        layers: list[nn.Module] = [_act()]
        for i, width in enumerate(widths):
            layers += [ResBlock(width) for _ in range(cfg.blocks_per_level)]
            if i + 1 < len(widths):
                layers += [nn.Conv2d(width, 4 * widths[i + 1], 1), nn.PixelShuffle(2), _act()]
        self.head = nn.Conv2d(widths[-1], 4 * out_channels, 3, padding=1)
        self.body = nn.Sequential(*layers, self.head, nn.PixelShuffle(2))

    def init_output_bias(self, bias: tuple[float, ...]) -> None:
        """Set each output channel's starting value (pixel shuffle reads 4 conv channels each)."""
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor(bias).repeat_interleave(4))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.grid_channels:
            # view would make another batch of a wrong-width code (the ONNX graph checks widths)
            if not torch.jit.is_tracing() and z.shape[1] != self.grid_channels * 16:
                raise ValueError(f"expected codes of {self.grid_channels * 16}, got {z.shape[1]}")
            # view, not unflatten: the exported Reshape then has a constant shape, which ONNX
            # shape inference carries through to static image sizes.
            return self.body(self.fc(z.view(-1, self.grid_channels, 4, 4)))
        return self.body(self.fc(z).view(-1, self.top, 4, 4))


class BaselineEncoder(nn.Module):
    """The blog post's encoder, layer for layer (32x32 input only)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 4), nn.ReLU(),
            nn.Conv2d(6, 12, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(12, 24, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc = nn.Linear(384, cfg.latent_dim)
        self.mean = nn.Linear(cfg.latent_dim, cfg.latent_dim)
        self.logvar = nn.Linear(cfg.latent_dim, cfg.latent_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(self.features(image).flatten(1))
        return self.mean(h), self.logvar(h).clamp(*LOGVAR_RANGE)


class BaselineDecoder(nn.Module):
    """The blog post's ConvTranspose decoder; returns logits (the sigmoid is the likelihood's)."""

    def __init__(self, cfg: ModelConfig, out_channels: int) -> None:
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.body = nn.Sequential(
            nn.ConvTranspose2d(cfg.latent_dim, 200, 4), nn.BatchNorm2d(200), nn.ReLU(),
            nn.ConvTranspose2d(200, 120, 6, stride=2), nn.BatchNorm2d(120), nn.ReLU(),
            nn.ConvTranspose2d(120, 60, 6, stride=2), nn.BatchNorm2d(60), nn.ReLU(),
            nn.ConvTranspose2d(60, out_channels, 5),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z.view(-1, self.latent_dim, 1, 1))


class VAE(nn.Module):
    """Encoder q(z|x) = N(mean, exp(logvar)), prior N(0, I), decoder p(x|z) by ``likelihood``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.likelihood = make_likelihood(cfg.likelihood)
        out_channels = 3 * self.likelihood.params_per_channel
        if cfg.arch == "resnet":
            self.encoder = ResNetEncoder(cfg)
            self.decoder = ResNetDecoder(cfg, out_channels)
            self.decoder.init_output_bias(self.likelihood.initial_bias)
        elif cfg.arch == "baseline":
            if cfg.image_size != 32:
                raise ConfigError("the baseline architecture is defined for 32x32 images only")
            self.encoder = BaselineEncoder(cfg)
            self.decoder = BaselineDecoder(cfg, out_channels)
        else:
            raise ConfigError(f"unknown architecture {cfg.arch!r} (choose resnet or baseline)")

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoder params for one posterior sample, and the posterior's mean and log-variance."""
        mean, logvar = self.encoder(image)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        return self.decoder(z), mean, logvar

    def decode_image(self, z: torch.Tensor) -> torch.Tensor:
        """What a person sees for a latent code: the likelihood's mean, in [0, 1]."""
        return self.likelihood.mean(self.decoder(z))


def kl_per_dim(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per latent dimension, in nats, shape [N, D]."""
    mean, logvar = mean.float(), logvar.float()
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
