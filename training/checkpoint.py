"""Checkpoints: plain tensors and JSON-able values, written atomically, read with
``weights_only=True`` (a checkpoint is data, never code).

A checkpoint holds ``config`` (TrainConfig as a dict), ``model`` and ``ema`` state dicts,
``optimizer``, ``scheduler``, ``epoch`` (epochs completed), ``step``, ``best_val_bpd``,
``rng`` (torch CPU and CUDA generator states), ``metrics`` (the last epoch's figures) and
``format`` (this module's version).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .model import VAE

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "config", "model", "epoch")


class CheckpointError(ValueError):
    """A file that is not a readable bird-vae checkpoint; the message says why."""


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or kill at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and sanity-check a checkpoint; raise CheckpointError with a clear reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(
            f"{path} is not a readable checkpoint: corrupt, truncated or another format"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text suggests weights_only=False, which would run code from the file.
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values; it is not loaded"
        ) from exc
    except (zipfile.BadZipFile, RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint: {type(exc).__name__}") from exc
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a bird-vae checkpoint (missing keys)")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format']}, expected {CHECKPOINT_FORMAT}"
        )
    return state


def config_of(state: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig.from_dict(state["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint config is invalid: {exc}") from exc


def load_model(path: Path, ema: bool = True) -> tuple[VAE, TrainConfig, dict[str, Any]]:
    """Rebuild the model a checkpoint describes, in eval mode on the CPU.

    ``ema`` picks the weight average when the checkpoint has one (it is what evaluation,
    samples and export use). Returns the model, its config and the raw checkpoint.
    """
    state = load(path)
    config = config_of(state)
    try:
        model = VAE(config.model)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint describes an invalid model: {exc}") from exc
    weights = state.get("ema") if ema and state.get("ema") else state["model"]
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__
        raise CheckpointError(f"checkpoint weights do not fit its model: {detail}") from exc
    return model.eval(), config, state
