"""One dataclass describes a training run, model included, and round-trips through JSON.

It is saved as ``config.json`` in the run folder and inside every checkpoint, so a checkpoint
alone is enough to rebuild its model, and ``--resume`` carries a run on with the config it was
started with.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from enum import IntEnum
from pathlib import Path
from typing import Any

from birdvae.runtime.errors import UserError
from birdvae.runtime.format import MAX_IMAGE_SIZE

# The autoguidance weight when a guide prior is given (vae-export --prior-guide, and the decoder
# stage's own --prior-guide): over one checkpoint, raters called 3.5's birds birds more often than
# 2's (+0.19 [+0.06, +0.31] of 2, 12 sheets), and 5 or 7 no more (docs/BENCHMARKS.md).
DEFAULT_GUIDANCE = 3.5
MAX_BLOCKS = 64  # residual blocks a level (and the learned prior's); the shipped models have 1
MAX_PRIOR_STEPS = 64  # solver steps of the exported sampler, each a network call per bird
MAX_VIEWS = 64  # augmented views of each photo in the prior's code bank, all held in memory

# The values each setting given as text may take. A hand-edited or hostile config.json or
# checkpoint with another is one line naming the setting when it is read, not a traceback (or a
# silently different run: any schedule but "constant" would train as cosine) once work starts.
ARCHITECTURES = ("resnet", "baseline")
LIKELIHOODS = ("logistic", "coupled_logistic", "bernoulli")  # training/likelihood.py's
STAGES = ("vae", "prior", "decoder")
PRESETS = ("default", "baseline")
CROPS = ("center", "squash")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
ANCHOR_SCALES = (2, 4, 8)  # pixels a side the decoder stage's anchor averages over
MAX_GRID = 1024  # birds in a training grid
# torch's generators take 64 bits, and each of a run's streams adds a small offset to the seed
# (--seed itself takes 31 bits; runs before 2026-12-04 took any int).
MAX_SEED = 2**63 - 1
MAX_CONFIG_BYTES = 1 << 20  # a run's config.json is about 2 KB
AUGMENTATIONS = ("color", "translation", "cutout")  # DiffAugment's; a setting joins any by commas
# What `vae-train --resume` may change in a run's config: how long and where it runs, never what
# it trains. Every other field must be the run folder's own.
RESUMABLE_FIELDS = ("epochs", "device", "precision", "compile", "threads")

CONFIG_VERSION = 2
# Context kept around a CUB bounding box, as a fraction of its longer side on each side
# (training/data.py crops with it). Rated blind at 32x32, photos cropped to the box itself read
# as birds more often than at this margin (1.57 against 1.32 of 2), yet a whole recipe trained
# on them drew birds raters could not tell from these (docs/experiments).
BOX_MARGIN = 0.15


class Stream(IntEnum):
    """The random streams of a run, each seeded with ``TrainConfig.seed`` plus its value, so
    that no two repeat one another; the values are part of what makes a run reproducible."""

    MAIN = 0  # initial weights, batches, views; and draws fixed for a run's life (grid codes)
    PRIOR_VAL = 1  # the prior stage's fixed validation inputs
    PRIOR_TRAIN_PROBE = 2  # the same over training codes, to watch overfitting
    PRIOR_GRID = 3  # the decoder stage's fixed learned-prior draws for its grids
    AUGMENT = 4  # the decoder stage's DiffAugment transforms
    SPECIES_NET = 5  # the perceptual distance's classifier
    RATER_VIEWS = 6  # the rater term's augmentations


# Process k of a distributed run seeds its global stream with seed + RANK_STRIDE * k, clear of
# every Stream (seed + k would repeat the streams above on ranks 1 to 6).
RANK_STRIDE = 1000


class ConfigError(UserError, ValueError):
    """Settings no run or model can be made from; the message names the setting."""


@dataclass
class ModelConfig:
    """The network and its likelihood. ``arch`` picks the family; the rest sizes it."""

    arch: str = "resnet"  # "resnet" (ours) or "baseline" (the blog post's VAE)
    image_size: int = 32
    latent_dim: int = 128
    # Both networks work from S/2 down to 4x4 and move to and from full resolution by pixel
    # (un)shuffle, so no convolution runs at full resolution, where it would cost the most.
    # Widths double at each halving, from ``*_width`` at S/2 up to ``*_max_width``.
    encoder_width: int = 32
    encoder_max_width: int = 256
    # The decoder draws what a person sees: at 48/192 instead of 32/128 raters called its
    # reconstructions birds clearly more often, for 2 to 4 ms more to decode 64 birds (int8,
    # 2 threads).
    decoder_width: int = 48
    decoder_max_width: int = 192
    blocks_per_level: int = 1
    # The code's shape inside the networks: False, one vector from a linear layer over the 4x4
    # features; True, a 4x4 grid of latent_dim/16 channels from a convolution, each cell
    # describing its own part of the photo. Either way the ONNX files see [N, latent_dim]. The
    # grid reconstructs a little better, but a code between two birds decodes to both birds
    # overlaid and a prior's draw to a patchwork, where the vector's decodes to one bird: new
    # birds need the vector (docs/TRAINING.md).
    spatial_latent: bool = False
    # "logistic" (discretized logistic), "coupled_logistic" (its colour channels coupled, as
    # PixelCNN++) or "bernoulli" (the blog's BCE)
    likelihood: str = "logistic"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        _reject_unknown(cls, data)
        config = cls(**data)
        config.check_sizes()  # its messages say the sizes' range
        return _check_choices(_checked(config), {"arch": ARCHITECTURES, "likelihood": LIKELIHOODS})

    def check_sizes(self) -> None:
        """Refuse sizes no network can have (a hand-edited or damaged config) with a line
        naming the setting, before torch fails on them somewhere inside the model."""
        sizes = ("image_size", "latent_dim", "encoder_width", "encoder_max_width",
                 "decoder_width", "decoder_max_width", "blocks_per_level")  # fmt: skip
        _check_counts(self, "model", dict.fromkeys(sizes, (1, 1 << 16)))
        if self.blocks_per_level > MAX_BLOCKS:  # each a module Python builds one by one
            raise ConfigError(f"model blocks_per_level must be at most {MAX_BLOCKS}, not "
                              f"{self.blocks_per_level}")  # fmt: skip
        if self.image_size > MAX_IMAGE_SIZE:  # every photo is decoded at this size first
            raise ConfigError(f"model image_size must be at most {MAX_IMAGE_SIZE} (what the "
                              f"model format allows), not {self.image_size}")  # fmt: skip


@dataclass
class PriorConfig:
    """The learned prior (``--stage prior``, training/prior.py): an EDM denoiser over codes."""

    width: int = 512
    blocks: int = 4
    dropout: float = 0.1
    steps: int = 10  # DPM-Solver++(2M) steps of the exported sampler, one network call each
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    views: int = 8  # augmented views (flips, shifts) of each training photo in the code bank
    # The share of training (and validation) photos whose codes the prior learns: those the
    # shipped rater (runtime/selection.py) rates highest, the pictures raters call birds; 1
    # learns every photo's code.
    keep: float = 1.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PriorConfig:
        _reject_unknown(cls, data)
        config = cls(**data)
        _check_counts(
            config,
            "prior",
            {
                "width": (1, 1 << 16),
                "blocks": (1, MAX_BLOCKS),
                "steps": (2, MAX_PRIOR_STEPS),
                "views": (1, MAX_VIEWS),
            },
        )
        config = _checked(config)
        _check_range(config, "dropout", 0, 1, below=True)
        _check_range(config, "keep", 0, 1, above=True)
        _check_range(config, "sigma_max", 0, math.inf, above=True)
        _check_range(config, "sigma_min", 0, config.sigma_max, above=True, below=True)
        _check_range(config, "rho", 0, math.inf, above=True)
        return config


@dataclass
class SharpenConfig:
    """The decoder stage (``--stage decoder``, training/sharpen.py): the decoder against a
    discriminator, its reconstruction terms and the adversarial term's schedule."""

    disc_width: int = 24
    disc_lr: float = 2e-4
    # Adam's betas for both networks: a low first moment, as GANs since DCGAN use, so neither
    # side keeps pushing along a direction the other has already answered.
    adam_betas: tuple[float, float] = (0.5, 0.9)
    gan_weight: float = 0.8  # times the adaptive weight (VQGAN's disc_weight)
    gan_start: int = 200  # steps the discriminator trains alone first
    l1_weight: float = 1.0
    feature_weight: float = 1.0  # feature matching on the discriminator's layers
    frequency_weight: float = 1.0  # focal frequency loss
    nll_weight: float = 0.05  # the likelihood's own loss, which keeps its scales fitted
    prior_share: float = 0.5  # of the fakes, the share decoded from learned-prior codes
    # Learned-prior codes have no photo to reconstruct, so only the discriminator shapes their
    # pictures, and it can be satisfied by confetti; this holds their half-resolution picture
    # to what the init decoder (the blurry but coherent one) draws for the same code.
    anchor_weight: float = 1.0
    # The anchor compares pictures averaged over this many pixels a side: 2 holds the init
    # decoder's outline too, 8 only its layout and colours. Rated blind over the same VAE and
    # prior, 8's samples were no more bird-like than 2's (docs/BENCHMARKS.md).
    anchor_scale: int = 2
    # An LPIPS-style distance between reconstructions and their photos in the feature maps of a
    # species classifier trained at the start of the stage (training/perceptual.py); 0: off.
    perceptual_weight: float = 0.0
    # A second discriminator, small heads over the same species net's feature maps (a projected
    # GAN), its adversarial term this many times the pixel discriminator's; 0: off.
    projected_weight: float = 0.0
    perceptual_epochs: int = 15
    augment: str = "color,translation,cutout"
    # A term that raises the shipped rater's score of learned-prior draws' pictures
    # (training/rater.py), this many times its hinge; 0: off. It needs a learned prior.
    rater_weight: float = 0.0
    # The hinge stops pushing a picture once it scores this: the mean rating of a bird people
    # recognise (photos themselves average 1.3 to 1.7 at 32x32), past which pulling a picture
    # further only finds the rater's blind spots.
    rater_target: float = 1.3
    rater_views: int = 2  # random views each picture is rated under, averaged
    rater_augment: str = "color,translation"  # what those views change (DiffAugment's names)
    # A --stage prior run over the same VAE whose prior autoguides the learned-prior draws among
    # the fakes, at weight ``guidance``, as vae-export --prior-guide guides bird-gen's draws: the
    # decoder then learns the codes it will be given. "": the plain sampler.
    prior_guide: str = ""
    guidance: float = DEFAULT_GUIDANCE  # with a prior_guide; 1: none

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SharpenConfig:
        _reject_unknown(cls, data)
        data = dict(data)
        if "adam_betas" in data:  # JSON has no tuples
            data["adam_betas"] = tuple(data["adam_betas"])
        config = cls(**data)
        _check_counts(config, "sharpen", {"disc_width": (1, 1 << 16)})
        config = _checked(config)
        if config.guidance < 1:
            raise ConfigError(f"SharpenConfig guidance must be at least 1, not {config.guidance}")
        for name in ("augment", "rater_augment"):
            unknown = set(filter(None, getattr(config, name).split(","))) - set(AUGMENTATIONS)
            if unknown:
                raise ConfigError(
                    f"SharpenConfig {name} holds {', '.join(sorted(unknown))}; "
                    f"choose among {', '.join(AUGMENTATIONS)}, joined by commas"
                )
        if config.anchor_scale not in ANCHOR_SCALES:  # 0 or 10**6 failed inside a pooling
            scales = ", ".join(map(str, ANCHOR_SCALES))
            raise ConfigError(
                f"SharpenConfig anchor_scale must be one of {scales}, not {config.anchor_scale}"
            )
        if config.rater_views < 1:
            raise ConfigError(f"rater_views must be at least 1, not {config.rater_views}")
        _check_range(config, "disc_lr", 0, math.inf, above=True)
        _check_range(config, "prior_share", 0, 4)  # --prior-share's range
        if not all(beta < 1 for beta in config.adam_betas):  # 1 would never forget a gradient
            raise ConfigError(f"SharpenConfig adam_betas must each be below 1, not "
                              f"{list(config.adam_betas)}")  # fmt: skip
        return config


