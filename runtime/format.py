"""The model format: the one contract between `vae-export` (which writes it) and the runtime.

A model is a folder holding ``encoder.onnx``, ``decoder.onnx``, ``manifest.json`` and, when a
latent density was fitted, ``prior.npz``. The manifest lists every file with its sha256 and size,
so a model is checked before onnxruntime ever sees it. This module uses only the standard
library: reading a manifest must cost nothing at start-up.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1

MANIFEST_FILE = "manifest.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
PRIOR_FILE = "prior.npz"

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

PRIOR_ARRAYS = ("weights", "means", "cholesky")  # [K], [K, D], [K, D, D]


class ModelFormatError(ValueError):
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
    """A density fitted to the training set's latent codes, sampled by the runtime in numpy."""

    kind: str = "gaussian-mixture"
    components: int = 1
    file: str = PRIOR_FILE
    default_temperature: float = 1.0


@dataclass
class Manifest:
    image_size: int
    latent_dim: int
    likelihood: str
    opset: int = DEFAULT_OPSET
    ir_version: int = DEFAULT_IR_VERSION
    files: dict[str, FileEntry] = field(default_factory=dict)
    prior: PriorInfo | None = None
    default_prior: str = "standard"  # "standard" or "fitted"
    default_temperature: float = 1.0
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
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise ModelFormatError(
                    f"manifest format_version {version} is not supported "
                    f"(this runtime reads version {FORMAT_VERSION})"
                )
            files = {name: FileEntry(**entry) for name, entry in data["files"].items()}
            prior = PriorInfo(**data["prior"]) if data.get("prior") else None
            return cls(
                image_size=int(data["image_size"]),
                latent_dim=int(data["latent_dim"]),
                likelihood=str(data["likelihood"]),
                opset=int(data["opset"]),
                ir_version=int(data["ir_version"]),
                files=files,
                prior=prior,
                default_prior=str(data.get("default_prior", "standard")),
                default_temperature=float(data.get("default_temperature", 1.0)),
                default_noise=float(data.get("default_noise", 0.0)),
                source=dict(data.get("source", {})),
                format_version=version,
            )
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"manifest is malformed: {exc!r}") from exc

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
    required = [ENCODER_FILE, DECODER_FILE] + ([manifest.prior.file] if manifest.prior else [])
    for name in required:
        if name not in manifest.files:
            raise ModelFormatError(f"manifest in {folder} does not list {name}")
    if manifest.image_size <= 0 or manifest.latent_dim <= 0:
        raise ModelFormatError("manifest image_size and latent_dim must be positive")
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
