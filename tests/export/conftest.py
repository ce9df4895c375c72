"""Fixtures for the export tests: tiny checkpoints of both architectures, a small folder of
real bird photos, and ``vae-export`` run in this process.

The checkpoints are built, not trained: every weight is nudged off its initial value (so the
zero-initialised residual branches compute something) and the baseline's BatchNorm statistics are
randomised (so folding them is tested on non-trivial values).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BIRDS = sorted((FIXTURES / "birds").glob("*.jpg"))
TINY = dict(image_size=16, latent_dim=16, encoder_width=8, decoder_width=8,
            encoder_max_width=16, decoder_max_width=16)  # fmt: skip
BASELINE = dict(arch="baseline", image_size=32, latent_dim=16, likelihood="bernoulli")


@pytest.fixture(autouse=True)
def fewer_selector_draws(monkeypatch):
    """A --best-of selector learns from 8,192 of a tiny model's draws, not a real model's 262,144:
    enough to learn the tiny models' scores, in seconds."""
    monkeypatch.setattr("birdvae.training.selector.SELECTOR_DRAWS", 8192)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_export(*args: object) -> CliResult:
    """``vae-export ARGS`` in this process (so monkeypatches apply)."""
    from birdvae.export.cli import main

    result = CliRunner().invoke(main, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


def save_checkpoint(path: Path, model_kwargs: dict, seed: int = 0, **overrides: object) -> Path:
    """A checkpoint in training/checkpoint.py's format for a perturbed fresh model."""
    import torch

    from birdvae.training.checkpoint import CHECKPOINT_FORMAT
    from birdvae.training.config import ModelConfig, TrainConfig
    from birdvae.training.model import VAE

    torch.manual_seed(seed)
    config = TrainConfig(model=ModelConfig(**model_kwargs), seed=seed)
    model = VAE(config.model)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    weights = model.state_dict()
    state = {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "model": weights,
             "ema": weights, "epoch": 3, "metrics": {"val_bpd": 5.25}}  # fmt: skip
    state.update(overrides)
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def export_cli():
    """run(*args) -> CliResult: ``vae-export`` in this process."""
    return run_export


@pytest.fixture(scope="session")
def make_checkpoint():
    """make(path, model_kwargs, seed=0, **state_overrides) -> path."""
    return save_checkpoint


@pytest.fixture(scope="session")
def tiny_kwargs() -> dict:
    return dict(TINY)


@pytest.fixture(scope="session")
def bird_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 photos in 3 species folders: crops and mirror images of the fixture birds."""
    root = tmp_path_factory.mktemp("birds")
    for photo in BIRDS:
        species = root / photo.stem
        species.mkdir()
        with Image.open(photo) as image:
            image = image.convert("RGB")
            width, height = image.size
            for i in range(8):
                share = 0.7 + 0.04 * i
                left = int(width * (1 - share) * (i % 3) / 2)
                top = int(height * (1 - share) * (i % 2))
                crop = image.crop((left, top, left + int(width * share), top + int(height * share)))
                crop = ImageOps.mirror(crop) if i % 2 else crop
                crop.resize((40, 36)).save(species / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def resnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("resnet-run") / "last.pt", TINY)


@pytest.fixture(scope="session")
def baseline_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("baseline-run") / "last.pt", BASELINE)


@pytest.fixture(scope="session")
def exported(
    resnet_checkpoint: Path, baseline_checkpoint: Path, bird_folder: Path
) -> dict[str, tuple[Path, Path, CliResult]]:
    """Both architectures exported once for the whole session: name -> (checkpoint, folder,
    CLI result). resnet: the default folder and a 2-component prior; baseline: -o and K=1."""
    resnet = run_export(resnet_checkpoint, "--prior-data", bird_folder, "--prior-components", 2,
                        "--temperature", 0.8)  # fmt: skip
    out = baseline_checkpoint.parent / "exported"
    baseline = run_export(baseline_checkpoint, "-o", out, "--prior-data", bird_folder)
    return {
        "resnet": (resnet_checkpoint, resnet_checkpoint.parent / "model", resnet),
        "baseline": (baseline_checkpoint, out, baseline),
    }
