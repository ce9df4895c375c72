"""Optional int8 graphs, each shipped only where onnxruntime runs it faster.

Static QDQ (QuantizeLinear/DequantizeLinear pairs around float ops) because dynamic quantization
writes ConvInteger nodes that onnxruntime's CPU provider cannot run, and QDQ is the format its
CPU kernels fuse into integer convolutions. Settings: uint8 activations, int8 weights per output
channel, ``reduce_range`` (7-bit weights). That is onnxruntime's advice for x86 CPUs without
VNNI, where full-range weights can saturate the 16-bit accumulator (measured here on an AVX2
CPU: full range tripled the encoder's worst error), and it costs nothing measurable elsewhere.

Activation ranges come from real data: the encoder calibrates on real images, the decoder on
those images' posterior means, so it sees the latents it will decode. Whether int8 pays depends
on the graph (onnxruntime fuses QDQ Conv into integer kernels, but not ConvTranspose), so each
graph is timed both ways and its int8 version kept only when it is clearly faster here.
That timing is this CPU's: a model exported on one machine for another (an x86 box without
VNNI building for an ARM board, where int8 kernels win) can ask for every int8 graph within
the quality bar whatever its speed here (``require_speedup=False``), and the manifest says so.

The learned prior's sampler is a chain of matrix products, not convolutions: its int8 version
is dynamic (int8 weights per output channel, 7-bit as above; each activation quantized from its
own range as it runs), which needs no calibration, so the same float graph always gives the same
int8 file. The sampler runs its network once per solver step and each step starts from the last
one's output, so its rounding compounds. Every graph's int8 version ships only if it is faster
and what it makes stays within MIN_INT8_PSNR_DB of the float graph's: reconstructions for the
encoder and the decoder, the birds decoded from its codes for the sampler.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from birdvae.runtime.cpus import cpu_name
from birdvae.runtime.errors import caused_by_bug
from birdvae.runtime.format import (
    DECODER_FILE,
    DECODER_INPUT,
    ENCODER_FILE,
    ENCODER_INPUT,
    ENCODER_OUTPUTS,
    SAMPLER_FILE,
    SAMPLER_INPUT,
)
from birdvae.runtime.images import psnr
from birdvae.runtime.prior import LearnedPrior

from .destination import QUANTIZER_FOLDER, int8_candidate
from .onnx import ExportError, check_graph, io_shapes
from .parity import encode_means, ort_session, to_unit
from .selector import selector_nodes

CALIBRATION_IMAGES = 256
EVALUATION_IMAGES = 256
CALIBRATION_BATCH = 32
LATENCY_BATCH = 64  # "64 birds": one grid of samples
LATENCY_THREADS = 1
LATENCY_REPEATS = 15
MIN_SPEEDUP = 1.1  # int8 replaces fp32 only when at least this much faster
# An int8 graph's pictures against its float graph's: at 30 dB a side-by-side grid of the two
# shows no difference (the shipped models' graphs: 34-41 dB).
MIN_INT8_PSNR_DB = 30.0
SAMPLER_DRAWS = 256
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
SETTINGS = {
    "format": "QDQ",
    "activations": "uint8, per tensor, min-max calibrated; float after the last weighted layers",
    "weights": "int8, per channel, reduce_range (7-bit)",
    "sampler": "dynamic: int8 weights per channel, reduce_range; uint8 activations per run",
}


def quantize_model(
    folder: Path,
    calibration_images: np.ndarray,
    evaluation_images: np.ndarray,
    opset: int,
    repeats: int = LATENCY_REPEATS,
    require_speedup: bool = True,
) -> dict[str, Any]:
    """Quantize the graphs in ``folder`` (encoder, decoder and any learned prior), measure
    them, keep the int8 ones that earn their place (with ``require_speedup`` False, every one
    within MIN_INT8_PSNR_DB of its float graph, however fast it runs on this CPU).

    Images are uint8 [N, 3, S, S]: calibration from the training split, evaluation (PSNR)
    preferably held out. Returns the figures for the manifest's ``source["int8"]``.
    """
    if len(calibration_images) == 0:
        raise ExportError("int8 calibration needs at least one real image")
    folder = Path(folder)
    evaluation_images = evaluation_images if len(evaluation_images) else calibration_images
    calibration = calibration_images[:CALIBRATION_IMAGES]
    evaluation = to_unit(evaluation_images[:EVALUATION_IMAGES])
    paths = {"encoder": folder / ENCODER_FILE, "decoder": folder / DECODER_FILE}
    int8 = _quantize_graphs(paths, calibration, opset)
    sessions = {
        (graph, kind): ort_session(path, LATENCY_THREADS)
        for graph in paths
        for kind, path in (("fp32", paths[graph]), ("int8", int8[graph]))
    }
    z = _encode(sessions["encoder", "fp32"], evaluation)
    reference = _decode(sessions["decoder", "fp32"], z)
    quality = {
        "encoder": psnr(reference, _decode(sessions["decoder", "fp32"],
                                           _encode(sessions["encoder", "int8"], evaluation)), 1.0),
        "decoder": psnr(reference, _decode(sessions["decoder", "int8"], z), 1.0),
    }  # fmt: skip
    feeds = {
        "encoder": {ENCODER_INPUT: _tile(evaluation, LATENCY_BATCH)},
        "decoder": {DECODER_INPUT: _tile(z, LATENCY_BATCH)},
    }
    figures = _settings(len(calibration), len(evaluation), require_speedup)
    if (folder / SAMPLER_FILE).exists():  # judged by the float decoder's pictures of its draws
        figures["prior"] = quantize_prior(
            folder, sessions["decoder", "fp32"], opset, repeats, require_speedup
        )
    shipped = {}
    for graph, path in paths.items():
        fp32_ms, int8_ms = compare_latency(
            sessions[graph, "fp32"], sessions[graph, "int8"], feeds[graph], repeats
        )
        verdict = _verdict(fp32_ms, int8_ms, quality[graph], require_speedup)
        figures[graph] = _row(path, int8[graph], fp32_ms, int8_ms, quality[graph], verdict)
        shipped[graph] = sessions[graph, "int8" if figures[graph]["used"] else "fp32"]
    # What a person sees: reconstructions of held-out photos, by fp32 and by the shipped graphs.
    reconstruction = _decode(shipped["decoder"], _encode(shipped["encoder"], evaluation))
    figures["reconstruction_psnr_db"] = {
        "fp32": _finite(psnr(evaluation, reference, 1.0)),
        "shipped": _finite(psnr(evaluation, reconstruction, 1.0)),
        "shipped_vs_fp32": _finite(psnr(reference, reconstruction, 1.0)),
    }
    for graph, path in paths.items():
        _keep(path, int8[graph], figures[graph]["used"])
    return figures


def _quantize_graphs(
    paths: dict[str, Path], calibration: np.ndarray, opset: int
) -> dict[str, Path]:
    """Write an int8 candidate beside the encoder and the decoder. The decoder is calibrated
    on the codes the float encoder gives the calibration photos, the inputs it will see."""
    int8 = {graph: int8_candidate(path) for graph, path in paths.items()}
    quantize_graph(paths["encoder"], int8["encoder"], ENCODER_INPUT, to_unit(calibration), opset)
    z_calibration = encode_means(ort_session(paths["encoder"]), calibration)
    quantize_graph(paths["decoder"], int8["decoder"], DECODER_INPUT, z_calibration, opset)
    return int8


def _settings(
    calibration_images: int, evaluation_images: int, require_speedup: bool
) -> dict[str, Any]:
    """How the int8 figures were measured and judged, so the manifest's numbers can be
    reproduced and its choices read."""
    return {
        **SETTINGS,
        "require_speedup": require_speedup,
        "kept_when": _rule(require_speedup),
        "calibration_images": calibration_images,
        "evaluation_images": evaluation_images,
        "latency_batch": LATENCY_BATCH,
        "latency_threads": LATENCY_THREADS,
        "cpu": cpu_name(),
        "onnxruntime": ort.__version__,
    }


def quantize_prior(
    folder: Path,
    decoder: ort.InferenceSession,
    opset: int,
    repeats: int = LATENCY_REPEATS,
    require_speedup: bool = True,
) -> dict[str, Any]:
    """Quantize the learned prior's sampler in ``folder``, measure it, keep its int8 version in
    place if that is faster (unless ``require_speedup`` is False) and ``decoder`` draws the same
    birds from its codes (within MIN_INT8_PSNR_DB). Returns its row of the manifest's int8
    figures."""
    fp32 = Path(folder) / SAMPLER_FILE
    int8 = int8_candidate(fp32)
    quantize_sampler(fp32, int8, opset)
    sessions = {
        "fp32": ort_session(fp32, LATENCY_THREADS),
        "int8": ort_session(int8, LATENCY_THREADS),
    }
    noise = _sampler_noise(sessions["fp32"], SAMPLER_DRAWS)
    birds = {kind: _decode(decoder, _sample(session, noise)) for kind, session in sessions.items()}
    quality = psnr(birds["fp32"], birds["int8"], 1.0)
    feed = {SAMPLER_INPUT: noise[:LATENCY_BATCH]}
    fp32_ms, int8_ms = compare_latency(sessions["fp32"], sessions["int8"], feed, repeats)
    verdict = _verdict(fp32_ms, int8_ms, quality, require_speedup)
    row = _row(fp32, int8, fp32_ms, int8_ms, quality, verdict)
    _keep(fp32, int8, row["used"])
    return row


# Why an int8 graph ships or not, as the export's lines say it (one decision, one wording).
VERDICTS = {
    "faster": "int8 shipped",
    "even if slower": "int8 shipped (not faster on this CPU, as --int8-even-if-slower asks)",
    "not faster": "fp32 kept (int8 not faster)",
    "too far": f"fp32 kept (int8 under {MIN_INT8_PSNR_DB:g} dB of fp32's pictures)",
}


def _verdict(fp32_ms: float, int8_ms: float, quality: float, require_speedup: bool) -> str:
    """A key of VERDICTS. An int8 graph ships when its pictures are within MIN_INT8_PSNR_DB of
    the float graph's (an identical output has infinite PSNR) and it is clearly faster, or
    speed is not asked for."""
    if not quality >= MIN_INT8_PSNR_DB:  # NaN too: pictures that overflowed are not close
        return "too far"
    if int8_ms * MIN_SPEEDUP <= fp32_ms:
        return "faster"
    return "not faster" if require_speedup else "even if slower"


def _rule(require_speedup: bool) -> str:
    """The manifest's words for when an int8 graph replaces its float one."""
    close = f"its pictures {MIN_INT8_PSNR_DB:g} dB PSNR or more from the float graph's"
    if require_speedup:
        return f"{MIN_SPEEDUP:g}x as fast or more on the exporting CPU, and {close}"
    return f"{close}, whatever its speed on the exporting CPU (--int8-even-if-slower)"


