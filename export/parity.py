"""The exported graphs must compute what the PyTorch model computes: same inputs, both engines.

Measured on this project's networks (random and briefly trained), onnxruntime and PyTorch agree
to about 1e-6 on images and latents, so the tolerances below leave a tenfold margin while still
catching any real mismatch (a wrong layer, a badly folded BatchNorm, a frozen batch size).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from birdvae.runtime.format import (
    DECODER_FILE,
    DECODER_INPUT,
    ENCODER_FILE,
    ENCODER_INPUT,
    ENCODER_OUTPUTS,
    SAMPLER_FILE,
    SAMPLER_INPUT,
    SAMPLER_OUTPUT,
)
from birdvae.runtime.graphs import open_session
from birdvae.training.model import VAE
from birdvae.training.prior import CodePrior
from birdvae.training.selector import Selection

from .onnx import DecoderGraph, ExportError, decoder_outputs
from .sampler import sampler_module
from .selector import sampler_noise_dim

# max |difference| of decoded images in [0, 1]. The pixel locations,
# scales and couplings that may follow them are held to it per unit of max(1, largest |value|):
# a scale is exp(log-scale), and a code far from the data (a random z) can ask for scales of 20
# or more, where float32 rounding alone exceeds 1e-5.
IMAGE_TOL = 1e-5
LATENT_TOL = 1e-5  # max |difference| of mean and logvar, per unit of max(1, largest |value|)
# The sampler runs its network once per step: its rounding compounds, measured at about 4e-6
# of the codes' scale on trained priors.
SAMPLER_TOL = 2e-5
BATCH_SIZES = (1, 3, 64)
BATCH = 256  # images per onnxruntime call when encoding a data set


@dataclass(frozen=True)
class ParityRow:
    graph: str
    output: str
    input: str
    n: int
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(self.max_abs_diff <= self.tolerance)  # NaN fails


def scaled_tolerance(tolerance: float, reference: np.ndarray) -> float:
    """``tolerance`` per unit of max(1, largest |reference|): float32 rounding grows with the
    values rounded, and an absolute bound would fail a correct graph on large outputs."""
    return tolerance * max(1.0, float(np.abs(reference).max()))


def ort_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A session opened by the runtime's own code, so parity proves what bird-gen runs."""
    return open_session(path.read_bytes(), path, threads)


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 3, S, S] -> float32 in [0, 1], the encoder's input."""
    return images.astype(np.float32) / 255.0


