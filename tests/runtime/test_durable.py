"""What an atomic write owes the file it replaces: its permissions, and a refusal where a plain
write would be refused; and a sweep that leaves alone what it cannot remove."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from birdvae.runtime import durable
from birdvae.runtime.errors import UserError


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    private = tmp_path / "birds.png"
    private.write_bytes(b"old")
    private.chmod(0o600)
    durable.write_bytes_atomic(private, b"new")
    assert private.read_bytes() == b"new" and _mode(private) == 0o600


@pytest.mark.parametrize("sync", [True, False])
def test_a_synced_write_reaches_the_disk_before_its_rename_and_the_rename_after(
    tmp_path, monkeypatch, sync
):
    """A kill leaves the old file or the new one either way; after a power cut only the fsyncs
    do: the file's bytes before the rename names them, the folder's entry after it."""
    events: list[str] = []
    real_fsync, real_replace, real_dir = os.fsync, os.replace, durable.fsync_dir

    def fsync(fd: int) -> None:
        events.append("fsync " + ("file" if stat.S_ISREG(os.fstat(fd).st_mode) else "folder"))
        real_fsync(fd)

    def replace(source, target) -> None:
        events.append("rename")
        real_replace(source, target)

    def fsync_dir(folder: Path) -> None:
        events.append("fsync_dir " + ("the folder" if Path(folder) == tmp_path else str(folder)))
        real_dir(folder)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(durable, "fsync_dir", fsync_dir)
    durable.write_atomic(tmp_path / "out.bin", lambda handle: handle.write(b"bytes"), sync=sync)
    assert (tmp_path / "out.bin").read_bytes() == b"bytes"
    assert [e for e in events if e != "fsync folder"] == (
        ["fsync file", "rename", "fsync_dir the folder"] if sync else ["rename"]
    )


def test_a_new_file_gets_the_umask_permissions(tmp_path):
    previous = os.umask(0o027)
    try:
        durable.write_bytes_atomic(tmp_path / "new.png", b"new")
        with open(tmp_path / "plain.png", "wb") as handle:
            handle.write(b"plain")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "new.png") == _mode(tmp_path / "plain.png") == 0o640


def test_a_file_this_process_may_not_write_is_refused_and_left_whole(tmp_path, monkeypatch):
    locked = tmp_path / "birds.png"
    locked.write_bytes(b"the user's")
    real_access = os.access
    monkeypatch.setattr(  # root may write anything, so the test plays a user who may not
        durable.os, "access", lambda p, m: False if Path(p) == locked else real_access(p, m)
    )
    with pytest.raises(PermissionError):
        durable.write_bytes_atomic(locked, b"new")
    assert locked.read_bytes() == b"the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds.png"]


def test_a_temporary_that_cannot_be_removed_is_skipped(tmp_path, monkeypatch):
    others = tmp_path / ".birds.png.bvae-0badf00d.tmp"  # another user's, in a sticky folder
    mine = tmp_path / ".notes.png.bvae-0a1b2c3d.tmp"
    others.write_bytes(b"theirs")
    mine.write_bytes(b"a dead writer's")
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self == others:
            raise PermissionError(1, "Operation not permitted", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    assert durable.sweep_temporaries(tmp_path, {"birds.png", "notes.png"}) == [mine]
    assert others.exists() and not mine.exists()


def _sweep_before_the_first_lock(monkeypatch, sweep) -> list:
    """Make ``durable.lock`` run ``sweep`` once, just before a writer's first lock: the moment
    a new temporary exists under its sweepable name but is not yet locked."""
    real_lock, swept = durable.lock, []

    def racing_lock(fd: int) -> bool:
        if not swept:
            swept.append(None)  # the sweep's own locks go straight through
            swept[0] = sweep()
        return real_lock(fd)

    monkeypatch.setattr(durable, "lock", racing_lock)
    return swept


@pytest.mark.skipif(durable.fcntl is None, reason="no flock: nothing is ever swept")
def test_a_sweep_between_creating_and_locking_a_temporary_loses_nothing(tmp_path, monkeypatch):
    out = tmp_path / "birds.png"
    swept = _sweep_before_the_first_lock(
        monkeypatch, lambda: durable.sweep_temporaries(tmp_path, {out.name})
    )
    durable.write_bytes_atomic(out, b"birds")
    assert len(swept[0]) == 1  # the sweep did take the writer's first, unlocked temporary
    assert out.read_bytes() == b"birds"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_an_output_that_is_a_symlink_is_written_through(tmp_path):
    target = tmp_path / "www" / "pub.png"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "link.png"
    link.symlink_to(Path("www") / "pub.png")
    durable.write_bytes_atomic(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_a_file_that_cannot_be_created_is_named_as_the_user_gave_it(tmp_path):
    out = tmp_path / "missing" / "birds.png"
    with pytest.raises(FileNotFoundError) as raised:
        durable.write_bytes_atomic(out, b"birds")
    assert raised.value.filename == str(out)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="only root gives away")
def test_a_replaced_file_keeps_its_owner_and_group(tmp_path):
    shared = tmp_path / "shared.png"
    shared.write_bytes(b"old")
    os.chown(shared, 65534, 65534)
    durable.write_bytes_atomic(shared, b"new")
    info = os.stat(shared)
    assert shared.read_bytes() == b"new" and (info.st_uid, info.st_gid) == (65534, 65534)


def test_a_write_that_fails_names_the_users_file_and_keeps_the_old_one(tmp_path):
    birds = tmp_path / "birds.png"
    birds.write_bytes(b"the user's")

    def full_disk(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as raised:
        durable.write_atomic(birds, full_disk)
    assert raised.value.filename == str(birds) and raised.value.errno == 28
    assert birds.read_bytes() == b"the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds.png"]


def test_an_error_that_is_no_file_errors_keeps_its_words(tmp_path):
    """PIL's OSError("encoder error -2 ...") became "[Errno None] None: 'birds.png'"."""

    def encoder_fails(handle):
        raise OSError("encoder error -2 when writing image file")

    with pytest.raises(OSError, match="encoder error -2"):
        durable.write_atomic(tmp_path / "birds.png", encoder_fails)
    assert list(tmp_path.iterdir()) == []


