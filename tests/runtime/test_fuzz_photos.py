"""Damaged photos of many formats through both photo loaders (bird-gen's and training's, which
share runtime/photos.py): each must give a prepared image or an ImageError naming the file,
never another exception. The damage is seeded, so a failure reproduces."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdvae.runtime import photos
from birdvae.runtime.photos import ImageError
from birdvae.training import data

# PIL warns of what it skips in a damaged TIFF's tags before it decodes or gives up; what
# counts here is the image or the ImageError that follows.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")

SIZE = 8
# (format, mode, save options): whatever PIL can write, so it can also be read, and broken.
FORMATS = [
    ("PNG", "RGBA", {}),
    ("PNG", "I;16", {}),
    ("PNG", "P", {"transparency": 0}),
    ("JPEG", "RGB", {}),
    ("JPEG", "CMYK", {}),
    ("GIF", "P", {}),
    ("BMP", "RGB", {}),
    ("TIFF", "RGB", {"compression": "tiff_lzw"}),
    ("TIFF", "F", {}),
    ("WEBP", "RGB", {}),
    ("ICO", "RGBA", {}),
    ("PPM", "RGB", {}),
    ("TGA", "RGBA", {}),
    ("PCX", "RGB", {}),
    ("DDS", "RGBA", {}),
    ("SGI", "RGB", {}),
    ("JPEG2000", "RGB", {}),
    ("SPIDER", "F", {}),
    ("XBM", "1", {}),
    ("MSP", "1", {}),
    ("BLP", "P", {}),
    ("QOI", "RGB", {}),
    ("ICNS", "RGBA", {}),
]
MUTATIONS = 24  # damaged copies of each file: cut short, bytes flipped, header overwritten


def _original(fmt: str, mode: str, options: dict) -> bytes | None:
    """A small photo written in ``fmt``, or None where this PIL cannot write it."""
    pixels = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    try:
        Image.fromarray(pixels).convert(mode).save(buffer, fmt, **options)
    except (OSError, KeyError, ValueError):
        return None
    return buffer.getvalue()


def _damaged(original: bytes, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    data = bytearray(original)
    kind = seed % 3
    if kind == 0:  # cut short
        return bytes(data[: int(rng.integers(0, len(data)))])
    if kind == 1:  # a few bytes flipped anywhere
        for position in rng.integers(0, len(data), int(rng.integers(1, 8))):
            data[position] ^= int(rng.integers(1, 256))
        return bytes(data)
    start = int(rng.integers(0, min(len(data), 64)))  # the header: sizes, offsets, counts
    data[start : start + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff"])
    return bytes(data)


LOADERS = {
    "runtime": lambda path: photos.load_image(path, SIZE),
    "training-centre": lambda path: data.load_image(path, SIZE),
    "training-squash": lambda path: data.load_image(path, SIZE, crop="squash"),
    "training-box": lambda path: data.load_image(path, SIZE, box=(2.0, 2.0, 9.0, 7.0)),
}


@pytest.mark.parametrize("loader", LOADERS, ids=LOADERS)
def test_damaged_photos_load_or_raise_image_error(tmp_path: Path, loader: str) -> None:
    load = LOADERS[loader]
    escaped, written, read = [], 0, 0
    for fmt, mode, options in FORMATS:
        original = _original(fmt, mode, options)
        if original is None:
            continue
        written += 1
        path = tmp_path / f"photo.{fmt.lower()}"
        path.write_bytes(original)
        if fmt not in photos.PHOTO_FORMATS:  # refused whole, before its parser runs
            with pytest.raises(ImageError, match="not a photo in a format bird-vae reads"):
                load(path)
            continue
        assert load(path).dtype == np.uint8, fmt  # the undamaged file loads
        read += 1
        for seed in range(MUTATIONS):
            path.write_bytes(_damaged(original, seed))
            try:
                image = load(path)
            except ImageError as exc:
                assert str(path) in str(exc)
                continue
            except Exception as exc:
                escaped.append(f"{fmt} {mode} seed {seed}: {type(exc).__name__}: {exc}")
                continue
            assert image.dtype == np.uint8 and sorted(image.shape) == [3, SIZE, SIZE], seed
    assert written >= len(FORMATS) // 2, "this PIL writes too few formats to fuzz"
    assert read >= len(photos.PHOTO_FORMATS) - 1, "this PIL reads too few photo formats"
    assert escaped == [], "\n".join(escaped)


def test_a_postscript_photo_is_never_handed_to_ghostscript(tmp_path: Path) -> None:
    """PIL opens EPS by running Ghostscript where it is installed; a photo is refused at
    identification instead, whichever programs the machine has."""
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n")
    with pytest.raises(ImageError, match="not a photo in a format bird-vae reads"):
        photos.load_image(path, SIZE)
