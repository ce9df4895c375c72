"""The one rule every command follows: a user's mistake is one ``error:`` line and its exit status,
a bug keeps its traceback, a warning is one ``warning:`` line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import click
import pytest

from birdvae.runtime import cli as bird_gen
from birdvae.runtime.command import Command, echo, one_line, printable
from birdvae.runtime.errors import UserError
from birdvae.runtime.format import ModelFormatError

from .conftest import invoke


class _Failed(UserError):
    exit_code = 1


def _command(action):
    @click.command(cls=Command)
    def command() -> None:
        action()

    return command


def _raise(exc: BaseException):
    def action() -> None:
        raise exc

    return action


@pytest.mark.parametrize(
    ("exc", "status", "line"),
    [
        (UserError("no such data\nfolder"), 2, "error: no such data folder"),
        (ModelFormatError("manifest is malformed"), 2, "error: manifest is malformed"),
        (_Failed("parity check failed"), 1, "error: parity check failed"),
        (
            PermissionError(13, "Permission denied", "/x/b.png"),
            2,
            "error: /x/b.png: Permission denied",
        ),
    ],
)
def test_user_errors_end_in_one_line_with_their_status(exc, status: int, line: str) -> None:
    result = invoke(_command(_raise(exc)))
    assert result.exit_code == status and isinstance(result.exception, SystemExit)
    assert result.stderr.splitlines() == [line]


def test_running_out_of_memory_is_one_line_that_says_what_to_do() -> None:
    result = invoke(_command(_raise(MemoryError())))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: ran out of memory; close other programs, or ask for less at once (a smaller "
        "--batch, fewer photos)"
    ]


@pytest.mark.parametrize("value", ["1", "yes"])
def test_birdvae_traceback_shows_where_a_one_line_error_came_from(monkeypatch, value) -> None:
    def deep_inside() -> None:
        raise UserError("no such data folder")

    monkeypatch.setenv("BIRDVAE_TRACEBACK", value)
    result = invoke(_command(deep_inside))
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr and "deep_inside" in result.stderr
    assert result.stderr.splitlines()[-1] == "error: no such data folder"
    monkeypatch.setenv("BIRDVAE_TRACEBACK", "0")
    assert invoke(_command(deep_inside)).stderr.splitlines() == ["error: no such data folder"]


@pytest.mark.parametrize("exc", [ValueError("a bug"), KeyError("a bug"), AssertionError()])
def test_anything_else_is_a_bug_and_keeps_its_traceback(exc: Exception) -> None:
    result = invoke(_command(_raise(exc)))
    assert result.exception is exc


def test_a_bug_inside_bird_gen_is_not_reported_as_a_user_mistake(monkeypatch, tiny_model, out):
    """A ValueError from inside a command (numpy's, say) is a bug, not a user's mistake."""

    def broken(*_args: object, **_kwargs: object):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(bird_gen.BirdVAE, "_decode", broken)
    result = invoke(bird_gen.main, "--model", str(tiny_model), "-o", str(out / "b.png"))
    assert isinstance(result.exception, ValueError)
    assert list(out.iterdir()) == []


def test_warnings_print_as_one_line() -> None:
    def action() -> None:
        warnings.warn("overflow encountered\nin cast", RuntimeWarning, stacklevel=1)

    result = invoke(_command(action))
    assert result.exit_code == 0
    assert result.stderr.splitlines() == ["warning: overflow encountered in cast"]


def test_usage_errors_name_the_help() -> None:
    result = invoke(_command(lambda: None), "--colour", "red")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "--help" in line


def test_terminal_control_characters_are_shown_escaped() -> None:
    assert printable("plain text, ünïcode") == "plain text, ünïcode"
    assert printable("\x1b[2J\x1b]0;owned\x07red") == "\\x1b[2J\\x1b]0;owned\\x07red"
    assert one_line("two\nlines\r\x1b[1A") == "two lines \\x1b[1A"
    result = invoke(_command(_raise(UserError("bad \x1b[31mred"))))
    assert result.stderr.splitlines() == ["error: bad \\x1b[31mred"]


def test_an_os_error_without_a_file_name_still_says_what() -> None:
    result = invoke(_command(_raise(OSError(28, "No space left on device"))))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: [Errno 28] No space left on device"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_standard_output_is_named_as_what_failed(tmp_path: Path) -> None:
    """The PNG is written whole before its line is printed; an error naming no stream read as
    if the picture had failed."""
    out = tmp_path / "birds.png"
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-c", "from birdvae.runtime.entry import main; main()", "--n", "2",
             "-o", str(out)],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2 and out.stat().st_size > 0
    assert result.stderr.splitlines() == [
        "warning: standard output: No space left on device; the work goes on, its lines are "
        "dropped",
        "error: standard output: No space left on device",
    ]


def test_a_reader_that_has_gone_ends_nothing(tmp_path: Path) -> None:
    """``bird-gen ... | head -1``: the reader closing its end is its own choice, not a failure
    (the command ended with status 1 and no word, its picture written)."""
    out = tmp_path / "birds.png"
    child = subprocess.Popen(
        [sys.executable, "-c", "from birdvae.runtime.entry import main; main()", "--n", "2",
         "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    child.stdout.close()  # gone before the command's first line
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert err == "" and out.stat().st_size > 0


def _full_standard_output():
    """click.echo as it fails with standard output on a full disk, standard error working."""
    real = click.echo

    def echo_to(message=None, file=None, nl=True, err=False, color=None):
        if not err:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(message, file, nl, err, color)

    return mock.patch("click.echo", echo_to)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
def test_lines_that_cannot_be_written_never_stop_the_work() -> None:
    """Each line after a failed one is dropped; the command's own work goes on to its end, and
    only then does the failure become its error. In a process not the command's own (here a
    test runner's) no descriptor is moved, and none leaks: one leaked per failed line."""
    done = []
    before = _open_descriptors()

    def action() -> None:
        with _full_standard_output():
            for n in range(20):
                echo(f"line {n}")
        done.append(True)

    result = invoke(_command(action))
    assert done == [True] and result.exit_code == 2
    assert result.stderr.splitlines() == [
        "warning: standard output: No space left on device; the work goes on, its lines are "
        "dropped",
        "error: standard output: No space left on device",
    ]
    assert _open_descriptors() == before


def test_a_standard_error_that_fails_too_keeps_the_errors_status() -> None:
    """With both streams on a full disk, the error line that cannot be written raised again
    inside the handler of the first, and a user's mistake (status 2) ended with status 1."""

    def nothing_writes(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device")

    def action() -> None:
        warnings.warn("a warning nobody can read", UserWarning, stacklevel=1)
        echo("a line")
        raise UserError("a bad flag")

    with mock.patch("click.echo", nothing_writes):
        result = invoke(_command(action))
    assert result.exit_code == 2, result.exception


def test_a_librarys_reason_is_its_first_line_bounded() -> None:
    from birdvae.runtime.errors import MAX_REASON, first_line

    assert first_line(ValueError("bad value\n  at line 3")) == "bad value"
    assert first_line(KeyError()) == "KeyError"
    announced = RuntimeError("Error(s) in loading state_dict for VAE:\n\tMissing key(s): a, b")
    assert first_line(announced) == "Error(s) in loading state_dict for VAE: Missing key(s): a, b"
    long = first_line(RuntimeError("Missing key(s): " + ", ".join(f"k{i}" for i in range(900))))
    assert len(long) == MAX_REASON and long.endswith("...")
    # torch.onnx colours its messages for a terminal; the reason keeps the words only.
    coloured = RuntimeError("Failed to export. \x1b[96mThis is step 1/3\x1b[0m of exporting")
    assert first_line(coloured) == "Failed to export. This is step 1/3 of exporting"


def test_a_bug_anywhere_in_a_failures_chain_is_found() -> None:
    from birdvae.runtime.errors import caused_by_bug

    def chained(inner: BaseException, outer: BaseException, context: bool = False):
        try:
            try:
                raise inner
            except BaseException as exc:
                if context:
                    raise outer  # noqa: B904 (the chain through __context__ is the point)
                raise outer from exc
        except BaseException as caught:
            return caught

    assert caused_by_bug(chained(AttributeError("x"), RuntimeError("wrapped")))
    assert caused_by_bug(chained(KeyError("k"), RuntimeError("during"), context=True))
    assert caused_by_bug(TypeError("direct"))
    assert not caused_by_bug(chained(OSError("disk"), RuntimeError("wrapped")))
    assert not caused_by_bug(RuntimeError("an exporter's limit"))
    try:
        try:
            raise KeyError("a library's own lookup")
        except KeyError:
            raise ValueError("bad input, said plainly") from None
    except ValueError as hidden:
        assert not caused_by_bug(hidden)  # the library chose to hide that context
    looped = RuntimeError("a")
    looped.__cause__ = RuntimeError("b")
    looped.__cause__.__cause__ = looped  # a cycle ends the walk instead of hanging it
    assert not caused_by_bug(looped)


def test_a_removed_working_folder_is_one_line_before_anything_runs(monkeypatch) -> None:
    ran = []

    def removed() -> str:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr("os.getcwd", removed)
    result = invoke(_command(lambda: ran.append(True)))
    assert result.exit_code == 2 and ran == []
    (line,) = result.stderr.splitlines()
    assert "current folder no longer exists" in line
    assert invoke(_command(lambda: ran.append(True)), "--help").exit_code == 0  # help reads no path


@pytest.mark.skipif(sys.platform == "win32", reason="Windows cannot remove a folder in use")
def test_bird_gen_in_a_removed_folder_says_so(tmp_path) -> None:
    """Run from a folder the shell's cwd no longer names: the default ``birds.png`` is relative."""
    gone = tmp_path / "gone"
    gone.mkdir()
    start = "from birdvae.runtime.entry import main; main()"
    script = f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -c "{start}" --n 1'
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: the current folder no longer exists (it was removed); "
        "cd to a folder that exists and run the command again"
    ]
    assert not gone.exists()
