"""Pixels out: figure geometry to the pixel, PNGs that PIL reads back exactly, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdvae.runtime import images
from birdvae.runtime.images import GUTTER


def _tiles(n: int, size: int = 4) -> np.ndarray:
    """n flat tiles with distinct colours, none of them the white gutter."""
    colours = np.stack([np.arange(n) % 251, np.arange(n) // 251, np.full(n, 7)], axis=1)
    return np.broadcast_to(colours[:, None, None, :], (n, size, size, 3)).astype(np.uint8)


@pytest.mark.parametrize(
    ("n", "scale", "rows", "cols"),
    [(1, 1, 1, 1), (1, 8, 1, 1), (7, 1, 3, 3), (7, 4, 3, 3), (64, 1, 8, 8), (64, 2, 8, 8)],
)
def test_grid_geometry(n: int, scale: int, rows: int, cols: int) -> None:
    size = 4
    figure = images.grid(_tiles(n, size), scale)
    side = size * scale
    assert images.grid_shape(n) == (rows, cols)
    assert figure.shape == (rows * side + (rows + 1) * GUTTER, cols * side + (cols + 1) * GUTTER, 3)
    assert figure.dtype == np.uint8
    for i in range(n):
        row, col = divmod(i, cols)
        top, left = GUTTER + row * (side + GUTTER), GUTTER + col * (side + GUTTER)
        block = figure[top : top + side, left : left + side]
        assert (block == _tiles(n, size)[i, 0, 0]).all(), f"tile {i} misplaced"
    # Gutters and the empty cells of the last row are background.
    assert (figure != 255).any(axis=2).sum() == n * side * side


def test_grid_of_1_7_64_has_the_documented_pixel_sizes() -> None:
    # S = 16, scale 8: each tile 128 px, 2 px gutters around and between tiles.
    assert images.grid(_tiles(1, 16), 8).shape[:2] == (132, 132)
    assert images.grid(_tiles(7, 16), 8).shape[:2] == (3 * 128 + 8, 3 * 128 + 8)
    assert images.grid(_tiles(64, 16), 8).shape[:2] == (8 * 128 + 18, 8 * 128 + 18)


def test_upscale_is_nearest_neighbour() -> None:
    tile = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    big = images.upscale(tile, 3)
    assert big.shape == (6, 6, 3)
    np.testing.assert_array_equal(big[::3, ::3], tile)
    np.testing.assert_array_equal(big[2, 2], tile[0, 0])
    np.testing.assert_array_equal(big[3, 5], tile[1, 1])


def test_row_and_pairs_layouts() -> None:
    tiles = _tiles(5)
    assert images.row(tiles, 2).shape[:2] == (8 + 2 * GUTTER, 5 * 8 + 6 * GUTTER)
    originals, reconstructions = _tiles(3), _tiles(3)[::-1]
    figure = images.pairs(originals, reconstructions, 1)
    assert images.pairs_shape(3) == (2, 3)
    assert figure.shape[:2] == (2 * 4 + 3 * GUTTER, 3 * 4 + 4 * GUTTER)
    for i in range(3):
        left = GUTTER + i * (4 + GUTTER)
        assert (figure[GUTTER, left] == originals[i, 0, 0]).all()
        assert (figure[2 * GUTTER + 4, left] == reconstructions[i, 0, 0]).all()
    assert images.pairs_shape(50) == (2 * 5, 10)  # many photos wrap into row pairs
    assert images.pairs_shape(1) == (2, 1)  # one photo above its reconstruction, nothing blank


def test_uint8_round_trip_and_clipping() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    floats = images.from_uint8_hwc(pixels)
    assert floats.dtype == np.float32 and floats.shape == (2, 3, 5, 5)
    np.testing.assert_array_equal(images.to_uint8_hwc(floats), pixels)
    out_of_range = np.array([-0.5, 0.5, 1.5], np.float32).reshape(1, 3, 1, 1)
    assert images.to_uint8_hwc(out_of_range).tolist() == [[[[0, 128, 255]]]]


def test_psnr() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    assert images.psnr(a, a) == float("inf")
    assert images.psnr(a, a + 255) == pytest.approx(0.0)
    assert images.psnr(a, a + 1) == pytest.approx(20 * np.log10(255), rel=1e-9)
    unit = a.astype(np.float32)  # images in [0, 1], as export's int8 figures compare them
    assert images.psnr(unit, unit + 0.1, peak=1.0) == pytest.approx(20.0, rel=1e-6)
    per_image = images.psnr_of_mse(np.array([0.0, 1.0, 100.0]))
    np.testing.assert_allclose(per_image, [np.inf, 20 * np.log10(255), 20 * np.log10(25.5)])


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 5, 3), (130, 67, 3), (33, 1058, 3)])
def test_encoded_png_reads_back_exactly_and_passes_pils_checks(tmp_path: Path, shape) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    pixels[: shape[0] // 2] = pixels[0]  # repeated rows, as in upscaled tiles
    path = images.save_png(pixels, tmp_path / "a.png")
    with Image.open(path) as image:
        image.verify()  # chunk CRCs and structure
    with Image.open(path) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (shape[1], shape[0]))
        np.testing.assert_array_equal(np.asarray(image), pixels)


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((0, 4, 3), np.uint8)],
)
def test_encode_png_refuses_what_is_not_uint8_rgb(pixels: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        images.encode_png(pixels)


def test_save_png_is_deterministic_and_readable(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    images.save_png(pixels, first)
    images.save_png(pixels, second)
    assert first.read_bytes() == second.read_bytes()
    with Image.open(first) as image:
        np.testing.assert_array_equal(np.asarray(image), pixels)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png"]  # no temporary files left


def test_save_png_leaves_nothing_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "a.png"
    target.write_bytes(b"the previous figure")

    def fail(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(KeyboardInterrupt):
        images.save_png(np.zeros((4, 4, 3), np.uint8), target)
    assert os.listdir(tmp_path) == ["a.png"]
    assert target.read_bytes() == b"the previous figure"


def test_save_png_keeps_the_umask_permissions(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = images.save_png(np.zeros((2, 2, 3), np.uint8), tmp_path / "a.png")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
