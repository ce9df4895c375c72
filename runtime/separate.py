"""``bird-gen --separate DIR``: each bird as its own PNG, DIR/bird_00000.png and on.

Nothing of the user's is written over or through: the folder is held against a second run
writing into it at once, birds of an earlier run are replaced only with --force, a link or a
folder at a bird's name never is, and each name is checked again just before its rename, since
a file may be put there while the birds are drawn. A run stopped part way says how many whole
birds it left, and removes the folders it made while they hold nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from . import durable, images
from .command import counted, echo, with_progress
from .errors import UserError

BIRD_FILE = re.compile(r"bird_\d+\.png")  # what --separate writes


def check_folder(folder: Path) -> None:
    """Refuse a --separate folder the birds could not be written to, before the model runs:
    a link to nothing, or a folder (or the nearest one above it, where it is still to be
    made) that is not a writable folder."""
    if folder.is_symlink() and not folder.exists():
        raise UserError(f"{folder} is a link to nothing; give a folder")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK):
        raise UserError(f"{folder}: the folder {existing} is not writable")


def write_birds(
    draw: Callable[[], Iterator[np.ndarray]], n: int, folder: Path, scale: int, force: bool
) -> int:
    """The n birds ``draw()`` yields in batches, as folder/bird_NNNNN.png, one batch in memory
    at a time. ``draw`` is called only once the folder's older birds passed their check, since
    starting it opens the model's graphs. Returns how many older birds the folder still holds
    besides them."""
    _older_birds(folder, force)  # refused before any work
    batches = draw()
    first = next(batches)  # a model that cannot run fails here, before the folder is made
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    try:
        with _writing_into(folder):
            older = _older_birds(folder, force)  # again: another run may have written meanwhile
            _write_separate(itertools.chain([first], batches), n, folder, scale, names, force)
    except BaseException:
        for parent in made:  # only the ones this run made, and only while they hold nothing
            with contextlib.suppress(OSError):
                parent.rmdir()
        if names:  # stopped or failed part way: what is on disk, and how to finish
            echo(f"note: {len(names)} of the {n} birds were written to {folder}/ (each whole); "
                 "the same command with --force draws them all again", err=True)  # fmt: skip
        raise
    return len(older - names)


class _BirdFiles:
    """The names --separate writes, as a container for ``durable.sweep_temporaries``."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and BIRD_FILE.fullmatch(name) is not None


def _older_birds(folder: Path, force: bool) -> set[str]:
    """The birds ``folder`` already holds, after sweeping what killed runs left there; refused
    unless ``force``, so two runs' birds are never mixed unnoticed."""
    if not folder.is_dir():
        return set()
    durable.sweep_temporaries(folder, _BirdFiles())
    entries = [entry for entry in folder.iterdir() if entry.name in _BirdFiles()]
    for entry in entries:  # never written over or through, --force or not
        _check_bird_target(entry, force=True)
    if entries and not force:
        unmarked = sum(not images.written_by_bird_gen(entry) for entry in entries)
        held = (
            f"{counted(len(entries), 'PNG')} with a bird's name ({unmarked} not marked as "
            "bird-gen's)"
            if unmarked
            else f"{counted(len(entries), 'bird')} of an earlier run"
        )
        raise UserError(
            f"{folder} already holds {held}; give --force to write over them, or another folder"
        )
    return {entry.name for entry in entries}


@contextlib.contextmanager
def _writing_into(folder: Path) -> Iterator[None]:
    """Hold ``folder`` while this run writes its birds: two runs at once would each find it
    empty of older birds and write over each other's. Where flock does not exist (Windows,
    which cannot open a folder either) nothing is held."""
    if durable.fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if not durable.lock(fd):
            raise UserError(
                f"another bird-gen is writing birds into {folder}; wait for it, or give "
                "another folder"
            )
        yield
    finally:
        os.close(fd)


def _write_separate(
    batches: Iterator[np.ndarray], n: int, folder: Path, scale: int, names: set[str], force: bool
) -> None:
    """Write each bird as ``folder/bird_NNNNN.png``, adding each name to ``names`` once the
    bird is on disk, so a run stopped part way can say what it left: a stop that lands after
    a bird's rename but before its write returns counts that bird too (its file is new), and
    a name refused just before its rename (a file put there meanwhile) does not."""
    digits = max(5, len(str(n - 1)))
    for batch in with_progress(batches, n, "writing birds"):
        for tile in images.to_uint8_hwc(batch):
            target = folder / f"bird_{len(names):0{digits}d}.png"
            _write_bird(images.upscale(tile, scale), target, force, names)


def _write_bird(pixels: np.ndarray, target: Path, force: bool, names: set[str]) -> None:
    """One bird of ``_write_separate``, its name added to ``names`` once a new file is at
    ``target`` after the name passed its last check."""
    before = _identity(target)  # an older bird's, with --force
    checked = False

    def check() -> None:
        nonlocal checked
        _check_bird_target(target, force)
        checked = True  # from here on a new file at the name is this bird

    try:
        images.save_png(pixels, target, before_replace=check)
    finally:
        if checked and _identity(target) not in (None, before):
            names.add(target.name)


def _check_bird_target(target: Path, force: bool) -> None:
    """Refuse to write a bird at ``target`` when a link, anything but a file, or a file that is
    no PNG is there, even with --force (a bird is never written through a link, out of the
    folder, nor over a user's notes that only have a bird's name; a PNG may be a bird of a
    bird-gen from before its PNGs were marked), or, without --force, any file. Made for the
    folder's birds before any work and for each bird's name just before its rename, since a
    file may be put there meanwhile."""
    if target.is_symlink() or (target.exists() and not target.is_file()):
        kind = "a link" if target.is_symlink() else "not a file"
        raise UserError(f"{target} is {kind}, not a bird of an earlier run; move it or choose "
                        "another folder")  # fmt: skip
    if target.exists() and not force:
        raise UserError(f"{target} appeared while the birds were written; give --force to "
                        "write over it, or another folder")  # fmt: skip
    if target.exists() and not images.is_png(target):
        raise UserError(f"{target} has a bird's name but is not a PNG bird-gen wrote; move it "
                        "or choose another folder")  # fmt: skip


def _identity(path: Path) -> tuple[int, int] | None:
    """The file at ``path`` (device and inode), None where there is none: a rename puts a
    new one there."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
