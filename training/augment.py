"""The random views a step trains on, drawn so that a seed gives the same views on any device
and a block's draws never disturb torch's global random streams."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def private_seed(seed: int) -> Iterator[None]:
    """torch's global random streams seeded for a block, then put back as they were: the CPU's
    and the current GPU's (``torch.manual_seed`` reseeds both, and DDP ranks seed theirs apart)."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def flip_and_shift(
    x: torch.Tensor, shift: int, *, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The views of photos every stage trains on: each image [N, C, H, W] mirrored left to
    right with probability 1/2, then shifted by up to ``shift`` pixels (``random_shift``). The
    mirrorings are drawn on the CPU from ``generator`` (None: torch's global stream), the
    shifts from the global stream."""
    if flip:
        mirrored = torch.rand(len(x), generator=generator, device="cpu") < 0.5
        x = torch.where(mirrored.to(x.device)[:, None, None, None], x.flip(3), x)
    return random_shift(x, shift) if shift > 0 else x


def random_shift(x: torch.Tensor, limit: int) -> torch.Tensor:
    """Shift each image [N, C, H, W] by its own random (dy, dx) in [-limit, limit], repeating
    the edge pixels into the space it leaves."""
    n, _, height, width = x.shape
    offsets = torch.randint(-limit, limit + 1, (2, n), device="cpu").to(x.device)
    rows = (torch.arange(height, device=x.device) + offsets[0, :, None]).clamp(0, height - 1)
    cols = (torch.arange(width, device=x.device) + offsets[1, :, None]).clamp(0, width - 1)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return x[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
