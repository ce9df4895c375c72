"""The CPUs a process may use bound every threads setting; the CPU's name labels benchmarks."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from birdvae.runtime import BirdVAE, cpus
from birdvae.runtime.errors import ArgumentError

from .conftest import TINY_MODEL


def test_the_cpus_are_those_the_process_may_run_on(monkeypatch):
    """A container or taskset allows fewer than the machine has: those count."""
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 64)
    assert cpus.usable_cpus() == 1


def test_as_many_threads_as_cpus_are_allowed_and_one_more_is_not(monkeypatch):
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    BirdVAE(TINY_MODEL, threads=2).close()
    with pytest.raises(ArgumentError, match="threads 3 is more than the 2 CPUs"):
        BirdVAE(TINY_MODEL, threads=3)


@pytest.mark.parametrize(
    ("cpuinfo", "name"),
    [("processor\t: 0\nmodel\t\t: 85\nmodel name\t: Foo CPU @ 2GHz\n", "Foo CPU @ 2GHz"),
     ("processor\t: 0\nmodel\t\t: 85\n", None), (None, None)],
)  # fmt: skip
def test_the_cpus_name_is_its_model_name_where_linux_tells_it(monkeypatch, cpuinfo, name):
    def read_text(self, *args, **kwargs):
        if cpuinfo is None:
            raise OSError("no /proc here")
        return cpuinfo

    monkeypatch.setattr(Path, "read_text", read_text)
    machine = platform.machine()
    assert cpus.cpu_name() == (f"{machine} {name}" if name else machine or "unknown")
