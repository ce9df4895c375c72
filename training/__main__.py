"""``python -m birdvae.training`` is ``vae-train`` (handy under ``torchrun``)."""

from .cli import train_main

train_main()
