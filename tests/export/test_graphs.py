"""The exported graphs keep the format's promises and compute what PyTorch computes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import onnxruntime as ort  # noqa: E402

from birdvae.export.onnx import (  # noqa: E402
    EXAMPLE_BATCH,
    FORBIDDEN_OPS,
    DecoderGraph,
    ExportError,
    check_graph,
    decoder_outputs,
    export_graph,
    exporter_failures,
    fold_batchnorm,
)
from birdvae.export.parity import (  # noqa: E402
    BATCH_SIZES,
    IMAGE_TOL,
    ParityRow,
    check_parity,
    format_table,
    scaled_tolerance,
    verdict,
)
from birdvae.runtime.format import (  # noqa: E402
    DECODER_FILE,
    ENCODER_FILE,
    FORMAT_VERSION,
    MIXTURE_FILE,
    verify_model_dir,
)
from birdvae.training.checkpoint import load_model  # noqa: E402

pytestmark = pytest.mark.torch
ARCHS = ["resnet", "baseline"]
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "birds32"


def dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("arch", ARCHS)
def test_export_succeeds_and_prints_the_parity_table(exported, arch):
    _, folder, result = exported[arch]
    assert result.exit_code == 0, result.stderr
    assert f"wrote {folder}" in result.stdout
    table = [line for line in result.stdout.splitlines() if line.startswith(("encoder", "decoder"))]
    decoder_count = 4 if arch == "resnet" else 1  # image (+ pixel location, scale, coupling)
    # a line for each output, the worst of its checks: each batch size, random and encoded z
    assert len(table) == 2 + decoder_count
    checks = (2 + 2 * decoder_count) * len(BATCH_SIZES)
    assert f"({checks} checks, N = {', '.join(map(str, BATCH_SIZES))};" in result.stdout
    assert all(line.endswith("yes") for line in table)
    assert "real images" in result.stdout


@pytest.mark.parametrize("arch", ARCHS)
def test_folder_satisfies_the_format(exported, arch):
    checkpoint, folder, _ = exported[arch]
    model, config, _ = load_model(checkpoint)
    manifest = verify_model_dir(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [ENCODER_FILE, DECODER_FILE, MIXTURE_FILE, "manifest.json"]
    )
    assert (manifest.image_size, manifest.latent_dim) == (config.model.image_size,
                                                          config.model.latent_dim)  # fmt: skip
    assert manifest.likelihood == model.likelihood.name
    assert (manifest.opset, manifest.ir_version) == (17, 8)
    assert manifest.default_prior == "fitted"
    assert manifest.priors["fitted"].file == MIXTURE_FILE
    source = manifest.source
    assert source["architecture"] == config.to_dict()["model"]
    assert source["epochs"] == 3 and source["val_bpd"] == 5.25 and source["weights"] == "ema"
    assert len(source["checkpoint_sha256"]) == 64
    assert source["exporter"] == "torchscript"
    assert max(source["parity"]["max_abs_diff"].values()) <= IMAGE_TOL
    json.dumps(manifest.to_dict(), allow_nan=False)  # strict JSON: no NaN or Infinity


@pytest.mark.parametrize("arch", ARCHS)
def test_graphs_have_the_contract_signatures(exported, arch):
    checkpoint, folder, _ = exported[arch]
    cfg = load_model(checkpoint)[0].cfg
    s, d = cfg.image_size, cfg.latent_dim
    expected = {
        ENCODER_FILE: ({"image": ["N", 3, s, s]}, {"mean": ["N", d], "logvar": ["N", d]}),
        DECODER_FILE: ({"z": ["N", d]}, {"image": ["N", 3, s, s]}),
    }
    if arch == "resnet":  # a logistic likelihood: the runtime can also draw pixels
        pixels = ["N", 3, s, s]
        expected[DECODER_FILE][1].update(location=pixels, scale=pixels, coupling=pixels)
    for name, (inputs, outputs) in expected.items():
        proto = onnx.load(folder / name)
        onnx.checker.check_model(proto, full_check=True)
        assert proto.ir_version == 8
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
        assert {v.name: dims(v) for v in proto.graph.input} == inputs
        assert {v.name: dims(v) for v in proto.graph.output} == outputs
        assert not {node.op_type for node in proto.graph.node} & FORBIDDEN_OPS
        assert not proto.graph.initializer[0].data_location  # weights inside the file
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["birdvae.image_size"] == str(s) and meta["birdvae.latent_dim"] == str(d)
        assert meta["birdvae.format_version"] == str(FORMAT_VERSION)
        assert meta["birdvae.arch"] == cfg.arch
        assert meta["birdvae.package_version"]
        # in the shipped graphs' order, so a re-export of their checkpoint gives their bytes
        # (int8 quantization adds keys of its own, such as onnx.infer)
        shipped = onnx.load(SHIPPED / name, load_external_data=False).metadata_props
        ours = [p.key for p in shipped if p.key.startswith("birdvae.")]
        assert [p.key for p in proto.metadata_props] == ours


@pytest.mark.parametrize("arch", ARCHS)
def test_plain_onnxruntime_decodes_like_pytorch(exported, arch):
    checkpoint, folder, _ = exported[arch]
    model = load_model(checkpoint)[0]
    session = ort.InferenceSession(str(folder / DECODER_FILE), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for n in BATCH_SIZES:
        z = rng.standard_normal((n, model.cfg.latent_dim), dtype=np.float32)
        (images,) = session.run(["image"], {"z": z})
        with torch.no_grad():
            reference = model.decode_image(torch.from_numpy(z)).numpy()
        assert images.shape == reference.shape
        assert np.abs(images - reference).max() <= IMAGE_TOL


def test_parity_holds_and_catches_a_changed_model(exported):
    checkpoint, folder, _ = exported["baseline"]
    model = load_model(checkpoint)[0]
    rows = check_parity(model, folder, None)
    assert sorted({row.n for row in rows}) == sorted(BATCH_SIZES)
    assert all(row.ok for row in rows) and rows[0].input == "random images"
    verdict(rows)
    with torch.no_grad():
        model.decoder.body[0].bias.add_(0.01)  # the graph on disk no longer matches
    with pytest.raises(ExportError, match=r"parity check failed.*decoder"):
        verdict(check_parity(model, folder, None))


def _identity_graph(z_dims: list, image_dims: list, op: str = "Identity") -> onnx.ModelProto:
    """A decoder-shaped graph of one node, ``z`` in and ``image`` out, of the given dims."""
    from onnx import TensorProto, helper

    from birdvae.export.onnx import ir_version_for

    graph = helper.make_graph(
        [helper.make_node(op, ["z"], ["image"])], "g",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, z_dims)],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, image_dims)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = ir_version_for(17)
    return model


GRAPH_FAULTS = {
    "as the format says": (["N", 16], ["N", 16], "Identity", None),
    "a fixed batch": ([2, 16], [2, 16], "Identity", "'z' is [2, 16]"),
    "a dynamic row": (["N", "D"], ["N", 16], "Identity", "'z' is ['N', 'D']"),
    "a row of another size": (["N", 16], ["N", 8], "Identity", "'image' is ['N', 8]"),
    "a Dropout left in": (["N", 16], ["N", 16], "Dropout", "forbidden op(s): Dropout"),
}


@pytest.mark.parametrize("fault", GRAPH_FAULTS, ids=GRAPH_FAULTS)
def test_a_graph_is_checked_against_the_format_before_it_is_written(fault):
    """A traced graph can come out with its batch frozen, a row of the wrong size or a
    training-mode Dropout; bird-gen would refuse it or fail on the first batch of another size."""
    z_dims, image_dims, op, message = GRAPH_FAULTS[fault]
    proto = _identity_graph(z_dims, image_dims, op)
    if message is None:
        check_graph(proto, 17, {"z": [16], "image": [16]}, "decoder")
    else:
        with pytest.raises(ExportError, match=re.escape(message)):
            check_graph(proto, 17, {"z": [16], "image": [16]}, "decoder")


def _another_domain(proto):
    proto.opset_import.add(domain="com.microsoft", version=1)


def _another_ir_version(proto):
    proto.ir_version += 1


def _float64_image(proto):
    proto.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE


HEADER_FAULTS = {  # what a graph of the right names and shapes can still get wrong
    "an opset of another domain": (_another_domain, "imports opsets {'ai.onnx': 17, 'com.mi"),
    "another IR version": (_another_ir_version, "the decoder graph has IR version 9"),
    "a float64 output": (_float64_image, "decoder 'image' is ['N', 16] of type 11"),
}


@pytest.mark.parametrize("fault", HEADER_FAULTS, ids=HEADER_FAULTS)
def test_a_graph_the_runtimes_oldest_onnxruntime_cannot_read_is_refused(fault):
    """The format promises opset 17 of the default domain alone, IR version 8 and float32
    values: onnxruntime 1.15 reads no newer IR, another domain's ops (com.microsoft) are no
    part of the format, and bird-gen refuses a float64 image as a broken model."""
    change, message = HEADER_FAULTS[fault]
    proto = _identity_graph(["N", 16], ["N", 16])
    change(proto)
    with pytest.raises(ExportError, match=re.escape(message)):
        check_graph(proto, 17, {"z": [16], "image": [16]}, "decoder")


def test_a_frozen_batch_is_left_frozen_for_the_check_to_refuse():
    """name_batch_dims renames a symbolic batch (unk__0) to N but must not relabel a batch an
    exporter froze at 2: the graph would then claim a batch it cannot run."""
    from birdvae.export.onnx import name_batch_dims

    proto = _identity_graph(["unk__0", 16], [2, 16])
    name_batch_dims(proto)
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "N"
    with pytest.raises(ExportError, match=re.escape("'image' is [2, 16]")):
        check_graph(proto, 17, {"z": [16], "image": [16]}, "decoder")


class ChangedOutputs:
    """An onnxruntime session whose outputs pass through ``change`` on the way out."""

    def __init__(self, session: ort.InferenceSession, change) -> None:
        self.session, self.change = session, change

    def __getattr__(self, name: str):
        return getattr(self.session, name)

    def run(self, names, feeds):
        return [self.change(value) for value in self.session.run(names, feeds)]


PARITY_FAULTS = {  # the decoder's outputs changed; images are held to 1e-5 (docs/FORMAT.md)
    "3e-5": (lambda value: value + 3e-5, "parity check failed"),
    "3e-6": (lambda value: value + 3e-6, None),
    "NaN": (lambda value: np.full_like(value, np.nan), "parity check failed"),
    "one row for the batch": (lambda value: value[:1], "parity check failed"),
}


@pytest.mark.parametrize("fault", PARITY_FAULTS, ids=PARITY_FAULTS)
def test_parity_fails_a_graph_off_by_more_than_its_tolerance(exported, monkeypatch, fault):
    """The check is what lets a model ship: onnxruntime outputs a little off, NaN, or of the
    wrong batch (a batch size frozen into the graph) must fail it, and rounding must not."""
    from birdvae.export import parity

    checkpoint, folder, _ = exported["baseline"]
    model = load_model(checkpoint)[0]
    change, message = PARITY_FAULTS[fault]
    real = parity.ort_session
    monkeypatch.setattr(
        parity,
        "ort_session",
        lambda path: (
            ChangedOutputs(real(path), change) if path.name == DECODER_FILE else real(path)
        ),
    )
    rows = check_parity(model, folder, None)
    if message is None:
        verdict(rows)
    else:
        with pytest.raises(ExportError, match=message):
            verdict(rows)


def test_the_parity_table_shows_each_outputs_worst_check_and_every_check_on_a_failure():
    checks = (("encoder", "mean", "real images", 1e-8), ("decoder", "image", "random z", 1e-8),
              ("decoder", "image", "encoded z", 2e-8))  # fmt: skip
    rows = [ParityRow(graph, output, source, n, diff * n, 1e-5)
            for n in BATCH_SIZES for graph, output, source, diff in checks]  # fmt: skip
    lines = format_table(rows).splitlines()
    assert lines[0].startswith(f"parity, onnxruntime against PyTorch ({len(rows)} checks, N = 1,")
    assert [line.split()[:2] for line in lines[2:]] == [["encoder", "mean"], ["decoder", "image"]]
    worst = 2e-8 * max(BATCH_SIZES)
    assert "random z, encoded z" in lines[3] and f"{worst:.2e}" in lines[3]
    failing = [*rows, ParityRow("decoder", "image", "random z", 3, 0.5, 1e-5)]
    lines = format_table(failing).splitlines()
    assert len(lines) == 2 + len(failing)
    assert lines[-1].split()[-3:] == ["5.00e-01", "1.0e-05", "NO"]


def test_a_model_that_gives_nan_is_called_diverged_not_a_parity_failure(exported):
    """'onnxruntime and PyTorch differ by nan' blamed the engines for a diverged run's model."""
    checkpoint, folder, _ = exported["baseline"]
    model = load_model(checkpoint)[0]
    with torch.no_grad():
        model.decoder.body[0].bias.fill_(float("inf"))
    with pytest.raises(ExportError, match=r"checkpoint's decoder, for random z gives NaN or inf"):
        check_parity(model, folder, None)


