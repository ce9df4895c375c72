"""bird-gen killed or stopped at each write point of a PNG: what is on disk right after, and that
the next run sweeps what the dead one left and writes the same bytes. docs/GUARANTEES.md says
what these tests hold the code to."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from birdvae.runtime import durable, images, signals

# bird-gen in a child process that signals itself at the Nth time it reaches one write step:
# a temporary created and locked (still empty), the rename into place (before or after).
KILL_SCRIPT = textwrap.dedent(
    """
    import fcntl, os, signal, sys
    from birdvae.runtime import durable
    from birdvae.runtime.cli import main

    step, count, how, *args = sys.argv[1:]
    reached = {}

    def at(point):
        reached[point] = reached.get(point, 0) + 1
        if point == step and reached[point] == int(count):
            os.kill(os.getpid(), getattr(signal, how))

    real_lock, real_replace = durable.lock, os.replace

    def lock(fd):
        held = real_lock(fd)
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:  # a temporary's
            at("locked")
        return held

    def replace(source, target):
        at("rename-before")
        real_replace(source, target)
        at("rename-after")

    durable.lock, os.replace = lock, replace
    main(args, prog_name="bird-gen")
    """
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
POINTS = ["locked", "rename-before", "rename-after"]  # the temporary: empty, whole, renamed


def _run_killed(step: str, count: int, how: str, *args: object) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", KILL_SCRIPT, step, str(count), how, *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=120)


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if durable.TMP_PATTERN.fullmatch(p.name))


def _check_ended(done: subprocess.CompletedProcess, how: str) -> None:
    if how == "SIGKILL":
        assert done.returncode == -signal.SIGKILL, done.stderr
    else:  # unwound like Ctrl-C: its temporary removed, one line, the conventional status
        assert done.returncode == 128 + signal.SIGTERM, done.stderr
        lines = done.stderr.strip().splitlines()
        if lines[-1].startswith("note: "):  # --separate: what it left
            lines.pop()
        assert lines[-1] == "error: terminated (SIGTERM)", done.stderr
        assert "Traceback" not in done.stderr


# Each command that writes one figure with -o: the sampled grid, reconstructions, a morph.
FIGURES = {
    "sample": lambda birds: ("--n", 9, "--seed", 4),
    "recon": lambda birds: ("recon", *birds[:2]),
    "interp": lambda birds: ("interp", *birds[:2], "--steps", 4),
}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("figure", FIGURES)
def test_a_figure_killed_at_each_write_point(cli, tiny_model, birds, tmp_path, figure, point, how):
    common = (*FIGURES[figure](birds), "--model", tiny_model, "--threads", 1)
    reference = tmp_path / "reference.png"
    assert cli(*common, "-o", reference).exit_code == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    target = out / "birds.png"
    previous = images.encode_png(np.full((4, 4, 3), 9, np.uint8))  # an earlier run's figure
    target.write_bytes(previous)
    done = _run_killed(point, 1, how, *common, "-o", target)
    _check_ended(done, how)
    if point == "rename-after":
        assert target.read_bytes() == reference.read_bytes()
    else:  # the old file, untouched; never a half-written PNG
        assert target.read_bytes() == previous
    if how == "SIGTERM" or point == "rename-after":
        assert _temporaries(out) == []
    else:
        assert len(_temporaries(out)) == 1  # a dead writer's, for the next run to sweep
    again = cli(*common, "-o", target)
    assert again.exit_code == 0, again.stderr
    assert target.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["birds.png", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("point", POINTS)
def test_separate_birds_killed_midway(cli, tiny_model, tmp_path, point, how):
    common = ("--n", 6, "--seed", 4, "--model", tiny_model, "--threads", 1)
    reference = tmp_path / "reference"
    assert cli(*common, "--separate", reference).exit_code == 0
    folder = tmp_path / "birds"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    done = _run_killed(point, 3, how, *common, "--separate", folder)
    _check_ended(done, how)
    assert (folder / "notes.txt").read_text() == "mine"
    (folder / "notes.txt").unlink()
    written = sorted(p.name for p in folder.glob("bird_*.png"))
    assert written == [f"bird_{i:05d}.png" for i in range(3 if point == "rename-after" else 2)]
    if how == "SIGTERM":  # the user is told what is on disk and how to finish
        note = f"note: {len(written)} of the 6 birds were written to {folder}/ (each whole); "
        assert done.stderr.strip().splitlines()[-1].startswith(note), done.stderr
    for name in written:  # every bird on disk is whole
        assert (folder / name).read_bytes() == (reference / name).read_bytes()
    assert len(_temporaries(folder)) == (how == "SIGKILL" and point != "rename-after")
    again = cli(*common, "--separate", folder, "--force")
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in reference.iterdir():
        assert (folder / path.name).read_bytes() == path.read_bytes()


def test_a_run_sweeps_dead_writers_temporaries_and_keeps_live_ones(cli, tiny_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".birds.png.bvae-0a1b2c3d.tmp"
    dead.write_bytes(b"half a PNG of a killed run")
    live = out / ".birds.png.bvae-99887766.tmp"
    live.write_bytes(b"another bird-gen is writing this")
    foreign = out / ".notes.txt.bvae-0a1b2c3d.tmp"
    foreign.write_bytes(b"not ours")
    # A user's own files that look like temporaries, but without our tag or our 8 hex digits.
    users = [out / ".birds.png.20240101.tmp", out / ".birds.png.draft_01.tmp",
             out / ".birds.png.bvae-draft_01.tmp"]  # fmt: skip
    for path in users:
        path.write_bytes(b"the user's")
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = cli("--n", 2, "--model", tiny_model, "--threads", 1, "-o", out / "birds.png")
    assert result.exit_code == 0, result.stderr
    kept = [live.name, foreign.name, "birds.png", *(p.name for p in users)]
    assert sorted(p.name for p in out.iterdir()) == sorted(kept)


SWALLOWING_IMPORT = Path(__file__).parent.parent / "fixtures" / "swallowing_import.py"


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_stop_inside_onnxruntimes_import_still_stops_bird_gen(tiny_model, tmp_path, signame):
    out = tmp_path / "birds.png"
    args = ["onnxruntime", signame, "birdvae.runtime.entry:main", "-m", str(tiny_model),
            "--n", "2", "-o", str(out)]  # fmt: skip
    done = subprocess.run([sys.executable, SWALLOWING_IMPORT, *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == (143 if signame == "SIGTERM" else 130), done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_handlers_are_put_back_after_a_block_unless_it_chose_to_ignore_the_signal():
    """Nested blocks put back what was there before; a block that ignores a stop from then
    on (a finished vae-train in its teardown) is not overruled by the blocks around it, which
    would bring back the default: a kill, and status 143 for a finished run."""
    before = signal.getsignal(signal.SIGUSR1)
    seen = []
    try:
        with signals.signal_handlers(seen.append, signal.SIGUSR1):
            with signals.signal_handlers(seen.append, signal.SIGUSR1):
                os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGUSR1] * 2 and signal.getsignal(signal.SIGUSR1) is before
        with signals.signal_handlers(seen.append, signal.SIGUSR1):  # noqa: SIM117 (Python 3.9)
            with signals.signal_handlers(seen.append, signal.SIGUSR1):
                signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, before)


TEARDOWN_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading
    import click
    from birdvae.runtime.command import Command, run_as_program

    @click.command(cls=Command)
    def work():
        click.echo("done")
        # A stop that lands once the work is done, while the interpreter waits for a thread
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()

    if sys.argv.pop(1) == "as-program":
        run_as_program(work, "work")
    work(prog_name="work")
    """
)


def test_a_stop_in_the_teardown_of_a_finished_command_is_ignored():
    """A console command ends with its own status and output when a Ctrl-C lands after its
    work (vae-export's teardown after torch takes a second); a command run without
    run_as_program shows Python's KeyboardInterrupt traceback from that teardown instead."""

    def run(mode: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-c", TEARDOWN_SCRIPT, mode]
        return subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=60)

    finished = run("as-program")
    assert (finished.returncode, finished.stdout, finished.stderr) == (0, "done\n", "")
    bare = run("bare")
    assert "KeyboardInterrupt" in bare.stderr  # what the user saw before
