"""``vae-export``: a training checkpoint in, a checked model folder (runtime/format.py) out.

Everything is written into a hidden folder beside the destination and renamed into place only
after every check has passed: a failed export leaves nothing behind, and an existing model is
replaced only at the very end. torch and the export modules are imported inside the command, so
a runtime-only install gets one clear line instead of a traceback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from birdvae.runtime.format import DEFAULT_OPSET, MANIFEST_FILE

NEEDS_TRAIN_EXTRA = "vae-export needs the training extra: pip install 'bird-vae[train]'"
TRAIN_MODULES = ("torch", "onnx", "onnxscript")
EXIT_FAILED = 1  # the export or one of its checks failed
EXIT_USAGE = 2  # bad checkpoint, data or destination


class UsageProblem(Exception):
    """An input the user has to fix (exit 2); the message says what."""


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model folder to write. [default: 'model' beside the checkpoint]",
)
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
    help="ONNX opset of both graphs.",
)
@click.option(
    "--int8",
    is_flag=True,
    help="Also quantize to int8 (static QDQ) and ship each graph whose int8 version "
    "runs faster; needs real images (--prior-data or the checkpoint's data).",
)
@click.option(
    "--prior-data",
    type=click.Path(path_type=Path),
    help="Data set whose training split the latent prior is fitted to (its images "
    "also feed the parity check and int8 calibration).",
)
@click.option(
    "--prior-components",
    type=click.IntRange(min=1),
    help="Gaussian mixture components of the fitted prior. [default: 1]",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Default sampling temperature written to the manifest.",
)
@click.option(
    "--noise",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Default pixel noise written to the manifest: bird-gen draws pixels from the "
    "decoder's distribution at this temperature (0: its mean). Logistic likelihoods only.",
)
def main(
    checkpoint: Path,
    out: Path | None,
    ema: bool,
    opset: int,
    int8: bool,
    prior_data: Path | None,
    prior_components: int | None,
    temperature: float,
    noise: float,
) -> None:
    """Export CHECKPOINT to an ONNX model folder the torch-free runtime (bird-gen) loads."""
    if any(importlib.util.find_spec(name) is None for name in TRAIN_MODULES):
        click.echo(NEEDS_TRAIN_EXTRA, err=True)
        sys.exit(EXIT_USAGE)
    if prior_components is not None and prior_data is None:
        raise click.UsageError("--prior-components needs --prior-data")
    from birdvae.training.checkpoint import CheckpointError
    from birdvae.training.data import DataError

    from .onnx import ExportError

    destination = out if out is not None else checkpoint.parent / "model"
    try:
        _export(checkpoint, destination, ema, opset, int8, prior_data, prior_components or 1,
                temperature, noise)  # fmt: skip
    except (UsageProblem, CheckpointError, DataError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except ExportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except OSError as exc:
        click.echo(f"error: cannot write the model: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"wrote {destination}")


def _export(
    checkpoint: Path,
    destination: Path,
    ema: bool,
    opset: int,
    int8: bool,
    prior_data: Path | None,
    components: int,
    temperature: float,
    noise: float,
) -> None:
    from birdvae.runtime.format import (
        DECODER_FILE,
        ENCODER_FILE,
        PRIOR_FILE,
        FileEntry,
        Manifest,
        sha256_of,
        verify_model_dir,
    )
    from birdvae.training.checkpoint import load_model

    from .onnx import (
        export_model,
        exporter_for,
        has_pixel_noise,
        ir_version_for,
        package_version,
    )
    from .quantize import format_figures, quantize_model

    _check_destination(destination)
    model, config, state = load_model(checkpoint, ema=ema)
    if noise > 0 and not has_pixel_noise(model):
        raise UsageProblem(
            f"--noise needs a logistic likelihood; this model's is {model.likelihood.name}"
        )
    used_ema = bool(ema and state.get("ema"))
    if ema and not used_ema:
        click.echo("note: the checkpoint has no weight average; exporting its raw weights")
    splits, data = _real_images(checkpoint, config, prior_data)
    if int8 and splits is None:
        raise UsageProblem("--int8 calibrates on real images: pass --prior-data DIR")
    source: dict[str, Any] = {
        "architecture": config.to_dict()["model"],
        "epochs": int(state["epoch"]),
        "val_bpd": _float_or_none((state.get("metrics") or {}).get("val_bpd")),
        "weights": "ema" if used_ema else "model",
        "checkpoint_sha256": sha256_of(checkpoint),
        "package_version": package_version(),
        "exporter": exporter_for(opset),
        "data": str(data) if data else None,
    }
    cfg = model.cfg
    with _staging(destination) as folder:
        export_model(model, folder, opset)
        source["parity"] = _parity(model, folder, splits)
        prior = None
        if prior_data is not None:
            prior, figures = _fit_prior(folder, splits, components, temperature, config.seed)
            source["prior"] = figures
        if int8:
            source["int8"] = quantize_model(folder, splits.train, splits.val, opset)
            click.echo(format_figures(source["int8"]))
        names = [ENCODER_FILE, DECODER_FILE] + ([PRIOR_FILE] if prior else [])
        Manifest(
            image_size=cfg.image_size,
            latent_dim=cfg.latent_dim,
            likelihood=model.likelihood.name,
            opset=opset,
            ir_version=ir_version_for(opset),
            files={name: FileEntry.of(folder / name) for name in names},
            prior=prior,
            default_prior="fitted" if prior else "standard",
            default_temperature=temperature,
            default_noise=noise,
            source=source,
        ).save(folder)
        verify_model_dir(folder)


def _parity(model: Any, folder: Path, splits: Any) -> dict[str, Any]:
    """Compare both engines on held-out images (training ones if there are none), print the
    table, raise ExportError on a mismatch; return the figures for the manifest."""
    from .parity import IMAGE_TOL, LATENT_TOL, check_parity, format_table, max_diffs, verdict

    images = None if splits is None else splits.val if len(splits.val) else splits.train
    rows = check_parity(model, folder, images)
    click.echo(format_table(rows))
    verdict(rows)
    return {
        "max_abs_diff": max_diffs(rows),
        "image_tolerance": IMAGE_TOL,
        "latent_tolerance_relative": LATENT_TOL,
        "inputs": rows[0].input,
    }


def _fit_prior(
    folder: Path, splits: Any, components: int, temperature: float, seed: int
) -> tuple[Any, dict[str, Any]]:
    """Fit the mixture to the training split's posterior means and write ``prior.npz``."""
    from birdvae.runtime.format import ENCODER_FILE, PRIOR_FILE, PriorInfo

    from .onnx import ExportError
    from .parity import encode_means
    from .prior import fit_gaussian_mixture, held_out_fit

    latents = encode_means(folder / ENCODER_FILE, splits.train)
    try:
        mixture = fit_gaussian_mixture(latents, components, seed=seed)
    except ValueError as exc:
        raise ExportError(f"fitting the prior failed: {exc}") from exc
    mixture.save(folder / PRIOR_FILE)
    click.echo(f"prior: {components}-component Gaussian mixture fitted to the posterior means "
               f"of {len(latents)} training images")  # fmt: skip
    figures = {
        "train_images": len(latents),
        "iterations": mixture.iterations,
        "converged": mixture.converged,
        **held_out_fit(mixture, encode_means(folder / ENCODER_FILE, splits.val)),
    }
    return PriorInfo(components=components, default_temperature=temperature), figures


