"""``vae-export`` as a user meets it: clear one-line errors, exit codes, and no partial folders."""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from birdvae.runtime import BirdVAE
from birdvae.runtime.format import (
    DECODER_FILE,
    MANIFEST_FILE,
    MAX_PRIOR_VALUES,
    verify_model_dir,
)

pytest.importorskip("torch")
pytest.importorskip("onnx")

pytestmark = pytest.mark.torch


def leftovers(folder: Path) -> list[str]:
    """Anything an export may have left in ``folder`` (the checkpoint's own files aside)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".pt"))


def assert_one_error_line(result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    return folder


def test_random_bytes_are_not_a_checkpoint(export_cli, run_dir):
    path = run_dir / "last.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    result = export_cli(path)
    assert_one_error_line(result, 2, "not a readable checkpoint")
    assert leftovers(run_dir) == []


def test_truncated_checkpoint_is_refused(export_cli, make_checkpoint, tiny_kwargs, run_dir):
    path = make_checkpoint(run_dir / "last.pt", tiny_kwargs)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_one_error_line(export_cli(path), 2, "not a readable checkpoint")
    assert leftovers(run_dir) == []


def test_dict_missing_keys_is_refused(export_cli, run_dir):
    import torch

    path = run_dir / "last.pt"
    torch.save({"model": {}}, path)
    assert_one_error_line(export_cli(path), 2, "missing keys")
    assert leftovers(run_dir) == []


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epoch", "x", "epoch of 'x'"), ("metrics", {"val_bpd": "low"}, "metrics that are not numbers"),
    ("config", "resnet", "TrainConfig must be a mapping of settings, not str"),
])  # fmt: skip
def test_damaged_checkpoint_fields_are_refused(export_cli, make_checkpoint, tiny_kwargs,
                                               run_dir, field, value, message):  # fmt: skip
    import torch

    path = make_checkpoint(run_dir / "last.pt", tiny_kwargs)
    state = torch.load(path, weights_only=True)
    state[field] = value
    torch.save(state, path)
    assert_one_error_line(export_cli(path), 2, message)
    assert leftovers(run_dir) == []


def test_weights_that_do_not_fit_are_refused(export_cli, make_checkpoint, tiny_kwargs, run_dir):
    import torch

    other = make_checkpoint(run_dir / "other.pt", {**tiny_kwargs, "latent_dim": 32})
    path = make_checkpoint(run_dir / "last.pt", tiny_kwargs)
    state = torch.load(path, weights_only=True)
    state["ema"] = torch.load(other, weights_only=True)["ema"]
    torch.save(state, path)
    assert_one_error_line(export_cli(path), 2, "do not fit")
    assert leftovers(run_dir) == []


def test_missing_checkpoint_and_missing_data(export_cli, resnet_checkpoint, tmp_path):
    assert_one_error_line(export_cli(tmp_path / "nope.pt"), 2, "does not exist")
    out = tmp_path / "model"
    result = export_cli(resnet_checkpoint, "-o", out, "--prior-data", tmp_path / "no-birds")
    assert_one_error_line(result, 2, "no-birds")
    assert not out.exists()


def test_an_empty_path_is_refused_not_read_as_the_working_folder(export_cli, resnet_checkpoint):
    """An unset shell variable ("$CKPT", -o "$OUT") is an empty name, which click reads as '.':
    --selector-from "" would keep the working folder's selector if it were a model."""
    for args in ([""], [resnet_checkpoint, "-o", ""], [resnet_checkpoint, "--out", ""],
                 [resnet_checkpoint, "--prior-guide", ""],
                 [resnet_checkpoint, "--best-of", 2, "--selector-from", ""]):  # fmt: skip
        assert_one_error_line(export_cli(*args), 2, "an empty name")


def test_more_mixture_components_than_photos_are_refused_before_any_work(
    export_cli, resnet_checkpoint, bird_folder, tmp_path
):
    """It was found out after the graphs, their parity (and a --best-of selector's minutes),
    as an export failure with status 1."""
    out = tmp_path / "model"
    result = export_cli(resnet_checkpoint, "-o", out, "--prior-data", bird_folder,
                        "--prior-components", 40)  # fmt: skip
    assert_one_error_line(result, 2, "--prior-components 40", "give more photos or fewer")
    assert "parity" not in result.stdout and not out.exists()


