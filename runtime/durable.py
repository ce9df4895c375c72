"""Files that are whole or absent, and the sweep of what a killed process left behind.

Every file bird-vae writes beside a user's data goes through a hidden temporary in the same
folder (``.NAME.bvae-XXXXXXXX.tmp``), is fsynced, renamed over ``NAME`` and the folder fsynced,
so a crash or power cut leaves the old file or the new one. While a temporary is being written,
its writer holds an ``flock`` on it: the lock dies with the process, even under SIGKILL, so the
next run can tell a temporary left by a dead writer (removed) from one a live writer still owns
(left alone). The ``bvae-`` tag and the 8 hex digits say whose it is: a user's own
``.NAME.backup.tmp`` or ``.NAME.20240101.tmp`` is never taken for ours. Where ``fcntl`` does not
exist, nothing is ever swept.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from collections.abc import Callable, Container
from pathlib import Path
from typing import BinaryIO

from .errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock, so no proof that a writer is dead
    fcntl = None  # type: ignore[assignment]

TAG = "bvae-"  # in every temporary's and staging folder's name, before 8 random hex digits


def _hidden_names(kinds: str) -> re.Pattern[str]:
    """The names ``_hidden_name`` gives, for the kinds ``kinds`` (a regex alternation)."""
    return re.compile(r"\.(?P<name>.+)\." + TAG + r"[0-9a-f]{8}\.(?P<kind>" + kinds + ")")


TMP_PATTERN = _hidden_names("tmp")
# vae-export's folders beside a model it is writing or replacing (export/destination.py); a
# run folder holding a killed export's must not be taken for the user's (training/runfolder.py).
STAGING_PATTERN = _hidden_names("partial|old")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def lock(fd: int) -> bool:
    """Take an exclusive flock on an open file or folder; False when another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def hold(path: Path) -> int | None:
    """Open and lock ``path`` (a file or folder); the descriptor to close when done, or None
    when another process holds it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    if lock(fd):
        return fd
    os.close(fd)
    return None


def claim(path: Path) -> int | None:
    """Lock ``path`` (a file or folder) if its writer is dead, for the caller to remove it while
    it holds the descriptor (then close it); None when a live process holds it, it is gone, or
    it cannot be told. Removing under the lock is what keeps a writer that has just created the
    path, and not yet locked it, from losing it: see ``create_locked``."""
    if fcntl is None or path.is_symlink():
        return None
    try:
        fd = hold(path)
    except OSError:
        return None
    if fd is None or not _names(path, fd):
        if fd is not None:
            os.close(fd)
        return None
    return fd


def create_locked(make: Callable[[], Path], opener: Callable[[Path], int]) -> tuple[Path, int]:
    """``make()`` a new file or folder under a fresh name and lock it; the name and descriptor.

    Between the making and the locking a sweep may take the new path for a dead writer's; it
    removes only what it has locked (``claim``), so if our lock fails, or the path no longer
    names what we locked, the sweep has it, and we start again under another name.
    """
    for _ in range(100):
        path = make()
        try:
            fd = opener(path)
        except FileNotFoundError:
            if path.parent.is_dir():  # made, then swept before it could be opened
                continue
            raise
        except BaseException:
            _remove(path)
            raise
        try:
            if lock(fd) and _names(path, fd):
                return path, fd
        except BaseException:  # a signal while locking: what we made goes, as after the lock
            if _names(path, fd):
                _remove(path)
            os.close(fd)
            raise
        os.close(fd)
    raise OSError(
        errno.EAGAIN,
        "cannot make a new file in this folder: it does not take new files (as /proc does), "
        "or another process keeps removing them",
        str(path.parent),
    )


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open on ``fd``."""
    try:
        there, held = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino)


