"""What survives a crash in a run folder: a kill at every write point of an epoch's end, a
bit-rotted checkpoint, checkpoints that cannot be resumed, debris of killed writers, hostile
training files. Each case is checked on disk, then by resuming."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from birdvae.runtime import durable
from birdvae.runtime.errors import UserError
from birdvae.training import checkpoint, runfolder
from birdvae.training.cli import train_command
from birdvae.training.config import TrainConfig
from birdvae.training.data import load_splits
from birdvae.training.runfolder import BEST, LAST, METRICS
from birdvae.training.vae_stage import VAETrainer

from .conftest import quiet, tiny_config, write_images


class Killed(BaseException):
    """Stands in for a kill: nothing after the injected point runs."""


def assert_consistent(run: Path) -> dict:
    """The invariants a crash must never break; returns last.pt's state."""
    state = checkpoint.load(run / LAST)
    records = runfolder.read_metrics(run / METRICS)
    assert [r["epoch"] for r in records] == list(range(1, state["epoch"] + 1))
    assert (run / METRICS).read_text().endswith("\n")
    best_line = min(records, key=lambda r: r["val_bpd"])
    best = checkpoint.load(run / BEST)
    assert best["epoch"] == best_line["epoch"] == state["best_epoch"]
    assert best["best_score"] == best_line["val_bpd"]
    for epoch in range(1, state["epoch"] + 1):
        for kind in ("recon", "samples"):
            assert (run / "grids" / f"{kind}_{epoch:04d}.png").is_file()
    assert not [p for p in run.rglob(".*") if p.name.endswith(".tmp")]
    return state


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An uninterrupted 2-epoch run whose second epoch improves (the case a kill can hurt)."""
    root = tmp_path_factory.mktemp("straight")
    data = root / "birds"
    write_images(data / "a", 24, seed=1)
    write_images(data / "b", 24, seed=2)
    run = root / "run"
    VAETrainer(tiny_config(data), run, log=quiet).fit()
    assert checkpoint.load(run / BEST)["epoch"] == 2, "the fixture must improve at epoch 2"
    return data, run


@pytest.mark.parametrize("point", range(5))  # last.pt, best.pt, metrics.jsonl, two grids
def test_a_crash_at_each_write_of_an_epoch_end_is_replayed_on_resume(
    straight, tmp_path, monkeypatch, point
):
    data, reference = straight
    run = tmp_path / "run"
    trainer = VAETrainer(tiny_config(data), run, log=quiet)
    real_replace, calls = os.replace, []
    # writes: config.json, then per epoch last.pt, best.pt, metrics.jsonl and two grids
    kill_at = 1 + 5 + point + 1

    def replace(source, target):
        calls.append(Path(target).name)
        if len(calls) == kill_at:
            raise Killed
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        trainer.fit()
    assert calls[-1] == [LAST, BEST, METRICS, "recon_0002.png", "samples_0002.png"][point]
    monkeypatch.setattr(os, "replace", real_replace)

    resumed = VAETrainer(tiny_config(data), run, checkpoint.load(run / LAST), log=quiet)
    resumed.fit()
    state = assert_consistent(run)
    assert state["epoch"] == 2
    want = runfolder.read_metrics(reference / METRICS)
    got = runfolder.read_metrics(run / METRICS)
    assert [r["val_bpd"] for r in got] == [r["val_bpd"] for r in want]


def test_a_bit_rotted_checkpoint_is_refused_in_one_line(straight, tmp_path):
    _, reference = straight
    run = tmp_path / "run"
    run.mkdir()
    data = bytearray((reference / LAST).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    (run / LAST).write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match=r"damaged.*use the run's best\.pt or"):
        checkpoint.load(run / LAST)
    (run / "best.pt").write_bytes(bytes(data))  # never the damaged file itself as the way out
    with pytest.raises(checkpoint.CheckpointError, match=r"damaged.*use the run's last\.pt or"):
        checkpoint.load(run / "best.pt")
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 2 and "damaged" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_mid_epoch_last_pt_never_becomes_best_pt(straight, tmp_path):
    """A stop inside epoch 3 saves last.pt with best_epoch == epoch == 2 (epochs completed), but
    its weights are epoch 2's plus some steps, never validated: best.pt must stay epoch 2's."""
    _, reference = straight
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    best = (run / BEST).read_bytes()
    state = checkpoint.load(run / LAST)
    assert state["best_epoch"] == state["epoch"] == 2
    state["batch_in_epoch"], state["step"] = 2, state["step"] + 2
    assert BEST not in runfolder.commit_epoch(run, state)
    assert (run / BEST).read_bytes() == best
    state["batch_in_epoch"] = 0  # at an epoch's end the same state is the best one
    (run / BEST).unlink()
    assert BEST in runfolder.commit_epoch(run, state)
    assert checkpoint.load(run / BEST)["step"] == state["step"]


@pytest.mark.parametrize(
    "key",
    ["ema", checkpoint.JUDGE, checkpoint.ANCHOR, checkpoint.SPECIES_NET, checkpoint.PROJECTED],
)
def test_non_finite_weights_are_refused(straight, tmp_path, key):
    """The judge too (export builds the decoder a selector judges by from it), and a decoder
    stage's own networks, which a resumed stage trains on."""
    _, reference = straight
    state = checkpoint.load(reference / LAST)
    state[key] = {name: value.clone() for name, value in state["ema"].items()}
    name = next(iter(state[key]))
    state[key][name] = torch.full_like(state[key][name], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(checkpoint.CheckpointError, match=f"non-finite .*{key} weights"):
        checkpoint.load(tmp_path / "nan.pt")


class RunsCode:
    """Unpickling this runs code: a hostile checkpoint's way in."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_checkpoint_that_would_run_code_is_refused_unrun(straight, tmp_path):
    """torch.load unpickles: only tensors and plain values may be read from a checkpoint, or a
    .pt given to vae-export or --init could run anything."""
    _, reference = straight
    state = checkpoint.load(reference / LAST)
    marker = tmp_path / "marker"
    state["metrics"] = {"note": RunsCode(marker)}
    torch.save(state, tmp_path / "hostile.pt")
    with pytest.raises(checkpoint.CheckpointError, match="holds objects other than tensors"):
        checkpoint.load(tmp_path / "hostile.pt")
    assert not marker.exists()


def test_a_checkpoint_with_a_compressed_member_is_refused_before_it_is_inflated(
    straight, tmp_path, monkeypatch
):
    """torch reads deflated members too, and a tensor's real storage passes every check after
    loading: 16 MB of zeros deflated this way held a 6 GB tensor that vae-export loaded. The
    same file with every member stored as torch.save writes it loads."""
    import zipfile

    _, reference = straight

    def copy_with(compression: int) -> Path:
        copy = tmp_path / f"copy-{compression}.pt"
        with zipfile.ZipFile(reference / LAST) as source, zipfile.ZipFile(copy, "w") as out:
            for info in source.infolist():
                out.writestr(info.filename, source.read(info), compress_type=compression)
        return copy

    assert checkpoint.load(copy_with(zipfile.ZIP_STORED))["epoch"] >= 1
    inflated = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: inflated.append(a))
    with pytest.raises(checkpoint.CheckpointError, match="holds a compressed member"):
        checkpoint.load(copy_with(zipfile.ZIP_DEFLATED))
    assert not inflated


@pytest.mark.parametrize("key", ["prior", "model", "ema", "d_optimizer", checkpoint.JUDGE])
def test_weights_that_are_not_a_state_dict_are_refused(straight, tmp_path, key):
    """A tensor where a network's weights belong (bool() of it is ambiguous) is one error."""
    _, reference = straight
    state = checkpoint.load(reference / LAST)
    state[key] = torch.zeros(3)
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(checkpoint.CheckpointError, match=f"holds {key} that are not a network"):
        checkpoint.load(tmp_path / "odd.pt")


HOSTILE_EDITS = {  # what a hand-edited or crafted last.pt holds -> what the one line says
    "data not a list": (lambda s: s["config"].update(data=5), "data must be a list of text"),
    "batch size 0": (lambda s: s["config"].update(batch_size=0), "batch_size must be at least 1"),
    "lr as text": (lambda s: s["config"].update(lr="x"), "lr must be a number"),
    "grid of 0": (lambda s: s["config"].update(grid_size=0), "grid_size must be a whole"),
    "huge images": (lambda s: s["config"]["model"].update(image_size=65536), "at most 256"),
    "format a tensor": (lambda s: s.update(format=torch.tensor([1, 1])), "checkpoint format"),
    "batch past the epoch": (lambda s: s.update(batch_in_epoch=10**9), "stopped at batch"),
    "batch before it": (lambda s: s.update(batch_in_epoch=-3), "stopped at batch -3"),
    "weights of another model": (
        lambda s: s["model"].pop(next(iter(s["model"]))),
        "cannot be resumed: Error(s) in loading state_dict for VAE: Missing key(s)",
    ),
    # 4 bytes on disk that the finite check computed over as 3e9 numbers (21 GB)
    "an expanded tensor": (lambda s: s["model"].update(junk=torch.zeros(1).expand(10**9)),
                           "1000000000 elements over 4 bytes"),
    "a sparse tensor": (lambda s: s["model"].update(junk=torch.eye(3).to_sparse()), "sparse"),
    "a meta tensor": (lambda s: s["model"].update(junk=torch.empty(3, device="meta")), "meta"),
    "float8": (lambda s: s["model"].update(junk=torch.zeros(2, dtype=torch.float8_e4m3fn)),
               "a tensor of torch.float8_e4m3fn"),
    "an optimizer without its groups": (lambda s: s["optimizer"].pop("param_groups"),
                                        "cannot be resumed: it lacks 'param_groups'"),
    "a moment of another shape": (  # loaded as it was, the run failed in its first step
        lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(5)),
        "optimizer's exp_avg of a weight has shape [5]",
    ),
    "a moment of one number": (lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.ones(())),
                               "optimizer's exp_avg of a weight has shape []"),
    "moments not a table": (lambda s: s["optimizer"].update(state=[1]), "not a table"),
}  # fmt: skip


