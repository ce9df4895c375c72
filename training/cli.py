"""``vae-train`` and ``vae-eval``. Only click, the standard library and modules that import
nothing more (the runtime's errors and CPUs, the training config) load up front, so a
runtime-only install answers with an install hint instead of an ImportError."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from birdvae.runtime import signals
from birdvae.runtime.command import (
    Command,
    FiniteRange,
    NamedPath,
    echo,
    echo_lines,
    one_output,
    run_as_program,
    status_of_done_work,
    version_option,
)
from birdvae.runtime.cpus import check_threads
from birdvae.runtime.errors import UserError

from .config import (
    ANCHOR_SCALES,
    DEFAULT_GUIDANCE,
    DEVICES,
    LIKELIHOODS,
    MAX_BLOCKS,
    MAX_PRIOR_STEPS,
    PRECISIONS,
    PRESETS,
    RESUMABLE_FIELDS,
    STAGES,
    PriorConfig,
)
from .extra import require_train_extra

if TYPE_CHECKING:
    from .config import TrainConfig
    from .loop import Trainer

# The option (its click parameter name) that sets each config field --resume may change.
RESUMED_OPTIONS = {field: "compile_" if field == "compile" else field for field in RESUMABLE_FIELDS}
RESUMABLE_FLAGS = {"resume", *RESUMED_OPTIONS.values()}
SHOWN_FLAGS = {
    "spatial_latent": "--spatial-latent/--global-latent",
    "compile_": "--compile/--no-compile",
    "out": "-o/--output",
    "out_alias": "--out",
}
# The IW bound's K: 5,000 is the usual research figure (Burda et al.); each photo costs K passes.
MAX_IW_SAMPLES = 5000
# Each option that sets a config setting: its override() key, and whose setting it is. "model":
# fixed by a run's model and data, so a later stage keeps its --init's; "all": any stage's;
# "prior", "decoder": that stage's alone. A new training flag is one line here.
SETTINGS: dict[str, tuple[str, str]] = {
    "image_size": ("image_size", "model"), "latent_dim": ("latent_dim", "model"),
    "decoder_width": ("decoder_width", "model"),
    "decoder_max_width": ("decoder_max_width", "model"),
    "blocks_per_level": ("blocks_per_level", "model"),
    "spatial_latent": ("spatial_latent", "model"), "likelihood": ("likelihood", "model"),
    "kl_weight": ("kl_weight", "model"), "kl_warmup_epochs": ("kl_warmup_epochs", "model"),
    "free_bits": ("free_bits", "model"), "val_fraction": ("val_fraction", "model"),
    "box_margin": ("box_margin", "model"),
    "data": ("data", "all"), "epochs": ("epochs", "all"), "batch_size": ("batch_size", "all"),
    "lr": ("lr", "all"), "device": ("device", "all"), "seed": ("seed", "all"),
    "precision": ("precision", "all"), "compile_": ("compile", "all"),
    "prior_width": ("prior_width", "prior"), "prior_blocks": ("prior_blocks", "prior"),
    "prior_steps": ("prior_steps", "prior"), "prior_keep": ("prior_keep", "prior"),
    **{name: (f"sharpen_{name}", "decoder") for name in (
        "gan_weight", "disc_width", "prior_share", "anchor_weight", "anchor_scale",
        "perceptual_weight", "projected_weight", "rater_weight", "prior_guide", "guidance",
    )},
}  # fmt: skip


def _flags_of(owner: str) -> set[str]:
    return {option for option, (_, whose) in SETTINGS.items() if whose == owner}


ARCHITECTURE_FLAGS = {"preset"} | _flags_of("model")
PRIOR_FLAGS = _flags_of("prior")
DECODER_FLAGS = _flags_of("decoder")


def _flag_names(options: set[str]) -> str:
    """Option names as a user types them, for messages: decoder_width -> --decoder-width."""
    return ", ".join(sorted(SHOWN_FLAGS.get(n, "--" + n.replace("_", "-")) for n in options))


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data",
    type=NamedPath(),
    multiple=True,
    help="CUB_200_2011 folder (official layout) or any folder of images; give it again to "
    "train on several together.",
)
@click.option(
    "-o",
    "--output",
    "out",
    type=NamedPath(file_okay=False, path_type=Path),
    help="Run folder, made with any missing parent folders: checkpoints, metrics.jsonl, "
    "config.json, grids/.",
)
@click.option("--out", "out_alias", type=NamedPath(file_okay=False, path_type=Path), hidden=True)
@click.option(
    "--stage",
    type=click.Choice(STAGES),
    default="vae",
    show_default=True,
    help="vae: encoder and decoder; prior: the learned prior on the frozen encoder's codes; "
    "decoder: the decoder sharpened against a discriminator. Later stages need --init.",
)
@click.option(
    "--init",
    type=NamedPath(exists=True, dir_okay=False, path_type=Path),
    help="The checkpoint a prior or decoder stage starts from (an earlier stage's best.pt).",
)
@click.option(
    "--prior-width",
    type=click.IntRange(min=8),
    help="Learned prior: width of its MLP. [default: 512]",
)
@click.option(
    "--prior-blocks",
    type=click.IntRange(min=1, max=MAX_BLOCKS),
    help="Learned prior: residual blocks. [default: 4]",
)
@click.option(
    "--prior-keep",
    type=FiniteRange(0, 1, min_open=True),
    help="Learned prior: the share of photos whose codes it learns, those the shipped rater "
    "rates highest. [default: 1]",
)
@click.option(
    "--prior-steps",
    type=click.IntRange(min=2, max=MAX_PRIOR_STEPS),
    help="Learned prior: solver steps of the exported sampler. [default: 10]",
)
@click.option(
    "--gan-weight",
    type=FiniteRange(min=0),
    help="Decoder stage: the adversarial term's weight, times the adaptive balance. [default: 0.8]",
)
@click.option(
    "--disc-width",
    type=click.IntRange(min=8, max=256),
    help="Decoder stage: the patch discriminator's first layer's channels (each level down "
    "doubles them). [default: 24]",
)
@click.option(
    "--prior-share",
    type=FiniteRange(0, 4),
    help="Decoder stage: learned-prior codes decoded as fakes, per photo in a batch. "
    "[default: 0.5]",
)
@click.option(
    "--anchor-weight",
    type=FiniteRange(min=0),
    help="Decoder stage: holds learned-prior codes' pictures, at half resolution, to what the "
    "init decoder draws for them (0: off), against the discriminator's confetti. [default: 1]",
)
@click.option(
    "--anchor-scale",
    type=click.Choice([str(scale) for scale in ANCHOR_SCALES]),
    help="Decoder stage: the anchor compares pictures averaged over this many pixels a side "
    "(2: the outline too; 8: only layout and colours). [default: 2]",
)
@click.option(
    "--perceptual-weight",
    type=FiniteRange(min=0),
    help="Decoder stage: a perceptual distance between reconstructions and their photos, in "
    "the features of a species classifier the stage trains first (0: off; needs two or more "
    "species folders). [default: 0]",
)
@click.option(
    "--rater-weight",
    type=FiniteRange(min=0),
    help="Decoder stage: a term that raises the shipped rater's score of learned-prior draws "
    "(0: off; needs an --init with a learned prior). [default: 0]",
)
@click.option(
    "--prior-guide",
    type=NamedPath(exists=True, dir_okay=False, path_type=Path),
    help="Decoder stage: a --stage prior run's best.pt (over the same VAE) that autoguides the "
    "learned-prior draws, as vae-export --prior-guide guides bird-gen's; give the guide the "
    "export will be given.",
)
@click.option(
    "--guidance",
    type=FiniteRange(min=1),
    help="Decoder stage: the --prior-guide's weight (1: none); give the export's. "
    f"[default: {DEFAULT_GUIDANCE:g}]",
)
@click.option(
    "--projected-weight",
    type=FiniteRange(min=0),
    help="Decoder stage: a second discriminator over that species classifier's features (a "
    "projected GAN), its term this many times the pixel discriminator's (0: off). [default: 0]",
)
@click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="default",
    show_default=True,
    help="baseline = the blog post's VAE, the yardstick.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="Epochs for the whole run (with --resume: carry the run on to this epoch). "
    "[default: 100; --stage prior: 150; --stage decoder: 40]",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Images (codes, for --stage prior) per step per process. "
    "[default: 64; baseline: 32; --stage prior: 256; --stage decoder: 32]",
)
@click.option(
    "--lr",
    type=FiniteRange(min=0, min_open=True),
    help="Peak learning rate. "
    "[default: 2e-3; baseline: 1e-3; --stage prior: 1e-3; --stage decoder: 2e-4]",
)
@click.option(
    "--image-size", type=click.Choice(["32", "64"]), help="Square image size. [default: 32]"
)
@click.option(
    "--latent-dim", type=click.IntRange(min=1), help="Latent size D. [default: 128; baseline: 180]"
)
@click.option(
    "--decoder-width",
    type=click.IntRange(min=1),
    help="Decoder channels at half resolution, its costliest level. [default: 48]",
)
@click.option(
    "--decoder-max-width",
    type=click.IntRange(min=1),
    help="Decoder channels at its coarsest levels (widths double per level up to this). "
    "[default: 192]",
)
@click.option(
    "--blocks-per-level",
    type=click.IntRange(min=1),
    help="Residual blocks at each resolution, encoder and decoder. [default: 1]",
)
@click.option(
    "--spatial-latent/--global-latent",
    default=None,
    help="The code as a 4x4 grid of latent-dim/16 channels, or one vector. [default: global]",
)
@click.option(
    "--likelihood",
    type=click.Choice(LIKELIHOODS),
    help="Decoder likelihood over 8-bit pixels. [default: logistic; baseline: bernoulli]",
)
@click.option(
    "--box-margin",
    type=FiniteRange(0, 1),
    help="Context kept around a CUB photo's bounding box, a share of its longer side on each "
    "side (0: the box itself, which raters call a bird more often at 32x32). [default: 0.15]",
)
@click.option(
    "--val-fraction",
    type=FiniteRange(0, 1, max_open=True),
    help="Held-out share of a plain folder (CUB uses its own split). [default: 0.1]",
)
@click.option(
    "--kl-warmup-epochs",
    type=click.IntRange(min=0),
    help="Epochs to ramp the KL in. [default: 10; baseline: 0]",
)
@click.option(
    "--kl-weight",
    type=FiniteRange(min=0, min_open=True),
    help="Final weight of the KL term (beta); validation bits/dim always use 1. [default: 1]",
)
@click.option(
    "--free-bits", type=FiniteRange(min=0), help="Nats per latent dim kept free. [default: 0]"
)
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    help="Where to train; auto picks a CUDA GPU when there is one. [default: auto]",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    help="Forward pass in bfloat16 autocast or float32; auto picks bf16 where the GPU or CPU "
    "does it natively. [default: auto]",
)
@click.option(
    "--seed", type=click.IntRange(0, 2**31 - 1), help="Makes a CPU run reproducible. [default: 0]"
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads for torch; kept with the run, so --resume uses it again. [default: "
    "torch's, one per core]",
)
@click.option(
    "--compile/--no-compile",
    "compile_",
    default=None,
    help="torch.compile the model (a resumed run may turn it on or off). [default: off]",
)
@click.option(
    "--resume",
    type=NamedPath(file_okay=False, path_type=Path),
    help="Continue the run in this folder from its last.pt, with its own config.",
)
@version_option()
@click.pass_context
def train_command(ctx: click.Context, **options) -> None:
    """Train the bird VAE and write checkpoints (last.pt, best.pt) into the run folder.

    Under torchrun it trains on several GPUs:

    \b
    torchrun --nproc-per-node N --no-python vae-train --data ... -o ...
    """
    require_train_extra("vae-train")
    with signals.signals_deferred():  # a stop inside torch's C start-up would be swallowed
        import torch

        from . import runfolder
        from .stages import trainer_class

    if options["threads"]:
        _check_threads(options["threads"])
    given = {
        name for name in options
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    }  # fmt: skip
    if options["resume"] is not None:
        run_dir, resume_state, config = _resumed_run(options, given)
    else:
        run_dir, resume_state = _new_run(options), None
        config = _new_config(options, given)
        _check_outside_data(run_dir, config.data)
    if config.threads:
        if "threads" not in given:  # a resumed run's own, perhaps from a larger machine
            _check_threads(config.threads, run_dir)
        torch.set_num_threads(config.threads)
    writes_cache = os.environ.get("RANK", "0") == "0"  # rank 0 under torchrun
    with runfolder.one_cache_for_this_run(run_dir, writer=writes_cache):
        trainer = trainer_class(config.stage)(config, run_dir, resume_state)
    if resume_state is not None and trainer.epoch >= config.epochs:
        _answer_a_finished_run(trainer, run_dir, config.epochs)
        return
    trainer.fit()
    if trainer.epoch < config.epochs:
        trainer.close()
        if trainer.stop_signal is not None:
            sys.exit(128 + trainer.stop_signal)  # 130 for Ctrl-C, 143 for SIGTERM, as documented
        return
    with _stops_mean_done():
        trainer.close()
        if trainer.ddp.main:
            guide = config.sharpen.prior_guide if config.sharpen.guidance != 1 else ""
            prior, default = config.prior, PriorConfig()
            small = prior.width < default.width or prior.blocks < default.blocks
            echo_lines("\n".join(next_steps(
                config.stage, run_dir, guide, config.sharpen.guidance,
                guide_sized=small, rater_term=config.sharpen.rater_weight > 0, data=config.data,
            )))  # fmt: skip


def _answer_a_finished_run(trainer: Trainer, run_dir: Path, epochs: int) -> None:
    """A resumed run with nothing left to train (its records completed just now, if a kill cut
    them off): the same answer however often it is resumed, so a script that retries until
    done stops; asked for fewer epochs than it has, refused."""
    if trainer.epoch > epochs:
        raise UserError(
            f"{run_dir} has already trained {trainer.epoch} epochs, more than --epochs "
            f"{epochs}; pass --epochs N with N > {trainer.epoch} to carry it on"
        )
    if not trainer.recovered:
        echo(
            f"{run_dir} is finished: it has trained its {trainer.epoch} epochs; "
            f"pass --epochs N with N > {trainer.epoch} to carry it on"
        )
    with _stops_mean_done():
        trainer.close()


def next_steps(
    stage: str,
    run_dir: Path,
    guide: str = "",
    guidance: float = 1.0,
    *,
    guide_sized: bool = False,
    rater_term: bool = False,
    data: Sequence[str] = (),
) -> list[str]:
    """What to run after a finished stage, as commands to paste (CHECKPOINT where the user
    names one): the recipe's next stage (a later stage takes its --init run's data), the export
    that makes a model bird-gen runs (guided as the stage's draws were, with a ``guide``) and,
    after a prior stage, how a guide prior is used: first, for a prior smaller than the
    default (``guide_sized``, as the recipe's guide is). After a decoder stage the recipe's
    rater's term comes next, unless the stage had it (``rater_term``); after that, the end of
    the recipe, its whole export too, with the run's ``data`` for int8 calibration and the
    mixture, and GUIDE where no guide is known."""
    best = shlex.quote(str(run_dir / "best.pt"))
    model = shlex.quote(f"{run_dir}-model")
    guided = f" --prior-guide {shlex.quote(guide)} --guidance {guidance:g}" if guide else ""
    export = f"vae-export {best}{guided} -o {model} && bird-gen -m {model}"
    as_guide = f"vae-export CHECKPOINT --prior-guide {best}"
    following = {
        "vae": ("a learned prior, for birds that look like birds",
                f"vae-train --stage prior --init {best} -o {shlex.quote(f'{run_dir}-prior')}"),
        "prior": ("a sharper decoder for the prior's birds",
                  f"vae-train --stage decoder --init {best} -o "
                  f"{shlex.quote(f'{run_dir}-decoder')}"),
        "decoder": ("the rater's term, for birds people recognise more often",
                    f"vae-train --stage decoder --init {best} --epochs 6 --anchor-scale 4 "
                    f"--rater-weight 0.1 -o {shlex.quote(f'{run_dir}-rated')}"),
    }  # fmt: skip
    from .runfolder import GRIDS  # here: it loads torch, which the CLI's start-up does not

    lines = [
        f"done: {run_dir / 'best.pt'} holds the run's best weights, "
        f"{run_dir / GRIDS} its pictures of each epoch"
    ]
    if stage == "prior" and guide_sized:
        why, command = following[stage]
        lines += [f"next (a prior this small is likely a guide): give it to the export of the "
                  f"model it guides: {as_guide}",
                  f"  or, if it is the model's own prior ({why}): {command}"]  # fmt: skip
    elif stage in following and not (stage == "decoder" and rater_term):
        why, command = following[stage]
        lines += [f"next ({why}): {command}", f"  or export it as it is: {export}"]
        if stage == "prior":  # the recipe's small second prior is this stage too
            lines.append(f"  or, if it is a guide, give it to the export of the model it guides: "
                         f"{as_guide}")  # fmt: skip
        if stage == "vae":  # the recipe's guide is trained from the VAE too
            guide_run = shlex.quote(f"{run_dir}-guide")
            lines.insert(2, (
                "  and the prior's guide (a smaller, shorter prior; vae-export --prior-guide "
                f"firms up the prior's birds with it): vae-train --stage prior --init {best} "
                f"--prior-width 256 --prior-blocks 2 --epochs 15 -o {guide_run}"
            ))  # fmt: skip
    else:
        lines.append(f"next: {export}")
        if stage == "decoder" and data:
            given = "".join(f" --prior-data {shlex.quote(str(folder))}" for folder in data)
            by = (
                "as this stage's draws were"
                if guide
                else "by GUIDE, the best.pt of the guide run named after the VAE stage"
            )
            guide_flags = guided or f" --prior-guide GUIDE --guidance {DEFAULT_GUIDANCE:g}"
            lines.append(
                f"  or the recipe's (int8, autoguided {by}, choosing among 8 draws; minutes): "
                f"vae-export {best} -o {model} --int8{given} --prior-components 10{guide_flags} "
                f"--best-of 8 && bird-gen -m {model}"
            )
    return lines


@contextlib.contextmanager
def _stops_mean_done() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM end the process at once with status 0 (2 when its
    log could not be written: ``status_of_done_work``). A finished run is on disk whole, so a
    stop in what is left (closing the process group) must not turn its 0 into 130 or 143, which
    would stop ``vae-train ... && vae-export``; nor may that close, hung on a dead torchrun
    peer, become impossible to stop.

    When the block ends, vae-train's own process (``train_main``) ignores stops from then on,
    swapped in for ``done`` in one step: what is left is the interpreter's teardown (a second or
    more with torch), in which Python's handlers no longer run, and the handlers around this
    block leave an ignored signal ignored (``signals.signal_handlers``). In another program's
    process (a test calling the command) the handlers before are put back."""

    def done(_: int) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status_of_done_work())

    with signals.signal_handlers(done, *signals.STOP_SIGNALS):
        yield
        if _COMMAND_PROCESS and threading.current_thread() is threading.main_thread():
            for signum in signals.STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)


