"""``bird-gen``: sample, reconstruct, interpolate and describe birds from the command line.

A user's mistake ends as one line ``error: ...`` on stderr with exit status 2 (``command.py``),
found before any file is written where it can be: every size the work will take (the PNG's
pixels, a batch's numbers, the threads) is checked against its bound before it starts. PNGs are
written atomically through locked temporaries; SIGTERM unwinds like Ctrl-C and removes them, and
each run sweeps those a killed run left (docs/GUARANTEES.md). PIL is imported only by the
commands that read photos, and ``info`` never loads onnxruntime.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np
from click.core import ParameterSource

from . import durable, images
from . import separate as separate_files
from .command import (
    FiniteRange,
    Group,
    NamedPath,
    counted,
    echo,
    version_option,
    with_progress,
)
from .errors import UserError
from .format import MANIFEST_FILE, MAX_NOISE, MAX_TEMPERATURE, PRIOR_NAMES
from .model import DEFAULT_BATCH, DEFAULT_MODEL, BirdVAE, Sampling, shadowed_folder
from .selection import MAX_BEST_OF

CARD_FILE = "MODEL_CARD.md"  # beside a shipped model's files: its version, data, terms of use
MAX_FIGURE = 4096  # birds in one grid PNG (and photos in one recon figure); more: --separate
MAX_STEPS = 256
MAX_SCALE = 64
# One PNG is encoded in memory, about 7 bytes a pixel: 100 megapixels take 700 MB, what a
# Raspberry Pi can spare. The largest grid, 4096 birds of 128 px, is 69 megapixels.
MAX_PNG_PIXELS = 100_000_000
# Birds (times --best-of) from which a grid shows a progress bar: about two seconds' work on a
# laptop; the default 64 birds print nothing but the line that says what was written.
PROGRESS_FROM = 1024
TILE_PIXELS = 128  # the default scale makes each bird about this wide
MAX_OUTLINE_DEPTH = 3  # info indents groups this deep; deeper ones are shown as JSON
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# Options a command takes after its name or, as in ``bird-gen -m birds64 recon x.jpg``, before
# it: the model and its threads are what every use of bird-gen names first.
SHARED_OPTIONS = ("model", "threads")


class BirdGenCommand(click.Command):
    """A command of ``bird-gen``'s, whose shared options (``SHARED_OPTIONS``) given before its
    name arrive as its defaults (``main`` passes them down); given on both sides, refused."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        parent = ctx.parent
        for param in self.params:
            if (
                param.name in SHARED_OPTIONS
                and parent is not None
                and all(
                    c.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
                    for c in (ctx, parent)
                )
            ):
                raise click.UsageError(
                    f"{param.opts[-1]} is given before '{ctx.info_name}' and after it; "
                    "give it once",
                    ctx,
                )
        return rest


class BirdGenGroup(Group):
    """``bird-gen``: sampling options first, then the commands."""

    command_class = BirdGenCommand

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        """A number where a command's name goes is most likely a count of birds: say how."""
        counted = ctx.get_parameter_source("n") is ParameterSource.COMMANDLINE
        if args and args[0].isdecimal() and not counted and self.get_command(ctx, args[0]) is None:
            raise click.UsageError(
                f"no command {args[0]!r}; to draw {args[0]} birds give {ctx.info_name} "
                f"--n {args[0]}",
                ctx,
            )
        return super().resolve_command(ctx, args)


_model_option = click.option(
    "--model",
    "-m",
    type=NamedPath(),
    metavar="NAME|FOLDER",
    default=DEFAULT_MODEL,
    show_default=True,
    help="A shipped model's name (birds32, birds64) or a model folder.",
)
_threads_option = click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="onnxruntime threads, at most one per CPU; 0 lets it use one per physical core.",
)


def _output_option(default: str, what: str) -> Callable[..., Any]:
    return click.option(
        "-o",
        "--output",
        type=NamedPath(dir_okay=False, path_type=Path),
        default=default,
        show_default=True,
        help=f"The PNG to write: {what}.",
    )


_force_option = click.option(
    "--force", is_flag=True, help="Replace -o's file even if bird-gen did not write it."
)


def _scale_option(
    default: str = "about 128 px an image", what: str = "image"
) -> Callable[..., Any]:
    return click.option(
        "--scale",
        type=click.IntRange(1, MAX_SCALE),
        help=f"Enlarge each {what} K times (nearest neighbour). Default: {default}.",
    )