@dataclass
class TrainConfig:
    """Everything a run depends on. Presets fill it; command-line flags override it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    # What this run trains: "vae" (encoder and decoder), "prior" (the learned prior on the frozen
    # encoder's codes) or "decoder" (the decoder sharpened against a discriminator, encoder
    # frozen). Later stages start from ``init``, an earlier stage's checkpoint.
    stage: str = "vae"
    init: str = ""
    prior: PriorConfig = field(default_factory=PriorConfig)
    sharpen: SharpenConfig = field(default_factory=SharpenConfig)
    preset: str = "default"
    data: list[str] = field(default_factory=list)  # data sets trained on together
    val_fraction: float = 0.1
    crop: str = "center"  # "center" (square centre crop) or "squash" (whole photo resized)
    box_margin: float = BOX_MARGIN  # context around a CUB photo's bounding box
    epochs: int = 100
    batch_size: int = 64
    lr: float = 2e-3
    schedule: str = "cosine"  # "cosine" (after linear warm-up) or "constant"
    # The cosine ends at this share of the peak rate rather than 0, so the last epochs still learn.
    lr_floor: float = 0.02
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 1.0  # on the gradient of nats per sub-pixel
    ema_decay: float = 0.999
    kl_warmup_epochs: int = 10
    # The KL term's final weight (beta). Below 1 the code carries more of each photo: sharper
    # reconstructions, at some cost in bits/dim (always reported for the true ELBO, beta = 1).
    kl_weight: float = 1.0
    # A coupled likelihood's colour coupling is off this many epochs, then ramps in over as many
    # (see VAETrainer.coupling_weight); no effect on other likelihoods.
    coupling_warmup_epochs: int = 10
    free_bits: float = 0.0  # nats per latent dimension, averaged over the batch
    flip: bool = True
    shift: int = 2  # random translation of each training image, in pixels
    seed: int = 0
    device: str = "auto"
    # "auto": bfloat16 autocast where the hardware does bf16 natively, else float32 (precision.py)
    precision: str = "auto"
    compile: bool = False
    # torch's CPU threads (0: its default, one per core). Kept with the run, so a resume
    # computes as the run did (a sum over other threads rounds otherwise) unless told otherwise.
    threads: int = 0
    max_bad_steps: int = 20  # consecutive non-finite steps before the run stops
    grid_size: int = 64  # birds in each PNG grid
    config_version: int = CONFIG_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        _check_mapping(cls, data)
        values = upgrade(dict(data))
        _reject_unknown(cls, values)
        values["model"] = ModelConfig.from_dict(values.get("model", {}))
        values["prior"] = PriorConfig.from_dict(values.get("prior", {}))
        values["sharpen"] = SharpenConfig.from_dict(values.get("sharpen", {}))
        config = _check_choices(_checked(cls(**values)), {
            "stage": STAGES, "preset": PRESETS, "crop": CROPS, "schedule": SCHEDULES,
            "device": DEVICES, "precision": PRECISIONS,
        })  # fmt: skip
        # ema_decay 0: no average; 1 would never move from the start.
        _check_range(config, "ema_decay", 0, 1, below=True)
        for name in ("epochs", "batch_size", "max_bad_steps"):
            if getattr(config, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(config, name)}")
        # Before anything is allocated: each epoch draws grid_size birds at once.
        _check_counts(config, "TrainConfig", {"grid_size": (1, MAX_GRID), "seed": (0, MAX_SEED)})
        _check_range(config, "lr", 0, math.inf, above=True)
        _check_range(config, "lr_floor", 0, 1)
        _check_range(config, "box_margin", 0, 1)
        _check_range(config, "val_fraction", 0, 1, below=True)
        return config

    def to_json(self) -> str:
        """``config.json`` as a run folder keeps it (the loop writes it atomically)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.from_dict(json.loads(read_config_text(Path(path))))


