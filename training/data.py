"""Bird images in, uint8 arrays out: decoded and resized once, then cached on disk.

Two kinds of source are understood, and several may be given together (their splits are
concatenated):
- the official CUB-200-2011 layout (``images.txt``, ``train_test_split.txt``,
  ``bounding_boxes.txt``, ``images/``): its own train/test split, each photo cropped to its
  bounding box (with a margin, kept square) before resizing;
- any folder of images, flat or nested: a deterministic validation split, stratified by
  sub-folder, that does not move when files are added elsewhere.

An epoch then costs no JPEG decoding: the whole set lives in memory as uint8 [N, 3, S, S].
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import warnings
import zipfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from birdvae.runtime import durable, photos
from birdvae.runtime.errors import UserError
from birdvae.runtime.photos import Region

from .config import BOX_MARGIN

# The file names of the runtime's photo formats (photos.PHOTO_FORMATS), so a photo bird-gen
# reads is one a data folder is scanned for.
IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".gif", ".bmp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga",
}  # fmt: skip
# Part of every cache key; raised whenever how photos are decoded or cropped changes, so that
# a cache of other pixels is never read.
CACHE_VERSION = 3
# A cache file's name, and the pattern a run folder's check knows its caches by (runfolder.py).
CACHE_FILE_PATTERN = re.compile(r"[a-z+]+-\d+px-[0-9a-f]{16}\.npz")
Box = tuple[float, float, float, float]  # x, y, width, height in pixels


class DataError(UserError, ValueError):
    """A data source that cannot be used; the message says what to fix."""


@dataclass
class Splits:
    train: np.ndarray  # uint8 [N, 3, S, S]
    val: np.ndarray  # uint8 [M, 3, S, S]
    kind: str  # "cub", "folder", or several joined by "+"
    skipped: int  # unreadable files left out
    # The species of each image (its folder), as indices into ``classes``: what the benchmarks'
    # species classifier and the decoder stage's species net (``--perceptual-weight``,
    # ``--projected-weight``) learn. The VAE and prior stages never read them.
    train_labels: np.ndarray  # int64 [N]
    val_labels: np.ndarray  # int64 [M]
    classes: list[str]


@dataclass
class _Item:
    path: Path
    is_val: bool
    box: Box | None = None
    label: str = ""


def load_splits(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    image_size: int,
    crop: str = "center",
    val_fraction: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
    update_cache: bool = True,
    box_margin: float = BOX_MARGIN,
    avoid: Sequence[Path] = (),
) -> Splits:
    """Train and validation images from one source or several, at ``image_size``, through the
    disk cache (read only, never written, with ``update_cache`` False); a CUB photo is cropped
    to its bounding box with ``box_margin`` around it. A linked folder inside a source that
    reaches a folder of ``avoid`` (a run's own, whose grids are PNGs) is not walked."""
    if crop not in ("center", "squash"):
        raise DataError(f"unknown crop {crop!r} (choose center or squash)")
    if not 0.0 <= box_margin <= 1.0:
        raise DataError(f"--box-margin must be in [0, 1], got {box_margin}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise DataError("no data source given")
    for source in sources:  # every resolve() below follows links, and a loop of them raises
        resolved(Path(source).expanduser(), str(Path(source).expanduser()))
    _check_disjoint([Path(source).expanduser() for source in sources])
    items: list[_Item] = []
    kinds: list[str] = []
    roots: list[Path] = []
    every = [Path(source).expanduser().resolve() for source in sources]
    for source in sources:
        root = Path(source).expanduser()
        others = [other for other in every if other != root.resolve()]
        found, kind = _list_source(root, val_fraction, others, avoid)
        items += found
        kinds.append(kind)
        roots.append(root)
    kind = "+".join(kinds)

    key = _cache_key(roots, kind, items, image_size, crop, val_fraction, box_margin)
    cache_path = Path(cache_dir) / cache_file_name(kinds[0], image_size, key) if cache_dir else None
    if cache_path is not None and cache_path.is_file():
        cached = _read_cache(cache_path, kind, items, image_size)
        if cached is not None:
            return cached

    splits = _decode_all(items, image_size, crop, kind, box_margin)
    if len(splits.train) == 0 and len(splits.val) > 0:
        if all(kind == "cub" for kind in kinds):  # CUB's own split, whatever --val-fraction says
            raise DataError(
                f"CUB's train_test_split.txt puts all {len(splits.val)} photos in "
                f"{', '.join(map(str, roots))} in its test half; mark some 1 (training) or "
                "add a folder of photos"
            )
        raise DataError(
            f"--val-fraction {val_fraction} put all {len(splits.val)} images in validation; "
            "lower it or add photos"
        )
    if len(splits.train) == 0:
        raise DataError(f"no readable training images in {', '.join(map(str, roots))}")
    if cache_path is not None and update_cache:
        _save_atomic(
            cache_path, train=splits.train, val=splits.val, skipped=splits.skipped,
            train_labels=splits.train_labels, val_labels=splits.val_labels,
            classes=np.array(splits.classes),
        )  # fmt: skip
    return splits


def resolved(path: Path, named: str) -> Path:
    """``path`` through its links, refused (DataError, saying ``named``) when they go round in
    a loop (links inside a data folder that loop are skipped as the folder is walked)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.13 raises OSError(ELOOP), older RuntimeError
        raise DataError(f"{named}: a loop of symbolic links; give the folder itself") from exc


def _check_disjoint(roots: Sequence[Path]) -> None:
    """Refuse a folder given twice, or one inside another: its photos would be trained on twice,
    and a photo could land in validation through one source and in training through the other
    (each source splits by paths relative to its own root)."""
    resolved = [root.resolve() for root in roots]
    for i, a in enumerate(resolved):
        for j, b in enumerate(resolved):
            if i != j and (a == b or b in a.parents):
                raise DataError(
                    f"the data folders {roots[i]} and {roots[j]} overlap (the same folder, or "
                    "one inside the other); give each folder of photos once"
                )


def describe(sources: Sequence[str | os.PathLike], splits: Splits) -> dict[str, object]:
    """What a manifest or model card records of the data: the folders' names and the sha256 of
    the decoded images (what the model saw), never a path on the machine that trained it."""
    return {
        "names": [Path(source).expanduser().resolve().name for source in sources],
        "kind": splits.kind,
        "train_images": len(splits.train),
        "val_images": len(splits.val),
        "classes": len(splits.classes),
        "images_sha256": images_digest(splits),
    }


def images_digest(splits: Splits) -> str:
    """The sha256 of the decoded training and validation images, in order: two loads agree on
    it only if they give a run the same photos on the same sides of the split."""
    digest = hashlib.sha256()
    for array in (splits.train, splits.val):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _list_source(
    root: Path, val_fraction: float, others: Sequence[Path] = (), avoid: Sequence[Path] = ()
) -> tuple[list[_Item], str]:
    """The images of one source, each with its side of the split, and the source's kind;
    ``others`` are the other sources, which a linked folder in this one must not reach."""
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder")
    cub_root = find_cub_root(root)
    if cub_root is not None:
        items, kind = read_cub_layout(cub_root), "cub"
    else:
        items, kind = split_folder(root, val_fraction, others, avoid), "folder"
    if not items:
        raise DataError(
            f"no images found in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return items, kind


def find_cub_root(root: Path) -> Path | None:
    """The folder holding CUB's index files: ``root`` itself or its ``CUB_200_2011/``. A folder
    with some of them but not all is a damaged copy, refused rather than read as a plain
    folder (which would drop CUB's split and boxes without a word)."""
    for candidate in (root, root / "CUB_200_2011"):
        present = [name for name in _CUB_FILES if (candidate / name).is_file()]
        if not present or not (candidate / "images").is_dir():
            continue
        missing = [name for name in _CUB_FILES if name not in present]
        if missing:
            raise DataError(
                f"{candidate} looks like CUB-200-2011 but has no {' or '.join(missing)}; "
                f"restore it from CUB's archive, or give {candidate / 'images'} to train on "
                "its photos as a plain folder"
            )
        if candidate != root:
            _warn_of_folders_beside(candidate)
        return candidate
    return None


def _warn_of_folders_beside(cub_root: Path) -> None:
    """``--data`` naming the folder above CUB_200_2011/ reads CUB alone; other folders of
    photos there would be left out without this word."""
    try:
        others = sorted(entry.name for entry in os.scandir(cub_root.parent)
                        if entry.is_dir() and entry.name not in (cub_root.name, *CUB_BESIDE)
                        and _holds_photos(Path(entry.path)))  # fmt: skip
    except OSError:
        return
    if others:
        warnings.warn(
            f"read {cub_root.parent} as CUB-200-2011 alone; {len(others)} other folder(s) "
            f"there, e.g. {others[0]}, are not read (give each as a data folder of its own)",
            stacklevel=4,
        )


_CUB_FILES = ("images.txt", "train_test_split.txt", "bounding_boxes.txt")
# Folders of CUB's own archives that unpack beside CUB_200_2011/: pictures, but not photos to
# train on (the birds' segmentation masks).
CUB_BESIDE = ("segmentations",)
# An index file's size, at most: CUB's own images.txt is 0.5 MB for 11,788 photos.
MAX_INDEX_BYTES = 64 << 20


def read_cub_layout(cub_root: Path) -> list[_Item]:
    """CUB's official split (is_training_image == 0 becomes validation) and bounding boxes."""

    def table(name: str, fields: int = -1) -> dict[str, tuple[int, list[str]]]:
        """Each id's line number and its other fields (the line cut at most ``fields`` times,
        so a path in images.txt may hold spaces)."""
        rows: dict[str, tuple[int, list[str]]] = {}
        path = cub_root / name
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise DataError(f"{path} is larger than the {MAX_INDEX_BYTES >> 20} MB an index may be")
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is no id
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte "
                            f"{exc.start})") from None  # fmt: skip
        for number, line in enumerate(text.splitlines(), 1):
            parts = line.split(None, fields) if fields > 0 else line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise DataError(f"{path} line {number} is malformed: {line[:80]!r}")
            if parts[0] in rows:  # which line was meant cannot be told
                raise DataError(f"{path} line {number} gives image id {parts[0][:20]!r} again")
            rows[parts[0]] = (number, [part.strip() for part in parts[1:]])
        return rows

    paths, splits, boxes = (
        table("images.txt", fields=1),
        table("train_test_split.txt"),
        table("bounding_boxes.txt"),
    )
    images = (cub_root / "images").resolve()
    items, seen = [], set()
    for image_id, (number, (relative, *_)) in paths.items():
        shown = f"CUB image {image_id[:20]!r} (images.txt line {number})"
        for name, rows in (("train_test_split.txt", splits), ("bounding_boxes.txt", boxes)):
            if image_id not in rows:
                raise DataError(f"{shown} has no line in {name} ({cub_root})")
        number, (split, *_) = splits[image_id]
        if split not in ("0", "1"):
            raise DataError(f"train_test_split.txt line {number} gives {split[:20]!r} for "
                            f"{shown}, not 1 or 0")  # fmt: skip
        number, numbers = boxes[image_id]
        try:
            box = tuple(float(v) for v in numbers[:4])
            x, y, width, height = box  # a place in the photo and a size, every one finite
            usable = all(map(math.isfinite, box)) and min(x, y) >= 0 and min(width, height) > 0
        except ValueError:
            usable = False
        if not usable:
            raise DataError(f"bounding_boxes.txt line {number} gives {' '.join(numbers)[:80]!r} "
                            f"for {shown}, not a place and a size")  # fmt: skip
        path = cub_root / "images" / relative
        resolved = path.resolve()
        # Only a photo inside images/: a hostile index could name ~/private.jpg or /dev/stdin.
        if not _photo_inside(resolved, images):
            raise DataError(f"{shown} names {relative[:80]!r}, which is not in {images}")
        if resolved in seen:  # the same photo under two ids: both sides of the split
            raise DataError(f"{shown} names {relative[:80]!r}, which another id names too")
        seen.add(resolved)
        label = Path(relative).parts[0] if len(Path(relative).parts) > 1 else ""
        items.append(_Item(path, split == "0", box, label))  # type: ignore[arg-type]
    return items


def _photo_inside(resolved: Path, folder: Path) -> bool:
    """Whether ``resolved`` (a path with its links followed) is a file within ``folder``; a
    missing one counts, and is skipped later as unreadable; a pipe, device or folder does not."""
    if folder not in resolved.parents:
        return False
    return not resolved.exists() or resolved.is_file()


def split_folder(
    root: Path, val_fraction: float, others: Sequence[Path] = (), avoid: Sequence[Path] = ()
) -> list[_Item]:
    """Every image under ``root``; per sub-folder, the files whose path hashes lowest are val.

    Hashing the relative path (not shuffling) keeps each file's side of the split fixed when
    other files come and go.
    """
    groups: dict[Path, list[Path]] = defaultdict(list)
    for path in sorted(_files_under(root, others, avoid)):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            groups[path.parent].append(path)
    held: dict[Path, int] = {}
    for folder, files in groups.items():
        share = len(files) * val_fraction
        held[folder] = round(share)
        # A sub-folder too small for its share to round to one photo gives one with that
        # share's chance (by its path's hash, so fixed): at --val-fraction 0.1, folders of two
        # photos hold out a tenth of their photos in all, not half.
        if held[folder] == 0 and len(files) >= 2 and _unit_hash(folder.relative_to(root)) < share:
            held[folder] = 1
    if groups and val_fraction > 0 and not any(held.values()):  # a few photos: still one held out
        largest = max(groups, key=lambda folder: (len(groups[folder]), folder))
        held[largest] = int(len(groups[largest]) >= 2)
    items = []
    for folder, files in groups.items():
        ranked = sorted(  # the name's bytes: a name need not be UTF-8
            files, key=lambda p: hashlib.sha1(os.fsencode(p.relative_to(root))).digest()
        )
        val = set(ranked[: held[folder]])
        label = str(folder.relative_to(root)).replace(os.sep, "/")
        items += [_Item(path, path in val, label=label) for path in files]
    return items


def _reaches(target: Path, refused: Sequence[Path], held: Sequence[Path]) -> bool:
    """Whether ``target`` is one of ``refused``, inside one, or holds one of ``held``."""
    inside = any(target == folder or folder in target.parents for folder in refused)
    return inside or any(target in folder.parents for folder in held)


def _holds_photos(folder: Path, look_at: int = 10_000) -> bool:
    """Whether one of the first ``look_at`` files under ``folder`` is a photo."""
    files = itertools.islice(_files_under(folder), look_at)
    return any(path.suffix.lower() in IMAGE_SUFFIXES for path in files)


def _unit_hash(relative: Path) -> float:
    """A number in [0, 1) fixed by a path's bytes."""
    digest = hashlib.sha1(os.fsencode(relative)).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _files_under(
    root: Path, others: Sequence[Path] = (), avoid: Sequence[Path] = ()
) -> Iterator[Path]:
    """The regular files under ``root``, walked with a list rather than recursion, so that no
    depth of folders overflows Python's stack. Links are followed (a folder of links to species
    folders or photos is a data set), each real folder entered once (a loop of links ends),
    except a linked folder inside ``root`` (its real path is walked, and names its species),
    one holding ``root`` (the disk above the data set), one inside ``others`` (another
    source's photos, on both sides of two splits), and one inside or holding a folder of
    ``avoid`` (a run's folder: its grids would be read as photos, and a resume refused).
    Hidden files and folders (a name starting with a dot: thumbnails, copies a file manager
    keeps) are not photos of the data set.
    Folders that cannot be read are counted in one warning."""
    real_root = root.resolve()
    avoided = [Path(folder).resolve() for folder in avoid]
    refused = [real_root, *(Path(other).resolve() for other in others), *avoided]
    held = [real_root, *avoided]
    folders, unreadable, entered = [root], [], set()
    while folders:
        folder = folders.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in entered:
                continue
            entered.add((info.st_dev, info.st_ino))
            entries = list(os.scandir(folder))
        except OSError:
            unreadable.append(folder)
            continue
        for entry in entries:
            if entry.name.startswith("."):  # a file manager's thumbnails, macOS's ._ twins
                continue
            try:
                if entry.is_dir():
                    if entry.is_symlink() and _reaches(Path(entry.path).resolve(), refused, held):
                        continue
                    folders.append(Path(entry.path))
                elif entry.is_file():
                    yield Path(entry.path)
            except OSError:
                continue
    if unreadable:
        warnings.warn(f"skipped {len(unreadable)} folder(s) that cannot be read, e.g. "
                      f"{unreadable[0]}", stacklevel=2)  # fmt: skip


def load_image(
    path: Path,
    image_size: int,
    crop: str = "center",
    box: Box | None = None,
    box_margin: float = BOX_MARGIN,
) -> np.ndarray:
    """One photo as uint8 [3, S, S], prepared as the runtime prepares one (``runtime.photos``):
    RGB whatever its mode, cropped (to ``box``, the centre square, or not at all for ``squash``),
    antialiased down to S. ImageError when it cannot be decoded."""
    region: Region | None = None  # the centre square, from a reduced JPEG decode
    if box is not None:
        region = partial(_box_region, path, box, box_margin)
    elif crop == "squash":
        region = _whole
    return photos.load_image(path, image_size, region).transpose(2, 0, 1).copy()


def _whole(size: tuple[int, int]) -> tuple[int, int, int, int]:
    return 0, 0, *size


def _box_region(
    path: Path, box: Box, margin: float, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``square_box`` of a CUB photo, whose box must overlap it: a box beyond the photo's edge
    belongs to another photo (an index out of step with its files), and cropping the nearest
    corner would train on sky."""
    x, y, _, _ = box
    if x >= size[0] or y >= size[1]:
        raise photos.ImageError(
            f"{path}: its bounding box {tuple(round(v, 1) for v in box)} lies outside the "
            f"{size[0]}x{size[1]} photo"
        )
    return square_box(box, size, margin)


def square_box(
    box: Box, size: tuple[int, int], margin: float = BOX_MARGIN
) -> tuple[int, int, int, int]:
    """A square around ``box`` with ``margin`` of its longer side on each side, shifted (and if
    need be shrunk) to fit the image."""
    x, y, w, h = box
    width, height = size
    side = max(1, min(max(w, h) * (1 + 2 * margin), width, height))
    cx, cy = x + w / 2, y + h / 2
    left = min(max(cx - side / 2, 0), width - side)
    top = min(max(cy - side / 2, 0), height - side)
    return round(left), round(top), round(left + side), round(top + side)


def _decode_all(
    items: Sequence[_Item], image_size: int, crop: str, kind: str, box_margin: float
) -> Splits:
    """Every photo decoded straight into the two arrays that hold the data set, after checking
    that they fit in the memory available: a data set too large for the machine is refused
    before the first photo is decoded, not after the machine starts swapping."""
    _check_memory(len(items), image_size)
    classes = sorted({item.label for item in items})
    index = {name: i for i, name in enumerate(classes)}
    sides = {is_val: [i for i, item in enumerate(items) if item.is_val == is_val]
             for is_val in (False, True)}  # fmt: skip
    arrays = {is_val: np.empty((len(chosen), 3, image_size, image_size), np.uint8)
              for is_val, chosen in sides.items()}  # fmt: skip
    place = {i: (is_val, row) for is_val, chosen in sides.items() for row, i in enumerate(chosen)}
    failures: dict[int, str] = {}

    def decode(i: int) -> None:
        item = items[i]
        try:
            image = load_image(item.path, image_size, crop, item.box, box_margin)
        except photos.ImageError as exc:
            failures[i] = str(exc)
            return
        is_val, row = place[i]
        arrays[is_val][row] = image

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding
        list(pool.map(decode, range(len(items))))
    if failures:
        warnings.warn(f"skipped {len(failures)} image file(s) that cannot be used, e.g. "
                      f"{failures[min(failures)]}", stacklevel=2)  # fmt: skip

    def keep(is_val: bool) -> tuple[np.ndarray, np.ndarray]:
        chosen, images = sides[is_val], arrays[is_val]
        good = [row for row, i in enumerate(chosen) if i not in failures]
        labels = np.array([index[items[chosen[row]].label] for row in good], np.int64)
        return (images if len(good) == len(images) else images[good]), labels

    (train, train_labels), (val, val_labels) = keep(False), keep(True)
    return Splits(train, val, kind, len(failures), train_labels, val_labels, classes)


def _check_memory(count: int, image_size: int) -> None:
    """Refuse a data set whose decoded images would not fit in the memory available now."""
    needed = count * 3 * image_size * image_size
    available = _available_memory()
    if available is not None and needed > available * 0.8:
        raise DataError(
            f"{count:,} photos at {image_size}x{image_size} need {needed / 2**30:.1f} GiB in "
            f"memory, more than 80% of the {available / 2**30:.1f} GiB available (training "
            "needs the rest); train on fewer photos (a folder of some of them) or on a machine "
            "with more memory"
        )


def _available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux's MemAvailable), None elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _cache_key(
    roots: Sequence[Path],
    kind: str,
    items: Sequence[_Item],
    image_size: int,
    crop: str,
    val_fraction: float,
    box_margin: float,
) -> str:
    """Changes whenever a file, the split or the preprocessing would change the arrays."""
    listing = []
    for item in items:
        try:
            stat = item.path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # listed but missing or unreadable: decoding skips it and counts it
            size = mtime = None
        listing.append([str(item.path), size, mtime, item.is_val, item.box])
    resolved = [str(root.resolve()) for root in roots]
    payload = json.dumps(
        [CACHE_VERSION, resolved, kind, image_size, crop, box_margin, val_fraction, listing]
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_file_name(kind: str, image_size: int, key: str) -> str:
    """The name a data set's decoded arrays are cached under (CACHE_FILE_PATTERN matches it)."""
    return f"{kind}-{image_size}px-{key}.npz"


# The members _save_atomic writes, each a .npy of np.savez's (stored as it is, never deflated).
_CACHE_ARRAYS = ("train", "val", "skipped", "train_labels", "val_labels", "classes")


def _read_cache(path: Path, kind: str, items: list[_Item], image_size: int) -> Splits | None:
    """The arrays a previous run cached for ``items``, or None (with a warning) when the file is
    damaged or not what a run writes: the photos are then decoded again and the cache rewritten,
    as if it were not there. Every member is checked from the archive's directory and its .npy
    header before numpy reads it (a 12 MB deflated file declared 4 million images, a 2.5 KB
    one 286 GiB), and what it holds against the listed photos after."""
    classes = sorted({item.label for item in items})
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if sorted(i.filename for i in members) != sorted(f"{n}.npy" for n in _CACHE_ARRAYS):
                raise ValueError("not the arrays a run caches")
            for info in members:
                _check_cached_member(archive, info)
        with np.load(path, allow_pickle=False) as cached:
            splits = Splits(
                cached["train"], cached["val"], kind, cached["skipped"],
                cached["train_labels"], cached["val_labels"], cached["classes"],
            )  # fmt: skip
        _check_cached(splits, len(items), image_size, classes)
        splits.skipped, splits.classes = int(splits.skipped), classes
        return splits
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"ignored the damaged image cache {path} ({exc}); decoding the images "
                      "again", stacklevel=3)  # fmt: skip
        return None


def _check_cached_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Raise ValueError unless the member is stored as it is and its .npy header declares no
    more bytes than the member holds: numpy allocates what a header declares before reading."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{info.filename} is compressed; a run stores its arrays as they are")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        reader = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)  # fmt: skip
        if reader is None:
            raise ValueError(f"{info.filename} has a .npy header of version {version}")
        shape, _, dtype = reader(member)
    if dtype.hasobject or math.prod(shape) * dtype.itemsize > info.file_size:
        raise ValueError(f"{info.filename} declares {shape} of {dtype}, more than it holds")


