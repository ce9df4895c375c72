"""Pixels: photo loading in any mode, figure geometry to the pixel, atomic deterministic PNGs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdvae.runtime import images
from birdvae.runtime.images import GUTTER, ImageError


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


def _save(image: Image.Image, path: Path, **options: object) -> Path:
    image.save(path, **options)
    return path


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "CMYK", "YCbCr", "RGBA", "1", "RGB"])
def test_load_image_makes_any_mode_rgb(tmp_path: Path, mode: str) -> None:
    path = _save(Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode), tmp_path / "a.tiff")
    pixels = images.load_image(path, 8)
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("I;16", 40000, 156), ("I", 40000, 156), ("I", 200, 200), ("F", 0.5, 128), ("F", 100.0, 100)],
)
def test_load_image_scales_deep_grayscale(tmp_path: Path, mode: str, value, expected: int) -> None:
    path = tmp_path / ("a.png" if mode == "I;16" else "a.tiff")
    _save(Image.new(mode, (12, 12), value), path)
    assert (images.load_image(path, 4) == expected).all()


def test_load_image_puts_transparency_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red
    pixels = images.load_image(_save(image, tmp_path / "a.png"), 4)
    assert (pixels == 255).all()


def test_load_image_centre_crops_to_a_square(tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    image.paste((255, 0, 0), (20, 0, 40, 20))  # red middle third: the centre square
    pixels = images.load_image(_save(image, tmp_path / "a.png"), 10)
    assert (pixels == (255, 0, 0)).all()


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the white half ends up on top
    path = _save(image, tmp_path / "a.jpg", exif=exif, quality=100)
    with Image.open(path) as reopened:
        assert reopened.size == (40, 20)
    pixels = images.load_image(path, 20).astype(int)
    assert pixels[:8].mean() > 200 and pixels[12:].mean() < 50


def test_load_image_real_photo(birds: list[Path]) -> None:
    pixels = images.load_image(birds[0], 32)
    assert pixels.shape == (32, 32, 3) and 20 < pixels.mean() < 235


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_load_image_refuses_unreadable_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bird.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=r"bird\.jpg"):
        images.load_image(path, 16)


def test_load_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        images.load_image(tmp_path / "missing.jpg", 16)


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

    monkeypatch.setattr(images.os, "replace", fail)
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
