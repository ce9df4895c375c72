"""Hostile model folders and requests: what a model folder may not do, and the bounds on the work
a command takes on. Every case must end as one ``error:`` line with status 2 before any file is
written, tell nothing of files outside the folder, and stay within its memory budget.

Each model here is made by the test from the committed tiny model (16x16 images, latent 8).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from birdvae.runtime import BirdVAE
from birdvae.runtime.format import (
    DECODER_FILE,
    ENCODER_FILE,
    MANIFEST_FILE,
    MAX_LATENT_DIM,
    MAX_PRIOR_VALUES,
    MIXTURE_FILE,
    SAMPLER_FILE,
    FileEntry,
    Manifest,
    ModelFormatError,
    PriorInfo,
)
from birdvae.runtime.onnxfile import check_graph_bytes

from . import onnx_bytes
from .conftest import TINY_MODEL, one_error

SIZE, LATENT = 16, 8  # the tiny model's


def _write_manifest(folder: Path, data: object) -> None:
    (folder / MANIFEST_FILE).write_text(data if isinstance(data, str) else json.dumps(data))


def _manifest_data() -> dict:
    return json.loads((TINY_MODEL / MANIFEST_FILE).read_text())


_DIM = _manifest_data()["latent_dim"]


# --- graphs that would read the user's files (ONNX external data) ----------------------------

SECRET = np.linspace(0.0, 1.0, 3 * SIZE * SIZE, dtype=np.float32)  # what is next to the user


def _replace_graph(model: Path, name: str, data: bytes, refresh) -> None:
    (model / name).write_bytes(data)
    if name == SAMPLER_FILE:
        manifest = Manifest.load(model)
        manifest.files[SAMPLER_FILE] = FileEntry.of(model / SAMPLER_FILE)
        manifest.priors["learned"] = PriorInfo(kind="sampler", file=SAMPLER_FILE, noise_dim=4)
        manifest.save(model)
    refresh(model)


GRAPHS = {
    "decoder": (DECODER_FILE, "z", [LATENT], [("image", [3, SIZE, SIZE])], ["--prior", "standard"]),
    "learned-prior": (SAMPLER_FILE, "noise", [4], [("z", [LATENT])], ["--prior", "learned"]),
    "encoder": (ENCODER_FILE, "image", [3, SIZE, SIZE], [("mean", [LATENT]), ("logvar", [LATENT])],
                ["recon", "{bird}"]),
}  # fmt: skip


@pytest.mark.parametrize("graph", GRAPHS, ids=GRAPHS)
def test_no_graph_reads_a_file_from_the_working_directory(
    cli, graph, model_copy, refresh_manifest, birds, tmp_path, monkeypatch
):
    """onnxruntime would resolve ``secret.bin`` against the working directory and draw it."""
    file, input_name, input_dims, outputs, args = GRAPHS[graph]
    work = tmp_path / "work"
    work.mkdir()
    size = int(np.prod(outputs[0][1]))
    (work / "secret.bin").write_bytes(SECRET[:size].tobytes())
    leaky = onnx_bytes.leaky_graph(input_name, input_dims, outputs, "secret.bin")
    _replace_graph(model_copy, file, leaky, refresh_manifest)
    monkeypatch.chdir(work)
    args = [arg.format(bird=birds[0]) for arg in args]
    result = cli(*args, "--model", model_copy, "-o", work / "out.png", "--scale", 1)
    one_error(result, file, "external data")
    assert sorted(p.name for p in work.iterdir()) == ["secret.bin"]


@pytest.mark.parametrize("graph", GRAPHS, ids=GRAPHS)
@pytest.mark.parametrize(("elem", "shown"), [(8, "object"), (11, "float64")], ids=["str", "f64"])
def test_a_graph_whose_outputs_are_not_float32_is_one_error_line(
    cli, graph, elem, shown, model_copy, refresh_manifest, birds, out
):
    """Right names and shapes, wrong type: strings once ended in numpy's ValueError."""
    file, input_name, input_dims, outputs, args = GRAPHS[graph]
    typed = onnx_bytes.typed_graph(input_name, input_dims, outputs, elem)
    _replace_graph(model_copy, file, typed, refresh_manifest)
    args = [arg.format(bird=birds[0]) for arg in args]
    result = cli(*args, "--model", model_copy, "-o", out / "b.png", "--scale", 1)
    one_error(result, file, f"is {shown}, the format needs float32")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("graph", GRAPHS, ids=GRAPHS)
def test_a_graph_whose_outputs_are_nan_is_named_in_one_error_line(
    cli, graph, model_copy, refresh_manifest, birds, out
):
    """A NaN decoder wrote a garbage PNG and exited 0 (with --best-of, the shipped rater was
    blamed)."""
    file, input_name, input_dims, outputs, args = GRAPHS[graph]
    nan = onnx_bytes.typed_graph(input_name, input_dims, outputs, onnx_bytes.FLOAT, fill=math.nan)
    _replace_graph(model_copy, file, nan, refresh_manifest)
    args = [arg.format(bird=birds[0]) for arg in args]
    result = cli(*args, "--model", model_copy, "-o", out / "b.png", "--scale", 1)
    one_error(result, file, "holds NaN or infinity")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("graph", GRAPHS, ids=GRAPHS)