def encode_means(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    """Posterior means [N, D] of uint8 images, by an exported encoder's session."""
    latent_dim = session.get_outputs()[0].shape[1]
    means = [np.zeros((0, latent_dim), np.float32)]
    for chunk in _chunks(images):
        means.append(session.run([ENCODER_OUTPUTS[0]], {ENCODER_INPUT: to_unit(chunk)})[0])
    return np.concatenate(means)


def check_parity(
    model: VAE, folder: Path, images: np.ndarray | None, seed: int = 0
) -> list[ParityRow]:
    """Compare ``folder``'s graphs with ``model`` at every size in BATCH_SIZES.

    ``images`` are uint8 [M, 3, S, S] real photos (repeated up to the largest batch); without
    them, uniform noise stands in. The decoder sees standard-normal z and the real images'
    posterior means.
    """
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    largest = max(BATCH_SIZES)
    if images is not None and len(images):
        label = "real images"
        x = to_unit(images[np.arange(largest) % len(images)])
    else:
        label = "random images"
        size = (largest, 3, cfg.image_size, cfg.image_size)
        x = rng.random(size, dtype=np.float32)
    z = rng.standard_normal((largest, cfg.latent_dim), dtype=np.float32)
    model = model.eval()
    graph, outputs = DecoderGraph(model), decoder_outputs(model)
    encoder, decoder = ort_session(folder / ENCODER_FILE), ort_session(folder / DECODER_FILE)
    rows: list[ParityRow] = []
    for n in BATCH_SIZES:
        with torch.no_grad():
            mean, logvar = (t.numpy() for t in model.encoder(torch.from_numpy(x[:n])))
            torch_outputs = {
                source: [t.numpy() for t in _as_tuple(graph(torch.from_numpy(latents)))]
                for source, latents in (("random z", z[:n]), ("encoded z", mean))
            }
        _check_finite("encoder", (mean, logvar))
        for source, refs in torch_outputs.items():
            _check_finite(f"decoder, for {source}", refs)
        onnx_latents = encoder.run(list(ENCODER_OUTPUTS), {ENCODER_INPUT: x[:n]})
        for name, ref, got in zip(ENCODER_OUTPUTS, (mean, logvar), onnx_latents):
            tolerance = scaled_tolerance(LATENT_TOL, ref)
            rows.append(ParityRow("encoder", name, label, n, _max_diff(ref, got), tolerance))
        for source, latents in (("random z", z[:n]), ("encoded z", mean)):
            got = decoder.run(outputs, {DECODER_INPUT: latents})
            for name, ref, value in zip(outputs, torch_outputs[source], got):
                tolerance = scaled_tolerance(IMAGE_TOL, ref)
                rows.append(ParityRow("decoder", name, source, n, _max_diff(ref, value), tolerance))
    return rows


def check_sampler_parity(
    prior: CodePrior,
    folder: Path,
    guide: CodePrior | None = None,
    guidance: float = 1.0,
    seed: int = 0,
    selection: Selection | None = None,
) -> list[ParityRow]:
    """Compare ``prior.onnx`` with the PyTorch sampler on the same standard-normal noise.

    Ten solver steps compound rounding, so the tolerance is relative to the codes' own scale
    (SAMPLER_TOL of max(1, largest |z|)), as LATENT_TOL is for the encoder's outputs.
    """
    rng = np.random.default_rng(seed)
    noise_dim = sampler_noise_dim(prior.latent_dim, selection)
    noise = rng.standard_normal((max(BATCH_SIZES), noise_dim), dtype=np.float32)
    sampler = sampler_module(prior, guide, guidance, selection)
    session = ort_session(folder / SAMPLER_FILE)
    rows = []
    for n in BATCH_SIZES:
        with torch.no_grad():
            ref = sampler(torch.from_numpy(noise[:n])).numpy()
        _check_finite("prior", (ref,))
        (got,) = session.run([SAMPLER_OUTPUT], {SAMPLER_INPUT: noise[:n]})
        tolerance = scaled_tolerance(SAMPLER_TOL, ref)
        rows.append(ParityRow("prior", SAMPLER_OUTPUT, "normal noise", n, _max_diff(ref, got),
                              tolerance))  # fmt: skip
    return rows


def _check_finite(graph: str, outputs: Sequence[np.ndarray]) -> None:
    """Refuse a model whose own (PyTorch) outputs hold NaN or infinity: no graph could match
    it, and the parity check would blame onnxruntime for the difference."""
    if not all(np.isfinite(output).all() for output in outputs):
        raise ExportError(
            f"the checkpoint's {graph} gives NaN or infinity in PyTorch: the run that wrote it "
            "diverged; export an earlier checkpoint (its best.pt, or a run with a lower --lr)"
        )


def _as_tuple(value: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


def verdict(rows: list[ParityRow]) -> None:
    """Raise ExportError naming the worst failing comparison, if any."""
    failed = [row for row in rows if not row.ok]
    if failed:
        worst = max(failed, key=lambda row: row.max_abs_diff)
        raise ExportError(
            f"parity check failed: onnxruntime and PyTorch differ by {worst.max_abs_diff:.3g} "
            f"on the {worst.graph} {worst.output} for {worst.input} at N={worst.n} "
            f"(tolerance {worst.tolerance:.1g})"
        )


def max_diffs(rows: list[ParityRow]) -> dict[str, float]:
    """The largest difference per graph and output, for the manifest."""
    worst: dict[str, float] = {}
    for row in rows:
        key = f"{row.graph}.{row.output}"
        worst[key] = max(worst.get(key, 0.0), row.max_abs_diff)
    return worst


def format_table(rows: list[ParityRow]) -> str:
    """The proof as a table: on success one line per graph output, the worst of its checks
    (each input at every N in BATCH_SIZES); when any check failed, every check, to show which."""
    title = f"parity, onnxruntime against PyTorch ({len(rows)} checks"
    columns = f"{'max|diff|':>10} {'tol':>8}  ok"
    if not all(row.ok for row in rows):
        header = f"{'graph':<8} {'output':<9} {'input':<14} {'N':>3}  {columns}"
        return "\n".join(
            [
                title + ", each one):",
                header,
                *(_line(row, f"{row.input:<14} {row.n:>3}  ") for row in rows),
            ]
        )
    groups: dict[tuple[str, str], list[ParityRow]] = {}
    for row in rows:
        groups.setdefault((row.graph, row.output), []).append(row)
    sizes = ", ".join(str(n) for n in sorted({row.n for row in rows}))
    header = f"{'graph':<8} {'output':<9} {'inputs':<20} {columns}"
    lines = [f"{title}, N = {sizes}; the worst of each output):", header]
    for group in groups.values():
        worst = max(group, key=lambda row: row.max_abs_diff / row.tolerance)
        inputs = ", ".join(dict.fromkeys(row.input for row in group))
        lines.append(_line(worst, f"{inputs:<20} "))
    return "\n".join(lines)


def _line(row: ParityRow, inputs: str) -> str:
    return (f"{row.graph:<8} {row.output:<9} {inputs}{row.max_abs_diff:>10.2e} "
            f"{row.tolerance:>8.1e}  {'yes' if row.ok else 'NO'}")  # fmt: skip


def _max_diff(reference: np.ndarray, other: np.ndarray) -> float:
    if reference.shape != other.shape:
        return float("inf")
    return float(np.abs(reference.astype(np.float64) - other).max())


def _chunks(images: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(images), BATCH):
        yield images[start : start + BATCH]