@pytest.mark.parametrize("edit", HOSTILE_EDITS, ids=HOSTILE_EDITS)
def test_a_crafted_checkpoint_is_one_line_on_resume(straight, tmp_path, edit):
    """Each was a traceback (TypeError, ZeroDivisionError, an ambiguous tensor), or photos
    decoded at 65536x65536 until memory ran out."""
    change, message = HOSTILE_EDITS[edit]
    state = checkpoint.load(straight[1] / LAST)
    change(state)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(state, run / LAST)
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def _another_runs_last(run: Path) -> None:
    state = checkpoint.load(run / LAST)
    state["config"]["seed"] += 1  # another run's: the same data, another seed
    torch.save(state, run / LAST)


def _another_runs_best(run: Path) -> None:
    state = checkpoint.load(run / LAST)
    state["config"]["seed"] += 1
    torch.save(state, run / BEST)


def _best_linked_outside(run: Path) -> None:
    """best.pt a link to a copy of the run's own checkpoint kept outside it: a resume would
    write the new best through the link, over the user's copy."""
    shutil.copy(run / LAST, run.parent / "kept.pt")
    (run / BEST).symlink_to(run.parent / "kept.pt")


def _model_folder_at(path: Path) -> None:
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "tiny_model", path)


FOREIGN_IN_A_RUN = {
    "notes beside it": (lambda run: (run / "notes.txt").write_text("mine"), "notes.txt"),
    "a file as best.pt": (lambda run: (run / BEST).write_text("mine"), "best.pt is not this run"),
    "notes as metrics": (lambda run: (run / METRICS).write_text("notes\n"), "metrics.jsonl holds"),
    "a note after the records": (lambda run: (run / METRICS).write_text(
        (run / METRICS).read_text() + "my note\n"), "metrics.jsonl holds"),
    "a config of another tool": (lambda run: (run / "config.json").write_text('{"my": 1}'),
                                 "config.json"),
    "a picture among the grids": (lambda run: (run / "grids" / "mine.png").write_bytes(b"x"),
                                  "grids"),
    "another run's last.pt": (_another_runs_last, "last.pt is another run's"),
    "another run's best.pt": (_another_runs_best, "its best.pt is another run's than its last"),
    "a link as best.pt": (_best_linked_outside, "it holds best.pt, which vae-train did not"),
    "a note of one line as metrics": (lambda run: (run / METRICS).write_text("my note"),
                                      "metrics.jsonl holds"),
    "a model folder as config.json": (lambda run: ((run / "config.json").unlink(),
                                                   _model_folder_at(run / "config.json")),
                                      "it holds config.json, which vae-train did not write"),
    "a model folder as grids": (lambda run: (shutil.rmtree(run / "grids"),
                                             _model_folder_at(run / "grids")),
                                "it holds grids, which vae-train did not write"),
    "a folder named as a model that is none": (
        lambda run: ((run / "model").mkdir(), (run / "model" / "notes.txt").write_text("mine")),
        "it holds model, which vae-train did not write; move it out"),
}  # fmt: skip