def test_a_figure_that_is_not_finite_is_written_as_null(export_cli, make_checkpoint, tiny_kwargs,
                                                        run_dir):  # fmt: skip
    """A diverged epoch's NaN val_bpd went into manifest.json as NaN, which is not JSON."""
    path = make_checkpoint(run_dir / "last.pt", tiny_kwargs, metrics={"val_bpd": float("nan")})
    result = export_cli(path, "-o", run_dir / "model")
    assert result.exit_code == 0, result.stderr
    assert "NaN" not in (run_dir / "model" / "manifest.json").read_text()
    assert verify_model_dir(run_dir / "model").source["val_bpd"] is None


def test_options_that_need_data(export_cli, resnet_checkpoint, tmp_path):
    out = tmp_path / "model"
    assert_one_error_line(export_cli(resnet_checkpoint, "-o", out, "--int8"), 2, "--prior-data")
    result = export_cli(resnet_checkpoint, "-o", out, "--prior-components", 3)
    assert result.exit_code == 2 and "--prior-components needs --prior-data" in result.stderr
    assert not out.exists()


def test_output_is_given_once(export_cli, resnet_checkpoint, tmp_path):
    """--out is -o/--output's hidden old name: both at once cannot say which was meant."""
    result = export_cli(resnet_checkpoint, "-o", tmp_path / "a", "--out", tmp_path / "b")
    assert_one_error_line(result, 2, "give -o/--output once")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_defaults_bird_gen_would_refuse_are_refused_before_any_work(
    export_cli, resnet_checkpoint, bird_folder, tmp_path
):
    out = tmp_path / "model"
    for flag, value in (("--temperature", 50), ("--noise", 11)):
        result = export_cli(resnet_checkpoint, "-o", out, flag, value)
        assert result.exit_code == 2 and "0<x<=10" in result.stderr.replace("0<=x", "0<x")
    result = export_cli(resnet_checkpoint, "-o", out, "--prior-data", bird_folder,
                        "--prior-components", 10**7)  # fmt: skip
    most = MAX_PRIOR_VALUES // 16**2  # the checkpoint's latent size is 16
    assert_one_error_line(result, 2, "--prior-components 10000000", f"at most {most} components")
    assert not out.exists()


def test_an_opset_onnx_does_not_know_is_refused_before_any_work(
    export_cli, resnet_checkpoint, tmp_path
):
    out = tmp_path / "model"
    assert_one_error_line(export_cli(resnet_checkpoint, "-o", out, "--opset", 99), 2, "--opset")
    assert not out.exists()


@pytest.mark.parametrize("where", [".", "..", "here"])
def test_the_working_folder_is_refused_as_destination(
    export_cli, resnet_checkpoint, tmp_path, monkeypatch, where
):
    """Exporting swaps the destination for a new folder; ``-o .`` also staged the model inside
    the folder it was to replace, and was refused only after all the work."""
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    result = export_cli(resnet_checkpoint, "-o", here if where == "here" else where)
    assert_one_error_line(result, 2, "working folder")
    assert list(here.iterdir()) == []


def test_help_names_the_command_and_takes_h(export_cli):
    result = export_cli("-h")
    assert result.exit_code == 0 and result.stdout.startswith("Usage: vae-export ")