def test_a_graph_of_a_fixed_batch_size_is_one_error_line(
    cli, graph, model_copy, refresh_manifest, birds, out
):
    """The format leaves the batch axis free: a graph fixed to one row loaded, then failed
    on the first batch of another size, or worked for some --n only."""
    file, input_name, input_dims, outputs, args = GRAPHS[graph]
    fixed = onnx_bytes.typed_graph(input_name, input_dims, outputs, onnx_bytes.FLOAT, batch=1)
    _replace_graph(model_copy, file, fixed, refresh_manifest)
    args = [arg.format(bird=birds[0]) for arg in args]
    result = cli(*args, "--model", model_copy, "-o", out / "b.png", "--scale", 1)
    one_error(result, file, "with a dynamic batch axis N")
    assert list(out.iterdir()) == []


def test_an_encoder_whose_second_output_has_another_name_is_refused_by_its_outputs(
    cli, model_copy, refresh_manifest, birds, out
):
    """Every output the format names is checked, not only the first: an encoder of outputs
    mean and log_var is refused as such, before any photo is encoded."""
    outputs = [("mean", [LATENT]), ("log_var", [LATENT])]
    renamed = onnx_bytes.typed_graph("image", [3, SIZE, SIZE], outputs, elem=onnx_bytes.FLOAT)
    _replace_graph(model_copy, ENCODER_FILE, renamed, refresh_manifest)
    result = cli("recon", birds[0], "--model", model_copy, "-o", out / "r.png")
    one_error(result, "encoder.onnx has outputs ['mean', 'log_var'], the format needs "
              "['mean', 'logvar'] first")  # fmt: skip
    assert list(out.iterdir()) == []


def test_a_tensor_marked_as_stored_elsewhere_is_refused_without_a_location():
    """data_location EXTERNAL alone, with no file named, still asks onnxruntime to look for
    the values outside the graph."""
    elsewhere = onnx_bytes.message((1, 4), (2, onnx_bytes.FLOAT), (8, "w"), (14, 1))
    main = onnx_bytes.graph([onnx_bytes.node("Add", ["z", "w"], ["image"])],
                            [onnx_bytes.value_info("z", ["N", 4])],
                            [onnx_bytes.value_info("image", ["N", 4])], [elsewhere])  # fmt: skip
    with pytest.raises(ModelFormatError, match="keeps the values of tensor 'w' in another file"):
        check_graph_bytes(onnx_bytes.model(main), "decoder.onnx")


@pytest.mark.parametrize("where", ["subgraph", "initializer", "constant", "sparse"])
def test_external_data_is_refused_wherever_the_tensor_is(where, model_copy, refresh_manifest):
    leaky = onnx_bytes.leaky_graph(
        "z", [LATENT], [("image", [3, SIZE, SIZE])], "/etc/hostname", where
    )
    _replace_graph(model_copy, DECODER_FILE, leaky, refresh_manifest)
    with pytest.raises(ModelFormatError, match=r"keeps the values of tensor '\w+' in another file"):
        BirdVAE(model_copy).decode(np.zeros((1, LATENT), np.float32))


def _hidden_external_tensor(where: str) -> bytes:
    """A decoder-shaped model whose one tensor stored in another file sits in a place of the
    ONNX message other than a graph's initializers, If branch or Constant node."""
    b = onnx_bytes
    secret = b.tensor("secret", [4], external="/etc/hostname")
    signature = [b.value_info("z", ["N", 4])], [b.value_info("image", ["N", 4])]
    extra: list[tuple[int, bytes]] = []
    nodes = [b.node("Identity", ["z"], ["image"])]
    sparse: list[bytes] = []
    if where == "function":  # a Constant in a local function's body
        constant = b.node("Constant", [], ["w"], b.attribute("value", secret, b.ATTRIBUTE_TENSOR))
        extra.append((25, b.message((1, "leak"), (5, "w"), (7, constant), (10, "local"))))
    elif where in ("training-initialization", "training-algorithm"):  # ModelProto.training_info
        held = b.graph([], [], [], [secret])
        extra.append((20, b.message((1 if where == "training-initialization" else 2, held))))
    elif where == "attribute-tensors":  # AttributeProto.tensors (type TENSORS)
        nodes = [b.node("Identity", ["z"], ["image"], b.message((1, "t"), (10, secret), (20, 9)))]
    elif where == "attribute-graphs":  # AttributeProto.graphs (type GRAPHS)
        held = b.graph([], [], [], [secret])
        nodes = [b.node("Identity", ["z"], ["image"], b.message((1, "g"), (11, held), (20, 10)))]
    elif where == "sparse-attribute":  # a Constant's sparse_value
        values = b.tensor("secret", [1], external="/etc/hostname")
        indices = b.tensor("at", [1], struct.pack("<q", 0), dtype=b.INT64)
        value = b.message((1, "sparse_value"), (22, b.message((1, values), (2, indices), (3, 4))),
                          (20, 11))  # fmt: skip
        nodes.append(b.node("Constant", [], ["w"], value))
    elif where == "sparse-indices":  # the indices of a sparse initializer, not its values
        values = b.tensor("w", [1], struct.pack("<f", 1.0))
        indices = b.tensor("secret", [1], dtype=b.INT64, external="/etc/hostname")
        sparse.append(b.message((1, values), (2, indices), (3, 4)))
    else:
        raise ValueError(where)
    return b.model(b.graph(nodes, *signature, [], sparse), *extra)


