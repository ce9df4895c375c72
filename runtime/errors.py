"""The errors a user can fix, as one family, so that every command tells them from bugs alike.

A ``UserError``'s message is the whole story: the commands print it as one ``error:`` line and
exit with its ``exit_code``, with no traceback (``runtime/command.py``). Anything that is not one
is a bug in bird-vae and keeps its traceback. Standard library only: ``format.py`` raises these
and must cost nothing to import.
"""

from __future__ import annotations

import numbers
import re

# Every command's exit statuses (runtime/command.py): 0 done, 2 a user's mistake, 1 a step that
# failed on usable input (an export) or memory that ran out, 128 + the signal that stopped it.
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report a process SIGINT ended
EXIT_SIGTERM = 143


class UserError(Exception):
    """A mistake in what the user gave (arguments, a model folder, a photo, a checkpoint, a data
    set) or a run that cannot go on; the message says what is wrong and how to fix it."""

    exit_code = EXIT_USAGE


class ArgumentError(UserError, ValueError):
    """An argument the runtime cannot serve: a bad count, temperature or noise, or a prior the
    model does not have. A ValueError too, as callers of the Python API expect."""


def check_between(value: float, name: str, high: float) -> float:
    """``value`` as a float, refused (ArgumentError) unless it is a number (not a bool or a
    string of one) with 0 <= value <= high; NaN is refused too, so every later comparison of
    it means what it says."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name} must be a number from 0 to {high:g}, got {value!r}")
    value = float(value)
    if not 0 <= value <= high:
        raise ArgumentError(f"{name} must be 0 to {high:g}, got {value}")
    return value + 0.0  # -0.0 as 0.0, which a settings line would print as "-0"


def check_whole(value: int, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an int, refused (ArgumentError) unless it is a whole number (a numpy one
    too, never a bool or a float) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{name} must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ArgumentError(f"{name} must be a whole number {bound}, got {int(value)}")
    return int(value)


MAX_REASON = 300  # characters of a library's message shown on an error line
# Terminal colours a library writes into its messages (torch.onnx does), noise on an error line.
_TERMINAL_STYLE = re.compile(r"\x1b\[[0-9;]*m")
# What code gets wrong, never what a user gave: where one stands anywhere in a library failure's
# chain, the failure is a bug (ours, or the library's) and keeps its traceback.
BUG_TYPES = (AttributeError, NameError, TypeError, AssertionError, IndexError, KeyError)


def caused_by_bug(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from or during is one of BUG_TYPES: a
    handler that turns a library's failures into one-line UserErrors re-raises these as they
    are, since a user can do nothing about them but report the traceback."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, BUG_TYPES):
            return True
        seen.add(id(cause))
        hidden = cause.__suppress_context__  # ``raise ... from None`` says the context is no part
        cause = cause.__cause__ or (None if hidden else cause.__context__)
    return False


def first_line(exc: BaseException) -> str:
    """A library's exception as a short reason: its first line, or its type when it says
    nothing (onnxruntime's and PIL's messages run to several lines). A first line that only
    announces the next ("Error(s) in loading state_dict for VAE:") brings the next along, and
    a reason is cut at MAX_REASON characters (torch lists every missing key on one line)."""
    text = _TERMINAL_STYLE.sub("", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
