"""bird-vae's torch-free runtime: sample and reconstruct birds with onnxruntime and numpy.

Importing it costs nothing: ``BirdVAE`` (and numpy) loads on first use, so that ``bird-gen``'s
first step (``entry.py``) and the other commands start at once; onnxruntime loads when a graph
is first run.
"""

import os
from typing import TYPE_CHECKING

# onnxruntime's official builds (1.25 on) collect usage telemetry on Linux and macOS too: a
# device id under ~/.cache and events sent to Microsoft. A package that runs on people's own
# photos collects nothing unless its user asks: set before onnxruntime loads; a user who
# wants onnxruntime's telemetry sets ORT_DISABLE_TELEMETRY=0.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

if TYPE_CHECKING:
    from .errors import ArgumentError, UserError
    from .format import ModelFormatError
    from .model import BirdVAE
    from .photos import ImageError

__all__ = ["ArgumentError", "BirdVAE", "ImageError", "ModelFormatError", "UserError"]

# Where each public name lives, imported on first use: the errors cost nothing, BirdVAE loads
# numpy and ImageError Pillow.
_HOMES = {
    "ArgumentError": "errors",
    "UserError": "errors",
    "ModelFormatError": "format",
    "BirdVAE": "model",
    "ImageError": "photos",
}


def __dir__() -> list[str]:  # tab completion lists the names imported on first use
    return sorted([*__all__, *(name for name in globals() if name.startswith("__"))])


def __getattr__(name: str) -> object:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
