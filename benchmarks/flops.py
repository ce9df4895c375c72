"""Arithmetic of an ONNX graph and of this CPU: what ``runtime_speed.py`` sets a decoder's
speed against (section 3) and docs/EDGE.md's MFLOP per bird come from.

A FLOP here is half a multiply-add of a Conv, ConvTranspose, Gemm or MatMul (or their int8
forms), counted from the shapes onnx's shape inference gives at batch 1; elementwise ops are
left out, as is usual for convolutional networks, where they are a few percent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import onnx

PEAK_SIZE = 4096
PEAK_TRIES = 3

# Input indices (data, weight) of the ops whose arithmetic is counted; int8 ops count as FLOPs.
CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
TRANSPOSED_CONV_OPS = {"ConvTranspose": (0, 1)}
MATMUL_OPS = {"Gemm": (0, 1), "MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
INT8_OPS = {"DequantizeLinear", "QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger"}

Shapes = dict[str, tuple[Optional[int], ...]]


def inferred_shapes(proto: onnx.ModelProto, batch: int = 1) -> Shapes:
    """Every tensor's shape with the batch axis of the graph's inputs and outputs set to
    ``batch``; dimensions shape inference cannot fix are None."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    graph = proto.graph
    weights = {init.name for init in graph.initializer}
    del graph.value_info[:]
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name not in weights and dims:
            dims[0].dim_value = batch
    graph = onnx.shape_inference.infer_shapes(proto, data_prop=True).graph
    shapes: Shapes = {
        value.name: tuple(
            dim.dim_value if dim.HasField("dim_value") else None
            for dim in value.type.tensor_type.shape.dim
        )
        for value in [*graph.input, *graph.value_info, *graph.output]
    }
    shapes.update({init.name: tuple(init.dims) for init in graph.initializer})
    return shapes


def known_shape(shapes: Shapes, name: str) -> tuple[int, ...]:
    shape = shapes.get(name)
    if shape is None or any(dim is None for dim in shape):
        raise ValueError(f"shape inference left the shape of {name!r} unknown ({shape})")
    return tuple(int(dim) for dim in shape if dim is not None)


def node_flops(node: onnx.NodeProto, shapes: Shapes) -> int:
    """2 x multiply-adds of one Conv, ConvTranspose, Gemm or MatMul node; 0 for other ops."""
    op = node.op_type
    if op in CONV_OPS:  # 2 x output elements x Cin/groups x kh x kw
        weight = known_shape(shapes, node.input[CONV_OPS[op][1]])
        return 2 * int(np.prod(known_shape(shapes, node.output[0]))) * int(np.prod(weight[1:]))
    if op in TRANSPOSED_CONV_OPS:  # 2 x input elements x Cout/groups x kh x kw
        data, weight = (known_shape(shapes, node.input[i]) for i in TRANSPOSED_CONV_OPS[op])
        return 2 * int(np.prod(data)) * int(np.prod(weight[1:]))
    if op in MATMUL_OPS:  # 2 x M x N x K
        data = known_shape(shapes, node.input[MATMUL_OPS[op][0]])
        transposed = any(a.name == "transA" and a.i for a in node.attribute)
        inner = data[0] if op == "Gemm" and transposed else data[-1]
        return 2 * int(np.prod(known_shape(shapes, node.output[0]))) * inner
    return 0


def graph_flops(path: Path) -> tuple[int, str]:
    """FLOPs for one bird (or photo) through ``path``'s graph, and its precision."""
    proto = onnx.load(str(path))
    shapes = inferred_shapes(proto, batch=1)
    flops = sum(node_flops(node, shapes) for node in proto.graph.node)
    precision = "int8" if any(node.op_type in INT8_OPS for node in proto.graph.node) else "fp32"
    return flops, precision


def peak_gflops(size: int = PEAK_SIZE, tries: int = PEAK_TRIES) -> float:
    """The best fp32 rate of numpy's BLAS on a size x size matrix product, GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)  # warm-up: threads started, pages touched
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    """Print the MFLOP per bird (or photo) of each graph of the shipped models, or of the ONNX
    files given: ``python benchmarks/flops.py [GRAPH.onnx ...]`` (needs onnx: the train extra)."""
    import sys

    from birdvae.runtime.format import DECODER_FILE, ENCODER_FILE
    from birdvae.runtime.model import SHIPPED_MODELS, shipped_model_dir

    paths = [Path(arg) for arg in sys.argv[1:]] or [
        shipped_model_dir(name) / file
        for name in SHIPPED_MODELS
        for file in (DECODER_FILE, ENCODER_FILE)
    ]
    print("| graph | precision | MFLOP per image |\n|---|---|---|")
    for path in paths:
        flops, precision = graph_flops(path)
        print(f"| {path} | {precision} | {flops / 1e6:,.1f} |")


if __name__ == "__main__":
    main()