@pytest.mark.parametrize("edit", FOREIGN_IN_A_RUN, ids=FOREIGN_IN_A_RUN)
def test_a_resume_never_writes_over_what_the_run_did_not_write(straight, tmp_path, edit):
    """A resume rewrites config.json, best.pt and metrics.jsonl whole; it went on over a
    user's files of those names, and over another run's records under a last.pt copied in."""
    change, message = FOREIGN_IN_A_RUN[edit]
    run = Path(shutil.copytree(straight[1], tmp_path / "run"))
    (run / BEST).unlink()  # so that the resume would write best.pt
    (run / METRICS).write_text((straight[1] / METRICS).read_text().splitlines()[0] + "\n")
    change(run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 2 and "refusing to resume" in result.output, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_run_files_larger_than_any_run_writes_are_refused_unread(
    straight, image_folder, tmp_path, monkeypatch
):
    """An 8 GB metrics.jsonl took 17.5 GB to refuse on resume, and a 4 GB config.json 9 GB in
    a new run's folder; each is now refused from its size. Sparse files: nothing is written."""
    from birdvae.training.config import MAX_CONFIG_BYTES

    read = []
    original = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        read.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    run = Path(shutil.copytree(straight[1], tmp_path / "run"))
    with open(run / METRICS, "r+b") as handle:
        handle.truncate(runfolder.MAX_METRICS_BYTES + 1)
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 2 and "metrics.jsonl holds lines" in result.output, result.output
    assert run / METRICS not in read
    folder = tmp_path / "new"
    folder.mkdir()
    with open(folder / "config.json", "wb") as handle:
        handle.truncate(MAX_CONFIG_BYTES + 1)
    args = ["--data", str(image_folder), "-o", str(folder)]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 2 and "config.json, which vae-train did not" in result.output
    assert folder / "config.json" not in read


def test_metrics_lines_past_the_committed_epoch_are_dropped(tmp_path):
    """An earlier version appended an epoch's line before its last.pt; killed between the two,
    it left a line for an epoch the resume trains again, whose new line must replace it."""
    lines = [{"epoch": 1, "val_bpd": 5.0}, {"epoch": 2, "val_bpd": 9.9}]
    (tmp_path / METRICS).write_text("".join(f"{json.dumps(line)}\n" for line in lines))
    state = {"epoch": 1, "best_epoch": 0, "batch_in_epoch": 0, "metrics": lines[0]}
    assert runfolder.bring_up_to_date(tmp_path, state) == [METRICS]
    assert runfolder.read_metrics(tmp_path / METRICS) == lines[:1]
    again = {"epoch": 2, "best_epoch": 0, "batch_in_epoch": 0,
             "metrics": {"epoch": 2, "val_bpd": 4.0}}  # fmt: skip
    runfolder.bring_up_to_date(tmp_path, again)
    assert runfolder.read_metrics(tmp_path / METRICS) == [lines[0], again["metrics"]]


def test_metrics_lines_that_are_no_records_are_left_out(tmp_path):
    """A line cut short by a crash, another object, or one past what JSON's reader takes
    (nested too deep, a number too long: RecursionError and ValueError): no epoch's record."""
    good = {"epoch": 1, "val_bpd": 5.0}
    nested = "[" * 100_000 + "]" * 100_000
    long = '{"epoch": ' + "9" * 5000 + "}"  # past Python's 4,300 digits: a ValueError
    text = f'{json.dumps(good)}\n{nested}\n{long}\n{{"epoch": "2"}}\n[1]\n{{"epoch": 3, "val'
    (tmp_path / METRICS).write_text(text)
    assert runfolder.read_metrics(tmp_path / METRICS) == [good]


def _with_threads(run: Path, threads: int) -> None:
    """The run as if started with ``--threads``: its last.pt and config.json say so."""
    state = checkpoint.load(run / LAST)
    state["config"]["threads"] = threads
    torch.save(state, run / LAST)
    (run / runfolder.CONFIG).write_text(json.dumps(state["config"]))


def test_a_resume_keeps_the_runs_threads(straight, tmp_path, monkeypatch):
    """A sum split over other threads rounds otherwise: a run started with --threads 1 and
    resumed as the stop message says (--resume alone) drifted from an unbroken run."""
    run = Path(shutil.copytree(straight[1], tmp_path / "run"))
    _with_threads(run, 1)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr("birdvae.runtime.cpus.usable_cpus", lambda: 4)  # on any runner
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert calls == [1]
    assert checkpoint.load(run / LAST)["config"]["threads"] == 1
    calls.clear()
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "4",
                                                "--threads", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls == [2] and checkpoint.load(run / LAST)["config"]["threads"] == 2


def test_a_resume_on_a_smaller_machine_names_the_runs_threads(straight, tmp_path, monkeypatch):
    run = Path(shutil.copytree(straight[1], tmp_path / "run"))
    _with_threads(run, 64)
    monkeypatch.setattr("birdvae.runtime.cpus.usable_cpus", lambda: 2)
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: the run's own --threads 64 is more than the 2 CPUs this process may use; more "
        f"would only wait on each other; pass --threads N to resume {run} with fewer"
    ]


