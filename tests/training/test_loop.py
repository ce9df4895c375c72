from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch.optim.swa_utils import AveragedModel

from birdvae.training import checkpoint, loop, precision
from birdvae.training.averaging import exponential_average
from birdvae.training.cli import eval_command, next_steps, train_command
from birdvae.training.loop import Trainer
from birdvae.training.runfolder import LAST
from birdvae.training.vae_stage import VAETrainer

from .conftest import as_launched_by_torchrun, quiet, tiny_config


@pytest.mark.parametrize("floor", [0.0, 0.02, 0.5])
def test_the_schedule_warms_up_then_decays_to_the_configs_floor(floor: float):
    factors = [loop.lr_factor(step, 100, 10, "cosine", floor) for step in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # never rises after warm-up
    assert factors[100] == pytest.approx(floor)
    assert loop.lr_factor(100, 100, 10, "constant", floor) == 1.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_few_steps_lower_the_loss(image_folder: Path, tmp_path: Path, precision: str):
    torch.manual_seed(0)
    config = tiny_config(image_folder, kl_warmup_epochs=0, precision=precision)
    trainer = VAETrainer(config, tmp_path / "run", log=quiet)
    assert trainer.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    batch = trainer.train_images[:16]
    trainer.config.flip = False
    first = trainer.train_step(batch)["bpd"]
    for _ in range(40):
        last = trainer.train_step(batch)["bpd"]
    assert last < first - 0.5, (first, last)


def test_auto_precision_is_bf16_only_where_the_hardware_does_it(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", cpu) == torch.float32
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto", cpu) == torch.bfloat16
    assert precision.resolve_precision("fp32", cpu) == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native bf16 asked for: nothing to say
        assert precision.resolve_precision("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated, several times slower than fp32"):
        assert precision.resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision"):
        precision.resolve_precision("fp16", cpu)


def test_kl_and_coupling_schedules(image_folder: Path, tmp_path: Path):
    """KL ramps up to --kl-weight over its warm-up; a coupling is off for its warm-up, then ramps
    in over as many epochs, and a coupled run trains."""
    config = tiny_config(image_folder, kl_warmup_epochs=2, kl_weight=0.5, coupling_warmup_epochs=1)
    config.model.likelihood = "coupled_logistic"
    trainer = VAETrainer(config, tmp_path / "run", log=quiet)
    per_epoch = trainer.steps_per_epoch
    seen = {}
    for step in (0, per_epoch - 1, 2 * per_epoch - 1, 3 * per_epoch):
        trainer.step = step
        seen[step] = (trainer.kl_weight(), trainer.coupling_weight())
    assert seen[0][0] == pytest.approx(0.5 / (2 * per_epoch)) and seen[0][1] == 0.0
    assert seen[per_epoch - 1] == (pytest.approx(0.25), 0.0)
    assert seen[2 * per_epoch - 1] == (pytest.approx(0.5), pytest.approx(1.0))
    assert seen[3 * per_epoch] == (0.5, 1.0)
    trainer.step = 0  # a coupled run trains: finite figures, and the fit improves over steps
    batch = trainer.train_images[:8]
    first = trainer.train_step(batch)
    assert first is not None and all(math.isfinite(v) for v in first.values()), first
    for _ in range(15):
        last = trainer.train_step(batch)
    assert last is not None and last["bpd"] < first["bpd"], (first, last)


def test_stop_and_resume_give_the_same_weights_as_an_uninterrupted_run(
    image_folder: Path, tmp_path: Path
):
    straight = VAETrainer(tiny_config(image_folder), tmp_path / "straight", log=quiet)
    straight.fit()

    def stop_mid_second_epoch(trainer: Trainer) -> None:
        if trainer.epoch == 1 and trainer.batch_in_epoch == 2:
            trainer.request_stop()

    stopped = VAETrainer(tiny_config(image_folder), tmp_path / "stopped", log=quiet)
    stopped.fit(on_step=stop_mid_second_epoch)
    state = checkpoint.load(tmp_path / "stopped" / LAST)
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 2)

    resumed = VAETrainer(checkpoint.config_of(state), tmp_path / "stopped", state, log=quiet)
    # the best so far goes on: best.pt is replaced only by a better epoch than it holds
    assert (resumed.best_score, resumed.best_epoch) == (state["best_score"], 1)
    resumed.fit()
    assert resumed.step == straight.step
    assert (resumed.best_score, resumed.best_epoch) == (straight.best_score, straight.best_epoch)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    for name, tensor in straight.ema.module.state_dict().items():
        assert torch.equal(tensor, resumed.ema.module.state_dict()[name]), name


def test_every_rank_of_a_resumed_run_draws_its_own_random_numbers(
    image_folder: Path, tmp_path: Path, monkeypatch
):
    """The checkpoint holds rank 0's random state alone; restored on every rank, all of a
    resumed distributed run's ranks drew the same flips, shifts and noise. Rank 0 goes on from
    its saved state (a resume is exact there); each other rank starts a stream of its own."""
    config = tiny_config(image_folder, epochs=1)
    VAETrainer(config, tmp_path / "run", log=quiet).fit()
    state = checkpoint.load(tmp_path / "run" / LAST)
    streams = {}
    # Each rank of a run of three, as it builds its trainer, without a process group to join.
    monkeypatch.setattr(loop._Distributed, "start", lambda self, device: None)
    monkeypatch.setattr(loop._Distributed, "barrier", lambda self: None)
    monkeypatch.setattr(loop._Distributed, "any", lambda self, flag, device: flag)
    monkeypatch.setattr(loop, "DistributedDataParallel", lambda module, **_: module)
    for rank in (0, 1, 2):
        as_launched_by_torchrun(monkeypatch, world=3, rank=rank)
        torch.manual_seed(12345)
        VAETrainer(checkpoint.config_of(state), tmp_path / "run", state, log=quiet)
        streams[rank] = torch.rand(8)
        torch.set_rng_state(state["rng"]["cpu"])
        assert torch.equal(streams[rank], torch.rand(8)) is (rank == 0), rank
    assert not torch.equal(streams[1], streams[2])
    torch.manual_seed(loop.resumed_rank_seed(config.seed, 1, state["step"]))
    assert torch.equal(streams[1], torch.rand(8))


class _OtherRanks:
    """A process group as one rank sees it, recording what it asks the others."""

    def __init__(self, rank: int, others_say: bool) -> None:
        self.rank, self.main, self.enabled, self.world = rank, rank == 0, True, 2
        self.others_say, self.asked = others_say, []

    def any(self, flag: bool, device: torch.device) -> bool:
        self.asked.append(flag)
        return flag or self.others_say

    def barrier(self) -> None:
        raise AssertionError("this rank would wait at the barrier for a rank 0 that has left")


@pytest.mark.parametrize("rank", [0, 1])
def test_a_validation_score_that_is_not_a_number_stops_every_rank(
    image_folder: Path, tmp_path: Path, monkeypatch, rank: int
):
    """Rank 0 alone validates; on a NaN score it raised alone, and the other ranks waited at
    the epoch's barrier until the process group timed out (10 to 30 minutes). Now rank 0 tells
    them, and every rank ends with the diverged run's message."""
    trainer = VAETrainer(tiny_config(image_folder, epochs=1), tmp_path / "run", log=quiet)
    monkeypatch.setattr(trainer, "_validate", lambda: {trainer.score_key: math.nan})
    trainer.ddp = _OtherRanks(rank, others_say=rank != 0)
    trainer._run_epoch(None)
    with pytest.raises(loop.TrainingError, match=r"validation .* is (nan|not a number)"):
        trainer._end_epoch()
    assert trainer.ddp.asked[-1] is (rank == 0)  # the last question: did validation fail?
    assert not (tmp_path / "run" / LAST).exists()


def test_a_checkpoint_without_the_keys_added_since_resumes_as_one_with_them(
    image_folder: Path, tmp_path: Path
):
    """checkpoint.upgrade gives each key checkpoints gained within their format the value its
    absence meant, and each renamed key its name now: a run carried on from such a checkpoint
    trains the same weights. (Without
    ``ema_n`` the weight average's ramp starts again, as it did for those checkpoints.)"""
    runs = {}
    for name in ("with", "without"):
        first = VAETrainer(tiny_config(image_folder, epochs=1), tmp_path / name, log=quiet)
        first.fit()
        if name == "without":
            state = torch.load(tmp_path / name / LAST, weights_only=True)
            for key in set(checkpoint.ADDED_KEYS) - {"ema", "ema_n"}:
                state.pop(key, None)
            for old, new in checkpoint.RENAMED_KEYS.items():
                state[old] = state.pop(new)
            checkpoint.save_atomic(state, tmp_path / name / LAST)
        state = checkpoint.load(tmp_path / name / LAST)
        assert set(checkpoint.ADDED_KEYS) <= set(state)
        assert set(checkpoint.RENAMED_KEYS.values()) <= set(state)
        assert not set(checkpoint.RENAMED_KEYS) & set(state)
        runs[name] = VAETrainer(tiny_config(image_folder), tmp_path / name, state, log=quiet)
        runs[name].fit()
    assert runs["with"].step == runs["without"].step
    for key, tensor in runs["with"].model.state_dict().items():
        assert torch.equal(tensor, runs["without"].model.state_dict()[key]), key
    timings = {"items_per_s", "epoch_seconds"}
    scores = {k: v for k, v in runs["with"].metrics.items() if k not in timings}
    assert {k: runs["without"].metrics[k] for k in scores} == scores


def test_train_cli_writes_the_run_folder_and_resume_carries_it_on(image_folder, tmp_path):
    run = tmp_path / "run"
    # --out: -o's hidden old name, which scripts written before the rename still pass
    args = ["--data", str(image_folder), "--out", str(run), "--epochs", "1", "--batch-size", "8",
            "--latent-dim", "16", "--seed", "3", "--decoder-width", "8",
            "--decoder-max-width", "24", "--box-margin", "0"]  # fmt: skip
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    written = json.loads((run / "config.json").read_text())
    model = written["model"]
    assert (model["decoder_width"], model["decoder_max_width"]) == (8, 24)
    assert written["box_margin"] == 0.0  # and a later stage keeps it: it is the data's framing
    best = run / "best.pt"
    assert (
        f"next (a learned prior, for birds that look like birds): vae-train --stage prior "
        f"--init {best} -o {run}-prior\n" in result.output
    )
    assert f"  or export it as it is: vae-export {best} -o {run}-model" in result.output
    stage = ["--data", str(image_folder), "-o", str(tmp_path / "p"), "--stage", "prior",
             "--init", str(run / "best.pt"), "--box-margin", "0.3"]  # fmt: skip
    refused = CliRunner().invoke(train_command, stage)
    assert refused.exit_code == 2 and "--box-margin: --stage prior keeps" in refused.output
    for name in ("last.pt", "best.pt", "metrics.jsonl", "config.json"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "grids").iterdir()) == [
        "recon_0001.png", "samples_0001.png"
    ]  # fmt: skip
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"val_bpd", "val_psnr", "val_kl_bpd", "train_bpd", "items_per_s"} <= set(record)

    again = CliRunner().invoke(train_command, args)
    assert again.exit_code == 2 and "--resume" in again.output

    resume = ["--resume", str(run), "--epochs", "2", "--no-compile"]  # a flag a resume may change
    carried = CliRunner().invoke(train_command, resume)
    assert carried.exit_code == 0, carried.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert checkpoint.load(run / LAST)["epoch"] == 2
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    fewer = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "1"])
    assert fewer.exit_code == 2 and "2 epochs, more than --epochs 1" in fewer.output

    changed = CliRunner().invoke(train_command, ["--resume", str(run), "--lr", "0.1"])
    assert changed.exit_code == 2 and "--lr" in changed.output

    scored = CliRunner().invoke(eval_command, [str(run / "best.pt"), "--iw-samples", "4",
                                               "--json"])  # fmt: skip
    assert scored.exit_code == 0, scored.output
    figures = json.loads(scored.output.strip().splitlines()[-1])
    assert figures["iw_bpd"] <= figures["bpd"] + 0.05 and figures["psnr"] > 0


