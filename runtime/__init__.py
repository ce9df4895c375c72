"""bird-vae's torch-free runtime: sample and reconstruct birds with onnxruntime and numpy.

Importing it costs numpy and nothing more; onnxruntime loads when a graph is first run.
"""

from .model import BirdVAE

__all__ = ["BirdVAE"]