def test_a_resume_leaves_a_model_exported_into_the_run_folder_alone(straight, tmp_path):
    """vae-export writes model/ into the checkpoint's folder unless told otherwise, and the
    resume then refused the folder: a resume writes nothing inside a model folder."""
    run = Path(shutil.copytree(straight[1], tmp_path / "run"))
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "tiny_model", run / "model")
    before = {p: p.read_bytes() for p in (run / "model").rglob("*")}
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in (run / "model").rglob("*")} == before
    (run / "model" / "decoder.onnx").write_bytes(b"changed")  # no longer the model it lists
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "4"])
    assert result.exit_code == 2 and "it holds model, which vae-train" in result.output


KILLED_EXPORTS = {
    # the writability probe, made and removed before any work
    "the probe's empty folder": lambda run: (
        (run / durable.staging_name("model", "partial")).mkdir()),
    "a staging folder with half a graph": lambda run: (
        (run / durable.staging_name("model", "partial")).mkdir(),
        next(run.glob(".model.*.partial")).joinpath("encoder.onnx").write_bytes(b"half a graph")),
    "the old model renamed aside, the new one not yet in": lambda run: (
        shutil.copytree(Path(__file__).parents[1] / "fixtures" / "tiny_model",
                        run / durable.staging_name("model", "old"))),
}  # fmt: skip


