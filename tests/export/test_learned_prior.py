"""vae-export with a learned prior: prior.onnx written, its parity with PyTorch proven, the
manifest defaulting to it, and the runtime sampling through it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

pytest.importorskip("torch", reason="export tests need the train extra")

import torch

from birdvae.export.onnx import all_nodes
from birdvae.runtime import BirdVAE
from birdvae.runtime.format import SAMPLER_FILE, verify_model_dir
from birdvae.runtime.selection import rater_bytes
from birdvae.training.config import ModelConfig, PriorConfig, TrainConfig
from birdvae.training.prior import CodePrior, Sampler

from .conftest import TINY

SMALL = PriorConfig(width=16, blocks=2, steps=4)


@pytest.fixture(scope="module")
def prior_checkpoint(tmp_path_factory, make_checkpoint) -> tuple[Path, CodePrior]:
    torch.manual_seed(1)
    prior = CodePrior(TINY["latent_dim"], SMALL)
    with torch.no_grad():
        for parameter in prior.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    config = TrainConfig(model=ModelConfig(**TINY), prior=SMALL, stage="prior")
    path = tmp_path_factory.mktemp("prior-run") / "best.pt"
    make_checkpoint(path, TINY, config=config.to_dict(), prior_ema=prior.state_dict())
    return path, prior.eval()


def test_the_learned_prior_is_exported_checked_and_the_default(
    prior_checkpoint, export_cli, tmp_path
):
    checkpoint, prior = prior_checkpoint
    out = tmp_path / "model"
    result = export_cli(checkpoint, "-o", out, "--temperature", 0.7)
    assert result.exit_code == 0, result.stderr
    assert "prior    z" in result.stdout  # the sampler's parity rows
    manifest = verify_model_dir(out)
    assert manifest.default_prior == "learned"
    learned = manifest.priors["learned"]
    assert (learned.file, learned.noise_dim, learned.default_temperature) == (SAMPLER_FILE, 16, 0.7)
    assert manifest.default_temperature == 1.0  # the standard prior's stays 1
    vae = BirdVAE(out, threads=1)
    codes = np.concatenate(list(vae.latent_batches(3, seed=0, temperature=1.0)))
    from birdvae.runtime.prior import Draws

    noise = Draws(0).noise.standard_normal((3, 16)).astype(np.float32)
    with torch.no_grad():
        expected = Sampler(prior)(torch.from_numpy(noise)).numpy()
    np.testing.assert_allclose(codes, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [17, 18])  # TorchScript and dynamo traces of the one step
@pytest.mark.parametrize("steps", [1, 2, 5])  # the last step only; first and last; and between
def test_the_sampler_graph_is_one_loop_over_one_step(tmp_path, opset, steps):
    """prior.onnx holds the denoiser once, in a Loop that runs it once per noise level, and
    computes what the PyTorch sampler computes for every step count (the first step has no
    previous D to extrapolate from, the last one lands on D)."""
    from birdvae.export.sampler import export_sampler

    torch.manual_seed(steps)
    prior = CodePrior(16, PriorConfig(width=16, blocks=2, steps=steps))
    guide = CodePrior(16, PriorConfig(width=8, blocks=1, steps=steps))
    with torch.no_grad():
        for parameter in [*prior.parameters(), *guide.parameters()]:
            parameter.add_(torch.randn_like(parameter) * 0.2)
        guide.mean.copy_(prior.mean)
    path = export_sampler(prior.eval(), tmp_path, opset, guide.eval(), 2.0)
    proto = onnx.load_model(path)
    graph = proto.graph
    meta = {p.key: p.value for p in proto.metadata_props}  # the key facts, as for every graph
    assert (meta["birdvae.graph"], meta["birdvae.latent_dim"]) == ("prior", "16")
    assert meta["birdvae.autoguidance"] == "2.0"
    loops = [node for node in graph.node if node.op_type == "Loop"]
    assert len(loops) == 1 and not any(n.op_type in ("Gemm", "MatMul") for n in graph.node)
    trips = next(t for t in graph.initializer if t.name == loops[0].input[0])
    assert onnx.numpy_helper.to_array(trips) == steps
    body = loops[0].attribute[0].g
    layers = sum(node.op_type in ("Gemm", "MatMul") for node in body.node)
    assert layers == (2 + 2) + (2 + 1)  # input, blocks and output of the prior, then the guide's

    noise = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = Sampler(prior, guide, 2.0)(torch.from_numpy(noise)).numpy()
    got = session.run(None, {"noise": noise})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_a_forbidden_op_inside_a_loop_body_is_refused():
    """A random op hidden in a subgraph would make the sampler draw its own noise."""
    from onnx import TensorProto, helper

    from birdvae.export.onnx import ExportError, check_graph

    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]),
         helper.make_node("RandomNormalLike", ["x"], ["y"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "", "noise"], ["z"], body=body)],
        "prior",
        [helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor("n", TensorProto.INT64, [], [2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(ExportError, match="RandomNormalLike"):
        check_graph(proto, 17, {"noise": [4], "z": [4]}, "prior")


def test_a_forbidden_op_inside_a_local_function_is_refused():
    from onnx import TensorProto, helper

    from birdvae.export.onnx import ExportError, check_graph

    spin = helper.make_function(
        "local", "noisy", ["x"], ["y"], [helper.make_node("RandomNormalLike", ["x"], ["y"])],
        [helper.make_opsetid("", 17)],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("noisy", ["noise"], ["z"], domain="local")],
        "prior",
        [helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, functions=[spin]
    )
    with pytest.raises(ExportError, match="RandomNormalLike"):
        check_graph(proto, 17, {"noise": [4], "z": [4]}, "prior")


def test_asking_for_a_learned_prior_the_checkpoint_lacks_is_one_line(
    resnet_checkpoint, export_cli, tmp_path
):
    result = export_cli(resnet_checkpoint, "-o", tmp_path / "m", "--default-prior", "learned")
    assert result.exit_code == 2 and "has no learned prior" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_a_broken_sampler_fails_its_parity_check(
    prior_checkpoint, export_cli, tmp_path, monkeypatch
):
    from birdvae.export import parity

    checkpoint, _ = prior_checkpoint
    original = parity.sampler_module

    class Drifting(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, noise):
            return self.inner(noise) + 1e-3

    monkeypatch.setattr(parity, "sampler_module", lambda *a, **k: Drifting(original(*a, **k)))
    result = export_cli(checkpoint, "-o", tmp_path / "m")
    assert result.exit_code == 1 and "parity check failed" in result.stderr
    assert "prior z" in result.stderr and not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def guide_checkpoint(tmp_path_factory, make_checkpoint, prior_checkpoint) -> tuple[Path, CodePrior]:
    """A smaller prior over the same encoder's codes (the same VAE seed), standardised alike."""
    _, prior = prior_checkpoint
    torch.manual_seed(2)
    cfg = PriorConfig(width=8, blocks=1, steps=4)
    guide = CodePrior(TINY["latent_dim"], cfg)
    with torch.no_grad():
        for parameter in guide.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
        guide.mean.copy_(prior.mean)
        guide.std.copy_(prior.std)
    config = TrainConfig(model=ModelConfig(**TINY), prior=cfg, stage="prior")
    path = tmp_path_factory.mktemp("guide-run") / "best.pt"
    make_checkpoint(path, TINY, config=config.to_dict(), prior_ema=guide.state_dict())
    return path, guide.eval()