def _check_destination(destination: Path) -> None:
    """Refuse early to replace anything that is not a model folder."""
    if destination.exists() and not destination.is_dir():
        raise UsageProblem(f"{destination} exists and is not a folder")
    if (
        destination.is_dir()
        and any(destination.iterdir())
        and not (destination / MANIFEST_FILE).is_file()
    ):
        raise UsageProblem(
            f"refusing to replace {destination}: it is not empty and holds no {MANIFEST_FILE}"
        )


def _real_images(checkpoint: Path, config: Any, prior_data: Path | None) -> tuple[Any, Path | None]:
    """The data set's splits (uint8 arrays) from --prior-data, else from the folder the checkpoint
    was trained on when it exists here; (None, None) when neither is available.

    The train split is the checkpoint's own: same crop, size and validation share. A run folder's
    decoded-image cache is reused when the checkpoint sits in one.
    """
    from birdvae.training.data import load_splits

    data = prior_data
    if data is None and config.data and Path(config.data).is_dir():
        data = Path(config.data)
    if data is None:
        return None, None
    cache = checkpoint.parent / "cache"
    splits = load_splits(
        data, config.model.image_size, crop=config.crop, val_fraction=config.val_fraction,
        cache_dir=cache if cache.is_dir() else None,
    )  # fmt: skip
    click.echo(f"images: {data} ({len(splits.train)} train, {len(splits.val)} val)")
    return splits, data


@contextlib.contextmanager
def _staging(destination: Path) -> Iterator[Path]:
    """A hidden folder beside ``destination``, renamed onto it when the block succeeds and
    removed, with any parent folders made for it, when the block fails."""
    made = [p for p in [destination.parent, *destination.parent.parents] if not p.exists()]
    destination.parent.mkdir(parents=True, exist_ok=True)
    folder = destination.parent / f".{destination.name}.{secrets.token_hex(4)}.partial"
    folder.mkdir()
    try:
        yield folder
        _replace(folder, destination)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        for parent in made:  # deepest first; only the empty ones this call created
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def _replace(folder: Path, destination: Path) -> None:
    """Rename ``folder`` to ``destination``, moving an old model aside only for the swap."""
    if not destination.exists():
        os.replace(folder, destination)
        return
    old = destination.parent / f".{destination.name}.{secrets.token_hex(4)}.old"
    os.replace(destination, old)
    try:
        os.replace(folder, destination)
    except BaseException:
        os.replace(old, destination)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