@pytest.mark.parametrize(
    "where",
    ["function", "training-initialization", "training-algorithm", "attribute-tensors",
     "attribute-graphs", "sparse-attribute", "sparse-indices"],
)  # fmt: skip
def test_external_data_is_refused_in_every_place_onnx_keeps_a_tensor(where):
    """A tensor stored elsewhere in a local function, a training graph, an attribute's list of
    tensors or graphs, or any part of a sparse tensor would still have onnxruntime (or a later
    version of it) read a file of the user's; the check walks every place a tensor can be."""
    with pytest.raises(ModelFormatError, match="keeps the values of tensor 'secret' in another"):
        check_graph_bytes(_hidden_external_tensor(where), "decoder.onnx")


def _nested_ifs(depth: int) -> bytes:
    """A model whose graph holds an If whose branch holds an If ... ``depth`` graphs deep."""
    b = onnx_bytes
    inner = b.graph([b.node("Identity", ["z"], ["image"])], [], [])
    for _ in range(depth - 1):
        branch = b.attribute("then_branch", inner, b.ATTRIBUTE_GRAPH)
        inner = b.graph([b.node("If", ["c"], ["image"], branch)], [], [])
    return b.model(inner)


def test_graphs_nested_deeper_than_the_bound_are_refused():
    """The walk of a hostile file is bounded in depth, as its message says (an export nests 5
    messages deep): 30 graphs nested in If branches put the innermost 89 messages deep, 20
    put it 59 deep."""
    check_graph_bytes(_nested_ifs(20), "decoder.onnx")
    with pytest.raises(ModelFormatError, match="not a well-formed ONNX file: messages nest deeper"):
        check_graph_bytes(_nested_ifs(30), "decoder.onnx")


@pytest.mark.parametrize(
    "data, fragment",
    [(onnx_bytes.model(onnx_bytes.graph([], [], []))[:-3], "field 7 runs past the end"),
     (b"\x08\x08\x00\x01", "field number 0 at byte 3"),
     (b"\x08\x08\x3b\x08\x01\x3c", "wire type 3 (groups or invalid) in field 7"),
     (b"\x08" + b"\xff" * 10 + b"\x01", "a number longer than 10 bytes"),
     (b"\x08\x08\x39\x00\x00", "field 7 is cut short")],
    ids=["cut-short", "field-0", "group", "long-varint", "fixed-cut-short"],
)  # fmt: skip
def test_bytes_no_onnx_writer_makes_are_refused_as_not_well_formed(data, fragment):
    """A file cut short or holding what protobuf writers never emit is refused by the check
    itself, named, rather than read some other way than onnxruntime would read it."""
    with pytest.raises(ModelFormatError) as refused:
        check_graph_bytes(data, "decoder.onnx")
    assert str(refused.value).startswith(f"decoder.onnx is not a well-formed ONNX file: {fragment}")


# --- graphs that would run without end (a Loop's trip count) ---------------------------------


def _looping_prior(model: Path, refresh, trips: int, where: str = "initializer") -> None:
    data = onnx_bytes.looping_sampler(str(trips), 4, LATENT, where)
    _replace_graph(model, SAMPLER_FILE, data, refresh)


@pytest.mark.parametrize("where", ["initializer", "nested", "input"])
def test_a_loop_of_a_few_constant_trips_runs(where, model_copy, refresh_manifest):
    """The graphs below are loadable as written: only their trip counts get them refused
    (nested: 3 x 3 trips; input: the outer count of 3 alone is a constant)."""
    _looping_prior(model_copy, refresh_manifest, 3, where)
    if where == "input":  # the inner count is the outer body's input, whatever its value
        with pytest.raises(ModelFormatError, match="'trips' is not an int64 initializer"):
            BirdVAE(model_copy).sample(2, seed=0, prior="learned")
        return
    birds = BirdVAE(model_copy).sample(2, seed=0, prior="learned")
    assert birds.shape == (2, 3, SIZE, SIZE)