def test_an_autoguided_prior_is_exported_checked_and_recorded(
    prior_checkpoint, guide_checkpoint, export_cli, tmp_path
):
    (checkpoint, prior), (guide_path, guide) = prior_checkpoint, guide_checkpoint
    out = tmp_path / "model"
    result = export_cli(checkpoint, "-o", out, "--prior-guide", guide_path, "--guidance", 2.5)
    assert result.exit_code == 0, result.stderr
    learned = verify_model_dir(out).priors["learned"]
    assert learned.source["autoguidance"]["weight"] == 2.5
    assert learned.source["autoguidance"]["guide"]["width"] == 8
    from birdvae.runtime.prior import Draws

    codes = np.concatenate(list(BirdVAE(out, threads=1).latent_batches(4, seed=0)))
    noise = torch.from_numpy(Draws(0).noise.standard_normal((4, 16)).astype(np.float32))
    with torch.no_grad():
        guided, plain = Sampler(prior, guide, 2.5)(noise).numpy(), Sampler(prior)(noise).numpy()
    np.testing.assert_allclose(codes, guided, rtol=1e-4, atol=1e-5)
    assert np.abs(codes - plain).max() > 1e-3


def test_a_guide_guides_at_the_same_weight_from_python_and_from_the_command(
    prior_checkpoint, guide_checkpoint, export_cli, tmp_path
):
    from birdvae.export.pipeline import ExportOptions, export

    (checkpoint, _), (guide_path, _) = prior_checkpoint, guide_checkpoint
    export(ExportOptions(checkpoint, tmp_path / "python", guide=guide_path))
    result = export_cli(checkpoint, "-o", tmp_path / "command", "--prior-guide", guide_path)
    assert result.exit_code == 0, result.stderr
    weights = [verify_model_dir(tmp_path / name).priors["learned"].source["autoguidance"]["weight"]
               for name in ("python", "command")]  # fmt: skip
    assert weights == [3.5, 3.5]  # the default weight, rated above 2 (training/config.py)


