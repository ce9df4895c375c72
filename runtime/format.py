"""The model format: the one contract between `vae-export` (which writes it) and the runtime.

A model is a folder holding ``encoder.onnx``, ``decoder.onnx``, ``manifest.json`` and up to two
priors over the latent code: ``prior.onnx``, a learned sampler (noise in, codes out), and
``prior.npz``, a Gaussian mixture fitted to the training codes. The manifest lists every file with
its sha256 and size, so a model is checked before onnxruntime ever sees it, and it may name only
the files below: a model folder is read by name, never by a path it supplies, and never through
a symbolic link. Every size a manifest states is bounded (``MAX_*``), so a hostile folder cannot
make the runtime read without limit or allocate for what it states. What a graph computes is not
bounded before it runs (a few bytes can ask for hours of arithmetic), but a run stops at Ctrl-C
or SIGTERM (``graphs.py``). This module uses only the standard library:
reading a manifest must cost nothing at start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArgumentError, UserError, check_between

# A prior's temperature scales its draws: 1 samples as fitted; at 10 a draw sits ten standard
# deviations out, far past any bird, and larger values only overflow float32 on the way to the
# decoder.
MAX_TEMPERATURE = 10.0
# Pixel noise draws pixels from the decoder's distribution at this temperature: 1 draws whole
# samples; 10 is ten times the grain the model expects, far past any use.
MAX_NOISE = 10.0

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 had one optional prior, the mixture (see upgrade)

MANIFEST_FILE = "manifest.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
MIXTURE_FILE = "prior.npz"  # the fitted Gaussian mixture
SAMPLER_FILE = "prior.onnx"  # the learned prior
MODEL_FILES = (ENCODER_FILE, DECODER_FILE, SAMPLER_FILE, MIXTURE_FILE)  # all a manifest may list

# Graph signatures. Every graph is deterministic: the runtime draws z itself, so a seed means
# the same birds. Graphs hold none of these ops, and their batch axis is named BATCH_DIM.
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
     "Bernoulli"}
)  # fmt: skip
BATCH_DIM = "N"
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
PRIOR_KINDS = {"learned": ("sampler", SAMPLER_FILE), "fitted": ("gaussian-mixture", MIXTURE_FILE)}
PRIOR_NAMES = (*PRIOR_KINDS, "standard")

# Bounds on what a manifest may state, so that the work and memory a model asks for are known
# before any of it is done. Each is far above a real model's: the shipped ones are 32 and 64 px,
# 128 latent numbers, 10 x 128 x 128 mixture values and files of a few MB.
MAX_MANIFEST_BYTES = 1 << 20
# No manifest needs more than a few levels; a deeper one (a hostile `source`) would make Python
# code that walks it recursively (copies, printing) fail with RecursionError.
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 4300  # Python's default limit on int() of a string (3.9.14, 3.10.7, 3.11 on)
MAX_FILE_BYTES = 256 << 20  # any listed file; protobuf itself stops at 2 GiB
MAX_IMAGE_SIZE = 256
MAX_LATENT_DIM = 16384  # also a sampler's noise_dim
MAX_PRIOR_VALUES = 1 << 24  # components x latent_dim x latent_dim of a mixture's factors
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


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
        """The manifest ``data`` (parsed JSON) describes, of any readable version; every field's
        type and bound is checked, so a wrong one is a ModelFormatError naming it."""
        data = upgrade(data)
        manifest = cls(
            image_size=_integer(data, "image_size", MAX_IMAGE_SIZE),
            latent_dim=_integer(data, "latent_dim", MAX_LATENT_DIM),
            likelihood=_get(data, "likelihood", str),
            opset=_integer(data, "opset", 1000),
            ir_version=_integer(data, "ir_version", 1000),
            files={
                name: _file_entry(name, entry) for name, entry in _get(data, "files", dict).items()
            },
            priors={
                name: _prior_info(name, info)
                for name, info in _get(data, "priors", dict, {}).items()
            },
            default_prior=_get(data, "default_prior", str, "standard"),
            default_temperature=_number(data, "default_temperature", 1.0),
            default_noise=_number(data, "default_noise", 0.0),
            source=_get(data, "source", dict, {}),
            format_version=FORMAT_VERSION,
        )
        manifest.check()
        return manifest

    def check(self) -> None:
        """The rules a manifest obeys whatever its files hold; ModelFormatError if not."""
        if not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ModelFormatError(f"manifest image_size must be 1 to {MAX_IMAGE_SIZE}")
        if not 1 <= self.latent_dim <= MAX_LATENT_DIM:
            raise ModelFormatError(f"manifest latent_dim must be 1 to {MAX_LATENT_DIM}")
        for name, entry in self.files.items():
            if name not in MODEL_FILES:
                raise ModelFormatError(
                    f"manifest lists a file {name!r}; a model folder holds only "
                    f"{', '.join(MODEL_FILES)}"
                )
            if not 0 <= entry.bytes <= MAX_FILE_BYTES:
                raise ModelFormatError(
                    f"manifest says {name} has {short_number(entry.bytes)} bytes; "
                    f"a model file has at most {MAX_FILE_BYTES}"
                )
        for name, info in self.priors.items():
            _check_prior(name, info, self.latent_dim)
        if self.default_prior != "standard" and self.default_prior not in self.priors:
            raise ModelFormatError(
                f"manifest defaults to the {self.default_prior!r} prior, which it does not have"
            )
        for name in (ENCODER_FILE, DECODER_FILE, *(i.file for i in self.priors.values())):
            if name not in self.files:
                raise ModelFormatError(f"manifest does not list {name}")
        temperatures = [self.default_temperature]
        temperatures += [info.default_temperature for info in self.priors.values()]
        try:
            for temperature in temperatures:
                check_between(temperature, "default temperature", MAX_TEMPERATURE)
            check_between(self.default_noise, "default noise", MAX_NOISE)
        except ArgumentError as exc:
            raise ModelFormatError(f"manifest {exc}") from None

    @property
    def prior_names(self) -> tuple[str, ...]:
        """The priors this model can sample from: its default, then the rest in PRIOR_NAMES
        order (the order bird-gen and the web page list them in)."""
        others = [n for n in PRIOR_NAMES if n != self.default_prior]
        return (self.default_prior, *(n for n in others if n == "standard" or n in self.priors))

    def save(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        # A plain write: vae-export writes a manifest only into its staging folder, which is
        # renamed into place whole (export/destination.py), and sweeps that folder when it
        # holds nothing but a model's files.
        # allow_nan=False: NaN and Infinity are not JSON, and the web page's parser refuses them.
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)
        path.write_text(text + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST_FILE
        if not path.exists() and not path.is_symlink():  # a folder or pipe of that name: below
            raise ModelFormatError(f"{folder} is not a model folder: it has no {MANIFEST_FILE}")
        text = read_file(path, MAX_MANIFEST_BYTES)
        try:
            data = json.loads(text, object_pairs_hook=_object_of_unique_keys,
                              parse_constant=_not_json, parse_int=_json_integer)  # fmt: skip
        except _DuplicateKey as exc:
            raise ModelFormatError(f"{path} gives {exc.key!r} twice in one object") from None
        except _TooLong as exc:
            raise ModelFormatError(
                f"{path} holds a number of {exc.digits} digits, longer than any a model has"
            ) from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ModelFormatError(f"{path} is not valid JSON: {exc}") from exc
        except RecursionError:
            raise ModelFormatError(_too_deep(path)) from None
        if not isinstance(data, dict):
            raise ModelFormatError(f"{path} does not hold a JSON object")
        if nesting(data) > MAX_JSON_DEPTH:
            raise ModelFormatError(_too_deep(path))
        return cls.from_dict(data)


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def nesting(data: Any) -> int:
    """How deep JSON objects and arrays nest in ``data`` (an object of plain values: 1)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            children = value.values() if isinstance(value, dict) else value
            stack += [(child, depth + 1) for child in children]
    return deepest


