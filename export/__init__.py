"""Export: a trained checkpoint becomes a model folder the torch-free runtime loads.

``onnx`` writes and checks the two graphs, ``parity`` proves onnxruntime computes what PyTorch
computes, ``prior`` fits the latent density the runtime samples from, ``quantize`` makes the
optional int8 graphs, and ``cli`` (``vae-export``) runs them in order into a staging folder that
replaces the destination only once every check has passed. Needs the ``train`` extra.
"""

import birdvae.runtime  # noqa: F401  (before onnxruntime loads: see runtime/__init__.py)