def test_a_guide_over_another_encoder_is_one_line(
    prior_checkpoint, export_cli, make_checkpoint, tmp_path
):
    checkpoint, prior = prior_checkpoint
    config = TrainConfig(model=ModelConfig(**TINY), prior=SMALL, stage="prior")
    stranger = make_checkpoint(tmp_path / "other.pt", TINY, seed=5, config=config.to_dict(),
                               prior_ema=prior.state_dict())  # fmt: skip
    result = export_cli(checkpoint, "-o", tmp_path / "m", "--prior-guide", stranger)
    assert result.exit_code == 2 and "another encoder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_guide_flags_that_cannot_work_are_refused(
    prior_checkpoint, resnet_checkpoint, export_cli, tmp_path
):
    checkpoint, _ = prior_checkpoint
    result = export_cli(checkpoint, "-o", tmp_path / "m", "--guidance", 2)
    assert result.exit_code == 2 and "--guidance needs --prior-guide" in result.stderr
    result = export_cli(checkpoint, "-o", tmp_path / "m", "--prior-guide", resnet_checkpoint)
    assert result.exit_code == 2 and "has no learned prior" in result.stderr
    result = export_cli(checkpoint, "-o", tmp_path / "m", "--prior-guide", tmp_path / "none.pt")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "--prior-guide" in result.stderr and "does not exist" in result.stderr
    itself = tmp_path / "copy.pt"  # a copy too: a prior guiding itself is the prior alone
    itself.write_bytes(checkpoint.read_bytes())
    result = export_cli(checkpoint, "-o", tmp_path / "m", "--prior-guide", itself)
    assert result.exit_code == 2 and "is the checkpoint being exported" in result.stderr
    # A guide whose prior does not fit its own config: the line named no file, so the
    # checkpoint being exported took the blame.
    from birdvae.training import checkpoint as checkpoints

    state = checkpoints.load(checkpoint)
    state["config"]["prior"]["width"] += 8
    misfit = tmp_path / "misfit.pt"
    torch.save(state, misfit)
    result = export_cli(checkpoint, "-o", tmp_path / "m", "--prior-guide", misfit)
    assert result.exit_code == 2 and f"--prior-guide {misfit}: " in result.stderr
    assert "does not fit its config" in result.stderr
    assert not (tmp_path / "m").exists()


