"""The CPUs this process runs on: how many it may use, which bounds every ``threads`` setting,
and what they are, which benchmarks and export's int8 figures record. Standard library only, so
``vae-train`` can check ``--threads`` before torch loads."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

from .errors import ArgumentError


def usable_cpus() -> int:
    """The CPUs this process may run on (a container or taskset may allow fewer than exist)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_threads(threads: int, name: str, hint: str = "") -> None:
    """Refuse (ArgumentError) more threads than this process's CPUs: onnxruntime and torch
    start them all at once, and a million would run the system out of threads."""
    cpus = usable_cpus()
    if threads > cpus:
        raise ArgumentError(
            f"{name} {threads} is more than the {cpus} CPUs this process may use; more would "
            f"only wait on each other{hint}"
        )


def cpu_name() -> str:
    """The CPU's model name where Linux tells it, else the machine's architecture."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{platform.machine()} {line.split(':', 1)[1].strip()}"
    return platform.machine() or "unknown"
