"""Export: a trained checkpoint becomes a model folder the torch-free runtime loads.

``onnx`` writes and checks the encoder and decoder graphs, ``sampler`` the learned prior's
graph (one ONNX Loop over a solver step) and ``selector`` its best-of-K choice, ``parity``
proves onnxruntime computes what PyTorch computes, ``prior`` fits the Gaussian mixture,
``quantize`` makes the optional int8 graphs, ``destination`` replaces a model folder only with
what export wrote; ``pipeline`` runs them in order into a staging folder that replaces the
destination only once every check has passed, and ``cli`` is ``vae-export``'s command line.
Needs the ``train`` extra.
"""

import birdvae.runtime  # noqa: F401  (before onnxruntime loads: see runtime/__init__.py)