def _too_deep(path: Path) -> str:
    return f"{path} nests its JSON more than {MAX_JSON_DEPTH} levels deep"


def _not_json(constant: str) -> Any:
    """Python's json reads NaN and Infinity, which are not JSON: the web page's reader refuses
    them, so a manifest holding one would load here and fail there."""
    raise ValueError(f"{constant} is not a JSON value")


def _json_integer(digits: str) -> int:
    """A JSON integer. Past MAX_INT_DIGITS Python refuses it in words for programmers (raise
    an interpreter limit); the user is told what the file holds instead, on every Python."""
    length = len(digits.lstrip("-"))
    if length > MAX_INT_DIGITS:
        raise _TooLong(length)
    return int(digits)


class _TooLong(ValueError):
    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits


def _object_of_unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when it names a key twice: JSON parsers keep the last one, so a
    reader (or a checker) that took the first would be shown another manifest than the
    runtime runs."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key if len(key) <= 40 else key[:40] + "...")
        seen.add(key)
    return dict(pairs)


@dataclass(frozen=True)
class GraphSignature:
    """What one graph must take and give: one input ``input``, float32 [N, *row_shape] with a
    dynamic N, and outputs that start with ``outputs`` (more may follow)."""

    input: str
    row_shape: tuple[int, ...]
    outputs: tuple[str, ...]


