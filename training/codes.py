"""The frozen encoder's codes of the training photos: what the later stages learn from.

The learned prior models the codes the encoder gives, not the photos, so each photo is encoded
once per view (itself, its mirror image, then random mirrorings and shifts as the VAE trained
on) and kept as its posterior's mean and log-variance. A training step then draws fresh
posterior samples from the bank, which costs nothing next to encoding.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .augment import flip_and_shift, private_seed
from .likelihood import to_unit
from .model import VAE

ENCODE_BATCH = 256


def each_view(images: torch.Tensor, count: int, shift: int, seed: int) -> Iterator[torch.Tensor]:
    """``count`` views of each uint8 image [N, 3, S, S], one [N, 3, S, S] view at a time, so a
    caller that encodes each as it comes holds one view in memory instead of ``count``.

    View 0 is the photo, view 1 its mirror image, the rest random mirrorings and shifts of up to
    ``shift`` pixels (edges repeated), drawn from ``seed`` so a resumed run rebuilds the same.
    """
    generator = torch.Generator().manual_seed(seed)
    yield from [images, images.flip(3)][:count]
    # Flips and shifts are drawn on the CPU, so a seed makes the same views on any device. Each
    # view's draws are taken before it is handed out: the caller may use the random streams.
    state = int(torch.randint(2**31, (1,), generator=generator))
    for _ in range(count - 2):
        with private_seed(state):
            view = flip_and_shift(images, shift)
            state = int(torch.randint(2**31, (1,)))  # where the next view's draws start
        yield view


@torch.no_grad()
def encode_bank(
    model: VAE, images: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Posterior mean and log-variance of each uint8 image: float32 [N, 2, D].

    Encoded in ``dtype``: bf16 moves the means by about 0.03 of their posterior standard
    deviation (docs/TRAINING.md), which the draws from the bank drown.
    """
    model.eval()
    rows = []
    for start in range(0, len(images), ENCODE_BATCH):
        unit = to_unit(images[start : start + ENCODE_BATCH])
        with torch.autocast(unit.device.type, dtype=dtype, enabled=dtype != torch.float32):
            mean, logvar = model.encoder(unit.contiguous(memory_format=torch.channels_last))
        rows.append(torch.stack([mean.float(), logvar.float()], dim=1))
    return torch.cat(rows)


def draw(bank: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One posterior sample z [N, D] from each row of a bank [N, 2, D]."""
    mean, logvar = bank[:, 0], bank[:, 1]
    where = generator.device if generator is not None else mean.device
    eps = torch.randn(mean.shape, generator=generator, device=where).to(mean.device)
    return mean + eps * torch.exp(0.5 * logvar)
