"""Photos in: any mode becomes RGB, centre-cropped and upright; bad files are clear errors."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, UnidentifiedImageError

from birdvae.runtime import photos
from birdvae.runtime.photos import ImageError


def _save(image: Image.Image, path: Path, **options: object) -> Path:
    image.save(path, **options)
    return path


ORANGE = (200, 100, 50)
ORANGE_GRAY = 124  # ITU-R 601 luma of ORANGE, as PIL's "L" conversion gives it


def _orange(mode: str) -> Image.Image:
    image = Image.new("RGB", (40, 30), ORANGE)
    if mode in ("P", "PA"):  # an adaptive palette holds the colour itself, undithered
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    return image.convert(mode)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "CMYK", "YCbCr", "RGBA", "1", "RGB"])
def test_load_image_makes_any_mode_rgb(tmp_path: Path, mode: str) -> None:
    # LZW: Pillow 11 cannot read back its own uncompressed YCbCr TIFF (its subsampling tags).
    path = _save(_orange(mode), tmp_path / "a.tiff", compression="tiff_lzw")
    pixels = photos.load_image(path, 8).astype(int)
    assert pixels.shape == (8, 8, 3)
    if mode in ("L", "LA"):
        assert (pixels == ORANGE_GRAY).all()
    elif mode == "1":  # dithered black and white: gray everywhere, the right gray on average
        assert (pixels == pixels[..., :1]).all() and abs(pixels.mean() - ORANGE_GRAY) < 16
    else:  # colour channels in the right order, whatever the file's mode
        assert (np.abs(pixels - ORANGE) <= 2).all(), pixels[0, 0]


@pytest.mark.parametrize("mode", ["LA", "PA", "P"])
def test_load_image_puts_any_kind_of_transparency_on_white(tmp_path: Path, mode: str) -> None:
    if mode == "P":  # a palette entry marked transparent, as GIFs and palette PNGs mark it
        image = Image.new("P", (20, 20), 1)
        image.putpalette([0, 0, 0, *ORANGE])
        path = _save(image, tmp_path / "a.png", transparency=1)
    else:  # made in its mode: Pillow 11's RGBA -> PA conversion drops the alpha
        image = Image.new(mode, (20, 20), (1, 0) if mode == "PA" else (ORANGE_GRAY, 0))
        if mode == "PA":
            image.putpalette([0, 0, 0, *ORANGE])
        path = _save(image, tmp_path / "a.tiff", compression="tiff_lzw")
    assert Image.open(path).mode == mode
    assert (photos.load_image(path, 4) == 255).all()


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("I;16", 40000, 156), ("I", 40000, 156), ("I", 200, 200), ("F", 0.5, 128), ("F", 100.0, 100)],
)
def test_load_image_scales_deep_grayscale(tmp_path: Path, mode: str, value, expected: int) -> None:
    path = tmp_path / ("a.png" if mode == "I;16" else "a.tiff")
    _save(Image.new(mode, (12, 12), value), path)
    assert (photos.load_image(path, 4) == expected).all()


def test_load_image_puts_transparency_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red
    pixels = photos.load_image(_save(image, tmp_path / "a.png"), 4)
    assert (pixels == 255).all()


def _tiff_with_associated_alpha(path: Path, gray: int, alpha: int, side: int = 8) -> None:
    """A grayscale TIFF whose extra sample is premultiplied (associated) alpha, which Pillow
    opens as mode "La" and cannot convert to RGB directly."""
    import struct

    pixels = bytes([gray, alpha]) * side * side
    header = 8 + 2 + 12 * 10 + 4  # the directory's ten entries, then the pixels
    short = [(256, side), (257, side), (259, 1), (262, 1), (277, 2), (278, side), (338, 1)]
    entries = {tag: struct.pack("<HHIHH", tag, 3, 1, value, 0) for tag, value in short}
    # bits per sample: two 8s, held in the entry itself; where the pixels are, and how many
    entries[258] = struct.pack("<HHIHH", 258, 3, 2, 8, 8)
    entries[273] = struct.pack("<HHII", 273, 4, 1, header)
    entries[279] = struct.pack("<HHII", 279, 4, 1, len(pixels))
    directory = b"".join(entries[tag] for tag in sorted(entries))
    path.write_bytes(b"II*\x00" + struct.pack("<IH", 8, 10) + directory + bytes(4) + pixels)


def test_premultiplied_alpha_is_put_on_white_like_any_alpha(tmp_path: Path) -> None:
    """A TIFF with associated alpha (Pillow's mode "La") was a traceback in every command."""
    path = tmp_path / "odd.tif"
    _tiff_with_associated_alpha(path, gray=100, alpha=200)
    try:
        mode = Image.open(path).mode
    except UnidentifiedImageError:  # an older Pillow does not read associated alpha at all
        with pytest.raises(ImageError, match=r"odd\.tif: not a photo in a format bird-vae reads"):
            photos.load_image(path, 8)
        return
    assert mode == "La"
    pixels = photos.load_image(path, 8).astype(int)
    # 100 premultiplied by 200/255 is gray 127.5 at 78% cover: 100 + 55 of white's 255
    assert np.abs(pixels - 155).max() <= 2


def test_a_mode_pil_cannot_make_rgb_is_this_photos_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "bird.png"
    Image.new("RGB", (8, 8)).save(path)

    def unconvertible(image: Image.Image) -> Image.Image:
        raise ValueError("conversion from La to L not supported")

    monkeypatch.setattr(photos, "_to_rgb", unconvertible)
    with pytest.raises(ImageError, match=r"bird\.png: cannot read it as an image"):
        photos.load_image(path, 8)


def test_running_out_of_memory_while_decoding_is_not_blamed_on_the_photo(tmp_path, monkeypatch):
    path = tmp_path / "bird.png"
    Image.new("RGB", (8, 8)).save(path)

    def no_memory(image: Image.Image) -> Image.Image:
        raise MemoryError

    monkeypatch.setattr(photos, "_to_rgb", no_memory)
    with pytest.raises(MemoryError):
        photos.load_image(path, 8)


def test_load_image_centre_crops_to_a_square(tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    image.paste((255, 0, 0), (20, 0, 40, 20))  # red middle third: the centre square
    pixels = photos.load_image(_save(image, tmp_path / "a.png"), 10)
    assert (pixels == (255, 0, 0)).all()


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the white half ends up on top
    path = _save(image, tmp_path / "a.jpg", exif=exif, quality=100)
    with Image.open(path) as reopened:
        assert reopened.size == (40, 20)
    pixels = photos.load_image(path, 20).astype(int)
    assert pixels[:8].mean() > 200 and pixels[12:].mean() < 50


def test_load_image_real_photo(birds: list[Path]) -> None:
    pixels = photos.load_image(birds[0], 32)
    assert pixels.shape == (32, 32, 3) and 20 < pixels.mean() < 235


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_load_image_refuses_unreadable_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bird.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=r"bird\.jpg"):
        photos.load_image(path, 16)


def test_load_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        photos.load_image(tmp_path / "missing.jpg", 16)


def test_a_jpeg_beyond_pils_own_limit_decodes_at_a_reduced_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 200-megapixel phone JPEG met PIL's limit (179 megapixels) before draft could shrink
    it; other formats that large get this project's message, not PIL's. Both limits are scaled
    down here (PIL's to 1,000 pixels, ours to 5,000) so that small files stand for large ones."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(photos, "MAX_PHOTO_PIXELS", 5000)
    colour = (200, 40, 10)
    jpeg = _save(Image.new("RGB", (160, 120), colour), tmp_path / "phone.jpg", quality=95)
    pixels = photos.load_image(jpeg, 8)
    assert pixels.shape == (8, 8, 3) and np.abs(pixels.astype(int) - colour).max() <= 4
    png = _save(Image.new("RGB", (160, 120), colour), tmp_path / "scan.png")
    with pytest.raises(ImageError, match=r"scan\.png: more than .* make it smaller first"):
        photos.load_image(png, 8)


@pytest.mark.parametrize("size", [(1, (1 << 16) + 1), ((1 << 16) + 1, 1)])
def test_a_photo_longer_than_a_side_may_be_is_refused_before_decoding(
    tmp_path: Path, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIL pays for every row of every copy, so a thin photo within MAX_PHOTO_PIXELS took three
    times a square one's memory; either side is bounded, since EXIF may turn a photo upright."""
    path = _save(Image.new("RGB", size, (10, 200, 40)), tmp_path / "thin.png")

    def no_decoding(*_: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match=r"thin\.png: .* longer than the 65,536 px .* crop it"):
        photos.load_image(path, 8)


def _separate_scans_jpeg(path: Path, width: int, height: int) -> Path:
    """A grey baseline (SOF0) JPEG of three components sent one scan each, which libjpeg
    decodes from a buffer of the whole image's coefficients; every coefficient is 0."""

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", marker, len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15) + b"\x00"  # a Huffman table of one 1-bit code: 0
    data = b"\xff\xd8" + segment(0xFFDB, b"\x00" + bytes([1] * 64))
    data += segment(0xFFC0, struct.pack(">BHHB", 8, height, width, 3)
                    + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3)))  # fmt: skip
    data += segment(0xFFC4, b"\x00" + one_code + b"\x10" + one_code)
    blocks = -(-width // 8) * -(-height // 8)
    for component in (1, 2, 3):
        data += segment(0xFFDA, bytes([1, component, 0, 0, 63, 0]))
        data += bytes(-(-blocks * 2 // 8))  # each block: DC 0, then end of block
    path.write_bytes(data + b"\xff\xd9")
    return path


def test_a_jpeg_decoded_whole_is_bounded_by_its_coefficients(tmp_path: Path, monkeypatch) -> None:
    """libjpeg holds every coefficient of the whole image for a progressive JPEG, or one whose
    components come in separate scans, whatever scale it decodes at; the reduced-scale decode
    that lets a large baseline JPEG in does not bound those. The limit is scaled down here."""
    picture = Image.new("RGB", (160, 120), (200, 40, 10))
    baseline = _save(picture, tmp_path / "baseline.jpg", subsampling=0)
    progressive = _save(picture, tmp_path / "progressive.jpg", progressive=True, subsampling=0)
    separate = _separate_scans_jpeg(tmp_path / "separate.jpg", 160, 120)
    whole = 160 * 120 * 3 * 2  # three full-resolution components, 2 bytes a coefficient
    monkeypatch.setattr(photos, "MAX_COEFFICIENT_BYTES", whole - 1)
    assert photos.load_image(baseline, 8).shape == (8, 8, 3)
    for path in (progressive, separate):
        with pytest.raises(ImageError, match=r"160x120 px in a JPEG decoded whole"):
            photos.load_image(path, 8)
    monkeypatch.setattr(photos, "MAX_COEFFICIENT_BYTES", whole)
    monkeypatch.setattr(photos, "MAX_PHOTO_PIXELS", 5000)  # under the pixels, as decoded
    assert photos.load_image(progressive, 8).shape == (8, 8, 3)
    assert np.abs(photos.load_image(separate, 8).astype(int) - 128).max() <= 1  # grey


def test_a_first_scan_behind_stray_bytes_is_the_one_counted(tmp_path: Path, monkeypatch) -> None:
    """libjpeg skips the bytes FF 00 between segments: a one-component scan placed after them
    is its first scan (so it decodes the whole image's coefficients), whatever a parser that
    read FF 00 as a marker with a length would find after it."""

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", marker, len(payload) + 2) + payload

    first = segment(0xFFDA, bytes([1, 1, 0, 0, 63, 0]))
    data = b"\xff\xd8" + segment(0xFFDB, b"\x00" + bytes([1] * 64))
    data += segment(0xFFC0, struct.pack(">BHHB", 8, 120, 160, 3)
                    + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3)))  # fmt: skip
    data += b"\xff\x00" + struct.pack(">H", len(first) + 2) + first
    data += segment(0xFFDA, bytes([3, 1, 0, 2, 0, 3, 0, 0, 63, 0])) + bytes(64) + b"\xff\xd9"
    disguised = tmp_path / "disguised.jpg"
    disguised.write_bytes(data)
    monkeypatch.setattr(photos, "MAX_COEFFICIENT_BYTES", 160 * 120 * 3 * 2 - 1)
    with pytest.raises(ImageError, match=r"160x120 px in a JPEG decoded whole"):
        photos.load_image(disguised, 8)


def test_a_cameras_mpo_is_bounded_and_decoded_as_the_jpeg_it_starts_with(tmp_path, monkeypatch):
    """An MPO (two JPEGs, as stereo and some phone cameras write) opens as format "MPO": its
    first frame decodes at a reduced scale like any JPEG, and, its scans unknown, counts as
    decoded whole against the coefficient bound."""
    front, back = Image.new("RGB", (160, 120), (200, 40, 10)), Image.new("RGB", (160, 120))
    mpo = _save(front, tmp_path / "camera.mpo", save_all=True, append_images=[back])
    monkeypatch.setattr(photos, "MAX_PHOTO_PIXELS", 5000)  # under the pixels, as decoded
    pixels = photos.load_image(mpo, 8)
    assert np.abs(pixels.astype(int) - (200, 40, 10)).max() <= 4  # the first frame
    monkeypatch.setattr(photos, "MAX_COEFFICIENT_BYTES", 1000)
    with pytest.raises(ImageError, match=r"160x120 px in a JPEG decoded whole"):
        photos.load_image(mpo, 8)


def test_an_endless_pipe_is_read_only_as_far_as_a_photo_may_be(monkeypatch) -> None:
    """PIL reads a stream it cannot seek whole: `bird-gen recon /dev/stdin < <(yes)` took
    2.7 GB before memory ran out. A descriptor is now read here, at most MAX_PHOTO_BYTES."""
    import os
    import threading

    monkeypatch.setattr(photos, "MAX_PHOTO_BYTES", 1 << 20)
    read_end, write_end = os.pipe()

    def write_for_ever() -> None:
        try:
            while True:
                os.write(write_end, b"y\n" * 4096)
        except OSError:  # the reader closed its end
            pass
        finally:
            os.close(write_end)

    writer = threading.Thread(target=write_for_ever, daemon=True)
    writer.start()
    try:
        with pytest.raises(ImageError, match=r"/dev/fd/\d+: more than the 1 MiB a photo may be"):
            photos.load_image(f"/dev/fd/{read_end}", 8)
    finally:
        os.close(read_end)
        writer.join(5)
    assert not writer.is_alive()


def test_a_photo_file_given_as_a_descriptor_is_read_as_by_its_name(monkeypatch) -> None:
    """`< photo.jpg` hands over a file, not a stream: it is opened by name, so the pipe's byte
    bound never judges the same file otherwise than its name would."""
    import os

    from .conftest import BIRDS

    monkeypatch.setattr(photos, "MAX_PHOTO_BYTES", 1)
    fd = os.open(BIRDS[0], os.O_RDONLY)
    try:
        np.testing.assert_array_equal(
            photos.load_image(f"/dev/fd/{fd}", 16), photos.load_image(BIRDS[0], 16)
        )
    finally:
        os.close(fd)


def test_an_empty_file_is_named_as_empty_and_a_pipe_is_not(tmp_path: Path) -> None:
    """A pipe's size reads 0 whatever it holds: text piped in is not a photo, not empty."""
    import os

    path = tmp_path / "photo.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"photo\.jpg is empty \(0 bytes\): not a photo"):
        photos.load_image(path, 8)
    read_end, write_end = os.pipe()
    os.write(write_end, b"some notes, not a photo")
    os.close(write_end)
    try:
        with pytest.raises(ImageError, match="not a photo in a format bird-vae reads"):
            photos.load_image(f"/dev/fd/{read_end}", 8)
    finally:
        os.close(read_end)