@pytest.mark.parametrize("left", KILLED_EXPORTS, ids=KILLED_EXPORTS)
def test_a_resume_leaves_what_a_killed_export_left_to_the_next_export(straight, tmp_path, left):
    """vae-export's default destination is the run's model/; a kill while it worked left its
    staging folder there, and the resume refused it as the user's, to be moved out by hand. A
    resume writes nothing inside it, and the next export into model/ clears it away."""
    run = Path(shutil.copytree(straight[1], tmp_path / "run"))
    KILLED_EXPORTS[left](run)
    before = {p: p.read_bytes() for p in run.rglob(".model.*/*")}
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in run.rglob(".model.*/*")} == before
    assert len(list(run.glob(".model.*"))) == 1


@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_file_or_link_named_as_an_exports_folder_is_not_taken_for_one(straight, tmp_path, kind):
    """Only a folder is what a killed export leaves; a file or a link of that name is the
    user's, which the resume would leave beside records it rewrites without a word."""
    run = Path(shutil.copytree(straight[1], tmp_path / "run"))
    named = run / durable.staging_name("model", "partial")
    if kind == "file":
        named.write_text("mine")
    else:
        named.symlink_to(tmp_path)
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 2 and named.name in result.output, result.output


def test_a_resume_takes_what_an_earlier_version_left_for_the_runs_own(straight, tmp_path):
    """A run killed under an earlier version left temporaries without durable's tag and could
    leave its last metrics line cut short (it appended them): both are the run's."""
    run = Path(shutil.copytree(straight[1], tmp_path / "run"))
    (run / ".last.pt.1a2b3c4d.tmp").write_bytes(b"half a checkpoint")
    with open(run / METRICS, "a") as metrics:
        metrics.write('{"epoch": 3, "val_b')
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in runfolder.read_metrics(run / METRICS)] == [1, 2, 3]


def test_resume_without_optimizer_state_is_one_line(straight, tmp_path):
    _, reference = straight
    state = checkpoint.load(reference / LAST)
    del state["optimizer"]
    run = tmp_path / "run"
    run.mkdir()
    torch.save(state, run / LAST)
    result = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 2, result.output
    assert "cannot be resumed" in result.output and "optimizer" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_stale_temporaries_are_swept_and_live_ones_kept(straight, tmp_path):
    data, _ = straight
    run = tmp_path / "run"
    VAETrainer(tiny_config(data, epochs=1), run, log=quiet).fit()
    stale = run / ".last.pt.bvae-abcd0123.tmp"
    stale.write_bytes(b"half a checkpoint")
    stale_grid = run / "grids" / ".recon_0002.png.bvae-1a2b3c4d.tmp"
    stale_grid.write_bytes(b"half a png")
    live = run / ".best.pt.bvae-00000000.tmp"
    live.write_bytes(b"being written")
    foreign = run / ".notes.txt.bvae-abcdef01.tmp"
    foreign.write_bytes(b"not ours")
    fd = durable.hold(live)
    try:
        VAETrainer(tiny_config(data), run, checkpoint.load(run / LAST), log=quiet)
    finally:
        os.close(fd)
    assert not stale.exists() and not stale_grid.exists()
    assert live.exists() and foreign.exists()


