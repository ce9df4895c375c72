"""What sharpens the decoder: a patch discriminator, differentiable augmentation and the losses
of the decoder stage (decoder_stage.DecoderTrainer).

A decoder trained on a pixel-wise likelihood alone outputs the mean of every bird a code could
be: a smudge. Against a discriminator it has to draw one of them, with edges and feathers. The
recipe is the autoencoder half of VQGAN (Esser et al. 2021): hinge loss, an adaptive weight
that keeps the adversarial gradient at the scale of the reconstruction gradient, and a delayed
start; with DiffAugment (Zhao et al. 2020), since a few thousand photos are too few for a
discriminator to see unaugmented; feature matching on the discriminator's layers (Wang et al.
2018) as a perceptual distance, since no pretrained network may be downloaded; and the focal
frequency loss (Jiang et al. 2021), which weighs the frequencies the decoder gets most wrong.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

NEGATIVE_SLOPE = 0.2
# DiffAugment's published settings (Zhao et al. 2020): shifts of up to an eighth of the size,
# cutout of half of it, tuned for a few hundred to a few thousand photos, as here. Its colour
# jitter is published for pixels in [-1, 1]; applied here to [0, 1], the brightness shift
# (+-0.5) is twice as strong for the range, and shifts and cutout fill with black, not grey.
# The shipped models were trained so; nothing here has compared the two.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _widths(image_size: int, width: int) -> list[int]:
    """The discriminator's channels at each level: ``width``, then doubling at each halving
    down to a 4x4 grid, at most 8 times ``width``."""
    levels = int(math.log2(image_size // 4))
    return [width] + [min(width * 2 ** (i + 1), 8 * width) for i in range(levels)]


class Discriminator(nn.Module):
    """Spectral-norm convolutions down to a 4x4 grid of logits, each seeing most of the bird.

    ``forward`` returns the logits and the features of every level, for feature matching.
    """

    def __init__(self, image_size: int, width: int = 32) -> None:
        super().__init__()
        widths = _widths(image_size, width)
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(3, width, 3, padding=1))]
        for channels, out in zip(widths, widths[1:]):
            layers.append(spectral_norm(nn.Conv2d(channels, out, 4, stride=2, padding=1)))
        self.convs = nn.ModuleList(layers)
        self.head = spectral_norm(nn.Conv2d(widths[-1], 1, 3, padding=1))

    @staticmethod
    def parameter_count(image_size: int, width: int) -> int:
        """The weights a Discriminator of these sizes holds, without building one: spectral
        norm's set-up runs power iterations, which take 0.15 s even on the meta device."""
        widths = _widths(image_size, width)
        count = 3 * width * 9 + width  # the first 3x3 convolution
        count += sum(c * out * 16 + out for c, out in zip(widths, widths[1:]))  # the 4x4 ones
        return count + widths[-1] * 9 + 1  # the head

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = image * 2.0 - 1.0
        features = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), NEGATIVE_SLOPE)
            features.append(h)
        return self.head(h), features


class ProjectedHeads(nn.Module):
    """A discriminator over a frozen network's feature maps (Projected GANs, Sauer et al. 2021;
    Kumari et al. 2022): one small spectral-norm head per map, each giving a grid of logits.

    Judging in a classifier's features, which already know what a bird's parts look like, is
    what lets a discriminator learn from a few thousand photos without memorising them; only
    the heads train, and the decoder's gradient flows back through the frozen network.
    """

    def __init__(self, channels: list[int], width: int = 64) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(
                spectral_norm(nn.Conv2d(c, width, 1)), nn.LeakyReLU(NEGATIVE_SLOPE),
                spectral_norm(nn.Conv2d(width, width, 3, stride=2, padding=1)),
                nn.LeakyReLU(NEGATIVE_SLOPE), spectral_norm(nn.Conv2d(width, 1, 1)),
            )
            for c in channels
        )  # fmt: skip

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Every head's logits for each image, side by side: [N, sum of grid sizes]."""
        return torch.cat([head(m).flatten(1) for head, m in zip(self.heads, maps)], dim=1)


def low_pass_l1(images: torch.Tensor, target: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """L1 between the two at 1/``factor`` resolution: layout and colour are held, detail is free."""
    return (F.avg_pool2d(images, factor) - F.avg_pool2d(target, factor)).abs().mean()


def diff_augment(images: torch.Tensor, kinds: str, generator: torch.Generator | None = None):
    """DiffAugment's colour, translation and cutout, differentiable and the same for any batch
    drawn with the same ``generator`` state (so real and fake pairs can share one transform)."""
    x = images
    n, device = len(x), x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(device)

    for kind in filter(None, kinds.split(",")):
        if kind == "color":
            x = x + (rand(n, 1, 1, 1) - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (rand(n, 1, 1, 1) * 2) + mean
            mean = x.mean(dim=[1, 2, 3], keepdim=True)
            x = (x - mean) * (rand(n, 1, 1, 1) + 0.5) + mean
        elif kind == "translation":
            x = _translate(x, rand(2, n), ratio=TRANSLATION_RATIO)
        elif kind == "cutout":
            x = _cutout(x, rand(2, n), ratio=CUTOUT_RATIO)
        else:
            raise ValueError(f"unknown augmentation {kind!r} (choose color, translation, cutout)")
    return x


def _translate(x: torch.Tensor, u: torch.Tensor, ratio: float) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size, zero padding (as DiffAugment does)."""
    n, _, h, w = x.shape
    limit_y, limit_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = (u[0] * (2 * limit_y + 1)).long().clamp(max=2 * limit_y) - limit_y
    dx = (u[1] * (2 * limit_x + 1)).long().clamp(max=2 * limit_x) - limit_x
    rows = (torch.arange(h, device=x.device)[None] + dy[:, None] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device)[None] + dx[:, None] + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, u: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero one square of ``ratio`` of the size at a random place in each image."""
    h, w = x.shape[2:]
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = (u[0] * (h + 1 - size_y % 2)).long()
    left = (u[1] * (w + 1 - size_x % 2)).long()
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside_y = (rows >= (top - size_y // 2)[:, None, None]) & (
        rows < (top + size_y - size_y // 2)[:, None, None]
    )
    inside_x = (cols >= (left - size_x // 2)[:, None, None]) & (
        cols < (left + size_x - size_x // 2)[:, None, None]
    )
    keep = ~(inside_y & inside_x)
    return x * keep[:, None].to(x.dtype)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def feature_matching(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 distance between the discriminator's features of paired real and fake images."""
    return sum(F.l1_loss(f, r.detach()) for r, f in zip(real, fake)) / len(real)


def focal_frequency_loss(fake: torch.Tensor, real: torch.Tensor, alpha: float = 1.0):
    """The focal frequency loss: squared spectrum differences, each weighted by its own size
    (normalised to [0, 1] per image), so the hardest frequencies count most."""
    f = torch.fft.fft2(fake.float(), norm="ortho")
    r = torch.fft.fft2(real.float(), norm="ortho")
    distance = (f - r).abs().square()
    weight = distance.detach().sqrt() ** alpha
    weight = weight / weight.flatten(1).amax(1).clamp(min=1e-8)[:, None, None, None]
    return (weight * distance).mean()


def adaptive_weight(
    reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor
) -> torch.Tensor:
    """VQGAN's balance: the ratio of the two losses' gradient norms at the decoder's last
    layer, so the adversarial term moves the decoder as much as the reconstruction does."""
    rec = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    adv = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    return (rec.norm() / (adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()
