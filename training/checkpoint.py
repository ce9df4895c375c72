"""Checkpoints: plain tensors and JSON-able values, written atomically, read with
``weights_only=True`` (a checkpoint is data, never code), and verified before they are used:
every member's zip CRC (torch.load does not check them, so a bit-rotted file would load as
garbage or NaN weights) and every floating-point weight finite.

A checkpoint holds ``config`` (TrainConfig as a dict), ``model`` and ``ema`` state dicts,
``optimizer``, ``scheduler``, ``epoch`` (epochs completed), ``step``, ``best_score`` (the
best validation score so far, by the stage's measure: bits/dim for the VAE, the held-out loss
for the prior, minus the epoch for the decoder stage, whose newest weights are its best),
``rng`` (torch CPU and CUDA generator states), ``metrics`` (the last epoch's figures) and
``format`` (this module's version). ``best_epoch`` says which epoch's weights ``best.pt``
holds; with ``metrics`` it lets a resume replay what a crash cut off (``runfolder.py``).
"""

from __future__ import annotations

import copy
import io
import math
import pickle
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from birdvae.runtime import durable
from birdvae.runtime.errors import UserError, first_line

from .config import TrainConfig
from .model import VAE
from .prior import CodePrior, GuideError, check_guide
from .sharpen import Discriminator

CHECKPOINT_FORMAT = 1
MAX_PARAMETERS = 1 << 28  # a gigabyte of float32 weights, four with Adam's state and gradients
REQUIRED_KEYS = ("format", "config", "model", "epoch")
RESUME_KEYS = ("optimizer", "scheduler", "step", "best_score", "rng")
# The VAE as it was before any stage learned the rater's term (stages.judge_weights), which a
# ``vae-export --best-of`` selector judges draws by.
JUDGE = "judge"
PRIOR_EMA = "prior_ema"  # the learned prior's weight average, what export samples with
# The decoder stage's own networks: the decoder it holds prior draws to, and its perceptual
# term's species net and projected heads (decoder_stage.py).
ANCHOR, SPECIES_NET, PROJECTED = "anchor", "species_net", "projected"
# Every key that holds a network's (or an optimiser's) state, checked when a checkpoint is read.
WEIGHT_KEYS = (
    "model", "ema", "optimizer", "prior", PRIOR_EMA, "discriminator", "d_optimizer", JUDGE,
    ANCHOR, SPECIES_NET, PROJECTED,
)  # fmt: skip
# Keys that checkpoints of every stage gained within format 1, each with what its absence meant:
# ``upgrade`` fills them in, so the loop, the run folder and export read ``state[key]`` and older
# checkpoints resume as they ran. A stage's own keys keep their defaults beside the code that
# reads them (prior_stage.py, decoder_stage.py: the rater a stage followed, its augmentation's
# random state).
ADDED_KEYS: dict[str, Any] = {
    "ema": None,  # no weight average kept
    "ema_n": 0,
    "prior_ema_n": 0,
    "batch_in_epoch": 0,  # saved at an epoch's end
    "partial": {},  # no unfinished epoch's sums
    "best_epoch": None,  # which epoch best.pt holds is not known
    "metrics": {},
    "data_sha256": None,  # the photos were not fingerprinted, so a resume cannot check them
}
# Keys that checkpoints of format 1 once held under other names: the best score was
# ``best_val_bpd``, the VAE stage's measure, whatever the stage scored by.
RENAMED_KEYS = {"best_val_bpd": "best_score"}


class CheckpointError(UserError, ValueError):
    """A file that is not a readable bird-vae checkpoint; the message says why."""


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write through a locked temporary beside ``path``: a crash or kill at any moment leaves
    either the old file or the new one, never half of one.

    The checkpoint is serialised in memory first (tens of MB): written by torch.save straight
    into the file, a full disk comes back as a RuntimeError from torch's C++ writer instead of
    the OSError that names the file and becomes one ``error:`` line."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getbuffer()
    durable.write_atomic(Path(path), lambda handle: handle.write(data))