def test_the_next_steps_are_commands_a_shell_runs_as_printed(tmp_path):
    run = tmp_path / "my runs" / "it's"
    for stage, words in (("vae", ["vae-train", "--stage", "prior", "--init", str(run / "best.pt"),
                                  "-o", f"{run}-prior"]),
                         ("prior", ["vae-train", "--stage", "decoder", "--init",
                                    str(run / "best.pt"), "-o", f"{run}-decoder"]),
                         ("decoder", ["vae-train", "--stage", "decoder", "--init",
                                      str(run / "best.pt"), "--epochs", "6", "--anchor-scale", "4",
                                      "--rater-weight", "0.1", "-o", f"{run}-rated"])):  # fmt: skip
        command = next_steps(stage, run)[1].split(": ", 1)[1]
        assert shlex.split(command) == words, stage
    # After the VAE, the recipe's guide too: the GUIDE the recipe's export names at the end.
    guide_run = next_steps("vae", run)[2].split(": ", 1)[1]
    assert shlex.split(guide_run) == ["vae-train", "--stage", "prior", "--init",
                                      str(run / "best.pt"), "--prior-width", "256",
                                      "--prior-blocks", "2", "--epochs", "15", "-o",
                                      f"{run}-guide"]  # fmt: skip
    export = ["vae-export", str(run / "best.pt"), "-o", f"{run}-model", "&&", "bird-gen", "-m",
              f"{run}-model"]  # fmt: skip
    rated = next_steps("decoder", run, rater_term=True)
    assert len(rated) == 2 and shlex.split(rated[1].split(": ", 1)[1]) == export
    guide = next_steps("prior", run)[-1].split(": ", 1)[1]
    as_guide = ["vae-export", "CHECKPOINT", "--prior-guide", str(run / "best.pt")]
    assert shlex.split(guide) == as_guide
    small = next_steps("prior", run, guide_sized=True)  # the guide's line first
    assert shlex.split(small[1].split(": ")[-1]) == as_guide and "decoder" in small[2]
    guided = next_steps("decoder", run, "/g's/best.pt", 3.5, rater_term=True)[1].split(": ", 1)[1]
    assert shlex.split(guided)[:6] == ["vae-export", str(run / "best.pt"), "--prior-guide",
                                       "/g's/best.pt", "--guidance", "3.5"]  # fmt: skip
    # After the recipe's last stage, its whole export too, with the run's data folders.
    data = ["/birds/cub 200", "/birds/more"]
    recipe = ["vae-export", str(run / "best.pt"), "-o", f"{run}-model", "--int8", "--prior-data",
              data[0], "--prior-data", data[1], "--prior-components", "10", "--prior-guide",
              "GUIDE", "--guidance", "3.5", "--best-of", "8", "&&", "bird-gen", "-m",
              f"{run}-model"]  # fmt: skip
    last = next_steps("decoder", run, rater_term=True, data=data)
    assert len(last) == 3 and shlex.split(last[2].split(": ", 1)[1]) == recipe
    assert "by GUIDE, the best.pt of the guide run named after the VAE stage" in last[2]
    known = next_steps("decoder", run, "/g's/best.pt", 2.5, rater_term=True, data=data)[2]
    assert shlex.split(known.split(": ", 1)[1])[11:15] == [
        "--prior-guide", "/g's/best.pt", "--guidance", "2.5"
    ]  # fmt: skip


