"""Photos in: the runtime's one use of PIL, imported only by the commands that read photos.

Photos are prepared exactly as the training data was (EXIF orientation applied, any mode made
RGB with transparency on white, square centre crop, LANCZOS down to S), so a reconstruction
shows the model, not a preprocessing mismatch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import UserError


class ImageError(UserError, ValueError):
    """A photo that cannot be read; the message names the file and the reason."""


def load_image(path: str | Path, size: int) -> np.ndarray:
    """A photo as the model sees it: uint8 [size, size, 3]."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (size * 2, size * 2))  # decode at reduced scale: much faster
            image = _to_rgb(ImageOps.exif_transpose(image))
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
            image = image.resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(image, dtype=np.uint8).copy()
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL reports unreadable or truncated files as OSError (UnidentifiedImageError), and
        # some broken headers as ValueError or SyntaxError.
        raise ImageError(f"{path}: cannot read it as an image ({exc})") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, CMYK and alpha images to RGB; transparency becomes white."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _deep_gray_to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def _deep_gray_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grayscale to 8-bit: PIL's own conversion clips them to white.

    16-bit files span 0..65535; 32-bit integer and float images carry no range, so values up to
    255 (floats: up to 1) are read as 8-bit (unit) scaled, larger ones as 16-bit.
    """
    values = np.asarray(image, dtype=np.float64)
    top = float(values.max(initial=0.0))
    if image.mode.startswith("I;16") or top > 255.0:
        peak = 65535.0
    else:
        peak = 1.0 if image.mode == "F" and top <= 1.0 else 255.0
    return Image.fromarray(np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8))
