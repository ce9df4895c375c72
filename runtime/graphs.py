"""The ONNX graphs as onnxruntime sessions, opened one way for the runtime and for the export's
parity checks (so those test what ``bird-gen`` runs), and refused unless the graph is
self-contained, its loops are bounded (``onnxfile.py``), and it has the format's signature.

onnxruntime is imported inside the functions: ``bird-gen info`` and ``import birdvae.runtime``
never load it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import signals
from .errors import caused_by_bug, first_line
from .format import (
    BATCH_DIM,
    DECODER_FILE,
    DECODER_NOISE_OUTPUTS,
    Manifest,
    ModelFormatError,
    graph_signature,
)
from .onnxfile import check_graph_bytes

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

ORT_OUT_OF_MEMORY = "Failed to allocate memory"  # in onnxruntime's message when an arena fails
LOG_FATAL_ONLY = 4  # onnxruntime's own error lines would repeat, in colour, what we report
# The fusion of an int8 sampler's quantize-and-multiply pairs into DynamicQuantizeMatMul: on an
# arm64 CPU with SME (qemu's "max" CPU, onnxruntime 1.32) that op takes another kernel whose
# codes were wrong (every one of 64 birds another bird), while the unfused pair is exact
# integer arithmetic on every CPU tried. On x86 both give the same bytes at the same speed.
UNSAFE_FUSIONS = ["DynamicQuantizeMatMulFusion"]
# Constant folding runs a graph's constant-only nodes while the session opens, a C call that
# nothing stops: a hostile decoder of 54 KB (a ConstantOfShape [4096, 4096] multiplied by itself
# 2,000 times) held bird-gen past Ctrl-C and SIGTERM until it was killed. Without it that work
# happens in a run, which a stop ends (``run_graph``). The exporter folds its graphs itself:
# the shipped ones give the same bytes, open as fast and run as fast (10-13 ms to open each,
# 23 ms for 64 birds, either way).
NOT_WHILE_OPENING = ["ConstantFolding"]
STOP_GRACE_S = 2.0  # how long a stopped run may take to leave the node it is in, at most


def open_session(model: bytes, path: Path, threads: int = 0) -> InferenceSession:
    """A CPU session for the graph ``model`` (the bytes read from ``path``), with onnxruntime's
    graph optimisations (the convolutions run 3x faster with them) but UNSAFE_FUSIONS and
    NOT_WHILE_OPENING; ``threads`` 0 lets onnxruntime use one per physical core."""
    check_graph_bytes(model, str(path))
    with signals.signals_deferred():  # a stop inside onnxruntime's C start-up is a traceback
        import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = LOG_FATAL_ONLY
    options.add_session_config_entry("session.load_model_format", "ONNX")  # not ORT's own
    # Idle worker threads do not spin: bird-gen runs the prior and the decoder in turn, and
    # on a 2-core machine one session's spinning threads took the cores from the other's
    # (64 birds through both: 28 ms spinning, 14 ms not; a graph alone loses about 5%).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(
            model,
            sess_options=options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=UNSAFE_FUSIONS + NOT_WHILE_OPENING,
        )
    except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) subclass Exception
        raise ModelFormatError(
            f"{path} cannot be loaded by onnxruntime: {first_line(exc)}"
        ) from exc


def check_model_graph(
    session: InferenceSession, folder: Path, manifest: Manifest, file: str
) -> None:
    """Refuse graph ``file`` of a model folder unless it has the signature the format requires
    of it under ``manifest`` (``format.graph_signature``)."""
    if file == DECODER_FILE and manifest.default_noise > 0 and not outputs_pixel_noise(session):
        raise ModelFormatError(
            f"manifest in {folder} defaults to pixel noise, but {file} does not output "
            f"{', '.join(DECODER_NOISE_OUTPUTS)}"
        )
    signature = graph_signature(manifest, file)
    check_signature(session, folder / file, signature.input, signature.row_shape, signature.outputs)


def check_signature(
    session: InferenceSession,
    path: Path,
    input_name: str,
    row_shape: tuple[int, ...],
    outputs: tuple[str, ...],
) -> None:
    """Refuse a graph whose one input is not ``input_name``, float32 [N, *row_shape] with a
    dynamic N, or whose outputs do not start with ``outputs``."""
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [input_name]:
        raise ModelFormatError(
            f"{path} takes inputs {[i.name for i in inputs]}, the format needs [{input_name!r}]"
        )
    (graph_input,) = inputs
    if graph_input.type != "tensor(float)":
        raise ModelFormatError(f"{path} input {input_name!r} is {graph_input.type}, not float32")
    expected = [BATCH_DIM, *row_shape]
    shape = list(graph_input.shape)
    if (
        len(shape) != len(expected)
        or isinstance(shape[0], int)
        or any(isinstance(dim, int) and dim != want for dim, want in zip(shape[1:], row_shape))
    ):
        raise ModelFormatError(
            f"{path} input {input_name!r} has shape {shape}, the format needs {expected} "
            "with a dynamic batch axis N"
        )
    names = [o.name for o in session.get_outputs()]
    if names[: len(outputs)] != list(outputs):
        raise ModelFormatError(
            f"{path} has outputs {names}, the format needs {list(outputs)} first"
        )


def outputs_pixel_noise(session: InferenceSession) -> bool:
    """Whether a decoder session outputs DECODER_NOISE_OUTPUTS right after ``image``."""
    names = [o.name for o in session.get_outputs()]
    return names[1 : 1 + len(DECODER_NOISE_OUTPUTS)] == list(DECODER_NOISE_OUTPUTS)


def run_graph(
    session: InferenceSession, file: str, outputs: list[str], input_name: str, chunk: np.ndarray
) -> list[np.ndarray]:
    """The graph's ``outputs`` for ``chunk``, each a finite float32 array: a graph may declare
    outputs of any type (strings, sequences), and every caller computes with them as numbers
    (a NaN would become a black pixel or a bird the rater cannot rank, blamed on the wrong file)."""
    try:
        values = _stoppable_run(session, outputs, {input_name: chunk})
    except MemoryError:  # the machine's, not the graph's
        raise
    except Exception as exc:  # the input was checked, so a failure here is the graph's fault
        if caused_by_bug(exc):  # ...unless the call itself was wrong: ours to fix
            raise
        if ORT_OUT_OF_MEMORY in str(exc):  # onnxruntime's own word for it, not a MemoryError
            raise MemoryError(f"{file}: {first_line(exc)}") from exc
        raise ModelFormatError(
            f"{file} failed on a batch of {len(chunk)}: {first_line(exc)}"
        ) from exc
    for name, value in zip(outputs, values):
        if not isinstance(value, np.ndarray) or value.dtype != np.float32:
            kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise ModelFormatError(f"{file} output {name!r} is {kind}, the format needs float32")
        if not np.isfinite(value).all():
            raise ModelFormatError(
                f"{file} output {name!r} holds NaN or infinity for a batch of {len(chunk)}"
            )
    return values


def _stoppable_run(session: InferenceSession, outputs: list[str], feed: dict[str, Any]) -> Any:
    """``session.run``, stopped at its next node by a Ctrl-C or SIGTERM. Python runs signal
    handlers in the main thread between its own steps, never inside a C call, so from the main
    thread the run goes to a thread of its own while this one waits where a handler can raise;
    onnxruntime's terminate flag then ends the run, a hostile graph's endless one included."""
    if threading.current_thread() is not threading.main_thread():
        return session.run(outputs, feed)  # no signal reaches this thread
    import onnxruntime

    options = onnxruntime.RunOptions()
    result: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(session.run(outputs, feed, options))
        except BaseException as exc:  # re-raised in the caller's thread, as if it ran there
            failure.append(exc)

    worker = threading.Thread(target=run, name="onnxruntime run", daemon=True)
    worker.start()
    try:
        while worker.is_alive():  # in short waits: a wait without one ignores Ctrl-C on Windows
            worker.join(0.1)
    except BaseException:  # a stop: onnxruntime's error for it is nobody's news
        options.terminate = True
        worker.join(STOP_GRACE_S)  # one node longer than that: the command ends without it
        signals.stopped_in_native_code(worker)
        raise
    if failure:
        raise failure[0]
    return result[0]
