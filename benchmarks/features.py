"""A feature space for comparing birds: a small species classifier trained here, on the
training split, from scratch.

FID-style metrics usually take an ImageNet network's features; none may be downloaded here, and
one trained on birds sees what makes a bird a bird (and which one) better anyway. It is trained
once per data set and image size and cached; its penultimate layer (256 numbers after global
pooling) is the feature vector.

    python benchmarks/features.py --data path/to/CUB_200_2011 --data path/to/more-birds

Run alone it trains (and caches) one on the whole training split and prints its accuracy.
``benchmarks/birds.py`` trains its own, on all but the ``--count`` training photos that make its
floor, and prints that one's accuracy: running this first does not prepare that one.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

CACHE = Path("runs/features")
EPOCHS = 15
BATCH = 64
FEATURES = 256


class Classifier(nn.Module):
    """Three stages of two 3x3 convolutions (BatchNorm, ReLU), each then halving the size,
    global average pooling, and a linear species head."""

    def __init__(self, classes: int, width: int = 24) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, 2 * width, 4 * width, FEATURES):
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]  # fmt: skip
            if out != FEATURES:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURES, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2.0 - 1.0)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flips, shifts of up to an eighth, and brightness/contrast jitter of float images."""
    n, _, size, _ = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = size // 8
    padded = nn.functional.pad(x, [pad] * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    x = torch.stack([padded[i, :, dy[i] : dy[i] + size, dx[i] : dx[i] + size] for i in range(n)])
    gain = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=generator)
    bias = 0.1 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    return (x * gain + bias).clamp(0, 1)


def train(
    train: np.ndarray, labels: np.ndarray, classes: int, seed: int = 0, log=print
) -> Classifier:
    """A classifier of uint8 images [N, 3, S, S] into ``classes`` species."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Classifier(classes).to(memory_format=torch.channels_last)
    images = torch.from_numpy(train).float() / 255.0
    targets = torch.from_numpy(labels)
    steps = EPOCHS * (len(images) // BATCH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    started = time.perf_counter()
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - BATCH + 1, BATCH):
            index = order[start : start + BATCH]
            x = augment(images[index], generator).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        log(f"classifier epoch {epoch + 1}/{EPOCHS}: loss {loss.item():.3f} "
            f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    return model.eval()


@torch.no_grad()
def features(model: Classifier, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """The feature vector float32 [N, 256] of each uint8 image [N, 3, S, S]."""
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).float() / 255.0
        out.append(model.features(x.contiguous(memory_format=torch.channels_last)).numpy())
    return np.concatenate(out) if out else np.zeros((0, FEATURES), np.float32)


@torch.no_grad()
def accuracy(model: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    logits = model.head(torch.from_numpy(features(model, images)))
    return float((logits.argmax(1).numpy() == labels).mean())


def classifier_for(images: np.ndarray, labels: np.ndarray, classes: int, log=print) -> Classifier:
    """The cached classifier of these photos and labels (trained and saved on first use)."""
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    path = CACHE / f"classifier-{images.shape[-1]}px-{digest[:16]}.pt"
    model = Classifier(classes)
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    log(f"training the species classifier on {len(images)} photos "
        f"of {classes} species (cached in {path})")  # fmt: skip
    model = train(images, labels, classes, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def main() -> None:
    from birdvae.training.data import load_splits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    splits = load_splits(args.data, args.image_size, cache_dir=CACHE)
    model = classifier_for(splits.train, splits.train_labels, len(splits.classes))
    chance = 1 / len(splits.classes)
    print(f"species accuracy: train {accuracy(model, splits.train, splits.train_labels):.1%}, "
          f"validation {accuracy(model, splits.val, splits.val_labels):.1%} "
          f"(chance {chance:.1%})")  # fmt: skip


if __name__ == "__main__":
    main()