@pytest.mark.parametrize(
    "where, trips, message",
    [("initializer", 10**12, "whose trip count 'trips' is 1000000000000"),
     ("initializer", -1, "whose trip count 'trips' is -1"),
     ("constant", 3, "whose trip count 'trips' is not an int64 initializer"),
     ("condition", 3, "without a trip count"),
     ("function", 3, "whose trip count 't' is not an int64 initializer"),
     ("shadowed", 10**12, "whose trip count 'trips' is not an int64 initializer"),
     ("input", 10**12, "whose trip count 'trips' is not an int64 initializer"),
     ("sparse", 10**12, "whose trip count 'trips' is not an int64 initializer"),
     ("constant-too", 10**12, "whose trip count 'trips' is not an int64 initializer"),
     ("nested", 1000, "nested in loops that run its body 1000000 times in all")],
)  # fmt: skip
def test_a_loop_that_could_run_without_end_is_refused(where, trips, message):
    # Checked without running: were the check to let one through, onnxruntime would spin.
    data = onnx_bytes.looping_sampler(str(trips), 4, LATENT, where)
    with pytest.raises(ModelFormatError, match=f"prior.onnx holds a Loop {message}"):
        check_graph_bytes(data, "prior.onnx")


def test_a_scan_is_refused_however_few_its_rows():
    """A Scan runs once per row of a tensor made at run time: rows of no columns cost no memory,
    so a few bytes of graph could keep onnxruntime busy for ever (3 million rows: 14 s here),
    and a hung run ignores Ctrl-C. onnxruntime runs the same graph at 3 rows, so only its op
    gets it refused."""
    data = onnx_bytes.looping_sampler("3", 4, LATENT, "scan")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (codes,) = session.run(None, {"noise": np.ones((2, 4), np.float32)})
    assert codes.shape == (2, LATENT)
    with pytest.raises(ModelFormatError, match=r"prior\.onnx holds a Scan, which runs"):
        check_graph_bytes(data, "prior.onnx")


def test_a_sequence_map_is_refused():
    """A SequenceMap, like a Scan, runs its body once per element of a sequence made at run
    time: no constant bounds it, so it could hold bird-gen for ever."""
    body = onnx_bytes.graph(
        [onnx_bytes.node("Identity", ["x"], ["y"])],
        [onnx_bytes.value_info("x", [4])],
        [onnx_bytes.value_info("y", [4])],
    )
    mapped = onnx_bytes.node(
        "SequenceMap", ["s"], ["t"], onnx_bytes.attribute("body", body, onnx_bytes.ATTRIBUTE_GRAPH)
    )
    main = onnx_bytes.graph([onnx_bytes.node("SplitToSequence", ["z"], ["s"]), mapped,
                             onnx_bytes.node("ConcatFromSequence", ["t"], ["image"])],
                            [onnx_bytes.value_info("z", ["N", 4])],
                            [onnx_bytes.value_info("image", ["N", 4])])  # fmt: skip
    with pytest.raises(ModelFormatError, match=r"decoder\.onnx holds a SequenceMap, which runs"):
        check_graph_bytes(onnx_bytes.model(main), "decoder.onnx")


@pytest.mark.parametrize("where", ["graph", "branch", "domain"])
@pytest.mark.parametrize(
    "op",
    ["RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
     "Bernoulli"],
)  # fmt: skip
def test_a_graph_that_draws_its_own_random_numbers_is_refused(op, where):
    """The runtime draws every random number, so a seed means the same birds on every run; a
    graph with a random op of its own (even in a branch, or in the default domain named
    "ai.onnx", which onnxruntime runs as the default one) would break that without a word."""
    noisy = onnx_bytes.node(op, ["z"], ["r"])
    if where == "domain":
        noisy += onnx_bytes.field(7, "ai.onnx")
    add = onnx_bytes.node("Add", ["z", "r"], ["image"])
    if where == "branch":
        branch = onnx_bytes.graph([noisy, add], [], [onnx_bytes.value_info("image", ["N", 4])])
        nodes = [onnx_bytes.node("If", ["c"], ["image"], onnx_bytes.attribute(
            "then_branch", branch, onnx_bytes.ATTRIBUTE_GRAPH))]  # fmt: skip
    else:
        nodes = [noisy, add]
    main = onnx_bytes.graph(nodes, [onnx_bytes.value_info("z", ["N", 4])],
                            [onnx_bytes.value_info("image", ["N", 4])])  # fmt: skip
    with pytest.raises(ModelFormatError, match=f"decoder.onnx holds a {op} node, which draws"):
        check_graph_bytes(onnx_bytes.model(main), "decoder.onnx")