_COMMAND_PROCESS = False  # set by train_main: this process is vae-train itself


def _check_threads(threads: int, resumed: Path | None = None) -> None:
    """Refuse more threads than this process's CPUs, as bird-gen does: torch starts them all
    at once, and a million ran the system out of threads (or out of Python's int64). A resumed
    run's own setting (``resumed``, its folder) is named as such."""
    if resumed is None:
        check_threads(threads, "--threads")
    else:
        hint = f"; pass --threads N to resume {resumed} with fewer"
        check_threads(threads, "the run's own --threads", hint)


def _resumed_run(options: dict, given: set[str]) -> tuple[Path, dict[str, Any], TrainConfig]:
    """The run folder, its last checkpoint and its config with what --resume may change."""
    from . import checkpoint
    from .config import override
    from .loop import is_main_process
    from .runfolder import BEST, CONFIG, LAST, check_not_a_link, check_resume_folder

    extra = given - RESUMABLE_FLAGS
    if extra:
        raise UserError(
            f"--resume continues a run with the config it was started with; "
            f"drop {_flag_names(extra)} (only {_flag_names(RESUMABLE_FLAGS - {'resume'})} "
            "may change)"
        )
    run_dir = options["resume"]
    check_not_a_link(run_dir)
    if (run_dir / BEST).is_file() and not (run_dir / LAST).exists():
        raise UserError(
            f"{run_dir} has {BEST} but no {LAST}, which a resume starts from (it carries the "
            f"optimiser's state and the place in the epoch); start a later stage from {BEST}, or "
            "a new run with another -o"
        )
    if (run_dir / CONFIG).is_file() and not (run_dir / LAST).exists():
        raise UserError(
            f"{run_dir} has no {LAST}: the run stopped before its first epoch ended, so there is "
            f"nothing to resume; start it again with the same command and -o {run_dir}"
        )
    if (run_dir / LAST).exists() and not (run_dir / LAST).is_file():
        raise UserError(f"{run_dir / LAST} is not a file (a folder, a pipe or a device): it is "
                        "no checkpoint of a run")  # fmt: skip
    if not (run_dir / LAST).is_file():
        raise UserError(f"{run_dir} is not a vae-train run folder (it has no {LAST}); give "
                        "--resume the folder that a run's -o named")  # fmt: skip
    state = checkpoint.load(run_dir / LAST)
    changes = {field: options[option] for field, option in RESUMED_OPTIONS.items()}
    config = override(checkpoint.config_of(state), **changes)
    if is_main_process():  # what rank 0 writes; the others would race its sweep
        check_resume_folder(run_dir, config)
    return run_dir, state, config


