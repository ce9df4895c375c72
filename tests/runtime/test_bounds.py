"""Requests whose work would have no bound: each is refused, as one ``error:`` line with status
2, before the work starts, from the sizes alone (the PNG's pixels, a batch's numbers, threads,
a photo's header); and ``--separate`` never mixes two runs' birds unnoticed."""

from __future__ import annotations

import json
import shlex
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from birdvae.runtime import images
from birdvae.runtime.format import MANIFEST_FILE

from .conftest import TINY_MODEL, one_error

BOUNDLESS = {
    "scale-a-million": ("--scale 1000000 -o {out}/b.png", "1000000"),
    "grid-of-4-gigapixels": ("--n 4096 --scale 64 -o {out}/b.png", "megapixels"),
    "separate-birds-too-large": ("--n 1 --scale 64 --separate {out}/s --model {big}", "megapixels"),
    "recon-figure-too-large": ("recon {bird} {bird} --scale 64 --model {big} -o {out}/r.png",
                               "megapixels"),
    "threads-two-thousand": ("--threads 2000 -o {out}/b.png", "CPUs"),
    "temperature-huge": ("--temperature 1e30 -o {out}/b.png", "1e+30"),
    "noise-huge": ("--noise 1e30 -o {out}/b.png", "1e+30"),
    "batch-a-million": ("--batch 1000000 -o {out}/b.png", "batch 1000000 is too large"),
    "temperature-nan": ("-t nan -o {out}/b.png", "'--temperature' / '-t': 'nan' is not a finite"),
    "noise-nan": ("--noise nan -o {out}/b.png", "'--noise': 'nan' is not a finite"),
    "separate-into-an-empty-name": ("--separate ''", "'--separate': an empty name"),
    "output-of-an-empty-name": ("-o ''", "'-o' / '--output': an empty name"),
    "model-of-an-empty-name": ("--model '' -o {out}/b.png", "'--model' / '-m': an empty name"),
}  # fmt: skip


