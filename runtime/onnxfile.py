"""An ONNX file checked, before onnxruntime sees it, for values it would read from other files
and for loops it could run without end.

An ONNX tensor may keep its values outside the file (``external_data``: a ``location``, an
offset, a length). onnxruntime resolves that location against the model's folder or, for a model
handed over as bytes as the runtime does, against the working directory, and reads the file into
the tensor, so a hostile graph could copy any file the user can read (``.ssh/id_ed25519``) into
the birds it draws, past the manifest's hash, which covers the ``.onnx`` bytes alone. The format
keeps every value inside the ``.onnx``; a graph with a tensor stored elsewhere is refused.

``onnx`` is no runtime dependency, so this reads the protobuf wire format itself, and only the
fields on the way to a tensor: initializers and sparse initializers, attribute tensors (Constant
and the like), subgraphs (If, Loop, Scan), local functions and training graphs. Each length is
checked against what is left, nesting and field counts are bounded, and what no ONNX writer
emits (groups, field number 0) is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Iterator

from .format import RANDOM_OPS, ModelFormatError

# Where tensors live, by message: field number -> the message type it holds (onnx.proto).
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},  # initialization, algorithm
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},  # values, indices
    "tensor": {},
}
TENSOR_NAME, TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 8, 13, 14
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_INT64_DATA, TENSOR_RAW_DATA = 1, 2, 7, 9
INT64 = 7  # TensorProto.DataType
MODEL_GRAPH, MODEL_FUNCTION, FUNCTION_NODE = 7, 25, 7
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_SPARSE_INITIALIZER = 1, 5, 11, 15
VALUE_NAME, SPARSE_VALUES = 1, 1
NODE_INPUT, NODE_OUTPUT, NODE_OP_TYPE, NODE_ATTRIBUTE, NODE_DOMAIN = 1, 2, 4, 5, 7
ATTRIBUTE_GRAPHS = (6, 11)  # g, graphs
MAX_LOOP_TRIPS = 1000  # the learned prior's solver runs 10 steps; a few hundred would be slow
# Ops that run their body once per element of a tensor known only at run time: an empty tensor
# of 1e18 rows costs no memory, so nothing short of running the graph bounds them.
UNCOUNTED_LOOPS = frozenset({"Scan", "SequenceMap"})
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
MAX_DEPTH = 64  # messages inside messages; an exported graph nests 5 deep, protobuf allows 100
MAX_FIELDS = 1 << 22  # fields visited in all; the shipped graphs have a few thousand


class _Malformed(Exception):
    """The bytes are not a protobuf message as ONNX writes them; the message says where."""


def check_graph_bytes(model: bytes, name: str) -> None:
    """Refuse (ModelFormatError) a graph ``name`` whose bytes ``model`` are not a well-formed
    ONNX message, hold a tensor whose values are stored in another file, or hold a loop that
    could run without end.

    onnxruntime runs a Loop until its trip count or its condition says stop, so a hostile graph
    of a few bytes could keep ``bird-gen`` busy forever before it draws anything. The format's
    loops (the learned prior's solver steps) run a fixed number of times: every Loop's trip
    count must be an int64 initializer of its graph or an enclosing one, at most
    MAX_LOOP_TRIPS, and so must the product of the counts of loops inside loops (so a Loop
    inside a local function, which has no initializers, is refused). A Scan or SequenceMap runs
    once per row of a tensor made at run time, which no constant bounds: the format has none.
    A hung onnxruntime call ignores Ctrl-C, so this is the only place to stop such a graph.
    A graph that draws random numbers of its own (RANDOM_OPS) is refused too: a seed would no
    longer mean the same birds."""
    view = memoryview(model)
    try:
        external = _first_external_tensor(view)  # walks every field first, within bounds
        refused = _first_refused_node(view) if external is None else None
    except _Malformed as exc:
        raise ModelFormatError(f"{name} is not a well-formed ONNX file: {exc}") from None
    if external is not None:
        raise ModelFormatError(
            f"{name} keeps the values of tensor {external!r} in another file (ONNX external "
            "data); the format keeps every value inside the .onnx, so it is not loaded"
        )
    if refused in RANDOM_OPS:
        raise ModelFormatError(
            f"{name} holds a {refused} node, which draws random numbers of its own; the "
            "format's graphs are deterministic (the runtime draws every random number, so a "
            "seed means the same birds), so it is not loaded"
        )
    if refused is not None:
        raise ModelFormatError(
            f"{name} holds {refused}; the format's loops run a fixed number of times, "
            f"at most {MAX_LOOP_TRIPS}, so it is not loaded"
        )


def _first_refused_node(model: memoryview) -> str | None:
    """The first node the format refuses: a random op (RANDOM_OPS), by its name, or a loop
    whose count is not a bounded constant, described; None when there is none.

    Nested loops multiply: a Loop's body runs as many times as every Loop around it allows, so
    the bound is on the product of the trip counts on the way down."""
    # (a graph or a local function's body, the field its nodes are in, the constants in scope,
    # how many times the graph runs, depth); a function has no initializers, so no Loop in one
    # has a constant trip count.
    graphs: list[tuple[memoryview, int, dict[str, int | None], int, int]] = []
    for number, value in _fields(model):
        if number == MODEL_GRAPH and isinstance(value, memoryview):
            graphs.append((value, GRAPH_NODE, {}, 1, 1))
        elif number == MODEL_FUNCTION and isinstance(value, memoryview):
            graphs.append((value, FUNCTION_NODE, {}, 1, 1))
    while graphs:
        data, node_field, outer, runs, depth = graphs.pop()
        if depth > MAX_DEPTH:
            raise _Malformed(f"graphs nest deeper than {MAX_DEPTH}")
        constants = dict(outer)
        computed: set[str] = set()  # names this graph's inputs and nodes define: not constants
        nodes: list[tuple[str, list[str], list[memoryview]]] = []
        in_function = node_field != GRAPH_NODE  # its other fields are no graph's
        for number, value in _fields(data):
            if not isinstance(value, memoryview) or (in_function and number != node_field):
                continue
            if number == GRAPH_INITIALIZER:
                tensor_name, count = _int64_scalar(value)
                constants[tensor_name] = count
            elif number == GRAPH_SPARSE_INITIALIZER:
                computed.update(_sparse_names(value))  # onnxruntime densifies them, last wins
            elif number == GRAPH_INPUT:
                computed.add(_value_name(value))
            elif number == node_field:
                op, inputs, outputs, inner = _node(value)
                computed.update(outputs)
                nodes.append((op, inputs, inner))
        # A subgraph's input or a node's output of an outer initializer's name hides it, and
        # a graph input of an initializer's name could be fed another value.
        constants.update(dict.fromkeys(computed))
        for op, inputs, inner in nodes:
            inner_runs = runs
            if op in RANDOM_OPS:
                return op
            if op in UNCOUNTED_LOOPS:
                return f"a {op}, which runs once per row of a tensor made at run time"
            if op == "Loop":
                trips = inputs[0] if inputs else ""
                if not trips:
                    return "a Loop without a trip count"
                count = constants.get(trips)
                if count is None or not 0 <= count <= MAX_LOOP_TRIPS:
                    shown = "not an int64 initializer" if count is None else f"{count}"
                    return f"a Loop whose trip count {trips!r} is {shown}"
                inner_runs = runs * max(count, 1)
                if inner_runs > MAX_LOOP_TRIPS:
                    return f"a Loop nested in loops that run its body {inner_runs} times in all"
            graphs += [(graph, GRAPH_NODE, constants, inner_runs, depth + 1) for graph in inner]
    return None


def _node(data: memoryview) -> tuple[str, list[str], list[str], list[memoryview]]:
    """A NodeProto's op type (an empty one outside the default domain), inputs, outputs and
    subgraphs."""
    op, domain = "", ""
    inputs: list[str] = []
    outputs: list[str] = []
    subgraphs: list[memoryview] = []
    for number, value in _fields(data):
        if not isinstance(value, memoryview):
            continue
        if number == NODE_OUTPUT:
            outputs.append(bytes(value).decode("utf-8", "replace"))
        elif number == NODE_OP_TYPE:
            op = bytes(value).decode("utf-8", "replace")
        elif number == NODE_DOMAIN:
            domain = bytes(value).decode("utf-8", "replace")
        elif number == NODE_INPUT:
            inputs.append(bytes(value).decode("utf-8", "replace"))
        elif number == NODE_ATTRIBUTE:
            for field_number, inner in _fields(value):
                if field_number in ATTRIBUTE_GRAPHS and isinstance(inner, memoryview):
                    subgraphs.append(inner)
    return (op if domain in ("", "ai.onnx") else ""), inputs, outputs, subgraphs


def _sparse_names(data: memoryview) -> list[str]:
    """The name of a SparseTensorProto's values tensor (the name it is known by)."""
    return [
        _int64_scalar(value)[0]
        for number, value in _fields(data)
        if number == SPARSE_VALUES and isinstance(value, memoryview)
    ]


def _value_name(data: memoryview) -> str:
    """A ValueInfoProto's name."""
    for number, value in _fields(data):
        if number == VALUE_NAME and isinstance(value, memoryview):
            return bytes(value).decode("utf-8", "replace")
    return ""


def _int64_scalar(data: memoryview) -> tuple[str, int | None]:
    """A TensorProto's name and, if it is one int64 number, that number (else None)."""
    name, dtype, dims, values = "", 0, 0, []
    for number, value in _fields(data):
        if number == TENSOR_NAME and isinstance(value, memoryview):
            name = bytes(value).decode("utf-8", "replace")
        elif number == TENSOR_DATA_TYPE and isinstance(value, int):
            dtype = value
        elif number == TENSOR_DIMS:
            dims += 1
        elif number == TENSOR_INT64_DATA:
            values += _packed_varints(value) if isinstance(value, memoryview) else [value]
        elif number == TENSOR_RAW_DATA and isinstance(value, memoryview) and len(value) == 8:
            values.append(int.from_bytes(bytes(value), "little", signed=True))
    if dtype != INT64 or dims > 1 or len(values) != 1:
        return name, None
    count = values[0]
    return name, count - (1 << 64) if count >= 1 << 63 else count


def _packed_varints(data: memoryview) -> list[int]:
    out, position = [], 0
    while position < len(data):
        value, position = _varint(data, position)
        out.append(value)
    return out


def _first_external_tensor(model: memoryview) -> str | None:
    """The name of the first tensor with external data, or None; depth-first, iteratively."""
    stack = [("model", model, 1)]
    budget = MAX_FIELDS
    while stack:
        kind, data, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Malformed(f"messages nest deeper than {MAX_DEPTH}")
        children = _CHILDREN[kind]
        external, tensor_name = False, ""
        for number, value in _fields(data):
            budget -= 1
            if budget < 0:
                raise _Malformed(f"more than {MAX_FIELDS} fields")
            if kind == "tensor":
                if number == TENSOR_EXTERNAL_DATA or (number == TENSOR_DATA_LOCATION and value):
                    external = True
                elif number == TENSOR_NAME and isinstance(value, memoryview):
                    tensor_name = bytes(value).decode("utf-8", "replace")
            elif number in children:
                if not isinstance(value, memoryview):
                    raise _Malformed(f"field {number} of a {kind} is not a message")
                stack.append((children[number], value, depth + 1))
        if external:
            return tensor_name
    return None


def _fields(data: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of each field: an int for varints (and, meaning "present", 1 for
    fixed-width values), the bytes for length-delimited ones."""
    position, end = 0, len(data)
    while position < end:
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed(f"field number 0 at byte {position}")
        value: int | memoryview
        if wire == VARINT:
            value, position = _varint(data, position)
        elif wire == LENGTH_DELIMITED:
            length, position = _varint(data, position)
            if length > end - position:
                raise _Malformed(f"field {number} runs past the end of its message")
            value, position = data[position : position + length], position + length
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if size > end - position:
                raise _Malformed(f"field {number} is cut short")
            value, position = 1, position + size
        else:
            raise _Malformed(f"wire type {wire} (groups or invalid) in field {number}")
        yield number, value


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    """The base-128 integer at ``position`` and the position after it (at most 10 bytes)."""
    if position < len(data) and data[position] < 0x80:  # one byte: most keys and lengths
        return data[position], position + 1
    result = 0
    for shift in range(0, 70, 7):
        if position >= len(data):
            raise _Malformed("a number is cut short at the end")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
    raise _Malformed(f"a number longer than 10 bytes before byte {position}")