def test_parity_tolerance_scales_with_the_values_compared():
    """Pixel scales far from the data reach 20 or more, where float32 rounding alone passes
    1e-5; values within [-1, 1] keep the absolute bound."""
    small = np.array([0.2, -0.9], np.float32)
    large = np.array([0.1, 28.0], np.float32)
    assert scaled_tolerance(IMAGE_TOL, small) == IMAGE_TOL
    assert scaled_tolerance(IMAGE_TOL, large) == pytest.approx(28 * IMAGE_TOL)
    assert scaled_tolerance(IMAGE_TOL, -large) == pytest.approx(28 * IMAGE_TOL)


def test_a_global_latent_model_exports_with_parity(make_checkpoint, tiny_kwargs, tmp_path):
    """A vector code (--global-latent) exports with parity as the default grid code does."""
    from .conftest import run_export

    kwargs = {**tiny_kwargs, "latent_dim": 12, "spatial_latent": False}
    checkpoint = make_checkpoint(tmp_path / "last.pt", kwargs)
    result = run_export(checkpoint, "-o", tmp_path / "model")
    assert result.exit_code == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith(("encoder", "decoder"))]
    assert table and all(line.endswith("yes") for line in table)
    assert verify_model_dir(tmp_path / "model").latent_dim == 12


