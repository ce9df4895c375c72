"""The whole runtime as one class over a model folder: numpy in, numpy out, no torch.

Only numpy and the standard library are imported here at start-up: onnxruntime is imported when
the first graph is needed, so reading a model's facts (``bird-gen info``) never pays for it. The
manifest and the files' sizes are checked on construction, each file's sha256 when that file is
first read, and each graph's signature against the format before it is used, so a wrong or
damaged model fails with one ModelFormatError that says what is wrong instead of an onnxruntime
error deep inside a run.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from . import selection
from .cpus import check_threads
from .errors import ArgumentError, check_whole, first_line
from .format import (
    DECODER_FILE,
    DECODER_INPUT,
    DECODER_NOISE_OUTPUTS,
    DECODER_OUTPUTS,
    ENCODER_FILE,
    ENCODER_INPUT,
    ENCODER_OUTPUTS,
    MANIFEST_FILE,
    PRIOR_NAMES,
    SAMPLER_FILE,
    SAMPLER_INPUT,
    SAMPLER_OUTPUT,
    Manifest,
    ModelFormatError,
    PriorInfo,
    read_verified,
    short_number,
    verify_model_dir,
)
from .graphs import check_model_graph, open_session, outputs_pixel_noise, run_graph
from .pixels import check_noise, draw_pixels
from .prior import (
    Draws,
    GaussianMixture,
    LearnedPrior,
    Prior,
    StandardNormal,
    check_temperature,
)

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from onnxruntime import InferenceSession

PathLike = Union[str, Path]

SHIPPED_MODELS = ("birds32", "birds64")
DEFAULT_MODEL = "birds32"
DEFAULT_BATCH = 64
# Numbers in one array a graph run takes or makes (64 MB of float32): a batch may be as large
# as fits, 5461 birds at 32x32, so memory is bounded before any is allocated.
MAX_BATCH_VALUES = 1 << 24
# Numbers in one array ``sample`` or ``interpolate`` returns (1 GiB of float32: 87,381 birds at
# 32x32): a request for more is refused before any work; ``sample_batches`` has no bound.
MAX_RESULT_VALUES = 1 << 28
# The largest code value the decoder is given: the priors' draws at the highest temperature
# (MAX_TEMPERATURE) stay within 100, and far beyond a graph's arithmetic overflows.
MAX_CODE = 1e4
# How far an image may stray outside [0, 1]: a bicubic or Lanczos resize overshoots by a few
# hundredths at sharp edges, which the encoder takes in its stride; 0-255 pixels and images
# normalised to mean 0 are far outside.
IMAGE_SLACK = 0.05


@dataclass(frozen=True)
class Sampling:
    """How birds are drawn, every default resolved and checked once (``BirdVAE.sampling``):
    the same settings draw the same birds, whatever ``batch`` is."""

    prior: str
    temperature: float
    noise: float
    seed: int | None
    batch: int = DEFAULT_BATCH
    best_of: int = 1  # candidates drawn for each bird, the most recognisable kept (selection.py)

    def __str__(self) -> str:
        text = (
            f"seed {self.seed}, {self.prior} prior, temperature {self.temperature:g}, "
            f"noise {self.noise:g}"
        )
        return text + (f", best of {self.best_of}" if self.best_of > 1 else "")


def shipped_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """A real folder holding a shipped model, wherever the package was installed from."""
    if name not in SHIPPED_MODELS:
        shipped = ", ".join(SHIPPED_MODELS)
        raise ArgumentError(f"{name!r} is not a shipped model (shipped: {shipped})")
    resource = files("birdvae.models").joinpath(name)
    if not resource.joinpath(MANIFEST_FILE).is_file():
        raise ModelFormatError(
            f"the shipped model {name} is not in this installation; pass a model folder instead"
        )
    return real_folder(resource)


def real_folder(resource: Traversable) -> Path:
    """A path onnxruntime can open: the resource itself on disk, else a copy for this process.

    Wheels and editable installs keep package data on disk. A zip import (zipapp) does not, and
    ``importlib.resources.as_file`` extracts folders only from Python 3.12 on, so the model's few
    files are copied into a temporary folder removed at exit.
    """
    if isinstance(resource, Path):
        return resource
    import atexit  # only a zip import gets here
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=f"birdvae-{resource.name}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for child in resource.iterdir():
        if child.is_file():
            (folder / child.name).write_bytes(child.read_bytes())
    return folder


def resolve_model(name_or_path: PathLike) -> Path:
    """A shipped model's name (``birds32``) or else a model folder's path. A name wins over a
    folder of the same name in the working directory: ``./birds32`` reaches that one."""
    name_or_path = path_argument(name_or_path, "the model's name or path")
    if name_or_path in SHIPPED_MODELS:
        return shipped_model_dir(name_or_path)
    return Path(name_or_path)


def path_argument(value: Any, what: str) -> str:
    """A path argument as text: str, bytes (the file system's encoding) or os.PathLike, refused
    (ArgumentError naming ``what``) when it is anything else, or holds a NUL, which no file
    name can."""
    try:
        text = os.fsdecode(value)
    except TypeError:
        raise ArgumentError(f"{what} must be a path, not {type(value).__name__}") from None
    if "\0" in text:
        raise ArgumentError(f"{what} holds a NUL character, which no file name can")
    return text


def shadowed_folder(name_or_path: PathLike) -> Path | None:
    """The folder in the working directory that a shipped model's name hides, if there is one
    (and it is not the shipped model itself), so a command can say which one it used."""
    if not (isinstance(name_or_path, str) and name_or_path in SHIPPED_MODELS):
        return None
    local = Path(name_or_path)
    try:
        if local.is_dir() and not os.path.samefile(local, shipped_model_dir(name_or_path)):
            return local
    except OSError:
        pass
    return None


class BirdVAE:
    """A bird VAE exported to ONNX: sample, encode, decode and reconstruct 3xSxS images.

    Images are float32 [N, 3, S, S] RGB in [0, 1] and latent codes float32 [N, D]. Work is done
    ``batch`` rows at a time, so memory stays bounded whatever N is. ``threads`` sets
    onnxruntime's intra-op threads; None or 0 lets it use one per physical core. The
    constructor takes a folder's path (None: the default shipped model); ``load`` takes a
    shipped model's name too.
    """

    def __init__(self, model_dir: PathLike | None = None, *, threads: int | None = None) -> None:
        threads = 0 if threads is None else check_whole(threads, "threads", 0)
        check_threads(threads, "threads", " (0: one per physical core)")
        if model_dir is not None:
            model_dir = path_argument(model_dir, "the model folder")
            if not model_dir:
                raise ArgumentError("the model folder's path is empty (None: the default model)")
        # Absolute now: graphs are opened on first use, after the caller may have changed the
        # working directory.
        self._path = Path(model_dir).absolute() if model_dir is not None else shipped_model_dir()
        name = model_dir or ""
        if not self._path.exists() and os.sep not in name:
            hint = (f"for the shipped model of that name use BirdVAE.load({name!r})"
                    if name in SHIPPED_MODELS else
                    f"the shipped models are {', '.join(SHIPPED_MODELS)}")  # fmt: skip
            raise ModelFormatError(f"model folder {name} does not exist; {hint}")
        # Sizes now, each file's sha256 when it is first read (see read_verified).
        self._manifest = verify_model_dir(self._path, check_hashes=False)
        self._threads = threads
        self._sessions: dict[str, InferenceSession] = {}
        self._priors: dict[str, Prior] = {}
        self._rate: selection.Rate | None = None
        # One BirdVAE may serve several threads: each graph is opened once, by the first.
        self._opening = threading.RLock()

    @classmethod
    def load(cls, name_or_path: PathLike = DEFAULT_MODEL, *, threads: int | None = None) -> BirdVAE:
        """Open a shipped model by name (``birds32``, ``birds64``) or any model folder by path."""
        text = path_argument(name_or_path, "the model's name or path")
        if not text:
            raise ArgumentError("the model's name or path is empty")
        return cls(resolve_model(text), threads=threads)

    def __getstate__(self) -> dict[str, Any]:
        """What a copy or another process needs: the folder, its manifest and the threads; the
        graphs are opened again there, on first use."""
        return {"path": self._path, "manifest": self._manifest, "threads": self._threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._path, self._manifest, self._threads = (
            state["path"], state["manifest"], state["threads"])  # fmt: skip
        self._sessions, self._priors, self._rate = {}, {}, None
        self._opening = threading.RLock()

    def close(self) -> None:
        """Let go of the open graphs and priors, and the memory they hold. The model stays
        usable: a later call opens what it needs again, so closing a model another thread still
        uses costs that thread a reopening, never an error."""
        with self._opening:
            self._sessions, self._priors, self._rate = {}, {}, None

    def __enter__(self) -> BirdVAE:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        size, dim = self.image_size, self.latent_dim
        return f"BirdVAE({str(self._path)!r}, image_size={size}, latent_dim={dim})"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def manifest(self) -> Manifest:
        """A copy of the model's manifest: changing it changes nothing this BirdVAE does."""
        return copy.deepcopy(self._manifest)

    @property
    def image_size(self) -> int:
        return self._manifest.image_size

    @property
    def latent_dim(self) -> int:
        return self._manifest.latent_dim

    def verify(self, *, full: bool = False) -> None:
        """Check every file's sha256 now (otherwise each is checked when first read); with
        ``full``, also read every file as sampling and reconstructing would, with their checks:
        each graph opened in onnxruntime against its signature, each prior loaded."""
        for name in self._manifest.files:
            read_verified(self._path, self._manifest, name)
        if full:
            for name in (ENCODER_FILE, DECODER_FILE):
                self._session(name)
            for prior in self.prior_names:
                self.prior(prior)

    # Priors ------------------------------------------------------------------------------------

    @property
    def prior_names(self) -> tuple[str, ...]:
        """The priors this model can sample from, its default first."""
        return self._manifest.prior_names

    def prior(self, name: str | None = None) -> Prior:
        """The prior called ``name`` ("learned", "fitted" or "standard"); None means the
        manifest's default."""
        name = self._prior_name(name)
        prior = self._priors.get(name)  # opened already: no waiting on a graph being opened
        if prior is not None:
            return prior
        with self._opening:
            if name not in self._priors:
                if name == "standard":
                    self._priors[name] = StandardNormal(self.latent_dim)
                elif name == "fitted":
                    self._priors[name] = self._load_mixture(self._manifest.priors[name])
                else:
                    self._priors[name] = self._load_sampler(self._manifest.priors[name])
            return self._priors[name]

    def _prior_name(self, name: str | None) -> str:
        name = self._manifest.default_prior if name is None else name
        if name not in PRIOR_NAMES:
            raise ArgumentError(f"unknown prior {name!r} (choose {', '.join(PRIOR_NAMES)})")
        if name not in self.prior_names:
            raise ArgumentError(
                f"the model in {self._path} has no {name} prior (it has: "
                f"{', '.join(self.prior_names)})"
            )
        return name

    def _load_mixture(self, info: PriorInfo) -> GaussianMixture:
        data = read_verified(self._path, self._manifest, info.file)
        path = self._path / info.file
        return GaussianMixture.load(data, self.latent_dim, info.components, path)

    def _load_sampler(self, info: PriorInfo) -> LearnedPrior:
        assert info.noise_dim is not None  # Manifest.check made sure
        session = self._session(SAMPLER_FILE)
        shape = (self.latent_dim,)

        def run(noise: np.ndarray) -> np.ndarray:
            (z,) = run_graph(session, SAMPLER_FILE, [SAMPLER_OUTPUT], SAMPLER_INPUT, noise)
            _check_output(z, (len(noise), *shape), f"{SAMPLER_FILE} {SAMPLER_OUTPUT}")
            return z

        return LearnedPrior(run, info.noise_dim)

    def default_temperature(self, prior: str | None = None) -> float:
        """The temperature used when none is given: each prior's own from the manifest."""
        name = self._prior_name(prior)
        if name == "standard":
            return self._manifest.default_temperature
        return self._manifest.priors[name].default_temperature

    # Sampling ----------------------------------------------------------------------------------

    def sampling(
        self,
        *,
        seed: int | None = None,
        temperature: float | None = None,
        prior: str | None = None,
        noise: float | None = None,
        batch: int = DEFAULT_BATCH,
        best_of: int = 1,
    ) -> Sampling:
        """The settings birds are drawn with, each None taken from the manifest and every value
        checked (ArgumentError), so a request that cannot be served fails before any work."""
        name = self._prior_name(prior)
        seed = None if seed is None else check_whole(seed, "seed", 0)
        temperature = self.default_temperature(name) if temperature is None else temperature
        noise = check_noise(self.default_noise() if noise is None else noise)
        if noise > 0:
            self._check_pixel_noise()
        best_of = check_whole(best_of, "best_of", 1, selection.MAX_BEST_OF)
        batch = self._check_batch(batch, best_of)
        return Sampling(name, check_temperature(temperature), noise, seed, batch, best_of)

    def draw(self, n: int, settings: Sampling) -> Iterator[np.ndarray]:
        """n new birds as [<=batch, 3, S, S] arrays, one batch in memory at a time. The prior is
        read now, so a damaged one fails before the first batch is asked for. With ``best_of``
        k, bird i is the best of the seed's codes i*k to i*k+k-1, whatever the batch."""
        n = check_whole(n, "n", 0)
        settings = self.sampling(**{f.name: getattr(settings, f.name) for f in fields(Sampling)})
        draws = Draws(settings.seed)
        k = settings.best_of
        latents = self._latents(n * k, replace(settings, batch=settings.batch * k), draws)
        rate = self._rater() if k > 1 else None
        return (selection.best_of(self._draw_images(z, settings, draws), k, rate) for z in latents)

    def _rater(self) -> selection.Rate:
        """The shipped rater that ``best_of`` chooses with, opened on first use."""
        if self._rate is not None:
            return self._rate
        with self._opening:
            if self._rate is None:
                self._rate = selection.load_rater(self._threads)
            return self._rate

    def _draw_images(self, z: np.ndarray, settings: Sampling, draws: Draws) -> np.ndarray:
        if settings.noise == 0:
            return self._decode(z, settings.batch * settings.best_of)
        return self._decode_drawn(z, settings.noise, draws.pixels)

    def _latents(self, n: int, settings: Sampling, draws: Draws) -> Iterator[np.ndarray]:
        n = check_whole(n, "n", 0)
        chosen, batch = self.prior(settings.prior), settings.batch
        return (
            chosen.sample(min(batch, n - start), draws, settings.temperature)
            for start in range(0, n, batch)
        )

    def latent_batches(
        self,
        n: int,
        *,
        seed: int | None = None,
        temperature: float | None = None,
        prior: str | None = None,
        batch: int = DEFAULT_BATCH,
    ) -> Iterator[np.ndarray]:
        """n codes from the prior, ``batch`` at a time; the same seed gives the same codes
        whatever ``batch`` is."""
        settings = self.sampling(
            seed=seed, temperature=temperature, prior=prior, noise=0.0, batch=batch
        )
        return self._latents(n, settings, Draws(seed))

    def default_noise(self) -> float:
        """The pixel noise used when none is given (see ``runtime.pixels``); 0 shows the mean."""
        return self._manifest.default_noise

    def sample_batches(
        self,
        n: int,
        *,
        seed: int | None = None,
        temperature: float | None = None,
        prior: str | None = None,
        batch: int = DEFAULT_BATCH,
        noise: float | None = None,
        best_of: int = 1,
    ) -> Iterator[np.ndarray]:
        """n new birds as [<=batch, 3, S, S] arrays, one batch in memory at a time."""
        settings = self.sampling(
            seed=seed,
            temperature=temperature,
            prior=prior,
            noise=noise,
            batch=batch,
            best_of=best_of,
        )
        return self.draw(n, settings)

    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        temperature: float | None = None,
        prior: str | None = None,
        batch: int = DEFAULT_BATCH,
        noise: float | None = None,
        best_of: int = 1,
    ) -> np.ndarray:
        """n new birds, float32 [n, 3, S, S]. prior, temperature and noise None take the model's
        defaults; seed None draws fresh randomness. ``best_of`` k draws k birds for each one
        returned and keeps the most recognisable (runtime/selection.py), at k times the work.
        At most MAX_RESULT_VALUES numbers are returned at once; ``sample_batches`` gives any n."""
        n = check_whole(n, "n", 0)
        shape = (n, 3, self.image_size, self.image_size)
        _check_result(shape, "n", "sample_batches")
        batches = self.sample_batches(
            n,
            seed=seed,
            temperature=temperature,
            prior=prior,
            batch=batch,
            noise=noise,
            best_of=best_of,
        )
        birds = np.empty(shape, np.float32)  # filled batch by batch: no second copy at the end
        start = 0
        for images in batches:
            birds[start : start + len(images)] = images
            start += len(images)
        return birds

    # The two graphs ----------------------------------------------------------------------------

    def encode(
        self, images: np.ndarray, *, batch: int = DEFAULT_BATCH
    ) -> tuple[np.ndarray, np.ndarray]:
        """The posterior q(z|x) of each image: its mean and log-variance, float32 [N, D] each."""
        images = _as_images(images, self.image_size)
        batch = self._check_batch(batch)
        session = self._session(ENCODER_FILE)
        means = [np.empty((0, self.latent_dim), np.float32)]  # none asked for: none returned
        logvars = means[:]
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            mean, logvar = run_graph(
                session, ENCODER_FILE, list(ENCODER_OUTPUTS), ENCODER_INPUT, chunk
            )
            for name, value in (("mean", mean), ("logvar", logvar)):
                _check_output(value, (len(chunk), self.latent_dim), f"{ENCODER_FILE} {name}")
            means.append(mean)
            logvars.append(logvar)
        return np.concatenate(means), np.concatenate(logvars)

    def decode(self, z: np.ndarray, *, batch: int = DEFAULT_BATCH) -> np.ndarray:
        """The image for each code, float32 [N, 3, S, S] in [0, 1]. At most MAX_RESULT_VALUES
        numbers are returned at once: a few codes ask for many pixels."""
        self._check_images_for(z, "z", "fewer codes at a time")
        z = _as_float_batch(z, (self.latent_dim,), "z")
        if z.size and np.abs(z).max() > MAX_CODE:
            raise ArgumentError(f"z holds values beyond +-{MAX_CODE:g}, far outside any prior's")
        return self._decode(z, self._check_batch(batch))

    def _decode(self, z: np.ndarray, batch: int) -> np.ndarray:
        """``decode`` of codes already checked (the caller's) or made by the model itself (its
        prior's draws, its encoder's means), whose failings are the model's, not the caller's."""
        session = self._session(DECODER_FILE)
        shape = (3, self.image_size, self.image_size)
        images = np.empty((len(z), *shape), np.float32)  # filled batch by batch: no second copy
        for start in range(0, len(z), batch):
            chunk = z[start : start + batch]
            (image,) = run_graph(
                session, DECODER_FILE, list(DECODER_OUTPUTS[:1]), DECODER_INPUT, chunk
            )
            _check_output(image, (len(chunk), *shape), f"{DECODER_FILE} image")
            images[start : start + len(chunk)] = image
        return images

    def _decode_drawn(self, z: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
        """One batch of codes decoded, each pixel drawn from the decoder's distribution at
        temperature ``noise``."""
        outputs = list(DECODER_NOISE_OUTPUTS)
        session = self._session(DECODER_FILE)
        arrays = run_graph(session, DECODER_FILE, outputs, DECODER_INPUT, z)
        shape = (len(z), 3, self.image_size, self.image_size)
        for name, value in zip(outputs, arrays):
            _check_output(value, shape, f"{DECODER_FILE} {name}")
        return draw_pixels(*arrays, noise, rng)

    @property
    def has_pixel_noise(self) -> bool:
        """Whether the decoder outputs its pixel distribution (the format's optional
        DECODER_NOISE_OUTPUTS), so ``noise`` above 0 can work; only logistic likelihoods have
        one. The decoder is opened (read and checked) to tell, if it was not yet."""
        return outputs_pixel_noise(self._session(DECODER_FILE))

    def _check_pixel_noise(self) -> None:
        if not self.has_pixel_noise:
            raise ArgumentError(
                f"the decoder in {self._path} has no pixel scales ({self._manifest.likelihood} "
                "likelihood, or exported without them), so it can only show the mean: use noise 0"
            )

    def _check_images_for(self, rows: Any, name: str, instead: str) -> None:
        """Refuse before any copy or work a call whose ``rows`` (an array or a list, one image
        each) would return more than MAX_RESULT_VALUES numbers; their shape is checked later."""
        try:
            count = len(rows)
        except TypeError:  # a number, a 0-d array: refused by its shape later
            count = 1
        if getattr(rows, "ndim", 2) < 2:  # a flat array: refused by its shape, not its size
            count = 1
        _check_result((count, 3, self.image_size, self.image_size), name, instead)

    def _check_batch(self, batch: int, best_of: int = 1) -> int:
        """``batch``, refused unless a whole number whose arrays hold at most MAX_BATCH_VALUES
        numbers each; with ``best_of`` k, each batch decodes k candidates a bird."""
        batch = check_whole(batch, "batch", 1)
        row = max(3 * self.image_size * self.image_size, self.latent_dim) * best_of
        if best_of > 1 and batch * row > MAX_BATCH_VALUES:
            raise ArgumentError(
                f"batch {batch} with best of {best_of} decodes {batch * best_of} birds at "
                f"once, too many for this model's {self.image_size}x{self.image_size} "
                f"images: a batch of at most {MAX_BATCH_VALUES // row} with best of {best_of}"
            )
        if batch * row > MAX_BATCH_VALUES:
            raise ArgumentError(
                f"batch {batch} is too large for this model's {self.image_size}x"
                f"{self.image_size} images: at most {MAX_BATCH_VALUES // row}"
            )
        return batch

    def load_photos(self, paths: PathLike | Iterable[PathLike]) -> np.ndarray:
        """Photo files as this model sees them, float32 [N, 3, S, S] in [0, 1], ready for
        ``encode``, ``reconstruct`` and ``interpolate``: turned upright by their EXIF, the
        centre square kept and resized, as in training. ImageError names a file that cannot be
        read (missing, damaged, not a photo, too many megapixels)."""
        from .images import from_uint8_hwc
        from .photos import load_image

        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        elif hasattr(paths, "getpixel"):  # a PIL image: its pixels, not a file
            raise ArgumentError(
                "paths must be photo files' paths, not an image in memory: save it to a file, "
                f"or give its pixels to encode as floats [N, 3, {self.image_size}, "
                f"{self.image_size}] in [0, 1]"
            )
        try:
            paths = list(paths)  # type: ignore[arg-type]
        except TypeError:
            raise ArgumentError(
                f"paths must be a path or a list of paths, not {type(paths).__name__}"
            ) from None
        paths = [path_argument(path, f"paths[{i}]") for i, path in enumerate(paths)]
        shape = (len(paths), 3, self.image_size, self.image_size)
        _check_result(shape, "photos", "fewer paths at a time")
        pixels = np.empty((len(paths), self.image_size, self.image_size, 3), np.uint8)
        for i, path in enumerate(paths):
            pixels[i] = load_image(path, self.image_size)
        return from_uint8_hwc(pixels)

    def reconstruct(self, images: np.ndarray, *, batch: int = DEFAULT_BATCH) -> np.ndarray:
        """Each image decoded from its posterior mean: what the model keeps of a photo. At most
        MAX_RESULT_VALUES numbers are returned at once."""
        self._check_images_for(images, "images", "fewer images at a time")
        mean, _ = self.encode(images, batch=batch)  # the encoder's codes: not checked as input
        return self._decode(mean, self._check_batch(batch))

    def interpolate(self, first: np.ndarray, last: np.ndarray, *, steps: int = 8) -> np.ndarray:
        """``steps`` images on the slerp path between two images' posterior means, ends
        included: ``first`` and ``last`` are single images, float32 [3, S, S] in [0, 1]."""
        steps = check_whole(steps, "steps", 2)
        _check_result((steps, 3, self.image_size, self.image_size), "steps", "fewer steps")
        ends = [_as_images(end, self.image_size, name, one=True)
                for end, name in ((first, "first"), (last, "last"))]  # fmt: skip
        mean, _ = self.encode(np.concatenate(ends))
        return self._decode(slerp(mean[0], mean[1], np.linspace(0.0, 1.0, steps)), DEFAULT_BATCH)

    def _session(self, file: str) -> InferenceSession:
        session = self._sessions.get(file)  # opened already: no waiting on another's opening
        if session is not None:
            return session
        with self._opening:
            session = self._sessions.get(file)
            return self._open(file) if session is None else session

    def _open(self, file: str) -> InferenceSession:
        """Read, check and open one graph (under ``_opening``)."""
        model = read_verified(self._path, self._manifest, file)
        session = open_session(model, self._path / file, self._threads)
        check_model_graph(session, self._path, self._manifest, file)
        self._sessions[file] = session
        return session


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between codes a and b at each t in [0, 1], float32 [len(t), D].

    Codes from N(0, I) live near a sphere; a straight line between two of them cuts through its
    low-density middle and decodes to washed-out images, the arc does not.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(-1, 1)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    omega = np.arccos(np.clip(a @ b / norms, -1.0, 1.0)) if norms > 0 else 0.0
    if np.sin(omega) < 1e-6:  # (anti)parallel or zero codes: no unique arc, use the line
        return ((1.0 - t) * a + t * b).astype(np.float32)
    weights_a = np.sin((1.0 - t) * omega) / np.sin(omega)
    weights_b = np.sin(t * omega) / np.sin(omega)
    return (weights_a * a + weights_b * b).astype(np.float32)


def _check_result(shape: tuple[int, ...], name: str, instead: str) -> None:
    values = math.prod(shape)  # exact: a count of hundreds of digits overflows a float
    if values > MAX_RESULT_VALUES:
        size = f"{values * 4 / 2**30:.1f} GiB" if values < 2**80 else "more than memory holds"
        raise ArgumentError(
            f"{name} {short_number(shape[0])} asks for {size} at once (at most "
            f"{MAX_RESULT_VALUES * 4 // 2**30} GiB is returned at once): use {instead}"
        )


# numpy 1.25 moved it to numpy.exceptions; 2.0 left it only there.
_RAGGED_WARNING = getattr(getattr(np, "exceptions", np), "VisibleDeprecationWarning", Warning)


def _as_float_batch(
    array: Any, row_shape: tuple[int, ...], name: str, one: bool = False
) -> np.ndarray:
    """``array`` as C-ordered float32 [N, *row_shape], refused (ArgumentError, naming it) unless
    it is N rows (none too) of finite floating-point numbers: a graph is only ever given input it
    was made for, so what goes wrong in one is the graph's fault. ``one``: a single row, given
    as [*row_shape] or [1, *row_shape]."""
    expected = ", ".join(["1" if one else "N", *map(str, row_shape)])
    try:
        with warnings.catch_warnings():  # numpy before 1.24 warns of ragged rows, then obliges
            warnings.simplefilter("error", _RAGGED_WARNING)
            array = np.asarray(array)
    except (ValueError, TypeError, RuntimeError, _RAGGED_WARNING) as exc:
        # numpy's words for rows of different lengths; else what it cannot convert and why
        # (a bfloat16 or GPU tensor, one that requires grad)
        ragged = "inhomogeneous" in str(exc) or "ragged" in str(exc)
        reason = "its rows differ" if ragged else (
            f"numpy cannot make it one ({first_line(exc)})")  # fmt: skip
        raise ArgumentError(f"{name} must be an array [{expected}]; {reason}") from None
    if one and array.shape == row_shape:
        array = array[None]
    # The shape first: a list of numbers of the wrong shape is not pixels to divide by 255.
    if array.ndim != len(row_shape) + 1 or array.shape[1:] != row_shape:
        photo = len(row_shape) == 3 and array.dtype.kind in "ui" and array.ndim in (3, 4)
        hint = " (a photo's pixels: BirdVAE.load_photos reads files as the model sees them)"
        raise ArgumentError(f"{name} must have shape [{expected}], got {list(array.shape)}"
                            f"{hint if photo else ''}")  # fmt: skip
    if array.dtype.kind != "f":
        pixels = len(row_shape) == 3 and array.dtype.kind in "ui"
        hint = " (pixels 0-255: divide by 255; BirdVAE.load_photos reads files)" if pixels else ""
        raise ArgumentError(f"{name} must hold floating-point numbers, not {array.dtype}{hint}")
    if one and len(array) != 1:
        row = ", ".join(map(str, row_shape))
        raise ArgumentError(f"{name} must be one image, [{row}], not {len(array)}")
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes infinite: refused below
        array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ArgumentError(f"{name} holds NaN, infinity or values beyond float32")
    return array


def _as_images(images: Any, size: int, name: str = "images", one: bool = False) -> np.ndarray:
    """``images`` as float32 [N, 3, S, S], refused unless its values lie in [0, 1] (within
    IMAGE_SLACK): pixels 0-255 or normalised to mean 0 would reconstruct as something else,
    without a word."""
    images = _as_float_batch(images, (3, size, size), name, one)
    if images.size == 0:
        return images
    low, high = float(images.min()), float(images.max())
    if low < -IMAGE_SLACK or high > 1 + IMAGE_SLACK:
        hint = (" (normalised to mean 0: undo the normalisation)" if low < -0.5 else
                " (pixels 0-255: divide by 255)" if high > 1.5 else "")  # fmt: skip
        raise ArgumentError(f"{name} must be in [0, 1], got values from {low:g} to {high:g}{hint}")
    return images


def _check_output(value: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if value.shape != shape:
        raise ModelFormatError(f"{what} has shape {list(value.shape)}, expected {list(shape)}")
