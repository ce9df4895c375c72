"""``bird-gen``'s console script. Python spends about half a second importing numpy and the
command before the command can catch anything; a Ctrl-C in that time ends like one at any later
moment (``error: interrupted``, status 130), not as a traceback from inside an import, or as
numpy's "initialization failed" when it lands in numpy's C code."""

from __future__ import annotations

import signal
import sys

from .errors import EXIT_INTERRUPTED


def main() -> None:
    held = hasattr(signal, "pthread_sigmask")  # not on Windows: there Ctrl-C is caught alone
    try:
        if held:
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            from .cli import main as command
        finally:
            if held:  # the mask as it was: a Ctrl-C that came meanwhile is raised here
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    from .command import run_as_program

    run_as_program(command, "bird-gen")