def _row(
    fp32: Path, int8: Path, fp32_ms: float, int8_ms: float, quality: float, verdict: str
) -> dict[str, Any]:
    return {
        "fp32_ms": round(fp32_ms, 3),
        "int8_ms": round(int8_ms, 3),
        "speedup": round(fp32_ms / int8_ms, 3),
        "fp32_bytes": fp32.stat().st_size,
        "int8_bytes": int8.stat().st_size,
        "psnr_vs_fp32_db": _finite(quality),
        "used": verdict in ("faster", "even if slower"),
        "verdict": verdict,
    }


def _keep(fp32: Path, int8: Path, used: bool) -> None:
    """The int8 graph takes the float one's name if it is used, else it goes."""
    if used:
        os.replace(int8, fp32)
    else:
        int8.unlink()


def format_figures(figures: dict[str, Any]) -> str:
    """One line per graph: latency, size, quality, and which version ships."""
    lines = []
    for graph in ("encoder", "decoder", "prior"):
        row = figures.get(graph)
        if row is None:
            continue
        quality = row["psnr_vs_fp32_db"]  # None: identical, or (too far) not a number
        shown = f"PSNR vs fp32 {quality} dB"
        if quality is None:
            too_far = row["verdict"] == "too far"
            shown = "int8 pictures not a number" if too_far else "identical to fp32"
        lines.append(
            f"int8 {graph}: {row['fp32_ms']:.2f} -> {row['int8_ms']:.2f} ms for "
            f"{figures['latency_batch']} birds, {row['fp32_bytes']} -> {row['int8_bytes']} bytes, "
            f"{shown}: {VERDICTS[row['verdict']]}"
        )
    return "\n".join(lines)