def test_a_guide_holding_the_very_prior_it_would_guide_is_refused(
    prior_checkpoint, export_cli, make_checkpoint, tmp_path
):
    """A later stage's checkpoint carries its prior stage's prior: another file, the same
    prior, which guiding itself would only slow down."""
    checkpoint, prior = prior_checkpoint
    config = TrainConfig(model=ModelConfig(**TINY), prior=SMALL, stage="decoder")
    later = make_checkpoint(tmp_path / "later.pt", TINY, config=config.to_dict(),
                            prior_ema=prior.state_dict(), epoch=7)  # fmt: skip
    result = export_cli(later, "-o", tmp_path / "m", "--prior-guide", checkpoint)
    assert result.exit_code == 2 and "a prior guiding itself is the prior alone" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def _int8_sampler_export(export_cli, checkpoint, bird_folder, out, *flags):
    result = export_cli(checkpoint, "-o", out, "--int8", *flags, "--prior-data", bird_folder)
    assert result.exit_code == 0, result.stderr
    manifest = verify_model_dir(out)
    ops = {node.op_type for node in all_nodes(onnx.load_model(out / SAMPLER_FILE).graph)}
    return manifest, result.stdout, "MatMulInteger" in ops


@pytest.mark.parametrize("floor, ships", [(0.0, True), (1e3, False)])
def test_the_int8_sampler_ships_only_faster_and_close_to_fp32(
    prior_checkpoint, export_cli, bird_folder, monkeypatch, tmp_path, floor, ships
):
    from birdvae.export import quantize

    # Latency is the machine's to decide; here int8 is always clearly faster, so the sampler's
    # quality floor alone decides, both ways.
    monkeypatch.setattr(quantize, "compare_latency", lambda *a, **k: (10.0, 1.0))
    monkeypatch.setattr(quantize, "MIN_INT8_PSNR_DB", floor)
    checkpoint, prior = prior_checkpoint
    manifest, stdout, is_int8 = _int8_sampler_export(
        export_cli, checkpoint, bird_folder, tmp_path / "m"
    )
    row = manifest.source["int8"]["prior"]
    assert row["used"] is ships and is_int8 is ships
    assert row["psnr_vs_fp32_db"] > 20
    prior_line = stdout.split("int8 prior:")[1].splitlines()[0]
    assert ("int8 shipped" in prior_line) is ships
    from birdvae.runtime.prior import Draws

    codes = np.concatenate(list(BirdVAE(tmp_path / "m", threads=1).latent_batches(64, seed=0)))
    noise = Draws(0).noise.standard_normal((64, 16)).astype(np.float32)
    with torch.no_grad():
        expected = Sampler(prior)(torch.from_numpy(noise)).numpy()
    error = np.sqrt(np.mean((codes - expected) ** 2) / np.mean(expected**2))
    if ships:  # int8 rounding: close to PyTorch's codes, not equal to them
        assert 1e-5 < error < 0.1
    else:
        assert error < 1e-5


def test_an_int8_sampler_no_faster_here_ships_when_asked(
    prior_checkpoint, export_cli, bird_folder, monkeypatch, tmp_path
):
    from birdvae.export import quantize

    monkeypatch.setattr(quantize, "compare_latency", lambda *a, **k: (10.0, 10.5))
    monkeypatch.setattr(quantize, "MIN_INT8_PSNR_DB", 0.0)
    checkpoint, _ = prior_checkpoint
    for flags, ships in (((), False), (("--int8-even-if-slower",), True)):
        manifest, _, is_int8 = _int8_sampler_export(
            export_cli, checkpoint, bird_folder, tmp_path / str(ships), *flags
        )
        assert manifest.source["int8"]["prior"]["used"] is ships and is_int8 is ships