def _new_run(options: dict) -> Path:
    """The folder a new run will write, refused unless it is new or empty."""
    from . import runfolder

    run_dir = one_output(options["out"], options["out_alias"])
    later = options["stage"] != "vae"
    missing = [flag for flag, absent in (
        ("-o/--output", run_dir is None),
        ("--init, the earlier stage's best.pt" if later else "--data",
         not (options["init"] if later else options["data"] or options["init"])),
    ) if absent]  # fmt: skip
    if missing:
        what = f"--stage {options['stage']}" if later else "a new run"
        raise UserError(f"{what} needs {' and '.join(missing)}; --resume RUN_DIR continues a "
                        "run instead")  # fmt: skip
    runfolder.check_new_run_folder(run_dir)
    return run_dir


def _check_outside_data(run_dir: Path, data: Sequence[str]) -> None:
    """Refuse a run folder inside a data folder: its sample grids are PNGs, and the next load of
    that folder (a resume, a later stage) would take them for photos."""
    from .data import resolved

    # Through links, as the data folders are compared.
    run = resolved(Path(run_dir), f"-o/--output {run_dir}")
    for source in data:
        root = resolved(Path(source).expanduser(), f"--data {source}")
        if run == root or root in run.parents:
            raise UserError(
                f"-o/--output {run_dir} is inside the data folder {source}: the run's grids "
                "would be read as photos; write the run somewhere else"
            )