def graph_signature(manifest: Manifest, file: str) -> GraphSignature:
    """The signature ``file`` must have in a folder with this manifest: what the runtime checks
    when it opens the graph, and what export checks a new model folder against."""
    size = manifest.image_size
    if file == ENCODER_FILE:
        return GraphSignature(ENCODER_INPUT, (3, size, size), ENCODER_OUTPUTS)
    if file == DECODER_FILE:
        # A manifest that defaults to pixel noise needs the decoder's distribution, not its mean.
        noise = DECODER_NOISE_OUTPUTS if manifest.default_noise > 0 else ()
        return GraphSignature(DECODER_INPUT, (manifest.latent_dim,), DECODER_OUTPUTS + noise)
    if file == SAMPLER_FILE:
        noise_dim = manifest.priors["learned"].noise_dim
        return GraphSignature(SAMPLER_INPUT, (noise_dim,), (SAMPLER_OUTPUT,))
    raise ValueError(f"{file!r} is not a graph of the format")


def max_prior_size(name: str, latent_dim: int) -> int:
    """The largest ``components`` (prior "fitted") or ``noise_dim`` (prior "learned") a prior
    over codes of ``latent_dim`` numbers may have: a mixture's factors hold components x D x D
    numbers, a sampler's noise as many as a code may."""
    return MAX_PRIOR_VALUES // (latent_dim * latent_dim) if name == "fitted" else MAX_LATENT_DIM


def _check_prior(name: str, info: PriorInfo, latent_dim: int) -> None:
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
    field_name = "components" if name == "fitted" else "noise_dim"
    size = getattr(info, field_name)
    if type(size) is not int or size < 1:
        raise ModelFormatError(f"manifest prior {name!r} needs a positive {field_name}")
    if name == "fitted" and size > max_prior_size(name, latent_dim):
        raise ModelFormatError(
            f"manifest prior 'fitted' has {short_number(size)} components of "
            f"{latent_dim}x{latent_dim} factors, more than the {MAX_PRIOR_VALUES} values a "
            "mixture may have"
        )
    if name == "learned" and size > max_prior_size(name, latent_dim):
        raise ModelFormatError(f"manifest prior 'learned' noise_dim must be 1 to {MAX_LATENT_DIM}")


_REQUIRED = object()


def _get(
    data: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    default: Any = _REQUIRED,
    where: str = "manifest",
) -> Any:
    """``data[key]``, refused unless it is a ``kind`` (a bool is no number here)."""
    if key not in data:
        if default is _REQUIRED:
            raise ModelFormatError(f"{where} lacks {key!r}")
        return default
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = {int: "an integer", float: "a number", str: "a string", dict: "an object"}
        wanted = names.get(kind, kind.__name__) if isinstance(kind, type) else "a number"
        raise ModelFormatError(f"{where} {key} must be {wanted}, not {_json_type(value)}")
    return value


def _integer(data: dict[str, Any], key: str, largest: int) -> int:
    value = _get(data, key, int)
    if not 1 <= value <= largest:
        raise ModelFormatError(f"manifest {key} must be 1 to {largest}, not {short_number(value)}")
    return value


def _number(data: dict[str, Any], key: str, default: float, where: str = "manifest") -> float:
    value = _get(data, key, (int, float), default, where)
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise ModelFormatError(f"{where} {key} is too large: {short_number(value)}") from None


def short_number(number: int | float, digits: int = 20) -> str:
    """A number as an error line shows it: one of thousands of digits cut to its first few."""
    text = str(number)
    return text if len(text) <= digits else f"{text[:digits]}... ({len(text)} digits)"