def verify_crcs(path: Path) -> None:
    """Read every member of the zip archive and check its CRC; raise CheckpointError."""
    other = "last.pt" if Path(path).name == "best.pt" else "best.pt"
    advice = f"use the run's {other} or another copy"
    try:
        with zipfile.ZipFile(path) as archive:
            # torch.save stores every member as it is. A compressed one is not vae-train's,
            # and its size is unbounded by the file's: 16 MB deflated to a 6 GB tensor.
            members = archive.infolist()
            packed = [i.filename for i in members if i.compress_type != zipfile.ZIP_STORED]
            bad = None if packed else archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is damaged ({type(exc).__name__}); {advice}") from exc
    if packed:
        raise CheckpointError(
            f"{path} holds a compressed member ({packed[0].rsplit('/', 1)[-1]!r}); "
            "torch.save compresses none, so it is not a vae-train checkpoint"
        )
    if bad is not None:
        raise CheckpointError(
            f"{path} is damaged: its stored {bad.rsplit('/', 1)[-1]!r} fails its CRC check "
            f"(bit rot or an incomplete copy); {advice}"
        )


# What a tensor of a checkpoint may be: dense, in memory, of a dtype the networks and their
# optimisers use. A sparse, meta, nested or quantized tensor, or a float8 one, made torch's
# checks below fail with a dispatcher's traceback.
TENSOR_DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16,
                           torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
                           torch.bool})  # fmt: skip


def _odd_tensor(value: Any) -> str | None:
    """What is wrong with the first tensor in ``value`` (nested dicts, lists) that is not a plain
    one holding its own elements, or None. A tensor expanded from one stored number (stride 0)
    costs nothing on disk and any memory once computed with: a 9.7 MB checkpoint holding one
    of 3e9 elements took 21 GB in the finite check."""
    if isinstance(value, dict):
        return next(filter(None, map(_odd_tensor, value.values())), None)
    if isinstance(value, (list, tuple)):
        return next(filter(None, map(_odd_tensor, value)), None)
    if not isinstance(value, torch.Tensor):
        return None
    if value.layout != torch.strided or value.is_nested or value.is_quantized:
        return "a sparse, nested or quantized tensor"
    if value.is_meta:
        return "a tensor with no values (on the meta device)"
    if value.dtype not in TENSOR_DTYPES:
        return f"a tensor of {value.dtype}"
    stored = value.untyped_storage().nbytes()
    needed = value.numel() * value.element_size()
    if any(stride < 0 for stride in value.stride()) or needed > stored:
        return f"a tensor of {value.numel()} elements over {stored} bytes (expanded, not stored)"
    return None