def test_batchnorm_folds_exactly(baseline_checkpoint):
    model = load_model(baseline_checkpoint)[0]
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy
    z = torch.randn(5, model.cfg.latent_dim)
    with torch.no_grad():
        assert torch.allclose(folded.decode_image(z), model.decode_image(z), atol=1e-6)


def test_batchnorm_that_cannot_fold_is_refused():
    module = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.BatchNorm2d(3))
    with pytest.raises(ExportError, match="cannot fold BatchNorm"):
        fold_batchnorm(module)


class _Branching(torch.nn.Module):
    """A branch on a tensor's value: an exporter's limit, not a bug."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


class _Broken(torch.nn.Module):
    """A forward with a plain bug in it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.no_such_attribute


def test_a_graph_the_exporter_cannot_write_is_one_line_and_a_bug_keeps_its_traceback(tmp_path):
    args = (torch.ones(2, 3), ["x"], ["y"], {"x": [3], "y": [3]}, tmp_path / "g.onnx", 18,
            {"birdvae.graph": "test graph"})  # fmt: skip
    with pytest.raises(ExportError, match=r"torch\.onnx\.export failed for the test graph") as info:
        export_graph(_Branching(), *args)
    assert "\x1b" not in str(info.value)  # torch.onnx's terminal colours are dropped
    with pytest.raises(Exception) as info:
        export_graph(_Broken(), *args)
    assert not isinstance(info.value, ExportError)
    cause = info.value
    while cause is not None and not isinstance(cause, AttributeError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, AttributeError) and "no_such_attribute" in str(cause)
    assert not (tmp_path / "g.onnx").exists()


