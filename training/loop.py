"""The training loop every stage shares: warm-up + cosine, clipping, weight averages,
skipped non-finite steps, validation, grids and checkpoints at each epoch's end.

A stage (vae_stage.py, prior_stage.py, decoder_stage.py) is a ``Trainer`` subclass that builds
its networks and defines its step, its validation and its grids. A run goes on a CPU, a GPU or
(under ``torchrun``) several GPUs with DistributedDataParallel; rank 0 alone logs, draws grids
and writes checkpoints. Stopping (Ctrl-C, SIGTERM) saves ``last.pt`` at the current step, and
``resume`` continues from it exactly: same data order, same random numbers, same weights as a
run that never stopped.
"""

from __future__ import annotations

import abc
import gc
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DistributedSampler
from torchvision.utils import save_image
from tqdm import tqdm

from birdvae.runtime import durable, signals
from birdvae.runtime.command import echo
from birdvae.runtime.errors import UserError, first_line

from . import checkpoint, runfolder
from .augment import flip_and_shift
from .config import RANK_STRIDE, TrainConfig
from .data import Splits, images_digest, load_splits
from .evaluate import GRID_COLUMNS, evaluate, fit_gaussian_sigma
from .model import VAE, count_parameters
from .precision import resolve_precision
from .runfolder import BEST, CONFIG, LAST


