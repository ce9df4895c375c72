"""What ``vae-export -o DIR`` may replace, and what survives a failure, a signal or a kill at
each write point of an export: the destination always ends as the old model or the new one,
and the next export clears (or restores from) what a kill left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest

from birdvae.runtime.format import MANIFEST_FILE, Manifest, sha256_of, verify_model_dir

pytest.importorskip("torch")
pytest.importorskip("onnx")

from birdvae.export.destination import sweep
from birdvae.runtime import durable

pytestmark = pytest.mark.torch


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def one_error(result, fragment: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def old_model(tmp_path_factory, resnet_checkpoint) -> Path:
    """A model folder exported once, to copy where a test needs an existing model."""
    from .conftest import run_export

    folder = tmp_path_factory.mktemp("old") / "model"
    assert run_export(resnet_checkpoint, "-o", folder).exit_code == 0
    return folder


def test_a_web_app_folder_with_a_manifest_is_not_replaced(export_cli, resnet_checkpoint,
                                                          tmp_path):  # fmt: skip
    app = tmp_path / "app"
    app.mkdir()
    (app / MANIFEST_FILE).write_text(json.dumps({"name": "My PWA", "start_url": "/"}))
    (app / "index.html").write_text("<html></html>")
    one_error(export_cli(resnet_checkpoint, "-o", app), "index.html")
    assert sorted(p.name for p in app.iterdir()) == ["index.html", MANIFEST_FILE]

    (app / "index.html").unlink()  # a lone manifest of another kind is no model either
    one_error(export_cli(resnet_checkpoint, "-o", app), "not a bird-vae model folder")
    assert json.loads((app / MANIFEST_FILE).read_text())["name"] == "My PWA"


def test_an_export_whose_log_cannot_be_written_still_writes_the_model(
    export_cli, resnet_checkpoint, tmp_path
):
    """Its lines failing (standard output on a full disk) cost the lines, never the export:
    the model is written whole and the error names the stream (it threw the model away as if
    writing it had failed)."""
    import click

    real = click.echo

    def full_stdout(message=None, file=None, nl=True, err=False, color=None):
        if not err:
            raise OSError(28, "No space left on device")
        return real(message, file, nl, err, color)

    out = tmp_path / "model"
    with mock.patch("click.echo", full_stdout):
        result = export_cli(resnet_checkpoint, "-o", out)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "error: standard output: No space left on device"
    verify_model_dir(out)
    assert hidden(tmp_path) == []


def test_a_model_folder_with_the_users_notes_is_not_replaced(export_cli, resnet_checkpoint,
                                                             old_model, tmp_path):  # fmt: skip
    out = tmp_path / "model"
    shutil.copytree(old_model, out)
    (out / "NOTES.txt").write_text("what I changed")
    one_error(export_cli(resnet_checkpoint, "-o", out), "NOTES.txt")
    assert (out / "NOTES.txt").read_text() == "what I changed"
    verify_model_dir(out)
    assert hidden(tmp_path) == []


def test_a_model_file_the_manifest_does_not_list_as_it_is_is_not_deleted(
    export_cli, resnet_checkpoint, old_model, tmp_path
):
    """A model folder's names were all it took: a prior copied in beside an older manifest, or
    the very checkpoint being exported saved there under a model's name, was deleted with the
    folder it replaced. So was a listed file the user changed."""
    from birdvae.runtime.format import MODEL_FILES

    out = tmp_path / "model"
    shutil.copytree(old_model, out)
    unlisted = sorted(set(MODEL_FILES) - set(Manifest.load(out).files))[0]
    saved = out / unlisted
    shutil.copyfile(resnet_checkpoint, saved)
    one_error(export_cli(saved, "-o", out), f"{unlisted} is not as its manifest lists it")
    assert saved.read_bytes() == Path(resnet_checkpoint).read_bytes()
    saved.unlink()
    changed = out / sorted(Manifest.load(out).files)[0]
    changed.write_bytes(changed.read_bytes() + b"mine")
    one_error(export_cli(resnet_checkpoint, "-o", out), f"{changed.name} is not as its manifest")
    assert changed.read_bytes().endswith(b"mine") and hidden(tmp_path) == []


def test_a_name_its_staging_folder_cannot_take_is_refused_first(
    export_cli, resnet_checkpoint, tmp_path
):
    """A legal 240-byte name failed after the whole export, naming the hidden staging folder."""
    out = tmp_path / ("m" * 240)
    one_error(export_cli(resnet_checkpoint, "-o", out), "the folder name is too long")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_that_takes_no_new_folder_is_refused_first(export_cli, resnet_checkpoint):
    """-o /proc/model (root may write there by its permission bits) failed after the whole
    export, naming the hidden staging folder."""
    one_error(export_cli(resnet_checkpoint, "-o", "/proc/bvae-model"),
              "/proc does not take new folders")  # fmt: skip


@pytest.mark.parametrize("target", ["nowhere", "itself"])
def test_a_destination_under_a_link_to_nothing_names_the_link(
    export_cli, resnet_checkpoint, tmp_path, target
):
    """-o dangling/model said the folder above "does not take new folders (File exists)"."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere" if target == "nowhere" else link)
    one_error(export_cli(resnet_checkpoint, "-o", link / "model"),
              f"{link} is a symbolic link that leads nowhere")  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["link"]