def test_the_int8_sampler_is_judged_on_the_runtimes_blocks():
    """The runtime runs a sampler on 64-row blocks, and an int8 sampler's codes depend on the
    rows beside them: export must measure the codes users get, so it runs the same blocks."""
    from birdvae.export import quantize
    from birdvae.runtime.prior import LearnedPrior

    runs = []

    class Session:
        def run(self, _outputs, feed):
            noise = feed["noise"]
            runs.append(len(noise))
            return [noise - noise.mean(axis=0)]  # every row depends on its batch

    noise = np.random.default_rng(0).standard_normal((150, 4)).astype(np.float32)
    codes = quantize._sample(Session(), noise)
    rows = LearnedPrior.BLOCK_ROWS
    assert runs == [rows, rows, 150 - 2 * rows]
    np.testing.assert_array_equal(codes[:rows], noise[:rows] - noise[:rows].mean(axis=0))


def test_a_selector_learns_a_score_and_best_of_samples_its_choice():
    from birdvae.export.selector import BestOf
    from birdvae.training.selector import train_selector

    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(4096, 6, generator=generator)
    scores = (noise[:, 0] - 0.5 * noise[:, 1]).numpy()  # a score the noise alone decides
    selection = train_selector(noise, scores, k=4)
    assert selection.facts["held_out_correlation"] > 0.95
    assert selection.facts["share_of_best_of_k_gain"] > 0.8
    candidates = torch.randn(5, 4, 6, generator=generator)
    best = BestOf(torch.nn.Identity(), selection, dim=6)(candidates.reshape(5, 24))
    with torch.no_grad():
        predicted = selection.selector(candidates).squeeze(-1)
    assert torch.equal(best, candidates[torch.arange(5), predicted.argmax(1)])


def test_best_of_k_is_built_into_the_sampler_graph(prior_checkpoint, export_cli, tmp_path):
    """--best-of 3: prior.onnx takes 3 x D noise numbers a bird and samples one of the three
    candidates; every code the runtime draws is the sampler's code for one of its three."""
    from birdvae.runtime.prior import Draws

    checkpoint, prior = prior_checkpoint
    out = tmp_path / "model"
    result = export_cli(checkpoint, "-o", out, "--best-of", 3)
    assert result.exit_code == 0, result.stderr
    learned = verify_model_dir(out).priors["learned"]
    assert learned.noise_dim == 48 and learned.source["best_of"]["k"] == 3
    rater = hashlib.sha256(rater_bytes()[0]).hexdigest()
    assert learned.source["best_of"]["rater_sha256"] == rater  # which rater taught the choice
    codes = np.concatenate(list(BirdVAE(out, threads=1).latent_batches(10, seed=2, temperature=1)))
    noise = Draws(2).noise.standard_normal((64, 48)).astype(np.float32)[:10].reshape(10, 3, 16)
    with torch.no_grad():
        candidates = Sampler(prior)(torch.from_numpy(noise.reshape(30, 16))).numpy()
    candidates = candidates.reshape(10, 3, 16)
    distance = np.abs(candidates - codes[:, None]).max(axis=2)
    assert (distance.min(axis=1) < 1e-4).all()
    assert len(set(distance.argmin(axis=1))) > 1  # not always the same candidate