def test_a_loop_of_links_is_refused_as_a_plain_write_would_refuse_it(tmp_path):
    """The loop was replaced by a plain file, where open() fails with ELOOP."""
    loop = tmp_path / "loop.png"
    loop.symlink_to("loop.png")
    with pytest.raises(OSError) as raised:
        durable.write_bytes_atomic(loop, b"birds")
    assert raised.value.errno == errno.ELOOP and raised.value.filename == str(loop)
    assert loop.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["loop.png"]


@pytest.mark.parametrize("through_a_link", [False, True])
def test_a_pipe_is_refused_not_replaced_by_a_file(tmp_path, through_a_link):
    """Renaming a finished file over a named pipe would delete it and leave its reader waiting."""
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    target = pipe
    if through_a_link:
        target = tmp_path / "link.png"
        target.symlink_to(pipe)
    with pytest.raises(UserError, match="is a named pipe, not a file"):
        durable.write_bytes_atomic(target, b"new")
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({pipe.name, target.name})


def test_bird_gen_refuses_a_pipe_as_its_output_before_any_work(tmp_path, tiny_model):
    from click.testing import CliRunner

    from birdvae.runtime.cli import main

    pipe = tmp_path / "birds.png"
    os.mkfifo(pipe)
    result = CliRunner().invoke(main, ["-m", str(tiny_model), "--n", "2", "-o", str(pipe)])
    assert result.exit_code == 2 and "is a named pipe, not a file" in result.output
    assert stat.S_ISFIFO(os.stat(pipe).st_mode) and len(list(tmp_path.iterdir())) == 1


def test_separate_birds_that_cannot_be_written_leave_no_folder_made_for_them(
    tmp_path, tiny_model, monkeypatch
):
    from click.testing import CliRunner

    from birdvae.runtime import images
    from birdvae.runtime.cli import main

    def full(_image: object, path: Path, **_: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(images, "save_png", full)
    out = tmp_path / "x" / "y" / "z"
    result = CliRunner().invoke(main, ["-m", str(tiny_model), "--n", "3", "--separate", str(out)])
    assert result.exit_code == 2 and "No space left on device" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_the_folder_itself_is_synced_after_the_rename(tmp_path, monkeypatch):
    """After a power cut the new name is only on disk if the folder's own entry was fsynced:
    fsync_dir must reach the folder, not just open it."""
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        synced.append((info.st_dev, info.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    durable.write_bytes_atomic(tmp_path / "out.bin", b"bytes")
    folder, written = os.stat(tmp_path), os.stat(tmp_path / "out.bin")
    assert synced == [(written.st_dev, written.st_ino), (folder.st_dev, folder.st_ino)]


def test_a_socket_is_refused_not_replaced_by_a_file(tmp_path):
    """A server's socket renamed over by a PNG would cut it off from its clients for good."""
    import socket

    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix sockets")
    path = tmp_path / "birds.png"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(UserError, match="is a socket, not a file"):
            durable.write_bytes_atomic(path, b"new")
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["birds.png"]


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_a_device_is_refused_before_anything_is_written():
    """``-o /dev/null`` run as root would otherwise replace the system's /dev/null by a PNG;
    only the check is run here, so a failing test cannot do that."""
    with pytest.raises(UserError, match="/dev/null is a character device, not a file"):
        durable.check_not_special(Path("/dev/null"))