def test_a_destination_under_a_file_is_refused_first(export_cli, resnet_checkpoint, tmp_path):
    """-o notes.txt/model failed after the whole export with "File exists"."""
    (tmp_path / "notes.txt").write_text("mine")
    one_error(export_cli(resnet_checkpoint, "-o", tmp_path / "notes.txt" / "model"),
              "notes.txt is a file, not a folder")  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_our_model_folder_and_an_empty_folder_are_replaced(export_cli, resnet_checkpoint,
                                                           old_model, tmp_path):  # fmt: skip
    out = tmp_path / "model"
    shutil.copytree(old_model, out)
    assert export_cli(resnet_checkpoint, "--output", out).exit_code == 0
    verify_model_dir(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_cli(resnet_checkpoint, "--out", empty).exit_code == 0  # its hidden alias
    verify_model_dir(empty)
    both = export_cli(resnet_checkpoint, "-o", out, "--out", empty)
    assert both.exit_code == 2 and "once" in both.stderr
    assert hidden(tmp_path) == []


def test_a_file_the_user_adds_during_the_export_is_kept(
    export_cli, resnet_checkpoint, old_model, tmp_path, monkeypatch
):
    out = tmp_path / "model"
    shutil.copytree(old_model, out)
    from birdvae.export import onnx as export_onnx

    real_export = export_onnx.export_model

    def export_then_user_writes(*args, **kwargs):
        (out / "NOTES.txt").write_text("written while exporting")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(export_onnx, "export_model", export_then_user_writes)
    one_error(export_cli(resnet_checkpoint, "-o", out), "NOTES.txt")
    assert (out / "NOTES.txt").read_text() == "written while exporting"
    verify_model_dir(out)
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("late", ["notes.txt", "decoder.onnx", "undeletable"])
def test_a_file_written_into_the_old_model_during_the_swap_is_kept(
    export_cli, resnet_checkpoint, old_model, tmp_path, monkeypatch, late
):
    """After the last check, a program holding the folder open may still write into it: the
    old folder was deleted whole, the user's file with it (6 times in 8 races). Only the old
    model's files still as its manifest lists them go now, and the folder stays, with a
    warning, when anything else is left; a file that cannot be deleted is no failed export."""
    from birdvae.export import destination

    out = tmp_path / "model"
    shutil.copytree(old_model, out)
    keep_modes = destination._keep_modes

    def then_the_user_writes(folder: Path, target: Path) -> None:
        keep_modes(folder, target)  # after check_replaceable, before the rename
        if late != "undeletable":
            (target / late).write_text("mine")

    monkeypatch.setattr(destination, "_keep_modes", then_the_user_writes)
    if late == "undeletable":
        monkeypatch.setattr(Path, "unlink", mock.Mock(side_effect=PermissionError(13, "denied")))
    result = export_cli(resnet_checkpoint, "-o", out)
    assert result.exit_code == 0, result.stderr
    verify_model_dir(out)
    [kept] = [tmp_path / name for name in hidden(tmp_path)]
    assert kept.name.endswith(".old") and f"kept {kept}" in result.stderr
    if late != "undeletable":
        assert [p.name for p in kept.iterdir()] == [late] and late in result.stderr
        assert (kept / late).read_text() == "mine"


def test_a_failed_swap_puts_the_old_model_back(export_cli, resnet_checkpoint, old_model,
                                               tmp_path, monkeypatch):  # fmt: skip
    out = tmp_path / "model"
    shutil.copytree(old_model, out)
    before = (out / MANIFEST_FILE).read_bytes()
    real_replace = __import__("os").replace

    def replace(source, target):
        if Path(source).name.endswith(".partial"):
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr("os.replace", replace)
    result = export_cli(resnet_checkpoint, "-o", out)
    assert result.exit_code == 2 and "No space left" in result.stderr
    assert (out / MANIFEST_FILE).read_bytes() == before
    assert hidden(tmp_path) == []


def test_a_full_disk_in_a_writer_that_names_no_file_names_the_model(
    export_cli, resnet_checkpoint, tmp_path, monkeypatch
):
    """onnx's writer raises ENOSPC with no file name: the line names the model's folder."""
    from birdvae.export import onnx as export_onnx

    def full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_onnx.onnx, "save_model", full)
    out = tmp_path / "model"
    result = export_cli(resnet_checkpoint, "-o", out)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.strip() == f"error: {out}: writing the model: No space left on device"
    assert not out.exists() and hidden(tmp_path) == []


