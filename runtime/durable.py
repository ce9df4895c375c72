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
import signal
import stat
import sys
import threading
from collections.abc import Callable, Container, Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no flock, so no proof that a writer is dead
    fcntl = None  # type: ignore[assignment]

TAG = "bvae-"  # in every temporary's and staging folder's name, before 8 random hex digits
TMP_PATTERN = re.compile(r"\.(?P<name>.+)\." + TAG + r"[0-9a-f]{8}\.tmp")
EXIT_SIGTERM = 128 + signal.SIGTERM


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


def is_abandoned(path: Path) -> bool:
    """Whether no live process holds ``path``'s lock (so its writer died); False when unsure."""
    if fcntl is None or path.is_symlink():
        return False
    try:
        fd = hold(path)
    except OSError:
        return False
    if fd is None:
        return False
    os.close(fd)
    return True


def write_atomic(path: Path, write: Callable[[BinaryIO], object], sync: bool = True) -> None:
    """Call ``write(handle)`` on a locked temporary beside ``path``, then rename it into place.

    The file is whole or absent after a kill whatever ``sync`` says; ``sync`` (fsync of the file
    and the folder) makes it so after a power cut too, at several milliseconds a file. As a plain
    ``open(path, "w")`` would: a new file gets the umask's permissions, a file that is replaced
    keeps its own, and one this process may not write is refused (PermissionError), not renamed
    over.
    """
    path = Path(path)
    mode = _mode_to_keep(path)
    tmp = path.with_name(f".{path.name}.{TAG}{os.urandom(4).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            lock(handle.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
            write(handle)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
            os.replace(tmp, path)  # still locked: a sweep never takes a file being renamed
        if sync:
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _mode_to_keep(path: Path) -> int | None:
    """The permission bits of the regular file at ``path`` (None when there is none), after
    checking this process may write it."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    return stat.S_IMODE(info.st_mode)


def write_bytes_atomic(path: Path, data: bytes, sync: bool = True) -> None:
    write_atomic(path, lambda handle: handle.write(data), sync)


def copy_atomic(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source``, all at once."""
    with open(source, "rb") as handle:
        write_atomic(target, lambda out: shutil.copyfileobj(handle, out, 1 << 20))


def sweep_temporaries(folder: Path, names: Container[str]) -> list[Path]:
    """Remove ``.NAME.XXXXXXXX.tmp`` files in ``folder`` whose NAME is in ``names`` and whose
    writer is dead; returns what was removed. Nothing else is touched, and one that cannot be
    removed (another user's, in a shared folder) is left as it is."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        match = TMP_PATTERN.fullmatch(entry.name)
        if match is None or match["name"] not in names:
            continue
        if entry.is_file() and is_abandoned(entry):
            try:
                entry.unlink(missing_ok=True)
            except OSError:
                continue
            removed.append(entry)
    return removed


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """SIGTERM raises SystemExit(143), so ``finally`` and ``except BaseException`` blocks clean
    up as they do for Ctrl-C, instead of the process vanishing mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(*_: object) -> None:
        print("error: terminated (SIGTERM)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for a few renames that must all happen or none; one that
    came meanwhile is raised again as soon as the block ends.

    Python-level handlers, not a signal mask: a mask covers one thread, and the kernel hands a
    signal to any thread (torch's and onnxruntime's included) that does not block it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda n, _f: caught.append(n)) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])