def test_selector_from_keeps_a_models_choice_without_teaching_one(
    prior_checkpoint, export_cli, tmp_path, monkeypatch
):
    """Exporting a checkpoint again with --selector-from its model keeps that model's selector
    weight for weight, and so the birds it chose, and records where the selector came from."""
    from birdvae.export.selector import _dense_layers, selector_nodes
    from birdvae.runtime.format import FileEntry, Manifest
    from birdvae.training import selector as selector_module

    checkpoint, _ = prior_checkpoint
    first, again = tmp_path / "first", tmp_path / "again"
    assert export_cli(checkpoint, "-o", first, "--best-of", 3).exit_code == 0
    # Turn the first model's selector upside down (scores negated), so that only a carried
    # selector, not one taught again from the same seeds, can match it.
    proto = onnx.load_model(first / SAMPLER_FILE)
    values = {tensor.name: tensor for tensor in proto.graph.initializer}
    chosen = set(selector_nodes(proto.graph))
    dense = [n for n in proto.graph.node if n.name in chosen and n.op_type in ("MatMul", "Add")]
    for name in (name for node in dense[-2:] for name in node.input if name in values):
        flipped = -onnx.numpy_helper.to_array(values[name])
        values[name].CopyFrom(onnx.numpy_helper.from_array(flipped, name))
    onnx.save_model(proto, first / SAMPLER_FILE)
    manifest = Manifest.load(first)
    manifest.files[SAMPLER_FILE] = FileEntry.of(first / SAMPLER_FILE)
    manifest.save(first)

    def no_teaching(*args, **kwargs):
        raise AssertionError("a carried selector must not be taught again")

    monkeypatch.setattr(selector_module, "train_selector", no_teaching)
    result = export_cli(checkpoint, "-o", again, "--best-of", 3, "--selector-from", first)
    assert result.exit_code == 0, result.stderr
    before, after = (onnx.load_model(folder / SAMPLER_FILE).graph for folder in (first, again))
    for (w0, b0), (w1, b1) in zip(_dense_layers(before), _dense_layers(after), strict=True):
        np.testing.assert_array_equal(w0, w1)
        np.testing.assert_array_equal(b0, b1)
    manifests = [verify_model_dir(folder) for folder in (first, again)]
    facts = [m.priors["learned"].source["best_of"] for m in manifests]
    assert facts[1] == {**facts[0], "carried_from_sha256": manifests[0].files[SAMPLER_FILE].sha256}
    codes = [np.concatenate(list(BirdVAE(folder, threads=1).latent_batches(12, seed=4)))
             for folder in (first, again)]  # fmt: skip
    np.testing.assert_allclose(codes[1], codes[0], atol=1e-6)


