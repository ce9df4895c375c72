"""How every bird-vae command ends: a user's mistake as one ``error:`` line, a bug as a traceback.

``bird-gen``, ``vae-train``, ``vae-eval`` and ``vae-export`` are click commands of the classes
below. A ``UserError`` (any of the runtime's, training's or export's), a click usage error or an
OSError (a file that cannot be read or written; its message names the file) ends the command
with one line on stderr and its exit status: 2 unless the error says otherwise, 130 for Ctrl-C,
143 for SIGTERM, which unwinds like Ctrl-C so that temporaries are removed; running out of memory
is one line too (status 1). Any other exception is a bug and keeps its traceback. With
``BIRDVAE_TRACEBACK=1`` in the environment the one-line errors print their traceback as well,
for a report of what went wrong where. Python warnings print as one ``warning:`` line each.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator, Sized
from typing import Any, NoReturn, TypeVar

import click

from . import signals
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UserError

TRACEBACK_VARIABLE = "BIRDVAE_TRACEBACK"


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (escape sequences, carriage returns)
    shown as Python escapes, so a model's strings cannot drive the user's terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def echo(text: str, err: bool = False) -> None:
    """Print a line that may hold paths: a file name can hold escape sequences, and bytes that
    are not UTF-8 (Python's surrogates), which a strict stdout could not even encode.

    A line that cannot be written never stops the work: a training run's log piped into
    ``head``, or redirected to a full disk, must not cost the run. Later lines are dropped
    (``_lose_standard_output``); a reader that has gone (a broken pipe) is the reader's choice
    and ends nothing, any other failure is a warning now and the command's error once its work
    is done (``status_of_done_work``), naming the stream: "No space left on device" alone would
    blame the output file that was written whole. A line that standard error cannot take is
    dropped (``_to_stderr``)."""
    if err:
        _to_stderr(printable(text))
        return
    try:
        click.echo(printable(text))
    except OSError as exc:
        _lose_standard_output(exc)


def echo_lines(text: str) -> None:
    """Print the command's own multi-line text (a table, a list of next steps) line by line,
    each as ``echo`` prints a line."""
    for line in text.split("\n"):
        echo(line)


_LOST_OUTPUT: list[OSError] = []  # why standard output failed, in this command


def status_of_done_work() -> int:
    """The status of a command whose work is done: 0, or 2 after its ``error:`` line when a
    line failed on standard output for another reason than a reader that has gone; so too for
    a stop after the work."""
    if not _LOST_OUTPUT:
        return 0
    _to_stderr(f"error: standard output: {_reason(_LOST_OUTPUT[0])}")
    return EXIT_USAGE


def _lose_standard_output(exc: OSError) -> None:
    """Note why standard output failed, unless the reader went, and in the command's own
    process point file descriptor 1 at the null device, so later lines (and Python's flush of
    what is buffered, at exit) go nowhere instead of failing again. Elsewhere (a test runner's
    capture, a program using the trainer) the descriptor is not ours to move: each later line
    fails and is dropped."""
    if sys.stdout is sys.__stdout__:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if sys.stdout.fileno() == 1:
                null = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(null, 1)
                finally:
                    os.close(null)
    if isinstance(exc, BrokenPipeError) or _LOST_OUTPUT:
        return
    _LOST_OUTPUT.append(exc)
    _to_stderr(f"warning: standard output: {_reason(exc)}; the work goes on, its lines are "
               "dropped")  # fmt: skip


def _reason(exc: OSError) -> str:
    return one_line(exc.strerror or str(exc))


def _to_stderr(line: str) -> None:
    """One line on standard error, dropped if it cannot be written: there is nowhere left to
    say so, and a failed word must not stop the work or change the exit status."""
    with contextlib.suppress(OSError):
        click.echo(line, err=True)


def counted(n: int, noun: str) -> str:
    """``n`` of ``noun``, its plural an ``s`` added: "1 bird", "64 birds"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def one_line(text: str) -> str:
    """``text`` with its whitespace runs, newlines included, made single spaces, and printable."""
    return printable(" ".join(text.split()))


def fail(message: str, status: int = EXIT_USAGE) -> NoReturn:
    _to_stderr(f"error: {one_line(message)}")
    sys.exit(status)


def describe_os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _warn_in_one_line(message: Warning | str, *_: Any, **__: Any) -> None:
    _to_stderr(f"warning: {one_line(str(message))}")


class OneLineErrors:
    """Mixed into a click command or group: its ``main`` ends every user error in one line."""

    name: str | None

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> NoReturn:
        extra["standalone_mode"] = False
        for stream in (sys.stdout, sys.stderr):  # a name a cp1252 pipe cannot encode, escaped
            with contextlib.suppress(AttributeError, ValueError):  # not a TextIOWrapper
                stream.reconfigure(errors="backslashreplace")
        given = sys.argv[1:] if args is None else list(args)
        if not {"-h", "--help"} & set(given):  # help reads no path
            _check_working_folder()
        _LOST_OUTPUT.clear()
        with warnings.catch_warnings(), signals.exit_on_sigterm():
            warnings.showwarning = _warn_in_one_line
            try:
                status = super().main(args, prog_name or self.name, **extra)  # type: ignore[misc]
                if _LOST_OUTPUT:  # the work is done; what the user asked to see was not shown
                    sys.exit(status_of_done_work())
            except click.Abort:
                fail("interrupted", EXIT_INTERRUPTED)
            except click.ClickException as exc:
                message = exc.format_message()
                if isinstance(exc, click.UsageError) and exc.ctx is not None:
                    message += f" (see '{exc.ctx.command_path} --help')"
                fail(message)
            except UserError as exc:
                _show_traceback()
                fail(str(exc), exc.exit_code)
            except OSError as exc:
                _show_traceback()
                fail(describe_os_error(exc))
            except MemoryError:
                _show_traceback()
                fail("ran out of memory; close other programs, or ask for less at once "
                     "(a smaller --batch, fewer photos)", EXIT_FAILED)  # fmt: skip
        sys.exit(status if isinstance(status, int) else 0)


def run_as_program(command: click.Command, prog_name: str) -> NoReturn:
    """Run ``command`` as the process itself (a console script). Once it has ended, its work
    done and its status set, a stop (Ctrl-C, SIGTERM) during the interpreter's teardown, which
    takes a second after torch, has nothing left to stop: it is ignored, so the process ends
    with the command's own status and line, not killed by the signal with neither."""
    try:
        command(prog_name=prog_name)
    except SystemExit as done:  # its line is out: end now if a stop cut native work short
        code = done.code
        signals.end_process(0 if code is None else code if isinstance(code, int) else 1)
        raise
    finally:
        for signum in signals.STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    raise AssertionError("a command's main ends the process")  # pragma: no cover


def _show_traceback() -> None:
    """The handled exception's traceback on stderr, when the user asked for it."""
    if os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
        traceback.print_exc()


def _check_working_folder() -> None:
    """Refuse to start in a folder that was removed under the shell: every relative path would
    fail later with a message about something else (bird-gen's "the folder does not take new
    files", a bare "No such file or directory"), and torch's MKL aborts on import there."""
    try:
        os.getcwd()
    except FileNotFoundError:
        fail(
            "the current folder no longer exists (it was removed); "
            "cd to a folder that exists and run the command again"
        )


def one_output(output: Any, alias: Any) -> Any:
    """``-o/--output`` or its hidden old name ``--out`` (vae-train, vae-export), refused when
    both are given: which one was meant cannot be told."""
    if output is not None and alias is not None:
        raise click.UsageError("give -o/--output once (--out is the same option)")
    return output if output is not None else alias


DISTRIBUTION = "bird-vae"


def version_option() -> Any:
    """``--version``: the installed package's version, which a bug report needs."""
    return click.version_option(package_name=DISTRIBUTION, message="%(prog)s %(version)s")


class NamedPath(click.Path):
    """click's Path refusing an empty name, which it reads as the current folder: an unset
    shell variable in ``--separate "$OUT"`` would write the birds among the user's files, and
    ``--data "$DATA"`` would read every photo under the current folder."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value:
            self.fail("an empty name; give a path.", param, ctx)
        return super().convert(value, param, ctx)


FLOAT32_MAX = 3.4028234663852886e38


class FiniteRange(click.FloatRange):
    """click's FloatRange that also refuses NaN (which passes every comparison click makes),
    infinity, and numbers beyond float32 (torch's optimisers and clamps overflow on them),
    naming the flag as every other bad value does."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        if abs(number) > FLOAT32_MAX:
            self.fail(f"{value!r} is beyond what a 32-bit float holds.", param, ctx)
        return number


class Command(OneLineErrors, click.Command):
    """A click command whose errors follow this module's rule."""


class Group(OneLineErrors, click.Group):
    """A click group whose errors, its commands' included, follow this module's rule."""


Batch = TypeVar("Batch", bound=Sized)


def with_progress(batches: Iterator[Batch], n: int, label: str) -> Iterator[Batch]:
    """``batches`` passed through, a progress bar on stderr counting the n items they hold."""
    with click.progressbar(length=n, label=label, file=sys.stderr) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))