def test_baseline_eval_reports_fitted_gaussian_bits(image_folder, tmp_path):
    run = tmp_path / "base"
    result = CliRunner().invoke(train_command, [
        "--data", str(image_folder), "-o", str(run), "--preset", "baseline", "--epochs", "1",
        "--batch-size", "8", "--image-size", "32",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "train BCE " in result.output  # its loss is not the bits/dim validation reports
    scored = CliRunner().invoke(eval_command, [str(run / "best.pt")])
    assert scored.exit_code == 0, scored.output
    assert "discretized Gaussian" in scored.output and "bits/dim" in scored.output


@pytest.mark.parametrize("content", [b"garbage bytes", None], ids=["corrupt", "foreign"])
def test_bad_checkpoints_are_clear_errors(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(path)
    result = CliRunner().invoke(eval_command, [str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_eval_mistakes_and_overflowing_scores_are_one_line(image_folder, tmp_path):
    """vae-eval scored a checkpoint whose weights overflow as NaN and printed it as JSON no
    strict parser reads, with exit 0; an empty --data scored the current folder; a pipe was
    "does not exist"; --iw-samples took any K."""
    VAETrainer(tiny_config(image_folder, epochs=1), tmp_path / "run", log=quiet).fit()
    best = tmp_path / "run" / "best.pt"
    state = torch.load(best, weights_only=True)
    for weights in (state["model"], state["ema"]):
        for tensor in weights.values():
            if tensor.is_floating_point():
                tensor.mul_(1e30).clamp_(-3e38, 3e38)
    torch.save(state, tmp_path / "huge.pt")
    for args, words in [
        ([str(tmp_path / "huge.pt"), "--json"], "NaN or infinite"),
        ([str(best), "--data", ""], "an empty name"),
        ([str(best), "--iw-samples", "5001"], "--iw-samples"),
    ]:
        result = CliRunner().invoke(eval_command, args)
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output
        assert not result.output.lstrip().startswith("{")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.pt")
        result = CliRunner().invoke(eval_command, [str(tmp_path / "pipe.pt")])
        assert result.exit_code == 2 and "is not a file" in result.output


def test_user_mistakes_exit_2_with_one_line(tmp_path):
    missing = CliRunner().invoke(train_command, ["--data", str(tmp_path / "nope"), "-o",
                                                 str(tmp_path / "run")])  # fmt: skip
    assert missing.exit_code == 2 and "does not exist" in missing.output
    empty = CliRunner().invoke(train_command, ["--data", "", "-o", str(tmp_path / "run")])
    assert empty.exit_code == 2 and "an empty name" in empty.output
    assert not (tmp_path / "run" / LAST).exists()
    fixed = CliRunner().invoke(train_command, ["--data", str(tmp_path), "-o",
                                               str(tmp_path / "run"), "--preset", "baseline",
                                               "--decoder-width", "64"])  # fmt: skip
    assert fixed.exit_code == 2 and "--decoder-width: the baseline's architecture" in fixed.output
    capped = CliRunner().invoke(train_command, ["--data", str(tmp_path), "-o",
                                                str(tmp_path / "run"), "--preset", "baseline",
                                                "--decoder-max-width", "64"])  # fmt: skip
    assert capped.exit_code == 2 and "--decoder-max-width: the baseline's" in capped.output
    assert not (tmp_path / "run" / LAST).exists()
    base = ["--data", str(tmp_path), "-o", str(tmp_path / "run")]
    code = CliRunner().invoke(train_command, [*base, "--preset", "baseline", "--global-latent"])
    assert code.exit_code == 2 and "--spatial-latent/--global-latent: the baseline's" in code.output
    grid = CliRunner().invoke(train_command, [*base, "--spatial-latent", "--latent-dim", "100"])
    assert grid.exit_code == 2 and "divisible by 16, got 100" in grid.output
    assert "Traceback" not in grid.output and not (tmp_path / "run" / LAST).exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--latent-dim", "1000000000"], "latent_dim must be a whole number from 1 to 65536"),
    (["--blocks-per-level", "65536"], "blocks_per_level must be at most 64"),
    (["--latent-dim", "65536", "--image-size", "64"], "parameters, more than the"),
])  # fmt: skip
def test_an_architecture_too_large_is_refused_before_it_is_built(tmp_path, flags, message):
    """Checked on torch's meta device, which allocates nothing: built for real, the first
    asked torch for 16 TB (a traceback) and the second filled memory for minutes."""
    args = ["--data", str(tmp_path), "-o", str(tmp_path / "run"), *flags]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("good_steps", "max_bad", "message", "steps_taken"), [
    (0, 20, "every step of epoch 1 was non-finite", 5),
    (3, 3, "3 non-finite steps in a row", 6),  # 2 at the end of epoch 1, the 3rd opens epoch 2
])  # fmt: skip
def test_a_diverged_run_on_few_photos_stops_with_one_line(
    image_folder, tmp_path, monkeypatch, good_steps, max_bad, message, steps_taken
):
    """An epoch of 5 steps cannot hold max_bad_steps in a row, so the count runs across
    epochs, and an epoch whose every step was skipped (nothing to log) ends the run."""
    real, calls = VAETrainer.train_step, []

    def diverging(self, batch):
        calls.append(1)
        return real(self, batch) if len(calls) <= good_steps else None

    monkeypatch.setattr(VAETrainer, "train_step", diverging)
    config = tiny_config(image_folder, epochs=4, max_bad_steps=max_bad)
    trainer = VAETrainer(config, tmp_path / "run", log=quiet)
    assert trainer.steps_per_epoch == 5
    with pytest.raises(loop.TrainingError, match=message):
        trainer.fit()
    assert len(calls) == steps_taken


def test_a_bug_in_training_keeps_its_traceback(image_folder, tmp_path, monkeypatch):
    """A ValueError from inside training is a bug: it keeps its traceback."""

    def broken(self, *_args: object) -> None:
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(Trainer, "fit", broken)
    args = ["--data", str(image_folder), "-o", str(tmp_path / "run"), "--batch-size", "8"]
    result = CliRunner().invoke(train_command, args)
    assert isinstance(result.exception, ValueError), result.output


def test_vae_train_without_torch_prints_the_install_hint(monkeypatch):
    import importlib.util

    from birdvae.training import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))  # fmt: skip
    result = CliRunner().invoke(cli.train_command, [])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "pip install '.[train]'" in result.output


