"""What ``vae-export`` does once its flags are checked: a checkpoint in, a checked model folder
out. Every input is loaded and every flag's fit to the checkpoint refused or accepted before the
staging folder is made; inside it the graphs, priors and manifest are written and checked
(parity with PyTorch, int8 only where faster and close), then the folder is renamed into place
(``destination.py``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from birdvae.runtime.command import echo, echo_lines
from birdvae.runtime.errors import UserError
from birdvae.runtime.format import (
    DECODER_FILE,
    DEFAULT_OPSET,
    ENCODER_FILE,
    MIXTURE_FILE,
    PRIOR_KINDS,
    FileEntry,
    Manifest,
    ModelFormatError,
    PriorInfo,
    max_prior_size,
    sha256_of,
)
from birdvae.runtime.model import BirdVAE
from birdvae.runtime.selection import RATER_SHA256, load_rater
from birdvae.training.config import DEFAULT_GUIDANCE

if TYPE_CHECKING:  # torch and the training code that needs it load only when an export runs
    from birdvae.training.config import TrainConfig
    from birdvae.training.data import Splits
    from birdvae.training.model import VAE
    from birdvae.training.prior import CodePrior
    from birdvae.training.selector import Selection


@dataclass(frozen=True)
class ExportOptions:
    """What one export is asked for, as the command line gave it."""

    checkpoint: Path
    destination: Path
    ema: bool = True
    opset: int = DEFAULT_OPSET
    int8: bool = False
    int8_even_if_slower: bool = False  # keep int8 graphs this CPU runs no faster (another target)
    prior_data: tuple[Path, ...] = ()
    components: int = 1
    default_prior: str | None = None  # None: learned, else fitted, else standard
    temperature: float = 1.0  # the default prior's
    noise: float = 0.0
    guide: Path | None = None  # a smaller prior checkpoint that autoguides the learned one
    guidance: float = DEFAULT_GUIDANCE  # autoguidance weight, used only with a guide
    best_of: int = 1  # candidate noises per bird the sampler graph chooses among
    selector_from: Path | None = None  # a model folder whose best-of selector to keep


def export(options: ExportOptions) -> None:
    """Everything that can be refused is refused, and every input loaded, before the staging
    folder is made; inside it the graphs, priors and manifest are written and checked, and only
    a folder that passed becomes the destination (export/destination.py)."""
    from .destination import check_replaceable, staging, sweep

    for line in sweep(options.destination):
        echo(f"note: {line}", err=True)
    check_replaceable(options.destination)
    plan = _prepare(options)
    with staging(options.destination) as folder:
        _write(plan, options, folder)


@dataclass
class _Plan:
    """One export's inputs, each loaded and checked against the flags before anything is
    written."""

    model: VAE
    config: TrainConfig
    learned: CodePrior | None  # the checkpoint's learned prior
    default: str  # the prior the manifest makes bird-gen's default
    guide: Guide | None
    selection: Selection | None  # carried from --selector-from, else taught in _write
    judge: Judge | None  # the decoder a new selector is taught by, when one is taught
    sampler_temperature: float
    splits: Splits | None  # real photos, for parity, the mixture and int8 calibration
    source: dict[str, Any]  # the manifest's facts of the checkpoint, completed in _write


def _prepare(options: ExportOptions) -> _Plan:
    """Load the checkpoint, its priors, the guide and the photos, and refuse every flag that
    does not fit them, before the staging folder exists."""
    from birdvae.training.checkpoint import learned_prior, load_model

    checkpoint, ema = options.checkpoint, options.ema
    model, config, state = load_model(checkpoint, ema=ema)
    checkpoint_sha256 = sha256_of(checkpoint)
    learned = learned_prior(state)
    _check_flags_fit(options, model, learned is not None)
    default = _default_prior(options, learned is not None)
    guide = _load_guide(options, state, learned, checkpoint_sha256)
    used_ema = bool(ema and state.get("ema"))
    weights = "ema" if used_ema else "model"  # as the manifest records them, in two places
    sampler_temperature = _temperature(options, default, "learned")
    carried = None
    if learned is not None and options.selector_from is not None:
        this_sampler = {
            "checkpoint_sha256": checkpoint_sha256,
            "weights": weights,
            "autoguidance": _autoguidance_facts(guide),
            "temperature": sampler_temperature,
        }
        carried = _carried_selection(options, learned.latent_dim, this_sampler)
    teaches = learned is not None and options.best_of > 1 and carried is None
    judge = _judging_decoder(state, model) if teaches else None
    # A prior-stage checkpoint holds its init's VAE as it froze it (that run's weight average,
    # if it had one) and no average of its own: nothing to note.
    if ema and not used_ema and config.stage != "prior":
        echo("note: the checkpoint has no weight average; exporting its raw weights",
             err=True)  # fmt: skip
    splits, data = _real_images(checkpoint, config, options.prior_data)
    if options.int8 and splits is None:
        raise UserError("--int8 calibrates on real images: pass --prior-data DIR")
    if options.prior_data and len(splits.train) < max(2, options.components):
        raise UserError(
            f"--prior-components {options.components}: the mixture is fitted to the training "
            f"photos of --prior-data, and there are {len(splits.train)}; give more photos or "
            "fewer components"
        )
    source = _source_facts(config, state, weights, checkpoint_sha256, options.opset, data)
    return _Plan(
        model=model, config=config, learned=learned, default=default,
        guide=guide, selection=carried, judge=judge, sampler_temperature=sampler_temperature,
        splits=splits, source=source,
    )  # fmt: skip


def _write(plan: _Plan, options: ExportOptions, folder: Path) -> None:
    """The graphs (parity proven), the priors, the int8 versions where they earn their place
    and the manifest, into the staging ``folder``."""
    from .onnx import export_model
    from .quantize import format_figures, quantize_model

    opset, splits, source = options.opset, plan.splits, plan.source
    export_model(plan.model, folder, opset, split_heads_for_int8=options.int8)
    source["parity"] = _parity(plan.model, folder, splits)
    priors: dict[str, PriorInfo] = {}
    if plan.learned is not None:
        selection = plan.selection or _selection(
            options.best_of, plan.learned, plan.guide, plan.judge, plan.sampler_temperature
        )
        priors["learned"] = _export_learned(plan.learned, folder, opset, plan.guide, selection)
    if options.prior_data:
        priors["fitted"] = _fit_prior(folder, splits, options.components, plan.config.seed)
    for name, info in priors.items():
        info.default_temperature = _temperature(options, plan.default, name)
    if options.int8:
        source["int8"] = quantize_model(
            folder, splits.train, splits.val, opset,
            require_speedup=not options.int8_even_if_slower,
        )  # fmt: skip
        echo_lines(format_figures(source["int8"]))
    _write_manifest(folder, plan.model, options, priors, plan.default, source)


def _check_flags_fit(options: ExportOptions, model: VAE, has_learned: bool) -> None:
    """Refuse (UserError) flags that ask the checkpoint for what it does not hold."""
    from .onnx import has_pixel_noise

    if options.noise > 0 and not has_pixel_noise(model):
        raise UserError(
            f"--noise needs a logistic likelihood; this model's is {model.likelihood.name}"
        )
    if options.best_of > 1 and not has_learned:
        raise UserError("--best-of chooses among a learned prior's draws: the checkpoint has none")
    latent_dim = model.cfg.latent_dim
    most_components = max_prior_size("fitted", latent_dim)
    if options.prior_data and options.components > most_components:
        raise UserError(
            f"--prior-components {options.components}: a mixture over {latent_dim} "
            f"dimensions may have at most {most_components} components (bird-gen refuses "
            "larger ones)"
        )
    most_noise = max_prior_size("learned", latent_dim)
    if options.best_of * latent_dim > most_noise:
        raise UserError(
            f"--best-of {options.best_of} needs {options.best_of} x {latent_dim} "
            f"noise numbers a bird, more than the format's {most_noise}; lower it"
        )


def _source_facts(
    config: TrainConfig,
    state: dict[str, Any],
    weights: str,
    sha256: str,
    opset: int,
    data: dict[str, Any] | None,
) -> dict[str, Any]:
    """What the manifest's ``source`` says of the checkpoint the graphs came from; export adds
    the parity and int8 figures as it measures them. A checkpoint saved part way through an
    epoch (a stopped run's last.pt) says so: its ``val_bpd`` is the last whole epoch's."""
    from .onnx import exporter_for, package_version

    facts: dict[str, Any] = {"architecture": config.to_dict()["model"]}
    facts["epochs"] = int(state["epoch"])
    batches = int(state.get("batch_in_epoch") or 0)
    if batches:
        facts["batches_into_next_epoch"] = batches
        epoch = facts["epochs"]
        echo(f"note: the checkpoint was saved {batches} batches into epoch {epoch + 1}; "
             f"its figures are epoch {epoch}'s", err=True)  # fmt: skip
    return facts | {
        "val_bpd": _float_or_none(state["metrics"].get("val_bpd")),
        "weights": weights,
        "checkpoint_sha256": sha256,
        "package_version": package_version(),
        "exporter": exporter_for(opset),
        "data": data,
    }


def _carried_selection(
    options: ExportOptions, latent_dim: int, this_sampler: dict[str, Any]
) -> Selection:
    """The selector of ``--selector-from``'s model, refused unless it was taught for this very
    sampler (export/selector.py)."""
    from .selector import carried_selection

    return carried_selection(options.selector_from, options.best_of, latent_dim, this_sampler)


def _write_manifest(
    folder: Path,
    model: VAE,
    options: ExportOptions,
    priors: dict[str, PriorInfo],
    default: str,
    source: dict[str, Any],
) -> None:
    """The manifest over the graphs and priors already in ``folder``, then the whole folder
    verified as bird-gen will read it, before the staging folder becomes the model."""
    from .onnx import ExportError, ir_version_for

    names = [ENCODER_FILE, DECODER_FILE] + [info.file for info in priors.values()]
    Manifest(
        image_size=model.cfg.image_size,
        latent_dim=model.cfg.latent_dim,
        likelihood=model.likelihood.name,
        opset=options.opset,
        ir_version=ir_version_for(options.opset),
        files={name: FileEntry.of(folder / name) for name in names},
        priors=priors,
        default_prior=default,
        default_temperature=_temperature(options, default, "standard"),
        default_noise=options.noise,
        source=source,
    ).save(folder)
    try:
        with BirdVAE(folder, threads=1) as vae:  # read as bird-gen reads it, every file
            vae.verify(full=True)
    except ModelFormatError as exc:  # export's own output: a bug here, not the user's mistake
        raise ExportError(f"the new model would be refused by bird-gen: {exc}") from exc


def _default_prior(options: ExportOptions, has_learned: bool) -> str:
    """The prior the manifest names as bird-gen's default, refused (UserError) before any
    work when the checkpoint or the flags cannot provide it."""
    default = options.default_prior or (
        "learned" if has_learned else "fitted" if options.prior_data else "standard"
    )
    if default == "learned" and not has_learned:
        raise UserError(
            "--default-prior learned: the checkpoint has no learned prior (train one with "
            "vae-train --stage prior --init CKPT)"
        )
    if default == "fitted" and not options.prior_data:
        raise UserError("--default-prior fitted: fitting the mixture needs --prior-data")
    return default


def _temperature(options: ExportOptions, default: str, prior: str) -> float:
    """The temperature ``prior`` draws at by default: --temperature for the default prior
    (baked into a learned prior's best-of selector too), 1 for the others."""
    return options.temperature if prior == default else 1.0


def _parity(model: VAE, folder: Path, splits: Splits | None) -> dict[str, Any]:
    """Compare both engines on held-out images (training ones if there are none), print the
    table, raise ExportError on a mismatch; return the figures for the manifest."""
    from .parity import IMAGE_TOL, LATENT_TOL, check_parity, format_table, max_diffs, verdict

    images = None if splits is None else splits.val if len(splits.val) else splits.train
    rows = check_parity(model, folder, images)
    echo_lines(format_table(rows))
    verdict(rows)
    return {
        "max_abs_diff": max_diffs(rows),
        "image_tolerance": IMAGE_TOL,
        "latent_tolerance_relative": LATENT_TOL,
        "inputs": rows[0].input,
    }


@dataclass(frozen=True)
class Guide:
    """The prior that autoguides the learned one, its weight, and what the manifest says of it."""

    prior: CodePrior
    guidance: float
    facts: dict[str, Any]


def _guide_args(guide: Guide | None) -> tuple[CodePrior | None, float]:
    """The guide prior and weight a sampler is built with; no guide: (None, 1)."""
    return (guide.prior, guide.guidance) if guide else (None, 1.0)


def _load_guide(
    options: ExportOptions,
    state: dict[str, Any],
    learned: CodePrior | None,
    checkpoint_sha256: str,
) -> Guide | None:
    """The --prior-guide checkpoint's prior, checked against the checkpoint being exported:
    a guide only means something over the same encoder's codes, and another prior than the
    one it guides (a prior guiding itself is the prior alone, at more sampling time)."""
    if options.guide is None:
        return None
    from birdvae.training.checkpoint import (
        CheckpointError,
        check_guide_checkpoint,
        learned_prior,
        load,
    )
    from birdvae.training.prior import GuideError

    if learned is None:
        raise UserError("--prior-guide: the checkpoint has no learned prior to guide")
    try:
        guide_state = load(options.guide)
    except CheckpointError as exc:
        raise UserError(f"--prior-guide: {exc}") from None
    guide_sha256 = sha256_of(options.guide)
    if guide_sha256 == checkpoint_sha256:
        raise UserError(
            f"--prior-guide {options.guide} is the checkpoint being exported, and a prior "
            "guiding itself is the prior alone; give the short guide run's best.pt"
        )
    try:
        guide = learned_prior(guide_state)
    except CheckpointError as exc:  # named, or the checkpoint being exported would be blamed
        raise UserError(f"--prior-guide {options.guide}: {exc}") from None
    if guide is None:
        raise UserError(f"--prior-guide {options.guide}: that checkpoint has no learned prior")
    try:
        check_guide_checkpoint(guide_state, guide, state, learned, options.guidance)
    except GuideError as exc:
        raise UserError(f"--prior-guide {options.guide}: {exc}") from exc
    cfg = guide.cfg
    facts = {"width": cfg.width, "blocks": cfg.blocks, "epochs": int(guide_state["epoch"]),
             "checkpoint_sha256": guide_sha256}  # fmt: skip
    return Guide(guide, options.guidance, facts)


@dataclass
class Judge:
    """The decoder whose pictures of the prior's draws the selector learns to choose by."""

    decode: Any
    name: str  # for the manifest: "decoder" or "decoder before the rater's term"


def _judging_decoder(state: dict[str, Any], model: VAE) -> Judge:
    """The exported decoder, unless a decoder stage on the way to this checkpoint learned the
    rater's term (``--rater-weight``): such a decoder pleases the rater in ways raters do not
    see, and a selector taught by its pictures chose those draws, which raters rated lower
    (docs/BENCHMARKS.md). Those checkpoints carry the VAE as it was before that stage
    (training/stages.py ``judge_weights``); its pictures choose the codes, and the exported
    decoder draws them."""
    from birdvae.training.checkpoint import JUDGE, build_vae

    if JUDGE not in state:
        return Judge(model.eval().decode_image, "decoder")
    judge = build_vae({"config": state["config"], "model": state[JUDGE]}, ema=False)
    echo("best of: the prior's birds are judged as the decoder before the rater's term "
         "drew them (carried in the checkpoint)")  # fmt: skip
    return Judge(judge.decode_image, "decoder before the rater's term")


def _selection(
    k: int, prior: CodePrior, guide: Guide | None, judge: Judge | None, temperature: float = 1.0
) -> Selection | None:
    """With --best-of K above 1, the selector the sampler graph will choose with: trained on
    the draws of this prior (and guide) at the learned prior's default temperature, decoded by
    the judging decoder."""
    if k == 1:
        return None
    if judge is None:
        raise ValueError("a selector is judged by a decoder: pass one whenever k > 1")
    from birdvae.training.selector import SELECTOR_DRAWS, scored_draws, train_selector

    from .sampler import sampler_module

    guide_prior, guidance = _guide_args(guide)
    sampler = sampler_module(prior, guide_prior, guidance)
    echo(f"best of {k}: rating {SELECTOR_DRAWS} of the prior's birds to train its selector")
    rate = load_rater()
    noise, scores = scored_draws(sampler, judge.decode, rate, prior.latent_dim,
                                 SELECTOR_DRAWS, seed=0, temperature=temperature)  # fmt: skip
    selection = train_selector(noise, scores, k)
    selection.facts["temperature"] = temperature
    selection.facts["judged_by"] = judge.name
    selection.facts["rater_sha256"] = RATER_SHA256  # load_rater refuses any other file
    facts = selection.facts
    echo(
        f"best of {k}: held-out correlation {facts['held_out_correlation']}, "
        f"{facts['share_of_best_of_k_gain']:.0%} of the true best of {k}'s score gain"
    )
    return selection


def _autoguidance_facts(guide: Guide | None) -> dict[str, Any] | None:
    """What the manifest says of a guide, which ``--selector-from`` compares too."""
    return None if guide is None else {"weight": guide.guidance, "guide": guide.facts}


def _export_learned(
    prior: CodePrior,
    folder: Path,
    opset: int,
    guide: Guide | None,
    selection: Selection | None = None,
) -> PriorInfo:
    """Write ``prior.onnx`` from the checkpoint's learned prior and prove its parity."""
    from birdvae.training.prior import solver_label

    from .parity import SAMPLER_TOL, check_sampler_parity, format_table, verdict
    from .sampler import export_sampler
    from .selector import sampler_noise_dim

    guide_prior, guidance = _guide_args(guide)
    export_sampler(prior, folder, opset, guide_prior, guidance, selection)
    rows = check_sampler_parity(prior, folder, guide_prior, guidance, selection=selection)
    echo_lines(format_table(rows))
    verdict(rows)
    cfg = prior.cfg
    source = {
        "model": "EDM denoiser MLP", "width": cfg.width, "blocks": cfg.blocks,
        "sampler": solver_label(cfg.steps),
        "parity_max_abs_diff": max(row.max_abs_diff for row in rows),
        "parity_tolerance_relative": SAMPLER_TOL,
    }  # fmt: skip
    if guide is not None:
        source["autoguidance"] = _autoguidance_facts(guide)
    if selection is not None:
        source["best_of"] = selection.facts
    kind, file = PRIOR_KINDS["learned"]
    noise_dim = sampler_noise_dim(prior.latent_dim, selection)
    return PriorInfo(kind=kind, file=file, noise_dim=noise_dim, source=source)


def _fit_prior(folder: Path, splits: Splits, components: int, seed: int) -> PriorInfo:
    """Fit the mixture to the training split's posterior means and write ``prior.npz``."""
    from .onnx import ExportError
    from .parity import encode_means, ort_session
    from .prior import fit_gaussian_mixture, held_out_fit

    encoder = ort_session(folder / ENCODER_FILE)  # opened once, for both splits
    latents = encode_means(encoder, splits.train)
    try:
        mixture = fit_gaussian_mixture(latents, components, seed=seed)
    except ValueError as exc:
        raise ExportError(f"fitting the prior failed: {exc}") from exc
    mixture.save(folder / MIXTURE_FILE)
    echo(f"prior: {components}-component Gaussian mixture fitted to the posterior means "
         f"of {len(latents)} training images")  # fmt: skip
    figures = {
        "train_images": len(latents),
        "iterations": mixture.iterations,
        "converged": mixture.converged,
        **held_out_fit(mixture, encode_means(encoder, splits.val)),
    }
    fitted, standard = (figures.get(f"val_nats_per_dim_{k}") for k in ("fitted", "standard"))
    if fitted is not None and standard is not None and fitted < standard:
        why = (
            f"{len(latents)} training codes are too few for a full covariance over "
            f"{latents.shape[1]} numbers; give more photos"
            if components == 1
            else f"it learned the {len(latents)} training codes by heart; give fewer "
            "--prior-components or more photos"
        )
        warnings.warn(
            f"the fitted mixture ({components} component{'s' if components > 1 else ''}) "
            f"describes the held-out photos' codes worse than N(0, I) does ({fitted} against "
            f"{standard} nats per dimension): {why}",
            stacklevel=2,
        )
    kind, file = PRIOR_KINDS["fitted"]
    return PriorInfo(kind=kind, file=file, components=components, source=figures)


def _real_images(
    checkpoint: Path, config: TrainConfig, prior_data: tuple[Path, ...]
) -> tuple[Splits | None, dict[str, Any] | None]:
    """The data sets' splits (uint8 arrays) from --prior-data, else from the folders the
    checkpoint was trained on when they exist here; (None, None) when neither is available.
    Second, what the manifest records of the data: names and a hash, never a local path.

    The train split is the checkpoint's own: same crop, size and validation share. A run folder's
    decoded-image cache is read when the checkpoint sits in one, never written: export writes
    nothing outside its -o folder.
    """
    from birdvae.training.data import describe, load_splits
    from birdvae.training.runfolder import CACHE

    sources = [Path(p) for p in prior_data]
    if not sources and config.data:
        if all(Path(d).is_dir() for d in config.data):
            sources = [Path(d) for d in config.data]
        else:
            missing = next(d for d in config.data if not Path(d).is_dir())
            echo(
                f"note: the checkpoint's data ({missing}) is not here, so parity is checked on "
                "random images; --prior-data DIR checks it on photos",
                err=True,
            )
    if not sources:
        return None, None
    cache = checkpoint.parent / CACHE
    splits = load_splits(
        sources, config.model.image_size, crop=config.crop, val_fraction=config.val_fraction,
        cache_dir=cache if cache.is_dir() else None, update_cache=False,
        box_margin=config.box_margin,
    )  # fmt: skip
    names = ", ".join(str(p) for p in sources)
    echo(f"images: {names} ({len(splits.train)} train, {len(splits.val)} val)")
    return splits, describe(sources, splits)


def _float_or_none(value: Any) -> float | None:
    """A checkpoint's figure for the manifest: None when missing or not finite (a diverged
    epoch's NaN), which JSON cannot hold."""
    return None if value is None or not math.isfinite(value) else float(value)
