"""Best of K inside the sampler graph: K candidate noises per bird, the one whose bird a small
network predicts a person will most readily call a bird is sampled.

``bird-gen --best-of K`` chooses among K decoded birds with the shipped rater
(``runtime/selection.py``), at K times the sampling and decoding. The rater's score of a draw
is a function of the sampler's noise (the sampler and decoder are deterministic), and a small
MLP learns it from the noise alone, so the choice can be made before anything is sampled:
``prior.onnx`` takes K x D noise numbers, scores the K candidates, keeps one and samples it
once. The format's contract does not change (its ``noise_dim`` is K x D); the runtime draws
the noise as for any learned prior.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from birdvae.runtime.errors import UserError
from birdvae.runtime.format import ModelFormatError, read_verified, verify_model_dir
from birdvae.runtime.onnxfile import check_graph_bytes
from birdvae.training.selector import SELECTOR_WIDTH, Selection, selector_mlp

from .onnx import ExportError


def sampler_noise_dim(latent_dim: int, selection: Selection | None) -> int:
    """The sampler's noise width: a code's worth for each of the K candidates it chooses
    among, or for the one bird it draws."""
    return latent_dim * (selection.k if selection is not None else 1)


class BestOf(nn.Module):
    """noise [N, K * D] -> z [N, D]: of each bird's K candidate noises, the one the selector
    scores highest goes through the sampler."""

    def __init__(self, sampler: nn.Module, selection: Selection, dim: int) -> None:
        super().__init__()
        self.sampler = sampler
        self.selector = selection.selector
        self.k, self.dim = selection.k, dim

    def choose(self, noise: torch.Tensor) -> torch.Tensor:
        """Each bird's chosen noise [N, D] from its K candidates [N, K * D]."""
        candidates = noise.reshape(-1, self.k, self.dim)
        best = self.selector(candidates).squeeze(-1).argmax(dim=1)
        index = best[:, None, None].expand(-1, 1, self.dim)
        return torch.gather(candidates, 1, index).squeeze(1)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.sampler(self.choose(noise))


def selector_nodes(graph: onnx.GraphProto) -> list[str]:
    """The names of the nodes an ArgMax depends on: a best-of-K selector's whole network, found
    by its place in the graph, since exporters name nodes differently (``/selector/...`` from
    TorchScript, ``node_MatMul_6`` from dynamo)."""
    producer = {output: node for node in graph.node for output in node.output}
    found: dict[str, onnx.NodeProto] = {}
    stack = [name for node in graph.node if node.op_type == "ArgMax" for name in node.input]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in found:
            continue
        found[node.name] = node
        stack.extend(node.input)
    if any(not name for name in found):
        raise ExportError("the sampler's selector has unnamed nodes, so they cannot be told apart")
    return sorted(found)


