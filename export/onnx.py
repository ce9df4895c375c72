"""PyTorch -> ONNX: the encoder and decoder graphs of the model format, folded, checked, stamped.

Exporter choice. Up to opset 17 (the format's default) the TorchScript exporter (``dynamo=False``)
writes the graph: it emits opset 17 and IR 8 natively, and ``onnxscript.optimizer`` then folds away
its shape arithmetic (``chunk`` becomes Shape/Gather/Slice with dynamic N), leaving the same small
graph, static in every dimension but N, that the dynamo exporter gives. The dynamo exporter
(torch's default since 2.9) builds at opset 18 and cannot reach 17 cleanly: its down-conversion
kept Split's opset-18 ``num_outputs`` attribute under an opset-17 import (the ONNX C converter has
no Split 18->17 adapter), an invalid file that the full checker rejects. It is used for ``--opset
18`` and above, where it converts only upwards (onnxscript's converter, or onnx's own past the
opsets onnxscript knows); its IR version 10 is lowered to the oldest one the opset allows once the
graph is shown to use nothing newer. The TorchScript exporter is deprecated (its
DeprecationWarnings are silenced here); when torch drops it, the format's default opset has to move
to 18.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import onnx
import onnxscript.optimizer
import torch
from onnx import TensorProto
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.utils.fusion import fuse_conv_bn_eval

from birdvae.runtime.errors import EXIT_FAILED, UserError, caused_by_bug, first_line
from birdvae.runtime.format import (
    BATCH_DIM,
    DECODER_FILE,
    DECODER_INPUT,
    DECODER_NOISE_OUTPUTS,
    DECODER_OUTPUTS,
    DEFAULT_IR_VERSION,
    ENCODER_FILE,
    ENCODER_INPUT,
    ENCODER_OUTPUTS,
    FORMAT_VERSION,
    RANDOM_OPS,
)
from birdvae.training.model import VAE

EXAMPLE_BATCH = 2  # with a batch of 1 an exporter may specialise N to 1
# Ops export refuses to write: randomness belongs to the runtime (format.RANDOM_OPS), a Dropout
# left in (the identity at inference, random in training mode) means the model was not put in
# eval mode, and a BatchNormalization node that a normalisation was not folded into its
# convolution.
FORBIDDEN_OPS = RANDOM_OPS | {"Dropout", "BatchNormalization"}
# Element types 17 and up (float8, 4-bit) came with IR 9 and 10; lower IRs end at bfloat16.
LAST_IR8_ELEM_TYPE = TensorProto.BFLOAT16
TORCHSCRIPT_MAX_OPSET = 17  # the legacy exporter's last opset; the dynamo exporter's first is 18


class ExportError(UserError, RuntimeError):
    """An export step that failed; the message says which step and why. Exit status 1: the
    inputs were usable, the model made from them was not."""

    exit_code = EXIT_FAILED


class EncoderGraph(nn.Module):
    """``image`` [N, 3, S, S] in [0, 1] -> ``mean``, ``logvar`` [N, D]."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encoder(image)


class DecoderGraph(nn.Module):
    """``z`` [N, D] -> ``image`` [N, 3, S, S] in [0, 1], the likelihood's mean, followed for a
    logistic likelihood by its ``location``, ``scale`` and ``coupling``, which the runtime draws
    pixels with."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        params = self.model.decoder(z)
        image = self.model.likelihood.mean(params)
        if not has_pixel_noise(self.model):
            return image
        return (image, *self.model.likelihood.noise_params(params))


def has_pixel_noise(model: VAE) -> bool:
    """Whether the decoder graph also outputs the pixel distribution (location, scale, coupling)."""
    return model.likelihood.draws_pixels


def decoder_outputs(model: VAE) -> list[str]:
    return list(DECODER_OUTPUTS) + (list(DECODER_NOISE_OUTPUTS) if has_pixel_noise(model) else [])


def package_version() -> str:
    try:
        return importlib.metadata.version("bird-vae")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


METADATA_PREFIX = "birdvae."  # the graphs' own metadata keys; for people, the runtime reads none


def graph_metadata(**facts: str) -> dict[str, str]:
    """The metadata every graph of ours carries (the format's and the package's versions), then
    ``facts`` in their order (the same order gives the same bytes), each key under
    METADATA_PREFIX."""
    base = {"format_version": str(FORMAT_VERSION), "package_version": package_version()}
    return {f"{METADATA_PREFIX}{key}": value for key, value in {**base, **facts}.items()}


def ir_version_for(opset: int) -> int:
    """The format's IR version, or the first one that allows ``opset`` if that is newer."""
    needed = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    return max(DEFAULT_IR_VERSION, needed)


