"""Small generated image folders and a tiny model config, so training tests take seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch", reason="training tests need the train extra")

from birdvae.training.config import ModelConfig, TrainConfig


def write_images(folder: Path, count: int, size: int = 20, seed: int = 0) -> list[Path]:
    """Smooth random colour images (gradients plus a blob), so a VAE has something to learn."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(count):
        colour = rng.uniform(0, 255, (2, 3))
        cx, cy = rng.uniform(0.2, 0.8, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 20)[..., None]
        image = colour[0] * (1 - blob) + colour[1] * blob + rng.normal(0, 4, (size, size, 3))
        path = folder / f"{i:04d}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "birds"
    write_images(root / "species_a", 24, seed=1)
    write_images(root / "species_b", 24, seed=2)
    return root


def tiny_config(data: Path, **changes) -> TrainConfig:
    model = ModelConfig(
        image_size=16, latent_dim=16, encoder_width=8, encoder_max_width=16,
        decoder_width=8, decoder_max_width=16,
    )  # fmt: skip
    config = TrainConfig(
        model=model, data=[str(data)], epochs=2, batch_size=8, warmup_steps=2,
        kl_warmup_epochs=1, grid_size=4,
    )  # fmt: skip
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def as_launched_by_torchrun(monkeypatch: pytest.MonkeyPatch, world: int, rank: int = 0) -> None:
    """The variables torchrun sets for process ``rank`` of ``world``; a test that builds a
    trainer with them also stubs the process group, which no other process would join."""
    for name, value in (("WORLD_SIZE", world), ("RANK", rank), ("LOCAL_RANK", 0),
                        ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", 29500)):  # fmt: skip
        monkeypatch.setenv(name, str(value))


def quiet(_: str) -> None:
    """A training log that prints nothing."""


@pytest.fixture(scope="module")
def vae_checkpoint(tmp_path_factory) -> Path:
    """A tiny VAE trained for one epoch: what the later stages start from."""
    from birdvae.training.vae_stage import VAETrainer

    root = tmp_path_factory.mktemp("stages")
    write_images(root / "birds" / "a", 24, seed=1)
    write_images(root / "birds" / "b", 24, seed=2)
    VAETrainer(tiny_config(root / "birds", epochs=1), root / "vae", log=quiet).fit()
    return root / "vae" / "best.pt"


def tiny_stage(vae_checkpoint: Path, stage: str, **changes) -> TrainConfig:
    """A later stage's config over ``vae_checkpoint``, sized to take seconds."""
    from birdvae.training import checkpoint
    from birdvae.training.config import PriorConfig, stage_config

    init = checkpoint.config_of(checkpoint.load(vae_checkpoint))
    config = stage_config(init, stage, str(vae_checkpoint))
    config.prior = PriorConfig(width=32, blocks=2, steps=4, views=2)
    config.batch_size, config.warmup_steps = 8, 2
    for key, value in changes.items():
        setattr(config, key, value)
    return config