def _new_config(options: dict, given: set[str]) -> TrainConfig:
    """A new run's config: its stage's defaults, then the command line; an impossible
    architecture is refused here, before any data is read."""
    from .checkpoint import MAX_PARAMETERS, parameter_count
    from .config import TrainConfig, override

    config = (
        _vae_config(options, given) if options["stage"] == "vae" else _stage_config(options, given)
    )
    config = override(config, threads=options["threads"])
    config = TrainConfig.from_dict(config.to_dict())  # every bound a config.json is held to
    config.model.check_sizes()
    parameters = parameter_count(config, prior=config.stage == "prior")
    if parameters > MAX_PARAMETERS:
        raise UserError(
            f"that architecture has {parameters:,} parameters, more than the {MAX_PARAMETERS:,} "
            "a run may have (the shipped 32x32 model has 2.5 million); choose smaller sizes"
        )
    return config


def _refuse_other_stages_flags(stage: str, given: set[str]) -> None:
    """Refuse the flags of a stage other than ``stage``: they would change nothing."""
    for other, flags in (("prior", PRIOR_FLAGS), ("decoder", DECODER_FLAGS)):
        if stage != other and given & flags:
            raise UserError(f"{_flag_names(given & flags)}: only for --stage {other}")


def _vae_config(options: dict, given: set[str]):
    """The VAE stage's config: the preset, then what the command line gives."""
    from .config import override, preset

    if options["init"] is not None:
        raise UserError("--init starts a later stage: give --stage prior or --stage decoder")
    _refuse_other_stages_flags("vae", given)
    resnet_only = {"decoder_width", "decoder_max_width", "blocks_per_level", "spatial_latent"}
    resnet_only &= given
    if options["preset"] == "baseline" and resnet_only:
        raise UserError(f"{_flag_names(resnet_only)}: the baseline's architecture is fixed")
    return override(preset(options["preset"]), **_settings(options, ("model", "all")))