def test_an_undecodable_file_is_skipped_with_the_one_warning(image_folder):
    header = struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + bytes(44)
    pixel_format = struct.pack("<2I", 32, 0x4) + b"XXXX" + bytes(20)
    (image_folder / "species_a" / "dds.png").write_bytes(
        b"DDS " + header + pixel_format + bytes(20 + 64)
    )
    with pytest.warns(UserWarning, match=r"skipped 1 image file\(s\) that cannot be used.*dds"):
        splits = load_splits(image_folder, 16)
    assert splits.skipped == 1 and len(splits.train) + len(splits.val) == 48


def test_a_data_error_leaves_no_run_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"not a jpeg")
    run = tmp_path / "run"
    result = CliRunner().invoke(train_command, ["--data", str(empty), "-o", str(run)])
    assert result.exit_code == 2 and "no readable training images" in result.output
    assert not run.exists()


def test_a_run_stopped_while_it_writes_its_photo_cache_leaves_no_empty_folders(
    image_folder, tmp_path, monkeypatch
):
    """The decoded photos are written once they are all decoded, a file as large as they are:
    Ctrl-C then left the run's folders behind, empty (RUN/cache/)."""
    import numpy as np

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", stopped)
    run = tmp_path / "new" / "run"
    result = CliRunner().invoke(train_command, ["--data", str(image_folder), "-o", str(run)])
    assert result.exit_code == 130, result.output
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "case",
    ["same folder twice", "one inside another", "run inside data",
     "run inside data, through a link", "all in validation"],
)  # fmt: skip
def test_data_that_would_train_on_the_wrong_photos_is_refused(image_folder, tmp_path, case):
    species = sorted(p for p in image_folder.iterdir() if p.is_dir())[0]
    run = tmp_path / "run"
    link = tmp_path / "birds-link"
    link.symlink_to(image_folder)
    args = {
        "same folder twice": ["--data", image_folder, "--data", f"{image_folder}/", "-o", run],
        "one inside another": ["--data", image_folder, "--data", species, "-o", run],
        "run inside data": ["--data", image_folder, "-o", image_folder / "run"],
        "run inside data, through a link": ["--data", link, "-o", image_folder / "run"],
        "all in validation": ["--data", image_folder, "--val-fraction", 0.99, "-o", run],
    }[case]
    result = CliRunner().invoke(train_command, [str(arg) for arg in args])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: ")
    assert {"same folder twice": "overlap", "one inside another": "overlap",
            "run inside data": "inside the data folder",
            "run inside data, through a link": "inside the data folder",
            "all in validation": "all 48 images in validation"}[case] in line  # fmt: skip
    assert not run.exists() and not (image_folder / "run").exists()