def _check_output_file(path: Path, inputs: tuple[Path, ...] = (), force: bool = False) -> Path:
    """Refuse an output the PNG cannot be written to, that is one of the ``inputs`` (a photo
    drawn over by its own figure), or (unless ``force``) that is a file bird-gen did not write,
    before any work is done. Returns the file to write: a symlink's target, which the PNG is
    written through to, so that its folder and name are the ones checked and swept."""
    path = durable.link_target(path)
    for photo in inputs:
        with contextlib.suppress(OSError):  # a missing photo is load_image's to report
            if path.exists() and os.path.samefile(path, photo):
                raise UserError(f"{path} is one of the photos read; give another -o/--output")
    if path.suffix.lower() != ".png":
        # Path(".png").suffix is "": a name that is only the extension has no name before it.
        hidden = path.name.lower() == ".png"
        raise UserError(f"{path}: the output must be a .png file"
                        + (" with a name before .png" if hidden else ""))  # fmt: skip
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a .png file name")
    durable.check_not_special(path)
    folder = path.parent
    if not folder.is_dir():
        if folder.exists():
            raise UserError(f"{path}: {folder} is not a folder")
        raise UserError(f"{path}: the folder {folder} does not exist; make it first "
                        f"(mkdir -p {shlex.quote(str(folder))})")  # fmt: skip
    if not os.access(folder, os.W_OK):
        raise UserError(f"{path}: the folder {folder} is not writable")
    longest = durable.longest_name(folder)
    if len(os.fsencode(path.name)) > longest:
        raise UserError(f"{path}: the file name is too long (at most {longest} bytes here)")
    _check_replaceable(path, force)
    return path


def _save_figure(pixels: np.ndarray, output: Path, force: bool) -> str:
    """Write a figure's PNG, its output checked again just before the rename into place: the
    user may have put a file of their own there while the figure was drawn and encoded.
    Returns what the "wrote" line adds when a file was replaced, so that a grid someone liked
    is not replaced without a word."""
    replaced = []

    def check() -> None:
        _check_replaceable(output, force)
        replaced.append(output.exists())

    images.save_png(pixels, output, before_replace=check)
    return " (replacing the file that was there)" if any(replaced) else ""


def _check_replaceable(path: Path, force: bool) -> None:
    """Refuse to replace a file bird-gen did not write (a photo, the user's notes) unless
    ``force``: a PNG of ours, from an earlier run, is replaced without asking."""
    if not force and path.exists() and not images.written_by_bird_gen(path):
        raise UserError(
            f"{path} exists and bird-gen did not write it; give another -o/--output, or "
            "--force to replace it"
        )


def _sampler_chooses(vae: BirdVAE, prior: str) -> int:
    """K where the model's manifest says its learned sampler keeps the best of K draws
    (``source.best_of.k``, written by vae-export), else 0. The source is free-form, so this
    only ever decides a note."""
    info = vae.manifest.priors.get(prior) if prior == "learned" else None
    source = info.source if info is not None else None
    best = source.get("best_of") if isinstance(source, dict) else None
    k = best.get("k") if isinstance(best, dict) else None
    return k if type(k) is int and k > 1 else 0


def _open_model(model: str, threads: int | None = None) -> BirdVAE:
    """The model ``--model`` names; a note on stderr when the name hides a folder here."""
    hidden = shadowed_folder(model)
    if hidden is not None:
        echo(f"note: {model} is the shipped model; for the folder here give ./{model}", err=True)
    return BirdVAE.load(model, threads=threads)


