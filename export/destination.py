"""Where ``vae-export`` writes: which folders it may replace, and how, so that no crash leaves
half a model and no file a user put there is ever deleted.

A model is built in a hidden staging folder beside the destination
(``.NAME.bvae-XXXXXXXX.partial``), then swapped in: the old model is renamed aside
(``.NAME.bvae-XXXXXXXX.old``), the new one renamed onto the name, the old one removed; the new
folder takes the old one's permissions. SIGINT and SIGTERM are held back during those renames. The
exporting process holds an ``flock`` on the staging folder and on the old model while it works;
the next export into the same destination removes such folders whose owner is dead, and puts an
old model back when a kill in the swap left the destination missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

from birdvae.runtime import durable, signals
from birdvae.runtime.errors import UserError
from birdvae.runtime.format import (
    MANIFEST_FILE,
    MODEL_FILES,
    Manifest,
    ModelFormatError,
    read_verified,
)

FOLDER_FILES = frozenset({MANIFEST_FILE, *MODEL_FILES})  # what a model folder may hold


def int8_candidate(graph: Path) -> Path:
    """Where quantize.py builds a graph's int8 version, beside it, before keeping or dropping
    it: a staging folder may hold these too."""
    return graph.with_suffix(".int8.onnx")


# What a staging folder may also hold while it is being built: the int8 candidates.
STAGING_FILES = FOLDER_FILES | {
    int8_candidate(Path(name)).name for name in MODEL_FILES if name.endswith(".onnx")
}
# ... and, while a graph is quantized, onnxruntime's working files (quantize.py puts them here,
# not in /tmp, so that a kill leaves none behind where no sweep would look).
QUANTIZER_FOLDER = "quantizer-work"


class DestinationError(UserError, ValueError):
    """A destination vae-export will not write to; the message says why."""


def check_replaceable(destination: Path) -> None:
    """Refuse unless ``destination`` is absent, an empty folder, or a model folder of ours:
    a valid manifest and nothing but the files it lists, each as it was written. A file of a
    model's name that the manifest does not list, or whose bytes changed, is the user's (a
    prior copied in, a checkpoint saved there), and replacing the folder would delete it."""
    if destination.is_symlink():
        raise DestinationError(f"{destination} is a symbolic link; give the folder itself")
    above = next(p for p in destination.parents if p.exists() or p == p.parent)
    if not above.is_dir():  # mkdir would fail after the whole export, naming no reason
        raise DestinationError(f"{destination}: {above} is a file, not a folder")
    longest = durable.longest_name(destination.parent) - len(".partial") + len(".tmp")
    if len(os.fsencode(destination.name)) > longest:  # its staging folder's name adds to it
        raise DestinationError(
            f"{destination}: the folder name is too long (at most {longest} bytes here)"
        )
    _check_takes_folders(destination, above)
    if not destination.exists():
        return
    if not destination.is_dir():
        raise DestinationError(f"{destination} exists and is not a folder")
    entries = sorted(destination.iterdir())
    if not entries:
        return
    foreign = [e.name for e in entries if not _is_our_file(e, FOLDER_FILES)]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        shown = ", ".join(foreign[:3]) + more
        raise DestinationError(
            f"refusing to replace {destination}: it holds {shown}, which vae-export did not "
            f"write; move {'it' if len(foreign) == 1 else 'them'} out or choose another -o"
        )
    try:
        manifest = Manifest.load(destination)
    except ModelFormatError as exc:
        raise DestinationError(
            f"refusing to replace {destination}: it is not a bird-vae model folder ({exc})"
        ) from exc
    graphs = [entry.name for entry in entries if entry.name != MANIFEST_FILE]
    not_as_written = [name for name in graphs if not _as_listed(destination, manifest, name)]
    if not_as_written:
        raise DestinationError(
            f"refusing to replace {destination}: {', '.join(not_as_written)} is not as its "
            "manifest lists it (added or changed since vae-export wrote the folder); move it "
            "out or choose another -o"
        )


def _as_listed(folder: Path, manifest: Manifest, name: str) -> bool:
    """Whether ``name`` in ``folder`` is listed by ``manifest`` with its very size and hash."""
    try:
        read_verified(folder, manifest, name)
    except ModelFormatError:
        return False
    return True


def _is_our_file(entry: Path, names: frozenset[str]) -> bool:
    return entry.name in names and entry.is_file() and not entry.is_symlink()


def _only_ours(folder: Path, names: frozenset[str], staging: bool = False) -> bool:
    """Whether ``folder`` holds nothing but files of ``names`` (and, in a ``staging`` folder,
    the quantizer's working folder)."""
    try:
        return all(_is_our_file(entry, names) or (staging and _is_quantizer_folder(entry))
                   for entry in folder.iterdir())  # fmt: skip
    except OSError:
        return False


# onnxruntime's quantizer makes its working folders with these prefixes (TemporaryDirectory).
_QUANTIZER_TEMPORARIES = ("ort.", "pre.quant.")


def _is_quantizer_folder(entry: Path) -> bool:
    """The quantizer's working folder in a staging folder, holding only onnxruntime's own
    temporary folders (its files inside them are named by it)."""
    if entry.name != QUANTIZER_FOLDER or not entry.is_dir() or entry.is_symlink():
        return False
    return all(inner.name.startswith(_QUANTIZER_TEMPORARIES) and inner.is_dir()
               and not inner.is_symlink() for inner in entry.iterdir())  # fmt: skip


def sweep(destination: Path) -> list[str]:
    """Clear what killed exports into ``destination`` left beside it; returns what was done,
    for the user. Only folders named by our pattern, whose owner is dead, are touched: a staging
    folder or an old model holding only our files is removed; an old model is renamed back when
    the destination is missing (whatever it holds: renaming deletes nothing)."""
    parent = destination.parent
    if not parent.is_dir():
        return []
    partial, old, claimed = [], [], []
    try:
        for entry in parent.iterdir():
            match = durable.STAGING_PATTERN.fullmatch(entry.name)
            if match is None or match["name"] != destination.name:
                continue
            if entry.is_symlink() or not entry.is_dir():
                continue
            fd = durable.claim(entry)  # held until it is removed or renamed back
            if fd is not None:
                claimed.append(fd)
                (partial if match["kind"] == "partial" else old).append(entry)
        return _restore_or_remove(destination, partial, old)
    finally:
        for fd in claimed:
            os.close(fd)


def _restore_or_remove(destination: Path, partial: list[Path], old: list[Path]) -> list[str]:
    """Rename the newest old model back if the destination is missing; remove the rest."""
    parent = destination.parent
    done = []
    if old and not destination.exists() and not destination.is_symlink():
        newest = max(old, key=lambda p: p.stat().st_mtime_ns)
        os.replace(newest, destination)
        durable.fsync_dir(parent)
        old.remove(newest)
        done.append(f"restored {destination} from an export killed while replacing it")
    removed = 0
    for folder in partial + old:
        if _only_ours(folder, STAGING_FILES, staging=folder in partial):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        done.append(f"removed {removed} folder(s) left by an interrupted export")
    return done


@contextlib.contextmanager
def staging(destination: Path) -> Iterator[Path]:
    """A hidden, locked folder beside ``destination``, swapped onto it when the block succeeds
    and removed, with any parent folders made for it, when the block fails."""
    made = [p for p in [destination.parent, *destination.parent.parents] if not p.exists()]
    destination.parent.mkdir(parents=True, exist_ok=True)
    folder, fd = durable.create_locked(
        lambda: _made(destination.parent / durable.staging_name(destination.name, "partial")),
        lambda made: os.open(made, os.O_RDONLY),
    )
    try:
        yield folder
        for entry in folder.iterdir():
            _fsync_file(entry)
        durable.fsync_dir(folder)
        _swap(folder, destination)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        for parent in made:  # deepest first; only the empty ones this call created
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    finally:
        os.close(fd)


def _check_takes_folders(destination: Path, above: Path) -> None:
    """Refuse a destination whose nearest folder takes no new folder (read-only, or a kernel
    file system such as /proc, whose permission bits let root pass), before the photos load,
    not after the whole export with the staging folder's hidden name. Found by making and
    removing an empty folder where the export will make one: a staging folder's name beside the
    destination (so the next export's sweep removes it if a kill came between), else the first
    missing folder on the way to it, which the export makes anyway. A stop waits for the
    removal."""
    if above == destination.parent:
        probe = above / durable.staging_name(destination.name, "partial")
    else:
        probe = next(p for p in [destination, *destination.parents] if p.parent == above)
    with signals.signals_deferred():
        try:
            probe.mkdir(mode=0o700)
        except OSError as exc:
            if probe.is_symlink():  # a link to nothing or to itself "exists" only as a name
                raise DestinationError(
                    f"{destination}: {probe} is a symbolic link that leads nowhere; remove it "
                    "or choose another -o"
                ) from None
            raise DestinationError(
                f"{destination}: {above} does not take new folders ({exc.strerror or exc})"
            ) from None
        with contextlib.suppress(OSError):  # another export's sweep may have taken it
            probe.rmdir()


def _made(folder: Path) -> Path:
    folder.mkdir(mode=0o700)  # private while written; the destination's mode is set at the swap
    return folder


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _keep_modes(folder: Path, destination: Path) -> None:
    """Give the new model folder, and each file that replaces one of the old model's, the old
    one's permissions and group (owner too, for root), as any replaced file keeps them: a
    private model stays private."""
    for entry in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):
            old = os.stat(destination / entry.name, follow_symlinks=False)
            if stat.S_ISREG(old.st_mode):
                durable.keep_owner_and_mode(entry, old)
    durable.keep_owner_and_mode(folder, os.stat(destination))