@pytest.mark.parametrize(("template", "fragment"), BOUNDLESS.values(), ids=BOUNDLESS)
def test_unbounded_work_is_refused_before_it_starts(
    cli, template, fragment, model_copy, birds, out, tmp_path
):
    big = Path(shutil.copytree(TINY_MODEL, tmp_path / "big"))
    manifest = json.loads((big / MANIFEST_FILE).read_text())
    manifest["image_size"] = 256  # only the size is read before the refusal
    (big / MANIFEST_FILE).write_text(json.dumps(manifest))
    args = shlex.split(template.format(out=out, bird=birds[0], big=big))
    if "--model" not in args:
        args += ["--model", str(model_copy)]
    one_error(cli(*args), fragment)
    assert list(out.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_a_huge_photo_is_refused_from_its_header(tmp_path):
    """13,300 px square RGBA (707 MB decoded) in a file of a few kB: refused before decoding,
    in a process that stays far below the photo's size."""
    width = 13_300
    header = struct.pack(">IIBBBBB", width, width, 8, 6, 0, 0, 0)
    idat = zlib.compress(b"\0" * (4 * width + 1) * 16)  # 16 rows; the rest is missing

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(data, zlib.crc32(kind))
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    png = tmp_path / "huge.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat))
    code = (  # VmHWM: this process's peak resident memory (ru_maxrss counts the forking parent)
        "import re, sys\n"
        "from birdvae.runtime.photos import ImageError, load_image\n"
        "try:\n    load_image(sys.argv[1], 16)\nexcept ImageError as exc:\n    print(exc)\n"
        "status = open('/proc/self/status').read()\n"
        "print(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(png)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    message, max_rss_kb = done.stdout.splitlines()
    assert "megapixels" in message and "huge.png" in message
    assert int(max_rss_kb) < 300_000, f"{int(max_rss_kb) / 1e3:.0f} MB to refuse a photo"


def test_separate_refuses_a_folder_of_older_birds_unless_forced(cli, tiny_model, out):
    folder = out / "birds"
    common = ("--separate", folder, "--model", tiny_model, "--threads", 1)
    assert cli("--n", 12, "--seed", 1, *common).exit_code == 0
    before = (folder / "bird_00011.png").read_bytes()
    one_error(cli("--n", 3, "--seed", 2, *common), "12 birds", "--force")
    assert (folder / "bird_00011.png").read_bytes() == before
    forced = cli("--n", 3, "--seed", 2, *common, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert "9 older birds" in forced.stdout
    assert len(list(folder.iterdir())) == 12


def test_older_birds_are_refused_before_the_model_starts_drawing(cli, tiny_model, out, monkeypatch):
    """Drawing opens the sampler's graphs (and the rater's, with --best-of): a folder that will
    be refused is refused first, whatever the model holds."""
    from birdvae.runtime.model import BirdVAE

    folder = out / "birds"
    assert cli("--n", 1, "--separate", folder, "--model", tiny_model).exit_code == 0

    def no_drawing(*_):
        raise AssertionError("drew birds for a folder it refuses")

    monkeypatch.setattr(BirdVAE, "draw", no_drawing)
    one_error(cli("--n", 2, "--separate", folder, "--model", tiny_model), "1 bird of", "--force")


@pytest.mark.parametrize("force", [False, True])
def test_a_users_file_at_a_birds_name_is_never_written_over(cli, tiny_model, out, force):
    """A file of the user's that merely has a bird's name is refused, --force or not, before
    anything is written; a PNG there counts as an earlier run's bird (see below)."""
    folder = out / "birds"
    folder.mkdir()
    mine = folder / "bird_00000.png"
    mine.write_bytes(b"my own picture")
    args = ("--n", 2, "--separate", folder, "--model", tiny_model, "--threads", 1)
    one_error(cli(*args, *(["--force"] if force else [])), "bird_00000.png has a bird's name",
              "is not a PNG bird-gen wrote")  # fmt: skip
    assert mine.read_bytes() == b"my own picture" and list(folder.iterdir()) == [mine]


def test_force_replaces_the_unmarked_birds_of_an_earlier_bird_gen(cli, tiny_model, out):
    """bird-gen has marked its PNGs (a Software chunk) only since 2026-12-06: a folder of
    birds from before holds PNGs without the mark, which --force replaces as before."""
    from PIL import Image

    folder = out / "birds"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "bird_00000.png")  # no Software chunk
    args = ("--n", 2, "--separate", folder, "--model", tiny_model, "--threads", 1)
    one_error(cli(*args), "1 PNG with a bird's name (1 not marked", "--force")
    assert cli(*args, "--force").exit_code == 0
    assert images.written_by_bird_gen(folder / "bird_00000.png")


@pytest.mark.parametrize("kind", ["link", "folder"])
def test_force_never_writes_through_a_link_or_over_a_folder(cli, tiny_model, out, kind):
    """--force writes over an earlier run's birds; a bird's name that is a link to another file
    (in a shared folder, the classic trap) or a folder is refused before anything is written."""
    folder, victim = out / "birds", out / "victim.txt"
    folder.mkdir()
    victim.write_text("not a bird")
    if kind == "link":
        (folder / "bird_00000.png").symlink_to(victim)
    else:
        (folder / "bird_00001.png").mkdir()
    args = ("--n", 2, "--separate", folder, "--force", "--model", tiny_model, "--threads", 1)
    one_error(cli(*args), "bird_0000", "not a bird of an earlier run")
    assert victim.read_text() == "not a bird"
    assert sorted(p.name for p in folder.iterdir()) == [f"bird_0000{int(kind == 'folder')}.png"]


def test_a_file_that_only_begins_with_a_birds_name_is_no_bird(cli, tiny_model, out):
    """An editor's backup (bird_00000.png~) or the user's notes on a bird (bird_00000.png.txt)
    are not birds: the folder is not refused for them and they are left as they are."""
    folder = out / "birds"
    folder.mkdir()
    mine = [folder / "bird_00000.png~", folder / "bird_00001.png.txt"]
    for path in mine:
        path.write_text("the user's")
    result = cli("--n", 2, "--separate", folder, "--model", tiny_model, "--threads", 1)
    assert result.exit_code == 0, result.stderr
    assert all(path.read_text() == "the user's" for path in mine)
    assert len(list(folder.glob("bird_*.png"))) == 2


def test_a_bird_that_failed_to_replace_an_older_one_is_not_counted(
    cli, tiny_model, out, monkeypatch
):
    """With --force over an earlier run's birds, a bird whose rename failed leaves the older
    bird at its name: the note must not count that older file as one of this run's birds."""
    import os

    folder = out / "birds"
    args = ("--separate", folder, "--model", tiny_model, "--threads", 1)
    assert cli("--n", 3, "--seed", 1, *args).exit_code == 0
    older = (folder / "bird_00001.png").read_bytes()
    real_replace = os.replace

    def replace(source, target):
        if Path(target).name == "bird_00001.png":
            raise OSError(28, "No space left on device", str(target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    result = cli("--n", 3, "--seed", 2, *args, "--force")
    assert result.exit_code == 2 and "No space left on device" in result.stderr, result.stderr
    assert "note: 1 of the 3 birds were written" in result.stderr, result.stderr
    assert (folder / "bird_00001.png").read_bytes() == older
