"""What the stages after the VAE share, each a ``Trainer`` over a frozen encoder, and which
Trainer runs each ``--stage``.

- ``vae`` (vae_stage.py) trains the encoder and decoder together.
- ``prior`` (prior_stage.py) trains the learned prior (prior.py) on the codes the frozen
  encoder gives of the training photos.
- ``decoder`` (decoder_stage.py, sharpen.py) fine-tunes the decoder against a discriminator.

Freezing the encoder keeps every code valid across stages: the prior learned on its codes
stays the prior of the sharpened decoder. Each stage starts from an earlier stage's
checkpoint (``config.init``) and writes checkpoints that hold everything export needs: the VAE
under ``model``/``ema`` as the VAE stage writes them, and the learned prior, when one was
trained, under ``prior_ema`` (its averaged weights, which export ships; a prior stage's own
checkpoints keep the raw ``prior`` too, to resume from).
"""

from __future__ import annotations

from typing import Any

import torch

from birdvae.runtime import selection

from . import checkpoint
from .checkpoint import JUDGE
from .loop import Trainer, TrainingError

VAL_LEVELS = 8  # noise levels the validation loss is averaged over (quantiles of training's)
RATER_SHA = "rater_sha256"  # checkpoint key: the rater a stage's loss or data came from
GUIDE_SHA = "guide_sha256"  # checkpoint key: the --prior-guide file a decoder stage drew with
# The rater every checkpoint written before RATER_SHA existed followed (models/rater32's card).
FIRST_RATER_SHA256 = "628a549dcbc869f617ee93e424f850b409ac4c5fa569ac744c81065d277c47f3"


def load_init(path: str) -> dict[str, Any]:
    """The checkpoint a stage starts from, read with checkpoint.load's checks; what the stage
    needs of it (a prior, a judge) each stage checks itself."""
    if not path:
        raise TrainingError("this stage starts from a trained checkpoint: pass --init CKPT")
    return checkpoint.load(path)


def start_state(trainer: Trainer) -> dict[str, Any]:
    """What a stage builds its frozen networks from: the init checkpoint on a new run, and on
    a resume the run's own ``last.pt``, which carries them. A resume never re-reads --init: it
    may have moved, or been trained on since, and its encoder would then no longer be the one
    the run's codes came from."""
    state = trainer.resume_state
    return state if state is not None else load_init(trainer.config.init)


def frozen_vae(state: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """The init checkpoint's VAE (its weight average when it has one), frozen, in eval mode."""
    model = checkpoint.build_vae(state)
    model.to(device, memory_format=torch.channels_last).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def judge_weights(init: dict[str, Any], rater_weight: float) -> dict[str, Any] | None:
    """The VAE weights a ``vae-export --best-of`` selector judges draws by, for the checkpoint
    this stage writes. A decoder that learned the rater's term pleases the rater in ways raters
    do not see, and a selector taught by its pictures chooses those; so once a stage learns the
    term, the VAE as it was before (the init's weights) is carried in every later checkpoint
    under ``JUDGE``. None: no stage so far learned it, and the exported decoder judges."""
    if JUDGE in init:
        return init[JUDGE]
    if rater_weight > 0:
        return checkpoint.vae_weights(init)
    return None


def check_same_rater(state: dict[str, Any]) -> None:
    """Refuse to resume a stage whose loss (``--rater-weight``) or data (``--prior-keep``) came
    from another rater than the installed one: the run would change its objective mid-way."""
    followed = state.get(RATER_SHA, FIRST_RATER_SHA256)
    if followed != selection.RATER_SHA256:
        raise TrainingError(
            f"this run followed the rater with sha256 {followed}, but the installed "
            f"models/rater32/rater.onnx is {selection.RATER_SHA256}: resume it where that file "
            "is the rater it followed"
        )


def trainer_class(stage: str) -> type[Trainer]:
    """The Trainer that runs ``stage`` (imported here: each stage's module imports this one)."""
    from .decoder_stage import DecoderTrainer
    from .prior_stage import PriorTrainer
    from .vae_stage import VAETrainer

    classes: dict[str, type[Trainer]] = {
        "vae": VAETrainer,
        "prior": PriorTrainer,
        "decoder": DecoderTrainer,
    }
    if stage not in classes:
        raise TrainingError(f"unknown stage {stage!r} (choose {', '.join(classes)})")
    return classes[stage]