def read_config_text(path: Path) -> str:
    """A config.json's text, refused unread when it is larger than any config (a few KB) or
    not a plain file: an 8 GB file was read whole, and a pipe never ends."""
    if not path.is_file():
        raise ConfigError(f"{path} is not a file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than a config ({MAX_CONFIG_BYTES >> 10} KB at most)")
    return path.read_text()


def upgrade(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config of any earlier version in the current version's terms, so an old run
    resumes (and an old checkpoint exports) exactly as it trained.

    Version 1 (no ``config_version``) names one data folder as a string, and the fields it
    lacks mean beta 1, float32 and a global code.
    """
    version = values.get("config_version", 1)
    if type(version) is not int or version < 1:
        raise ConfigError(f"config_version must be a whole number from 1, not {version!r}")
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"config_version {version} is newer than this bird-vae reads ({CONFIG_VERSION})"
        )
    if version == 1:
        values.setdefault("kl_weight", 1.0)
        values.setdefault("precision", "fp32")
        model = values.get("model", {})
        _check_mapping(ModelConfig, model)
        values["model"] = {"spatial_latent": False, **model}
        data = values.get("data", "")
        if data is None or isinstance(data, str):  # one folder, or none
            values["data"] = [data] if data else []
    values["config_version"] = CONFIG_VERSION
    return values


def _check_counts(config: Any, section: str, bounds: dict[str, tuple[int, int]]) -> None:
    """Refuse a size outside its bounds (a hand-edited or hostile config) by name, before any
    module is built: each block or view is work Python does one by one, and a width of 0 makes
    blocks that count no weights."""
    for name, (low, high) in bounds.items():
        value = getattr(config, name)
        if type(value) is not int or not low <= value <= high:
            raise ConfigError(f"{section} {name} must be a whole number from {low} to {high}, "
                              f"not {value!r}")  # fmt: skip


def _checked(config: Any) -> Any:
    """``config`` once each plain field holds its default's type (a float may be given as a
    whole number; every number finite, every count at least 0), so a hand-edited or hostile
    config.json or checkpoint is one line naming the field, not a TypeError deep in training."""
    for f in fields(config):
        value = getattr(config, f.name)
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        if is_dataclass(default):
            continue
        if isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif isinstance(default, tuple):
            ok = isinstance(value, tuple) and len(value) == len(default)
            ok = ok and all(_is_number(v, float) for v in value)
        else:
            ok = _is_number(value, type(default)) if type(default) in (int, float) else (
                type(value) is type(default))  # fmt: skip
        if not ok:
            kind = {int: "a count", float: "a number, at least 0", str: "text",
                    bool: "true or false", list: "a list of text",
                    tuple: "a pair of numbers"}[type(default)]  # fmt: skip
            raise ConfigError(f"{type(config).__name__} {f.name} must be {kind}, not {value!r}")
    return config


def _check_choices(config: Any, choices: dict[str, tuple[str, ...]]) -> Any:
    """``config`` once each named text setting holds one of its values."""
    for name, allowed in choices.items():
        value = getattr(config, name)
        if value not in allowed:
            raise ConfigError(f"{type(config).__name__} {name} must be one of "
                              f"{', '.join(allowed)}, not {value!r}")  # fmt: skip
    return config


def _is_number(value: Any, kind: type) -> bool:
    """A finite int (a count) or float (an int is one too), at least 0; never a bool. Every
    number a config holds is a count, a rate, a weight, a share or a noise level: a negative
    one (a negative KL weight, say) would train something else without a word."""
    if type(value) is int:
        return value >= 0
    return kind is float and type(value) is float and math.isfinite(value) and value >= 0


def _check_range(
    config: Any, name: str, low: float, high: float, *, above: bool = False, below: bool = False
) -> None:
    """Refuse a number outside [low, high] by name; ``above``/``below`` leave out that end."""
    value = getattr(config, name)
    if (value <= low if above else value < low) or (value >= high if below else value > high):
        bounds = [f"above {low}" if above else f"at least {low}"]
        if math.isfinite(high):
            bounds.append(f"below {high}" if below else f"at most {high}")
        raise ConfigError(f"{type(config).__name__} {name} must be {' and '.join(bounds)}, "
                          f"not {value}")  # fmt: skip


def _check_mapping(cls: type, data: Any) -> None:
    """A damaged or hand-made file's settings that are not a mapping (a string, a list) are
    named as such, not left to Python's words for a failed dict()."""
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{cls.__name__} must be a mapping of settings, not {kind}")