def quantize_graph(
    fp32: Path, out: Path, input_name: str, calibration: np.ndarray, opset: int
) -> None:
    """Write the static-QDQ int8 version of ``fp32`` to ``out`` and check it keeps the format.
    What follows the last weighted layers (output_tail) stays float."""
    reader = _Batches(input_name, calibration.astype(np.float32))
    tail = output_tail(onnx.load_model(fp32).graph)
    _quantized_and_checked(fp32, out, opset, lambda: quantize_static(
        fp32, out, reader, quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=tail,
    ))  # fmt: skip


def output_tail(graph: onnx.GraphProto) -> list[str]:
    """The names of the nodes between the graph's last weighted layers (WEIGHTED_OPS) and its
    outputs, each of whose results goes only to the outputs or to others of them: the
    concatenations, slices, clips and exponential after the output layers, each as cheap as a
    copy.

    Quantized, each would round what it passes on to 256 levels of its own output's range once
    more (a decoder's pixel locations and log-scales, concatenated, share one range), and nothing
    after them gains speed from integers. The weighted layers themselves stay int8, each with
    its own output range (export.onnx.split_heads makes one layer a likelihood parameter). A node
    whose result also feeds the network's body (a skip connection) is not the tail's."""
    made_by = {output: node for node in graph.node for output in node.output}
    used_by: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            used_by.setdefault(name, []).append(node)
    outputs = {output.name for output in graph.output}
    tail: dict[str, onnx.NodeProto] = {}  # by name, in the order found: the same list each time
    waiting = list(outputs)
    while waiting:
        node = made_by.get(waiting.pop())
        if node is None or node.op_type in WEIGHTED_OPS or node.name in tail:
            continue
        if not node.name:
            raise ExportError(f"a {node.op_type} node before the graph's outputs has no name")
        tail[node.name] = node
        waiting += list(node.input)
    changed = True
    while changed:  # drop what also feeds a node outside the tail, until nothing does
        changed = False
        for name, node in list(tail.items()):
            users = [user for output in node.output for user in used_by.get(output, [])]
            if any(user.name not in tail for user in users):
                del tail[name]
                changed = True
    return list(tail)