class TrainingError(UserError, RuntimeError):
    """The run cannot go on (for example, the loss stays non-finite); the message says why."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda was asked for, but no CUDA GPU is available")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise TrainingError(f"unknown device {name!r} (choose auto, cpu or cuda)")
    return torch.device("cpu")


def lr_factor(step: int, total: int, warmup: int, schedule: str, floor: float) -> float:
    """Linear warm-up, then cosine decay to ``floor`` times the peak (or constant)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Distributed:
    """Who we are under torchrun (or a plain single process)."""

    # What torchrun sets for each process; WORLD_SIZE alone (left in a shell) is no launch.
    LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

    def __init__(self) -> None:
        try:
            self.world = int(os.environ.get("WORLD_SIZE", "1"))
            self.rank = int(os.environ.get("RANK", "0"))
            self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError as exc:
            raise TrainingError(f"a torchrun variable is not a whole number: {exc}") from None
        missing = [name for name in self.LAUNCH_VARIABLES if name not in os.environ]
        if self.world > 1 and missing:
            raise TrainingError(
                f"WORLD_SIZE is {self.world} but {', '.join(missing)} not set: start vae-train "
                "under torchrun for several processes, or unset WORLD_SIZE for one"
            )

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any process (on every process alike); ``device`` is the
        process's own (NCCL reduces CUDA tensors only)."""
        if not self.enabled:
            return flag
        total = torch.tensor([float(flag)], device=device)
        dist.all_reduce(total, op=dist.ReduceOp.MAX)
        return bool(total.item())

    def stop(self) -> None:
        """Leave the process group together: every process finishes its last collective before
        any of them tears its connections down."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def is_main_process() -> bool:
    """Whether this process is rank 0 of the run (the one without torchrun is)."""
    return _Distributed().main


class Trainer(abc.ABC):
    """The loop every stage shares: build a stage's subclass (``vae_stage.VAETrainer``,
    ``prior_stage.PriorTrainer`` or ``decoder_stage.DecoderTrainer``, as
    ``stages.trainer_class(stage)`` picks) from a config and a run folder, then ``fit`` it."""

    # Why this stage's steps cannot be compiled; None: they can.
    not_compiled_because: str | None = None
    # Why this stage cannot run under torchrun; None: it can.
    one_process_because: str | None = None

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        resume_state: dict[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if config.compile and self.not_compiled_because:
            raise TrainingError(
                f"the {config.stage} stage is not compiled: {self.not_compiled_because}; "
                "drop --compile"
            )
        if self.one_process_because and _Distributed().enabled:  # before any process waits
            raise TrainingError(
                f"the {config.stage} stage runs in one process: {self.one_process_because}; "
                "run it without torchrun"
            )
        # Every setting checked as a file's are, so that a run made through the Python API
        # writes no checkpoint that config_of would then refuse to resume or export.
        self.config = TrainConfig.from_dict(config.to_dict())
        self.run_dir = Path(run_dir)
        self._start_process(resume_state, log)
        # The run folder is made only once the data has loaded: a data error leaves nothing.
        self._load_tensors(self._load_data())
        # Set before _build, which each stage overrides: a resumed stage builds its frozen
        # networks from the run's own last.pt (resume_state), never from --init again.
        self.resuming = resume_state is not None
        self.resume_state = resume_state
        self._build()
        self._batching()
        self.scheduler = self._schedule(self.optimizer)
        if self.ddp.main:
            (self.run_dir / runfolder.GRIDS).mkdir(parents=True, exist_ok=True)
        self.ddp.barrier()

        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # batches of the current epoch already taken
        self.step = 0
        self.best_score = math.inf  # the best validation score (score_key) so far; lower wins
        self.best_epoch: int | None = None
        self.partial: dict[str, float] = {}
        self.bad_in_a_row = 0  # non-finite steps in a row, whatever epochs they fall in
        self.recovered = False  # whether a resume wrote what a kill at an epoch's end cut off
        if resume_state is not None:
            self._restore(resume_state)
        self.trainable = self._wrap(self._trained_module())
        # Fixed latent codes, so sample grids of successive epochs are comparable.
        fixed = torch.Generator().manual_seed(config.seed)
        self.fixed_z = torch.randn(config.grid_size, config.model.latent_dim, generator=fixed)
        if resume_state is not None and self.ddp.main:
            with self._run_folder_held():
                self._replay(resume_state)
        if resume_state is not None:  # every process ends a recovered run as rank 0 does
            self.recovered = self.ddp.any(self.recovered, self.device)

    def _start_process(
        self, resume_state: dict[str, Any] | None, log: Callable[[str], None] | None
    ) -> None:
        """This process's place in the run: device, process group, log, seed, precision; and
        the run folder checked and swept of what a killed run left."""
        config = self.config
        self.ddp = _Distributed()
        self.device = resolve_device(config.device, self.ddp.local_rank)
        self.ddp.start(self.device)
        self.log = (log or echo) if self.ddp.main else _quiet
        self._stop_requested = False
        # The signal that stopped the run, if one did: the command exits 128 + it, so a script
        # that goes on to export never mistakes a stopped run for a finished one.
        self.stop_signal: int | None = None
        torch.manual_seed(config.seed + RANK_STRIDE * self.ddp.rank)
        if resume_state is not None:
            checkpoint.check_resumable(resume_state, self.run_dir / LAST)
        if self.ddp.main:
            removed = runfolder.sweep(self.run_dir)
            if removed:
                self.log(f"removed {len(removed)} temporary file(s) left by a killed run")
        self.dtype = resolve_precision(config.precision, self.device)
        self.autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else nullcontext()
        )

    def _load_tensors(self, splits: Splits) -> None:
        """The photos on the training device, once: they are small enough (uint8) to skip a
        data loader's workers altogether."""
        self.train_images = torch.from_numpy(splits.train).to(self.device)
        self.val_images = torch.from_numpy(splits.val).to(self.device)
        self.train_labels = torch.from_numpy(splits.train_labels).to(self.device)
        self.classes = list(splits.classes)
        self.data_sha256 = images_digest(splits)

    def _batching(self) -> None:
        """What an epoch walks over, split between processes the same way on every resume."""
        config = self.config
        self.train_set = self._train_set()
        self.steps_per_epoch = len(self.train_set) // (config.batch_size * self.ddp.world)
        if self.steps_per_epoch == 0:
            most = len(self.train_set) // self.ddp.world
            fits = f"--batch-size {most} or less" if most else "fewer processes"
            raise TrainingError(
                f"{len(self.train_set)} training {self.train_set_name} are fewer than one batch of "
                f"{config.batch_size} per process; give more photos or {fits}"
            )
        self.sampler = DistributedSampler(
            range(len(self.train_set)),
            num_replicas=self.ddp.world,
            rank=self.ddp.rank,
            shuffle=True,
            seed=config.seed,
            drop_last=True,
        )
        warmup, total = config.warmup_steps, self.total_steps
        if total < 2 * warmup and not self.resuming:  # most of the run at less than its peak
            warnings.warn(
                f"the learning rate warms up over {warmup} steps and this run has {total}, so "
                f"it {'never reaches' if total < warmup else 'barely reaches'} its peak; give "
                "more --epochs or a smaller --batch-size",
                stacklevel=2,
            )

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """The trained module as the steps call it: compiled if asked, in DDP across processes."""
        if self.config.compile:
            module = torch.compile(module)
        if self.ddp.enabled:
            module = DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        return module

    # --- what a stage defines ----------------------------------------------------------------
    # Each stage (vae_stage.py, prior_stage.py, decoder_stage.py) is a subclass that fills these in.

    score_key: str | None = None  # lower is better; None: every epoch is the best so far
    item_name = "img"  # what the train set holds, for the log line
    train_set_name = "photos"  # the same, for messages

    @abc.abstractmethod
    def _build(self) -> None:
        """The networks: ``model`` (the VAE the checkpoints hold), ``ema`` (its weight average,
        or None) and ``optimizer`` (scheduled by ``_schedule``), plus whatever else the stage
        trains."""
        raise NotImplementedError

    @abc.abstractmethod
    def train_step(self, batch: torch.Tensor) -> dict[str, float] | None:
        """One optimiser step on a batch of ``_train_set``; its figures, or None when it was
        skipped as non-finite (``optimizer_step`` says which)."""
        raise NotImplementedError

    def _validate(self) -> dict[str, float]:
        """The held-out figures of an epoch's end, keyed ``val_*``, ``score_key`` among them:
        here the VAE's bits/dim and PSNR, which every stage holds."""
        model = self.eval_model
        images = self.held_out
        sigma = None
        if not model.likelihood.is_discrete:
            # 128 photos (400k sub-pixels) pin one scale down; the final figures use 512.
            sigma = fit_gaussian_sigma(model, self.train_images, self.device, limit=128)
        scores = evaluate(model, images, self.device, sigma=sigma, seed=self.config.seed)
        self._trained_module().train()
        return scores.as_dict("val_")

    @abc.abstractmethod
    def _grid_kinds(self) -> tuple[str, ...]:
        """The grids each epoch writes (``grids/KIND_EPOCH.png``), as ``_grid_images`` names
        them: a resume after a kill checks for exactly these."""
        raise NotImplementedError

    @abc.abstractmethod
    def _grid_images(self) -> dict[str, torch.Tensor]:
        """The pictures of ``_grid_kinds``, each a batch in [0, 1]."""
        raise NotImplementedError

    @abc.abstractmethod
    def _postfix(self, stats: dict[str, float]) -> dict[str, str]:
        """What the progress bar shows of a step."""
        raise NotImplementedError

    @abc.abstractmethod
    def _log_line(self, metrics: dict[str, Any]) -> str:
        """An epoch's figures as its log line says them."""
        raise NotImplementedError

    def _schedule_figures(self) -> dict[str, float]:
        """Loss weights that change over the run, for the metrics line."""
        return {}

    def _schedule(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        config = self.config
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_factor(
                step, self.total_steps, config.warmup_steps, config.schedule, config.lr_floor
            ),
        )

    def _trained_module(self) -> torch.nn.Module:
        """The module whose forward the steps call (compiled and DDP-wrapped as asked)."""
        return self.model

    def _train_set(self) -> torch.Tensor:
        """What an epoch walks through in shuffled batches: by default the training photos."""
        return self.train_images

    def _extra_state(self) -> dict[str, Any]:
        """A stage's own checkpoint entries, beside the common ones."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 (none by default)
        """Restores what ``_extra_state`` saved."""

    @property
    def held_out(self) -> torch.Tensor:
        """What scores and grids are drawn from: the validation photos, or with
        ``--val-fraction 0`` the first 512 training photos."""
        return self.val_images if len(self.val_images) else self.train_images[:512]

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    @property
    def eval_model(self) -> VAE:
        return self.ema.module if self.ema is not None else self.model

    def _load_data(self) -> Splits:
        def load() -> Splits:
            return load_splits(
                self.config.data, self.config.model.image_size, self.config.crop,
                self.config.val_fraction, self.run_dir / runfolder.CACHE,
                box_margin=self.config.box_margin, avoid=[self.run_dir],
            )  # fmt: skip

        # Rank 0 decodes and caches; the others then read the cache.
        splits = load() if self.ddp.main else None
        self.ddp.barrier()
        return splits if splits is not None else load()

    # --- one step -----------------------------------------------------------------------

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random horizontal flips and shifts of each uint8 image in the batch.

        A few thousand photos are memorised after ~80 epochs; shifting each image by up to
        ``config.shift`` pixels (edges repeated) shows the model new ones every epoch.
        """
        return flip_and_shift(x, self.config.shift, flip=self.config.flip)

    def optimizer_step(
        self,
        loss: torch.Tensor,
        module: torch.nn.Module,
        average: AveragedModel | None,
        before_step: Callable[[], None] | None = None,
    ) -> float | None:
        """Backpropagate ``loss`` into ``module``, clip, step, and update its ``average``; the
        gradient norm, or None for a step skipped because the loss or a gradient is not finite
        (the run counts those, and too many in a row end it). ``before_step`` runs once the
        gradients are known to be finite, before the optimiser's step: another network's
        update that must be skipped with this one (the decoder stage's discriminator)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if before_step is not None:
            before_step()
        self.optimizer.step()
        self.scheduler.step()
        if average is not None:
            average.update_parameters(module)
        self.step += 1
        return float(grad_norm)

    # --- epochs -------------------------------------------------------------------------

    @contextmanager
    def _run_folder_held(self) -> Iterator[None]:
        """An flock on the run folder while this process writes its records: a second
        vae-train on the same folder (a ``--resume`` while the run still trains) is refused
        instead of both writing ``last.pt`` and ``best.pt`` in turn. The lock dies with the
        process, however it ends."""
        if not self.ddp.main or durable.fcntl is None:  # no flock (Windows): no lock to take
            yield
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = durable.hold(self.run_dir)
        if fd is None:
            raise TrainingError(
                f"another vae-train is running in {self.run_dir}; wait for it to finish, or stop "
                f"it (Ctrl-C) and then --resume {self.run_dir}"
            )
        try:
            yield
        finally:
            os.close(fd)

    def fit(self, on_step: Callable[[Trainer], None] | None = None) -> dict[str, Any]:
        """Train until ``config.epochs`` epochs are done or a stop is requested."""
        with self._run_folder_held():
            return self._fit(on_step)

    def _fit(self, on_step: Callable[[Trainer], None] | None) -> dict[str, Any]:
        config = self.config
        if self.ddp.main:
            durable.write_bytes_atomic(self.run_dir / CONFIG, config.to_json().encode())
            none = " (none held out: validation scores training images)"
            held_out = "" if len(self.val_images) else none
            self.log(
                f"{len(self.train_images)} train / {len(self.val_images)} val images{held_out}, "
                f"{count_parameters(self._trained_module()) / 1e6:.2f}M parameters trained, "
                f"device {self.device}"
                + (f" x {self.ddp.world} processes" if self.ddp.enabled else "")
                + (", bfloat16 autocast" if self.dtype == torch.bfloat16 else ", float32")
            )
        if self.resuming and self.ddp.main:
            self.log(f"resuming {self._place()}")
        last_metrics: dict[str, Any] = {}
        # Ctrl-C and SIGTERM finish the current step, save last.pt and return.
        with signals.signal_handlers(self.request_stop, *signals.STOP_SIGNALS):
            while self.epoch < config.epochs and not self._stop_requested:
                finished = self._run_epoch(on_step)
                if not finished:
                    break
                last_metrics = self._end_epoch()
            # A stop that came as the last epoch ended found nothing left to stop: the run is done.
            if self._stop_requested and self.epoch < config.epochs and self.ddp.main:
                self.save(LAST)
                self.log(
                    f"stopped: saved {self.run_dir / LAST} {self._place()}; continue with "
                    f"--resume {self.run_dir}"
                )
        return last_metrics

    def _place(self) -> str:
        """Where the run stands, counted as the progress lines count: from epoch 1."""
        epochs = self.config.epochs
        if self.batch_in_epoch == 0:
            return f"after epoch {self.epoch}/{epochs}"
        return (f"in epoch {self.epoch + 1}/{epochs}, after batch {self.batch_in_epoch} of "
                f"{self.steps_per_epoch}")  # fmt: skip

    def close(self) -> None:
        """After a run that ended well on every process: drop the DDP wrapper, which holds the
        process group, so the group is torn down now rather than during interpreter exit."""
        self.trainable = None
        gc.collect()
        self.ddp.stop()

    def request_stop(self, signum: int | None = None) -> None:
        """Finish the current step, save last.pt and return from ``fit``; ``signum`` is the
        signal that asked, if one did."""
        self._stop_requested = True
        if signum is not None:
            self.stop_signal = signum

    def _should_stop(self) -> bool:
        """Whether any process was asked to stop: all ranks leave at the same step, or one
        would wait forever in the next gradient all-reduce."""
        self._stop_requested = self.ddp.any(self._stop_requested, self.device)
        return self._stop_requested

    def _run_epoch(self, on_step: Callable[[Trainer], None] | None) -> bool:
        self.sampler.set_epoch(self.epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        batch = self.config.batch_size
        # "n", "seconds", "items" and "skipped", then the sum of each figure train_step returns
        sums = self.partial or {"n": 0.0, "seconds": 0.0, "items": 0.0, "skipped": 0.0}
        bar = tqdm(
            total=self.steps_per_epoch, initial=self.batch_in_epoch, leave=False, unit="batch",
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            disable=None if self.ddp.main else True,  # None: no bar when stderr is no TTY
            dynamic_ncols=True, file=sys.stderr,
        )  # fmt: skip
        self._trained_module().train()
        started = time.perf_counter()
        while self.batch_in_epoch < self.steps_per_epoch:
            index = order[self.batch_in_epoch * batch : (self.batch_in_epoch + 1) * batch]
            stats = self.train_step(self.train_set[index.to(self.train_set.device)])
            self.batch_in_epoch += 1
            bar.update(1)
            if stats is None:
                sums["skipped"] += 1
                self.bad_in_a_row += 1  # across epochs: a small set has few steps in each
                if self.bad_in_a_row >= self.config.max_bad_steps:
                    bar.close()
                    raise self._diverged(
                        f"{self.bad_in_a_row} non-finite steps in a row at step {self.step}"
                    )
                continue
            self.bad_in_a_row = 0
            for key, value in stats.items():
                sums[f"train_{key}"] = sums.get(f"train_{key}", 0.0) + value
            sums["n"] += 1
            sums["items"] += len(index) * self.ddp.world
            bar.set_postfix(self._postfix(stats))
            if on_step is not None:
                on_step(self)
            if self._should_stop():
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        sums["seconds"] += time.perf_counter() - started
        bar.close()
        self.partial = sums
        return self.batch_in_epoch >= self.steps_per_epoch

    def _end_epoch(self) -> dict[str, Any]:
        sums, self.partial = self.partial, {}
        if not sums["n"]:  # no figures to log or score: the run has nothing to go on from
            raise self._diverged(f"every step of epoch {self.epoch + 1} was non-finite")
        self.epoch += 1
        self.batch_in_epoch = 0
        n = sums["n"]
        metrics: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.scheduler.get_last_lr()[0],
            **self._schedule_figures(),
            **{key: value / n for key, value in sums.items() if key.startswith("train_")},
            "items_per_s": sums["items"] / max(sums["seconds"], 1e-9),
            "epoch_seconds": sums["seconds"],
            "skipped_steps": int(sums["skipped"]),
        }
        score = math.nan  # rank 0 validates; the others learn below whether it went wrong
        if self.ddp.main:
            metrics.update(self._validate())
            score = metrics[self.score_key] if self.score_key else -float(self.epoch)
        # Every process stops on a score that is not a number, or the others would wait at the
        # barrier below for a rank 0 that has left. Nothing of this epoch is saved: last.pt
        # stays before it.
        if self.ddp.any(self.ddp.main and not math.isfinite(score), self.device):
            shown = score if self.ddp.main else "not a number on rank 0"
            raise self._diverged(f"epoch {self.epoch}'s validation {self.score_key} is {shown}")
        if self.ddp.main:
            improved = score < self.best_score
            if improved:
                self.best_score = score
                self.best_epoch = self.epoch
            if self.score_key:
                metrics[f"best_{self.score_key}"] = self.best_score
            self.metrics = metrics
            runfolder.commit_epoch(self.run_dir, self.state())
            self._write_grids()
            self.log(
                f"epoch {self.epoch:>3}/{self.config.epochs}  {self._log_line(metrics)}"
                f"  {metrics['items_per_s']:.0f} {self.item_name}/s" + ("  *" if improved else "")
            )
        self.ddp.barrier()
        return metrics

    def _diverged(self, what: str) -> TrainingError:
        """The error that ends a diverged run, with what the run folder still holds."""
        kept = (  # rank 0's to say: it alone writes best.pt and knows what it holds
            f"; {self.run_dir / BEST} holds epoch {self.best_epoch}, the best before"
            if self.best_epoch is not None and self.ddp.main
            else ""
        )
        return TrainingError(
            f"{what}: the run diverged; start again with a lower --lr (or lower loss weights)"
            + kept
        )

    @torch.no_grad()
    def _write_grids(self) -> None:
        for name, images in self._grid_images().items():
            pixels = images.float().cpu()
            durable.write_atomic(
                runfolder.grid_file(self.run_dir, name, self.epoch),
                lambda handle, pixels=pixels: save_image(
                    pixels, handle, format="png", nrow=GRID_COLUMNS, padding=2
                ),
            )
        self._trained_module().train()

    def _replay(self, state: dict[str, Any]) -> None:
        """Redo what a kill after the last commit of ``last.pt`` cut off (runfolder.py)."""
        written = runfolder.bring_up_to_date(self.run_dir, state)
        grids = [runfolder.grid_file(self.run_dir, kind, self.epoch) for kind in self._grid_kinds()]
        if self.epoch > 0 and self.batch_in_epoch == 0 and not all(p.is_file() for p in grids):
            self._write_grids()
            written.append(f"grids of epoch {self.epoch}")
        if written:
            self.log(f"recovered from an interrupted epoch end: wrote {', '.join(written)}")
        self.recovered = bool(written)

    # --- checkpoints --------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": checkpoint.CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_n": int(self.ema.n_averaged) if self.ema is not None else 0,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "partial": dict(self.partial),
            "step": self.step,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "metrics": getattr(self, "metrics", {}),
            "rng": rng,
            "data_sha256": self.data_sha256,
            **self._extra_state(),
        }

    def save(self, name: str) -> Path:
        path = self.run_dir / name
        checkpoint.save_atomic(self.state(), path)
        return path

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            # A KeyError's own text is the bare key ('param_groups'): say what it means.
            missing = isinstance(exc, KeyError) and exc.args
            reason = f"it lacks {exc.args[0]!r}" if missing else first_line(exc)
            raise checkpoint.CheckpointError(
                f"{self.run_dir / LAST} cannot be resumed: {reason}"
            ) from exc

    def _load_state(self, state: dict[str, Any]) -> None:
        saved = state["data_sha256"]
        if saved is not None and saved != self.data_sha256:
            raise TrainingError(
                "the photos in its data folders have changed since it was saved (added, removed "
                "or edited), so its split and steps would not be the run's; start a new run"
            )
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.module.load_state_dict(state["ema"])
            self.ema.n_averaged.fill_(int(state["ema_n"]))
        checkpoint.load_optimizer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        if not 0 <= self.batch_in_epoch <= self.steps_per_epoch:
            raise ValueError(f"it stopped at batch {self.batch_in_epoch} of an epoch of "
                             f"{self.steps_per_epoch}")  # fmt: skip
        self.partial = dict(state["partial"])
        if self.partial and not {"n", "seconds", "items", "skipped"} <= set(self.partial):
            raise ValueError("its unfinished epoch's sums are incomplete")
        self.step = int(state["step"])
        self.best_score = float(state["best_score"])
        best_epoch = state["best_epoch"]
        self.best_epoch = None if best_epoch is None else int(best_epoch)
        self.metrics = dict(state["metrics"])
        self._load_extra_state(state)
        torch.set_rng_state(state["rng"]["cpu"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        if self.ddp.rank:
            # The checkpoint holds rank 0's streams alone (rank 0 writes it): the other ranks
            # start streams of their own, apart from one another and from every earlier one,
            # rather than all drawing rank 0's flips, shifts and noise from here on.
            torch.manual_seed(resumed_rank_seed(self.config.seed, self.ddp.rank, self.step))


def resumed_rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of rank ``rank``'s stream in a run resumed at ``step``: one number per
    (seed, rank, step), mixed by numpy's SeedSequence so that no two of them, and none of the
    run's other streams (seed + a small offset), come out alike."""
    return int(np.random.SeedSequence((seed, rank, step)).generate_state(1, np.uint64)[0])


def _quiet(_: str) -> None:
    pass