def carried_selection(folder: Path, k: int, dim: int, sampler: dict[str, Any]) -> Selection:
    """The selector another model folder's ``prior.onnx`` chooses with (``vae-export
    --selector-from``), so that exporting a checkpoint again keeps the birds its model chose
    instead of teaching a new selector (minutes of work, and the installed rater may have
    changed since).

    A selector predicts the birds of the sampler it was taught on, so the folder must have been
    exported from the same sampler: ``sampler`` holds this export's checkpoint sha256, weights
    (ema or model), autoguidance (as the manifest records it, or None) and temperature, and
    each must match the folder's manifest. The folder is verified against its manifest first,
    its sampler read once and checked as the runtime checks graphs, and its selector must be
    the MLP this module trains, choosing among ``k`` candidates of ``dim`` numbers. A folder
    that cannot give one is the user's mistake: UserError, one line.
    """
    try:
        manifest = verify_model_dir(folder)
    except ModelFormatError as exc:
        raise UserError(f"--selector-from: {exc}") from None
    learned = manifest.priors.get("learned")
    source = (learned.source or {}) if learned is not None else {}
    facts = source.get("best_of")
    if learned is None or not facts:
        raise UserError(f"--selector-from: {folder}'s sampler has no best-of selector")
    if not isinstance(facts, dict):  # provenance the runtime never reads, so never checked
        kind = type(facts).__name__
        raise UserError(f"--selector-from: {folder}'s manifest records its best-of selector "
                        f"as {kind}, not an object; export that folder again")  # fmt: skip
    if facts.get("k") != k or manifest.latent_dim != dim:
        raise UserError(
            f"--selector-from: {folder}'s selector chooses among {facts.get('k')} candidates "
            f"of {manifest.latent_dim} numbers; this export asks for {k} of {dim}"
        )
    theirs = {
        "checkpoint_sha256": manifest.source.get("checkpoint_sha256"),
        "weights": manifest.source.get("weights"),
        "autoguidance": source.get("autoguidance"),
        "temperature": facts.get("temperature"),
    }
    for key, ours in sampler.items():
        if theirs.get(key) != ours:
            raise UserError(
                f"--selector-from: {folder} was exported from another sampler ({key} "
                f"{theirs.get(key)!r}, here {ours!r}); a selector predicts the birds of the "
                "sampler it was taught on"
            )
    try:
        # The checked bytes, refused as bird-gen refuses them: onnx.load_model would read the
        # file again, and every file its tensors name as external data, past the hash.
        data = read_verified(folder, manifest, learned.file)
        check_graph_bytes(data, learned.file)
    except ModelFormatError as exc:
        raise UserError(f"--selector-from: {exc}") from None
    try:
        layers = _dense_layers(onnx.load_model_from_string(data).graph)
    except Exception as exc:  # onnx raises assorted types for a damaged file
        raise UserError(f"--selector-from: {folder / learned.file} cannot be read: {exc}") from None
    widths = [dim, SELECTOR_WIDTH, SELECTOR_WIDTH, 1]
    shapes = [(tuple(weight.shape), tuple(bias.shape)) for weight, bias in layers]
    if shapes != [((out, into), (out,)) for into, out in zip(widths, widths[1:])]:
        raise UserError(f"--selector-from: {folder}'s selector is not the MLP vae-export writes")
    # vae-export writes float32 weights; text, bfloat16 or float8 ones failed in torch with a
    # traceback, and NaN ones would have shipped a sampler that always keeps candidate 0.
    arrays = [array for layer in layers for array in layer]
    if not all(a.dtype == np.float32 and np.isfinite(a).all() for a in arrays):
        raise UserError(
            f"--selector-from: {folder}'s selector holds weights that are not finite float32 "
            "numbers; vae-export writes none such"
        )
    selector = selector_mlp(dim)
    with torch.no_grad():
        for linear, (weight, bias) in zip(selector[::2], layers):
            linear.weight.copy_(torch.from_numpy(weight))
            linear.bias.copy_(torch.from_numpy(bias))
    carried = {**facts, "carried_from_sha256": manifest.files[learned.file].sha256}
    return Selection(selector.eval().requires_grad_(False), k, carried)


def _dense_layers(graph: onnx.GraphProto) -> list[tuple[np.ndarray, np.ndarray]]:
    """The selector's affine layers in data-flow order, each as (weight [out, in], bias
    [out]): a MatMul by a constant and the Add of one after it (TorchScript, dynamo), or a
    Gemm."""
    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    chosen = set(selector_nodes(graph))
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    weight: np.ndarray | None = None
    for node in graph.node:  # stored in topological order
        if node.name not in chosen:
            continue
        constants = [values[name] for name in node.input if name in values]
        if node.op_type == "Gemm" and len(constants) == 2:
            transposed = any(a.name == "transB" and a.i for a in node.attribute)
            matrix = constants[0] if transposed else constants[0].T
            layers.append((np.array(matrix), np.array(constants[1])))
        elif node.op_type == "MatMul" and len(constants) == 1:
            weight = constants[0].T
        elif node.op_type == "Add" and weight is not None and len(constants) == 1:
            layers.append((np.array(weight), np.array(constants[0])))
            weight = None
    return layers