@pytest.mark.slow
def test_two_process_gloo_ddp_run(image_folder, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-port", "29533", "-m", "birdvae.training",
        "--data", str(image_folder), "-o", str(run), "--epochs", "1", "--batch-size", "4",
        "--latent-dim", "16", "--device", "cpu",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    # A failing worker's own words come first in stderr, before torchrun's long report.
    assert done.returncode == 0, done.stderr[:1500] + "\n...\n" + done.stderr[-800:]
    assert "x 2 processes" in done.stdout
    state = checkpoint.load(run / LAST)
    # 44 training images, batch 4 per process, 2 processes: 5 steps of 8 images.
    assert state["step"] == 44 // (4 * 2)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_the_weight_average_follows_its_ramped_rule_for_weights_and_integer_buffers():
    """average += (current - average) * (1 - rate), rate = min(decay, (1 + n) / (10 + n)), over
    float weights and integer buffers (a BatchNorm's count) alike, bit for bit what the rule gives
    applied tensor by tensor; the first update copies."""

    def rule(average, current, n):  # the rule as AveragedModel(avg_fn=...) applies it
        rate = min(0.5, (1.0 + float(n)) / (10.0 + float(n)))
        return average + (current - average) * (1.0 - rate)

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ours = exponential_average(model, decay=0.5)
    reference = AveragedModel(model, avg_fn=rule, use_buffers=True)
    weight = model[0].weight
    expected = weight.detach().clone()
    with torch.no_grad():
        ours.update_parameters(model)
        reference.update_parameters(model)
        for n in (1, 2, 3, 4):
            weight.mul_(1.1).add_(0.3)
            model[1].num_batches_tracked += 10
            ours.update_parameters(model)
            reference.update_parameters(model)
            expected += (weight - expected) * (1 - min(0.5, (1 + n) / (10 + n)))
    for name, tensor in ours.module.state_dict().items():
        assert torch.equal(tensor, reference.module.state_dict()[name]), name
    assert torch.allclose(ours.module[0].weight, expected, rtol=0, atol=1e-6)
    assert not torch.equal(ours.module[0].weight, weight)
    counts = ours.module[1].num_batches_tracked
    assert counts.dtype == torch.int64 and 0 < int(counts) < 40


def _train_process(start: list[str], data: Path, run: Path, epochs: int) -> subprocess.Popen:
    """``vae-train`` of a tiny model in a process of its own (``start``: how Python runs it),
    its output piped."""
    command = [sys.executable, *start, "--data", str(data), "-o", str(run),
               "--epochs", str(epochs), "--batch-size", "8", "--latent-dim", "16",
               "--decoder-width", "8", "--decoder-max-width", "16", "--threads", "1"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_run_whose_log_reader_has_gone_trains_to_the_end(image_folder, tmp_path):
    """``vae-train ... | head -1``: the reader goes, and the run must not go with it (it ended
    with status 1 and no word at its first log line)."""
    run = tmp_path / "run"
    worker = _train_process(["-m", "birdvae.training"], image_folder, run, epochs=2)
    worker.stdout.close()  # gone before the first line
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    # A run this short never finishes its learning-rate warm-up, and is told so; nothing else.
    said = [line for line in err.splitlines() if "warms up over" not in line]
    assert not any("warning" in line or "error" in line for line in said), err
    assert (run / "best.pt").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((run / "config.json").read_text())["threads"] == 1  # for its resume


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_run_whose_log_cannot_be_written_trains_to_the_end_then_says_so(image_folder, tmp_path):
    """A log redirected to a full disk costs the log, never the run: it trains to its end, then
    names standard output as what failed (it ended at the first line, blaming no stream)."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "birdvae.training", "--data", str(image_folder), "-o",
               str(run), "--epochs", "2", *TINY_RUN, "--threads", "1"]  # fmt: skip
    with open("/dev/full", "w") as full:
        done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "warning: standard output: No space left on device" in done.stderr
    assert done.stderr.splitlines()[-1] == "error: standard output: No space left on device"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_stopped_run_exits_128_plus_the_signal_with_last_pt_saved(image_folder, tmp_path):
    """SIGTERM mid-run: the step finishes, last.pt is saved, and the exit status says the run
    did not finish, so ``vae-train ... && vae-export ...`` never exports half a run."""
    run = tmp_path / "run"
    worker = _train_process(["-m", "birdvae.training"], image_folder, run, epochs=1000)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists():  # an epoch has ended: the loop is running
            assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "stopped: saved" in out
    state = checkpoint.load(run / LAST)
    assert 1 <= state["epoch"] < 1000
    place = (
        f"after epoch {state['epoch']}/1000"
        if state["batch_in_epoch"] == 0
        else f"in epoch {state['epoch'] + 1}/1000, after batch {state['batch_in_epoch']} of "
    )
    assert f"stopped: saved {run / LAST} {place}" in out, out  # counted as the progress lines


def test_where_a_run_stands_is_counted_as_the_progress_lines_count():
    from types import SimpleNamespace

    run = SimpleNamespace(config=SimpleNamespace(epochs=2), epoch=0, batch_in_epoch=3,
                          steps_per_epoch=4)  # fmt: skip
    assert Trainer._place(run) == "in epoch 1/2, after batch 3 of 4"
    run.epoch, run.batch_in_epoch = 1, 0
    assert Trainer._place(run) == "after epoch 1/2"


def test_a_stop_after_the_last_epoch_is_a_finished_run(image_folder, tmp_path):
    """SIGTERM once every epoch is on disk, while torch tears the process down (a second or
    more): it exited 143, so ``vae-train ... && vae-export ...`` stopped on a finished run whose
    --resume was then refused."""
    run = tmp_path / "run"
    worker = _train_process(["-m", "birdvae.training"], image_folder, run, epochs=1)
    try:
        lines = []
        for line in worker.stdout:  # the last line a finished stage prints, before teardown
            lines.append(line)
            if line.startswith("  or export it as it is:"):
                break
        time.sleep(0.2)  # into the teardown: the block that makes a stop mean done has ended
        running = worker.poll() is None  # torch's teardown takes a second or more
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert running, "the process ended before the stop: the test did not exercise it"
    assert worker.returncode == 0, (lines, out, err)
    assert "error" not in err and (run / "best.pt").is_file()


HUNG_CLOSE = """
import sys, threading
from birdvae.training import cli, loop
def hung_close(self):
    print("closing", flush=True)
    threading.Event().wait()  # a process group waiting for ever on a torchrun peer that died
loop.Trainer.close = hung_close
sys.argv = ["vae-train", *sys.argv[1:]]
cli.train_main()
"""


def test_a_stop_while_a_finished_run_closes_ends_it_at_once_with_status_0(image_folder, tmp_path):
    """Closing the process group can hang on a dead peer: a stop then must still end the
    process, and as the finished run it is."""
    worker = _train_process(["-c", HUNG_CLOSE], image_folder, tmp_path / "run", epochs=1)
    try:
        for line in worker.stdout:
            if line.startswith("closing"):
                break
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=120)  # only the stop can end a close that never does
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert (tmp_path / "run" / "best.pt").is_file()


def test_grids_are_drawn_without_autograd(image_folder, tmp_path):
    """Drawing the epoch's grids builds no autograd graph (memory and time a step never uses)."""
    trainer = VAETrainer(tiny_config(image_folder, epochs=1), tmp_path / "run", log=quiet)
    drawn = trainer._grid_images
    seen = []

    def recording() -> dict[str, torch.Tensor]:
        images = drawn()
        seen.append(torch.is_grad_enabled() or any(t.requires_grad for t in images.values()))
        return images

    trainer._grid_images = recording
    trainer._write_grids()
    assert seen == [False]
    assert sorted(p.name for p in (tmp_path / "run" / "grids").iterdir()) == [
        "recon_0000.png", "samples_0000.png"
    ]  # fmt: skip


# No --threads: in this process it would change torch's thread count for the tests after it,
# whose bit-identical resumes compare runs made at the default count.
TINY_RUN = ["--batch-size", "8", "--latent-dim", "16", "--decoder-width", "8",
            "--decoder-max-width", "16"]  # fmt: skip


def test_a_stop_as_the_last_epoch_ends_is_a_finished_run(image_folder, tmp_path, monkeypatch):
    """Ctrl-C during the last epoch's validation and writes: every epoch done, best.pt written,
    yet it said "stopped ... continue with --resume" and exited 130, and --resume refused."""
    end_epoch = Trainer._end_epoch

    def stopped_meanwhile(self):
        self.request_stop(signal.SIGINT)
        return end_epoch(self)

    monkeypatch.setattr(Trainer, "_end_epoch", stopped_meanwhile)
    run = tmp_path / "run"
    args = ["--data", str(image_folder), "-o", str(run), "--epochs", "1", *TINY_RUN]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    assert "stopped" not in result.output and (run / "best.pt").is_file()


def test_a_resume_that_completes_the_last_epochs_records_is_a_finished_run(image_folder, tmp_path):
    """A kill while the last epoch's best.pt and metrics were written: --resume writes them and
    exits 0, and so does every later --resume of the finished run (it exited 2, so a script
    that retries until the run is done never stopped); fewer epochs than trained are refused."""
    run = tmp_path / "run"
    args = ["--data", str(image_folder), "-o", str(run), "--epochs", "1", *TINY_RUN]
    assert CliRunner().invoke(train_command, args).exit_code == 0
    (run / "best.pt").unlink()
    (run / "metrics.jsonl").unlink()
    result = CliRunner().invoke(train_command, ["--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "recovered" in result.output and (run / "best.pt").is_file()
    again = CliRunner().invoke(train_command, ["--resume", str(run)])
    assert again.exit_code == 0 and "is finished: it has trained its 1 epochs" in again.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_run_refused_after_its_photos_were_decoded_leaves_nothing(image_folder, tmp_path):
    """A batch larger than the data is known only once the photos are read: the refusal left
    nest/deep/run/cache/ with the decoded images, and the folders above it."""
    run = tmp_path / "nest" / "deep" / "run"
    args = ["--data", str(image_folder), "-o", str(run), "--epochs", "1", *TINY_RUN,
            "--batch-size", "1000"]  # fmt: skip
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 2, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds"]


def test_a_cache_that_cannot_be_written_leaves_nothing(image_folder, tmp_path, monkeypatch):
    """A full disk at the run's first write (the decoded photos' cache) left nest/deep/run/cache/
    empty, and the folders above it."""
    from birdvae.training import data

    def full(handle: object, **_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.np, "savez", full)  # the cache's writer, inside its folder
    run = tmp_path / "nest" / "deep" / "run"
    args = ["--data", str(image_folder), "-o", str(run), "--epochs", "1", *TINY_RUN]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 2 and "No space left on device" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds"]


def test_a_validation_score_that_is_not_finite_ends_the_run_and_saves_nothing_of_it(
    image_folder, tmp_path, monkeypatch
):
    """The last epoch diverged: 'val nan bits/dim', exit 0, no best.pt, metrics.jsonl holding
    bare NaN (no JSON), and the hint named a best.pt that did not exist."""
    validate = VAETrainer._validate
    monkeypatch.setattr(
        VAETrainer, "_validate",
        lambda self: {**validate(self), "val_bpd": math.nan} if self.epoch == 2 else validate(self),
    )  # fmt: skip
    trainer = VAETrainer(tiny_config(image_folder, epochs=2), tmp_path / "run", log=quiet)
    with pytest.raises(loop.TrainingError, match=r"epoch 2's validation val_bpd is nan.*best\.pt "
                                                 r"holds epoch 1"):  # fmt: skip
        trainer.fit()
    assert checkpoint.load(tmp_path / "run" / LAST)["epoch"] == 1
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]


def test_run_folders_that_cannot_serve_are_refused_before_any_photo_is_read(
    image_folder, tmp_path, monkeypatch
):
    """A link to a run folder failed after all the photos were decoded ("Too many levels of
    symbolic links", from the lock); -o under a file failed when the cache was written; a run
    with best.pt but no last.pt was told to start again into the folder it then refused."""
    monkeypatch.setattr(loop, "load_splits", None)  # a photo read is a TypeError, not a line
    real = tmp_path / "run"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "file").write_text("")
    (real / "best.pt").write_bytes(b"")
    (real / "config.json").write_text("{}")
    piped = tmp_path / "piped"
    piped.mkdir()
    os.mkfifo(piped / "last.pt")  # was "it has no last.pt", which it has
    cases = {
        ("--resume", str(piped)): "last.pt is not a file (a folder, a pipe or a device)",
        ("--resume", str(tmp_path / "link")): "is a symbolic link; give the run folder itself",
        ("--data", str(image_folder), "-o", str(tmp_path / "link")): "is a symbolic link",
        ("--data", str(image_folder), "-o", str(tmp_path / "file" / "run")): "file is not a folder",
        ("--resume", str(real)): "has best.pt but no last.pt",
        ("--resume", str(tmp_path)): "is not a vae-train run folder (it has no last.pt)",
        ("--resume", str(tmp_path / "typo")): "typo is not a vae-train run folder",
    }
    for args, message in cases.items():
        result = CliRunner().invoke(train_command, list(args))
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_a_run_made_in_python_is_checked_as_a_config_file_is(image_folder, tmp_path):
    """A setting config_of would refuse is refused before the run starts: otherwise the run
    trains and writes checkpoints that cannot be resumed or exported."""
    from birdvae.training.config import ConfigError

    with pytest.raises(ConfigError, match="schedule must be one of cosine, constant"):
        VAETrainer(tiny_config(image_folder, schedule="linear"), tmp_path / "run", log=quiet)
    assert not (tmp_path / "run").exists()


def test_a_world_size_left_in_the_shell_is_one_line(image_folder, tmp_path, monkeypatch):
    """WORLD_SIZE=2 without torchrun's other variables was torch.distributed's ValueError."""
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(loop.TrainingError, match="WORLD_SIZE is 2 but RANK, LOCAL_RANK"):
        VAETrainer(tiny_config(image_folder), tmp_path / "run", log=quiet)
    assert not (tmp_path / "run").exists()


def test_a_run_keeps_one_image_cache_and_a_refused_resume_the_one_it_had(image_folder, tmp_path):
    """Each resume after the photos were touched added a full copy of them; the refused resume
    of photos since changed removed the cache it had (and kept the one it wrote)."""
    run = tmp_path / "run"
    args = ["--data", str(image_folder), "-o", str(run), "--epochs", "1", *TINY_RUN]
    assert CliRunner().invoke(train_command, args).exit_code == 0
    photos = sorted(p for p in image_folder.rglob("*") if p.is_file())
    for photo in photos:
        os.utime(photo, (1e9, 1e9))
    again = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "2"])
    assert again.exit_code == 0, again.output
    kept = sorted((run / "cache").iterdir())
    assert len(kept) == 1
    photos[0].write_bytes(photos[1].read_bytes())  # another picture: the resume is refused
    refused = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert refused.exit_code == 2, refused.output
    assert sorted((run / "cache").iterdir()) == kept


