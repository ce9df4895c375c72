"""Fixtures every test folder shares."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BIRDS = Path(__file__).resolve().parent / "fixtures" / "birds"

# A shell that is not interactive starts a background job (`pytest &`, `nohup pytest &`) with
# Ctrl-C ignored, and every command the tests start would inherit that: the tests of how a
# command stops on Ctrl-C would wait for a stop that never comes. Python's own handler, as in a
# terminal, gives those commands the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def bird_photos() -> Callable[[int], np.ndarray]:
    """size -> the fixture birds, centre-cropped and shrunk by area as the rating sheets show
    photos: float32 [3, 3, size, size] in [0, 1]."""

    def photos(size: int = 32) -> np.ndarray:
        out = []
        for path in sorted(BIRDS.glob("*.jpg")):
            image = Image.open(path).convert("RGB")
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            square = image.crop((left, top, left + side, top + side))
            square = square.resize((size, size), Image.BOX)
            out.append(np.asarray(square, np.float32).transpose(2, 0, 1) / 255)
        return np.stack(out)

    return photos