def _swap(folder: Path, destination: Path) -> None:
    """Rename ``folder`` onto ``destination``, moving an old model aside only for the swap."""
    parent = destination.parent
    with signals.signals_deferred():
        if not destination.exists():
            os.chmod(folder, 0o777 & ~_umask())  # as mkdir would have made it
            os.replace(folder, destination)
            durable.fsync_dir(parent)
            return
        held = durable.hold(destination)
        if held is None:
            raise DestinationError(f"another vae-export is replacing {destination} right now")
        try:
            check_replaceable(destination)  # again: a user may have put a file there meanwhile
            _keep_modes(folder, destination)
            old = parent / durable.staging_name(destination.name, "old")
            os.replace(destination, old)
            try:
                os.replace(folder, destination)
            except BaseException:
                os.replace(old, destination)
                raise
            durable.fsync_dir(parent)
            _remove_old(old, destination)
        finally:
            os.close(held)


def _remove_old(old: Path, destination: Path) -> None:
    """Delete the replaced model: the files its manifest lists, each only while it is as listed
    (size and hash), then the manifest, then the folder, which only an empty folder lets go.
    A file a program wrote into the folder after the last check (through a handle it held
    there), or one it rewrote, is not deleted: the folder stays, and a warning says where. The
    new model is in place by now, so nothing here fails the export."""
    try:
        if (old / MANIFEST_FILE).exists():  # else it was an empty folder
            manifest = Manifest.load(old)
            listed = [name for name in manifest.files if _as_listed(old, manifest, name)]
            for name in [*listed, MANIFEST_FILE]:
                with contextlib.suppress(FileNotFoundError):
                    (old / name).unlink()
        old.rmdir()
    except (OSError, ModelFormatError):
        try:
            others = ", ".join(sorted(entry.name for entry in old.iterdir())[:3])
        except OSError:
            others = "files"
        warnings.warn(
            f"kept {old}, the model {destination} held before: it holds {others}, which "
            "vae-export did not write or could not delete; move what you need out of it and "
            "delete it",
            stacklevel=2,
        )