def test_debris_of_killed_exports_is_swept_and_a_lost_model_restored(old_model, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(old_model, tmp_path / ".model.bvae-0a1b2c3d.old")  # killed in the swap window
    staged = tmp_path / ".model.bvae-99aa88bb.partial"  # killed while building
    staged.mkdir()
    (staged / "encoder.onnx").write_bytes(b"half")
    live = tmp_path / ".model.bvae-11112222.partial"  # another export, still running
    live.mkdir()
    mine = tmp_path / ".model.bvae-33334444.partial"  # our pattern, but a user's file inside
    mine.mkdir()
    (mine / "NOTES.txt").write_text("keep")
    other = tmp_path / ".other.bvae-55556666.partial"  # another destination's: not ours to judge
    other.mkdir()
    fd = durable.hold(live)
    try:
        done = sweep(out)
    finally:
        __import__("os").close(fd)
    assert any("restored" in line for line in done)
    assert Manifest.load(out).to_dict() == Manifest.load(old_model).to_dict()
    assert hidden(tmp_path) == sorted([live.name, mine.name, other.name])


def test_a_quantizer_folder_is_swept_only_in_a_staging_folder_and_only_its_own(tmp_path):
    """onnxruntime's working folders inside a killed export's staging folder are removed with
    it; a user's file in a folder of that name, or that name in an old model, is never."""
    from birdvae.export.destination import QUANTIZER_FOLDER

    out = tmp_path / "model"
    out.mkdir()  # the destination is there: no old model is put back
    killed = tmp_path / ".model.bvae-0a1b2c3d.partial"
    (killed / QUANTIZER_FOLDER / "ort.quant.abc123").mkdir(parents=True)
    (killed / QUANTIZER_FOLDER / "ort.quant.abc123" / "augmented_model.onnx").write_bytes(b"x")
    mine = tmp_path / ".model.bvae-11112222.partial"
    (mine / QUANTIZER_FOLDER).mkdir(parents=True)
    (mine / QUANTIZER_FOLDER / "thesis.tex").write_text("keep")
    old = tmp_path / ".model.bvae-33334444.old"
    (old / QUANTIZER_FOLDER / "ort.quant.def456").mkdir(parents=True)
    assert sweep(out) == ["removed 1 folder(s) left by an interrupted export"]
    assert hidden(tmp_path) == sorted([mine.name, old.name])
    assert (mine / QUANTIZER_FOLDER / "thesis.tex").read_text() == "keep"


def test_a_users_hidden_copy_is_never_taken_for_debris(old_model, tmp_path):
    out = tmp_path / "model"
    backups = [tmp_path / ".model.20240101.old", tmp_path / ".model.backup01.partial"]
    for backup in backups:
        shutil.copytree(old_model, backup)  # a user's copy: only model files, but not our name
    assert sweep(out) == []
    assert not out.exists()
    assert hidden(tmp_path) == sorted(b.name for b in backups)


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, tempfile
    import onnx
    from birdvae.export import destination
    from birdvae.export.cli import main

    checkpoint, out, target, kill_at, how, *flags = sys.argv[1:]
    calls = []

    def hook(name, real):
        def wrapped(*args, **kwargs):
            calls.append(name)
            if name == target and calls.count(name) == int(kill_at):
                os.kill(os.getpid(), getattr(signal, how))
            return real(*args, **kwargs)
        return wrapped

    class QuantizerFolder(tempfile.TemporaryDirectory):  # killed as it ends, still full
        def __exit__(self, *exc_info):
            return hook("quantizer", super().__exit__)(*exc_info)

    onnx.save_model = hook("save", onnx.save_model)
    os.replace = hook("replace", os.replace)
    destination._remove_old = hook("remove_old", destination._remove_old)
    tempfile.TemporaryDirectory = QuantizerFolder
    main([checkpoint, "-o", out, *flags], standalone_mode=True)
    """
)


def _kill_export(
    checkpoint: Path, out: Path, target: str, kill_at: int, how: str, *flags: str,
    env: dict[str, str] | None = None,
):  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(checkpoint), str(out), target, str(kill_at), how,
         *flags], capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "kill_at"),
    # the decoder's write, the old model moved aside, the new one moved in, the old removed
    [("save", 2), ("replace", 1), ("replace", 2), ("remove_old", 1)],
)
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_a_kill_at_each_write_point_of_an_export(
    export_cli, make_checkpoint, tiny_kwargs, old_model, tmp_path, target, kill_at, how
):
    checkpoint = make_checkpoint(tmp_path / "last.pt", tiny_kwargs, seed=5)
    out = tmp_path / "model"
    shutil.copytree(old_model, out)
    old = Manifest.load(out).source["checkpoint_sha256"]
    killed = _kill_export(checkpoint, out, target, kill_at, how)
    if how == "SIGKILL":
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    else:  # cleaned up and left with the conventional status; never a traceback
        assert killed.returncode == 128 + getattr(signal, how), killed.stderr
        assert "Traceback" not in killed.stderr
        assert not [name for name in hidden(tmp_path) if "model" in name], hidden(tmp_path)
        # A stop while the graphs are written leaves the old model; one during the swap waits
        # for it to end (signals.signals_deferred), so the new model is in place whole.
        left = Manifest.load(out).source["checkpoint_sha256"]
        assert left == (old if target == "save" else sha256_of(checkpoint)), (target, kill_at)
    if out.exists():
        verify_model_dir(out)  # the old model or the new one, whole
    else:  # only a SIGKILL between the two renames leaves the destination missing
        assert how == "SIGKILL" and (target, kill_at) == ("replace", 2)
    again = export_cli(checkpoint, "-o", out)
    assert again.exit_code == 0, again.stderr
    assert Manifest.load(out).source["checkpoint_sha256"] != old
    assert [name for name in hidden(tmp_path) if "model" in name] == []


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_kill_while_quantizing_leaves_nothing_outside_the_staging_folder(
    export_cli, resnet_checkpoint, bird_folder, old_model, tmp_path, how
):
    """onnxruntime's quantizer writes a copy of the graph as large as it to its own temporary
    folder, which a kill left in /tmp for good; it is made inside the staging folder, so the
    next export's sweep removes it with the rest."""
    out = tmp_path / "model"
    shutil.copytree(old_model, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    temporaries = tmp_path / "tmp"
    temporaries.mkdir()
    env = {**os.environ, "TMPDIR": str(temporaries)}
    flags = ("--int8", "--prior-data", str(bird_folder))
    killed = _kill_export(resnet_checkpoint, out, "quantizer", 1, how, *flags, env=env)
    assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGTERM), killed.stderr
    assert "Traceback" not in killed.stderr
    # (under SIGTERM the unwinding clears the quantizer's folder wherever it is: the SIGKILL
    # case is the one where only its place inside the staging folder keeps TMPDIR clean)
    assert list(temporaries.iterdir()) == []
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old model, whole
    left = [name for name in hidden(tmp_path) if "model" in name]
    assert len(left) == (1 if how == "SIGKILL" else 0), left
    again = export_cli(resnet_checkpoint, "-o", out, *flags)
    assert again.exit_code == 0, again.stderr
    assert ("removed 1 folder(s)" in again.stderr) == (how == "SIGKILL"), again.stderr
    assert [name for name in hidden(tmp_path) if "model" in name] == []


def test_the_new_model_folder_keeps_the_old_ones_permissions(
    export_cli, resnet_checkpoint, tmp_path, monkeypatch
):
    """A private model stays private: the folder being written is the user's alone, and the
    new folder and each file that replaces one take the old one's permissions."""
    from birdvae.export import destination

    while_written = []
    swap = destination._swap

    def watched(folder: Path, target: Path) -> None:
        while_written.append(stat.S_IMODE(folder.stat().st_mode))
        swap(folder, target)

    monkeypatch.setattr(destination, "_swap", watched)
    out = tmp_path / "private"
    out.mkdir(mode=0o700)
    out.chmod(0o700)
    assert export_cli(resnet_checkpoint, "-o", out).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for entry in out.iterdir():
        entry.chmod(0o600)
    assert export_cli(resnet_checkpoint, "-o", out).exit_code == 0  # and replacing a model
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {stat.S_IMODE(entry.stat().st_mode) for entry in out.iterdir()} == {0o600}
    mask = os.umask(0o027)
    try:
        assert export_cli(resnet_checkpoint, "-o", tmp_path / "new").exit_code == 0
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o750  # as mkdir makes it
    assert while_written == [0o700, 0o700, 0o700]


def test_export_writes_nothing_outside_its_folder(export_cli, resnet_checkpoint, bird_folder,
                                                  tmp_path):  # fmt: skip
    downloads = tmp_path / "downloads"
    (downloads / "cache").mkdir(parents=True)  # a folder of the user's beside the checkpoint
    checkpoint = downloads / "model.pt"
    shutil.copy(resnet_checkpoint, checkpoint)
    result = export_cli(checkpoint, "-o", tmp_path / "m", "--prior-data", bird_folder)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in downloads.rglob("*")) == ["cache", "model.pt"]