def exporter_for(opset: int) -> str:
    """The torch exporter that writes ``opset`` natively (see the module docstring)."""
    return "torchscript" if opset <= TORCHSCRIPT_MAX_OPSET else "dynamo"


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every BatchNorm folded into the convolution before it.

    Only ``nn.Sequential`` children are folded: there, registration order is data-flow order.
    """
    folded = copy.deepcopy(model).eval()
    for parent in folded.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = parent._modules[first], parent._modules[second]
            if isinstance(conv, _ConvNd) and isinstance(norm, _BatchNorm):
                if norm.running_mean is None:
                    continue  # batch statistics at inference: nothing fixed to fold
                transpose = isinstance(conv, _ConvTransposeNd)
                parent._modules[first] = fuse_conv_bn_eval(conv, norm, transpose=transpose)
                parent._modules[second] = nn.Identity()
    left = [name for name, m in folded.named_modules() if isinstance(m, _BatchNorm)]
    if left:
        raise ExportError(f"cannot fold BatchNorm layer(s) {left} into a preceding convolution")
    return folded


class ChannelGroups(nn.Module):
    """A layer cut by output channel into ``groups`` equal layers whose outputs are concatenated:
    the same function, written as one graph node a group.

    A layer's output shares one int8 range under static quantization. The decoder's last
    convolution makes each pixel's location (0 to 1) and its log-scale (about -7 to -1) at
    once, so in one range the birds kept about 34 of 256 levels a channel; the encoder's head
    makes the mean and the log-variance. Cut by parameter, each gets a range of its own."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, groups: int) -> None:
        super().__init__()
        self.parts = nn.ModuleList(_output_group(layer, index, groups) for index in range(groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x) for part in self.parts], dim=1)


def _output_group(layer: nn.Conv2d | nn.Linear, index: int, groups: int) -> nn.Module:
    """A copy of ``layer`` that makes only its ``index``-th of ``groups`` runs of outputs (its
    weight's first axis: a Linear's or a plain Conv2d's, not a ConvTranspose's)."""
    if not isinstance(layer, nn.Linear) and not (type(layer) is nn.Conv2d and layer.groups == 1):
        raise TypeError(f"cannot cut a {type(layer).__name__} by output channel")
    part = copy.deepcopy(layer)
    size = layer.weight.shape[0] // groups
    rows = slice(index * size, (index + 1) * size)
    part.weight = nn.Parameter(layer.weight.detach()[rows].clone())
    if layer.bias is not None:
        part.bias = nn.Parameter(layer.bias.detach()[rows].clone())
    if isinstance(part, nn.Linear):
        part.out_features = size
    else:
        part.out_channels = size
    return part


def split_heads(model: VAE) -> VAE:
    """``model`` (an export copy, changed in place) with the ResNet encoder's head cut into mean
    and log-variance and the ResNet decoder's last convolution into one layer per likelihood
    parameter (ChannelGroups). The decoder's pixel shuffle reads four convolution channels an
    image channel, parameter by parameter, so each parameter is one run of channels. The blog's
    baseline has separate mean and log-variance layers already, and its decoder ends in a
    ConvTranspose, whose int8 version onnxruntime does not run faster: it is left as it is."""
    encoder, decoder = model.encoder, model.decoder
    if isinstance(getattr(encoder, "head", None), (nn.Conv2d, nn.Linear)):
        encoder.head = ChannelGroups(encoder.head, 2)
    groups = model.likelihood.params_per_channel
    head = getattr(decoder, "head", None)
    if groups > 1 and isinstance(head, nn.Conv2d):
        split = ChannelGroups(head, groups)
        decoder.body = nn.Sequential(*(split if layer is head else layer for layer in decoder.body))
        decoder.head = split
    return model