def test_a_destination_that_cannot_be_written_is_one_line_naming_it(
    export_cli, resnet_checkpoint, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = export_cli(resnet_checkpoint, "-o", blocker / "model")
    assert_one_error_line(result, 2, str(blocker))
    assert blocker.read_text() == "not a folder"


def test_noise_needs_a_logistic_likelihood(export_cli, baseline_checkpoint, tmp_path):
    out = tmp_path / "model"
    result = export_cli(baseline_checkpoint, "-o", out, "--noise", 0.5)
    assert_one_error_line(result, 2, "--noise needs a logistic likelihood")
    assert not out.exists()


def test_coupled_model_exports_and_draws_pixels(export_cli, make_checkpoint, tiny_kwargs,
                                                run_dir):  # fmt: skip
    path = make_checkpoint(run_dir / "last.pt", {**tiny_kwargs, "likelihood": "coupled_logistic"})
    result = export_cli(path, "--noise", 0.5)
    assert result.exit_code == 0, result.stderr
    assert "coupling" in result.stdout  # its couplings are checked against PyTorch too
    vae = BirdVAE(run_dir / "model", threads=1)
    assert vae.manifest.likelihood == "coupled_logistic" and vae.default_noise() == 0.5
    grainy, smooth = vae.sample(4, seed=0), vae.sample(4, seed=0, noise=0)
    assert not np.array_equal(grainy, smooth) and np.abs(grainy - smooth).mean() < 0.2


def test_a_folder_that_is_not_a_model_is_never_replaced(export_cli, resnet_checkpoint, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert_one_error_line(export_cli(resnet_checkpoint, "-o", out), 2, "refusing to replace")
    assert (out / "notes.txt").read_text() == "keep me"


def test_failed_parity_leaves_the_old_model_and_no_partial_folder(
    export_cli, resnet_checkpoint, tmp_path, monkeypatch
):
    out = tmp_path / "models" / "birds"
    first = export_cli(resnet_checkpoint, "-o", out)
    assert first.exit_code == 0, first.stderr
    before = (out / MANIFEST_FILE).read_bytes()

    monkeypatch.setattr("birdvae.export.parity.IMAGE_TOL", 0.0)
    result = export_cli(resnet_checkpoint, "-o", out)
    assert_one_error_line(result, 1, "parity check failed")
    assert (out / MANIFEST_FILE).read_bytes() == before
    verify_model_dir(out)
    assert leftovers(out.parent) == ["birds"]

    fresh = tmp_path / "new" / "deeper" / "model"
    assert export_cli(resnet_checkpoint, "-o", fresh).exit_code == 1
    assert not (tmp_path / "new").exists()  # the parents it made are gone too


def test_a_folder_bird_gen_would_refuse_is_never_published(
    export_cli, resnet_checkpoint, tmp_path, monkeypatch
):
    from birdvae.runtime import format, graphs

    def drifted(manifest, file):  # the runtime's contract moved; export's graphs did not
        signature = format.graph_signature(manifest, file)
        return replace(signature, input="latent") if file == DECODER_FILE else signature

    monkeypatch.setattr(graphs, "graph_signature", drifted)
    out = tmp_path / "models" / "birds"
    result = export_cli(resnet_checkpoint, "-o", out)
    assert_one_error_line(result, 1, "decoder.onnx takes inputs ['z']")
    assert not (tmp_path / "models").exists()


def test_a_successful_export_replaces_the_old_model(export_cli, make_checkpoint, tiny_kwargs,
                                                    run_dir):  # fmt: skip
    path = make_checkpoint(run_dir / "last.pt", tiny_kwargs)
    first = export_cli(path)
    model = run_dir / "model"
    assert first.exit_code == 0
    assert first.stdout.splitlines()[-2:] == [
        f"wrote {model}", f"next: bird-gen -m {shlex.quote(str(model))} --n 64 -o birds.png"
    ]  # fmt: skip
    old = json.loads((run_dir / "model" / MANIFEST_FILE).read_text())
    make_checkpoint(path, tiny_kwargs, seed=1)
    result = export_cli(path, "--no-ema", "--temperature", 0.5, "--noise", 0.4)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {model}, replacing the model that was there\n" in result.stdout
    new = verify_model_dir(run_dir / "model")
    assert new.source["checkpoint_sha256"] != old["source"]["checkpoint_sha256"]
    assert new.default_temperature == 0.5 and new.source["weights"] == "model"
    assert new.default_noise == 0.4 and old["default_noise"] == 0
    assert leftovers(run_dir) == ["model"]


def test_int8_export_records_its_measurements(export_cli, resnet_checkpoint, bird_folder,
                                              tmp_path):  # fmt: skip
    out = tmp_path / "int8"
    result = export_cli(resnet_checkpoint, "-o", out, "--int8", "--prior-data", bird_folder)
    assert result.exit_code == 0, result.stderr
    assert "int8 decoder:" in result.stdout
    manifest = verify_model_dir(out)
    figures = manifest.source["int8"]
    assert figures["format"] == "QDQ" and figures["latency_batch"] == 64
    for graph in ("encoder", "decoder"):
        row = figures[graph]
        assert row["fp32_ms"] > 0 and row["int8_ms"] > 0
        assert row["int8_bytes"] < row["fp32_bytes"]
        assert row["psnr_vs_fp32_db"] > 20
        assert isinstance(row["used"], bool)
    assert set(figures["reconstruction_psnr_db"]) == {"fp32", "shipped", "shipped_vs_fp32"}
    assert sorted(p.name for p in out.iterdir()) == sorted([*manifest.files, MANIFEST_FILE])
    session = ort.InferenceSession(str(out / DECODER_FILE), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"z": np.zeros((3, manifest.latent_dim), np.float32)})
    # whichever decoder shipped, it runs: image, then pixel location, scale, coupling
    assert [o.shape for o in outputs] == [(3, 3, 16, 16)] * 4


def test_int8_graphs_keep_their_outputs_levels(export_cli, resnet_checkpoint, bird_folder,
                                               tmp_path):  # fmt: skip
    """The decoder's last layer makes pixel locations (0 to 1) and log-scales (far below 0);
    quantized in one range, with its slices, the birds kept about 34 levels a channel (5 bits),
    a banding the 30 dB bar let through. Cut into one layer a parameter, with the few ops after
    the weighted layers left float, an int8 picture stays within a few levels of the float one
    and the encoder's codes within a few hundredths."""
    folders = {"fp32": tmp_path / "fp32", "int8": tmp_path / "int8"}
    assert export_cli(resnet_checkpoint, "-o", folders["fp32"]).exit_code == 0
    result = export_cli(resnet_checkpoint, "-o", folders["int8"], "--int8",
                        "--int8-even-if-slower", "--prior-data", bird_folder)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert verify_model_dir(folders["int8"]).source["int8"]["decoder"]["used"]
    import onnx

    ops = [node.op_type for node in onnx.load(folders["fp32"] / DECODER_FILE).graph.node]
    assert "Concat" not in ops  # the cut costs a float graph time: only --int8 exports cut
    models = {kind: BirdVAE(folder) for kind, folder in folders.items()}
    photos = models["fp32"].load_photos(sorted(bird_folder.rglob("*.png")))
    codes = {kind: vae.encode(photos)[0] for kind, vae in models.items()}
    images = {kind: vae.decode(codes["fp32"]) for kind, vae in models.items()}
    levels = {kind: len(np.unique(np.round(image * 255))) for kind, image in images.items()}
    assert levels["int8"] > 0.6 * levels["fp32"], levels
    assert np.abs(images["int8"] - images["fp32"]).max() < 6 / 255
    assert np.abs(codes["int8"] - codes["fp32"]).max() < 0.05


@pytest.mark.parametrize("floor, ships", [(0.0, True), (1e3, False)])
def test_int8_encoder_and_decoder_ship_only_faster_and_close_to_fp32(
    export_cli, resnet_checkpoint, bird_folder, tmp_path, monkeypatch, floor, ships
):
    from birdvae.export import quantize

    # int8 is always clearly faster here, so the quality floor alone decides, both ways.
    monkeypatch.setattr(quantize, "compare_latency", lambda *a, **k: (10.0, 1.0))
    monkeypatch.setattr(quantize, "MIN_INT8_PSNR_DB", floor)
    out = tmp_path / "int8"
    result = export_cli(resnet_checkpoint, "-o", out, "--int8", "--prior-data", bird_folder)
    assert result.exit_code == 0, result.stderr
    figures = verify_model_dir(out).source["int8"]
    for graph in ("encoder", "decoder"):
        assert figures[graph]["used"] is ships
        line = result.stdout.split(f"int8 {graph}:")[1].splitlines()[0]
        assert line.endswith("int8 shipped" if ships else "dB of fp32's pictures)"), line


@pytest.mark.parametrize("even_if_slower", [False, True])
def test_int8_slower_on_this_cpu_ships_only_when_asked(
    export_cli, resnet_checkpoint, bird_folder, tmp_path, monkeypatch, even_if_slower
):
    """The speed test is the exporting CPU's; a model exported for another CPU (an ARM
    board) may keep int8 graphs that this one runs no faster, and the manifest says which."""
    from birdvae.export import quantize

    monkeypatch.setattr(quantize, "compare_latency", lambda *a, **k: (10.0, 10.5))
    monkeypatch.setattr(quantize, "MIN_INT8_PSNR_DB", 0.0)
    out = tmp_path / "int8"
    flags = ["--int8-even-if-slower"] if even_if_slower else []
    result = export_cli(resnet_checkpoint, "-o", out, "--int8", *flags, "--prior-data",
                        bird_folder)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    figures = verify_model_dir(out).source["int8"]
    assert figures["require_speedup"] is not even_if_slower
    assert ("whatever its speed" in figures["kept_when"]) is even_if_slower
    for graph in ("encoder", "decoder"):
        assert figures[graph]["used"] is even_if_slower
        line = result.stdout.split(f"int8 {graph}:")[1].splitlines()[0]
        assert line.endswith("as --int8-even-if-slower asks)" if even_if_slower
                             else "fp32 kept (int8 not faster)"), line  # fmt: skip


@pytest.mark.parametrize(
    ("fp32_ms", "int8_ms", "quality", "require_speedup", "ships", "line_ends"),
    [
        (11.0, 10.0, 35.0, True, True, "int8 shipped"),  # exactly 1.1x, whatever rounding says
        (10.99, 10.0, 35.0, True, False, "fp32 kept (int8 not faster)"),
        (10.99, 10.0, 35.0, False, True, "as --int8-even-if-slower asks)"),
        (50.0, 10.0, 29.9, True, False, "dB of fp32's pictures)"),  # quality before speed
        (5.0, 10.0, 29.9, False, False, "dB of fp32's pictures)"),
        (50.0, 10.0, math.nan, True, False, "dB of fp32's pictures)"),  # overflowed pictures
        (50.0, 10.0, math.inf, True, True, "int8 shipped"),  # identical pictures
    ],
)
def test_one_verdict_decides_an_int8_graph_and_words_its_line(
    fp32_ms, int8_ms, quality, require_speedup, ships, line_ends, tmp_path
):
    from birdvae.export.quantize import _row, _verdict, format_figures

    verdict = _verdict(fp32_ms, int8_ms, quality, require_speedup)
    for name in ("f.onnx", "i.onnx"):
        (tmp_path / name).write_bytes(b"graph")
    row = _row(tmp_path / "f.onnx", tmp_path / "i.onnx", fp32_ms, int8_ms, quality, verdict)
    assert row["used"] is ships
    line = format_figures({"latency_batch": 64, "decoder": row})
    assert line.startswith("int8 decoder: ") and line.endswith(line_ends), line
    assert ("identical to fp32" in line) is (quality == math.inf)


def test_int8_even_if_slower_needs_int8(export_cli, resnet_checkpoint, tmp_path):
    result = export_cli(resnet_checkpoint, "-o", tmp_path / "m", "--int8-even-if-slower")
    assert result.exit_code == 2
    assert "--int8-even-if-slower needs --int8" in result.stderr
    assert not (tmp_path / "m").exists()


def test_int8_even_if_slower_help_gives_the_quality_bar():
    from birdvae.export.cli import main
    from birdvae.export.quantize import MIN_INT8_PSNR_DB

    option = next(p for p in main.params if p.name == "int8_even_if_slower")
    assert f"{MIN_INT8_PSNR_DB:g} dB PSNR or more" in option.help


def test_quantizing_holds_back_onnxruntimes_advice_but_not_the_callers_logging(caplog):
    import logging

    from birdvae.export.quantize import _quiet_root_logger

    logging.disable(logging.DEBUG)  # a caller's own setting, which the export must leave
    try:
        with caplog.at_level(logging.DEBUG), _quiet_root_logger():
            logging.warning("Please consider to run pre-processing before quantization. See ...")
            logging.warning("Please consider pre-processing before quantization. See ...")
            logging.warning("the caller's own warning")
            logging.getLogger("caller").critical("the caller's own message")
        assert [r.getMessage() for r in caplog.records] == [
            "the caller's own warning", "the caller's own message"]  # fmt: skip
        assert logging.root.manager.disable == logging.DEBUG
    finally:
        logging.disable(logging.NOTSET)


def test_a_checkpoint_saved_part_way_through_an_epoch_says_so(export_cli, make_checkpoint,
                                                              tiny_kwargs, run_dir):  # fmt: skip
    """A stopped run's last.pt holds weights from inside the next epoch, but the figures of
    the last whole one: the manifest recorded them as the weights' own, without a word."""
    path = make_checkpoint(run_dir / "last.pt", tiny_kwargs, epoch=1, batch_in_epoch=3)
    result = export_cli(path, "-o", run_dir / "model")
    assert result.exit_code == 0, result.stderr
    assert "saved 3 batches into epoch 2; its figures are epoch 1's" in result.stderr
    source = verify_model_dir(run_dir / "model").source
    assert (source["epochs"], source["batches_into_next_epoch"]) == (1, 3)
    whole = make_checkpoint(run_dir / "best.pt", tiny_kwargs, epoch=1)
    result = export_cli(whole, "-o", run_dir / "whole")
    assert result.exit_code == 0 and "batches into" not in result.stderr, result.stderr
    assert "batches_into_next_epoch" not in verify_model_dir(run_dir / "whole").source


@pytest.mark.parametrize("components", [1, 20])
def test_a_mixture_worse_than_the_standard_prior_is_a_warning(
    export_cli, resnet_checkpoint, bird_folder, tmp_path, components
):
    """The fixture's 21 training codes are too few for one full covariance over 16 numbers, and
    20 components fit each code alone: either way the held-out codes fare worse than under
    N(0, I), which the manifest recorded and nothing said."""
    out = tmp_path / "model"
    result = export_cli(resnet_checkpoint, "-o", out, "--prior-data", bird_folder,
                        "--prior-components", components)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    figures = verify_model_dir(out).priors["fitted"].source
    fitted, standard = figures["val_nats_per_dim_fitted"], figures["val_nats_per_dim_standard"]
    assert fitted < standard
    count = figures["train_images"]
    why = {
        1: f"{count} training codes are too few for a full covariance over 16 numbers; give "
           "more photos",
        20: f"it learned the {count} training codes by heart; give fewer --prior-components "
            "or more photos",
    }[components]  # fmt: skip
    plural = "s" if components > 1 else ""
    assert result.stderr.splitlines() == [
        f"warning: the fitted mixture ({components} component{plural}) describes the held-out "
        f"photos' codes worse than N(0, I) does ({fitted} against {standard} nats per "
        f"dimension): {why}"
    ]


@pytest.mark.parametrize("latent_dim", [16, 2048])
def test_flags_are_held_to_the_formats_prior_bounds_exactly(latent_dim):
    """The bounds bird-gen holds a manifest to, inclusive: a mixture of exactly 2^24 factor
    values and a sampler of exactly 16,384 noise numbers are exported, one more is refused."""
    from types import SimpleNamespace

    from birdvae.export.pipeline import ExportOptions, _check_flags_fit
    from birdvae.runtime.errors import UserError
    from birdvae.runtime.format import MAX_LATENT_DIM, MAX_PRIOR_VALUES

    model = SimpleNamespace(cfg=SimpleNamespace(latent_dim=latent_dim))
    most = MAX_PRIOR_VALUES // latent_dim**2

    def check(**flags):
        options = ExportOptions(Path("ckpt.pt"), Path("model"), prior_data=(Path("data"),), **flags)
        _check_flags_fit(options, model, has_learned=True)

    check(components=most)
    with pytest.raises(UserError, match=f"at most {most} components"):
        check(components=most + 1)
    best_of = MAX_LATENT_DIM // latent_dim
    if best_of <= 16:  # --best-of's own range; a code of 16 numbers never reaches the bound
        check(best_of=best_of)
        with pytest.raises(UserError, match=f"--best-of {best_of + 1} needs .* noise numbers"):
            check(best_of=best_of + 1)