def test_selector_from_a_folder_that_cannot_give_one_is_one_line(
    prior_checkpoint, export_cli, tmp_path
):
    from birdvae.export.selector import selector_nodes
    from birdvae.runtime.format import FileEntry, Manifest

    checkpoint, _ = prior_checkpoint
    plain, chosen = tmp_path / "plain", tmp_path / "chosen"
    assert export_cli(checkpoint, "-o", plain).exit_code == 0
    assert export_cli(checkpoint, "-o", chosen, "--best-of", 2).exit_code == 0
    tampered = tmp_path / "tampered"
    shutil.copytree(chosen, tampered)
    with open(tampered / SAMPLER_FILE, "r+b") as handle:
        handle.seek(-8, 2)
        handle.write(b"\0" * 8)
    # A selector weight kept in another file of the folder (ONNX external data): onnx would
    # read that file past the manifest's hash and carry its bytes into the new model.
    external = tmp_path / "external"
    shutil.copytree(chosen, external)
    onnx.save_model(onnx.load_model(external / SAMPLER_FILE), external / SAMPLER_FILE,
                    save_as_external_data=True, location="NOTES.bin", size_threshold=0)  # fmt: skip
    manifest = Manifest.load(external)
    manifest.files[SAMPLER_FILE] = FileEntry.of(external / SAMPLER_FILE)
    manifest.save(external)
    listed = tmp_path / "listed"  # its record of the selector a list: AttributeError's traceback
    shutil.copytree(chosen, listed)
    data = json.loads((listed / "manifest.json").read_text())
    data["priors"]["learned"]["source"]["best_of"] = [1, 2]
    (listed / "manifest.json").write_text(json.dumps(data))
    # Selector weights vae-export never writes: NaN (the sampler would always keep candidate 0)
    # and float16 (bfloat16 and text ones were a traceback in torch).
    odd = {}
    for kind in ("nan", "float16"):
        folder = odd[kind] = tmp_path / kind
        shutil.copytree(chosen, folder)
        proto = onnx.load_model(folder / SAMPLER_FILE)
        names = {n for node in proto.graph.node if node.name in set(selector_nodes(proto.graph))
                 for n in node.input}  # fmt: skip
        tensor = next(t for t in proto.graph.initializer if t.name in names and len(t.dims) == 1)
        values = onnx.numpy_helper.to_array(tensor)
        values = np.full_like(values, np.nan) if kind == "nan" else values.astype(np.float16)
        tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
        onnx.save_model(proto, folder / SAMPLER_FILE)
        manifest = Manifest.load(folder)
        manifest.files[SAMPLER_FILE] = FileEntry.of(folder / SAMPLER_FILE)
        manifest.save(folder)
    cases = [
        (("--best-of", 2), odd["nan"], "not finite float32 numbers"),
        (("--best-of", 2), odd["float16"], "not finite float32 numbers"),
        (("--best-of", 2), listed, "records its best-of selector as list, not an object"),
        ((), plain, "needs --best-of"),
        (("--best-of", 2), external, "in another file"),
        (("--best-of", 2), plain, "has no best-of selector"),
        (("--best-of", 3), chosen, "chooses among 2 candidates"),
        (("--best-of", 2), tampered, "sha256"),
        (("--best-of", 2), tmp_path / "none", "--selector-from"),
        (("--best-of", 2, "--temperature", 0.8), chosen, "another sampler (temperature"),
        (("--best-of", 2, "--no-ema"), chosen, "another sampler (weights"),
    ]
    for flags, source, message in cases:
        out = tmp_path / "out"
        result = export_cli(checkpoint, "-o", out, *flags, "--selector-from", source)
        assert result.exit_code == 2, (source, result.stdout)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_best_of_needs_a_learned_prior(resnet_checkpoint, export_cli, tmp_path):
    result = export_cli(resnet_checkpoint, "-o", tmp_path / "m", "--best-of", 4)
    assert result.exit_code == 2 and "has none" in result.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("opset", [17, 18])  # TorchScript and dynamo name nodes differently
def test_int8_leaves_the_selector_in_float(prior_checkpoint, export_cli, tmp_path, opset):
    """Quantizing the selector's few weights would change which candidate some birds come
    from; only the sampler's own matrix products become int8."""
    from birdvae.export.quantize import quantize_sampler
    from birdvae.export.selector import selector_nodes

    checkpoint, _ = prior_checkpoint
    out = tmp_path / "model"
    result = export_cli(checkpoint, "-o", out, "--best-of", 2, "--opset", opset)
    assert result.exit_code == 0, result.stderr
    selector = selector_nodes(onnx.load_model(out / SAMPLER_FILE).graph)
    int8 = tmp_path / "prior.int8.onnx"
    quantize_sampler(out / SAMPLER_FILE, int8, opset)
    graph = onnx.load_model(int8).graph
    before_argmax = [graph_node for graph_node in graph.node
                     if graph_node.name in set(selector_nodes(graph))]  # fmt: skip
    assert len(before_argmax) >= len(selector) > 0
    assert not any("Integer" in n.op_type or "Quantize" in n.op_type for n in before_argmax)
    assert any(node.op_type == "MatMulInteger" for node in all_nodes(graph))  # the sampler's