def test_a_new_run_refuses_a_folder_of_files_it_did_not_write(image_folder, tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    files = {"config.json": '{"mine": 1}\n', "best.pt": "mine\n", "metrics.jsonl": '{"epoch": 1}\n'}
    for name, text in files.items():
        (mine / name).write_text(text)
    result = CliRunner().invoke(train_command, ["--data", str(image_folder), "-o", str(mine)])
    assert result.exit_code == 2, result.output
    assert "vae-train did not write" in result.output and "best.pt" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert {p.name: p.read_text() for p in mine.iterdir()} == files


@pytest.mark.parametrize(
    "text",
    ["{}\n", '{"epochs": 5, "seed": 1}\n', "[]\n", '{"config_version": 1e400}', "[" * 100_000],
)
def test_a_config_json_of_a_few_known_keys_is_the_users_not_a_runs(image_folder, tmp_path, text):
    """``{}`` loads as the default config, yet no run wrote it: it was trained over."""
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.json").write_text(text)
    result = CliRunner().invoke(train_command, ["--data", str(image_folder), "-o", str(mine)])
    assert result.exit_code == 2, result.output
    assert "config.json, which vae-train did not write" in result.output
    assert [p.name for p in mine.iterdir()] == ["config.json"]
    assert (mine / "config.json").read_text() == text


def test_a_new_run_may_restart_in_the_folder_of_one_stopped_before_its_first_epoch(tmp_path):
    run = tmp_path / "run"
    (run / "cache").mkdir(parents=True)
    (run / "grids").mkdir()
    (run / "config.json").write_text(TrainConfig().to_json())
    (run / "cache" / "folder-16px-0123456789abcdef.npz").write_bytes(b"decoded images")
    (run / ".config.json.bvae-0a1b2c3d.tmp").write_bytes(b"a killed write")
    (run / "grids" / ".samples_0001.png.bvae-0a1b2c3d.tmp").write_bytes(b"a killed write")
    runfolder.check_new_run_folder(run)  # no error


@pytest.mark.parametrize("picture", ["holiday.png", "samples_0001.png", "recon_0002.png"])
def test_a_new_run_refuses_a_finished_picture_among_the_grids(image_folder, tmp_path, picture):
    """A run writes its first grid after its first last.pt, so a folder without one holds no
    grid of a run's: a picture named as a grid is the user's, and training went on over it."""
    run = tmp_path / "run"
    (run / "grids").mkdir(parents=True)
    (run / "grids" / picture).write_bytes(b"a user's picture")
    result = CliRunner().invoke(train_command, ["--data", str(image_folder), "-o", str(run)])
    assert result.exit_code == 2, result.output
    assert f"it holds grids/{picture}, which no run writes before its first last.pt" in (
        result.output
    ), result.output
    assert (run / "grids" / picture).read_bytes() == b"a user's picture"


def test_the_names_a_run_writes_are_the_names_its_folder_checks_know(straight, tmp_path):
    """The cache and grid names are made in one place and matched in another: a run stopped
    before its first epoch must leave a folder a new run accepts, and a run's grids must not
    stop its resume."""
    from birdvae.training.data import cache_file_name

    run = tmp_path / "run"
    cache = run / runfolder.CACHE / cache_file_name("cub+folder", 64, "0123456789abcdef")
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"written by a run")
    assert runfolder.is_cache_file(cache)
    runfolder.check_new_run_folder(run)  # no error
    resumed = Path(shutil.copytree(straight[1], tmp_path / "resumed"))
    for kind in ("recon", "samples"):
        shutil.copy(resumed / "grids" / "recon_0001.png", runfolder.grid_file(resumed, kind, 12345))
    config = checkpoint.config_of(checkpoint.load(resumed / LAST))
    runfolder.check_resume_folder(resumed, config)  # no error


def test_output_is_the_flag_and_out_its_hidden_old_name(tmp_path):
    shown = CliRunner().invoke(train_command, ["--help"]).output
    assert "-o, --output" in shown and not re.search(r"--out\b(?!put)", shown)
    both = CliRunner().invoke(train_command, ["--data", str(tmp_path), "-o", str(tmp_path / "a"),
                                              "--out", str(tmp_path / "b")])  # fmt: skip
    assert both.exit_code == 2 and "once" in both.output


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from birdvae.training.config import TrainConfig
    from birdvae.training.vae_stage import VAETrainer

    config, run, kill_at, when = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    real_replace, calls = os.replace, []

    def replace(source, target):
        calls.append(target)
        if len(calls) == kill_at and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(source, target)
        if len(calls) == kill_at and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    VAETrainer(TrainConfig.load(config), run, log=lambda _: None).fit()
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_at", "when"),
    # writes: the photo cache, config.json, then per epoch last.pt, best.pt, metrics, two grids
    [(1, "before"), (1, "after"), (2, "before"), (2, "after"), (3, "before"), (3, "after"),
     (4, "after"), (5, "after"), (8, "before"), (8, "after"), (9, "after"), (10, "after"),
     (12, "after")],
)  # fmt: skip
def test_sigkill_at_a_write_point_then_resume(straight, tmp_path, kill_at, when):
    data, reference = straight
    config = tmp_path / "config.json"
    config.write_text(tiny_config(data).to_json())
    run = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(config), str(run), str(kill_at), when],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if not (run / LAST).exists():  # killed before the first commit: a fresh start is the resume
        VAETrainer(tiny_config(data), run, log=quiet).fit()
    else:
        VAETrainer(tiny_config(data), run, checkpoint.load(run / LAST), log=quiet).fit()
    state = assert_consistent(run)
    assert state["epoch"] == 2
    want = [r["val_bpd"] for r in runfolder.read_metrics(reference / METRICS)]
    assert [r["val_bpd"] for r in runfolder.read_metrics(run / METRICS)] == want


