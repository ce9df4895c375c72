"""Training: data, the VAE, its likelihood, the loop and checkpoints (needs the train extra)."""