def test_exporter_failures_are_export_errors_naming_the_graph_and_bugs_pass_through():
    limit = r"failed for the prior: no Loop here \(BIRDVAE_TRACEBACK=1 shows where\)$"
    with pytest.raises(ExportError, match=limit), exporter_failures("prior"):
        raise RuntimeError("no Loop here\nand a second line")
    with pytest.raises(RuntimeError) as info, exporter_failures("prior"):
        raise RuntimeError("wrapped") from KeyError("a bug of ours")
    assert not isinstance(info.value, ExportError)
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.slow
def test_opset_18_uses_the_dynamo_exporter(resnet_checkpoint, tmp_path: Path):
    model = load_model(resnet_checkpoint)[0]
    d = model.cfg.latent_dim
    outputs = decoder_outputs(model)
    path = export_graph(
        DecoderGraph(fold_batchnorm(model)), torch.randn(EXAMPLE_BATCH, d), ["z"], outputs,
        {"z": [d], **{name: [3, 16, 16] for name in outputs}}, tmp_path / DECODER_FILE, 18,
        {"birdvae.graph": "decoder"},
    )  # fmt: skip
    proto = onnx.load(path)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 18)]
    assert proto.ir_version == 8
    assert all(not node.metadata_props for node in proto.graph.node)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(0).standard_normal((3, d), dtype=np.float32)
    with torch.no_grad():
        reference = model.decode_image(torch.from_numpy(z)).numpy()
    assert np.abs(session.run(None, {"z": z})[0] - reference).max() <= IMAGE_TOL


