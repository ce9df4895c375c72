"""The FLOP count that docs/EDGE.md quotes and the speed benchmark sets against this CPU's peak:
exact on small graphs whose arithmetic is known by hand, and the docs' figures for the shipped
models."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
import flops  # noqa: E402  (benchmarks/ is put on the path by conftest)
from onnx import TensorProto, helper  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent


def _graph(node: onnx.NodeProto, inputs: dict, weights: dict, output: str, tmp_path: Path) -> Path:
    graph = helper.make_graph(
        [node, helper.make_node("Relu", [output], ["y"])],  # elementwise: not counted
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *s]) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            helper.make_tensor(n, TensorProto.FLOAT, s, [0.5] * int(np.prod(s)))
            for n, s in weights.items()
        ],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


CASES = {
    # 2 x output elements (4 x 8 x 8) x Cin x kh x kw (3 x 3 x 3)
    "conv": (helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             {"x": [3, 8, 8]}, {"w": [4, 3, 3, 3]}, 2 * 256 * 27),
    # 2 x input elements (4 x 4 x 4) x Cout x kh x kw (2 x 2 x 2)
    "conv-transpose": (helper.make_node("ConvTranspose", ["x", "w"], ["c"], strides=[2, 2]),
                       {"x": [4, 4, 4]}, {"w": [4, 2, 2, 2]}, 2 * 64 * 8),
    # 2 x M x N x K with M = 1 bird
    "matmul": (helper.make_node("MatMul", ["x", "w"], ["c"]), {"x": [16]}, {"w": [16, 32]},
               2 * 32 * 16),
    "gemm": (helper.make_node("Gemm", ["x", "w"], ["c"]), {"x": [16]}, {"w": [16, 8]}, 2 * 8 * 16),
}  # fmt: skip


@pytest.mark.parametrize(("node", "inputs", "weights", "want"), CASES.values(), ids=CASES)
def test_a_graph_counts_twice_its_multiply_adds(tmp_path, node, inputs, weights, want):
    assert flops.graph_flops(_graph(node, inputs, weights, "c", tmp_path)) == (want, "fp32")


@pytest.mark.parametrize("model", ["birds32", "birds64"])
def test_the_edge_guides_figures_are_the_shipped_graphs_counts(model):
    row = next(line for line in (ROOT / "docs" / "EDGE.md").read_text().splitlines()
               if line.startswith(f"| `{model}`"))  # fmt: skip
    decode, encode = (float(x) for x in re.findall(r"\| ([\d.]+) MFLOP", row))
    folder = ROOT / "models" / model
    for graph, want in (("decoder.onnx", decode), ("encoder.onnx", encode)):
        count, precision = flops.graph_flops(folder / graph)
        assert round(count / 1e6, 1) == want, graph
        assert precision == "int8"


def test_the_script_prints_a_row_for_each_graph_it_is_given(tmp_path, monkeypatch, capsys):
    node, inputs, weights, want = CASES["conv"]
    path = _graph(node, inputs, weights, "c", tmp_path)
    monkeypatch.setattr("sys.argv", ["flops.py", str(path), str(path)])
    flops.main()
    rows = capsys.readouterr().out.splitlines()
    assert rows[2:] == [f"| {path} | fp32 | {want / 1e6:,.1f} |"] * 2
