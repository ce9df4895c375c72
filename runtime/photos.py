"""Photos in: the runtime's one use of PIL, imported only by the commands that read photos, and
the one preparation of a photo that training and the runtime share.

A photo is prepared exactly as the training data was (EXIF orientation applied, any mode made
RGB with transparency on white, a square crop, LANCZOS down to S), so a reconstruction shows the
model, not a preprocessing mismatch. A photo file may be hostile: its size is checked against
MAX_PHOTO_PIXELS from the header, before anything is decoded, and whatever PIL's decoders raise
on a broken file is an ImageError naming it.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from .errors import UserError, first_line

# Pixels decoded at most (a JPEG counts at the reduced scale it is decoded at): 32 megapixels,
# a large camera's photo, take at most 0.6 GB on the way to RGB (PIL's own limit is 179).
MAX_PHOTO_PIXELS = 1 << 25
# Pixels on a side at most. PIL keeps a pointer and an allocation for every row of every copy of
# an image, so rows cost memory beyond their pixels: a 1-pixel-wide PNG of 32 megapixels took
# 1.6 GB where a square one takes 0.56 GB. A side's bound, not a row's, because the EXIF
# orientation may turn a wide photo upright; a panorama of 60,000 px stays under it.
MAX_PHOTO_SIDE = 1 << 16
# A progressive JPEG, or a baseline one that sends its colour components in separate scans, is
# decoded from a buffer of every DCT coefficient of the whole image (2 bytes a sample, at each
# component's own resolution) whatever scale it is decoded at: a 6 MB file of 40000x40000 px
# took 3 GB at an eighth of its size. Such a buffer may hold what a full-colour photo of
# MAX_PHOTO_PIXELS would, 192 MiB (a 4:2:0 photo of 64 megapixels).
MAX_COEFFICIENT_BYTES = MAX_PHOTO_PIXELS * 3 * 2
# The raster formats a photo may be in (a camera's MPO opens as JPEG, as format "MPO", whose
# first frame is a JPEG, bounded and decoded as one). PIL would otherwise also open EPS files
# by handing them to Ghostscript where it is installed, a program run on a file that may be
# hostile, and some forty formats no photo comes in, each a parser to trust.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "TGA")
JPEG_FORMATS = ("JPEG", "MPO")
# Bytes read at most from a pipe given as a photo (`/dev/stdin`, a shell's <(...)): PIL reads
# a stream it cannot seek whole, however long (`bird-gen recon /dev/stdin < <(yes)` took 2.7 GB
# before memory ran out). An uncompressed 32-megapixel photo of 16-bit channels is 192 MiB.
MAX_PHOTO_BYTES = 1 << 28
# A square crop (left, top, right, bottom) chosen from a photo's (width, height).
Region = Callable[[tuple[int, int]], tuple[int, int, int, int]]


class ImageError(UserError, ValueError):
    """A photo that cannot be read; the message names the file and the reason."""


def load_image(path: str | Path, size: int, region: Region | None = None) -> np.ndarray:
    """A photo as the model sees it: uint8 [size, size, 3].

    ``region`` picks the part to keep from the upright photo's size; None keeps the centre
    square and lets a JPEG decode at a reduced scale (much faster; at S pixels a side
    the result is about 30 dB PSNR from a whole decode's, the differences at edges).
    """
    path = Path(path)
    _check_kind(path)
    with _decoding(path):
        with warnings.catch_warnings():  # MAX_PHOTO_PIXELS is checked below, and lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open(path)
        with image:
            jpeg = image.format in JPEG_FORMATS
            if jpeg and _whole_image_coefficients(image) > MAX_COEFFICIENT_BYTES:
                width, height = image.size
                raise ImageError(
                    f"{path}: {width}x{height} px in a JPEG decoded whole (progressive, in "
                    "several scans, or an MPO) is more than a photo may take; make it smaller "
                    "first"
                )
            if region is None and jpeg:
                image.draft("RGB", (size * 2, size * 2))
            width, height = image.size
            if width * height > MAX_PHOTO_PIXELS:
                raise ImageError(
                    f"{path}: {width}x{height} px is more than the {MAX_PHOTO_PIXELS >> 20} "
                    "megapixels a photo may have; make it smaller first"
                )
            if max(width, height) > MAX_PHOTO_SIDE:
                raise ImageError(
                    f"{path}: {width}x{height} px is longer than the {MAX_PHOTO_SIDE:,} px a "
                    "photo's side may have; crop it to the bird first"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)  # a mode PIL cannot convert is this file's failing too
    left, top, right, bottom = (region or centre_square)(image.size)
    image = image.crop((left, top, right, bottom))
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8).copy()


# A descriptor this process already holds (standard input, a shell's process substitution):
# reading it cannot wait for a writer that never comes, as a named pipe's opening can.
_OPEN_DESCRIPTOR = re.compile(r"/dev/(stdin|fd/\d+)|/proc/self/fd/\d+")


def _open(path: Path) -> Image.Image:
    """The photo opened, nothing decoded yet. PIL's own limit (179 megapixels) would refuse a
    200-megapixel phone JPEG that ``draft`` decodes at an eighth of its size; MAX_PHOTO_PIXELS,
    checked after ``draft``, is the limit here, and PIL's size check is the only one skipped."""
    source = _read_descriptor(path) if _is_a_stream(path) else path
    try:
        return Image.open(source, formats=PHOTO_FORMATS)
    except Image.DecompressionBombError:
        if isinstance(source, io.BytesIO):
            head, again = source.getvalue()[:3], source
            source.seek(0)
        else:
            with open(path, "rb") as handle:
                head, again = handle.read(3), str(path)
        if head != b"\xff\xd8\xff":
            raise ImageError(
                f"{path}: more than the {MAX_PHOTO_PIXELS >> 20} megapixels a photo may have; "
                "make it smaller first"
            ) from None
        return JpegImagePlugin.JpegImageFile(again)


def _is_a_stream(path: Path) -> bool:
    """A descriptor this process holds that is not a file (a pipe, a terminal): a file given
    as ``< photo.jpg`` is opened by its name, as the same file given by name would be."""
    return _OPEN_DESCRIPTOR.fullmatch(str(path)) is not None and not path.is_file()


def _read_descriptor(path: Path) -> io.BytesIO:
    """What a pipe holds, read here and at most MAX_PHOTO_BYTES of it. PIL would read it whole,
    and PIL before 11.1 resolves ``/dev/fd/N`` to a name no one can open."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_PHOTO_BYTES + 1)
    if len(data) > MAX_PHOTO_BYTES:
        raise ImageError(f"{path}: more than the {MAX_PHOTO_BYTES >> 20} MiB a photo may be")
    return io.BytesIO(data)


def _whole_image_coefficients(image: Image.Image) -> int:
    """The bytes of DCT coefficients libjpeg holds at once to decode this JPEG: those of the
    whole image for a progressive file or one whose first scan lacks some of the frame's
    components (or whose first scan cannot be found), 0 for one decoded scan by scan."""
    layers = getattr(image, "layer", None) or [(0, 1, 1, 0)] * len(image.getbands())
    if not image.info.get("progressive") and _first_scan_components(image) == len(layers):
        return 0
    width, height = image.size
    h_max = max(h for _, h, _, _ in layers)
    v_max = max(v for _, _, v, _ in layers)
    blocks = sum(
        -(-width * h // (8 * h_max)) * -(-height * v // (8 * v_max)) for _, h, v, _ in layers
    )
    return blocks * 64 * 2


def _first_scan_components(image: Image.Image) -> int | None:
    """How many colour components the first scan of the open JPEG ``image`` holds, or None
    when that cannot be read. PIL's parser, which skips stray bytes between segments as
    libjpeg does, stops right after the first start-of-scan segment: its header is the
    ``6 + 2 Ns`` bytes before, marker and length included."""
    handle = image.fp
    end = handle.tell()
    try:
        for components in range(1, 5):  # a scan holds 1 to 4 components
            length = 6 + 2 * components
            if end - 2 - length < 0:
                break
            handle.seek(end - 2 - length)
            head = handle.read(5)
            if head == b"\xff\xda" + length.to_bytes(2, "big") + bytes([components]):
                return components
    finally:
        handle.seek(end)
    return None


def _check_kind(path: Path) -> None:
    """Refuse a named pipe, socket or device before opening it: opening a pipe no one writes
    to waits for ever. Standard input itself (``/dev/stdin``) stays readable."""
    try:
        info = os.stat(path)
    except OSError:
        return  # missing or unreadable: the decoder's error names it
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
        return
    if _OPEN_DESCRIPTOR.fullmatch(str(path)):  # /dev/stdin, <(...): already open, a writer there
        return
    raise ImageError(f"{path} is not a file but a pipe, socket or device; give a photo file")


def centre_square(size: tuple[int, int]) -> tuple[int, int, int, int]:
    width, height = size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Whatever reading and decoding the file raises, as an ImageError naming it.

    PIL's plugins raise many types on a malformed file (OSError, SyntaxError, ValueError,
    NotImplementedError, struct.error, EOFError, IndexError...), and each means only that this
    file cannot be decoded; the block holds nothing but PIL's reading of it.
    """
    try:
        yield
    except (ImageError, MemoryError):  # a photo within MAX_PHOTO_PIXELS: memory is the machine's
        raise
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{path} is a folder; give the photos in it ({path}/*.jpg, say)") from exc
    except UnidentifiedImageError as exc:  # no reader took it: another format, or a damaged one
        if _is_empty(path):
            raise ImageError(f"{path} is empty (0 bytes): not a photo") from exc
        raise ImageError(
            f"{path}: not a photo in a format bird-vae reads ({', '.join(PHOTO_FORMATS)}), or a "
            "damaged one; convert it to PNG or JPEG (HEIC, AVIF, ICO, JPEG 2000 are not read)"
        ) from exc
    except Exception as exc:
        raise ImageError(f"{path}: cannot read it as an image ({first_line(exc)})") from exc


def _is_empty(path: Path) -> bool:
    """Whether ``path`` is a regular file of no bytes: a pipe's size is 0 whatever it holds."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == 0


def _to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, CMYK and alpha images to RGB; transparency becomes white."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _deep_gray_to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("La", "RGBa"):  # premultiplied alpha (TIFF's associated alpha)
        image = image.convert(image.mode.upper())
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
    values = np.array(image, dtype=np.float32)  # one float32 copy, scaled in place
    np.nan_to_num(values, copy=False, nan=0.0)  # NaN pixels (float TIFFs) as black, not a warning
    top = float(values.max(initial=0.0))
    if image.mode.startswith("I;16") or top > 255.0:
        peak = 65535.0
    else:
        peak = 1.0 if image.mode == "F" and top <= 1.0 else 255.0
    values *= 255.0 / peak
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    return Image.fromarray(values.astype(np.uint8))
