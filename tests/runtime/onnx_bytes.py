"""ONNX files written byte by byte, for tests that need graphs the exporter would never make.

The runtime tests run without the ``onnx`` package, so this writes the protobuf wire format
itself: just the messages and fields the tests use (onnx.proto's field numbers).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Union

FLOAT, INT64 = 1, 7  # TensorProto.DataType
ATTRIBUTE_INT, ATTRIBUTE_TENSOR, ATTRIBUTE_GRAPH = 2, 4, 5  # AttributeProto.AttributeType
Value = Union[int, bytes, str]


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, value: Value) -> bytes:
    """One field: a varint for an int, length-delimited for bytes and text."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def message(*fields: tuple[int, Value]) -> bytes:
    return b"".join(field(number, value) for number, value in fields)


def tensor(
    name: str, dims: Sequence[int], data: bytes = b"", dtype: int = FLOAT, external: str = ""
) -> bytes:
    """A TensorProto holding ``data``, or stored in the file ``external`` (ONNX external data)."""
    fields: list[tuple[int, Value]] = [*((1, d) for d in dims), (2, dtype), (8, name)]
    if external:
        fields += [(13, message((1, "location"), (2, external))), (14, 1)]
    else:
        fields.append((9, data))
    return message(*fields)


def value_info(name: str, dims: Sequence[int | str]) -> bytes:
    """A float tensor's name and shape; a str dimension is symbolic (the batch axis N)."""
    shape = message(*((1, message((2 if isinstance(d, str) else 1, d))) for d in dims))
    return message((1, name), (2, message((1, message((1, FLOAT), (2, shape))))))


def attribute(name: str, value: int | bytes, kind: int) -> bytes:
    number = {ATTRIBUTE_INT: 3, ATTRIBUTE_TENSOR: 5, ATTRIBUTE_GRAPH: 6}[kind]
    return message((1, name), (number, value), (20, kind))


def node(op: str, inputs: Sequence[str], outputs: Sequence[str], *attributes: bytes) -> bytes:
    names = [*((1, i) for i in inputs), *((2, o) for o in outputs)]
    return message(*names, (4, op), *((5, a) for a in attributes))


def graph(
    nodes: Sequence[bytes],
    inputs: Sequence[bytes],
    outputs: Sequence[bytes],
    initializers: Sequence[bytes] = (),
    sparse_initializers: Sequence[bytes] = (),
) -> bytes:
    return message(
        *((1, n) for n in nodes),
        (2, "g"),
        *((5, t) for t in initializers),
        *((11, i) for i in inputs),
        *((12, o) for o in outputs),
        *((15, s) for s in sparse_initializers),
    )


def model(main: bytes, *extra: tuple[int, bytes]) -> bytes:
    """A ModelProto, IR 8 and opset 17 as the format says; ``extra`` adds fields (functions,
    training graphs)."""
    return message((1, 8), (8, message((1, ""), (2, 17))), (7, main), *extra)


def leaky_graph(
    input_name: str,
    input_dims: Sequence[int],
    outputs: Sequence[tuple[str, Sequence[int]]],
    location: str,
    where: str = "subgraph",
) -> bytes:
    """A graph of the format's signature whose outputs are the float32 values of the file
    ``location``: what a hostile model could read from the user's working directory.

    ``where`` puts the external tensor in an If branch (which onnxruntime loads whatever the
    optimisation level), a top-level initializer, a Constant node or a sparse initializer.
    """
    size = math.prod(outputs[0][1])
    flat = math.prod(input_dims)
    shape = struct.pack(f"<{len(outputs[0][1]) + 1}q", -1, *outputs[0][1])
    initializers = [
        tensor("zeros", [flat, size], bytes(4 * flat * size)),
        tensor("shape", [len(outputs[0][1]) + 1], shape, dtype=INT64),
    ]
    nodes = [node("Flatten", [input_name], ["flat"]), node("MatMul", ["flat", "zeros"], ["m"])]
    secret = tensor("secret", [size], external=location)
    sparse: list[bytes] = []
    if where == "subgraph":
        then, other = (
            graph([node("Identity", ["secret"], [out])], [], [value_info(out, [size])], [secret])
            for out in ("w_then", "w_else")
        )
        zero = attribute("value", tensor("z0", [], bytes(4)), ATTRIBUTE_TENSOR)
        branches = (
            attribute("then_branch", then, ATTRIBUTE_GRAPH),
            attribute("else_branch", other, ATTRIBUTE_GRAPH),
        )
        nodes += [
            node("ReduceSum", [input_name], ["total"], attribute("keepdims", 0, ATTRIBUTE_INT)),
            node("Constant", [], ["zero"], zero),
            node("Greater", ["total", "zero"], ["positive"]),
            node("If", ["positive"], ["w"], *branches),
        ]
    elif where == "initializer":
        initializers.append(tensor("w", [size], external=location))
    elif where == "constant":
        nodes.append(node("Constant", [], ["w"], attribute("value", secret, ATTRIBUTE_TENSOR)))
    elif where == "sparse":
        indices = tensor("i", [size], struct.pack(f"<{size}q", *range(size)), dtype=INT64)
        values = tensor("w", [size], external=location)
        sparse.append(message((1, values), (2, indices), (3, size)))
    else:
        raise ValueError(where)
    first = outputs[0][0]
    nodes += [node("Add", ["m", "w"], ["sum"]), node("Reshape", ["sum", "shape"], [first])]
    nodes += [node("Identity", [first], [name]) for name, _ in outputs[1:]]
    return model(
        graph(
            nodes,
            [value_info(input_name, ["N", *input_dims])],
            [value_info(name, ["N", *dims]) for name, dims in outputs],
            initializers,
            sparse,
        )
    )


