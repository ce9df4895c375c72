"""The training extra (``pip install '.[train]'``): what it adds, and one clear line where it is
missing. Standard library only, so that a runtime-only install can run it and say so."""

from __future__ import annotations

import importlib.util

from birdvae.runtime.errors import UserError

# What the train extra adds that training imports (pyproject.toml); export adds onnx's two.
TRAIN_MODULES = ("torch", "torchvision", "tqdm")


def train_extra_hint(command: str) -> str:
    """The line that tells a user how to install what ``command`` needs. The package is
    installed from its source folder (README), so that is where the extra comes from too."""
    return (
        f"{command} needs the training extra: in the bird-vae folder, pip install '.[train]' "
        "(torch, torchvision, onnx, onnxscript, tqdm)"
    )


def require_train_extra(command: str, modules: tuple[str, ...] = TRAIN_MODULES) -> None:
    """One ``error:`` line with the install line (exit 2), not an ImportError's traceback, on
    a partial install."""
    if any(importlib.util.find_spec(name) is None for name in modules):
        raise UserError(train_extra_hint(command))
