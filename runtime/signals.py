"""How a command stops: SIGTERM as Ctrl-C, stops held back over renames that must all happen,
and the process ended at once after a stop cut native work short.

Every command ends on Ctrl-C or SIGTERM with its cleanup done and one line said; durable.py
keeps the files whole whatever the ending.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from .errors import EXIT_SIGTERM

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Threads whose native work a stop cut short (an onnxruntime run told to end at its next node,
# ended since or still in a long node): an interpreter that ended after one aborted the process
# now and then ("terminate called without an active exception", status -6, in CI), so the
# command then ends with os._exit once its line is out and its cleanup done (``end_process``).
_STOPPED_IN_NATIVE_CODE: list[threading.Thread] = []


def stopped_in_native_code(thread: threading.Thread) -> None:
    """Note ``thread`` as one whose native work a stop cut short."""
    _STOPPED_IN_NATIVE_CODE.append(thread)


def end_process(status: int) -> None:
    """End the process with ``status`` at once, its output flushed, when a stop cut native
    work short (``stopped_in_native_code``); otherwise return, for the usual ending."""
    if _STOPPED_IN_NATIVE_CODE:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


@contextlib.contextmanager
def signal_handlers(handler: Callable[[int], None], *signums: int) -> Iterator[None]:
    """Within the block, ``handler(signum)`` handles each of ``signums``; the handlers before
    are put back after it, unless the block chose to ignore the signal from then on (SIG_IGN):
    a finished ``vae-train`` ignores stops through its teardown, and the handlers around it
    must not bring the default (a kill) back. Python runs signal handlers in the main thread
    only, so elsewhere (a thread of a test, a server) the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, lambda number, _frame: handler(number))
                for signum in signums}  # fmt: skip
    try:
        yield
    finally:
        for signum, old in previous.items():
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, old)


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """SIGTERM raises SystemExit(143), so ``finally`` and ``except BaseException`` blocks clean
    up as they do for Ctrl-C, instead of the process vanishing mid-write."""

    def terminate(_: int) -> None:
        with contextlib.suppress(OSError):  # standard error gone: the stop goes on regardless
            print("error: terminated (SIGTERM)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_SIGTERM)

    with signal_handlers(terminate, signal.SIGTERM):
        yield


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for a few renames that must all happen or none; one that
    came meanwhile is raised again as soon as the block ends.

    Python-level handlers, not a signal mask: a mask covers one thread, and the kernel hands a
    signal to any thread (torch's and onnxruntime's included) that does not block it.
    """
    caught: list[int] = []
    try:
        with signal_handlers(caught.append, *STOP_SIGNALS):
            yield
    finally:
        if caught:
            signal.raise_signal(caught[0])