def test_a_staging_folder_killed_while_quantizing_is_swept(tmp_path):
    staged = tmp_path / ".model.bvae-0a1b2c3d.partial"
    staged.mkdir()
    for name in ("encoder.onnx", "decoder.onnx", "prior.onnx", "prior.int8.onnx"):
        (staged / name).write_bytes(b"half")
    assert sweep(tmp_path / "model") == ["removed 1 folder(s) left by an interrupted export"]
    assert hidden(tmp_path) == []


@pytest.mark.skipif(durable.fcntl is None, reason="no flock: nothing is ever swept")
def test_a_sweep_between_making_and_locking_a_staging_folder_loses_nothing(tmp_path, monkeypatch):
    from birdvae.export.destination import staging

    out = tmp_path / "model"
    real_lock, swept = durable.lock, []

    def racing_lock(fd: int) -> bool:
        if not swept:
            swept.append(None)  # the sweep's own locks go straight through
            swept[0] = sweep(out)
        return real_lock(fd)

    monkeypatch.setattr(durable, "lock", racing_lock)
    with staging(out) as folder:
        (folder / "manifest.json").write_text("{}")
    assert swept[0] == ["removed 1 folder(s) left by an interrupted export"]
    assert (out / "manifest.json").read_text() == "{}"
    assert hidden(tmp_path) == []


@pytest.mark.skipif(durable.fcntl is None, reason="no flock: nothing is ever swept")
def test_a_staging_folder_swept_before_it_is_even_opened_is_made_again(tmp_path, monkeypatch):
    """A folder is made, then opened, then locked: a sweep may take it between the first two
    steps as well, and the export then makes another."""
    from birdvae.export import destination

    out = tmp_path / "model"
    real_made, swept = destination._made, []

    def made_then_swept(folder):
        made = real_made(folder)
        if not swept:
            swept.append(sweep(out))
        return made

    monkeypatch.setattr(destination, "_made", made_then_swept)
    with destination.staging(out) as folder:
        (folder / "manifest.json").write_text("{}")
    assert swept[0] == ["removed 1 folder(s) left by an interrupted export"]
    assert (out / "manifest.json").read_text() == "{}" and hidden(tmp_path) == []
