"""``prior.onnx``: the learned prior's sampler as one ONNX ``Loop`` over a single traced step.

Every solver step computes the same thing over its own row of constants (training/prior.py's
``Sampler.step``), so the graph holds that step once, as the body of a ``Loop`` that runs it
once per noise level. onnxruntime optimises every node of a graph each time ``bird-gen`` opens
it, so a graph with the step written out once per noise level would take that many times
longer to open (docs/BENCHMARKS.md: 49 ms against 10 for ten steps), more than drawing 64 birds
through it takes.

The graph is three traced pieces joined by hand, each name prefixed by its piece:

    noise -> start (the selector's choice, scaled to the first noise level) -> x, zeros
          -> Loop(steps) { step: (i, x, previous) -> (x, denoised) } -> finish -> z

The trip count is a constant, so the graph still draws nothing and a seed still gives the same
bytes; the body's weights live inside the body, where onnxruntime's dynamic int8 quantizer finds
them (export/quantize.py).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxscript.optimizer
import torch
from onnx import TensorProto, helper
from torch import nn

from birdvae.runtime.format import SAMPLER_FILE, SAMPLER_INPUT, SAMPLER_OUTPUT
from birdvae.training.prior import CodePrior, Sampler, solver_label
from birdvae.training.selector import Selection

from .onnx import (
    EXAMPLE_BATCH,
    ExportError,
    check_graph,
    exporter_failures,
    finalize,
    graph_metadata,
    name_batch_dims,
    trace,
)
from .selector import BestOf, sampler_noise_dim


def sampler_module(
    prior: CodePrior,
    guide: CodePrior | None = None,
    guidance: float = 1.0,
    selection: Selection | None = None,
) -> nn.Module:
    """What ``prior.onnx`` computes, as a PyTorch module: the sampler, behind the selector when
    there is one."""
    sampler = Sampler(prior.eval(), guide.eval() if guide else None, guidance)
    return BestOf(sampler, selection, prior.latent_dim).eval() if selection else sampler


def export_sampler(
    prior: CodePrior,
    folder: Path,
    opset: int,
    guide: CodePrior | None = None,
    guidance: float = 1.0,
    selection: Selection | None = None,
) -> Path:
    """Write ``prior.onnx``: the learned prior's whole sampler, noise [N, D] -> z [N, D], with
    the guide's network inside when it autoguides; with a ``selection`` of K, noise
    [N, K * D] of which the sampler takes the selector's choice (export/selector.py)."""
    dim = prior.latent_dim
    module = sampler_module(prior, guide, guidance, selection)
    sampler = _solver(module)
    facts = {"latent_dim": str(dim), "graph": "prior", "sampler": solver_label(sampler.steps)}
    if sampler.guide is not None:
        facts["autoguidance"] = str(guidance)
    if selection is not None:
        facts["best_of"] = str(selection.k)
    metadata = graph_metadata(**facts)
    noise_dim = sampler_noise_dim(dim, selection)
    with exporter_failures("prior"):
        proto = sampler_graph(module, noise_dim, opset)
    proto = finalize(proto, opset, metadata)
    check_graph(proto, opset, {SAMPLER_INPUT: [noise_dim], SAMPLER_OUTPUT: [dim]}, "prior")
    path = Path(folder) / SAMPLER_FILE
    onnx.save_model(proto, path)
    return path


def _solver(module: nn.Module) -> Sampler:
    """The Sampler inside ``module`` (itself, or the one a BestOf chooses for)."""
    return module.sampler if isinstance(module, BestOf) else module


class _Start(nn.Module):
    """noise -> the solver's first x and the zeros that stand for the previous step's D."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self.module.choose(noise) if isinstance(self.module, BestOf) else noise
        x = _solver(self.module).start(chosen)
        return x, torch.zeros_like(x)


class _Step(nn.Module):
    def __init__(self, sampler: Sampler) -> None:
        super().__init__()
        self.sampler = sampler

    def forward(
        self, index: torch.Tensor, x: torch.Tensor, previous: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sampler.step(index, x, previous)


class _Finish(nn.Module):
    def __init__(self, sampler: Sampler) -> None:
        super().__init__()
        self.sampler = sampler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sampler.finish(x)


def sampler_graph(module: nn.Module, noise_dim: int, opset: int) -> onnx.ModelProto:
    """The sampler ``module`` (a Sampler, or a BestOf over one) as start, Loop and finish."""
    sampler = _solver(module)
    dim = sampler.prior.latent_dim
    noise = torch.randn(EXAMPLE_BATCH, noise_dim, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    # Two distinct example tensors: the dynamo exporter gives one input to an aliased pair.
    x = torch.randn(EXAMPLE_BATCH, dim, generator=generator)
    previous = torch.randn(EXAMPLE_BATCH, dim, generator=generator)
    # The second step where there is one: both of its solver weights are in use.
    index = torch.tensor(min(1, sampler.steps - 1), dtype=torch.int64)

    start = _piece(_Start(module), (noise,), [SAMPLER_INPUT], ["x", "zeros"], opset, "start",
                   keep=SAMPLER_INPUT)  # fmt: skip
    step = _piece(
        _Step(sampler), (index, x, previous), ["i", "x", "previous"], ["next", "denoised"], opset,
        "step",
    )  # fmt: skip
    finish = _piece(_Finish(sampler), (x,), ["x"], [SAMPLER_OUTPUT], opset, "finish",
                    keep=SAMPLER_OUTPUT)  # fmt: skip

    body = step.graph
    body.name = "solver_step"
    body.input.insert(1, helper.make_tensor_value_info("step/cond", TensorProto.BOOL, []))
    body.node.append(helper.make_node("Identity", ["step/cond"], ["step/cond_out"]))
    body.output.insert(0, helper.make_tensor_value_info("step/cond_out", TensorProto.BOOL, []))
    trips = helper.make_tensor("steps", TensorProto.INT64, [], [sampler.steps])
    loop = helper.make_node(
        "Loop", ["steps", "", "start/x", "start/zeros"], ["finish/x", "last_denoised"],
        name="solver", body=body,
    )  # fmt: skip

    graph = helper.make_graph(
        [*start.graph.node, loop, *finish.graph.node],
        "prior",
        list(start.graph.input),
        list(finish.graph.output),
        [*start.graph.initializer, trips, *finish.graph.initializer],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    name_batch_dims(proto)
    return proto


def _piece(
    module: nn.Module,
    examples: tuple[torch.Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    opset: int,
    prefix: str,
    keep: str = "",
) -> onnx.ModelProto:
    """One traced, optimised piece with every name put under ``prefix/`` but ``keep`` (the
    format's input or output, which the joined graph keeps). A piece is a flat graph: one with
    a subgraph or a sparse initializer would need more renaming than this does, so it is
    refused."""
    proto = onnxscript.optimizer.optimize(trace(module.eval(), examples, inputs, outputs, opset))
    graph = proto.graph
    nested = any(a.HasField("g") or a.graphs for node in graph.node for a in node.attribute)
    if nested or graph.sparse_initializer:
        raise ExportError(f"the sampler's {prefix} piece traced to more than a flat graph")

    def renamed(name: str) -> str:
        if not name or name == keep:
            return name
        return f"{prefix}{name}" if name.startswith("/") else f"{prefix}/{name}"

    for number, node in enumerate(graph.node):
        node.name = renamed(node.name or f"{node.op_type}_{number}")
        node.input[:] = [renamed(name) for name in node.input]
        node.output[:] = [renamed(name) for name in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        value.name = renamed(value.name)
    return proto