def quantize_sampler(fp32: Path, out: Path, opset: int) -> None:
    """Write the dynamic int8 version of the sampler ``fp32`` to ``out``; check the format.

    The matrix products inside the solver's loop (export/sampler.py) are quantized; the
    tables each step reads its constants from stay float, as does a best-of-K selector
    (export/selector.py): it is a few thousand weights, and int8 rounding of its scores would
    change which candidate some birds are drawn from."""
    selector = selector_nodes(onnx.load_model(fp32).graph)
    _quantized_and_checked(fp32, out, opset, lambda: quantize_dynamic(
        fp32, out, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
        nodes_to_exclude=selector, op_types_to_quantize=["MatMul", "Gemm"],
        extra_options={"EnableSubgraph": True},
    ))  # fmt: skip


def _quantized_and_checked(
    fp32: Path, out: Path, opset: int, quantize: Callable[[], object]
) -> None:
    """Run ``quantize`` (which writes ``out`` from ``fp32``), then check ``out`` keeps the
    format and ``fp32``'s inputs and outputs. The quantizer raises assorted types for a graph it
    cannot handle: those are the export's errors; a programming error keeps its traceback."""
    try:
        with _quiet_root_logger(), _temporaries_in(out.parent / QUANTIZER_FOLDER):
            quantize()
    except Exception as exc:
        if caused_by_bug(exc):
            raise
        raise ExportError(f"int8 quantization of {fp32.name} failed: {exc}") from exc
    reference = onnx.load_model(fp32)
    check_graph(onnx.load_model(out), opset, io_shapes(reference), f"int8 {fp32.stem}")