@pytest.mark.slow
def test_the_newest_opset_exports_without_the_converters_chatter(resnet_checkpoint, tmp_path,
                                                                 caplog):  # fmt: skip
    """onnxscript cannot convert to the newest opsets and says so on stderr as it hands the
    graph to onnx's converter, between vae-export's own lines; the graph is fine."""
    import logging

    caplog.set_level(logging.DEBUG)
    model = load_model(resnet_checkpoint)[0]
    d, newest = model.cfg.latent_dim, onnx.defs.onnx_opset_version()
    outputs = decoder_outputs(model)
    path = export_graph(
        DecoderGraph(fold_batchnorm(model)), torch.randn(EXAMPLE_BATCH, d), ["z"], outputs,
        {"z": [d], **{name: [3, 16, 16] for name in outputs}}, tmp_path / DECODER_FILE, newest,
        {"birdvae.graph": "decoder"},
    )  # fmt: skip
    assert [o.version for o in onnx.load(path).opset_import] == [newest]
    # Without a handler of the caller's, such a record reaches stderr through logging's last
    # resort; pytest's handler catches it here instead.
    assert not [r.getMessage() for r in caplog.records if "version conversion" in r.getMessage()]
    from birdvae.export.onnx import _not_the_converters_note

    assert _not_the_converters_note not in logging.getLogger("onnxscript.version_converter").filters


def test_parity_opens_graphs_the_way_the_runtime_does(tmp_path: Path) -> None:
    """Parity must prove what bird-gen runs: the same session options and the same refusals."""
    from onnx import TensorProto, helper

    from birdvae.export.parity import ort_session
    from birdvae.runtime.format import ModelFormatError

    weights = helper.make_tensor("w", TensorProto.FLOAT, [2], [0.0, 0.0])
    weights.ClearField("float_data")
    weights.data_location = TensorProto.EXTERNAL
    weights.external_data.add(key="location", value="weights.bin")
    (tmp_path / "weights.bin").write_bytes(bytes(8))
    graph = helper.make_graph(
        [helper.make_node("Add", ["z", "w"], ["image"])], "g",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 2])], [weights],
    )  # fmt: skip
    path = tmp_path / "decoder.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelFormatError, match="external data"):
        ort_session(path)