def test_a_full_disk_while_saving_a_checkpoint_is_an_os_error(tmp_path, monkeypatch):
    """torch.save writing into the file itself turned ENOSPC into a RuntimeError from its C++
    writer: a traceback, where an OSError becomes one ``error:`` line naming the file."""
    import errno
    import io

    from birdvae.runtime import durable
    from birdvae.training.checkpoint import save_atomic

    class FillingDisk(io.RawIOBase):
        """A file on a disk that fills: a short write, then ENOSPC, as a raw file does."""

        room = 100_000

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            if self.room <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            written = min(len(data), self.room)
            self.room -= written
            return written

    def into_filling_disk(path, write, sync=True):
        write(io.BufferedWriter(FillingDisk()))

    monkeypatch.setattr(durable, "write_atomic", into_filling_disk)
    with pytest.raises(OSError) as raised:
        save_atomic({"weights": torch.zeros(3_000_000)}, tmp_path / "last.pt")
    assert raised.value.errno == errno.ENOSPC


def test_a_run_folder_another_vae_train_holds_is_refused(tmp_path):
    """A --resume while the run still trains would have both processes write last.pt and
    best.pt in turn; the second is refused before it writes anything."""
    from birdvae.training.loop import TrainingError

    data = tmp_path / "birds"
    write_images(data / "a", 24, seed=1)
    write_images(data / "b", 24, seed=2)
    run = tmp_path / "run"
    run.mkdir()
    held = durable.hold(run)  # what the running vae-train holds
    try:
        with pytest.raises(TrainingError, match="another vae-train is running"):
            VAETrainer(tiny_config(data, epochs=1), run, log=quiet).fit()
        assert not (run / LAST).exists() and not (run / runfolder.CONFIG).exists()
    finally:
        os.close(held)
    VAETrainer(tiny_config(data, epochs=1), run, log=quiet).fit()  # free again: it trains
    assert (run / LAST).exists()


def test_a_resume_on_changed_photos_is_refused(tmp_path):
    """The split and the steps of a resumed run are the run's only if its photos are."""
    data = tmp_path / "birds"
    write_images(data / "a", 24, seed=1)
    write_images(data / "b", 24, seed=2)
    run = tmp_path / "run"
    VAETrainer(tiny_config(data, epochs=1), run, log=quiet).fit()
    write_images(data / "c", 4, seed=3)  # photos added after the run started
    with pytest.raises(UserError, match="photos in its data folders have changed"):
        VAETrainer(tiny_config(data, epochs=2), run, checkpoint.load(run / LAST), log=quiet)


def test_a_data_folder_linking_to_the_runs_folder_does_not_read_the_runs_grids(tmp_path):
    """A link in the data folder to the folder holding the run: the run's own grids were then
    read as photos by the resume, which refused the run for ever ("photos have changed")."""
    data, runs = tmp_path / "birds", tmp_path / "runs"
    write_images(data / "a", 24, seed=1)
    write_images(data / "b", 24, seed=2)
    (data / "out").symlink_to(runs, target_is_directory=True)
    run = runs / "run"
    VAETrainer(tiny_config(data, epochs=1), run, log=quiet).fit()
    assert list((run / "grids").glob("*.png"))  # what the resume would have read
    resumed = VAETrainer(tiny_config(data, epochs=2), run, checkpoint.load(run / LAST), log=quiet)
    assert resumed.fit()["epoch"] == 2


def test_without_flock_a_run_trains_unlocked(tmp_path, monkeypatch):
    """Where fcntl does not exist (Windows) there is no lock to take, and a folder cannot be
    opened to take one: the run trains as it did before the lock existed."""
    from birdvae.runtime import durable

    data = tmp_path / "birds"
    write_images(data / "a", 24, seed=1)
    write_images(data / "b", 24, seed=2)
    monkeypatch.setattr(durable, "fcntl", None)
    real_open = os.open

    def no_folders(path, flags, *args):
        if os.path.isdir(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_folders)
    VAETrainer(tiny_config(data, epochs=1), tmp_path / "run", log=quiet).fit()
    assert (tmp_path / "run" / LAST).exists()


def test_resuming_a_run_stopped_before_its_first_epoch_says_to_start_it_again(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(TrainConfig().to_json())  # what such a run leaves
    result = CliRunner().invoke(train_command, ["--resume", str(run)])
    assert result.exit_code == 2, result.output
    assert "before its first epoch ended" in result.output and "-o" in result.output