def _settings(options: dict, owners: tuple[str, ...]) -> dict[str, Any]:
    """override()'s keywords for the options of these owners (None: not given), each value as
    the config holds it: paths absolute, sizes chosen as text made numbers."""
    values = {}
    for option, (key, whose) in SETTINGS.items():
        value = options[option]
        if whose not in owners or value is None:
            continue
        if option == "data":
            value = _absolute(value) or None  # none given: the preset's, or the init run's
        elif option == "prior_guide":
            value = value and _absolute([value])[0]
        elif option in ("image_size", "anchor_scale"):  # click.Choice gives text
            value = int(value)
        values[key] = value
    return values


def _absolute(paths: Sequence[str | Path]) -> list[str]:
    """Paths as the run records them: absolute, so ``--resume``, a later stage and vae-export
    find them from any working directory."""
    return [os.path.abspath(Path(p).expanduser()) for p in paths]


def _stage_config(options: dict, given: set[str]):
    """A later stage's config: the init checkpoint's model and data, the stage's defaults,
    then what the command line gives."""
    from . import checkpoint
    from .config import override, stage_config

    stage, init = options["stage"], options["init"]  # _new_run refused a missing --init
    fixed = given & ARCHITECTURE_FLAGS
    if fixed:
        raise UserError(
            f"{_flag_names(fixed)}: --stage {stage} keeps the model of its --init checkpoint"
        )
    _refuse_other_stages_flags(stage, given)
    init_config = checkpoint.config_of(checkpoint.load(init))
    if init_config.model.arch != "resnet":
        raise UserError(f"--stage {stage} needs a model of the default architecture")
    config = stage_config(init_config, stage, _absolute([init])[0])
    moved = [folder for folder in config.data if not Path(folder).is_dir()]
    if not options["data"] and moved:  # the error would name a folder the user never gave
        raise UserError(
            f"the data folder {moved[0]}, which --init {init}'s run trained on, is not here; "
            "give the photos with --data"
        )
    config = override(config, **_settings(options, ("all", stage)))
    if "guidance" in given and not config.sharpen.prior_guide:
        raise UserError("--guidance weighs a guide's draws: give --prior-guide too")
    return config


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("ckpt", type=NamedPath(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--data",
    type=NamedPath(),
    multiple=True,
    help="Data set to score; may be given again [default: the ones the run trained on].",
)
@click.option(
    "--split",
    type=click.Choice(["val", "train"]),
    default="val",
    show_default=True,
    help="The photos to score: the run's held-out ones, or those it trained on.",
)
@click.option(
    "--iw-samples",
    type=click.IntRange(min=0, max=MAX_IW_SAMPLES),
    default=0,
    show_default=True,
    help="Also report the importance-weighted bound with K samples: K more decodes of every "
    "photo (K = 5000 over 1,000 photos: about an hour on a 2-core CPU at 32x32, three to four "
    "at 64x64; a bar shows how far it has come).",
)
@click.option("--ema/--no-ema", default=True, show_default=True, help="Score the EMA weights.")
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where to score; auto picks a CUDA GPU when there is one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@version_option()
def eval_command(ckpt: Path, data: tuple[str, ...], split: str, iw_samples: int, ema: bool,
                 device: str, as_json: bool) -> None:  # fmt: skip
    """Score a checkpoint: negative ELBO in bits/dim, IW bound, reconstruction PSNR."""
    require_train_extra("vae-eval")
    with signals.signals_deferred():  # a stop inside torch's C start-up would be swallowed
        from tqdm import tqdm

        from . import checkpoint
        from .data import load_splits
        from .evaluate import evaluate, fit_gaussian_sigma
        from .loop import resolve_device

    model, config, _ = checkpoint.load_model(ckpt, ema=ema)
    target = resolve_device(device)
    model.to(target)
    sources = list(data) or config.data
    splits = load_splits(sources, config.model.image_size, config.crop,
                         config.val_fraction, box_margin=config.box_margin)  # fmt: skip
    images = splits.val if split == "val" else splits.train
    if len(images) == 0:
        raise UserError(f"the {split} split of {', '.join(sources)} is empty")
    sigma = None
    if not model.likelihood.is_discrete:
        sigma = fit_gaussian_sigma(model, splits.train, target)
    with tqdm(total=len(images) * (1 + iw_samples), unit="picture", desc="decoding",
              leave=False, disable=None, dynamic_ncols=True, file=sys.stderr) as bar:  # fmt: skip
        scores = evaluate(model, images, target, iw_samples=iw_samples, sigma=sigma,
                          on_decoded=bar.update)  # fmt: skip
    figures = {k: v for k, v in scores.as_dict().items() if isinstance(v, float)}
    broken = sorted(name for name, value in figures.items() if not math.isfinite(value))
    if broken:
        raise UserError(
            f"{ckpt} scores {', '.join(broken)} as NaN or infinite on these photos: its weights "
            "overflow (a diverged run); score an earlier checkpoint"
        )
    if as_json:
        echo(json.dumps({"checkpoint": str(ckpt), "split": split, "images": len(images),
                         **scores.as_dict()}))  # fmt: skip
        return
    echo(f"{ckpt}: {len(images)} {split} images of {', '.join(sources)}")
    if sigma is not None:
        echo(
            f"note: the {config.model.likelihood} loss is no likelihood over 8-bit pixels; its "
            f"output is scored as the mean of a discretized Gaussian with sigma = {sigma:.4f} "
            "(fitted on training images)"
        )
    echo(f"  negative ELBO  {scores.bpd:.4f} bits/dim  (recon {scores.recon_bpd:.4f}, "
         f"KL {scores.kl_bpd:.4f})")  # fmt: skip
    if scores.iw_bpd is not None:
        echo(f"  IW bound (K={iw_samples})  {scores.iw_bpd:.4f} bits/dim")
    echo(f"  PSNR           {scores.psnr:.2f} dB")


def train_main() -> None:
    global _COMMAND_PROCESS
    _COMMAND_PROCESS = True  # a finished stage ignores stops through the teardown
    run_as_program(train_command, "vae-train")


def eval_main() -> None:
    run_as_program(eval_command, "vae-eval")