BOOL = 9  # TensorProto.DataType


def typed_value_info(name: str, elem: int, dims: Sequence[int | str]) -> bytes:
    """value_info for any element type (``dims`` empty: a scalar)."""
    shape = message(*((1, message((2 if isinstance(d, str) else 1, d))) for d in dims))
    return message((1, name), (2, message((1, message((1, elem), (2, shape))))))


def looping_sampler(trips: str, noise_dim: int, latent: int, where: str = "initializer") -> bytes:
    """A learned prior (noise [N, noise_dim] -> z [N, latent]) that passes its noise through a
    Loop of Identity nodes ``trips`` times before a MatMul by zeros: a graph onnxruntime runs
    for as long as the trip count says. ``where`` gives the count as an int64 initializer, as
    a Constant node's output (computed, not an initializer), leaves it out (a Loop that only
    its condition could stop), puts the Loop inside a local function, nests it in another
    Loop (below), or hides it behind an initializer of 3 of the same name ("sparse",
    "constant-too"); "scan" makes it a Scan over a ConstantOfShape of ``trips`` empty rows
    instead, which onnxruntime runs once per row while the rows cost no memory."""
    body = graph(
        [node("Identity", ["cond"], ["cond_out"]), node("Identity", ["x"], ["x_out"])],
        [typed_value_info("i", INT64, []), typed_value_info("cond", BOOL, []),
         value_info("x", ["N", noise_dim])],
        [typed_value_info("cond_out", BOOL, []), value_info("x_out", ["N", noise_dim])],
    )  # fmt: skip
    count = tensor("trips", [], struct.pack("<q", int(trips)), dtype=INT64)
    initializers = [tensor("zeros", [noise_dim, latent], bytes(4 * noise_dim * latent))]
    nodes = [node("MatMul", ["looped", "zeros"], ["z"])]
    loop_inputs = ["trips", "", "noise"]
    extra: list[tuple[int, bytes]] = []
    sparse: list[bytes] = []
    if where == "initializer":
        initializers.append(count)
    elif where == "constant":
        constant = attribute("value", count, ATTRIBUTE_TENSOR)
        nodes.insert(0, node("Constant", [], ["trips"], constant))
    elif where in ("shadowed", "input", "nested"):
        # An outer Loop around the counted one. "shadowed": the outer count is an initializer
        # 'trips' of 3, and the outer body redefines 'trips' by a Constant node; "input": the
        # same, by a loop-carried input of the outer body (fed the count); "nested": both
        # loops run 'trips' times, an initializer.
        small = tensor("trips", [], struct.pack("<q", 3), dtype=INT64)
        initializers.append(count if where == "nested" else small)
        counted = attribute("body", body, ATTRIBUTE_GRAPH)
        inner = node("Loop", ["trips", "", "y"], ["y_out"], counted)
        nodes_in = [node("Identity", ["c"], ["c_out"]), inner]  # names unused inside: SSA
        inputs_in = [typed_value_info("j", INT64, []), typed_value_info("c", BOOL, []),
                     value_info("y", ["N", noise_dim])]  # fmt: skip
        outputs_in = [typed_value_info("c_out", BOOL, []), value_info("y_out", ["N", noise_dim])]
        if where == "shadowed":
            nodes_in.insert(1, node("Constant", [], ["trips"], attribute("value", count, 4)))
        elif where == "input":
            initializers.append(tensor("big", [], struct.pack("<q", int(trips)), dtype=INT64))
            inputs_in.append(typed_value_info("trips", INT64, []))
            outputs_in.append(typed_value_info("trips_out", INT64, []))
            nodes_in.append(node("Identity", ["trips"], ["trips_out"]))
            loop_inputs = ["trips", "", "noise", "big"]
        body = graph(nodes_in, inputs_in, outputs_in)
    elif where == "sparse":  # an initializer of 3 and a sparse one of the same name
        initializers.append(tensor("trips", [], struct.pack("<q", 3), dtype=INT64))
        values = tensor("trips", [1], struct.pack("<q", int(trips)), dtype=INT64)
        indices = tensor("at", [1], struct.pack("<q", 0), dtype=INT64)
        sparse = [message((1, values), (2, indices), (3, 1))]
    elif where == "constant-too":  # an initializer of 3 and a Constant of the same name
        initializers.append(tensor("trips", [], struct.pack("<q", 3), dtype=INT64))
        nodes.insert(0, node("Constant", [], ["trips"], attribute("value", count, 4)))
    elif where == "scan":
        rows = tensor("rows", [2], struct.pack("<2q", int(trips), 0), dtype=INT64)
        step = graph([node("Identity", ["x"], ["x_out"])],
                     [value_info("x", ["N", noise_dim]), value_info("row", [0])],
                     [value_info("x_out", ["N", noise_dim])])  # fmt: skip
        scanned = [attribute("body", step, ATTRIBUTE_GRAPH),
                   attribute("num_scan_inputs", 1, ATTRIBUTE_INT)]  # fmt: skip
        nodes[:0] = [node("ConstantOfShape", ["rows"], ["empty"]),
                     node("Scan", ["noise", "empty"], ["looped"], *scanned)]  # fmt: skip
        return model(graph(nodes, [value_info("noise", ["N", noise_dim])],
                           [value_info("z", ["N", latent])], [*initializers, rows]))  # fmt: skip
    elif where == "condition":
        initializers.append(tensor("go", [], b"\x01", dtype=BOOL))
        loop_inputs = ["", "go", "noise"]
    elif where == "function":
        function = message(
            (1, "spin"), (4, "x"), (5, "y"),
            (7, node("Constant", [], ["t"], attribute("value", count, ATTRIBUTE_TENSOR))),
            (7, node("Loop", ["t", "", "x"], ["y"], attribute("body", body, ATTRIBUTE_GRAPH))),
            (9, message((1, ""), (2, 17))), (10, "local"),
        )  # fmt: skip
        nodes.insert(0, message((1, "noise"), (2, "looped"), (4, "spin"), (7, "local")))
        extra.append((25, function))
        main = graph(nodes, [value_info("noise", ["N", noise_dim])],
                     [value_info("z", ["N", latent])], initializers)  # fmt: skip
        return message((1, 8), (8, message((1, ""), (2, 17))), (8, message((1, "local"), (2, 1))),
                       (7, main), *extra)  # fmt: skip
    else:
        raise ValueError(where)
    outputs = ["looped", "big_out"] if where == "input" else ["looped"]
    loop = node("Loop", loop_inputs, outputs, attribute("body", body, ATTRIBUTE_GRAPH))
    nodes.insert(len(nodes) - 1, loop)
    signature = [value_info("noise", ["N", noise_dim])], [value_info("z", ["N", latent])]
    return model(graph(nodes, *signature, initializers, sparse))