def write_atomic(
    path: Path,
    write: Callable[[BinaryIO], object],
    sync: bool = True,
    before_replace: Callable[[], object] | None = None,
) -> None:
    """Call ``write(handle)`` on a locked temporary beside ``path``, then rename it into place.
    ``before_replace()``, called just before the rename, may refuse it by raising (the
    temporary is removed and ``path`` left as it is).

    The file is whole or absent after a kill whatever ``sync`` says; ``sync`` (fsync of the file
    and the folder) makes it so after a power cut too, at several milliseconds a file. As a plain
    ``open(path, "w")`` would: a new file gets the umask's permissions, a file that is replaced
    keeps its own and its owner and group (as far as this process may give them), and one this
    process may not write is refused (PermissionError), not renamed over. A failed write names
    ``path`` and leaves what was there.
    """
    path = link_target(Path(path))  # written through, as open() would, not replaced by a file
    kept = _stat_to_keep(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        tmp, fd = create_locked(
            lambda: path.with_name(temporary_name(path.name)),
            lambda new: os.open(new, flags, 0o666),
        )
    except OSError as exc:  # name the file the user asked for, not our hidden temporary
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if kept is not None:
                keep_owner_and_mode(tmp, kept)
            write(handle)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
            if before_replace is not None:
                before_replace()
            os.replace(tmp, path)  # still locked: a sweep never takes a file being renamed
        if sync:
            fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno is None or exc.filename not in (None, str(tmp)):  # not about this file
            raise
        # A full disk or a failed rename names the user's file, not the temporary now gone.
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def link_target(path: Path) -> Path:
    """The file a write to ``path`` reaches: ``path``, or the end of the symbolic links from
    it; a loop of links is an OSError (ELOOP) naming ``path``, as open() would raise."""
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    if target.is_symlink():  # realpath stops where the links go round
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
    return target


def _hidden_name(name: str, kind: str) -> str:
    return f".{name}.{TAG}{os.urandom(4).hex()}.{kind}"


def temporary_name(name: str) -> str:
    """The hidden temporary a file called ``name`` is written through."""
    return _hidden_name(name, "tmp")


def staging_name(name: str, kind: str) -> str:
    """The hidden folder beside ``name`` that a model is built in (``partial``) or an old one
    is renamed to while it is replaced (``old``)."""
    return _hidden_name(name, kind)


def longest_name(folder: Path) -> int:
    """The longest file name ``write_atomic`` can write in ``folder``: its temporary's name
    adds ``.``, the tag and the suffix to the file system's own limit."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    return limit - len(temporary_name(""))


def _stat_to_keep(path: Path) -> os.stat_result | None:
    """The regular file at ``path`` (None when there is none), after checking this process may
    write it: a plain write would keep its owner, group and permission bits, so the file that
    replaces it takes them."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    check_not_special(path, info)
    if not stat.S_ISREG(info.st_mode):
        return None
    if not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    return info


_SPECIAL_KINDS = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def check_not_special(path: Path, info: os.stat_result | None = None) -> None:
    """Refuse (UserError) to write ``path`` when it is a pipe, socket or device: a file is
    written whole by renaming a finished temporary over it, which would delete the pipe (and
    leave its reader waiting) rather than write into it."""
    if info is None:
        try:
            info = os.stat(path)
        except OSError:
            return
    kind = _SPECIAL_KINDS.get(stat.S_IFMT(info.st_mode))
    if kind is not None:
        raise UserError(
            f"{path} is {kind}, not a file: outputs are written whole, by renaming a finished "
            "file into place; give a file's name"
        )


def keep_owner_and_mode(tmp: Path, kept: os.stat_result) -> None:
    """Give ``tmp`` the owner, group and permission bits of the file it replaces (``kept``), as
    far as this process may: only root gives a file away, and a group is kept where the user is
    in it."""
    if hasattr(os, "chown"):  # not on Windows
        for owner in (kept.st_uid, -1):
            try:
                os.chown(tmp, owner, kept.st_gid)
                break
            except OSError:
                continue
    os.chmod(tmp, stat.S_IMODE(kept.st_mode))


def write_bytes_atomic(
    path: Path, data: bytes, sync: bool = True, before_replace: Callable[[], object] | None = None
) -> None:
    write_atomic(path, lambda handle: handle.write(data), sync, before_replace)


def copy_atomic(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source``, all at once."""
    with open(source, "rb") as handle:
        write_atomic(target, lambda out: shutil.copyfileobj(handle, out, 1 << 20))


def sweep_temporaries(folder: Path, names: Container[str]) -> list[Path]:
    """Remove ``.NAME.bvae-XXXXXXXX.tmp`` files in ``folder`` whose NAME is in ``names`` and whose
    writer is dead; returns what was removed. Nothing else is touched, and one that cannot be
    removed (another user's, in a shared folder) is left as it is."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        match = TMP_PATTERN.fullmatch(entry.name)
        if match is None or match["name"] not in names:
            continue
        fd = claim(entry) if entry.is_file() else None
        if fd is None:
            continue
        try:
            entry.unlink(missing_ok=True)
        except OSError:
            continue
        finally:
            os.close(fd)
        removed.append(entry)
    return removed