def test_onnxruntime_running_out_of_memory_is_not_blamed_on_the_graph():
    """onnxruntime reports a failed allocation as its own Fail, not a MemoryError: a graph
    asking for 4 TiB at run time was "decoder.onnx failed", a damaged model, exit 2."""
    from birdvae.runtime.graphs import run_graph

    # 2^38 rows of the input, 4 TiB: made from the input, so no onnxruntime folds it at load.
    shape = onnx_bytes.tensor("shape", [2], struct.pack("<2q", 1 << 38, 4), dtype=onnx_bytes.INT64)
    nodes = [onnx_bytes.node("Expand", ["z", "shape"], ["big"]),
             onnx_bytes.node("ReduceSum", ["big"], ["total"]),
             onnx_bytes.node("Add", ["z", "total"], ["image"])]  # fmt: skip
    main = onnx_bytes.graph(nodes, [onnx_bytes.value_info("z", ["N", 4])],
                            [onnx_bytes.value_info("image", ["N", 4])], [shape])  # fmt: skip
    session = ort.InferenceSession(onnx_bytes.model(main), providers=["CPUExecutionProvider"])
    with pytest.raises(MemoryError, match=r"decoder\.onnx"):
        run_graph(session, "decoder.onnx", ["image"], "z", np.zeros((1, 4), np.float32))


def test_a_wrong_call_to_a_graph_is_a_bug_not_the_graphs_fault():
    """run_graph blames the model file for what onnxruntime raises, since its input was
    checked; a call that is wrong in itself (the output names as one string, not a list) is
    bird-vae's bug and keeps its type and traceback."""
    from birdvae.runtime.graphs import run_graph

    nodes = [onnx_bytes.node("Identity", ["z"], ["image"])]
    main = onnx_bytes.graph(nodes, [onnx_bytes.value_info("z", ["N", 4])],
                            [onnx_bytes.value_info("image", ["N", 4])], [])  # fmt: skip
    session = ort.InferenceSession(onnx_bytes.model(main), providers=["CPUExecutionProvider"])
    batch = np.zeros((1, 4), np.float32)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        run_graph(session, "decoder.onnx", "image", "z", batch)  # type: ignore[arg-type]
    with pytest.raises(ModelFormatError, match=r"decoder\.onnx failed on a batch of 1"):
        run_graph(session, "decoder.onnx", ["image"], "z", np.zeros((1, 5), np.float32))


def test_bird_gen_refuses_a_prior_that_loops_too_long_in_one_line(
    cli, model_copy, refresh_manifest, tmp_path
):
    # 2,000 trips take onnxruntime moments: without the bound this would write birds.
    _looping_prior(model_copy, refresh_manifest, 2000)
    out = tmp_path / "birds.png"
    result = cli("--model", model_copy, "--prior", "learned", "--n", 2, "-o", out)
    one_error(result, SAMPLER_FILE, "Loop", "at most 1000")
    assert not out.exists()


def _busy_decoder(side: int, products: int) -> bytes:
    """A decoder of the format's signature (zeros) that first squares a [side, side] matrix of
    ones ``products`` times over: work made from a few bytes, constant all through, which
    onnxruntime's constant folding would do while the session opens."""
    one = onnx_bytes.attribute("value", onnx_bytes.tensor("one", [1], struct.pack("<f", 1.0)),
                               onnx_bytes.ATTRIBUTE_TENSOR)  # fmt: skip
    keep = onnx_bytes.attribute("keepdims", 0, onnx_bytes.ATTRIBUTE_INT)
    nodes = [onnx_bytes.node("ConstantOfShape", ["side"], ["m0"], one)]
    nodes += [onnx_bytes.node("MatMul", [f"m{i}", f"m{i}"], [f"m{i + 1}"]) for i in range(products)]
    nodes += [
        onnx_bytes.node("ReduceSum", [f"m{products}"], ["total"], keep),
        onnx_bytes.node("Mul", ["total", "zero"], ["nothing"]),
        onnx_bytes.node("MatMul", ["z", "weights"], ["flat"]),
        onnx_bytes.node("Add", ["flat", "nothing"], ["sum"]),
        onnx_bytes.node("Reshape", ["sum", "shape"], ["image"]),
    ]
    pixels = 3 * SIZE * SIZE
    initializers = [
        onnx_bytes.tensor("side", [2], struct.pack("<2q", side, side), dtype=onnx_bytes.INT64),
        onnx_bytes.tensor("zero", [], struct.pack("<f", 0.0)),
        onnx_bytes.tensor("weights", [LATENT, pixels], bytes(4 * LATENT * pixels)),
        onnx_bytes.tensor("shape", [4], struct.pack("<4q", -1, 3, SIZE, SIZE),
                          dtype=onnx_bytes.INT64),
    ]  # fmt: skip
    main = onnx_bytes.graph(
        nodes,
        [onnx_bytes.value_info("z", ["N", LATENT])],
        [onnx_bytes.value_info("image", ["N", 3, SIZE, SIZE])],
        initializers,
    )
    return onnx_bytes.model(main)


def test_a_busy_decoder_still_draws_what_it_draws(model_copy, refresh_manifest):
    """The decoder above is of the format: small, it runs and gives its zeros."""
    _replace_graph(model_copy, DECODER_FILE, _busy_decoder(8, 3), refresh_manifest)
    birds = BirdVAE(model_copy, threads=1).decode(np.ones((2, LATENT), np.float32))
    assert birds.shape == (2, 3, SIZE, SIZE) and not birds.any()


