"""The model format: the one contract between `vae-export` (which writes it) and the runtime.

A model is a folder holding ``encoder.onnx``, ``decoder.onnx``, ``manifest.json`` and up to two
priors over the latent code: ``prior.onnx``, a learned sampler (noise in, codes out), and
``prior.npz``, a Gaussian mixture fitted to the training codes. The manifest lists every file with
its sha256 and size, so a model is checked before onnxruntime ever sees it, and it may name only
the files below: a model folder is read by name, never by a path it supplies. This module uses
only the standard library: reading a manifest must cost nothing at start-up.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 had one optional prior, the mixture (see upgrade)

MANIFEST_FILE = "manifest.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
PRIOR_FILE = "prior.npz"  # the fitted Gaussian mixture
SAMPLER_FILE = "prior.onnx"  # the learned prior
MODEL_FILES = (ENCODER_FILE, DECODER_FILE, SAMPLER_FILE, PRIOR_FILE)  # all a manifest may list

# Graph signatures. Both graphs are deterministic: the runtime draws z itself.
ENCODER_INPUT = "image"  # float32 [N, 3, S, S], RGB in [0, 1]
ENCODER_OUTPUTS = ("mean", "logvar")  # float32 [N, D] each
DECODER_INPUT = "z"  # float32 [N, D]
DECODER_OUTPUTS = ("image",)  # float32 [N, 3, S, S] in [0, 1]; more outputs may follow
# Optional, after ``image``, in models whose likelihood is a logistic per sub-pixel: its centre
# (``image`` before clipping to [0, 1]), its scale ([0, 1] units) and the colour couplings
# (green|red, blue|red, blue|green; 0 when independent), float32 [N, 3, S, S] each. With them
# the runtime can draw pixels, not only show the mean.
DECODER_NOISE_OUTPUTS = ("location", "scale", "coupling")

# What a widely deployed onnxruntime reads: opset 17 / IR 8 load in onnxruntime 1.14 and later
# (early 2023); CI runs the runtime tests under 1.15.0, the oldest wheel served for Python 3.11.
DEFAULT_OPSET = 17
DEFAULT_IR_VERSION = 8

# The learned prior: a deterministic graph from standard-normal noise (times the temperature,
# drawn by the runtime) to codes. The graph draws nothing, so a seed still fixes the birds.
SAMPLER_INPUT = "noise"  # float32 [N, K]
SAMPLER_OUTPUT = "z"  # float32 [N, D]

PRIOR_ARRAYS = ("weights", "means", "cholesky")  # [K], [K, D], [K, D, D]

# Each prior a manifest may carry: its name (what --prior says), kind and file. "standard",
# N(0, I), needs no file and is always there.
PRIOR_KINDS = {"learned": ("sampler", SAMPLER_FILE), "fitted": ("gaussian-mixture", PRIOR_FILE)}
PRIOR_NAMES = ("standard", *PRIOR_KINDS)


class ModelFormatError(UserError, ValueError):
    """A model folder that does not satisfy this format; the message says what is wrong."""


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int

    @classmethod
    def of(cls, path: Path) -> FileEntry:
        return cls(sha256=sha256_of(path), bytes=path.stat().st_size)


@dataclass
class PriorInfo:
    """One prior of the model: ``kind`` says how ``file`` is read; ``components`` sizes a
    mixture, ``noise_dim`` a sampler's input. ``source`` is free-form, for people."""

    kind: str
    file: str
    default_temperature: float = 1.0
    components: int | None = None
    noise_dim: int | None = None
    source: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    image_size: int
    latent_dim: int
    likelihood: str
    opset: int = DEFAULT_OPSET
    ir_version: int = DEFAULT_IR_VERSION
    files: dict[str, FileEntry] = field(default_factory=dict)
    priors: dict[str, PriorInfo] = field(default_factory=dict)  # by name: "learned", "fitted"
    default_prior: str = "standard"  # one of PRIOR_NAMES that the model has
    default_temperature: float = 1.0  # the standard prior's
    # Pixel noise: each pixel drawn from the decoder's logistic at this temperature (its scale
    # times it): 0 shows the mean (smooth), 1 draws whole samples. Needs DECODER_NOISE_OUTPUTS.
    default_noise: float = 0.0
    # Where the model came from: architecture config, epochs, validation bits/dim, checkpoint
    # sha256, package version, int8 details. Free-form for people; nothing here is loaded.
    source: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        try:
            data = upgrade(data)
            files = {name: FileEntry(**entry) for name, entry in data["files"].items()}
            priors = {name: PriorInfo(**info) for name, info in data.get("priors", {}).items()}
            manifest = cls(
                image_size=int(data["image_size"]),
                latent_dim=int(data["latent_dim"]),
                likelihood=str(data["likelihood"]),
                opset=int(data["opset"]),
                ir_version=int(data["ir_version"]),
                files=files,
                priors=priors,
                default_prior=str(data.get("default_prior", "standard")),
                default_temperature=float(data.get("default_temperature", 1.0)),
                default_noise=float(data.get("default_noise", 0.0)),
                source=dict(data.get("source", {})),
                format_version=FORMAT_VERSION,
            )
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelFormatError(f"manifest is malformed: {exc!r}") from exc
        manifest.check()
        return manifest

    def check(self) -> None:
        """The rules a manifest obeys whatever its files hold; ModelFormatError if not."""
        if self.image_size <= 0 or self.latent_dim <= 0:
            raise ModelFormatError("manifest image_size and latent_dim must be positive")
        for name in self.files:
            if name not in MODEL_FILES:
                raise ModelFormatError(
                    f"manifest lists a file {name!r}; a model folder holds only "
                    f"{', '.join(MODEL_FILES)}"
                )
        for name, info in self.priors.items():
            if name not in PRIOR_KINDS:
                raise ModelFormatError(
                    f"manifest has an unknown prior {name!r} (known: {', '.join(PRIOR_KINDS)})"
                )
            kind, file = PRIOR_KINDS[name]
            if (info.kind, info.file) != (kind, file):
                raise ModelFormatError(
                    f"manifest prior {name!r} must be kind {kind!r} in {file!r}, "
                    f"not {info.kind!r} in {info.file!r}"
                )
            size = info.components if name == "fitted" else info.noise_dim
            if not isinstance(size, int) or size < 1:
                field_name = "components" if name == "fitted" else "noise_dim"
                raise ModelFormatError(f"manifest prior {name!r} needs a positive {field_name}")
        if self.default_prior != "standard" and self.default_prior not in self.priors:
            raise ModelFormatError(
                f"manifest defaults to the {self.default_prior!r} prior, which it does not have"
            )
        for name in (ENCODER_FILE, DECODER_FILE, *(i.file for i in self.priors.values())):
            if name not in self.files:
                raise ModelFormatError(f"manifest does not list {name}")

    def save(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise ModelFormatError(f"{folder} is not a model folder: it has no {MANIFEST_FILE}")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelFormatError(f"{path} does not hold a JSON object")
        return cls.from_dict(data)


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A manifest of any readable version in the current version's terms.

    Version 1 carried at most one prior, the mixture, as ``prior``; version 2 names each prior
    in ``priors``.
    """
    version = data["format_version"]
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ModelFormatError(
            f"manifest format_version {version!r} is not supported (this runtime reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    data = dict(data)
    if version == 1:
        old = data.pop("prior", None)
        data["priors"] = {"fitted": {"kind": "gaussian-mixture", **old}} if old else {}
    return data


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_model_dir(folder: Path, check_hashes: bool = True) -> Manifest:
    """Load the manifest and check every listed file's size and hash; raise ModelFormatError.

    With ``check_hashes=False`` only presence and sizes are checked here and each file's hash is
    checked by ``read_verified`` when it is read, so a command hashes only the files it uses
    (sampling never reads the encoder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFormatError(f"model folder {folder} does not exist")
    manifest = Manifest.load(folder)
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ModelFormatError(f"{path} is missing")
        _check_size(path, path.stat().st_size, entry)
        if check_hashes and sha256_of(path) != entry.sha256:
            raise _hash_mismatch(path)
    return manifest


def read_verified(folder: Path, manifest: Manifest, name: str) -> bytes:
    """The bytes of one file the manifest lists, refused unless its size and sha256 match.

    The caller hands these very bytes on (to onnxruntime, to numpy), so what was checked is what
    is used, even if the file changes afterwards.
    """
    path = Path(folder) / name
    entry = manifest.files.get(name)
    if entry is None:
        raise ModelFormatError(f"manifest in {folder} does not list {name}")
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelFormatError(f"{path} is missing") from exc
    _check_size(path, len(data), entry)
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise _hash_mismatch(path)
    return data


def _check_size(path: Path, size: int, entry: FileEntry) -> None:
    if size != entry.bytes:
        raise ModelFormatError(f"{path} has {size} bytes, the manifest says {entry.bytes}")


def _hash_mismatch(path: Path) -> ModelFormatError:
    return ModelFormatError(f"{path} does not match its sha256 in the manifest")