@pytest.mark.parametrize(
    ("command", "signame"),
    [("vae-train", "SIGTERM"), ("vae-train", "SIGINT"), ("vae-eval", "SIGTERM"),
     ("vae-export", "SIGINT")],
)  # fmt: skip
def test_a_stop_inside_torchs_import_still_stops_the_command(image_folder, tmp_path, command,
                                                             signame):  # fmt: skip
    """torch's C start-up swallows an exception raised inside it: a stop that landed there was
    lost, and the command went on to train, score or export as if never stopped."""
    script = Path(__file__).parent.parent / "fixtures" / "swallowing_import.py"
    checkpoint = tmp_path / "empty.pt"  # a file, so the stop, not the path, ends the command
    checkpoint.touch()
    args = {
        "vae-train": ["birdvae.training.cli:train_main", "--data", str(image_folder),
                      "-o", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "8"],
        "vae-eval": ["birdvae.training.cli:eval_main", str(checkpoint)],
        "vae-export": ["birdvae.export.cli:export_main", str(checkpoint),
                       "-o", str(tmp_path / "m")],
    }[command]  # fmt: skip
    done = subprocess.run([sys.executable, script, "torch", signame, *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == (143 if signame == "SIGTERM" else 130), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_a_run_with_no_photos_held_out_says_what_validation_scores(image_folder, tmp_path):
    lines: list[str] = []
    VAETrainer(tiny_config(image_folder, epochs=1, val_fraction=0.0), tmp_path / "run",
            log=lines.append).fit()  # fmt: skip
    assert "0 val images (none held out: validation scores training images)" in lines[0]
    held: list[str] = []
    VAETrainer(tiny_config(image_folder, epochs=1), tmp_path / "held", log=held.append).fit()
    assert "none held out" not in held[0]


def test_every_stage_defines_what_the_loop_leaves_to_it():
    """Every ``--stage`` maps to a subclass of the loop that writes its own networks, step and
    grids (abc would refuse one without them only once it is built) and states how its epochs
    are scored (the base's None would make every epoch the best, silently)."""
    from birdvae.training.config import STAGES
    from birdvae.training.stages import trainer_class

    left_to_stages = ("_build", "train_step", "_grid_kinds", "_grid_images", "_postfix",
                      "_log_line")  # fmt: skip
    classes = {stage: trainer_class(stage) for stage in STAGES}
    assert classes["vae"] is VAETrainer
    for stage, cls in classes.items():
        assert issubclass(cls, Trainer) and cls is not Trainer
        missing = [hook for hook in left_to_stages if getattr(cls, hook) is getattr(Trainer, hook)]
        assert not missing, f"the {stage} stage does not define {missing}"
        # None keeps every epoch as the best: a stage says so, never inherits it by omission.
        assert "score_key" in vars(cls), f"the {stage} stage does not say how epochs are scored"


def test_the_loop_alone_is_refused_before_it_reads_or_writes(image_folder, tmp_path):
    with pytest.raises(TypeError, match="abstract"):
        Trainer(tiny_config(image_folder), tmp_path / "run", log=quiet)  # type: ignore[abstract]
    assert not (tmp_path / "run").exists()


def test_a_folder_smaller_than_one_batch_says_which_batch_size_would_fit(image_folder, tmp_path):
    run = tmp_path / "run"
    args = ["--data", str(image_folder), "-o", str(run), "--epochs", "1", "--latent-dim", "16",
            "--decoder-width", "8", "--decoder-max-width", "16", "--batch-size", "64"]  # fmt: skip
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    count = int(line.split()[1])
    assert 0 < count < 48
    assert line == (
        f"error: {count} training photos are fewer than one batch of 64 per process; "
        f"give more photos or --batch-size {count} or less"
    )
    # The suggestion works as given, and the refused run left nothing in its way.
    fits = CliRunner().invoke(train_command, [*args[:-1], str(count)])
    assert fits.exit_code == 0, fits.output


@pytest.mark.parametrize(("warmup", "warned"), [(40, "never reaches"), (11, "never reaches"),
                                                (10, "barely reaches"), (8, "barely reaches"),
                                                (5, None)])  # fmt: skip
def test_a_run_shorter_than_its_warm_up_is_told(image_folder, tmp_path, warmup, warned):
    """A tiny run (40 photos, batch 8: 5 steps an epoch, 10 in all) at the recipe's 200-step
    warm-up trained at a fraction of its rate throughout and said nothing."""
    config = tiny_config(image_folder, warmup_steps=warmup)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = VAETrainer(config, tmp_path / "run", log=quiet)
    said = [str(w.message) for w in caught if "warms up" in str(w.message)]
    assert trainer.total_steps == 10
    peak = max(loop.lr_factor(step, 10, warmup, "cosine", 0.0) for step in range(10))
    assert (peak < 1.0) == (warned == "never reaches")  # the words say what the schedule does
    if warned is None:
        assert said == []
    else:
        assert said == [
            f"the learning rate warms up over {warmup} steps and this run has 10, so "
            f"it {warned} its peak; give more --epochs or a smaller --batch-size"
        ]


def test_a_resumed_run_is_not_told_of_its_warm_up_again(image_folder, tmp_path):
    """The warning is for the run's start; its resumes would repeat it at every stop."""
    config = tiny_config(image_folder, warmup_steps=40, epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        VAETrainer(config, tmp_path / "run", log=quiet).fit()
        assert any("warms up" in str(w.message) for w in caught)
        caught.clear()
        state = checkpoint.load(tmp_path / "run" / LAST)
        VAETrainer(replace(config, epochs=2), tmp_path / "run", state, log=quiet)
    assert not [w for w in caught if "warms up" in str(w.message)]