def _rater_stage_checkpoint(path: Path, make_checkpoint, prior, judge: object = True) -> Path:
    """A decoder-stage checkpoint after a stage with the rater's term: its exported weights are
    one perturbed VAE, the VAE before that stage (``judge``) another."""
    from birdvae.training.checkpoint import JUDGE
    from birdvae.training.model import VAE

    config = TrainConfig(model=ModelConfig(**TINY), prior=SMALL, stage="decoder")
    config.sharpen.rater_weight = 0.1
    torch.manual_seed(5)
    other = VAE(config.model)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    weights = other.state_dict() if judge is True else judge
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"prior_ema": prior.state_dict(), JUDGE: weights}
    return make_checkpoint(path, TINY, config=config.to_dict(), **extra)


def test_after_the_rater_term_the_selector_judges_draws_by_the_vae_before_it(
    prior_checkpoint, make_checkpoint, export_cli, tmp_path, monkeypatch
):
    """A decoder that learned to please the rater would teach the selector its own blind spots,
    so the draws the selector learns from are decoded by the VAE the checkpoint carries from
    before that stage."""
    from birdvae.training import checkpoint as checkpoints
    from birdvae.training import selector
    from birdvae.training.checkpoint import JUDGE

    _, prior = prior_checkpoint
    path = _rater_stage_checkpoint(tmp_path / "run" / "best.pt", make_checkpoint, prior)
    decoders = []
    original = selector.scored_draws

    def spy(sampler, decode, *args, **kwargs):
        decoders.append(decode)
        return original(sampler, decode, *args, **kwargs)

    monkeypatch.setattr(selector, "scored_draws", spy)
    result = export_cli(path, "-o", tmp_path / "m", "--best-of", 2)
    assert result.exit_code == 0, result.stderr
    state = checkpoints.load(path)
    before = checkpoints.build_vae({"config": state["config"], "model": state[JUDGE]}, ema=False)
    exported = checkpoints.build_vae(state)
    z = torch.randn(4, TINY["latent_dim"])
    with torch.no_grad():
        judged, want, other = decoders[0](z), before.decode_image(z), exported.decode_image(z)
    assert torch.allclose(judged, want) and not torch.allclose(judged, other)
    best_of = verify_model_dir(tmp_path / "m").priors["learned"].source["best_of"]
    assert best_of["judged_by"] == "decoder before the rater's term"


def test_a_rater_trained_checkpoint_exports_without_best_of(
    prior_checkpoint, make_checkpoint, export_cli, tmp_path
):
    _, prior = prior_checkpoint
    path = _rater_stage_checkpoint(tmp_path / "run" / "best.pt", make_checkpoint, prior)
    result = export_cli(path, "-o", tmp_path / "m")
    assert result.exit_code == 0, result.stderr
    assert "best of" not in result.stdout
    assert "best_of" not in verify_model_dir(tmp_path / "m").priors["learned"].source


def test_a_judge_that_does_not_fit_is_one_line_before_any_work(
    prior_checkpoint, make_checkpoint, export_cli, tmp_path
):
    _, prior = prior_checkpoint
    path = _rater_stage_checkpoint(tmp_path / "run" / "best.pt", make_checkpoint, prior, {})
    result = export_cli(path, "-o", tmp_path / "m", "--best-of", 2)
    assert result.exit_code == 2 and "do not fit" in result.stderr, result.stderr
    assert "encoder" not in result.stdout  # refused before the parity table
    assert not (tmp_path / "m").exists()


def test_a_prior_stage_checkpoint_is_not_said_to_lack_a_weight_average(
    make_checkpoint, export_cli, tmp_path
):
    """The prior stage saves its init's VAE as it froze it (that run's average) as "model",
    and no average of its own: the export's note called those raw weights."""
    prior = CodePrior(TINY["latent_dim"], SMALL)
    config = TrainConfig(model=ModelConfig(**TINY), prior=SMALL, stage="prior")
    path = make_checkpoint(tmp_path / "best.pt", TINY, config=config.to_dict(),
                           prior_ema=prior.state_dict(), ema=None)  # fmt: skip
    result = export_cli(path, "-o", tmp_path / "model")
    assert result.exit_code == 0, result.stderr
    assert "no weight average" not in result.stderr
