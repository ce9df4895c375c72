"""Fixtures every test folder shares."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BIRDS = Path(__file__).resolve().parent / "fixtures" / "birds"


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