def _default_scale(scale: int | None, vae: BirdVAE) -> int:
    return scale or max(1, TILE_PIXELS // vae.image_size)


def _check_pixels(height: int, width: int) -> None:
    """Refuse a PNG larger than MAX_PNG_PIXELS before any of it is drawn."""
    if height * width > MAX_PNG_PIXELS:
        raise UserError(
            f"the PNG would be {width}x{height} px, more than the {MAX_PNG_PIXELS // 10**6} "
            "megapixels bird-gen writes at once; lower --scale or the number of images"
        )


@click.group("bird-gen", cls=BirdGenGroup, invoke_without_command=True, context_settings=CONTEXT)
@click.option(
    "-n",
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help=f"How many birds (at most {MAX_FIGURE} in one grid).",
)
@_output_option("birds.png", "a near-square grid of the birds")
@click.option(
    "--separate",
    type=NamedPath(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Write each bird as its own PNG, DIR/bird_00000.png and on, instead of one grid.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace what is there: with -o, a file bird-gen did not write; with --separate, "
    "birds of an earlier run in DIR, over those of the same names.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Random seed: on one machine, the same seed writes the same PNG bytes.",
)
@click.option(
    "--temperature",
    "-t",
    type=FiniteRange(0, MAX_TEMPERATURE),
    help="Spread of the prior (1: as fitted; lower: safer, blander). Default: the model's.",
)
@click.option(
    "--noise",
    type=FiniteRange(0, MAX_NOISE),
    help="Pixel grain drawn from the decoder's own distribution (0: its smooth mean; 1: a full "
    "sample). Default: the model's.",
)
@click.option(
    "--prior",
    type=click.Choice(PRIOR_NAMES),
    help="learned: the network trained on the training set's codes; fitted: a Gaussian mixture "
    "fitted to them; standard: N(0, I). Default: the model's.",
)
@click.option(
    "--best-of",
    type=click.IntRange(1, MAX_BEST_OF),
    default=1,
    show_default=True,
    help="Draw K birds for each one shown and keep the one the shipped rater (a network that "
    "predicts a blind rater's score) rates highest, at K times the work. For models whose "
    "sampler does not choose already (a note says when it does): birds32's does, and choosing "
    "again among its draws was rated no better.",
)
@_scale_option("about 128 px a bird in a grid, 1 with --separate", "bird")
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Birds decoded at once (times --best-of); bounds memory (at most what fits 16M numbers "
    "an array).",
)
@_model_option
@_threads_option
@version_option()
@click.pass_context
def main(
    ctx: click.Context,
    n: int,
    output: Path,
    separate: Path | None,
    force: bool,
    seed: int,
    temperature: float | None,
    noise: float | None,
    prior: str | None,
    best_of: int,
    scale: int | None,
    batch: int,
    model: str,
    threads: int,
) -> None:
    """Sample new birds from a bird VAE into one grid PNG (or one PNG each with --separate).

    The options below are for sampling. The commands reconstruct photos (recon), morph one
    photo into another (interp) and describe a model (info); each has its own --help. -m may
    also come before a command's name, and --threads before recon's or interp's.
    """
    if ctx.invoked_subcommand is not None:
        _pass_down(ctx, ctx.invoked_subcommand)
        return
    if separate is not None:
        if ctx.get_parameter_source("output") is ParameterSource.COMMANDLINE:
            raise click.UsageError("give either -o/--output or --separate, not both")
        separate_files.check_folder(separate)
    else:
        if n > MAX_FIGURE:
            raise UserError(
                f"--n {n} is too many birds for one grid (at most {MAX_FIGURE}); "
                "use --separate DIR to write one PNG each"
            )
        output = _check_output_file(output, force=force)

    vae = _open_model(model, threads)
    settings = vae.sampling(
        seed=seed, temperature=temperature, prior=prior, noise=noise, batch=batch, best_of=best_of
    )
    chosen = _sampler_chooses(vae, settings.prior)
    if best_of > 1 and chosen:
        echo(f"note: this model's sampler already keeps the best of {chosen} draws; "
             f"--best-of {best_of} chooses again among those, at {best_of} times the work",
             err=True)  # fmt: skip
    if separate is not None:
        side = vae.image_size * (scale or 1)
        _check_pixels(side, side)
        kept = separate_files.write_birds(
            lambda: vae.draw(n, settings), n, separate, scale or 1, force
        )
        echo(f"wrote {counted(n, 'bird')} to {separate}/ ({settings})")
        if kept:
            echo(f"note: {separate}/ still holds {counted(kept, 'older bird')} besides these")
    else:
        _sample_grid(vae, settings, n, output, _default_scale(scale, vae), force)


def _sample_grid(
    vae: BirdVAE, settings: Sampling, n: int, output: Path, scale: int, force: bool
) -> None:
    """n birds as one grid PNG, its size checked before any bird is drawn."""
    rows, cols = images.grid_shape(n)
    height, width = images.figure_size(rows, cols, vae.image_size, scale)
    _check_pixels(height, width)
    durable.sweep_temporaries(output.parent, {output.name})
    batches = vae.draw(n, settings)
    if n * settings.best_of >= PROGRESS_FROM:
        batches = with_progress(batches, n, "drawing birds")
    replaced = _save_figure(images.grid(_collect_uint8(batches), scale), output, force)
    size = f"{rows}x{cols} grid, {width}x{height} px"
    echo(f"wrote {output}{replaced}: {counted(n, 'bird')}, {size} ({settings})")


def _collect_uint8(batches: Iterator[np.ndarray]) -> np.ndarray:
    """All batches as one uint8 [N, S, S, 3] array: a quarter of the float images' memory."""
    return np.concatenate([images.to_uint8_hwc(batch) for batch in batches])


def _photo_figure(
    photos: tuple[Path, ...],
    output: Path,
    model: str,
    threads: int,
    scale: int | None,
    shape: tuple[int, int],
    force: bool,
) -> tuple[BirdVAE, int, np.ndarray]:
    """What the photo commands share, cheapest check first: the output, the model, the
    figure's size (``shape`` rows x columns of tiles); then the photos, loaded as uint8
    [N, S, S, 3]. Returns the model, the scale to draw at and the photos."""
    output = _check_output_file(output, photos, force)
    from .photos import load_image

    vae = _open_model(model, threads)
    scale = _default_scale(scale, vae)
    _check_pixels(*images.figure_size(*shape, vae.image_size, scale))
    durable.sweep_temporaries(output.parent, {output.name})
    return vae, scale, np.stack([load_image(path, vae.image_size) for path in photos])


def _pass_down(ctx: click.Context, name: str) -> None:
    """Give command ``name`` the shared options given before it as its defaults; refuse the
    sampling options there, which it does not take."""
    assert isinstance(ctx.command, click.Group)
    command = ctx.command.get_command(ctx, name)
    takes = {param.name for param in command.params} if command is not None else set()
    given = [
        param
        for param in ctx.command.params
        if param.name and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
    ]
    untaken = [p.opts[-1] for p in given if p.name in SHARED_OPTIONS and p.name not in takes]
    if untaken:
        raise click.UsageError(f"{name} takes no {', '.join(untaken)}")
    sampling = [p.opts[-1] for p in given if p.name not in SHARED_OPTIONS]
    if sampling:
        raise click.UsageError(
            f"options before '{name}' are for sampling ({', '.join(sampling)}); "
            f"give {name}'s options after its name"
        )
    ctx.default_map = {name: {p.name: ctx.params[p.name] for p in given if p.name}}


@main.command()
@click.argument(
    "photos", metavar="IMAGES...", nargs=-1, required=True, type=NamedPath(path_type=Path)
)
@_output_option("recon.png", "originals on top, each reconstruction below it")
@_force_option
@_scale_option()
@_model_option
@_threads_option
def recon(
    photos: tuple[Path, ...],
    output: Path,
    force: bool,
    scale: int | None,
    model: str,
    threads: int,
) -> None:
    """Reconstruct photos and print each one's PSNR and the mean.

    Each photo is centre-cropped and resized to the model's size, encoded to its posterior mean
    and decoded. The PNG shows the cropped originals on one row and their reconstructions on the
    row below; many photos wrap into a near-square block of such row pairs. PSNR (dB) compares
    the 8-bit reconstruction with the 8-bit cropped original; the mean is over photos.
    """
    if len(photos) > MAX_FIGURE:
        raise UserError(f"{len(photos)} photos are too many for one figure (at most {MAX_FIGURE})")
    vae, scale, originals = _photo_figure(
        photos, output, model, threads, scale, images.pairs_shape(len(photos)), force
    )
    reconstructions = images.to_uint8_hwc(vae.reconstruct(images.from_uint8_hwc(originals)))
    scores = [images.psnr(a, b) for a, b in zip(originals, reconstructions)]
    pixels = images.pairs(originals, reconstructions, scale)
    replaced = _save_figure(pixels, output, force)
    width = max(len(str(path)) for path in photos)
    for path, score in zip(photos, scores):
        echo(f"{path!s:<{width}}  {score:6.2f} dB")
    echo(f"{'mean':<{width}}  {sum(scores) / len(scores):6.2f} dB")
    one = len(photos) == 1
    pairs = "original and its reconstruction" if one else "originals and reconstructions"
    echo(f"wrote {output}{replaced}: {len(photos)} {pairs}, {pixels.shape[1]}x{pixels.shape[0]} px")


@main.command()
@click.argument("first", metavar="A", type=NamedPath(path_type=Path))
@click.argument("last", metavar="B", type=NamedPath(path_type=Path))
@click.option(
    "--steps",
    type=click.IntRange(2, MAX_STEPS),
    default=8,
    show_default=True,
    help="Images decoded along the path, both ends included.",
)
@_output_option("interp.png", "one row, photo A, the path, photo B")
@_force_option
@_scale_option()
@_model_option
@_threads_option
def interp(
    first: Path,
    last: Path,
    steps: int,
    output: Path,
    force: bool,
    scale: int | None,
    model: str,
    threads: int,
) -> None:
    """Morph photo A into photo B through the latent space.

    Both photos are encoded to their posterior means; the path between them is spherical
    (slerp), which keeps every code as typical as the ends. The row starts with the cropped
    photo A and ends with photo B.
    """
    vae, scale, ends = _photo_figure(
        (first, last), output, model, threads, scale, (1, steps + 2), force
    )
    start, end = images.from_uint8_hwc(ends)
    path = images.to_uint8_hwc(vae.interpolate(start, end, steps=steps))
    pixels = images.row(np.concatenate([ends[:1], path, ends[1:]]), scale)
    replaced = _save_figure(pixels, output, force)
    echo(
        f"wrote {output}{replaced}: {steps} steps between {first} and {last}, "
        f"{pixels.shape[1]}x{pixels.shape[0]} px"
    )


@main.command()
@_model_option
def info(model: str) -> None:
    """Describe a model: sizes, likelihood, prior, where it came from, its files.

    The files are checked against the manifest's hashes; onnxruntime is not loaded. The
    manifest's own strings are shown with control characters escaped.
    """
    vae = _open_model(model)
    vae.verify()
    manifest = vae.manifest
    facts: list[tuple[str, str]] = [
        ("model", str(vae.path)),
        ("image size", f"{vae.image_size}x{vae.image_size} RGB"),
        ("latent size", str(vae.latent_dim)),
        ("likelihood", manifest.likelihood),
        ("onnx", f"opset {manifest.opset}, IR version {manifest.ir_version}"),
    ]
    for i, name in enumerate(vae.prior_names):
        if name == "standard":
            what = "N(0, I)"
        elif name == "fitted":
            what = f"Gaussian mixture of {manifest.priors[name].components} components"
        else:
            what = f"learned sampler from {manifest.priors[name].noise_dim} noise numbers"
        temperature = vae.default_temperature(name)
        facts.append(("priors" if i == 0 else "", f"{name}: {what}, temperature {temperature:g}"))
        # how the prior was made: for a learned one its guidance and built-in choice of draws
        source = manifest.priors[name].source if name in manifest.priors else {}
        facts += [("", f"  {line}") for line in _outline(source)]
    default = manifest.default_prior
    facts.append(
        (
            "sampling",
            f"{default} prior, temperature {vae.default_temperature(default):g}, "
            f"pixel noise {vae.default_noise():g}",
        )
    )
    # The checkpoint exported: its epochs and scores are those of the last stage it went through.
    facts.append(("source", "the checkpoint exported, as its last training stage left it"))
    facts += [("", line) for line in _outline(manifest.source)]
    sizes = {name: entry.bytes for name, entry in manifest.files.items()}  # verified above
    sizes[MANIFEST_FILE] = (vae.path / MANIFEST_FILE).lstat().st_size
    for i, (name, size) in enumerate(sizes.items()):
        facts.append(("files" if i == 0 else "", f"{name:<16}{_human_size(size):>10}"))
    facts.append(("total", f"{_human_size(sum(sizes.values()))}"))
    card = vae.path / CARD_FILE
    if card.is_file() and not card.is_symlink():  # its version, data and terms of use
        facts.append(("card", str(card)))
    for label, text in facts:
        echo(f"{label:<13}{text}")


def _outline(facts: dict[str, Any], depth: int = 0) -> list[str]:
    """Free-form manifest facts as lines to read, not JSON: a group of groups under its name,
    indented; a group of plain values on one line as key=value pairs."""
    lines = []
    for key, value in facts.items():
        nested = isinstance(value, dict) and any(isinstance(v, dict) for v in value.values())
        if nested and depth < MAX_OUTLINE_DEPTH:
            lines += [f"{'  ' * depth}{key}:", *_outline(value, depth + 1)]
        elif isinstance(value, dict) and value:
            pairs = ", ".join(f"{k}={_show_in_pairs(v)}" for k, v in value.items())
            lines.append(f"{'  ' * depth}{key}: {pairs}")
        else:
            lines.append(f"{'  ' * depth}{key}: {_show(value)}")
    return lines


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _show_in_pairs(value: Any) -> str:
    """A value among key=value pairs, quoted where its own commas or equals signs would read
    as more pairs."""
    if isinstance(value, str) and ("," in value or "=" in value):
        return json.dumps(value)
    return _show(value)


def _human_size(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
