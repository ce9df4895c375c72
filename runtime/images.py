"""Photos in, PNGs out: everything the runtime does with pixels, and the only module using PIL.

Photos are prepared exactly as the training data was (EXIF orientation applied, any mode made
RGB with transparency on white, square centre crop, LANCZOS down to S), so a reconstruction
shows the model, not a preprocessing mismatch. Figures are laid out in uint8 [H, W, 3] arrays;
PNGs are written atomically, so an interrupted run never leaves a truncated file behind.
"""

from __future__ import annotations

import io
import math
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

GUTTER = 2  # pixels between tiles and around the figure
BACKGROUND = 255  # gutter colour: white


class ImageError(ValueError):
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


def to_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """Model images, float [N, 3, S, S] in [0, 1], to uint8 [N, S, S, 3] (rounded, clipped)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def from_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """uint8 [N, S, S, 3] pixels to the model's float32 [N, 3, S, S] in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N, S, S, 3], got {images.dtype} {list(images.shape)}")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images: what the PNGs show."""
    difference = np.asarray(reference, np.float64) - np.asarray(image, np.float64)
    mse = float(np.mean(difference**2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def figure_size(rows: int, cols: int, tile: int, scale: int) -> tuple[int, int]:
    """(height, width) of a figure of rows x cols tiles of tile x tile pixels, upscaled."""
    return (
        rows * tile * scale + (rows + 1) * GUTTER,
        cols * tile * scale + (cols + 1) * GUTTER,
    )


def _compose(
    tiles: np.ndarray, cells: Sequence[tuple[int, int]], rows: int, cols: int, scale: int
) -> np.ndarray:
    """Tiles uint8 [N, S, S, 3] placed at (row, col) cells, upscaled by nearest neighbour."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    tiles = np.asarray(tiles, dtype=np.uint8)
    side = tiles.shape[1] * scale
    canvas = np.full((*figure_size(rows, cols, tiles.shape[1], scale), 3), BACKGROUND, np.uint8)
    for tile, (row, col) in zip(tiles, cells):
        top, left = GUTTER + row * (side + GUTTER), GUTTER + col * (side + GUTTER)
        canvas[top : top + side, left : left + side] = upscale(tile, scale)
    return canvas


def upscale(tile: np.ndarray, scale: int) -> np.ndarray:
    """A uint8 [H, W, 3] tile made ``scale`` times larger, each pixel a crisp block."""
    return tile.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else tile


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of the near-square grid for n tiles."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def grid(tiles: np.ndarray, scale: int = 1) -> np.ndarray:
    """uint8 [N, S, S, 3] tiles in a near-square grid, row by row."""
    rows, cols = grid_shape(len(tiles))
    return _compose(tiles, [divmod(i, cols) for i in range(len(tiles))], rows, cols, scale)


def row(tiles: np.ndarray, scale: int = 1) -> np.ndarray:
    """uint8 [N, S, S, 3] tiles side by side in one row."""
    return _compose(tiles, [(0, i) for i in range(len(tiles))], 1, len(tiles), scale)


def pairs_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of the pairs figure for n originals: a near-square block of pairs."""
    cols = math.ceil(math.sqrt(2 * n))
    return 2 * math.ceil(n / cols), cols


def pairs(originals: np.ndarray, reconstructions: np.ndarray, scale: int = 1) -> np.ndarray:
    """Originals on even rows, each with its reconstruction directly below it.

    A few images make two rows (originals above, reconstructions below); many wrap into a
    near-square block of such row pairs.
    """
    if originals.shape != reconstructions.shape:
        raise ValueError("originals and reconstructions must have the same shape")
    n = len(originals)
    rows, cols = pairs_shape(n)
    cells = [(2 * (i // cols), i % cols) for i in range(n)]
    cells += [(r + 1, c) for r, c in cells]
    return _compose(np.concatenate([originals, reconstructions]), cells, rows, cols, scale)


PNG_COMPRESS_LEVEL = 3


def save_png(pixels: np.ndarray, path: str | Path) -> Path:
    """Write uint8 [H, W, 3] pixels as a PNG atomically: the file is whole or absent.

    The PNG is encoded in memory, written to a hidden temporary file beside the target (same
    file system) and renamed over it. The same pixels give the same bytes on every run.
    """
    path = Path(path)
    buffer = io.BytesIO()
    # zlib level 3 instead of PIL's 6: half the encoding time of a 64-bird grid, ~10% larger.
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open applies the umask to 0o666, so the PNG gets the permissions a plain write would.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    descriptor = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(buffer.getbuffer())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
