"""Pixels out: model images to uint8, figures laid out in arrays, and PNGs written atomically.

numpy and the standard library only. PNGs are encoded here with zlib rather than through PIL:
``bird-gen`` samples without reading a photo, and PIL's import plus the image plugins its
``save`` loads cost about 35 ms of a 0.3 s run. An interrupted run never leaves a truncated file.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import durable

GUTTER = 2  # pixels between tiles and around the figure
BACKGROUND = 255  # gutter colour: white


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


def psnr(reference: np.ndarray, image: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of ``image`` against ``reference``, over all their
    values: uint8 images (what the PNGs show) by default, images in [0, 1] with ``peak=1``."""
    difference = np.asarray(reference, np.float64) - np.asarray(image, np.float64)
    return float(psnr_of_mse(np.mean(difference**2), peak))


def psnr_of_mse(mse: float | np.ndarray, peak: float = 255.0) -> np.ndarray:
    """PSNR in dB for each mean squared error; infinite where an image is exact."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(peak**2 / np.asarray(mse, np.float64))


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
    """(rows, cols) of the pairs figure for n originals: a near-square block of pairs, never
    wider than the photos (one photo is one column, not two with one blank)."""
    cols = min(n, math.ceil(math.sqrt(2 * n)))
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


def save_png(
    pixels: np.ndarray, path: str | Path, before_replace: Callable[[], object] | None = None
) -> Path:
    """Write uint8 [H, W, 3] pixels as a PNG atomically: the file is whole or absent;
    ``before_replace`` may refuse the rename into place by raising (durable.write_atomic).

    Encoded in memory, then written through a locked temporary beside the target and renamed
    over it (``durable.write_atomic``), without fsync: a PNG can be drawn again from its seed,
    and an fsync per file would make ``--separate`` fifty times slower. The same pixels give the
    same bytes on every run.
    """
    path = Path(path)
    durable.write_bytes_atomic(path, encode_png(pixels), sync=False, before_replace=before_replace)
    return path


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# zlib level 3, measured on a 64-bird grid after the Up filter: 10 ms and 237 kB, against
# 14 ms / 246 kB at level 1 and 20 ms / 208 kB at level 6 (PIL's default level: 195 kB).
PNG_COMPRESS_LEVEL = 3


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W, 3] pixels as the bytes of an 8-bit RGB PNG (PNG spec, ISO/IEC 15948)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise ValueError(
            f"expected uint8 [H, W, 3] pixels, got {pixels.dtype} {list(pixels.shape)}"
        )
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, 3 * width)
    # Each scanline: filter type 2 ("Up", each byte minus the one above, mod 256), then the
    # bytes. Upscaled tiles repeat every row ``scale`` times, which Up turns into zeros.
    scanlines = np.full((height, 1 + 3 * width), 2, np.uint8)
    scanlines[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=scanlines[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, no interlace
    compressed = zlib.compress(scanlines.tobytes(), PNG_COMPRESS_LEVEL)
    return b"".join([
        PNG_SIGNATURE, _chunk(b"IHDR", header), SOFTWARE_CHUNK, _chunk(b"IDAT", compressed),
        _chunk(b"IEND", b""),
    ])  # fmt: skip


def is_png(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts as a PNG does."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


def written_by_bird_gen(path: str | Path) -> bool:
    """Whether ``path`` is a PNG this package wrote (its Software chunk right after the
    header), which a command may replace without being asked: never a file of the user's."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(PNG_SIGNATURE) + IHDR_CHUNK_BYTES + len(SOFTWARE_CHUNK))
    except OSError:
        return False
    after_header = len(PNG_SIGNATURE) + IHDR_CHUNK_BYTES
    return head.startswith(PNG_SIGNATURE) and head[after_header:] == SOFTWARE_CHUNK


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


IHDR_CHUNK_BYTES = 25  # length, type, 13 bytes of header, CRC
# PNG's registered keyword for the program that made the file: what marks a PNG as ours.
SOFTWARE_CHUNK = _chunk(b"tEXt", b"Software\x00bird-gen")