def export_model(
    model: VAE, folder: Path, opset: int, split_heads_for_int8: bool = False
) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` for ``model`` into ``folder``; check both.
    With ``split_heads_for_int8`` their output layers are cut by parameter (split_heads): the
    same function, a few percent slower in float, so only for graphs that will be quantized."""
    cfg = model.cfg
    folded = fold_batchnorm(model)
    if split_heads_for_int8:
        folded = split_heads(folded)
    facts = {
        "arch": cfg.arch,
        "image_size": str(cfg.image_size),
        "latent_dim": str(cfg.latent_dim),
        "likelihood": model.likelihood.name,
    }
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(EXAMPLE_BATCH, 3, cfg.image_size, cfg.image_size, generator=generator)
    z = torch.randn(EXAMPLE_BATCH, cfg.latent_dim, generator=generator)
    encoder = export_graph(
        EncoderGraph(folded), image, [ENCODER_INPUT], list(ENCODER_OUTPUTS),
        {ENCODER_INPUT: [3, cfg.image_size, cfg.image_size],
         **{name: [cfg.latent_dim] for name in ENCODER_OUTPUTS}},
        Path(folder) / ENCODER_FILE, opset, graph_metadata(**facts, graph="encoder"),
    )  # fmt: skip
    image_shape = [3, cfg.image_size, cfg.image_size]
    outputs = decoder_outputs(model)
    decoder = export_graph(
        DecoderGraph(folded), z, [DECODER_INPUT], outputs,
        {DECODER_INPUT: [cfg.latent_dim], **{name: image_shape for name in outputs}},
        Path(folder) / DECODER_FILE, opset, graph_metadata(**facts, graph="decoder"),
    )  # fmt: skip
    return encoder, decoder


def export_graph(
    module: nn.Module,
    example: torch.Tensor,
    input_names: Sequence[str],
    output_names: Sequence[str],
    shapes: dict[str, list[int]],
    path: Path,
    opset: int,
    metadata: dict[str, str],
) -> Path:
    """Trace ``module`` with a dynamic batch, then optimise, check, stamp and save it.

    ``shapes`` gives each input's and output's dimensions after the batch dimension.
    """
    graph = metadata.get(f"{METADATA_PREFIX}graph", path.stem)
    with exporter_failures(graph):
        proto = trace(module.eval(), example, list(input_names), list(output_names), opset)
        proto = onnxscript.optimizer.optimize(proto)
    proto = finalize(proto, opset, metadata)
    name_batch_dims(proto)
    check_graph(proto, opset, shapes, graph)
    onnx.save_model(proto, path)
    return path


def trace(
    module: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    opset: int,
) -> onnx.ModelProto:
    """The raw graph from the exporter that writes ``opset`` natively (see the module doc).

    Every input and output has a dynamic batch dimension but a 0-d input (a step number)."""
    examples = example if isinstance(example, tuple) else (example,)
    batched = [name for name, x in zip(inputs, examples) if x.dim() > 0] + outputs
    with torch.no_grad(), _quiet_exporter():
        if exporter_for(opset) == "torchscript":
            buffer = io.BytesIO()
            torch.onnx.export(
                module, examples, buffer, input_names=inputs, output_names=outputs,
                opset_version=opset, dynamo=False,
                dynamic_axes={name: {0: BATCH_DIM} for name in batched},
            )  # fmt: skip
            return onnx.load_model_from_string(buffer.getvalue())
        batch = torch.export.Dim(BATCH_DIM)
        program = torch.onnx.export(
            module, examples, input_names=inputs, output_names=outputs, opset_version=opset,
            dynamo=True, external_data=False, verbose=False,
            dynamic_shapes=tuple({0: batch} if x.dim() > 0 else {} for x in examples),
        )  # fmt: skip
        return program.model_proto


def name_batch_dims(proto: onnx.ModelProto) -> None:
    """Call every symbolic leading dimension of the graph's inputs and outputs ``N``.

    An output that is also an intermediate value (the decoder's unclipped ``location`` feeds
    its clipped ``image``) can come out of the optimiser with a fresh name such as ``unk__0``;
    a fixed size is left as it is, for check_graph to refuse.
    """
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = BATCH_DIM


def finalize(proto: onnx.ModelProto, opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    """Set the format's IR version, stamp metadata, infer shapes, run the full checker."""
    target = ir_version_for(opset)
    if proto.ir_version > target:
        _lower_ir_version(proto, target)
    proto.ir_version = target
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    try:
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the ONNX checker rejects the graph: {first_line(exc)}") from exc
    return proto


def _lower_ir_version(proto: onnx.ModelProto, target: int) -> None:
    """Drop what IR versions after ``target`` added; refuse what cannot be dropped."""
    graph = proto.graph
    if target < 9:
        types = [v.type.tensor_type.elem_type for v in _all_values(graph)]
        types += [tensor.data_type for tensor in graph.initializer]
        if max(types, default=0) > LAST_IR8_ELEM_TYPE:
            raise ExportError(f"the graph uses an element type IR version {target} lacks")
    if target < 10:  # IR 10 added metadata to graphs, nodes and values: names for debugging
        del graph.metadata_props[:]
        for item in [*graph.node, *_all_values(graph)]:
            del item.metadata_props[:]


def check_graph(
    proto: onnx.ModelProto, opset: int, shapes: dict[str, list[int]], graph: str
) -> None:
    """The format's promises: opset, IR version, names, dynamic N, static rest, no banned ops."""
    imports = {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import}
    if imports != {"ai.onnx": opset}:
        raise ExportError(f"the {graph} graph imports opsets {imports}, expected ai.onnx {opset}")
    if proto.ir_version != ir_version_for(opset):
        raise ExportError(f"the {graph} graph has IR version {proto.ir_version}")
    nodes = [*all_nodes(proto.graph), *(n for f in proto.functions for n in all_nodes(f))]
    banned = sorted({node.op_type for node in nodes} & FORBIDDEN_OPS)
    if banned:
        raise ExportError(f"the {graph} graph holds forbidden op(s): {', '.join(banned)}")
    values = list(proto.graph.input) + list(proto.graph.output)
    found = [value.name for value in values]
    if found != list(shapes):
        raise ExportError(f"the {graph} graph has inputs/outputs {found}, expected {list(shapes)}")
    for value in values:
        tensor = value.type.tensor_type
        dims = [dim.dim_param or dim.dim_value for dim in tensor.shape.dim]
        if tensor.elem_type != TensorProto.FLOAT or dims != [BATCH_DIM, *shapes[value.name]]:
            raise ExportError(
                f"{graph} {value.name!r} is {dims} of type {tensor.elem_type}, expected float32 "
                f"{[BATCH_DIM, *shapes[value.name]]}"
            )


def io_shapes(proto: onnx.ModelProto) -> dict[str, list[int]]:
    """Each graph input's and output's dimensions after the batch dimension, as check_graph
    takes them."""
    values = list(proto.graph.input) + list(proto.graph.output)
    return {
        value.name: [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim][1:]
        for value in values
    }


def all_nodes(graph: onnx.GraphProto | onnx.FunctionProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` (or a local function) and of the subgraphs (a Loop's body)
    inside it."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            single = [attribute.g] if attribute.HasField("g") else []
            for subgraph in [*single, *attribute.graphs]:
                yield from all_nodes(subgraph)


def _all_values(graph: onnx.GraphProto) -> Iterator[onnx.ValueInfoProto]:
    yield from graph.input
    yield from graph.output
    yield from graph.value_info


# onnxscript says at WARNING level, through Python's last-resort handler onto stderr, that it
# hands an opset it cannot convert to onnx's own converter: a note on how, not a fault (the
# parity check proves the graph either way). Its other warnings (a conversion that failed) stay.
_CONVERTER_LOGGER = "onnxscript.version_converter"
_CONVERTER_NOTE = "fallback is enabled"


def _not_the_converters_note(record: logging.LogRecord) -> bool:
    return _CONVERTER_NOTE not in record.getMessage()


@contextlib.contextmanager
def exporter_failures(graph: str) -> Iterator[None]:
    """Turn the exporter's failure to trace or optimise ``graph`` into an ExportError. It
    raises many unrelated types, which all mean the same here; a programming error in our code
    (caused_by_bug) keeps its traceback."""
    try:
        yield
    except Exception as exc:
        if caused_by_bug(exc):
            raise
        raise ExportError(
            f"torch.onnx.export failed for the {graph}: {first_line(exc)} "
            "(BIRDVAE_TRACEBACK=1 shows where)"
        ) from exc


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the legacy exporter's deprecation notices (it is chosen on purpose) and the
    dynamo exporter's note on which opset converter it used, leaving the caller's logging."""
    converter = logging.getLogger(_CONVERTER_LOGGER)
    converter.addFilter(_not_the_converters_note)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        converter.removeFilter(_not_the_converters_note)