def _cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` has used (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
@pytest.mark.parametrize(
    ("side", "products"), [(2048, 5000), (6144, 4)], ids=["many-short-nodes", "long-nodes"]
)
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_a_graph_busy_for_ever_is_stopped_at_once(
    how, side, products, model_copy, refresh_manifest, tmp_path
):
    """A hostile decoder of a few kilobytes kept bird-gen busy past Ctrl-C and SIGTERM (hours
    of constant work done while its session opened): the stop now ends it within seconds, as
    at any other moment, and nothing is written. A node that takes longer than the grace
    (a product of two 6144x6144 matrices) is left running and the process ends without
    waiting, with its status rather than an abort of the interpreter ending under it."""
    _replace_graph(model_copy, DECODER_FILE, _busy_decoder(side, products), refresh_manifest)
    out = tmp_path / "birds.png"
    argv = [sys.executable, "-c", "from birdvae.runtime.entry import main; main()",
            "--model", str(model_copy), "--prior", "standard", "--n", "1", "--threads", "1",
            "-o", str(out)]  # fmt: skip
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _cpu_seconds(child.pid) < 2.0:  # start-up takes under one: in the decoder's work
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.1)
        stopped = time.monotonic()
        child.send_signal(getattr(signal, how))
        _, stderr = child.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        child.kill()
        child.wait()
    status, line = {"SIGINT": (130, "error: interrupted"),
                    "SIGTERM": (143, "error: terminated (SIGTERM)")}[how]  # fmt: skip
    assert child.returncode == status and line in stderr.splitlines(), stderr
    assert took < 10, f"took {took:.1f} s to stop"
    assert "Traceback" not in stderr and not out.exists()


# --- manifests --------------------------------------------------------------------------------


def _edit(**changes: object) -> dict:
    data = _manifest_data()
    data.update(changes)
    return data


def _with_file(name: str) -> dict:
    data = _manifest_data()
    data["files"][name] = data["files"].pop(DECODER_FILE)
    return data


def _nested(depth: int) -> str:
    text = json.dumps(_manifest_data())
    return text[:-1] + ', "source": ' + "[" * depth + "]" * depth + "}"


HOSTILE_MANIFESTS = {
    "files-a-list": (_edit(files=[DECODER_FILE, ENCODER_FILE]), "files must be an object"),
    "files-entry-a-string": (_edit(files={DECODER_FILE: "sha256"}), "exactly sha256 and bytes"),
    "parent-path": (_with_file("../../etc/passwd"), "'../../etc/passwd'"),
    "absolute-path": (_with_file("/etc/hostname"), "'/etc/hostname'"),
    "prior-absolute-path": (
        _edit(priors={"fitted": {"kind": "gaussian-mixture", "file": "/etc/hostname",
                                 "components": 2}}),
        "must be kind 'gaussian-mixture' in 'prior.npz'",
    ),
    "nested-ten-thousand-deep": (_nested(10_000), "nests"),
    "larger-than-a-megabyte": (json.dumps({**_manifest_data(), "source": "x" * (1 << 20)}),
                               "more than"),
    "latent-dim-a-trillion": (_edit(latent_dim=10**12), "latent_dim must be 1 to"),
    "image-size-a-million": (_edit(image_size=10**6), "image_size must be 1 to"),
    "latent-dim-a-string": (_edit(latent_dim="8"), "latent_dim must be an integer"),
    "latent-dim-true": (_edit(latent_dim=True), "latent_dim must be an integer"),
    "image-size-fractional": (_edit(image_size=16.5), "image_size must be an integer"),
    "size-a-string": (
        {**_manifest_data(), "files": {**_manifest_data()["files"],
                                       DECODER_FILE: {"sha256": "0" * 64, "bytes": "52924"}}},
        "bytes of 'decoder.onnx' must be an integer",
    ),
    "file-of-a-terabyte": (
        {**_manifest_data(), "files": {**_manifest_data()["files"],
                                       DECODER_FILE: {"sha256": "0" * 64, "bytes": 1 << 40}}},
        "at most",
    ),
    "components-a-billion": (
        _edit(priors={"fitted": {"kind": "gaussian-mixture", "file": MIXTURE_FILE,
                                 "components": 10**9}}),
        "more than the",
    ),
    "components-one-past-the-bound": (  # K x D x D factors: bounded by the square of D
        _edit(priors={"fitted": {"kind": "gaussian-mixture", "file": MIXTURE_FILE,
                                 "components": MAX_PRIOR_VALUES // _DIM**2 + 1}}),
        "values a mixture may have",
    ),
    "noise-dim-one-past-the-bound": (
        _edit(priors={"learned": {**_manifest_data()["priors"]["learned"],
                                  "noise_dim": MAX_LATENT_DIM + 1}}),
        f"noise_dim must be 1 to {MAX_LATENT_DIM}",
    ),
    "priors-a-list": (_edit(priors=["fitted"]), "priors must be an object"),
    "a-key-twice": (
        json.dumps(_manifest_data()).replace('"latent_dim"', '"latent_dim": 8, "latent_dim"', 1),
        "gives 'latent_dim' twice in one object",
    ),
    "a-nan-figure": (  # Python's json reads NaN; JSON and the web page's reader do not
        json.dumps(_edit(source={"val_bpd": float("nan")})),
        "NaN is not a JSON value",
    ),
    "temperature-of-401-digits": (
        json.dumps(_edit(default_temperature=10**400)),
        "default_temperature is too large: 10000000000000000000... (401 digits)",
    ),
    "image-size-of-4000-digits": (
        json.dumps(_edit(image_size=int("9" * 4000))),
        "image_size must be 1 to 256, not 99999999999999999999... (4000 digits)",
    ),
    "no-format-version": ({k: v for k, v in _manifest_data().items() if k != "format_version"},
                          "format_version None"),
}  # fmt: skip


def test_priors_at_their_bounds_are_read(model_copy):
    """The bounds are inclusive: a mixture of exactly MAX_PRIOR_VALUES factor values and a
    sampler of MAX_LATENT_DIM noise numbers are the format's, and only the file's own shapes
    (checked when it is read) can refuse them."""
    data = _manifest_data()
    data["priors"]["fitted"]["components"] = MAX_PRIOR_VALUES // _DIM**2
    data["priors"]["learned"]["noise_dim"] = MAX_LATENT_DIM
    _write_manifest(model_copy, data)
    priors = Manifest.load(model_copy).priors
    assert priors["fitted"].components == MAX_PRIOR_VALUES // _DIM**2
    assert priors["learned"].noise_dim == MAX_LATENT_DIM


@pytest.mark.parametrize("command", [[], ["info"]], ids=["sample", "info"])
@pytest.mark.parametrize(("data", "fragment"), HOSTILE_MANIFESTS.values(), ids=HOSTILE_MANIFESTS)
def test_hostile_manifests_are_one_error_line(cli, model_copy, out, data, fragment, command):
    _write_manifest(model_copy, data)
    args = [*command, "--model", model_copy] + ([] if command else ["-o", out / "b.png"])
    one_error(cli(*args), fragment)
    assert list(out.iterdir()) == []


def _link_outside(model: Path, target: Path) -> None:
    (model / DECODER_FILE).unlink()
    (model / DECODER_FILE).symlink_to(target)


def test_a_symbolic_link_is_refused_and_tells_nothing_of_its_target(cli, tmp_path):
    """Whether the link's target exists, and how large it is, must not show in the message."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_ed25519").write_bytes((TINY_MODEL / DECODER_FILE).read_bytes())  # same bytes
    messages = []
    for name, target in (("present", outside / "id_ed25519"), ("absent", outside / "missing")):
        model = Path(shutil.copytree(TINY_MODEL, tmp_path / name))
        _link_outside(model, target)
        for command in (["info"], ["-o", str(tmp_path / f"{name}.png")]):
            line = one_error(cli(*command, "--model", model), "symbolic link")
            messages.append(line.replace(str(model), "MODEL"))
    assert len(set(messages[::2])) == 1 and len(set(messages[1::2])) == 1, messages
    assert not list(tmp_path.glob("*.png"))


def test_a_linked_manifest_is_refused(cli, model_copy, tmp_path):
    real = tmp_path / "manifest.json"
    real.write_bytes((model_copy / MANIFEST_FILE).read_bytes())
    (model_copy / MANIFEST_FILE).unlink()
    (model_copy / MANIFEST_FILE).symlink_to(real)
    one_error(cli("info", "--model", model_copy), "symbolic link")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_refused_not_waited_on(cli, model_copy):
    (model_copy / DECODER_FILE).unlink()
    os.mkfifo(model_copy / DECODER_FILE)
    one_error(cli("info", "--model", model_copy), "not a regular file")


# --- prior.npz: lying headers, zip bombs, random bytes ---------------------------------------


def _npy(array: np.ndarray | None = None, descr: str = "<f4", shape: tuple = (), data=b"") -> bytes:
    """A .npy member; with ``array`` None, a header claiming ``shape`` over ``data``."""
    if array is not None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=True)
        return buffer.getvalue()
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def _npz(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return buffer.getvalue()


def _valid_arrays(k: int = 2, d: int = LATENT) -> dict[str, np.ndarray]:
    return {
        "weights": np.ones(k, np.float32),
        "means": np.zeros((k, d), np.float32),
        "cholesky": np.tile(np.eye(d, dtype=np.float32), (k, 1, 1)),
    }


def _put_prior(model: Path, data: bytes, refresh) -> None:
    (model / MIXTURE_FILE).write_bytes(data)
    refresh(model)


def _bomb(components: int) -> bytes:
    """Valid-looking arrays of ``components`` components: zeros that deflate a thousandfold."""
    arrays = _valid_arrays(components)
    arrays["cholesky"] = np.zeros_like(arrays["cholesky"])
    return _npz({name: _npy(array) for name, array in arrays.items()})


def _hidden_members(extra: int) -> bytes:
    """The three arrays and ``extra`` more members, behind an end record that counts three:
    zipfile reads every entry in the directory's bytes, whatever the count says."""
    payload = {f"p{i}": _npy(np.ones(1, np.float32)) for i in range(extra)}
    data = bytearray(_npz({**{n: _npy(a) for n, a in _valid_arrays().items()}, **payload}))
    data[-14:-10] = struct.pack("<2H", 3, 3)  # entries on this disk, entries
    return bytes(data)


def _valid_npz(compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    return _npz({n: _npy(a) for n, a in _valid_arrays().items()}, compression)


def _encrypted(data: bytes) -> bytes:
    """``data`` with every member marked encrypted (flag bit 0), in its local header and in the
    directory: zipfile then wants a password, and says so in an error of its own."""
    out = bytearray(data)
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = out.find(signature)
        while start != -1:
            out[start + flags_at] |= 1
            start = out.find(signature, start + 1)
    return bytes(out)


def _long_header() -> bytes:
    """The three arrays, weights behind a .npy header of 5,000 bytes (numpy's are 128)."""
    weights = _npy(np.ones(2, np.float32))
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (2,)}).encode()
    text += b" " * (4999 - len(text)) + b"\n"
    long = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + weights[-8:]
    return _npz({**{n: _npy(a) for n, a in _valid_arrays().items()}, "weights": long})


def _flipped_data() -> bytes:
    """The three arrays stored, the last byte of cholesky's data changed: its CRC disagrees."""
    data = bytearray(_valid_npz(zipfile.ZIP_STORED))
    at = data.find(b"PK\x01\x02") - 1  # the last byte before the directory: cholesky's last
    data[at] ^= 0x40
    return bytes(data)


HOSTILE_PRIORS = {
    "random-bytes": (np.random.default_rng(0).bytes(4096), "not a zip archive"),
    "header-claims-11-tib": (
        _npz({"weights": _npy(np.ones(2, np.float32)), "means": _npy(np.zeros((2, 8), np.float32)),
              "cholesky": _npy(shape=(2, 1 << 20, 1 << 20))}),
        "cholesky.npy declares 128 bytes, its header 8796093022336",
    ),
    "object-arrays": (
        _npz({name: _npy(np.array([{"a": 1}] * 2, dtype=object)) for name in
              ("weights", "means", "cholesky")}),
        "only float32 and float64",
    ),
    "complex-arrays": (
        _npz({name: _npy(array.astype(np.complex64)) for name, array in _valid_arrays().items()}),
        "only float32 and float64",
    ),
    "zip-bomb": (_bomb(4000), "weights has shape [4000], expected [2]"),
    "extra-member": (
        _npz({**{n: _npy(a) for n, a in _valid_arrays().items()}, "payload": _npy(np.ones(3))}),
        "more than its 3 arrays",
    ),
    "directory-hides-members": (_hidden_members(50), "its directory takes"),
    "header-lies-about-its-data": (
        _npz({"weights": _npy(shape=(2,), data=b"\0" * 4), "means": _npy(np.zeros((2, 8), "f4")),
              "cholesky": _npy(_valid_arrays()["cholesky"])}),
        "declares",
    ),
    "encrypted-members": (_encrypted(_valid_npz()), "not a plain .npy array"),
    "bzip2-members": (_valid_npz(zipfile.ZIP_BZIP2), "compressed in a way numpy never writes"),
    "header-of-5000-bytes": (_long_header(), "weights.npy has a 5000-byte header (at most 4096)"),
    "data-that-fails-its-crc": (_flipped_data(), "its zip archive is damaged"),
}  # fmt: skip


@pytest.mark.parametrize(("data", "fragment"), HOSTILE_PRIORS.values(), ids=HOSTILE_PRIORS)
def test_hostile_priors_are_one_error_line(cli, model_copy, refresh_manifest, out, data, fragment):
    _put_prior(model_copy, data, refresh_manifest)
    line = one_error(cli("--model", model_copy, "-o", out / "b.png"), MIXTURE_FILE, fragment)
    assert "pickle" not in line  # numpy's advice to load the file unsafely
    assert list(out.iterdir()) == []


def test_a_zip_bomb_is_refused_before_it_is_inflated(model_copy, refresh_manifest):
    """The bomb's arrays would take 26 MB (51 MB as float64); their headers are refused
    against the manifest's two components before any is read."""
    bomb = _bomb(100_000)
    assert len(bomb) < 100_000
    _put_prior(model_copy, bomb, refresh_manifest)
    vae = BirdVAE(model_copy, threads=1)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match="expected"):
            vae.prior("fitted")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(bomb) + (1 << 20), f"{peak / 1e6:.1f} MB used on a refused prior"


# --- what the model says is shown, never obeyed -----------------------------------------------


def test_info_shows_a_manifests_control_characters_escaped(cli, model_copy):
    _write_manifest(model_copy, {**_manifest_data(), "source": {"note": "\x1b[2J\x1b]0;owned\x07"}})
    result = cli("info", "--model", model_copy)
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b[2J" in result.stdout
