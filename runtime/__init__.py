"""bird-vae's torch-free runtime: sample and reconstruct birds with onnxruntime and numpy.

Importing it costs numpy and nothing more; onnxruntime loads when a graph is first run.
"""

import os

# onnxruntime's official builds (1.25 on) collect usage telemetry on Linux and macOS too: a
# device id under ~/.cache and events sent to Microsoft. A package that runs on people's own
# photos collects nothing unless its user asks: set before onnxruntime loads; a user who
# wants onnxruntime's telemetry sets ORT_DISABLE_TELEMETRY=0.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .model import BirdVAE

__all__ = ["BirdVAE"]
