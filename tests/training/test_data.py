from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdvae.training.data import DataError, load_splits, square_box

from .conftest import write_images


def test_folder_split_is_deterministic_stratified_and_cached(image_folder: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    first = load_splits(image_folder, 16, val_fraction=0.25, cache_dir=cache)
    assert first.kind == "folder"
    assert first.train.shape == (36, 3, 16, 16) and first.val.shape == (12, 3, 16, 16)
    assert first.train.dtype == np.uint8
    assert len(list(cache.glob("*.npz"))) == 1
    again = load_splits(image_folder, 16, val_fraction=0.25, cache_dir=cache)
    assert np.array_equal(first.val, again.val) and np.array_equal(first.train, again.train)
    # Adding files to one species must not move any image of the other across the split.
    write_images(image_folder / "species_c", 8, seed=3)
    grown = load_splits(image_folder, 16, val_fraction=0.25, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2  # the key follows the files
    assert {a.tobytes() for a in first.val} <= {a.tobytes() for a in grown.val}


def test_the_split_holds_no_photo_on_both_sides_and_moves_with_its_folder(image_folder, tmp_path):
    """Validation figures mean something only if no held-out photo is trained on, and they
    compare across runs and machines only if the same photos are held out wherever the folder
    lies (the split hashes each photo's path inside the folder, not on the disk)."""
    import shutil

    from birdvae.training.data import split_folder

    items = split_folder(image_folder, 0.25)
    held = {item.path.relative_to(image_folder) for item in items if item.is_val}
    trained = {item.path.relative_to(image_folder) for item in items if not item.is_val}
    assert held and trained and not held & trained
    assert len(held) + len(trained) == len(items) == 48
    moved = Path(shutil.copytree(image_folder, tmp_path / "elsewhere" / "birds"))
    again = split_folder(moved, 0.25)
    assert {item.path.relative_to(moved) for item in again if item.is_val} == held
    splits = load_splits(image_folder, 16, val_fraction=0.25)
    assert not {a.tobytes() for a in splits.val} & {a.tobytes() for a in splits.train}


def test_bad_files_are_skipped_with_one_warning_and_odd_modes_become_rgb(tmp_path: Path):
    root = tmp_path / "mixed"
    write_images(root, 4)
    (root / "notes.png").write_text("not an image")
    (root / "random.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    good = root / "0000.png"
    (root / "truncated.png").write_bytes(good.read_bytes()[:60])
    rgb = Image.open(good).convert("RGB")
    rgb.convert("L").save(root / "gray.png")
    rgb.convert("RGBA").save(root / "alpha.png")
    rgb.convert("CMYK").save(root / "cmyk.jpg")
    rgb.convert("P").save(root / "palette.gif")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_splits(root, 16, val_fraction=0.0)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "skipped 3" in messages[0]
    assert splits.skipped == 3
    assert splits.train.shape == (8, 3, 16, 16) and len(splits.val) == 0


@pytest.mark.parametrize("make", ["missing", "empty", "file", "only_junk"])
def test_unusable_sources_are_clear_errors(tmp_path: Path, make: str):
    target = tmp_path / "data"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("x")
    elif make == "only_junk":
        target.mkdir()
        (target / "a.jpg").write_text("junk")
    with pytest.raises(DataError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_splits(target, 16)


def _fake_cub(root: Path) -> Path:
    """A 4-image CUB_200_2011 folder: red birds in blue photos, boxes around the birds."""
    cub = root / "CUB_200_2011"
    (cub / "images" / "001.Tiny_Bird").mkdir(parents=True)
    lines, splits, boxes = [], [], []
    for i in range(1, 5):
        photo = np.zeros((60, 90, 3), np.uint8)
        photo[..., 2] = 255
        x, y = 10 + 10 * i, 15
        photo[y : y + 20, x : x + 20] = (255, 0, 0)
        name = f"001.Tiny_Bird/bird_{i}.jpg"
        Image.fromarray(photo).save(cub / "images" / name, quality=95)
        lines.append(f"{i} {name}")
        splits.append(f"{i} {1 if i <= 3 else 0}")
        boxes.append(f"{i} {x}.0 {y}.0 20.0 20.0")
    (cub / "images.txt").write_text("\n".join(lines) + "\n")
    (cub / "train_test_split.txt").write_text("\n".join(splits) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    return root


def test_cub_layout_uses_its_split_and_crops_to_the_box(tmp_path: Path):
    splits = load_splits(_fake_cub(tmp_path), 16)
    assert splits.kind == "cub"
    assert len(splits.train) == 3 and len(splits.val) == 1
    centre = splits.train[:, :, 8, 8].astype(int)  # [N, 3]
    assert (centre[:, 0] > 200).all() and (centre[:, 2] < 60).all()  # the bird, not the sky


def test_a_cub_split_with_no_training_photos_says_so(tmp_path: Path):
    """It said "--val-fraction 0.0 put all 4 images in validation", a flag CUB's split ignores."""
    cub = _fake_cub(tmp_path) / "CUB_200_2011"
    (cub / "train_test_split.txt").write_text("".join(f"{i} 0\n" for i in range(1, 5)))
    with pytest.raises(DataError, match=r"train_test_split\.txt puts all 4 photos .* test half"):
        load_splits(tmp_path, 16, val_fraction=0.0)


def test_names_that_are_not_utf8_are_data_not_tracebacks(tmp_path: Path):
    """A photo's or species folder's name in another encoding (an old archive, unpacked) is
    split like any other; an index of CUB's that is not UTF-8 is one DataError naming it."""
    root = tmp_path / "data"
    odd = os.fsdecode(b"sp\xe9cies")  # Latin-1, not UTF-8
    write_images(root / odd, 10, seed=3)
    write_images(root / "plain", 10, seed=4)
    splits = load_splits(root, 16, val_fraction=0.2, cache_dir=tmp_path / "cache")
    assert len(splits.train) == 16 and len(splits.val) == 4
    assert odd in splits.classes
    cub = _fake_cub(tmp_path / "cub") / "CUB_200_2011"
    (cub / "images.txt").write_bytes(b"1 001.Tiny_Bird/bird_\xe9.jpg\n")
    with pytest.raises(DataError, match=r"images\.txt is not UTF-8"):
        load_splits(cub.parent, 16)


@pytest.mark.parametrize(
    "box", ["nan 2 30 30", "2 2 inf 30", "-5 2 30 30", "2 2 0 30", "2 2 30", "2 2 x 30"]
)
def test_a_box_that_is_no_place_in_the_photo_is_one_data_error(tmp_path: Path, box: str):
    """A NaN box was numpy's "cannot convert float NaN to integer"; the others were cropped."""
    cub = _fake_cub(tmp_path) / "CUB_200_2011"
    lines = (cub / "bounding_boxes.txt").read_text().splitlines()
    lines[0] = f"{lines[0].split()[0]} {box}"
    (cub / "bounding_boxes.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"^bounding_boxes\.txt line 1 gives '.*' for CUB image "
                       r"'1' \(images\.txt line 1\), not a place and a size"):  # fmt: skip
        load_splits(cub.parent, 16)


def _append_to_cub(cub: Path, image: str, split: str = "1", box: str = "1 1 10 10") -> None:
    for name, value in (("images.txt", image), ("train_test_split.txt", split),
                        ("bounding_boxes.txt", box)):  # fmt: skip
        with open(cub / name, "a") as handle:
            handle.write(f"9 {value}\n")


@pytest.mark.parametrize(
    ("image", "split", "message"),
    [
        ("../../../private.jpg", "1", "which is not in"),  # a photo outside the data set
        ("/etc/hostname", "1", "which is not in"),
        ("/dev/stdin", "1", "which is not in"),  # a read that waits for ever
        ("001.Tiny_Bird/bird_1.jpg", "1", "which another id names too"),  # both sides of a split
        ("001.Tiny_Bird/bird_9.jpg", "yes", r"split\.txt line 5 gives 'yes' for .*, not 1 or 0"),
    ],
)
def test_a_cub_index_that_reaches_outside_or_repeats_is_one_data_error(
    tmp_path: Path, image: str, split: str, message: str
):
    root = _fake_cub(tmp_path / "data")
    (tmp_path / "private.jpg").write_bytes(
        (root / "CUB_200_2011" / "images" / "001.Tiny_Bird" / "bird_1.jpg").read_bytes()
    )
    _append_to_cub(root / "CUB_200_2011", image, split)
    with pytest.raises(DataError, match=message):
        load_splits(root, 16)


def test_a_cub_id_given_twice_or_a_byte_order_mark_are_read_as_meant(tmp_path: Path):
    cub = _fake_cub(tmp_path) / "CUB_200_2011"
    text = (cub / "images.txt").read_text()
    (cub / "images.txt").write_text("\ufeff" + text)  # as Windows editors save UTF-8
    assert len(load_splits(cub.parent, 16).train) == 3
    (cub / "images.txt").write_text(text + text.splitlines()[0] + "\n")
    with pytest.raises(DataError, match="line 5 gives image id '1' again"):
        load_splits(cub.parent, 16)


def test_a_folder_deeper_than_pythons_stack_and_one_that_cannot_be_read(
    tmp_path: Path, monkeypatch
):
    """A folder deeper than Python's recursion limit was a RecursionError (the limit is lowered
    here, so that the tree stays one that Python's own rmtree can remove); a folder that cannot
    be read was dropped without a word."""
    root = tmp_path / "birds"
    write_images(root / "species_a", 6, seed=1)
    deep = root
    for _ in range(500):  # one level at a time: mkdir(parents=True) recurses too
        deep = deep / "d"
        deep.mkdir()
    write_images(deep, 2, seed=2)
    locked = root / "species_b"
    write_images(locked, 4, seed=3)
    scandir = os.scandir

    def denied(folder):  # as for a folder of mode 000, whoever runs the tests
        if Path(folder) == locked:
            raise PermissionError(13, "Permission denied", str(folder))
        return scandir(folder)

    monkeypatch.setattr(os, "scandir", denied)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)  # below the tree's depth, well above the test's own
    try:
        with pytest.warns(UserWarning, match="skipped 1 folder.*species_b"):
            splits = load_splits(root, 16, val_fraction=0.0)
    finally:
        sys.setrecursionlimit(limit)
    assert len(splits.train) == 8


def test_a_photo_cub_lists_but_the_folder_lacks_is_skipped_with_a_warning(tmp_path: Path):
    root = _fake_cub(tmp_path)
    (root / "CUB_200_2011" / "images" / "001.Tiny_Bird" / "bird_2.jpg").unlink()
    with pytest.warns(UserWarning, match=r"skipped 1 image file.*bird_2\.jpg"):
        splits = load_splits(root, 16, cache_dir=tmp_path / "cache")
    assert (len(splits.train), len(splits.val), splits.skipped) == (2, 1, 1)


def test_a_cub_box_beyond_its_photo_skips_that_photo_instead_of_cropping_a_corner(tmp_path):
    """The fake photos are 90x60: a box at x=95 belongs to some other photo."""
    root = _fake_cub(tmp_path)
    cub = root / "CUB_200_2011"
    lines = (cub / "bounding_boxes.txt").read_text().splitlines()
    lines[1] = "2 95.0 15.0 20.0 20.0"
    (cub / "bounding_boxes.txt").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"bird_2\.jpg: its bounding box .* outside the 90x60"):
        splits = load_splits(root, 16)
    assert (len(splits.train), len(splits.val), splits.skipped) == (2, 1, 1)
    centre = splits.train[:, :, 8, 8].astype(int)
    assert (centre[:, 0] > 200).all()  # the other two still cropped to their birds


def test_a_path_with_spaces_in_images_txt_is_read_whole(tmp_path: Path):
    root = _fake_cub(tmp_path)
    cub = root / "CUB_200_2011"
    old = cub / "images" / "001.Tiny_Bird" / "bird_1.jpg"
    old.rename(old.with_name("bird 1 (copy).jpg"))
    text = (cub / "images.txt").read_text().replace("bird_1.jpg", "bird 1 (copy).jpg")
    (cub / "images.txt").write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cut at the space, the photo was "missing"
        splits = load_splits(root, 16)
    assert len(splits.train) == 3


@pytest.mark.parametrize("missing", ["bounding_boxes.txt", "train_test_split.txt"])
def test_a_cub_folder_missing_an_index_is_refused_not_read_as_a_plain_folder(tmp_path, missing):
    root = _fake_cub(tmp_path)
    (root / "CUB_200_2011" / missing).unlink()
    with pytest.raises(DataError, match=f"looks like CUB-200-2011 but has no {missing}; restore"):
        load_splits(root, 16)


def test_folders_beside_cub_are_named_in_a_warning(tmp_path: Path):
    root = _fake_cub(tmp_path)
    write_images(root / "my_garden_birds", 4, seed=1)
    write_images(root / "segmentations" / "001.Tiny_Bird", 4, seed=2)  # CUB's own masks
    (root / "attributes.txt").write_text("CUB's archive puts this file beside the folder\n")
    alone = r"CUB-200-2011 alone; 1 other folder\(s\) there, e\.g\. my_garden_birds,"
    with pytest.warns(UserWarning, match=alone):
        splits = load_splits(root, 16)
    assert splits.kind == "cub" and len(splits.train) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CUB_200_2011/ itself, or beside no other photos: no word
        load_splits(root / "CUB_200_2011", 16)
        for photo in (root / "my_garden_birds").iterdir():
            photo.rename(photo.with_suffix(".txt"))
        load_splits(root, 16)


def test_linked_species_folders_are_read_and_a_loop_of_links_ends(tmp_path: Path):
    store, data = tmp_path / "store", tmp_path / "data"
    write_images(store / "wren", 6, seed=1)
    write_images(store / "robin", 6, seed=2)
    data.mkdir()
    (data / "wren").symlink_to(store / "wren")
    (data / "robin").symlink_to(store / "robin")
    (data / "robin" / "back").symlink_to(data)  # a loop through the links
    (data / "up").symlink_to(tmp_path)  # the disk above the data set
    write_images(data / "wren" / ".thumbnails", 3, seed=5)  # a file manager's copies
    write_images(data / ".Trash-1000", 3, seed=6)
    splits = load_splits(data, 16, val_fraction=0.0)
    assert len(splits.train) == 12 and sorted(splits.classes) == ["robin", "wren"]


def test_a_linked_folder_never_brings_a_photo_in_twice_or_under_another_name(tmp_path):
    """A link to a folder of the same data set (walked first, it named the species after the
    link and moved the split), or to another --data folder (its photos on both sides of two
    splits), is not followed."""
    first, second = tmp_path / "first", tmp_path / "second"
    write_images(first / "wren", 10, seed=1)
    write_images(second / "robin", 10, seed=2)
    plain = load_splits([first, second], 16, val_fraction=0.2)
    (first / "all").symlink_to(first / "wren")
    (first / "more").symlink_to(second)
    linked = load_splits([first, second], 16, val_fraction=0.2)
    assert linked.classes == plain.classes == ["robin", "wren"]
    for side in ("train", "val"):
        assert np.array_equal(getattr(linked, side), getattr(plain, side))


def test_tiny_sub_folders_hold_out_about_the_fraction_asked_for(tmp_path: Path):
    """Every two-photo folder held one out, half the data at --val-fraction 0.1; those that
    round to a photo or more are split as before (the shipped models' data is)."""
    root = tmp_path / "birds"
    for i in range(60):
        write_images(root / f"species_{i:02d}", 2, seed=i)
    write_images(root / "big", 30, seed=99)
    splits = load_splits(root, 16, val_fraction=0.1)
    small = len(splits.val) - 3  # the 30-photo folder gives round(3.0)
    assert 4 <= small <= 24, small  # 12 expected of 120; it was 60
    assert np.isin(splits.classes.index("big"), splits.val_labels)
    few = tmp_path / "few"
    for species in ("a", "b"):  # shares of 0.3 each: one photo held out all the same
        write_images(few / species, 3, seed=7)
    assert len(load_splits(few, 16, val_fraction=0.1).val) == 1


def test_a_data_set_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    import birdvae.training.data as data

    write_images(tmp_path / "birds" / "wren", 10, seed=1)
    monkeypatch.setattr(data, "_available_memory", lambda: 10 * 3 * 16 * 16)  # all, no headroom
    monkeypatch.setattr(data, "load_image", lambda *a: pytest.fail("decoded before the check"))
    with pytest.raises(DataError, match=r"10 photos at 16x16 need 0\.0 GiB in memory, more than"):
        load_splits(tmp_path / "birds", 16)


def test_a_damaged_cache_is_ignored_with_a_warning_and_rewritten(image_folder, tmp_path):
    cache = tmp_path / "cache"
    first = load_splits(image_folder, 16, cache_dir=cache)
    [cached] = cache.glob("*.npz")
    for damage in (b"not a zip at all", cached.read_bytes()[:200]):
        cached.write_bytes(damage)
        with pytest.warns(UserWarning, match="damaged image cache"):
            again = load_splits(image_folder, 16, cache_dir=cache)
        assert np.array_equal(first.train, again.train)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # rewritten: read back without a warning
            assert np.array_equal(first.val, load_splits(image_folder, 16, cache_dir=cache).val)


def _crafted(arrays: dict, case: str) -> dict:
    """A run's cached arrays, changed as a hostile or foreign cache file would hold them."""
    arrays = dict(arrays)
    if case == "4 million images, deflated":
        arrays["train"] = np.zeros((4_000_000 // 1000, 3, 16, 16), np.uint8)  # small here
    elif case == "another size":
        arrays["train"] = arrays["train"][:, :, :8, :8]
    elif case == "floats":
        arrays["train"] = arrays["train"].astype(np.float64)
    elif case == "a count of three":
        arrays["skipped"] = np.array([1, 2, 3])
    elif case == "labels past the species":
        arrays["train_labels"] = arrays["train_labels"] + len(arrays["classes"])
    elif case == "photos not listed":
        arrays["val"] = arrays["val"][:1]
    elif case == "an array too many":
        arrays["extra"] = np.zeros(1)
    elif case == "other species":
        arrays["classes"] = np.array([f"eagle{i}" for i in range(len(arrays["classes"]))])
    return arrays


CRAFTED_CACHES = ["4 million images, deflated", "the run's own, deflated", "another size",
                  "floats", "a count of three", "labels past the species", "photos not listed",
                  "an array too many", "other species", "a header of 286 GiB"]  # fmt: skip


@pytest.mark.parametrize("case", CRAFTED_CACHES)
def test_a_crafted_cache_is_ignored_and_the_photos_decoded_again(
    image_folder, tmp_path, case, monkeypatch
):
    """Each was read as it said: a 12 MB deflated cache declaring 4 million images took 23 GB
    before the process was killed, a 2.5 KB one declaring 286 GiB ran out of memory, and a
    count of three was a traceback. A deflated member or a lying header is refused before
    numpy reads anything."""
    cache = tmp_path / "cache"
    first = load_splits(image_folder, 16, cache_dir=cache)
    [cached] = cache.glob("*.npz")
    with np.load(cached) as stored:
        arrays = _crafted({name: stored[name] for name in stored.files}, case)
    save = np.savez_compressed if "deflated" in case else np.savez
    with open(cached, "wb") as handle:
        save(handle, **arrays)
    if case == "a header of 286 GiB":  # 2.5 KB on disk; numpy allocates what it declares
        _declare_in_place(cached, "train.npy", (10**8, 3, 32, 32))
    refused_unread = case in ("the run's own, deflated", "a header of 286 GiB")
    if refused_unread:
        monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("read before the check"))
    with pytest.warns(UserWarning, match="damaged image cache"):
        again = load_splits(image_folder, 16, cache_dir=cache)
    monkeypatch.undo()
    assert np.array_equal(first.train, again.train) and first.classes == again.classes


def _declare_in_place(path: Path, name: str, shape: tuple[int, ...]) -> None:
    """Rewrite the shape a stored member's .npy header (version 1.0) declares, the header's
    length kept, so the archive stays whole and only the declaration lies."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    data = members[name]
    length = int.from_bytes(data[8:10], "little")
    header = repr({"descr": "|u1", "fortran_order": False, "shape": shape}).encode()
    assert data[6:8] == bytes([1, 0]) and len(header) < length
    data = data[:10] + header + b" " * (length - 1 - len(header)) + b"\n" + data[10 + length :]
    with zipfile.ZipFile(path, "w") as archive:
        for member, contents in members.items():
            archive.writestr(member, data if member == name else contents)


def test_the_box_margin_sets_the_crop_and_its_own_cache(tmp_path: Path):
    """Margin 0 crops a CUB photo to its box (the red bird fills the picture); the default
    keeps blue sky around it. Each margin is cached apart, so one never reads the other's."""
    root, cache = _fake_cub(tmp_path), tmp_path / "cache"
    tight = load_splits(root, 16, cache_dir=cache, box_margin=0.0)
    loose = load_splits(root, 16, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2
    red = lambda images: float((images[:, 0].astype(int) > 200).mean())  # noqa: E731
    assert red(tight.train) > 0.8 and red(loose.train) < 0.65, (red(tight.train), red(loose.train))
    assert np.array_equal(load_splits(root, 16, cache_dir=cache, box_margin=0.0).train, tight.train)
    assert square_box((10, 10, 20, 10), (100, 100), margin=0.0) == (10, 5, 30, 25)
    with pytest.raises(DataError, match="box-margin"):
        load_splits(root, 16, box_margin=1.5)


def test_square_box_keeps_a_margin_and_stays_inside():
    left, top, right, bottom = square_box((80, 5, 20, 10), (100, 50))
    assert right - left == bottom - top
    assert left >= 0 and top >= 0 and right <= 100 and bottom <= 50
    assert left <= 80 and right >= 100 - 1


def _photo(mode: str) -> Image.Image:
    """A 60x40 picture with detail in it, in ``mode``."""
    ramp = np.linspace(0, 1, 60 * 40).reshape(40, 60)
    rgb = np.stack([ramp, ramp[::-1], np.roll(ramp, 7, axis=1)], axis=-1)
    image = Image.fromarray((rgb * 255).astype(np.uint8))
    if mode == "I;16":
        return Image.fromarray((ramp * 65535).astype(np.uint16))
    if mode == "F":
        return Image.fromarray(ramp.astype(np.float32))
    return image.convert(mode)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("RGB", ".jpg"),
        ("L", ".png"),
        ("RGBA", ".png"),
        ("P", ".png"),
        ("CMYK", ".jpg"),
        ("I;16", ".png"),
        ("F", ".tiff"),
        ("LA", ".png"),
    ],
)
def test_training_and_runtime_prepare_a_photo_the_same_way(tmp_path: Path, mode, suffix):
    """Reconstructions by bird-gen are only fair if photos reach the model as in training."""
    from birdvae.runtime.photos import load_image as runtime_load_image
    from birdvae.training.data import load_image as training_load_image

    path = tmp_path / f"photo{suffix}"
    _photo(mode).save(path)
    trained = training_load_image(path, 16)
    served = runtime_load_image(path, 16)
    np.testing.assert_array_equal(trained.transpose(1, 2, 0), served)


def test_several_sources_train_together_with_each_ones_species(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    write_images(first / "wren", 10, seed=1)
    write_images(second / "robin", 10, seed=2)
    write_images(second / "finch", 10, seed=3)
    alone = load_splits(first, 16, val_fraction=0.2)
    both = load_splits([first, second], 16, val_fraction=0.2, cache_dir=tmp_path / "cache")
    assert len(both.train) == 24 and len(both.val) == 6
    assert np.array_equal(both.train[: len(alone.train)], alone.train)
    assert both.classes == ["finch", "robin", "wren"]
    assert sorted(set(both.train_labels.tolist())) == [0, 1, 2]
    assert np.bincount(both.val_labels).tolist() == [2, 2, 2]
    cached = load_splits([first, second], 16, val_fraction=0.2, cache_dir=tmp_path / "cache")
    assert np.array_equal(cached.train_labels, both.train_labels)
    assert cached.classes == both.classes and cached.kind == "folder+folder"


def test_describe_records_names_and_a_hash_of_the_images_not_paths(tmp_path):
    from birdvae.training.data import describe

    write_images(tmp_path / "birds" / "wren", 6, seed=1)
    splits = load_splits(tmp_path / "birds", 16)
    record = describe([tmp_path / "birds"], splits)
    assert record["names"] == ["birds"] and str(tmp_path) not in str(record)
    other = load_splits(tmp_path / "birds", 8)
    assert describe([tmp_path / "birds"], other)["images_sha256"] != record["images_sha256"]


def test_a_data_folder_is_scanned_for_every_format_bird_gen_reads(tmp_path: Path) -> None:
    """A .ppm or .tga photo that bird-gen reconstructs was silently not trained on."""
    from birdvae.runtime.photos import PHOTO_FORMATS
    from birdvae.training.data import IMAGE_SUFFIXES

    registered = Image.registered_extensions()
    assert {registered[suffix] for suffix in IMAGE_SUFFIXES} == set(PHOTO_FORMATS)
    write_images(tmp_path / "a", 8, seed=1)
    for index, suffix in enumerate([".ppm", ".tga", ".jpe"]):
        Image.new("RGB", (20, 20), (index * 80, 40, 200)).save(
            tmp_path / "a" / f"extra{suffix}", format=registered[suffix]
        )
    splits = load_splits(tmp_path, 16, val_fraction=0.25)
    assert len(splits.train) + len(splits.val) == 11
