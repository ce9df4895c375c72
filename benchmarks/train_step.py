"""Where one training step of the default VAE spends its time, and what the weight average costs.

    python benchmarks/train_step.py [--image-size 32] [--threads 2] [--steps 20]

Times the whole ``VAETrainer.train_step`` (forward, backward, optimiser and EMA) and, apart, one
update of the EMA both ways: tensor by tensor as ``AveragedModel(avg_fn=...)`` does it (one read
of the step count per tensor: on a GPU, one host-device sync each) and as ``vae-train`` does it
(``exponential_average``: the same arithmetic over all tensors at once, one read per step and
device). The weights move between updates as in training; it checks that the two averages stay
equal bit for bit, then prints milliseconds (the time of the weight moves taken out) and how
many times faster or slower ``vae-train``'s update is. On a CPU the two are close (each is a few
memory passes over the weights); the one read per step is what a GPU saves.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.optim.swa_utils import AveragedModel

from birdvae.training.averaging import exponential_average
from birdvae.training.config import TrainConfig
from birdvae.training.vae_stage import VAETrainer


def per_tensor_rule(decay: float) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """The EMA rule written for ``AveragedModel(avg_fn=...)``, applied one tensor at a time."""

    def update(average: torch.Tensor, current: torch.Tensor, n: Any) -> torch.Tensor:
        rate = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return average + (current - average) * (1.0 - rate)

    return update


def mean_ms(work: Callable[[], None], repeats: int) -> float:
    work()
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - started) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image-size",
        type=int,
        default=32,
        choices=[32, 64],
        help="the recipe's image size to time",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch's CPU threads")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "images"
        data.mkdir()
        rng = np.random.default_rng(0)
        for i in range(80):
            pixels = rng.integers(0, 256, (args.image_size, args.image_size, 3), np.uint8)
            Image.fromarray(pixels).save(data / f"{i:03d}.png")
        config = TrainConfig(data=[str(data)], epochs=1, device="cpu")  # CPU timings
        config.model.image_size = args.image_size
        trainer = VAETrainer(config, Path(folder) / "run", log=lambda _: None)
        batch = trainer.train_images[: config.batch_size]
        step_ms = mean_ms(lambda: trainer.train_step(batch), args.steps)

        model = trainer.model
        tensors = len(list(model.parameters())) + len(list(model.buffers()))

        def move() -> None:
            with torch.no_grad():  # the weights move between updates, as in training
                for parameter in model.parameters():
                    parameter.mul_(0.999).add_(0.001)

        def averages() -> tuple[AveragedModel, AveragedModel]:
            textbook = AveragedModel(
                model, avg_fn=per_tensor_rule(config.ema_decay), use_buffers=True
            )
            return textbook, exponential_average(model, config.ema_decay)

        textbook, ours = averages()
        for average in (textbook, ours):
            average.update_parameters(model)  # the first update copies
        textbook_ms = mean_ms(lambda: (move(), textbook.update_parameters(model)), args.steps)
        ours_ms = mean_ms(lambda: (move(), ours.update_parameters(model)), args.steps)
        move_ms = mean_ms(move, args.steps)

        textbook, ours = averages()  # the same weights, step by step, for both
        for _ in range(args.steps):
            move()
            textbook.update_parameters(model)
            ours.update_parameters(model)
        pairs = zip(textbook.module.state_dict().values(), ours.module.state_dict().values())
        same = all(torch.equal(a, b) for a, b in pairs)

    print(f"default VAE at {args.image_size}x{args.image_size}, batch {config.batch_size}, "
          f"{args.threads} threads, {tensors} weight tensors")  # fmt: skip
    print(f"train_step (forward, backward, AdamW, EMA)  {step_ms:8.1f} ms")
    textbook_ms, ours_ms = textbook_ms - move_ms, ours_ms - move_ms  # the updates alone
    print(f"EMA update, tensor by tensor                 {textbook_ms:8.1f} ms")
    ratio = textbook_ms / ours_ms
    speed = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
    print(
        f"EMA update, vae-train (all tensors at once)  {ours_ms:8.1f} ms  "
        f"{speed}, {'identical' if same else 'DIFFERENT'} averages"
    )


if __name__ == "__main__":
    main()