def _check_cached(splits: Splits, count: int, image_size: int, classes: list[str]) -> None:
    """Raise ValueError unless ``splits`` (as read, ``skipped`` and ``classes`` still arrays)
    has the shapes and counts decoding ``count`` photos of ``classes`` at ``image_size`` gives."""
    shape = (3, image_size, image_size)
    images = (splits.train, splits.val)
    if any(a.dtype != np.uint8 or a.ndim != 4 or a.shape[1:] != shape for a in images):
        raise ValueError("images not of the run's size")
    skipped = np.asarray(splits.skipped)
    if skipped.shape != () or skipped.dtype.kind not in "iu":
        raise ValueError("a count of another shape")
    if np.asarray(splits.classes).tolist() != classes:
        raise ValueError("another list of species")
    if len(splits.train) + len(splits.val) + int(skipped) != count:
        raise ValueError(f"not the {count} photos listed")
    for labels, pictures in ((splits.train_labels, splits.train), (splits.val_labels, splits.val)):
        if labels.shape != (len(pictures),) or labels.dtype.kind not in "iu":
            raise ValueError("labels not one a photo")
        if len(labels) and not (labels.min() >= 0 and labels.max() < len(classes)):
            raise ValueError("labels outside the species list")


def _save_atomic(path: Path, **arrays: np.ndarray | int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.write_atomic(path, lambda handle: np.savez(handle, **arrays))