def _non_finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and not bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return any(_non_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(item) for item in value)
    return isinstance(value, float) and math.isnan(value)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and sanity-check a checkpoint; raise CheckpointError with a clear reason."""
    path = Path(path)
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a file (a folder, pipe or device)"
        raise CheckpointError(f"checkpoint {path} {what}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(
            f"{path} is not a readable checkpoint: corrupt, truncated or another format"
        )
    verify_crcs(path)
    try:
        with warnings.catch_warnings():  # a sparse tensor's, refused below in one line
            warnings.filterwarnings("ignore", "Validating sparse tensor invariants")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text suggests weights_only=False, which would run code from the file.
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values; it is not loaded"
        ) from exc
    except (zipfile.BadZipFile, RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint: torch could not read it as one "
            f"({type(exc).__name__}); is it a vae-train checkpoint?"
        ) from exc
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a bird-vae checkpoint (missing keys)")
    if type(state["format"]) is not int or state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format']!r}, expected {CHECKPOINT_FORMAT}"
        )
    odd = _odd_tensor(state)
    if odd is not None:
        raise CheckpointError(f"{path} holds {odd}; vae-train writes none, so it is not loaded")
    for key in WEIGHT_KEYS:
        if not isinstance(state.get(key), (dict, type(None))):
            raise CheckpointError(f"{path} holds {key} that are not a network's weights")
        if _non_finite(state.get(key)):
            raise CheckpointError(f"{path} holds non-finite (NaN or infinite) {key} weights")
    if type(state["epoch"]) is not int or state["epoch"] < 0:
        raise CheckpointError(f"{path} has an epoch of {state['epoch']!r}, not a count")
    metrics = state.get("metrics")
    if metrics is not None and (
        not isinstance(metrics, dict)
        or not all(v is None or isinstance(v, (int, float)) for v in metrics.values())
    ):
        raise CheckpointError(f"{path} holds metrics that are not numbers")
    return upgrade(state)


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every key in ADDED_KEYS, those it lacks (or holds as None) at the value
    their absence meant, and keys since renamed under their names now."""
    for old, new in RENAMED_KEYS.items():
        if old in state and new not in state:
            state[new] = state.pop(old)
    for key, default in ADDED_KEYS.items():
        if state.get(key) is None:
            state[key] = copy.copy(default)
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(saved)``, refused (ValueError) when a moment's shape is not
    its weight's: torch loads it as it is, and the resumed run failed in its first step."""
    weights = [weight for group in optimizer.param_groups for weight in group["params"]]
    indices = [index for group in saved["param_groups"] for index in group["params"]]
    if len(indices) != len(weights):
        raise ValueError(f"its optimizer holds {len(indices)} weights, the run {len(weights)}")
    moments = saved["state"]
    if not isinstance(moments, dict) or not all(isinstance(m, dict) for m in moments.values()):
        raise ValueError("its optimizer's state is not a table of each weight's moments")
    for index, weight in zip(indices, weights):
        for name, value in moments.get(index, {}).items():
            if name == "step":  # Adam's count, one number
                continue
            if isinstance(value, torch.Tensor) and value.shape != weight.shape:
                shapes = f"{list(value.shape)}, the weight {list(weight.shape)}"
                raise ValueError(f"its optimizer's {name} of a weight has shape {shapes}")
    optimizer.load_state_dict(saved)