def _reject_unknown(cls: type, data: dict[str, Any]) -> None:
    """A config from a newer or foreign file fails loudly instead of dropping settings."""
    _check_mapping(cls, data)
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {sorted(unknown)}")


def preset(name: str) -> TrainConfig:
    """The named starting point. ``baseline`` reproduces the blog post this project grew from."""
    if name == "default":
        return TrainConfig()
    if name == "baseline":
        return TrainConfig(
            model=ModelConfig(
                arch="baseline",
                image_size=32,
                latent_dim=180,
                likelihood="bernoulli",
                spatial_latent=False,
            ),
            preset="baseline",
            crop="squash",
            batch_size=32,
            lr=1e-3,
            weight_decay=0.0,
            warmup_steps=0,
            schedule="constant",
            grad_clip=0.0,
            ema_decay=0.0,
            kl_warmup_epochs=0,
            kl_weight=1.0,
            flip=False,
            shift=0,
        )
    raise ConfigError(f"unknown preset {name!r} (choose {' or '.join(PRESETS)})")


def stage_config(init: TrainConfig, stage: str, init_path: str) -> TrainConfig:
    """The config a later stage starts from: the init run's model and data, the stage's own
    optimisation defaults, and this machine's device, precision and threads (a VAE trained on a
    GPU box would otherwise ask this CPU box for CUDA); a stage's own settings (prior width, loss
    weights) are kept from an init run of the same stage, so that it carries that run on."""
    if stage not in STAGES[1:]:
        raise ValueError(f"unknown stage {stage!r} (choose {', '.join(STAGES)})")
    defaults: dict[str, Any] = {
        # An epoch is one pass over views x photos codes, batch 256 of them a step.
        "prior": dict(epochs=150, batch_size=256, lr=1e-3, warmup_steps=300, weight_decay=0.0,
                      ema_decay=0.999, grad_clip=1.0, schedule="cosine"),
        # Never compiled (DecoderTrainer refuses it), whatever the VAE run was.
        "decoder": dict(epochs=40, batch_size=32, lr=2e-4, warmup_steps=100, weight_decay=0.0,
                        ema_decay=0.999, grad_clip=0.0, schedule="cosine", compile=False),
    }[stage]  # fmt: skip
    machine = dict(
        device=TrainConfig.device, precision=TrainConfig.precision, threads=TrainConfig.threads
    )  # the defaults
    # From a run of another stage, the stage's own section starts at today's defaults: the
    # init's holds the defaults of the day it trained (an older run's autoguidance weight, say).
    # The prior section a decoder stage starts from stays: it describes the carried prior.
    own: dict[str, Any] = {}
    if init.stage != stage:
        own = {"prior": PriorConfig()} if stage == "prior" else {"sharpen": SharpenConfig()}
    return replace(init, stage=stage, init=init_path, **defaults, **machine, **own)


def override(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy with the given top-level, model, prior or sharpen fields changed (``prior_`` or
    ``sharpen_`` before a field of those); ``None`` values are ignored."""
    changes = {k: v for k, v in changes.items() if v is not None}
    model_keys = {f.name for f in fields(ModelConfig)}
    model_changes = {k: changes.pop(k) for k in list(changes) if k in model_keys}
    prior_changes = {k[6:]: changes.pop(k) for k in list(changes) if k.startswith("prior_")}
    sharpen = {k[8:]: changes.pop(k) for k in list(changes) if k.startswith("sharpen_")}
    return replace(
        config,
        model=replace(config.model, **model_changes),
        prior=replace(config.prior, **prior_changes),
        sharpen=replace(config.sharpen, **sharpen),
        **changes,
    )