def typed_graph(
    input_name: str,
    input_dims: Sequence[int],
    outputs: Sequence[tuple[str, Sequence[int]]],
    elem: int,
    fill: float = 0.0,
    batch: int | str = "N",
) -> bytes:
    """A graph of the format's signature whose outputs, of the right names and shapes, hold
    values of TensorProto type ``elem`` (STRING, DOUBLE) where the format needs float32, or
    float32 values made from ``fill`` (NaN: every output NaN); ``batch`` an int fixes the
    batch axis the format leaves free."""
    size = math.prod(input_dims)
    nodes = [node("Flatten", [input_name], ["flat"])]
    initializers = []
    for name, dims in outputs:
        count = math.prod(dims)
        initializers += [
            tensor(f"{name}_zeros", [size, count], struct.pack("<f", fill) * (size * count)),
            tensor(f"{name}_shape", [len(dims) + 1], struct.pack(f"<{len(dims) + 1}q", -1, *dims),
                   dtype=INT64),
        ]  # fmt: skip
        nodes += [
            node("MatMul", ["flat", f"{name}_zeros"], [f"{name}_flat"]),
            node("Reshape", [f"{name}_flat", f"{name}_shape"], [f"{name}_float"]),
            node("Cast", [f"{name}_float"], [name], attribute("to", elem, ATTRIBUTE_INT)),
        ]
    signature = (
        [value_info(input_name, [batch, *input_dims])],
        [typed_value_info(name, elem, [batch, *dims]) for name, dims in outputs],
    )
    return model(graph(nodes, *signature, initializers))