def check_resumable(state: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint that cannot carry a run on (one made for export or by hand)."""
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} cannot be resumed: it holds no {', '.join(missing)} state "
            "(evaluate or export it, or start a new run)"
        )


def config_of(state: dict[str, Any]) -> TrainConfig:
    """A checkpoint's config, refused (CheckpointError) when it is malformed or describes
    networks larger than a run may build: a config is as hostile as the rest of the file."""
    try:
        config = TrainConfig.from_dict(state["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint config is invalid: {exc}") from exc
    try:
        parameters = parameter_count(config, config.stage == "prior" or carries_prior(state))
    except (ValueError, RuntimeError) as exc:  # sizes no module accepts
        raise CheckpointError(f"checkpoint describes an invalid model: {exc}") from exc
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(
            f"checkpoint config describes networks of {parameters:,} parameters, more than "
            f"the {MAX_PARAMETERS:,} a run may have; it is not built"
        )
    return config


def parameter_count(config: TrainConfig, prior: bool) -> int:
    """The weights of the networks a run of ``config`` builds (the VAE; the learned prior when
    ``prior``; the decoder stage's discriminator), counted on torch's meta device or from the
    sizes: shapes only, so an architecture too large for memory is refused before anything is
    allocated."""
    with torch.device("meta"):
        modules: list[torch.nn.Module] = [VAE(config.model)]
        if prior:
            modules.append(CodePrior(config.model.latent_dim, config.prior))
        count = sum(p.numel() for module in modules for p in module.parameters())
    if config.stage == "decoder":
        count += Discriminator.parameter_count(config.model.image_size, config.sharpen.disc_width)
    return count


def _shapes_differ(build: Any, weights: Any) -> str | None:
    """Why ``weights`` cannot load into the module ``build()`` makes, found on the meta device
    before the module is built for real (a config that disagrees with its own weights would
    otherwise allocate the config's sizes first), or None when every name and shape fits."""
    if not isinstance(weights, dict):
        return "they are not a state dict"
    if not all(isinstance(name, str) for name in weights):
        return "some of their names are not text"
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in build().state_dict().items()}
    for name, shape in expected.items():
        given = weights.get(name)
        if not isinstance(given, torch.Tensor):
            return f"{name} is missing"
        if tuple(given.shape) != shape:
            return f"{name} is {tuple(given.shape)}, the config says {shape}"
    extra = sorted(set(weights) - set(expected))
    return f"{extra[0]} is not in the model" if extra else None


def load_model(path: Path, ema: bool = True) -> tuple[VAE, TrainConfig, dict[str, Any]]:
    """Rebuild the model a checkpoint describes, in eval mode on the CPU.

    ``ema`` picks the weight average when the checkpoint has one (it is what evaluation,
    samples and export use). Returns the model, its config and the raw checkpoint.
    """
    state = load(path)
    return build_vae(state, ema), config_of(state), state


def vae_weights(state: dict[str, Any], ema: bool = True) -> dict[str, Any]:
    """The VAE weights a checkpoint's users read: its weight average when asked for and
    present (what evaluation, samples, export and later stages use), else the raw weights."""
    return state["ema"] if ema and state.get("ema") else state["model"]


def check_guide_checkpoint(
    guide_state: dict[str, Any],
    guide: CodePrior,
    state: dict[str, Any],
    prior: CodePrior,
    guidance: float,
) -> None:
    """Raise GuideError unless ``guide`` (from ``guide_state``) can autoguide ``prior``, the
    learned prior ``state`` carries: over the same encoder's codes, fitting check_guide, and
    not the prior itself, which would only be the prior at more sampling time."""
    ours, theirs = (
        {k: v for k, v in vae_weights(s).items() if k.startswith("encoder.")}
        for s in (state, guide_state)
    )
    if not same_weights(ours, theirs, atol=1e-5):
        raise GuideError(
            "its codes come from another encoder; train the guide with --stage prior --init "
            "the VAE checkpoint the learned prior started from"
        )
    if same_weights(guide.state_dict(), prior.state_dict()):
        raise GuideError(
            "it holds the prior it would guide, and a prior guiding itself is the prior alone; "
            "give the short guide run's best.pt"
        )
    check_guide(prior, guide, guidance)


def same_weights(first: dict[str, Any], second: dict[str, Any], atol: float = 0.0) -> bool:
    """Whether two state dicts hold the same tensors (within ``atol``)."""
    return first.keys() == second.keys() and all(
        first[k].shape == second[k].shape
        and torch.allclose(first[k].float(), second[k].float(), rtol=0.0, atol=atol)
        for k in first
    )


def build_vae(state: dict[str, Any], ema: bool = True) -> VAE:
    """The VAE a loaded checkpoint describes, in eval mode on the CPU; CheckpointError when its
    config or weights do not make one."""
    config = config_of(state).model  # its networks built once already, on the meta device
    weights = vae_weights(state, ema)
    differ = _shapes_differ(lambda: VAE(config), weights)
    if differ:
        raise CheckpointError(f"checkpoint weights do not fit its model: {differ}")
    model = VAE(config)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint weights do not fit its model: {first_line(exc)}"
        ) from exc
    return model.eval()


def carries_prior(state: dict[str, Any]) -> bool:
    """Whether a checkpoint holds a learned prior's weights (a prior or later stage's)."""
    return any(isinstance(state.get(key), dict) and state[key] for key in ("prior", PRIOR_EMA))


def learned_prior(state: dict[str, Any]) -> CodePrior | None:
    """The learned prior a checkpoint carries (its weight average), in eval mode, or None."""
    weights = state.get(PRIOR_EMA) or state.get("prior")
    if weights is None:
        return None
    config = config_of(state)
    differ = _shapes_differ(lambda: CodePrior(config.model.latent_dim, config.prior), weights)
    if differ:
        raise CheckpointError(f"the checkpoint's learned prior does not fit its config: {differ}")
    prior = CodePrior(config.model.latent_dim, config.prior)
    try:
        prior.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"the checkpoint's learned prior does not fit its config: {first_line(exc)}"
        ) from exc
    return prior.eval()