def compare_latency(
    fp32: ort.InferenceSession,
    int8: ort.InferenceSession,
    feed: dict[str, np.ndarray],
    repeats: int,
) -> tuple[float, float]:
    """Median milliseconds per run of each session, interleaved so both see the same load."""
    times: dict[int, list[float]] = {0: [], 1: []}
    for session in (fp32, int8):
        session.run(None, feed)  # warm-up: first runs allocate
    for _ in range(repeats):
        for index, session in enumerate((fp32, int8)):
            start = time.perf_counter()
            session.run(None, feed)
            times[index].append((time.perf_counter() - start) * 1e3)
    return float(np.median(times[0])), float(np.median(times[1]))


class _Batches(CalibrationDataReader):
    def __init__(self, input_name: str, data: np.ndarray) -> None:
        self._batches = iter(
            [{input_name: data[i : i + CALIBRATION_BATCH]}
             for i in range(0, len(data), CALIBRATION_BATCH)]
        )  # fmt: skip

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _encode(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return session.run([ENCODER_OUTPUTS[0]], {ENCODER_INPUT: x})[0]


def _decode(session: ort.InferenceSession, z: np.ndarray) -> np.ndarray:
    return session.run(None, {DECODER_INPUT: z})[0]


def _sample(session: ort.InferenceSession, noise: np.ndarray) -> np.ndarray:
    """Codes for ``noise`` as the runtime makes them: in runs of LearnedPrior.BLOCK_ROWS rows
    (an int8 sampler quantizes each run's activations over all its rows)."""
    rows = LearnedPrior.BLOCK_ROWS
    return np.concatenate([
        session.run(None, {SAMPLER_INPUT: noise[start : start + rows]})[0]
        for start in range(0, len(noise), rows)
    ])  # fmt: skip


def _sampler_noise(session: ort.InferenceSession, n: int) -> np.ndarray:
    """Fixed standard-normal noise of the width the sampler takes: its draws are compared."""
    width = session.get_inputs()[0].shape[1]
    return np.random.default_rng(0).standard_normal((n, width)).astype(np.float32)


def _finite(value: float) -> float | None:
    """JSON has no infinity: identical outputs (infinite PSNR) are recorded as null."""
    return round(value, 2) if np.isfinite(value) else None


def _tile(x: np.ndarray, n: int) -> np.ndarray:
    return x[np.arange(n) % len(x)]


@contextlib.contextmanager
def _temporaries_in(work: Path) -> Iterator[None]:
    """onnxruntime's quantizer writes working copies of the graph, as large as it, to
    tempfile's folder (/tmp), where a kill would leave them for good. In ``work``, inside the
    staging folder, they go with it: removed here, or by the next export's sweep."""
    work.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(work)
    try:
        yield
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(work)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime advises pre-processing on the root logger; export already optimised the graph
    and inferred its shapes, which is what that pre-processing does. Only that advice is held
    back: a filter on the root logger for the block, whatever levels the caller has set."""
    root = logging.getLogger()
    advice = _AdviceFilter()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


class _AdviceFilter(logging.Filter):
    """Drops onnxruntime's advice to pre-process; every other record still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Please consider") and "pre-processing" in message)
