"""``vae-export``: a training checkpoint in, a checked model folder (runtime/format.py) out.

Everything is written into a hidden folder beside the destination and renamed into place only
after every check has passed: a failed or killed export leaves the old model, and only a folder
that is a model of ours is ever replaced (``destination.py``). torch, onnx and the modules that
need them are imported inside the command, so a runtime-only install gets one clear line instead
of a traceback.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from birdvae.runtime import signals
from birdvae.runtime.command import (
    Command,
    FiniteRange,
    NamedPath,
    echo,
    one_output,
    run_as_program,
    version_option,
)
from birdvae.runtime.format import (
    DEFAULT_OPSET,
    MANIFEST_FILE,
    MAX_NOISE,
    MAX_TEMPERATURE,
    PRIOR_NAMES,
)
from birdvae.runtime.selection import MAX_BEST_OF
from birdvae.training.config import DEFAULT_GUIDANCE
from birdvae.training.extra import TRAIN_MODULES, require_train_extra

from .pipeline import ExportOptions, export

EXPORT_MODULES = (*TRAIN_MODULES, "onnx", "onnxscript")


@click.command("vae-export", cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=NamedPath(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=NamedPath(file_okay=False, path_type=Path),
    help="Model folder to write, made with any missing parent folders (removed again if the "
    "export fails). [default: 'model' beside the checkpoint]",
)
@click.option("--out", "out_alias", type=NamedPath(file_okay=False, path_type=Path), hidden=True)
@click.option(
    "--ema/--no-ema",
    default=True,
    show_default=True,
    help="Export the weight average (when the checkpoint has one) or the raw weights.",
)
@click.option(
    "--opset",
    type=click.IntRange(min=13),
    default=DEFAULT_OPSET,
    show_default=True,
    help="ONNX opset of every graph written.",
)
@click.option(
    "--int8",
    is_flag=True,
    help="Also quantize to int8 (static QDQ) and ship each graph whose int8 version "
    "runs faster; needs real images (--prior-data or the checkpoint's data).",
)
@click.option(
    "--int8-even-if-slower",
    is_flag=True,
    help="With --int8: ship every int8 graph whose pictures are 30 dB PSNR or more from the "
    "float graph's, even where this CPU runs it no faster (for a model built here to run on "
    "another CPU, such as an ARM board, where int8 kernels win). The manifest records it.",
)
@click.option(
    "--prior-data",
    type=NamedPath(path_type=Path),
    multiple=True,
    help="Fit a Gaussian mixture prior ('fitted') to this data set's training split; may be "
    "given again. Its images also feed the parity check and int8 calibration, which otherwise "
    "use the checkpoint's data where it exists here.",
)
@click.option(
    "--prior-components",
    type=click.IntRange(min=1),
    help="Gaussian mixture components of the fitted prior. [default: 1]",
)
@click.option(
    "--default-prior",
    type=click.Choice(PRIOR_NAMES),
    help="The prior bird-gen samples from unless told otherwise. [default: learned when the "
    "checkpoint has one (a --stage prior run or later), else fitted with --prior-data, else "
    "standard]",
)
@click.option(
    "--temperature",
    type=FiniteRange(0, MAX_TEMPERATURE, min_open=True),
    default=1.0,
    show_default=True,
    help="The default prior's sampling temperature, written to the manifest.",
)
@click.option(
    "--noise",
    type=FiniteRange(0, MAX_NOISE),
    default=0.0,
    show_default=True,
    help="Default pixel noise written to the manifest: bird-gen draws pixels from the "
    "decoder's distribution at this temperature (0: its mean). Logistic likelihoods only.",
)
@click.option(
    "--prior-guide",
    "guide",
    type=NamedPath(exists=True, dir_okay=False, path_type=Path),
    help="Autoguide the learned prior with this smaller prior's checkpoint (a short --stage "
    "prior run from the same --init, e.g. --prior-width 256 --prior-blocks 2 --epochs 15): "
    "firmer birds for about a quarter more sampling time.",
)
@click.option(
    "--guidance",
    type=FiniteRange(min=1),
    help=f"Autoguidance weight (1: none). [default: {DEFAULT_GUIDANCE:g} with --prior-guide]",
)
@click.option(
    "--best-of",
    type=click.IntRange(1, MAX_BEST_OF),
    default=1,
    show_default=True,
    help="Build into prior.onnx a choice among K candidate noises per bird: a small network, "
    "trained here on the model's own draws, predicts which becomes the bird the shipped rater "
    "rates highest (what bird-gen --best-of K picks after decoding K).",
)
@click.option(
    "--selector-from",
    type=NamedPath(exists=True, file_okay=False, path_type=Path),
    help="With --best-of: keep the selector of this model folder's prior.onnx instead of "
    "teaching a new one, e.g. to export a shipped model's checkpoint again and keep the birds "
    "it chose.",
)
@version_option()
def main(
    checkpoint: Path,
    output: Path | None,
    out_alias: Path | None,
    ema: bool,
    opset: int,
    int8: bool,
    int8_even_if_slower: bool,
    prior_data: tuple[Path, ...],
    prior_components: int | None,
    default_prior: str | None,
    temperature: float,
    noise: float,
    guide: Path | None,
    guidance: float | None,
    best_of: int,
    selector_from: Path | None,
) -> None:
    """Export CHECKPOINT to an ONNX model folder the torch-free runtime (bird-gen) loads."""
    require_train_extra("vae-export", EXPORT_MODULES)
    if int8_even_if_slower and not int8:
        raise click.UsageError("--int8-even-if-slower needs --int8")
    if prior_components is not None and not prior_data:
        raise click.UsageError("--prior-components needs --prior-data")
    if guidance is not None and guide is None:
        raise click.UsageError("--guidance needs --prior-guide")
    if selector_from is not None and best_of == 1:
        raise click.UsageError("--selector-from needs --best-of K, the K of that model's selector")
    output = one_output(output, out_alias)

    with signals.signals_deferred():  # a stop inside torch's C start-up would be swallowed
        import onnx
        import torch  # noqa: F401  (loaded here, where a stop waits for it)

    if opset > onnx.defs.onnx_opset_version():
        raise click.BadParameter(
            f"{opset} is newer than the {onnx.defs.onnx_opset_version()} this onnx knows",
            param_hint="'--opset'",
        )
    destination = _checked_destination(output or checkpoint.parent / "model")
    replacing = (destination / MANIFEST_FILE).is_file()  # an earlier export: it goes, say so
    options = ExportOptions(
        checkpoint=checkpoint,
        destination=destination,
        ema=ema,
        opset=opset,
        int8=int8,
        int8_even_if_slower=int8_even_if_slower,
        prior_data=prior_data,
        components=prior_components or 1,
        default_prior=default_prior,
        temperature=temperature,
        noise=noise,
        guide=guide,
        guidance=DEFAULT_GUIDANCE if guidance is None else guidance,
        best_of=best_of,
        selector_from=selector_from,
    )
    try:
        export(options)  # a file it cannot read or write: one error line naming it, exit 2
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        # onnx's and numpy's writers name no file: a full disk is named by the model's folder.
        raise OSError(exc.errno, f"writing the model: {exc.strerror}", str(destination)) from None
    echo(f"wrote {destination}" + (", replacing the model that was there" if replacing else ""))
    echo(f"next: bird-gen -m {shlex.quote(str(destination))} --n 64 -o birds.png")


def _checked_destination(destination: Path) -> Path:
    """The destination as an absolute path, refused if it is the working directory or holds
    it: the export swaps the folder it writes for a new one, and it cannot swap the folder the
    user stands in (``-o .`` would also stage the model inside the folder it replaces)."""
    absolute = Path(os.path.abspath(destination))
    here = Path.cwd()
    if absolute == here or absolute in here.parents:
        raise click.BadParameter(
            f"{destination} is the working folder or holds it; name a folder to write, e.g. "
            "-o model",
            param_hint="'-o'",
        )
    return absolute


def export_main() -> None:
    """``vae-export``'s console script."""
    run_as_program(main, "vae-export")