def _json_type(value: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "a list", dict: "an object", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _file_entry(name: str, entry: Any) -> FileEntry:
    if not isinstance(entry, dict) or set(entry) != {"sha256", "bytes"}:
        raise ModelFormatError(f"manifest entry of {name!r} must hold exactly sha256 and bytes")
    sha256, size = entry["sha256"], entry["bytes"]
    if not isinstance(sha256, str) or _SHA256.fullmatch(sha256) is None:
        raise ModelFormatError(f"manifest sha256 of {name!r} is not 64 lowercase hex digits")
    if type(size) is not int:
        raise ModelFormatError(f"manifest bytes of {name!r} must be an integer")
    return FileEntry(sha256=sha256, bytes=size)


def _prior_info(name: str, info: Any) -> PriorInfo:
    if not isinstance(info, dict):
        raise ModelFormatError(f"manifest prior {name!r} must be an object")
    unknown = set(info) - set(PriorInfo.__dataclass_fields__)
    if unknown:
        raise ModelFormatError(f"manifest prior {name!r} has unknown keys {sorted(unknown)}")
    where = f"manifest prior {name!r}"

    def optional_count(key: str) -> int | None:
        value = info.get(key)
        if value is not None and type(value) is not int:
            raise ModelFormatError(f"{where} {key} must be an integer")
        return value

    return PriorInfo(
        kind=_get(info, "kind", str, where=where),
        file=_get(info, "file", str, where=where),
        default_temperature=_number(info, "default_temperature", 1.0, where),
        components=optional_count("components"),
        noise_dim=optional_count("noise_dim"),
        source=_get(info, "source", dict, {}, where),
    )


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A manifest of any readable version in the current version's terms.

    Version 1 carried at most one prior, the mixture, as ``prior``; version 2 names each prior
    in ``priors``.
    """
    version = data.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ModelFormatError(
            f"manifest format_version {version!r} is not supported (this runtime reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    data = dict(data)
    if version == 1:
        old = data.pop("prior", None)
        if old is not None and not isinstance(old, dict):
            raise ModelFormatError("manifest prior must be an object")
        data["priors"] = {"fitted": {"kind": PRIOR_KINDS["fitted"][0], **old}} if old else {}
    return data


def _export_hint(given: Path, checkpoint: Path) -> str:
    """What to do with a vae-train checkpoint or run folder given where a model belongs."""
    kind = "a vae-train checkpoint" if given == checkpoint else "a vae-train run folder"
    command = f"vae-export {shlex.quote(str(checkpoint))} -o my-model"
    return f"; it looks like {kind}: make a model of it ({command}) and give my-model"


def verify_model_dir(folder: Path, check_hashes: bool = True) -> Manifest:
    """Load the manifest and check every listed file's size and hash; raise ModelFormatError.

    With ``check_hashes=False`` only presence and sizes are checked here and each file's hash is
    checked by ``read_verified`` when it is read, so a command hashes only the files it uses
    (sampling never reads the encoder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        missing = "is a file, not a folder" if folder.exists() else "does not exist"
        hint = _export_hint(folder, folder) if folder.suffix == ".pt" and folder.exists() else ""
        raise ModelFormatError(f"model folder {folder} {missing}{hint}")
    if not (folder / MANIFEST_FILE).exists() and (folder / "best.pt").is_file():
        raise ModelFormatError(f"{folder} is not a model folder: it has no {MANIFEST_FILE}"
                               f"{_export_hint(folder, folder / 'best.pt')}")  # fmt: skip
    manifest = Manifest.load(folder)
    for name, entry in manifest.files.items():
        path = folder / name
        _check_size(path, _regular_file(path).st_size, entry)
        if check_hashes:
            read_verified(folder, manifest, name)
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
    data = read_file(path, entry.bytes)
    _check_size(path, len(data), entry)
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise _hash_mismatch(path)
    return data


def read_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, refused (ModelFormatError) when it is a symbolic
    link, anything but a regular file or longer than ``limit``. The link is refused, not
    followed, so what a message says of it tells nothing of a file outside the folder."""
    _regular_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | _NO_FOLLOW | getattr(os, "O_BINARY", 0))
    except OSError as exc:  # replaced by a link or removed since the check above
        raise ModelFormatError(f"{path} cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ModelFormatError(f"{path} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ModelFormatError(f"{path} has more than {limit} bytes")
    return data


def _regular_file(path: Path) -> os.stat_result:
    """``path``'s own status (a link is not followed), refused unless a regular file."""
    try:
        status = path.lstat()
    except FileNotFoundError:
        raise ModelFormatError(f"{path} is missing") from None
    except OSError as exc:
        raise ModelFormatError(f"{path} cannot be read: {exc.strerror}") from None
    if stat.S_ISLNK(status.st_mode):
        raise ModelFormatError(
            f"{path} is a symbolic link; a model folder holds its files themselves"
        )
    if not stat.S_ISREG(status.st_mode):
        raise ModelFormatError(f"{path} is not a regular file")
    return status


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_size(path: Path, size: int, entry: FileEntry) -> None:
    if size != entry.bytes:
        raise ModelFormatError(f"{path} has {size} bytes, the manifest says {entry.bytes}")


def _hash_mismatch(path: Path) -> ModelFormatError:
    return ModelFormatError(f"{path} does not match its sha256 in the manifest")
