"""A perceptual distance for the decoder stage, learned here: a small species classifier trained
on the training split's photos, whose feature maps compare a reconstruction with its photo.

LPIPS (Zhang et al. 2018) compares two pictures in a pretrained network's feature maps, which
see edges, eyes and feathers where pixel losses see only colour; the VQGAN recipe leans on it.
No pretrained network may be downloaded here, so the network is trained at the start of the
stage, on the same photos, to tell the species apart (what makes one bird that bird). The
distance is LPIPS's without its learned per-channel weights: features unit-normalised across
channels at every stage, squared differences, averaged over positions, summed over stages.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .augment import flip_and_shift, private_seed

# The species net's own recipe, fixed rather than configured: it is a means (feature maps that
# tell species apart), judged only by the decoder stage it serves, and trained for
# SharpenConfig.perceptual_epochs.
BATCH = 64
LR = 2e-3  # the one-cycle schedule's peak
WEIGHT_DECAY = 5e-4


class SpeciesNet(nn.Module):
    """Stages of two 3x3 convolutions (GroupNorm, SiLU), each but the last halving the size,
    then global pooling and a linear species head."""

    def __init__(self, classes: int, width: int = 32, stages: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        self.channels = [width * 2**i for i in range(stages)]
        channels = 3
        for out in self.channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, out, 3, padding=1), nn.GroupNorm(8, out), nn.SiLU(),
                    nn.Conv2d(out, out, 3, padding=1), nn.GroupNorm(8, out), nn.SiLU(),
                )
            )  # fmt: skip
            channels = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, classes)

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage for images in [0, 1]."""
        h = images * 2.0 - 1.0
        maps = []
        for i, block in enumerate(self.blocks):
            if i:
                h = F.avg_pool2d(h, 2)
            h = block(h)
            maps.append(h)
        return maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_maps(images)[-1].mean(dim=(2, 3)))


def distance(net: SpeciesNet, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The mean over the batch of the LPIPS-style distance between paired images in [0, 1]."""
    with torch.no_grad():  # the photos are the target: no graph to keep for them
        real_maps = net.feature_maps(real)
    total = fake.new_zeros(())
    for f, r in zip(net.feature_maps(fake), real_maps):
        f = F.normalize(f.float(), dim=1)
        r = F.normalize(r.float(), dim=1)
        total = total + (f - r).square().sum(dim=1).mean()
    return total


def train_species_net(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    epochs: int,
    seed: int,
    log: Callable[[str], None],
) -> SpeciesNet:
    """A SpeciesNet trained on uint8 photos [N, 3, S, S] (flipped and shifted as it goes), then
    frozen: its parameters take no gradient, so only the decoder learns from the distance."""
    # Its own random stream (initial weights, shifts), so the caller's is left as it was.
    with private_seed(seed):
        net = _train(images, labels, classes, epochs, torch.Generator().manual_seed(seed), log)
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net


def _train(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    epochs: int,
    generator: torch.Generator,
    log: Callable[[str], None],
) -> SpeciesNet:
    net = SpeciesNet(classes).to(images.device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    batch_size = min(BATCH, len(images))
    steps = max(1, epochs * (len(images) // batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps)
    net.train()
    step, correct, seen = 0, 0, 0
    while step < steps:
        order = torch.randperm(len(images), generator=generator).to(images.device)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            if step == steps:
                break
            batch = order[start : start + batch_size]
            x = _augment(images[batch].float() / 255.0, generator)
            logits = net(x)
            loss = F.cross_entropy(logits, labels[batch], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += int((logits.argmax(1) == labels[batch]).sum())
            seen += len(batch)
            step += 1
        if seen:
            log(f"species net: {step}/{steps} steps, training accuracy {correct / seen:.1%}")
            correct, seen = 0, 0
    return net


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips, then the VAE's own shifts of up to an eighth of the size."""
    return flip_and_shift(x, max(1, x.shape[-1] // 8), generator=generator)