@pytest.mark.parametrize("likelihood", ["logistic", "coupled_logistic", "bernoulli"])
@pytest.mark.parametrize("spatial", [False, True])
def test_heads_cut_by_parameter_compute_the_same_function(likelihood, spatial):
    """split_heads cuts the output layers so int8 gives each parameter its own range; the cut
    model must be the model, for every likelihood and both shapes of code, and each of the
    decoder's parts must make one parameter's channels (a wrong grouping still runs)."""
    from birdvae.export.onnx import ChannelGroups, split_heads
    from birdvae.training.config import ModelConfig
    from birdvae.training.model import VAE

    torch.manual_seed(0)
    model = VAE(ModelConfig(image_size=16, latent_dim=32, encoder_width=8, decoder_width=8,
                            encoder_max_width=16, decoder_max_width=16, likelihood=likelihood,
                            spatial_latent=spatial)).eval()  # fmt: skip
    cut = split_heads(fold_batchnorm(model))
    groups = model.likelihood.params_per_channel
    assert isinstance(cut.encoder.head, ChannelGroups) and len(cut.encoder.head.parts) == 2
    assert isinstance(cut.decoder.head, ChannelGroups) is (groups > 1)
    assert cut.decoder.head in list(cut.decoder.body)  # the layer the decoder runs
    image = torch.rand(3, 3, 16, 16)
    z = torch.randn(3, 32)
    with torch.no_grad():
        for ours, theirs in zip(cut.encoder(image), model.encoder(image)):
            assert torch.allclose(ours, theirs, atol=1e-6)
        params = model.decoder(z)
        assert torch.allclose(cut.decoder(z), params, atol=1e-6)
        if groups > 1:
            seen = []
            hook = cut.decoder.head.register_forward_hook(lambda m, args, out: seen.append(args))
            cut.decoder(z)
            hook.remove()
            (features,) = seen[0]
            for index, part in enumerate(cut.decoder.head.parts):
                shuffled = torch.nn.functional.pixel_shuffle(part(features), 2)
                assert torch.allclose(shuffled, params[:, 3 * index : 3 * index + 3], atol=1e-6)


def test_the_baseline_decoder_is_left_whole_and_a_transposed_layer_is_never_cut():
    """The blog's decoder ends in a ConvTranspose, whose weight's first axis is its inputs: cut
    there, it would make a wrong function that still runs."""
    from birdvae.export.onnx import ChannelGroups, split_heads
    from birdvae.training.config import ModelConfig
    from birdvae.training.model import VAE

    model = VAE(ModelConfig(arch="baseline", image_size=32, latent_dim=16)).eval()
    cut = split_heads(fold_batchnorm(model))
    assert not any(isinstance(m, ChannelGroups) for m in cut.modules())
    with pytest.raises(TypeError, match="cannot cut a ConvTranspose2d"):
        ChannelGroups(torch.nn.ConvTranspose2d(4, 6, 3), 2)


def _graph(nodes, outputs=("y",)):
    value = onnx.helper.make_tensor_value_info
    return onnx.helper.make_graph(
        nodes,
        "g",
        [value("x", onnx.TensorProto.FLOAT, None)],
        [value(name, onnx.TensorProto.FLOAT, None) for name in outputs],
    )


def test_the_float_tail_is_what_follows_the_last_weighted_layers_and_nothing_it_feeds_back():
    """output_tail names the nodes that stay float under int8: after the last weighted layers,
    never a node whose result the network's body also uses (a skip connection), nothing for an
    output a weighted layer makes itself, and a nameless node there is an export error, not a
    node silently quantized."""
    from birdvae.export.onnx import ExportError
    from birdvae.export.quantize import output_tail

    node = onnx.helper.make_node
    skip = _graph([
        node("Conv", ["x", "w"], ["a"], name="first"), node("Relu", ["a"], ["r"], name="relu"),
        node("Conv", ["r", "w"], ["b"], name="second"), node("Add", ["b", "r"], ["s"], name="add"),
        node("Clip", ["s"], ["y"], name="clip"),
    ])  # fmt: skip
    assert output_tail(skip) == ["clip", "add"]
    straight = _graph([node("Gemm", ["x", "w"], ["y"], name="head")])
    assert output_tail(straight) == []
    heads = _graph([
        node("Conv", ["x", "w"], ["a"], name="location"),
        node("Conv", ["x", "v"], ["b"], name="scale"),
        node("Concat", ["a", "b"], ["c"], name="concat", axis=1),
        node("Slice", ["c", "s", "e"], ["y"], name="slice"), node("Exp", ["c"], ["z"], name="exp"),
    ], outputs=("y", "z"))  # fmt: skip
    assert sorted(output_tail(heads)) == ["concat", "exp", "slice"]
    nameless = _graph([node("Conv", ["x", "w"], ["a"], name="head"), node("Clip", ["a"], ["y"])])
    with pytest.raises(ExportError, match="a Clip node before the graph's outputs has no name"):
        output_tail(nameless)
